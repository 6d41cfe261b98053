// Learning-rate schedules at known points.
#include "desync/optim/schedule.h"

#include <gtest/gtest.h>

#include <cmath>

#include "desync/core/error.h"

namespace desync {
namespace {

ScheduleConfig schedule_config(const char* name, int64_t warmup) {
  ScheduleConfig cfg;
  cfg.name = name;
  cfg.warmup_steps = warmup;
  return cfg;
}

TEST(ScheduleTest, ConstantIsBaseLr) {
  Schedule s(schedule_config("constant", 0), 0.3, 100);
  EXPECT_DOUBLE_EQ(s.lr(0), 0.3);
  EXPECT_DOUBLE_EQ(s.lr(57), 0.3);
  EXPECT_DOUBLE_EQ(s.lr(1000), 0.3);
}

TEST(ScheduleTest, WarmupIsLinearFromZero) {
  Schedule s(schedule_config("constant", 4), 2.0, 100);
  EXPECT_DOUBLE_EQ(s.lr(0), 0.5);
  EXPECT_DOUBLE_EQ(s.lr(1), 1.0);
  EXPECT_DOUBLE_EQ(s.lr(2), 1.5);
  EXPECT_DOUBLE_EQ(s.lr(3), 2.0);
  EXPECT_DOUBLE_EQ(s.lr(4), 2.0);
  EXPECT_DOUBLE_EQ(s.lr(50), 2.0);
}

TEST(ScheduleTest, StepDecaysByGammaEveryStepSizeAfterWarmup) {
  ScheduleConfig cfg = schedule_config("step", 0);
  cfg.step_size = 10;
  cfg.gamma = 0.5;
  Schedule s(cfg, 1.0, 100);
  EXPECT_DOUBLE_EQ(s.lr(0), 1.0);
  EXPECT_DOUBLE_EQ(s.lr(9), 1.0);
  EXPECT_DOUBLE_EQ(s.lr(10), 0.5);
  EXPECT_DOUBLE_EQ(s.lr(19), 0.5);
  EXPECT_DOUBLE_EQ(s.lr(25), 0.25);

  cfg.warmup_steps = 5;
  Schedule w(cfg, 1.0, 100);
  EXPECT_DOUBLE_EQ(w.lr(0), 0.2);
  EXPECT_DOUBLE_EQ(w.lr(14), 1.0);
  EXPECT_DOUBLE_EQ(w.lr(15), 0.5);
}

TEST(ScheduleTest, CosineGoesFromBaseLrToMinLrAfterWarmup) {
  ScheduleConfig cfg = schedule_config("cosine", 10);
  cfg.min_lr = 0.1;
  Schedule s(cfg, 1.0, 110);
  EXPECT_DOUBLE_EQ(s.lr(4), 0.5);  // warm-up towards the base rate
  EXPECT_DOUBLE_EQ(s.lr(9), 1.0);
  EXPECT_DOUBLE_EQ(s.lr(10), 1.0);
  EXPECT_NEAR(s.lr(35), 0.1 + 0.9 * 0.5 * (1.0 + std::cos(std::acos(-1.0) / 4.0)), 1e-12);
  EXPECT_NEAR(s.lr(60), 0.55, 1e-12);  // half-way
  EXPECT_NEAR(s.lr(110), 0.1, 1e-12);  // end value
  EXPECT_NEAR(s.lr(500), 0.1, 1e-12);  // and after
  for (int64_t t = 10; t < 110; ++t) EXPECT_GE(s.lr(t), s.lr(t + 1)) << t;
  EXPECT_GT(s.lr(109), 0.1);
}

TEST(ScheduleTest, CosineWithoutWarmupStartsAtBaseLr) {
  Schedule s(schedule_config("cosine", 0), 0.4, 8);
  EXPECT_DOUBLE_EQ(s.lr(0), 0.4);
  EXPECT_NEAR(s.lr(4), 0.2, 1e-12);
  EXPECT_NEAR(s.lr(8), 0.0, 1e-12);
}

TEST(ScheduleTest, UnknownNameIsAConfigError) {
  EXPECT_THROW(Schedule(schedule_config("linear", 0), 0.1, 10), ConfigError);
  ScheduleConfig cfg = schedule_config("step", 0);
  cfg.step_size = 0;
  EXPECT_THROW(Schedule(cfg, 0.1, 10), ConfigError);
}

}  // namespace
}  // namespace desync
