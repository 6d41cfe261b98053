// ResNet-18 for small images (He et al., 2016, with the CIFAR stem used by e.g. kuangliu's
// pytorch-cifar): a 3x3 stem without max-pool, four layers of two BasicBlocks, global average
// pool and a linear classifier. Width 64 and 10 classes give 11,173,962 parameters.
#include <string>

#include "desync/core/error.h"
#include "desync/models/builders.h"
#include "desync/models/residual.h"

namespace desync::models {

namespace {

// Two 3x3 convolutions with BatchNorm and a residual connection; a 1x1 convolution (+BN)
// projects the shortcut when the stride or the channel count changes. Cloneable, so a stage
// holding it can be cloned. Its branch (conv1, bn1, conv2, bn2) can be switched off (residual.h).
class BasicBlockImpl : public torch::nn::Cloneable<BasicBlockImpl>, public ResidualBlock {
 public:
  BasicBlockImpl(int64_t in_channels, int64_t out_channels, int64_t stride)
      : in_channels_(in_channels), out_channels_(out_channels), stride_(stride) {
    reset();
  }

  void reset() override {
    conv1_ = register_module(
        "conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels_, out_channels_, 3)
                                       .stride(stride_)
                                       .padding(1)
                                       .bias(false)));
    bn1_ = register_module("bn1", torch::nn::BatchNorm2d(out_channels_));
    conv2_ = register_module(
        "conv2",
        torch::nn::Conv2d(
            torch::nn::Conv2dOptions(out_channels_, out_channels_, 3).padding(1).bias(false)));
    bn2_ = register_module("bn2", torch::nn::BatchNorm2d(out_channels_));
    if (stride_ != 1 || in_channels_ != out_channels_) {
      shortcut_ = register_module(
          "shortcut", torch::nn::Sequential(
                          torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels_, out_channels_, 1)
                                                .stride(stride_)
                                                .bias(false)),
                          torch::nn::BatchNorm2d(out_channels_)));
    }
  }

  std::vector<torch::nn::Module*> branch_modules() override {
    return {conv1_.get(), bn1_.get(), conv2_.get(), bn2_.get()};
  }
  // conv1's output channels: a zero channel stays zero through bn1 (scale and shift 0) and relu.
  // bn2 ends the branch: its scale and shift carry the factor.
  void scale_branch(double s) override {
    torch::NoGradGuard no_grad;
    bn2_->weight.mul_(s);
    bn2_->bias.mul_(s);
  }
  HiddenUnits hidden_units() override {
    return {.produce = {conv1_->weight, bn1_->weight, bn1_->bias},
            .consume = {conv2_->weight},
            .statistics = {bn1_->running_mean, bn1_->running_var}};
  }

  torch::Tensor forward(torch::Tensor x) {
    if (!branch_enabled_) return torch::relu(shortcut_.is_empty() ? x : shortcut_->forward(x));
    torch::Tensor out = torch::relu(bn1_(conv1_(x)));
    out = bn2_(conv2_(out));
    out += shortcut_.is_empty() ? x : shortcut_->forward(x);
    return torch::relu(out);
  }

 private:
  int64_t in_channels_, out_channels_, stride_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr};
  torch::nn::Sequential shortcut_{nullptr};
};
TORCH_MODULE(BasicBlock);

constexpr int64_t kBlocksPerLayer = 2;

}  // namespace

void build_resnet18(StagedModelImpl& model, const ModelConfig& cfg, const ModelInput& input) {
  if (input.example_shape.size() != 3) {
    throw ConfigError(
        "model.name = \"resnet18\" needs image inputs {C, H, W}; use \"mlp\" for this data");
  }
  if (cfg.width < 1) throw ConfigError("model.width: must be >= 1");
  const int64_t in_channels = input.example_shape[0];
  const int64_t w = cfg.width;

  model.add_stage(
      "stem",
      torch::nn::Sequential(
          torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, w, 3).padding(1).bias(false)),
          torch::nn::BatchNorm2d(w), torch::nn::ReLU()));

  int64_t channels = w;
  for (int64_t layer = 0; layer < 4; ++layer) {
    const int64_t out = w << layer;
    torch::nn::Sequential stage;
    for (int64_t b = 0; b < kBlocksPerLayer; ++b) {
      const int64_t stride = (layer > 0 && b == 0) ? 2 : 1;
      stage->push_back(BasicBlock(channels, out, stride));
      channels = out;
    }
    model.add_stage("layer" + std::to_string(layer + 1), stage);
  }

  model.add_stage(
      "head",
      torch::nn::Sequential(torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)),
                            torch::nn::Flatten(), torch::nn::Linear(channels, input.num_classes)));
}

}  // namespace desync::models
