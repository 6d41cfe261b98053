// report.html: one run's page, self-contained (inline SVG and CSS, no scripts, no network).
//
// Built from the run directory's summary.json and metrics.jsonl only, so it can be rebuilt for
// any finished run. Charts (ids in parentheses): train/test loss and test accuracy against steps
// (loss-vs-step, accuracy-vs-step) and against training time (loss-vs-time, accuracy-vs-time);
// cumulative bytes sent per rank against training time (bytes-per-rank); peak RSS per rank
// (memory-rss) and named buffers per rank (memory-buffers); the activation memory summed over
// ranks in a steady-state window (activation-memory) and over the whole run
// (activation-memory-run), and the gradient reductions in flight in that window, one row per
// group (reductions); where each rank's time went (utilisation); and, for federated runs, each
// client's label shares (client-labels). The page ends with how each
// figure is derived. A figure the run did not record (an older summary without
// time_breakdown_seconds, say) shows "no data"; one evaluated only once (eval.every = 0) shows its
// number, "test accuracy 0.8812 at step 937", instead of a lone dot.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace desync {

// What a finished run directory holds, as far as reports need it.
struct RunData {
  std::string dir;   // as given
  std::string name;  // the directory's last component
  nlohmann::json summary;
  std::vector<nlohmann::json> metrics;  // metrics.jsonl records, in file order
};

// Reads summary.json and metrics.jsonl of `dir`. Throws UsageError (one line, naming the path)
// if the directory or its summary.json is missing or unreadable.
RunData load_run(const std::string& dir);

std::string run_report_html(const RunData& run);

// Renders `run_dir`'s report and writes <run_dir>/report.html atomically.
void write_run_report(const std::string& run_dir);

// Helpers shared with compare: the records of one type ("train" or "eval"), and a per-rank list
// of the summary (empty if absent).
std::vector<const nlohmann::json*> records_of(const RunData& run, const char* type);
std::vector<double> rank_list(const nlohmann::json& summary, const char* key);

}  // namespace desync
