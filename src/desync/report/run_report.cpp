#include "desync/report/run_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "desync/core/error.h"
#include "desync/core/fs.h"
#include "desync/report/metrics.h"
#include "desync/report/svg.h"

namespace desync {
namespace {

double number_or(const nlohmann::json& j, const char* key, double fallback) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}

std::string fixed(const nlohmann::json& j, const char* key, const char* format) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return "-";
  return fmt::format(fmt::runtime(format), it->get<double>());
}

// The curves of one run: `value` of the records of `type` against `x` ("step" or "elapsed").
Series curve(const RunData& run, const char* type, const char* value, const char* x,
             const std::string& label) {
  Series s;
  s.label = label;
  for (const nlohmann::json* r : records_of(run, type)) {
    s.x.push_back(number_or(*r, x, NAN));
    s.y.push_back(number_or(*r, value, NAN));
  }
  return s;
}

std::string row(const std::vector<std::string>& cells, const char* tag = "td") {
  std::string out = "<tr>";
  for (const std::string& c : cells) out += fmt::format("<{0}>{1}</{0}>", tag, html_escape(c));
  return out + "</tr>";
}

const char* const kDerivation = R"(<h2>How the figures are derived</h2>
<ul class="notes">
<li><b>Training time</b> (x axis of the time charts, <code>elapsed</code> in metrics.jsonl): rank 0's
seconds inside algorithm steps; evaluation, checkpoints and logging are excluded.</li>
<li><b>Loss</b>: the training loss of each logged step, averaged over ranks weighted by micro-batches;
<b>test loss and accuracy</b>: each evaluation of the model the algorithm evaluates.</li>
<li><b>Bytes sent per rank</b>: the Communicator's count of the bytes each rank put on the wire for the
algorithm Gloo uses (ring all-reduce 2(N&minus;1)/N&middot;size, &hellip;; see docs/distributed.md),
cumulative, sampled at every logged step; evaluation traffic is not counted.</li>
<li><b>Communication in flight</b>: the union over all threads of the spans from a communication call's
issue to its completion. <b>Waiting</b>: time the training thread was blocked on a call or on a
background communication thread (the trace's <code>wait</code> spans). <b>Overlapped</b>: time
communication was in flight while the training thread was not waiting; in flight = waiting +
overlapped.</li>
<li><b>Utilisation</b>: each rank's run time (from the start of its set-up to the summary), split on its
training thread by the trace's spans: compute (forward/backward), optimizer, waiting, evaluation and checkpoints; the rest
(start-up, data set loading, logging, gaps between spans) is <i>other</i>. Where spans nest, the outer
one counts. Communication that runs while the thread computes does not appear here: it is in
<i>communication in flight</i>.</li>
<li><b>Memory</b>: peak resident set size of each worker process, and the bytes of the algorithm's named
buffers (parameters, gradients, optimizer state, communication buffers).</li>
<li><b>Activation memory</b>: the bytes of CPU tensors allocated during training forward passes (inside
an activation scope) and not yet freed, counted by a wrapper around LibTorch's CPU allocator: the
activations kept for backward, plus the forward's transient temporaries. Each rank samples its count
every period at instants aligned to the machine's monotonic clock; the chart sums the ranks at each
instant every rank sampled, over a window of a few of rank 0's steps in the steady state (instants at
which every rank is inside a step, past its first and before its last). Summed peak, mean and
peak/mean are over the whole steady state; the sum of the rank peaks adds each rank's exact peak
(at allocation granularity), which need not fall at the same instant.</li>
<li><b>Reductions</b>: each gradient reduction an algorithm records (a DDP bucket's all-reduce, &hellip;)
is paired across ranks by group and step; it is in flight across the job from the latest rank's
launch to the latest rank's completion. The timeline shows those of the window, one row per group;
<i>max in flight</i> is the largest number in flight at one instant over the steady state.</li>
</ul>
)";

}  // namespace

std::vector<const nlohmann::json*> records_of(const RunData& run, const char* type) {
  std::vector<const nlohmann::json*> out;
  for (const nlohmann::json& r : run.metrics)
    if (r.is_object() && r.value("type", "") == type) out.push_back(&r);
  return out;
}

