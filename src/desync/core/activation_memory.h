// Activation memory: the bytes of CPU tensors a training forward pass allocates and backward
// frees, counted as they are allocated and freed, and sampled over time.
//
// A counting wrapper around LibTorch's CPU allocator is installed process-wide, once, while the
// program starts and no second thread exists yet (c10::SetCPUAllocator at a priority above the
// default allocator's; LibTorch hands its allocator to every thread through a plain global, so
// installing it later, while other threads allocate, would be a data race). While a thread is
// inside an ActivationScope, every CPU allocation that thread makes is counted until it is
// freed, by whichever thread frees it. A training forward
// pass runs inside a scope (algorithms/common.cpp, the pipelines' stages): the tensors autograd
// saves for backward are allocated there and freed during backward, so the live count is the
// bytes of live activations plus the forward's transient temporaries. Allocations made outside
// every scope are handed back untouched (the default allocator's own DataPtr, deleter and
// raw_deleter), so the wrapper costs them one thread-local read. CPU tensors only: memory on an
// accelerator is not seen. The count is per process: ranks run as threads of one process (the
// tests' fake communicator) share it.
//
// ActivationSampler samples the live count on a background thread at instants aligned to the
// machine's monotonic clock: instant k is t = k * period on std::chrono::steady_clock
// (CLOCK_MONOTONIC, shared by the processes of one machine), so samples of the ranks of a local
// job line up by k and can be summed instant by instant. Each sample is read at the first wake-up
// at or after its instant (within one period of it on an idle machine; an instant the thread
// overslept is missed, not invented). Each sample also says which step the training thread was
// in (Trainer marks algorithm steps with begin_step / end_step), or that it was between steps.
//
// Thread-safety: everything here may be called from any thread; ActivationScope is per thread;
// begin_step/end_step are meant for the one training thread; record() after stop().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace desync {

// Marks the calling thread's CPU allocations as activations while it lives. Nestable: counting
// stops when the outermost scope of the thread ends. Tensors allocated inside stay counted until
// freed.
class ActivationScope {
 public:
  ActivationScope();
  ~ActivationScope();
  ActivationScope(const ActivationScope&) = delete;
  ActivationScope& operator=(const ActivationScope&) = delete;
};

// Bytes allocated inside an ActivationScope (on any thread of this process) and not yet freed.
int64_t live_activation_bytes();
// The highest live_activation_bytes() since the process started or the last reset: exact, at
// allocation granularity (sampling does not miss it).
int64_t peak_activation_bytes();
// Sets the peak to the current live count.
void reset_peak_activation_bytes();
// True if the counting allocator became LibTorch's CPU allocator when the program started;
// false if another allocator of a higher priority held the slot, and nothing is counted.
bool activation_counting_installed();

struct ActivationSample {
  int64_t instant = 0;  // at instant * period on steady_clock
  int64_t bytes = 0;    // live_activation_bytes() then
  int64_t step = -1;    // the step the training thread was in, -1 between steps
};

class ActivationSampler {
 public:
  static constexpr std::chrono::microseconds kDefaultPeriod{1000};
  // Beyond max_samples (by default this many) the sampler thins what it holds to every other
  // instant (of the instants that are multiples of 2 * stride) and samples at that coarser stride
  // from then on, so a long run holds at most this many samples (24 bytes each).
  static constexpr size_t kMaxSamples = size_t{1} << 19;

  explicit ActivationSampler(std::chrono::microseconds period = kDefaultPeriod,
                             size_t max_samples = kMaxSamples);
  ~ActivationSampler();  // stops
  ActivationSampler(const ActivationSampler&) = delete;
  ActivationSampler& operator=(const ActivationSampler&) = delete;

  void start();
  void stop();  // joins the thread; idempotent

  // The training thread enters / leaves step `step` (Trainer: around each algorithm->step()).
  void begin_step(int64_t step);
  void end_step();

  struct Record {
    int64_t period_us = 0;  // instant k is at k * period_us on steady_clock
    int64_t stride = 1;     // kept instants are multiples of it (> 1 only after thinning)
    std::vector<ActivationSample> samples;    // increasing instants
    int64_t first_step = -1, last_step = -1;  // the first and last step marked
    int64_t missed = 0;  // instants (multiples of the stride) overslept and not sampled
  };
  // What was sampled. REQUIRES: stopped (or never started).
  const Record& record() const { return record_; }

 private:
  void loop();

  const std::chrono::microseconds period_;
  const size_t max_samples_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> step_{-1};
  std::thread thread_;
  Record record_;
};

}  // namespace desync
