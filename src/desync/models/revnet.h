// RevNet blocks ("The Reversible Residual Network", Gomez et al., arXiv 1707.04585), laid out
// for PETRA (arXiv 2406.02052; see docs/models.md).
//
// A RevNet activation is one tensor [B, 2C, H, W] holding two streams of C channels each,
// concatenated along the channels: (x, x~). Every stage boundary of a RevNet carries one such
// tensor (the head's output excepted), so a pipeline sends one tensor per micro-batch.
//
// RevBlock is the reversible coupling
//     forward:  y = F(x) + x~,  y~ = x             -> cat(y, y~)
//     inverse:  x = y~,         x~ = y - F(y~)     -> cat(x, x~)   (under NoGradGuard)
// with F = conv3x3-BN-ReLU-conv3x3-BN-ReLU (basic) or 1x1-BN-ReLU-3x3-BN-ReLU-1x1-BN-ReLU
// (bottleneck); convolutions have no bias.
//
// BatchNorm contract: in training mode F normalises with the batch's statistics, in forward and
// in inverse alike, so inverse(forward(x)) == x up to rounding for the same weights and batch;
// in eval mode both use the running statistics. Like a forward, an inverse() in training mode
// also updates the BatchNorm running statistics (torch's BatchNorm2d does so on every training
// call); a caller that must update them once per micro-batch snapshots and restores the buffers.
//
// RevDownsampleBlock changes the resolution and the width, and is not invertible:
//     h  = BN1(conv3x3_s(x))                  (F's first convolution, stride s, C -> C')
//     y  = ReLU(BN2(conv3x3(ReLU(h)))) + BN_s(conv1x1_s(x~))
//     y~ = h
// i.e. y = F(x) + S(x~) and y~ is F's first normalised convolution before its ReLU. Reusing it
// for y~ adds no parameters, and is what the PETRA reference implementation does; with it,
// RevNet18 and RevNet34 have the parameter counts of the PETRA table (12.2M and 22.3M with a
// 1000-class head; 11.18M and 21.29M with 10 classes).
//
// Both blocks are Cloneable, so stages holding them can be cloned. Thread-safety: as any module.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "desync/models/reversible.h"

namespace desync {

class RevBlockImpl : public torch::nn::Cloneable<RevBlockImpl>, public ReversibleModule {
 public:
  // `channels` is the width C of each stream (input and output have 2C channels). With
  // `bottleneck`, F's inner width is `hidden` (0 = C / 4, at least 1).
  explicit RevBlockImpl(int64_t channels, bool bottleneck = false, int64_t hidden = 0);

  void reset() override;

  // input [B, 2C, H, W] -> [B, 2C, H, W].
  torch::Tensor forward(const torch::Tensor& input);
  // The input rebuilt from forward's output; no graph is recorded.
  torch::Tensor inverse(const torch::Tensor& output) override;
  // F on one stream [B, C, H, W].
  torch::Tensor residual(const torch::Tensor& x);

  int64_t channels() const { return channels_; }
  bool bottleneck() const { return bottleneck_; }

 private:
  void check(const torch::Tensor& t, const char* what) const;

  int64_t channels_;
  bool bottleneck_;
  int64_t hidden_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr}, bn3_{nullptr};
};
TORCH_MODULE(RevBlock);

class RevDownsampleBlockImpl : public torch::nn::Cloneable<RevDownsampleBlockImpl> {
 public:
  // Streams of `in_channels` at stride 1 -> streams of `out_channels` at `stride`.
  RevDownsampleBlockImpl(int64_t in_channels, int64_t out_channels, int64_t stride = 2);

  void reset() override;

  // input [B, 2*in, H, W] -> [B, 2*out, H', W'] with H' = (H - 1) / stride + 1.
  torch::Tensor forward(const torch::Tensor& input);

  int64_t in_channels() const { return in_channels_; }
  int64_t out_channels() const { return out_channels_; }

 private:
  int64_t in_channels_, out_channels_, stride_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, shortcut_conv_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr}, shortcut_bn_{nullptr};
};
TORCH_MODULE(RevDownsampleBlock);

}  // namespace desync
