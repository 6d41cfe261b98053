// An algorithm whose model_for_eval() puts together weights that never ran together (a
// population's average; sdp's subnetworks, assembled into the whole model) can ask the Trainer
// to re-estimate that model's BatchNorm statistics on training batches before it is evaluated
// (train/evaluation.h: reestimate_batchnorm). The Trainer asks with repair_of().
#pragma once

#include <cstdint>

#include "desync/algorithms/algorithm.h"

namespace desync {

class EvalRepair {
 public:
  virtual ~EvalRepair() = default;
  // Training batches to re-estimate on; 0 = none.
  virtual int64_t repair_batches() const = 0;
};

inline int64_t repair_batches_of(const Algorithm& algorithm) {
  const auto* r = dynamic_cast<const EvalRepair*>(&algorithm);
  return r ? r->repair_batches() : 0;
}

}  // namespace desync
