// Gradient reductions as a timeline: when each group of a rank's gradient (a DDP bucket, a
// pipeline stage's gradient, ...) was handed to a collective and when that collective completed.
//
// An algorithm calls record_reduction() once per group and step, when it knows the reduction
// has completed (DDP: when the bucket's wait() returns). The k-th record of a group on a rank is
// that group's reduction of the k-th step, so the ranks' records pair up by (group, k); the
// summary (report/summary.h) takes for each pair the interval during which it was in flight
// across the job. Each record is also a trace span of category "reduce" named "reduce <group>"
// (core/trace.h). Times are Tracer::now_us(). Thread-safe; records are kept per process (ranks
// run as threads of one process share them) until clear_reductions().
#pragma once

#include <cstdint>
#include <vector>

namespace desync {

struct ReductionRecord {
  int64_t group = 0;
  int64_t issue_us = 0;     // the reduction was launched (Tracer::now_us())
  int64_t complete_us = 0;  // its completion was seen
  int64_t bytes = 0;        // the payload: the group's gradient in its wire precision
};

void record_reduction(int64_t group, int64_t issue_us, int64_t complete_us, int64_t bytes);

// The records so far, in the order they were recorded.
std::vector<ReductionRecord> recorded_reductions();
void clear_reductions();

}  // namespace desync
