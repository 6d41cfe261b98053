// The small convolutional network used for (Fashion-)MNIST: conv blocks, then a two-layer head.
//
// With batch_norm, the head's hidden layer is normalised too (Linear without bias, then
// BatchNorm1d): measured on Fashion-MNIST, one epoch of SGD (momentum 0.9, lr 0.05, batch 64,
// default channels {32, 64}) reaches 89.0-89.7% test accuracy over four seeds with it and
// 87.0-88.8% (mean 88.0%) without it, and it keeps 89.5% at lr 0.1. BatchNorm in training mode
// needs micro-batches of at least 2 examples.
#include <string>

#include "desync/core/error.h"
#include "desync/models/builders.h"

namespace desync::models {

namespace {
constexpr int64_t kHeadHidden = 128;
}  // namespace

void build_cnn(StagedModelImpl& model, const ModelConfig& cfg, const ModelInput& input) {
  if (input.example_shape.size() != 3) {
    throw ConfigError(
        "model.name = \"cnn\" needs image inputs {C, H, W}; use \"mlp\" for this data");
  }
  int64_t channels = input.example_shape[0];
  int64_t height = input.example_shape[1];
  int64_t width = input.example_shape[2];
  if (cfg.channels.empty()) throw ConfigError("model.channels: the cnn needs at least one block");
  for (size_t i = 0; i < cfg.channels.size(); ++i) {
    const int64_t out = cfg.channels[i];
    if (out < 1) throw ConfigError("model.channels: channel counts must be >= 1");
    if (height < 2 || width < 2) {
      throw ConfigError("model.channels: " + std::to_string(cfg.channels.size()) +
                        " conv blocks halve the " + std::to_string(input.example_shape[1]) + "x" +
                        std::to_string(input.example_shape[2]) +
                        " input below 1 pixel; use fewer blocks");
    }
    torch::nn::Sequential block;
    block->push_back(torch::nn::Conv2d(
        torch::nn::Conv2dOptions(channels, out, 3).padding(1).bias(!cfg.batch_norm)));
    if (cfg.batch_norm) block->push_back(torch::nn::BatchNorm2d(out));
    block->push_back(torch::nn::ReLU());
    block->push_back(torch::nn::MaxPool2d(2));
    model.add_stage("block" + std::to_string(i + 1), block);
    channels = out;
    height /= 2;
    width /= 2;
  }
  torch::nn::Sequential head;
  head->push_back(torch::nn::Flatten());
  head->push_back(torch::nn::Linear(
      torch::nn::LinearOptions(channels * height * width, kHeadHidden).bias(!cfg.batch_norm)));
  if (cfg.batch_norm) head->push_back(torch::nn::BatchNorm1d(kHeadHidden));
  head->push_back(torch::nn::ReLU());
  head->push_back(torch::nn::Linear(kHeadHidden, input.num_classes));
  model.add_stage("head", head);
}

}  // namespace desync::models
