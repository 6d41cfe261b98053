// A linear layer that is dense or natively low-rank (spec
// ../shared/algorithms/optimizers-spectron-mulo.md §1, "Model").
//
// LinearLayer(in, out, bias, rank, mult) maps y = mult * (x Wᵀ) + b:
//   rank 0:  W [out, in] is the parameter "weight" (LibTorch's Linear, with its initialisation:
//            construction consumes the global RNG exactly as torch::nn::Linear does);
//   rank r:  W = A Bᵀ with parameters "A" [out, r] and "B" [in, r]; W is never formed:
//            y = mult * ((x B) Aᵀ) + b. Autograd then gives G_A = (∂L/∂W) B and
//            G_B = (∂L/∂W)ᵀ A.
// "bias" [out] when bias is set. `mult` is a fixed forward multiplier (μP's, models/mup.h).
//
// Initialisation of a factorised layer (the spec leaves it open): A and B ~ N(0, s²) with
// s = sqrt(std / sqrt(r)), so that every entry of W = A Bᵀ has standard deviation `std`, the
// dense layer's; init_normal(std) draws so. resolve_rank() turns model.low_rank into a rank.
//
// Thread-safety: as any module.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace desync::models {

class LinearLayerImpl : public torch::nn::Cloneable<LinearLayerImpl> {
 public:
  LinearLayerImpl(int64_t in, int64_t out, bool bias, int64_t rank = 0, double mult = 1.0);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);

  // Dense: W ~ N(0, std²); factorised: A, B as above; bias 0.
  void init_normal(double std);
  // W ~ TruncatedNormal(0, std², cut at ±2 std) (dense) or A, B the same way with the
  // factorised std (std 0: a dense weight of zeros); bias ~ N(0, bias_std²), or 0 for
  // bias_std 0 (μP, models/mup.h).
  void init_truncated_normal(double std, double bias_std);
  // Every parameter 0.
  void init_zero();

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  int64_t rank() const { return rank_; }
  double mult() const { return mult_; }
  // Multiply-adds per input row: in * out dense, (in + out) * rank factorised.
  int64_t macs() const { return rank_ > 0 ? (in_ + out_) * rank_ : in_ * out_; }

  torch::Tensor weight, A, B, bias;  // weight (dense) or A and B (factorised); bias or undefined

 private:
  int64_t in_, out_, rank_;
  bool has_bias_;
  double mult_;
};
TORCH_MODULE(LinearLayer);

// The rank that model.low_rank gives a layer W [out, in]: 0 (dense) for low_rank = 0;
// round(low_rank * min(in, out)), at least 1, for low_rank in (0, 1); the value itself for
// low_rank >= 1, which must not exceed min(in, out) (ConfigError naming model.low_rank).
int64_t resolve_rank(double low_rank, int64_t in, int64_t out);

}  // namespace desync::models
