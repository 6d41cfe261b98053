#include "desync/core/reductions.h"

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "desync/core/trace.h"

namespace desync {
namespace {

std::mutex mu;
std::vector<ReductionRecord>& records() {
  static auto* r = new std::vector<ReductionRecord>();  // outlives every user
  return *r;
}
// Beyond it, reductions are traced but not kept for the summary (a bound on memory).
constexpr size_t kMaxRecords = 1'000'000;

// "reduce <group>", one string per group, never freed: the tracer keeps the pointers.
const char* span_name(int64_t group) {
  static auto* names = new std::unordered_map<int64_t, std::unique_ptr<std::string>>();
  auto& name = (*names)[group];
  if (!name) name = std::make_unique<std::string>("reduce " + std::to_string(group));
  return name->c_str();
}

}  // namespace

void record_reduction(int64_t group, int64_t issue_us, int64_t complete_us, int64_t bytes) {
  const char* name;
  {
    std::lock_guard<std::mutex> lock(mu);
    name = span_name(group);
    if (records().size() < kMaxRecords) records().push_back({group, issue_us, complete_us, bytes});
  }
  Tracer::instance().span(name, "reduce", issue_us, complete_us, bytes);
}

std::vector<ReductionRecord> recorded_reductions() {
  std::lock_guard<std::mutex> lock(mu);
  return records();
}

void clear_reductions() {
  std::lock_guard<std::mutex> lock(mu);
  records().clear();
}

}  // namespace desync
