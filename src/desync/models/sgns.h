// The tables of skip-gram with negative sampling (model "sgns"): input vectors W_in and output
// vectors W_out, [V, d] each (V = the data's vocabulary, d = model.d_model).
//
// Initialised as word2vec.c does: W_in ~ U[-0.5, 0.5) / d (from the torch generator), W_out = 0.
// forward(x) takes int64 [B, 2 + k] rows (centre, context, k negatives) and returns the scores
// W_in[centre] . W_out[u] for u = context, negatives: [B, 1 + k]. Its cross-entropy against
// class 0 is the loss of picking the true context among 1 + k, which the evaluation reports;
// training does not go through forward (the sgns algorithm updates the tables in place).
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace desync {

class SgnsTablesImpl : public torch::nn::Module {
 public:
  SgnsTablesImpl(int64_t vocab, int64_t dim);
  torch::Tensor forward(const torch::Tensor& x);

  torch::Tensor w_in, w_out;
};
TORCH_MODULE(SgnsTables);

}  // namespace desync
