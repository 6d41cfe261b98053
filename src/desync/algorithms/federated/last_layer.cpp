#include "desync/algorithms/federated/last_layer.h"

#include <cmath>

#include "desync/core/error.h"
#include "desync/data/partition.h"

namespace desync {

LastLayer::LastLayer(StagedModel model) : model_(std::move(model)) {
  torch::nn::Sequential& last = model_->stage(model_->num_stages() - 1);
  const int64_t n = static_cast<int64_t>(last->size());
  auto linear = n > 0 ? last->ptr(n - 1)->as<torch::nn::Linear>() : nullptr;
  if (linear == nullptr)
    throw ConfigError(
        "the last-layer methods need a model whose last stage ends with a Linear "
        "layer (cnn, mlp, resnet18, revnet); '" +
        model_->stage_name(model_->num_stages() - 1) + "' does not");
  head_ = torch::nn::Linear(std::dynamic_pointer_cast<torch::nn::LinearImpl>(last->ptr(n - 1)));
  int64_t i = 0;
  for (auto it = last->begin(); i < n - 1; ++it, ++i) tail_->push_back(*it);
}

torch::Tensor LastLayer::features(const torch::Tensor& x) {
  torch::Tensor h = model_->forward_range(x, 0, model_->num_stages() - 1);
  return tail_->is_empty() ? h : tail_->forward(h);
}

void LastLayer::set_features_training(bool on) {
  const bool head_training = head_->is_training();
  model_->train(on);
  head_->train(head_training);
}

void LastLayer::reset_head(uint64_t key) {
  torch::NoGradGuard no_grad;
  CounterRng rng(key);
  const double bound = 1.0 / std::sqrt(static_cast<double>(feature_width()));
  for (torch::Tensor t : {head_->weight, head_->bias}) {
    if (!t.defined()) continue;
    std::vector<double> v(static_cast<size_t>(t.numel()));
    for (double& x : v) x = (2.0 * rng.uniform() - 1.0) * bound;
    t.copy_(torch::tensor(v, torch::kFloat64).view(t.sizes()));
  }
}

std::vector<int64_t> set_ncm_head(torch::nn::Linear& head, const torch::Tensor& sums,
                                  const torch::Tensor& counts, const NcmOptions& options) {
  torch::NoGradGuard no_grad;
  const torch::Tensor s = sums.to(torch::kFloat64);
  const torch::Tensor n = counts.to(torch::kFloat64);
  std::vector<int64_t> missing;
  torch::Tensor means = torch::zeros_like(s);
  for (int64_t c = 0; c < s.size(0); ++c) {
    if (n[c].item<double>() > 0)
      means[c] = s[c] / n[c];
    else
      missing.push_back(c);
  }
  const torch::Tensor norms = means.norm(2, {1}, /*keepdim=*/true);
  if (options.euclidean) {
    head->weight.copy_(means);
    if (head->bias.defined()) head->bias.copy_(-0.5 * norms.squeeze(1).square());
  } else {
    head->weight.copy_(torch::where(norms > 0, means / norms.clamp_min(1e-300), means));
    if (head->bias.defined() && !options.keep_bias) head->bias.zero_();
  }
  return missing;
}

}  // namespace desync
