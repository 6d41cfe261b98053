// Per-process timeline in the Chrome trace event format (opens in Perfetto and chrome://tracing).
//
// Spans are recorded on a monotonic clock, in microseconds since the process's trace epoch,
// with a category ("compute", "comm", "wait", "optimizer", "eval", "checkpoint") and the thread
// that ran them. Recording is thread-safe and cheap (one lock, one vector append); names must
// be string literals or otherwise outlive the tracer. A cap bounds memory on long runs: past it,
// spans are counted but dropped, and the file says how many.
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

  void span(const char* name, const char* category, int64_t start_us, int64_t end_us,
            int64_t bytes = -1);
  // Writes the trace for `rank` to `path` (atomically).
  void write(const std::string& path, int64_t rank) const;
  void clear();

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
