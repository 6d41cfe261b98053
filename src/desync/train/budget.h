// The length of a run: a number of steps, or a data budget that every algorithm consumes alike.
//
// run.steps > 0 counts steps. Otherwise the budget is data: run.samples, run.tokens (sequence
// datasets: tokens / data.seq_len examples) or run.epochs, turned into global micro-batches of
// data.batch_size. An algorithm declares (AlgorithmTraits) how many micro-batches a step
// consumes; when that is fixed the budget becomes the number of whole steps that fit, so no
// method reads more than the budget and each reads it to within one step; when it varies
// (ACCO) the Trainer counts what the ranks consumed and stops when the budget is spent.
#pragma once

#include <cstdint>

#include "desync/algorithms/algorithm.h"
#include "desync/core/config.h"

namespace desync {

struct Budget {
  int64_t steps = 1;           // steps to take (an estimate, for the schedule, when it varies)
  int64_t micro_batches = -1;  // global micro-batches to consume; -1 = counted in steps
  int64_t per_step = 0;        // global micro-batches a step consumes (at least, when it varies)
  bool varies = false;         // consumption varies: stop on micro_batches, not on steps

  bool counts_data() const { return micro_batches >= 0; }
  // Whether the run is over after `step` steps that consumed `consumed` global micro-batches.
  bool spent(int64_t step, int64_t consumed) const {
    return varies && counts_data() ? consumed >= micro_batches : step >= steps;
  }
  // Global micro-batches left after `consumed` (-1 when counted in steps).
  int64_t left(int64_t consumed) const {
    return counts_data() ? std::max<int64_t>(0, micro_batches - consumed) : -1;
  }
  // Fraction of the run done, for progress.
  double fraction(int64_t step, int64_t consumed) const;
};

// The budget of `cfg` for an algorithm with `traits`, where `readers` ranks read the stream and
// each reader's epoch has `batches_per_epoch` micro-batches.
Budget make_budget(const Config& cfg, const AlgorithmTraits& traits, int64_t readers,
                   int64_t batches_per_epoch);

}  // namespace desync
