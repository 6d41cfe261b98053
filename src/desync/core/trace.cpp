#include "desync/core/trace.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "desync/core/fs.h"

namespace desync {
namespace {

const std::chrono::steady_clock::time_point kEpoch = std::chrono::steady_clock::now();

// Seconds covered by the union of [start, end) intervals, clipped to [begin, end).
double union_seconds(std::vector<std::pair<int64_t, int64_t>> spans, int64_t begin, int64_t end) {
  std::sort(spans.begin(), spans.end());
  int64_t covered = 0, until = begin;
  for (auto [s, e] : spans) {
    s = std::max({s, until, begin});
    e = std::min(e, end);
    if (e > s) {
      covered += e - s;
      until = e;
    }
  }
  return static_cast<double>(covered) * 1e-6;
}

uint32_t thread_number() {
  static std::mutex mu;
  static std::vector<std::thread::id> seen;
  thread_local uint32_t mine = [] {
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back(std::this_thread::get_id());
    return static_cast<uint32_t>(seen.size());
  }();
  return mine;
}

// Seconds covered, in [begin, end), by A (spans of `category`, any thread), by B (spans of
// `occupied`, thread `me`) and by their union.
struct SpanSets {
  double any = 0, mine = 0, either = 0;
};
template <class Events>
SpanSets span_sets(const Events& events, const char* category, const char* occupied, uint32_t me,
                   int64_t begin, int64_t end) {
  std::vector<std::pair<int64_t, int64_t>> a, b, either;
  for (const auto& e : events) {
    const bool in_a = std::strcmp(e.category, category) == 0;
    const bool in_b = e.thread == me && std::strcmp(e.category, occupied) == 0;
    if (in_a) a.emplace_back(e.start_us, e.end_us);
    if (in_b) b.emplace_back(e.start_us, e.end_us);
    if (in_a || in_b) either.emplace_back(e.start_us, e.end_us);
  }
  return {union_seconds(std::move(a), begin, end), union_seconds(std::move(b), begin, end),
          union_seconds(std::move(either), begin, end)};
}

}  // namespace

Tracer& Tracer::instance() {
  static Tracer tracer;
  return tracer;
}

int64_t Tracer::now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                               kEpoch)
      .count();
}

int64_t Tracer::epoch_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(kEpoch.time_since_epoch()).count();
}

void Tracer::span(const char* name, const char* category, int64_t start_us, int64_t end_us,
                  int64_t bytes) {
  uint32_t tid = thread_number();
  std::lock_guard<std::mutex> lock(mu_);
  if (events_.size() >= kMaxEvents) {
    ++dropped_;
    return;
  }
  events_.push_back({name, category, start_us, end_us, bytes, tid});
}

void Tracer::write(const std::string& path, int64_t rank) const {
  // Timestamps in the file are on the machine's monotonic clock (not since this process's
  // epoch), so the traces of ranks that share a machine line up when opened together.
  const int64_t epoch_us = Tracer::epoch_us();
  nlohmann::json events = nlohmann::json::array();
  int64_t dropped = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    dropped = dropped_;  // under the lock: span() counts drops on other threads
    events.push_back({{"name", "process_name"},
                      {"ph", "M"},
                      {"pid", rank},
                      {"args", {{"name", "rank " + std::to_string(rank)}}}});
    for (const Event& e : events_) {
      nlohmann::json ev = {{"name", e.name},
                           {"cat", e.category},
                           {"ph", "X"},
                           {"ts", epoch_us + e.start_us},
                           {"dur", e.end_us - e.start_us},
                           {"pid", rank},
                           {"tid", e.thread}};
      if (e.bytes >= 0) ev["args"] = {{"bytes", e.bytes}};
      events.push_back(std::move(ev));
    }
  }
  nlohmann::json doc = {{"traceEvents", std::move(events)},
                        {"displayTimeUnit", "ms"},
                        {"otherData", {{"dropped_events", dropped}}}};
  write_file_atomic(path, doc.dump());
}

Tracer::ThreadTime Tracer::thread_time(int64_t begin_us, int64_t end_us) const {
  struct Slice {
    int64_t start, end;
    double* into;
  };
  ThreadTime t;
  const std::pair<const char*, double*> occupying[] = {{"compute", &t.compute},
                                                       {"optimizer", &t.optimizer},
                                                       {"wait", &t.wait},
                                                       {"eval", &t.eval},
                                                       {"checkpoint", &t.checkpoint}};
  const uint32_t me = thread_number();
  std::vector<Slice> slices;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Event& e : events_) {
      if (e.thread != me) continue;
      for (const auto& [category, into] : occupying)
        if (std::strcmp(e.category, category) == 0) slices.push_back({e.start_us, e.end_us, into});
    }
  }
  std::sort(slices.begin(), slices.end(),
            [](const Slice& a, const Slice& b) { return a.start < b.start; });
  int64_t until = begin_us, attributed = 0;
  for (const Slice& s : slices) {  // sweep: the earliest-starting open span owns each instant
    int64_t from = std::max(s.start, until), to = std::min(s.end, end_us);
    if (to > from) {
      *s.into += static_cast<double>(to - from) * 1e-6;
      attributed += to - from;
      until = to;
    }
  }
  t.other = std::max<double>(0.0, static_cast<double>(end_us - begin_us - attributed) * 1e-6);
  return t;
}

double Tracer::busy_seconds(const char* category, int64_t begin_us, int64_t end_us) const {
  std::vector<std::pair<int64_t, int64_t>> spans;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Event& e : events_)
      if (std::strcmp(e.category, category) == 0) spans.emplace_back(e.start_us, e.end_us);
  }
  return union_seconds(std::move(spans), begin_us, end_us);
}

double Tracer::busy_seconds_unless(const char* category, const char* occupied, int64_t begin_us,
                                   int64_t end_us) const {
  std::lock_guard<std::mutex> lock(mu_);
  SpanSets u = span_sets(events_, category, occupied, thread_number(), begin_us, end_us);
  return u.either - u.mine;  // |A \ B| = |A u B| - |B|
}

double Tracer::occupied_seconds_unless(const char* occupied, const char* category, int64_t begin_us,
                                       int64_t end_us) const {
  std::lock_guard<std::mutex> lock(mu_);
  SpanSets u = span_sets(events_, category, occupied, thread_number(), begin_us, end_us);
  return u.either - u.any;  // |B \ A| = |A u B| - |A|
}

void Tracer::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  events_.clear();
  dropped_ = 0;
}

}  // namespace desync
