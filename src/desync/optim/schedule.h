// Learning-rate schedules as pure functions of the optimizer step.
//
// lr(t) = base_lr * warmup(t) * decay(t): linear warm-up from 0 over warmup_steps (all
// schedules; warmup(t) = (t + 1) / warmup_steps for t < warmup_steps, so step 0 is not wasted),
// then constant, step (x gamma every step_size steps after warm-up) or cosine (from base_lr at
// t = warmup_steps to min_lr at t = total_steps, and min_lr after). Pure, so it needs no
// checkpoint state. The constructor throws ConfigError for an unknown name.
#pragma once

#include <cstdint>

#include "desync/core/config.h"

namespace desync {

class Schedule {
 public:
  Schedule(const ScheduleConfig& cfg, double base_lr, int64_t total_steps);
  // Learning rate for optimizer step t (0-based).
  double lr(int64_t t) const;

 private:
  ScheduleConfig cfg_;
  double base_lr_;
  int64_t total_steps_;
};

}  // namespace desync
