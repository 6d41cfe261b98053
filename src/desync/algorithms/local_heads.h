// An algorithm that trains auxiliary heads on its blocks' outputs (local learning: dgl) can have
// the Trainer score each of them at every evaluation, next to the model: head k's accuracy is
// that of blocks 1..k followed by head k (metrics.jsonl's eval records and summary.json's
// eval_metrics: aux_accuracy_<k>, aux_loss_<k>). The Trainer asks with as_local_heads().
#pragma once

#include <vector>

#include "desync/algorithms/algorithm.h"

namespace desync {

class LocalHeads {
 public:
  virtual ~LocalHeads() = default;
  // One model per auxiliary head, in block order: the model's stages up to the head's block,
  // then the head. Call after model_for_eval() (which gathers the blocks); collective on
  // ctx.eval_channel() (it gathers the heads from their owners). Changes no training state.
  virtual std::vector<StagedModel> head_models(Context& ctx) = 0;
};

inline LocalHeads* as_local_heads(Algorithm& algorithm) {
  return dynamic_cast<LocalHeads*>(&algorithm);
}

}  // namespace desync
