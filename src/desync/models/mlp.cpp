// The multi-layer perceptron: one stage per hidden layer, so pipelines can split it anywhere.
//
// Under the standard parametrisation with dense layers every layer is LibTorch's Linear with its
// initialisation. With model.low_rank the hidden layers (not the head) are factorised
// LinearLayers; with model.parametrization = "mup" every layer is a LinearLayer initialised and
// multiplied as mup.h's table says.
#include <cmath>
#include <string>

#include "desync/core/error.h"
#include "desync/models/builders.h"
#include "desync/models/low_rank.h"

namespace desync::models {
namespace {

enum class Layer { kInput, kHidden, kOutput };

// One layer of the MLP, as the parametrisation and model.low_rank make it.
torch::nn::AnyModule layer(const ModelConfig& cfg, Layer role, int64_t in, int64_t out) {
  const bool mup = cfg.parametrization == "mup";
  const int64_t rank = role == Layer::kOutput ? 0 : resolve_rank(cfg.low_rank, in, out);
  if (!mup && rank == 0) return torch::nn::AnyModule(torch::nn::Linear(in, out));
  double mult = 1.0;
  if (mup && role == Layer::kInput) mult = cfg.mup_input_mult;
  if (mup && role == Layer::kOutput) mult = cfg.mup_output_mult / static_cast<double>(in);
  LinearLayer linear(in, out, /*bias=*/true, rank, mult);
  if (mup) {
    const double std = role != Layer::kOutput          ? 1.0 / std::sqrt(static_cast<double>(in))
                       : cfg.mup_output_init == "zero" ? 0.0
                                                       : 1.0;
    linear->init_truncated_normal(std, /*bias_std=*/1.0);
  }
  return torch::nn::AnyModule(linear);
}

}  // namespace

void build_mlp(StagedModelImpl& model, const ModelConfig& cfg, const ModelInput& input) {
  int64_t in_features = 1;
  for (int64_t d : input.example_shape) in_features *= d;
  bool flattened = false;
  for (size_t i = 0; i < cfg.hidden.size(); ++i) {
    const int64_t width = cfg.hidden[i];
    if (width < 1) throw ConfigError("model.hidden: widths must be >= 1");
    torch::nn::Sequential stage;
    if (!flattened) stage->push_back(torch::nn::Flatten());
    flattened = true;
    stage->push_back(layer(cfg, i == 0 ? Layer::kInput : Layer::kHidden, in_features, width));
    stage->push_back(torch::nn::ReLU());
    model.add_stage("fc" + std::to_string(i + 1), stage);
    in_features = width;
  }
  torch::nn::Sequential head;
  if (!flattened) head->push_back(torch::nn::Flatten());
  head->push_back(layer(cfg, Layer::kOutput, in_features, input.num_classes));
  model.add_stage("head", head);
}

}  // namespace desync::models
