// Per-step figures recorded below the Trainer (an optimizer's spectral norms) and written by the
// Trainer into the next train record of metrics.jsonl.
//
// A component sets a gauge after each step; the Trainer takes every gauge when it logs a step
// (rank 0's values), which clears the board. A gauge set several times between two logged steps
// shows its last value. Names are the record's keys, so they must not collide with the Trainer's
// own ("loss", "lr", ...): use a prefix ("spectron.").
//
// Thread-safety: set() and take() may be called from any thread.
#pragma once

#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace desync {

class Gauges {
 public:
  static Gauges& instance();

  void set(const std::string& name, double value);
  // Every gauge set since the last take(), in the order first set; clears them.
  std::vector<std::pair<std::string, double>> take();

 private:
  std::mutex mu_;
  std::vector<std::pair<std::string, double>> values_;
};

}  // namespace desync
