// The multi-layer perceptron: one stage per hidden layer, so pipelines can split it anywhere.
#include <string>

#include "desync/core/error.h"
#include "desync/models/builders.h"

namespace desync::models {

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
    stage->push_back(torch::nn::Linear(in_features, width));
    stage->push_back(torch::nn::ReLU());
    model.add_stage("fc" + std::to_string(i + 1), stage);
    in_features = width;
  }
  torch::nn::Sequential head;
  if (!flattened) head->push_back(torch::nn::Flatten());
  head->push_back(torch::nn::Linear(in_features, input.num_classes));
  model.add_stage("head", head);
}

}  // namespace desync::models
