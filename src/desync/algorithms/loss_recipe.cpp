#include "desync/algorithms/loss_recipe.h"

namespace desync {

double sample_beta(double alpha, at::Generator& gen) {
  const torch::Tensor xy = at::_standard_gamma(torch::full({2}, alpha, torch::kFloat64), gen);
  return (xy[0] / (xy[0] + xy[1])).item<double>();
}

MixedBatch mix(const MicroBatch& batch, double alpha, at::Generator& gen) {
  if (alpha == 0.0) return {batch.inputs, batch.targets, batch.targets, 1.0};
  const double lambda = sample_beta(alpha, gen);
  const torch::Tensor pi =
      torch::randperm(batch.inputs.size(0), gen, torch::TensorOptions().dtype(torch::kLong));
  return {lambda * batch.inputs + (1.0 - lambda) * batch.inputs.index_select(0, pi), batch.targets,
          batch.targets.index_select(0, pi), lambda};
}

torch::Tensor recipe_loss(const torch::Tensor& logits, const MixedBatch& batch,
                          double label_smoothing) {
  const auto options =
      torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(label_smoothing);
  auto ce = [&](const torch::Tensor& targets) {
    return torch::nn::functional::cross_entropy(logits, targets, options);
  };
  if (batch.lambda == 1.0) return ce(batch.targets);
  return batch.lambda * ce(batch.targets) + (1.0 - batch.lambda) * ce(batch.paired_targets);
}

}  // namespace desync
