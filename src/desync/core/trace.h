// Per-process timeline in the Chrome trace event format (opens in Perfetto and chrome://tracing).
//
// Spans are recorded on a monotonic clock, in microseconds since the process's trace epoch,
// with a category and the thread that ran them. Categories:
//   compute     forward/backward work (and an emulated slow worker's extra time)
//   optimizer   parameter updates
//   wait        the thread was blocked: on a communication call, or on a background comm thread
//   comm        a communication call from issue to completion (it may run while the thread
//               computes: it does not occupy the thread)
//   eval, checkpoint
//   phase       an algorithm's phase (ACCO's estimate/real rounds, DPU's delayed update) that
//               encloses spans of the categories above; a label, it does not occupy the thread
//   reduce      a gradient reduction of one group ("reduce <group>", e.g. a DDP bucket) from its
//               launch to the moment its completion was seen (core/reductions.h); a label, it
//               does not occupy the thread
// Recording is thread-safe and cheap (one lock, one vector append); names and categories must
// be string literals or otherwise outlive the tracer. A cap bounds memory on long runs: past it,
// spans are counted but dropped, and the file says how many (the totals below then undercount).
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace desync {

class Tracer {
 public:
  static Tracer& instance();

  // Microseconds since the trace epoch.
  static int64_t now_us();
  // The trace epoch on the machine's monotonic clock (std::chrono::steady_clock's time since its
  // epoch), in microseconds: now_us() + epoch_us() is comparable across the processes of one
  // machine.
  static int64_t epoch_us();

  void span(const char* name, const char* category, int64_t start_us, int64_t end_us,
            int64_t bytes = -1);
  // Writes the trace for `rank` to `path` (atomically), with timestamps ("ts") on the machine's
  // monotonic clock, so that traces of processes on one machine share a time axis.
  void write(const std::string& path, int64_t rank) const;
  void clear();

  // Where the calling thread's time went in [begin_us, end_us), in seconds. Each instant is
  // given to the span of this thread that started first among those covering it (for nested
  // spans: the outermost), counting only the categories that occupy a thread (compute,
  // optimizer, wait, eval, checkpoint); instants in none of them are `other`.
  struct ThreadTime {
    double compute = 0, optimizer = 0, wait = 0, eval = 0, checkpoint = 0, other = 0;
  };
  ThreadTime thread_time(int64_t begin_us, int64_t end_us) const;
  // Seconds in [begin_us, end_us) during which at least one span of `category` was open, on any
  // thread (for "comm": the time some communication call was in flight).
  double busy_seconds(const char* category, int64_t begin_us, int64_t end_us) const;
  // Seconds in [begin_us, end_us) during which at least one span of `category` was open on any
  // thread while the calling thread had no span of `occupied` open (for "comm" and "wait": the
  // time communication was in flight while the training thread did not wait for it).
  double busy_seconds_unless(const char* category, const char* occupied, int64_t begin_us,
                             int64_t end_us) const;
  // The converse: seconds in [begin_us, end_us) during which the calling thread had a span of
  // `occupied` open while no span of `category` was open on any thread (for "wait" and "comm":
  // the training thread waited for a background thread that was not communicating).
  double occupied_seconds_unless(const char* occupied, const char* category, int64_t begin_us,
                                 int64_t end_us) const;

 private:
  struct Event {
    const char* name;
    const char* category;
    int64_t start_us, end_us, bytes;
    uint32_t thread;
  };
  mutable std::mutex mu_;
  std::vector<Event> events_;
  int64_t dropped_ = 0;
  static constexpr size_t kMaxEvents = 2'000'000;
};

// Records a span from construction to destruction.
class TraceSpan {
 public:
  TraceSpan(const char* name, const char* category)
      : name_(name), category_(category), start_(Tracer::now_us()) {}
  ~TraceSpan() { Tracer::instance().span(name_, category_, start_, Tracer::now_us()); }
  TraceSpan(const TraceSpan&) = delete;
  TraceSpan& operator=(const TraceSpan&) = delete;

 private:
  const char* name_;
  const char* category_;
  int64_t start_;
};

}  // namespace desync