std::vector<double> rank_list(const nlohmann::json& summary, const char* key) {
  std::vector<double> out;
  auto it = summary.find(key);
  if (it == summary.end() || !it->is_array()) return out;
  for (const auto& v : *it) out.push_back(v.is_number() ? v.get<double>() : NAN);
  return out;
}

RunData load_run(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw UsageError(fmt::format("{} is not a directory (expected a run directory)", dir));
  const std::string path = dir + "/summary.json";
  if (!fs::exists(path, ec))
    throw UsageError(fmt::format(
        "{} has no summary.json: not a run directory, or its run has not finished", dir));
  RunData run;
  run.dir = dir;
  fs::path p = fs::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  run.name = p.filename().string();
  if (run.name.empty() || run.name == ".") run.name = fs::absolute(p, ec).filename().string();
  run.summary = nlohmann::json::parse(read_file(path), nullptr, false);
  if (run.summary.is_discarded() || !run.summary.is_object())
    throw UsageError(fmt::format("{} is not valid JSON; rerun the run or remove it", path));
  run.metrics = read_metrics(dir + "/metrics.jsonl");
  return run;
}

namespace {

double at(const std::vector<double>& v, int64_t r) {
  return r < static_cast<int64_t>(v.size()) ? v[r] : NAN;
}

std::string secs(double v) {  // tiny negative differences of clocks print as 0.00, not -0.00
  return std::isfinite(v) ? fmt::format("{:.2f}", std::fabs(v) < 0.005 ? 0.0 : v) : "-";
}

std::string bytes_cell(double v) { return std::isfinite(v) ? human_bytes(v) : "-"; }

std::string headline(const RunData& run) {
  const nlohmann::json& s = run.summary;
  std::string body = fmt::format(
      "<h1>{}</h1><p class=\"sub\">{} · {} · {} · {} worker{}{}</p>", html_escape(run.name),
      html_escape(s.value("algorithm", "?")), html_escape(s.value("model", "?")),
      html_escape(s.value("dataset", "?")), s.value("workers", 1),
      s.value("workers", 1) == 1 ? "" : "s", s.value("interrupted", false) ? " · interrupted" : "");

  std::vector<double> sent = rank_list(s, "bytes_sent"), rss = rank_list(s, "peak_rss_bytes");
  double mean_sent = 0, max_rss = 0;
  for (double v : sent) mean_sent += v / static_cast<double>(sent.size());
  for (double v : rss) max_rss = std::max(max_rss, v);
  body += "<table>";
  body += row({"test accuracy", fixed(s, "test_accuracy", "{:.4f}"), "test loss",
               fixed(s, "test_loss", "{:.4f}")});
  if (s.contains("population"))  // test accuracy above is the members' average
    body +=
        row({"ensemble accuracy", fixed(s["population"], "ensemble_accuracy", "{:.4f}"),
             "member accuracy (mean)", fixed(s["eval_metrics"], "member_accuracy_mean", "{:.4f}")});
  body +=
      row({"train loss", fixed(s, "train_loss", "{:.4f}"), "steps", fixed(s, "steps", "{:.0f}")});
  body += row({"samples", fixed(s, "samples", "{:.0f}"), "samples/s",
               fixed(s, "samples_per_second", "{:.1f}")});
  body += row({"wall time", fixed(s, "wall_seconds", "{:.1f} s"), "training time",
               fixed(s, "train_seconds", "{:.1f} s")});
  body +=
      row({"sent per rank (mean)", human_bytes(mean_sent), "peak RSS (max)", human_bytes(max_rss)});
  if (s.contains("tokens")) {  // a language model
    body += row({"test bits/byte", fixed(s, "test_bits_per_byte", "{:.4f}"), "test perplexity",
                 fixed(s, "test_perplexity", "{:.2f}")});
    body += row({"tokens", fixed(s, "tokens", "{:.0f}"), "tokens/s",
                 fixed(s, "tokens_per_second", "{:.0f}")});
    if (s.contains("gflops_per_second"))
      body += row({"GFLOP/s (all workers)", fixed(s, "gflops_per_second", "{:.2f}"), "FLOPs/token",
                   fixed(s, "flops_per_token", "{:.3g}")});
  }
  return body + "</table>";
}

// One curve per block k = 1, 2, ... of the eval records' `<prefix><k>` (contrastive_local's
// erank_<k>), against the step; nothing when no eval record has `<prefix>1`.
std::string per_block_curves(const RunData& run, const std::string& prefix, const char* id,
                             const char* title, const char* y_label) {
  const std::vector<const nlohmann::json*> evals = records_of(run, "eval");
  LineChart c{id, title, "step", y_label, {}, ""};
  for (int k = 1;; ++k) {
    const std::string key = prefix + std::to_string(k);
    const bool found = std::any_of(evals.begin(), evals.end(),
                                   [&](const nlohmann::json* r) { return r->contains(key); });
    if (!found) break;
    c.series.push_back(curve(run, "eval", key.c_str(), "step", fmt::format("block {}", k)));
  }
  if (c.series.empty()) return "";
  return render_line_chart(c);
}

std::string learning_curves(const RunData& run) {
  std::string body = "<h2>Learning curves</h2>";
  const bool population = run.summary.contains("population");
  auto learning = [&](const char* id, const char* title, const char* x, const char* x_label,
                      bool loss) {
    LineChart c{id, title, x_label, loss ? "loss" : "test accuracy", {}, ""};
    if (loss) {
      c.series.push_back(curve(run, "train", "loss", x, "train loss"));
      c.series.push_back(curve(run, "eval", "test_loss", x, "test loss"));
    } else if (population) {  // the average is the run's model; its members and ensemble
      c.series.push_back(curve(run, "eval", "test_accuracy", x, "average"));
      c.series.push_back(curve(run, "eval", "ensemble_accuracy", x, "ensemble"));
      c.series.push_back(curve(run, "eval", "member_accuracy_mean", x, "members (mean)"));
    } else {
      c.series.push_back(curve(run, "eval", "test_accuracy", x, "test accuracy"));
    }
    body += render_line_chart(c);
  };
  learning("loss-vs-step", "Loss against steps", "step", "step", true);
  learning("accuracy-vs-step", "Test accuracy against steps", "step", "step", false);
  learning("loss-vs-time", "Loss against training time", "elapsed", "training time (s)", true);
  learning("accuracy-vs-time", "Test accuracy against training time", "elapsed",
           "training time (s)", false);
  if (run.summary.contains("tokens"))
    learning("loss-vs-tokens", "Loss against training tokens", "tokens", "tokens (all workers)",
             true);
  return body + per_block_curves(run, "erank_", "erank-vs-step",
                                 "Effective rank of each block's features (probe batch)",
                                 "effective rank");
}

std::string communication(const RunData& run, int64_t world) {
  const nlohmann::json& s = run.summary;
  std::string body = "<h2>Communication</h2>";
  LineChart bytes{"bytes-per-rank", "Bytes sent per rank", "training time (s)", "bytes sent", {},
                  "bytes"};
  for (int64_t r = 0; r < world; ++r) {
    Series ser;
    ser.label = fmt::format("rank {}", r);
    for (const nlohmann::json* rec : records_of(run, "train")) {
      auto it = rec->find("bytes_sent_per_rank");
      if (it == rec->end() || !it->is_array() || static_cast<int64_t>(it->size()) <= r) continue;
      ser.x.push_back(number_or(*rec, "elapsed", NAN));
      ser.y.push_back((*it)[r].is_number() ? (*it)[r].get<double>() : NAN);
    }
    bytes.series.push_back(std::move(ser));
  }
  body += render_line_chart(bytes);

  std::vector<double> sent = rank_list(s, "bytes_sent"), received = rank_list(s, "bytes_received"),
                      waited = rank_list(s, "comm_wait_seconds"),
                      overlapped = rank_list(s, "overlapped_comm_seconds"),
                      in_flight = rank_list(s, "comm_in_flight_seconds");
  body += "<table>";
  body += row({"rank", "sent", "received", "in flight (s)", "sent / in flight", "waiting (s)",
               "overlapped (s)"},
              "th");
  for (int64_t r = 0; r < world; ++r) {
    double f = at(in_flight, r);
    std::string rate = std::isfinite(f) && f > 0 && std::isfinite(at(sent, r))
                           ? fmt::format("{:.2f} Mbit/s", at(sent, r) * 8 / f / 1e6)
                           : "-";
    body += row({std::to_string(r), bytes_cell(at(sent, r)), bytes_cell(at(received, r)), secs(f),
                 rate, secs(at(waited, r)), secs(at(overlapped, r))});
  }
  return body + "</table>";
}

std::string memory(const nlohmann::json& s, int64_t world) {
  std::vector<double> rss = rank_list(s, "peak_rss_bytes");
  BarChart rss_chart{
      "memory-rss", "Peak resident set size per rank", "bytes", {}, {"peak RSS"}, {}, "bytes",
      false};
  BarChart buffers{"memory-buffers", "Named buffers per rank", "bytes", {}, {}, {}, "bytes", false};
  const nlohmann::json memory = s.value("memory_bytes", nlohmann::json::object());
  for (auto it = memory.begin(); it != memory.end(); ++it) buffers.segments.push_back(it.key());
  for (int64_t r = 0; r < world; ++r) {
    rss_chart.bars.push_back(fmt::format("rank {}", r));
    rss_chart.values.push_back({at(rss, r)});
    buffers.bars.push_back(fmt::format("rank {}", r));
    std::vector<double> v;
    for (auto it = memory.begin(); it != memory.end(); ++it)
      v.push_back(it->is_array() && static_cast<int64_t>(it->size()) > r && (*it)[r].is_number()
                      ? (*it)[r].get<double>()
                      : 0.0);
    buffers.values.push_back(std::move(v));
  }
  return "<h2>Memory</h2>" + render_bar_chart(rss_chart) + render_bar_chart(buffers);
}

std::string time_per_rank(const nlohmann::json& s, int64_t world) {
  const char* const parts[] = {"compute", "optimizer", "wait", "eval", "checkpoint", "other"};
  BarChart util{
      "utilisation",
      "Utilisation of each rank's training thread",
      "share of the rank's run time",
      {},
      {"compute", "optimizer", "waiting (communication)", "evaluation", "checkpoint", "other"},
      {},
      "s",
      true};
  const std::vector<double> in_flight = rank_list(s, "comm_in_flight_seconds");
  const nlohmann::json tb = s.value("time_breakdown_seconds", nlohmann::json::object());
  std::string table = "<table>" + row({"rank", "run time (s)", "compute", "optimizer", "waiting",
                                       "evaluation", "checkpoint", "other", "comm in flight"},
                                      "th");
  for (int64_t r = 0; r < world; ++r) {
    util.bars.push_back(fmt::format("rank {}", r));
    std::vector<double> v;
    std::vector<std::string> cells = {std::to_string(r), secs(at(rank_list(tb, "window"), r))};
    for (const char* p : parts) {
      v.push_back(at(rank_list(tb, p), r));
      cells.push_back(secs(v.back()));
    }
    cells.push_back(secs(at(in_flight, r)));
    util.values.push_back(std::move(v));
    table += row(cells);
  }
  return "<h2>Time per rank</h2>" + render_bar_chart(util) + table + "</table>";
}

// The summed activation memory over the window and the whole run, and the reductions in flight.
std::string activations_and_reductions(const nlohmann::json& s) {
  const nlohmann::json none = nlohmann::json::object();
  const nlohmann::json& a = s.contains("activation_memory") && s["activation_memory"].is_object()
                                ? s["activation_memory"]
                                : none;
  const nlohmann::json& red =
      s.contains("reductions") && s["reductions"].is_object() ? s["reductions"] : none;
  auto points = [](const nlohmann::json& curve, const std::string& label, double x_scale) {
    Series ser;
    ser.label = label;
    if (!curve.is_object()) return ser;
    const nlohmann::json t = curve.value("t_s", nlohmann::json::array()),
                         b = curve.value("bytes", nlohmann::json::array());
    for (size_t i = 0; i < std::min(t.size(), b.size()); ++i) {
      ser.x.push_back(t[i].is_number() ? t[i].get<double>() * x_scale : NAN);
      ser.y.push_back(b[i].is_number() ? b[i].get<double>() : NAN);
    }
    return ser;
  };
  const nlohmann::json curve = a.value("curve", nlohmann::json());
  std::string title = "Activation memory summed over ranks (steady-state window)";
  if (curve.is_object() && curve.contains("first_step"))
    title =
        fmt::format("Activation memory summed over ranks (steps {} to {} of rank 0)",
                    curve.value("first_step", int64_t{0}), curve.value("last_step", int64_t{0}));
  LineChart window{"activation-memory",
                   title,
                   "time in the window (ms)",
                   "live activation bytes",
                   {points(curve, "all ranks", 1e3)},
                   "bytes"};
  LineChart run{"activation-memory-run",
                "Activation memory summed over ranks, whole run (largest of each bin)",
                "time since sampling began (s)",
                "live activation bytes",
                {points(a.value("run_curve", nlohmann::json()), "all ranks", 1.0)},
                "bytes"};

  TimelineChart timeline{"reductions",
                         "Gradient reductions in flight across the job (window)",
                         "time in the window (ms)",
                         {},
                         {},
                         0.0,
                         0.0};
  const nlohmann::json events = red.value("timeline", nlohmann::json());
  if (events.is_array()) {
    std::vector<int64_t> groups;
    for (const auto& e : events) groups.push_back(e.value("group", int64_t{0}));
    std::sort(groups.begin(), groups.end());
    groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
    for (int64_t g : groups) timeline.rows.push_back(fmt::format("group {}", g));
    for (const auto& e : events) {
      const auto g = e.value("group", int64_t{0});
      const double start = e.value("start_s", NAN) * 1e3, end = e.value("end_s", NAN) * 1e3;
      const auto row =
          static_cast<size_t>(std::lower_bound(groups.begin(), groups.end(), g) - groups.begin());
      timeline.intervals.push_back({row, start, end,
                                    fmt::format("group {} · step {}: {:.3f} to {:.3f} ms", g,
                                                e.value("step", int64_t{0}), start, end)});
    }
    timeline.x_hi = red.value("window_seconds", 0.0) * 1e3;
  }

  auto bytes_of = [&](const char* key) {
    auto it = a.find(key);
    return it != a.end() && it->is_number() ? human_bytes(it->get<double>()) : std::string("-");
  };
  double rank_sum = 0;
  for (double v : rank_list(a, "rank_peak_bytes")) rank_sum += std::isfinite(v) ? v : 0;
  std::string table = "<table>";
  table += row({"summed peak (steady state)", bytes_of("summed_peak_bytes"), "summed mean",
                bytes_of("summed_mean_bytes")});
  table += row({"summed peak / mean", fixed(a, "summed_peak_to_mean", "{:.2f}"),
                "sum of the rank peaks", a.empty() ? "-" : human_bytes(rank_sum)});
  table += row({"reduction groups", fixed(red, "groups", "{:.0f}"), "max reductions in flight",
                fixed(red, "max_in_flight", "{:.0f}")});
  table += "</table>";
  std::string note;
  if (a.contains("note") && a["note"].is_string())
    note = "<p class=\"notes\">" + html_escape(a["note"].get<std::string>()) + "</p>";
  return "<h2>Activation memory and reductions</h2>" + table + note + render_line_chart(window) +
         render_line_chart(run) + render_timeline_chart(timeline);
}

}  // namespace

