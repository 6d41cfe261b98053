#include "desync/models/sgns.h"

#include "desync/core/error.h"
#include "desync/models/builders.h"

namespace desync {

SgnsTablesImpl::SgnsTablesImpl(int64_t vocab, int64_t dim) {
  torch::NoGradGuard no_grad;
  w_in = register_parameter("w_in", (torch::rand({vocab, dim}) - 0.5) / static_cast<double>(dim));
  w_out = register_parameter("w_out", torch::zeros({vocab, dim}));
}

torch::Tensor SgnsTablesImpl::forward(const torch::Tensor& x) {
  const torch::Tensor centre = w_in.index_select(0, x.select(1, 0));  // [B, d]
  const torch::Tensor others = w_out.index_select(0, x.narrow(1, 1, x.size(1) - 1).reshape(-1))
                                   .view({x.size(0), x.size(1) - 1, w_out.size(1)});  // [B, 1+k, d]
  return torch::bmm(others, centre.unsqueeze(2)).squeeze(2);
}

namespace models {

void build_sgns(StagedModelImpl& model, const ModelConfig& cfg, const ModelInput& input) {
  if (cfg.d_model < 1) throw ConfigError("model.d_model (the embedding dimension) must be >= 1");
  torch::nn::Sequential embed;
  embed->push_back(SgnsTables(input.num_classes, cfg.d_model));
  model.add_stage("embed", embed);
}

}  // namespace models
}  // namespace desync
