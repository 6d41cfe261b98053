#include "desync/core/activation_memory.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <memory>
#include <unordered_map>

namespace desync {
namespace {

// Above the default CPU allocator's registration (priority 0).
constexpr uint8_t kPriority = 1;

thread_local int scope_depth = 0;
std::atomic<int64_t> live_bytes{0};
std::atomic<int64_t> peak_bytes{0};

void add_live(int64_t n) {
  const int64_t now = live_bytes.fetch_add(n, std::memory_order_relaxed) + n;
  int64_t peak = peak_bytes.load(std::memory_order_relaxed);
  while (now > peak && !peak_bytes.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

// Counts the allocations made inside an ActivationScope. A counted allocation is handed out as
// (data, context = data, release): data == context, so Allocator::raw_allocate and
// is_simple_data_ptr hold for it as for the default allocator's; the inner allocation's own
// context and deleter wait in a table until release() frees them. raw_deleter() is release()
// too, which frees a pointer it does not know with the inner allocator's raw deleter: so
// raw_deallocate works for counted and uncounted allocations alike (oneDNN allocates its
// scratch memory that way).
class CountingAllocator final : public c10::Allocator {
 public:
  explicit CountingAllocator(c10::Allocator* inner)
      : inner_(inner), inner_raw_(inner->raw_deleter()) {}

  c10::DataPtr allocate(size_t n) override {
    c10::DataPtr p = inner_->allocate(n);
    if (scope_depth == 0 || n == 0 || p.get() == nullptr) return p;
    void* data = p.get();
    const c10::Device device = p.device();
    {
      std::lock_guard<std::mutex> lock(mu_);
      table_.emplace(data, Entry{static_cast<int64_t>(n), std::move(p.move_context())});
      counted_.store(table_.size(), std::memory_order_relaxed);
    }
    add_live(static_cast<int64_t>(n));
    return c10::DataPtr(data, data, &release, device);
  }

  c10::DeleterFnPtr raw_deleter() const override { return inner_raw_ ? &release : nullptr; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  static CountingAllocator* instance;

 private:
  struct Entry {
    int64_t bytes;
    std::unique_ptr<void, c10::DeleterFnPtr> context;  // the inner allocator's
  };

  static void release(void* data) {
    CountingAllocator* self = instance;
    if (self->counted_.load(std::memory_order_relaxed) > 0) {
      std::unique_ptr<void, c10::DeleterFnPtr> context(nullptr, nullptr);
      int64_t bytes = -1;
      {
        std::lock_guard<std::mutex> lock(self->mu_);
        auto it = self->table_.find(data);
        if (it != self->table_.end()) {
          bytes = it->second.bytes;
          context = std::move(it->second.context);
          self->table_.erase(it);
          self->counted_.store(self->table_.size(), std::memory_order_relaxed);
        }
      }
      if (bytes >= 0) {
        live_bytes.fetch_sub(bytes, std::memory_order_relaxed);
        return;  // `context` frees the memory with the inner allocator's deleter
      }
    }
    self->inner_raw_(data);  // an uncounted allocation released through raw_deallocate
  }

  c10::Allocator* const inner_;
  const c10::DeleterFnPtr inner_raw_;
  std::mutex mu_;
  std::unordered_map<void*, Entry> table_;
  std::atomic<size_t> counted_{0};
};

CountingAllocator* CountingAllocator::instance = nullptr;

// Installs the counting allocator; true if it is now LibTorch's CPU allocator.
bool install() {
  // Never destroyed: tensors it allocated may be freed during static destruction.
  auto* counting = new CountingAllocator(c10::GetCPUAllocator());
  CountingAllocator::instance = counting;
  c10::SetCPUAllocator(counting, kPriority);
  return c10::GetCPUAllocator() == counting;
}

// Installed before main(), while the process has one thread: a thread that allocates reads
// LibTorch's allocator pointer without synchronisation, so it must not change once threads run.
// (LibTorch registers its own CPU allocator in its libraries' initialisers, which run first.)
const bool installed = install();

}  // namespace

ActivationScope::ActivationScope() { ++scope_depth; }

ActivationScope::~ActivationScope() { --scope_depth; }

int64_t live_activation_bytes() { return live_bytes.load(std::memory_order_relaxed); }

int64_t peak_activation_bytes() { return peak_bytes.load(std::memory_order_relaxed); }

void reset_peak_activation_bytes() {
  peak_bytes.store(live_bytes.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

bool activation_counting_installed() { return installed; }

ActivationSampler::ActivationSampler(std::chrono::microseconds period, size_t max_samples)
    : period_(period), max_samples_(std::max<size_t>(2, max_samples)) {
  record_.period_us = std::max<int64_t>(1, period_.count());
}

ActivationSampler::~ActivationSampler() { stop(); }

void ActivationSampler::start() {
  if (thread_.joinable()) return;
  stop_.store(false);
  thread_ = std::thread([this] { loop(); });
}

void ActivationSampler::stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void ActivationSampler::begin_step(int64_t step) {
  if (record_.first_step < 0) record_.first_step = step;
  record_.last_step = step;
  step_.store(step, std::memory_order_relaxed);
}

void ActivationSampler::end_step() { step_.store(-1, std::memory_order_relaxed); }

void ActivationSampler::loop() {
  using Clock = std::chrono::steady_clock;
  const int64_t period = record_.period_us;
  auto instant_now = [period] {
    return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now().time_since_epoch())
               .count() /
           period;
  };
  int64_t last = -1;  // the last instant sampled
  int64_t next = instant_now() + 1;
  while (!stop_.load(std::memory_order_relaxed)) {
    std::this_thread::sleep_until(Clock::time_point(std::chrono::microseconds(next * period)));
    const int64_t stride = record_.stride;
    const int64_t now = instant_now();
    const int64_t instant = now - now % stride;  // the latest kept instant that has passed
    if (instant <= last) {                       // woke early
      next = last + stride;
      continue;
    }
    ActivationSample s{instant, live_activation_bytes(), step_.load(std::memory_order_relaxed)};
    if (last >= 0) record_.missed += (instant - last) / stride - 1;
    record_.samples.push_back(s);
    last = instant;
    if (record_.samples.size() >= max_samples_) {  // thin to every other kept instant
      const int64_t coarser = 2 * stride;
      std::erase_if(record_.samples,
                    [coarser](const ActivationSample& x) { return x.instant % coarser != 0; });
      record_.stride = coarser;
      last = record_.samples.empty() ? -1 : record_.samples.back().instant;
    }
    next = last + record_.stride;
  }
}

}  // namespace desync
