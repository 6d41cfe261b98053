// `compression = "ssn"`: Subspace Networks / Protocol Models (arXiv 2506.01260; spec
// compression-mapl.md §1). The model's residual stream, minus a fixed token embedding, is kept in
// a fixed k-dimensional subspace, so every boundary sends k coordinates per token, losslessly.
//
// Shared constants, regenerated from the run's seed on every rank: U [d, k] with orthonormal
// columns (QR of a Gaussian) and E_fix [V, d] ~ N(0, 0.02^2), never trained.
//
// Constraint (the projection form of node0): every tensor that writes into the residual stream
// on a rank with a boundary after it keeps its output in span(U); after each optimizer step
// (and once at setup) its sender projects them:
//
//   attention and MLP output projections  W <- U U^T W   (W [d, in]),  b <- U U^T b
//   learned positions                     P <- P U U^T
//   token embedding                       E <- E_fix + (E - E_fix) U U^T
//
// (E_fix rides inside the model's token embedding, so the residual stream is E_fix[tok] plus a
// vector of span(U) and the model is a plain GPT.) The last rank's layers, with no boundary
// after them, stay unconstrained.
//
// Boundary:  send z = (h - E_fix[tok]) U [B, T, k] and the token ids (one slot of b bytes);
//            receive h = z U^T + E_fix[tok];
//            backward: the receiver sends (dL/dh) U, the sender uses (dL/dz) U^T.
// The sender's gradient is the U-projected one: exact for every parameter not listed above
// (their effect on h lies in span(U)), and the tangent-space (U U^T-projected) gradient for the
// constrained ones. Bytes per token and boundary: (k + 1) b forward, k b backward.
//
// Not built: the reparametrised form (W_o = U W_small; ProtocolNanoGPT) and a periodic
// Grassmann update of U (both not confirmed in the paper; U is fixed).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "desync/algorithms/pipeline/boundary_codec.h"

namespace desync {

// The constants every SSN codec of a run shares.
struct SsnBasis {
  torch::Tensor u;      // [d, k], orthonormal columns
  torch::Tensor e_fix;  // [V, d]
  // U and E_fix of a model of width d and vocabulary V, of type `dtype`, from `seed`.
  static std::shared_ptr<const SsnBasis> make(int64_t d, int64_t k, int64_t vocab, uint64_t seed,
                                              torch::ScalarType dtype);
};

// The residual-writing tensors of model stages [begin, end) of a GPT, and how each is
// projected: W <- U U^T W (output side) or X <- X U U^T (rows), the embedding with its offset.
struct SsnConstrained {
  torch::Tensor tensor;
  enum class Side { kOutputs, kRows, kEmbedding } side;
  std::string name;
};
std::vector<SsnConstrained> ssn_constrained_tensors(const StagedModel& model, int64_t begin,
                                                    int64_t end);
// Projects each tensor of `constrained` onto the constraint, in place.
void ssn_project(const std::vector<SsnConstrained>& constrained, const SsnBasis& basis);

class SsnCodec : public BoundaryCodec {
 public:
  // `constrained`: on the sender, its stages' residual-writing tensors (projected here once).
  SsnCodec(BoundaryInfo info, std::shared_ptr<const SsnBasis> basis,
           std::vector<SsnConstrained> constrained);

  bool needs_tokens() const override { return true; }
  std::vector<torch::Tensor> encode(int64_t id, const torch::Tensor& x,
                                    const torch::Tensor& tokens) override;
  std::vector<torch::Tensor> payload_buffers() const override;
  torch::Tensor decode(int64_t id, const std::vector<torch::Tensor>& payload,
                       const torch::Tensor& tokens) override;
  torch::Tensor encode_grad(int64_t id, const torch::Tensor& grad) override;
  torch::Tensor grad_buffer() const override;
  torch::Tensor decode_grad(int64_t id, const torch::Tensor& payload) override;
  void after_optimizer_step() override;
  torch::Tensor roundtrip(const torch::Tensor& x, const torch::Tensor& tokens) const override;
  MemoryReport memory() const override;

  const SsnBasis& basis() const { return *basis_; }

 private:
  std::shared_ptr<const SsnBasis> basis_;
  std::vector<SsnConstrained> constrained_;
};

}  // namespace desync
