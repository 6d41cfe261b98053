#include "desync/core/activation_memory.h"

#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>

namespace desync {
namespace {

class ActivationMemory : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(activation_counting_installed());
    before_ = live_activation_bytes();
  }
  int64_t counted() const { return live_activation_bytes() - before_; }
  int64_t before_ = 0;
};

TEST_F(ActivationMemory, TensorAllocatedInAScopeCountsUntilFreed) {
  torch::Tensor t;
  {
    ActivationScope scope;
    t = torch::empty({1000}, torch::kFloat32);
  }
  EXPECT_EQ(counted(), 4000);
  t.reset();
  EXPECT_EQ(counted(), 0);
}

TEST_F(ActivationMemory, TensorFreedOnAnotherThreadIsUncounted) {
  torch::Tensor t;
  {
    ActivationScope scope;
    t = torch::empty({256}, torch::kFloat64);
  }
  EXPECT_EQ(counted(), 2048);
  std::thread([t = std::move(t)]() mutable { t.reset(); }).join();
  EXPECT_EQ(counted(), 0);
}

TEST_F(ActivationMemory, AllocationsOutsideAScopeAreNotCounted) {
  torch::Tensor outside = torch::empty({1000}, torch::kFloat32);
  EXPECT_EQ(counted(), 0);
  // The scope is the calling thread's: another thread allocating meanwhile is not counted.
  ActivationScope scope;
  torch::Tensor other;
  std::thread([&other] { other = torch::empty({500}, torch::kFloat32); }).join();
  EXPECT_EQ(counted(), 0);
  // An uncounted allocation is the inner allocator's own DataPtr, untouched.
  c10::Allocator* cpu = c10::GetCPUAllocator();
  EXPECT_EQ(outside.storage().data_ptr().get_deleter(),
            c10::GetDefaultCPUAllocator()->raw_deleter());
  EXPECT_TRUE(cpu->is_simple_data_ptr(outside.storage().data_ptr()));
}

TEST_F(ActivationMemory, NestedScopesCountUntilTheOutermostEnds) {
  torch::Tensor a, b, c, d;
  {
    ActivationScope outer;
    a = torch::empty({100}, torch::kFloat32);
    {
      ActivationScope inner;
      b = torch::empty({200}, torch::kFloat32);
    }
    c = torch::empty({300}, torch::kFloat32);  // still inside the outer scope
  }
  d = torch::empty({400}, torch::kFloat32);
  EXPECT_EQ(counted(), 4 * (100 + 200 + 300));
  b.reset();
  EXPECT_EQ(counted(), 4 * (100 + 300));
}

TEST_F(ActivationMemory, PeakIsTheHighestLiveCount) {
  reset_peak_activation_bytes();
  EXPECT_EQ(peak_activation_bytes(), live_activation_bytes());
  {
    ActivationScope scope;
    torch::Tensor big = torch::empty({1000}, torch::kFloat32);
    big.reset();
    torch::Tensor small = torch::empty({10}, torch::kFloat32);
  }
  EXPECT_EQ(counted(), 0);
  EXPECT_EQ(peak_activation_bytes() - before_, 4000);
}

TEST_F(ActivationMemory, RawAllocationsWorkInAndOutOfAScope) {
  // The raw interface (oneDNN's scratch memory uses it) must work on counted pointers too.
  c10::Allocator* cpu = c10::GetCPUAllocator();
  ASSERT_NE(cpu->raw_deleter(), nullptr);
  void* counted_ptr = nullptr;
  {
    ActivationScope scope;
    counted_ptr = cpu->raw_allocate(256);
  }
  EXPECT_EQ(counted(), 256);
  cpu->raw_deallocate(counted_ptr);
  EXPECT_EQ(counted(), 0);
  void* plain = cpu->raw_allocate(128);
  EXPECT_EQ(counted(), 0);
  cpu->raw_deallocate(plain);
  EXPECT_EQ(counted(), 0);
}

TEST_F(ActivationMemory, SavedActivationsAreFreedByBackward) {
  torch::Tensor x = torch::randn({64, 128});
  torch::Tensor w = torch::randn({128, 256}, torch::requires_grad());
  torch::Tensor loss;
  {
    ActivationScope scope;
    loss = x.mm(w).relu().sum();  // relu keeps its output (64 x 256 floats) for backward
  }
  EXPECT_GE(counted(), 64 * 256 * 4);
  loss.backward();
  loss.reset();
  EXPECT_EQ(counted(), 0);
  EXPECT_TRUE(w.grad().defined());
}

TEST(ActivationSampler, SamplesAtAlignedInstantsAndMarksSteps) {
  using namespace std::chrono;
  auto now_us = [] {
    return duration_cast<microseconds>(steady_clock::now().time_since_epoch()).count();
  };
  const int64_t before = live_activation_bytes();
  ActivationSampler sampler(microseconds(1000));
  const int64_t started = now_us();
  sampler.start();
  std::this_thread::sleep_for(milliseconds(5));
  torch::Tensor t;
  {
    ActivationScope scope;
    t = torch::empty({1 << 18}, torch::kFloat32);  // 1 MiB
  }
  sampler.begin_step(7);
  std::this_thread::sleep_for(milliseconds(30));
  sampler.end_step();
  t.reset();
  std::this_thread::sleep_for(milliseconds(5));
  sampler.stop();
  const int64_t stopped = now_us();

  const ActivationSampler::Record& r = sampler.record();
  EXPECT_EQ(r.period_us, 1000);
  EXPECT_EQ(r.stride, 1);
  EXPECT_EQ(r.first_step, 7);
  EXPECT_EQ(r.last_step, 7);
  ASSERT_GE(r.samples.size(), 5u);
  int64_t in_step = 0;
  for (size_t i = 0; i < r.samples.size(); ++i) {
    const ActivationSample& s = r.samples[i];
    // Instant k is at k ms on the monotonic clock: inside the time the sampler ran.
    EXPECT_GE(s.instant * 1000, started - 1000);
    EXPECT_LE(s.instant * 1000, stopped);
    if (i > 0) {
      EXPECT_GT(s.instant, r.samples[i - 1].instant);
    }
    EXPECT_TRUE(s.step == -1 || s.step == 7);
    if (s.step == 7) {
      ++in_step;
      EXPECT_GE(s.bytes - before, 1 << 20);
    }
  }
  EXPECT_GE(in_step, 3);
  EXPECT_EQ(r.samples.front().step, -1);
  EXPECT_EQ(r.samples.back().step, -1);
  EXPECT_EQ(r.samples.back().bytes, before);
}

TEST(ActivationSampler, ThinsToACoarserStrideWhenFull) {
  ActivationSampler sampler(std::chrono::microseconds(100), 8);
  sampler.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  sampler.stop();
  const ActivationSampler::Record& r = sampler.record();
  EXPECT_GT(r.stride, 1);
  EXPECT_LE(r.samples.size(), 8u);
  for (const ActivationSample& s : r.samples) EXPECT_EQ(s.instant % r.stride, 0);
}

}  // namespace
}  // namespace desync
