#include "desync/train/budget.h"

#include <algorithm>
#include <cmath>

namespace desync {

double Budget::fraction(int64_t step, int64_t consumed) const {
  if (varies && counts_data())
    return micro_batches > 0
               ? std::min(1.0, static_cast<double>(consumed) / static_cast<double>(micro_batches))
               : 1.0;
  return steps > 0 ? std::min(1.0, static_cast<double>(step) / static_cast<double>(steps)) : 1.0;
}

Budget make_budget(const Config& cfg, const AlgorithmTraits& traits, int64_t readers,
                   int64_t batches_per_epoch) {
  Budget b;
  b.per_step = traits.accumulations_per_step * cfg.algorithm.accumulation * readers;
  b.varies = traits.consumption_varies;
  if (cfg.run.steps > 0) {
    b.steps = cfg.run.steps;
    return b;
  }
  const int64_t batch = cfg.data.batch_size;
  if (cfg.run.samples > 0) {
    b.micro_batches = cfg.run.samples / batch;
  } else if (cfg.run.tokens > 0) {
    b.micro_batches = cfg.run.tokens / (cfg.data.seq_len * batch);
  } else {  // an epoch: every reader's micro-batches of one pass over the (sharded) stream
    b.micro_batches = static_cast<int64_t>(cfg.run.epochs * static_cast<double>(batches_per_epoch) *
                                           static_cast<double>(readers));
  }
  b.micro_batches = std::max(b.micro_batches, b.per_step);  // at least one step
  b.steps = std::max<int64_t>(1, b.micro_batches / b.per_step);
  return b;
}

}  // namespace desync