// Federated runs: each client's label histogram, as shares (summary.json "clients").
std::string clients(const nlohmann::json& s) {
  if (!s.contains("clients") || !s["clients"].is_object()) return "";
  const nlohmann::json& c = s["clients"];
  BarChart chart{"client-labels",
                 "Label shares per client (held-out clients marked *)",
                 "share of the client's examples",
                 {},
                 {},
                 {},
                 "%",
                 true};
  const size_t classes = c["label_counts"].empty() ? 0 : c["label_counts"][0].size();
  for (size_t k = 0; k < classes; ++k) chart.segments.push_back(fmt::format("class {}", k));
  for (size_t i = 0; i < c["ids"].size(); ++i) {
    chart.bars.push_back(fmt::format("client {}{}", c["ids"][i].get<int64_t>(),
                                     c["heldout"][i].get<bool>() ? " *" : ""));
    std::vector<double> v;
    for (const auto& n : c["label_counts"][i]) v.push_back(n.get<double>());
    chart.values.push_back(std::move(v));
  }
  return "<h2>Clients</h2>" + render_bar_chart(chart);
}

std::string run_report_html(const RunData& run) {
  const int64_t world = run.summary.value("workers", int64_t{1});
  std::string body = headline(run) + learning_curves(run) + communication(run, world) +
                     memory(run.summary, world) + activations_and_reductions(run.summary) +
                     time_per_rank(run.summary, world) + clients(run.summary) + kDerivation;
  return html_page(run.name + " · desync report", body);
}

void write_run_report(const std::string& run_dir) {
  write_file_atomic(run_dir + "/report.html", run_report_html(load_run(run_dir)));
}

}  // namespace desync
