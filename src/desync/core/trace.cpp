#include "desync/core/trace.h"

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "desync/core/fs.h"

namespace desync {
namespace {

const std::chrono::steady_clock::time_point kEpoch = std::chrono::steady_clock::now();

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
  nlohmann::json events = nlohmann::json::array();
  {
    std::lock_guard<std::mutex> lock(mu_);
    events.push_back({{"name", "process_name"},
                      {"ph", "M"},
                      {"pid", rank},
                      {"args", {{"name", "rank " + std::to_string(rank)}}}});
    for (const Event& e : events_) {
      nlohmann::json ev = {{"name", e.name},
                           {"cat", e.category},
                           {"ph", "X"},
                           {"ts", e.start_us},
                           {"dur", e.end_us - e.start_us},
                           {"pid", rank},
                           {"tid", e.thread}};
      if (e.bytes >= 0) ev["args"] = {{"bytes", e.bytes}};
      events.push_back(std::move(ev));
    }
  }
  nlohmann::json doc = {{"traceEvents", std::move(events)},
                        {"displayTimeUnit", "ms"},
                        {"otherData", {{"dropped_events", dropped_}}}};
  write_file_atomic(path, doc.dump());
}

void Tracer::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  events_.clear();
  dropped_ = 0;
}

}  // namespace desync
