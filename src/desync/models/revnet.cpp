// RevNet blocks and the RevNet layouts (one stage per block); see revnet.h and docs/models.md.
#include "desync/models/revnet.h"

#include <algorithm>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "desync/models/builders.h"

namespace desync {

namespace {

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(false));
}

}  // namespace

RevBlockImpl::RevBlockImpl(int64_t channels, bool bottleneck, int64_t hidden)
    : channels_(channels), bottleneck_(bottleneck), hidden_(hidden) {
  TORCH_CHECK(channels >= 1, "RevBlock: channels must be >= 1");
  TORCH_CHECK(hidden >= 0, "RevBlock: hidden must be >= 0");
  if (hidden_ == 0) hidden_ = bottleneck ? std::max<int64_t>(1, channels / 4) : channels;
  reset();
}

void RevBlockImpl::reset() {
  const int64_t c = channels_;
  if (!bottleneck_) {
    conv1_ = register_module("conv1", conv(c, c, 3));
    bn1_ = register_module("bn1", torch::nn::BatchNorm2d(c));
    conv2_ = register_module("conv2", conv(c, c, 3));
    bn2_ = register_module("bn2", torch::nn::BatchNorm2d(c));
    return;
  }
  const int64_t h = hidden_;
  conv1_ = register_module("conv1", conv(c, h, 1));
  bn1_ = register_module("bn1", torch::nn::BatchNorm2d(h));
  conv2_ = register_module("conv2", conv(h, h, 3));
  bn2_ = register_module("bn2", torch::nn::BatchNorm2d(h));
  conv3_ = register_module("conv3", conv(h, c, 1));
  bn3_ = register_module("bn3", torch::nn::BatchNorm2d(c));
}

void RevBlockImpl::check(const torch::Tensor& t, const char* what) const {
  TORCH_CHECK(t.dim() == 4 && t.size(1) == 2 * channels_, "RevBlock::", what, ": expected [B, ",
              2 * channels_, ", H, W] (two streams of ", channels_, " channels), got ", t.sizes());
}

torch::Tensor RevBlockImpl::residual(const torch::Tensor& x) {
  torch::Tensor f = torch::relu(bn1_(conv1_(x)));
  f = torch::relu(bn2_(conv2_(f)));
  if (bottleneck_) f = torch::relu(bn3_(conv3_(f)));
  return f;
}

torch::Tensor RevBlockImpl::forward(const torch::Tensor& input) {
  check(input, "forward");
  torch::Tensor x = input.narrow(1, 0, channels_);
  torch::Tensor x_tilde = input.narrow(1, channels_, channels_);
  return torch::cat({residual(x) + x_tilde, x}, 1);
}

torch::Tensor RevBlockImpl::inverse(const torch::Tensor& output) {
  check(output, "inverse");
  torch::NoGradGuard no_grad;
  torch::Tensor y = output.narrow(1, 0, channels_);
  torch::Tensor y_tilde = output.narrow(1, channels_, channels_);
  return torch::cat({y_tilde, y - residual(y_tilde)}, 1);
}

RevDownsampleBlockImpl::RevDownsampleBlockImpl(int64_t in_channels, int64_t out_channels,
                                               int64_t stride)
    : in_channels_(in_channels), out_channels_(out_channels), stride_(stride) {
  TORCH_CHECK(in_channels >= 1 && out_channels >= 1 && stride >= 1,
              "RevDownsampleBlock: channels and stride must be >= 1");
  reset();
}

void RevDownsampleBlockImpl::reset() {
  conv1_ = register_module("conv1", conv(in_channels_, out_channels_, 3, stride_));
  bn1_ = register_module("bn1", torch::nn::BatchNorm2d(out_channels_));
  conv2_ = register_module("conv2", conv(out_channels_, out_channels_, 3));
  bn2_ = register_module("bn2", torch::nn::BatchNorm2d(out_channels_));
  shortcut_conv_ = register_module("shortcut_conv", conv(in_channels_, out_channels_, 1, stride_));
  shortcut_bn_ = register_module("shortcut_bn", torch::nn::BatchNorm2d(out_channels_));
}

torch::Tensor RevDownsampleBlockImpl::forward(const torch::Tensor& input) {
  TORCH_CHECK(input.dim() == 4 && input.size(1) == 2 * in_channels_,
              "RevDownsampleBlock::forward: expected [B, ", 2 * in_channels_,
              ", H, W] (two streams of ", in_channels_, " channels), got ", input.sizes());
  torch::Tensor x = input.narrow(1, 0, in_channels_);
  torch::Tensor x_tilde = input.narrow(1, in_channels_, in_channels_);
  torch::Tensor h = bn1_(conv1_(x));  // y~; F continues from ReLU(h)
  torch::Tensor f = torch::relu(bn2_(conv2_(torch::relu(h))));
  torch::Tensor y = f + shortcut_bn_(shortcut_conv_(x_tilde));
  return torch::cat({y, h}, 1);
}

namespace models {

void build_revnet(StagedModelImpl& model, const ModelConfig& cfg, const ModelInput& input) {
  std::vector<int64_t> blocks;
  if (cfg.name == "revnet18") {
    blocks = {2, 2, 2, 2};
  } else if (cfg.name == "revnet34") {
    blocks = {3, 4, 6, 3};
  } else {
    blocks = cfg.blocks;
  }
  const std::string quoted = "model.name = \"" + cfg.name + "\"";
  if (input.example_shape.size() != 3) {
    throw ConfigError(quoted + " needs image inputs {C, H, W}; use \"mlp\" for this data");
  }
  if (cfg.width < 1) throw ConfigError("model.width: must be >= 1");
  if (blocks.empty() || blocks.size() > 8) {
    throw ConfigError("model.blocks: " + quoted + " needs 1 to 8 groups, got " +
                      std::to_string(blocks.size()));
  }
  for (int64_t n : blocks) {
    if (n < 1) throw ConfigError("model.blocks: every group needs at least 1 block");
  }
  const int64_t in_channels = input.example_shape[0];
  const int64_t w = cfg.width;

  // Stem (CIFAR): conv3x3 stride 1 + BN + ReLU to both streams at once.
  model.add_stage(
      "stem",
      torch::nn::Sequential(
          torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, 2 * w, 3).padding(1).bias(false)),
          torch::nn::BatchNorm2d(2 * w), torch::nn::ReLU()));

  int64_t channels = w;  // per stream
  for (size_t g = 0; g < blocks.size(); ++g) {
    const int64_t out = w << g;
    for (int64_t b = 0; b < blocks[g]; ++b) {
      const std::string name = "g" + std::to_string(g + 1) + "b" + std::to_string(b + 1);
      if (b == 0 && g > 0) {
        model.add_stage(name, torch::nn::Sequential(RevDownsampleBlock(channels, out, 2)));
      } else {
        model.add_stage(name, torch::nn::Sequential(RevBlock(out)));
      }
      channels = out;
    }
  }

  model.add_stage("head",
                  torch::nn::Sequential(
                      torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)),
                      torch::nn::Flatten(), torch::nn::Linear(2 * channels, input.num_classes)));
}

}  // namespace models

}  // namespace desync
