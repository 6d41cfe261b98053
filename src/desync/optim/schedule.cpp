// Learning-rate schedules. With W = warmup_steps, N = total_steps and s = t - W:
//
//   warmup(t) = (t + 1) / W for t < W, else 1      (so step 0 already moves the weights)
//   constant: base_lr
//   step:     base_lr * gamma^floor(s / step_size)                       (s >= 0)
//   cosine:   min_lr + (base_lr - min_lr) * (1 + cos(pi * min(1, s / (N - W)))) / 2
//
// lr(t) = warmup(t) * (the decayed rate, taken at s = 0 during warm-up).
#include "desync/optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "desync/core/error.h"

namespace desync {

namespace {
constexpr double kPi = 3.14159265358979323846;
}  // namespace

Schedule::Schedule(const ScheduleConfig& cfg, double base_lr, int64_t total_steps)
    : cfg_(cfg), base_lr_(base_lr), total_steps_(total_steps) {
  if (cfg_.name != "constant" && cfg_.name != "step" && cfg_.name != "cosine") {
    throw ConfigError("schedule.name: unknown schedule '" + cfg_.name +
                      "'; valid choices: constant, step, cosine");
  }
  if (cfg_.warmup_steps < 0) throw ConfigError("schedule.warmup_steps: must be >= 0");
  if (cfg_.name == "step" && cfg_.step_size < 1) {
    throw ConfigError("schedule.step_size: must be >= 1");
  }
}

double Schedule::lr(int64_t t) const {
  const int64_t warmup = cfg_.warmup_steps;
  const double warm = t < warmup ? static_cast<double>(t + 1) / static_cast<double>(warmup) : 1.0;
  const int64_t s = std::max<int64_t>(0, t - warmup);
  double rate = base_lr_;
  if (cfg_.name == "step") {
    rate = base_lr_ * std::pow(cfg_.gamma, static_cast<double>(s / cfg_.step_size));
  } else if (cfg_.name == "cosine") {
    const int64_t span = total_steps_ - warmup;
    const double progress = span > 0
                                ? std::min(1.0, static_cast<double>(s) / static_cast<double>(span))
                                : (t < warmup ? 0.0 : 1.0);
    rate = cfg_.min_lr + (base_lr_ - cfg_.min_lr) * 0.5 * (1.0 + std::cos(kPi * progress));
  }
  return warm * rate;
}

}  // namespace desync
