// An algorithm that measures something of its own at every evaluation (forward_gradient: the
// cosine between its gradient estimate and the true gradient on a fixed probe batch;
// contrastive_local: each block's effective rank and linear-probe accuracy) adds it to the eval
// records of metrics.jsonl and to summary.json's eval_metrics. The Trainer asks with
// as_eval_probe().
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "desync/algorithms/algorithm.h"

namespace desync {

class EvalProbe {
 public:
  virtual ~EvalProbe() = default;
  // Named figures, alike on every rank. Called after model_for_eval() (so a pipeline's stages
  // are gathered on every rank); collective on ctx.eval_channel(). `last` is true at the run's
  // final evaluation (where a costly probe may run only). Must leave the training state
  // (parameters, gradients, optimizer state, BatchNorm statistics, generators) as it found it.
  virtual std::vector<std::pair<std::string, double>> probe(Context& ctx, bool last) = 0;
};

inline EvalProbe* as_eval_probe(Algorithm& algorithm) {
  return dynamic_cast<EvalProbe*>(&algorithm);
}

}  // namespace desync
