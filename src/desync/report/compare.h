// `desync compare`: several runs side by side — one table and one HTML page of overlaid curves.
//
// Table columns, one row per run (figures from each run's summary.json and metrics.jsonl):
//   run, algorithm, workers, samples (consumed by all ranks)
//   final accuracy       the last evaluation's test accuracy
//   time to target       training time (s, evaluation excluded) at the first evaluation whose
//                        test accuracy reached the target; "-" if none did
//   samples/s            global samples per second of training time
//   sent/rank            mean and max over ranks of bytes sent (the Communicator's count)
//   in flight/rank       mean over ranks of the seconds some communication call was in flight
//   waiting/rank         mean over ranks of the seconds training was blocked on communication
//   peak RSS             max over ranks of the peak resident set size
//   peak summed activations   activation_memory.summed_peak_bytes: live activation bytes summed
//                        over ranks, the steady state's peak (a column only when some run has it)
// The target is given, or else the lowest final accuracy among the runs (every run reached it).
// Runs compared at different data budgets are not comparable: budget_warnings() names each run
// whose consumed samples differ by more than 1% from the largest, and the command prints them.
// The page overlays loss and test accuracy against steps and training time, and the mean bytes
// sent per rank against training time (chart ids compare-loss-vs-step, compare-accuracy-vs-step,
// compare-loss-vs-time, compare-accuracy-vs-time, compare-bytes).
#pragma once

#include <string>
#include <vector>

#include "desync/report/run_report.h"

namespace desync {

// The target accuracy to use: `requested` if it is a number, else the lowest final accuracy.
double comparison_target(const std::vector<RunData>& runs, double requested);

// A Markdown table (columns padded, so it also reads on a terminal).
std::string compare_table(const std::vector<RunData>& runs, double target);
// One line per run whose summary's `samples` differ from the largest by more than 1%.
std::vector<std::string> budget_warnings(const std::vector<RunData>& runs);
std::string compare_html(const std::vector<RunData>& runs, double target);

}  // namespace desync
