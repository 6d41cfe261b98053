// Progress display for the training loop (rank 0 only).
//
// On a terminal: one line redrawn in place, at most ten times a second — a bar, step/total,
// loss, learning rate, samples/s and time left. Otherwise (a log file, CI): a plain line every
// `every` steps and at the last step, so logs stay readable.
#pragma once

#include <cstdint>
#include <string>

#include "desync/core/system.h"

namespace desync {

class Progress {
 public:
  Progress(int64_t total_steps, int64_t every, bool tty);
  // Called after every step. `fraction` is how much of the run is done (by default
  // step_done / total_steps; a run counted in data passes the share of its budget consumed).
  void update(int64_t step_done, double loss, double lr, double samples_per_second,
              double fraction = -1.0);
  // Prints a line that must not be overwritten by the bar (evaluation results, warnings).
  void note(const std::string& line);
  void finish();

 private:
  std::string line(int64_t step_done, double frac, double loss, double lr, double sps,
                   bool bar) const;

  int64_t total_, every_;
  bool tty_;
  bool drawn_ = false;
  double last_draw_ = -1.0;
  Stopwatch clock_;
};

}  // namespace desync
