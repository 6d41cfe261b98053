// `compression = "mapl"`: a learned Stiefel projector per pipeline boundary, with factorised
// token anchors and optional streaming residual VQ ("Learned Subspace Compression for
// Communication-Efficient Pipeline Parallelism", arXiv 2606.05484; spec compression-mapl.md §2).
// No official code is known; everything beyond the abstract is a default the paper does not
// confirm, exposed as an option (docs/compression.md lists them).
//
// Per boundary p, with d the width and r the rank:
//   A   [d, r], A^T A = I      the projector, trained by SPEL (optim/stiefel.h)
//   E   [V, r]  (zeros)        the anchor table, trained by the run's optimizer (no decay)
//   P   [r, d]  fixed          orthonormal rows from the seed; anchor a(tok) = E[tok] P
//
//   sender:    Z = (X - a[tok]) A                           [N = B T rows, r]
//              (vq: Z -> indices; send them and a slice of the codebooks)
//   receiver:  X^ = Z A^T + a[tok]
//   backward:  receiver sends dZ = (dL/dX^) A; the sender continues with dL/dX = dZ A^T
//   gradients: dL/dA = (X - a)^T dZ  [sender]  +  (dL/dX^)^T Z  [receiver]
//              dL/da = dL/dX^ - dZ A^T  [receiver]; dL/dE[tok] += (dL/da) P^T
//
// Open points (§2.1), decided as options:
//   1. projector_sync = "sender": the sender owns A and its momentum; the receiver returns its
//      part of dL/dA once per step, the sender takes the SPEL step and sends the new A.
//      "both": each end sends its part to the other and both take the same SPEL step (A is
//      never sent).
//   2. anchor = "shared": one anchor per boundary, subtracted by the sender, added back by the
//      receiver, which owns E and sends its changed rows to the sender once per step.
//      "receiver": only the receiver adds its anchor (the sender sends X A; no rows travel).
//      "static": SSN's fixed token embedding E_fix [V, d] ~ N(0, 0.02^2) from the seed as a
//      shared anchor, never trained (the spec's "SSN-style static E_fix" ablation; no rows).
//      "none": no anchor, and no token ids on the wire.
//   3. VQ (vq = true): G groups, R levels, K codes (vq_groups, vq_levels, vq_codes), EMA
//      k-means on the sender (vq_decay), straight-through backward, codebook rows streamed
//      round-robin, vq_stream_rows per micro-batch (default ceil(K / M)), taken from the codebook
//      the sender encoded with and applied by the receiver before it decodes.
//   4. backward_dtype = "model" (dZ in the model's type, r numbers per token) | "bfloat16".
//   5. spel_beta = 0.95, ns_steps = 5, retraction = "polar" (thin SVD) | "newton_schulz";
//      projector_init = "random" (a random orthonormal A from the seed) | "pca" (the sender's
//      top-r right singular vectors of a probe micro-batch's activation at setup, the model as
//      initialised and the anchors zero: the subspace minimising ||X - X A A^T||; sent to the
//      receiver once).
//   6. token ids travel with the activation whenever an anchor is used (one slot of b bytes).
//
// All per-step messages go at the end of the step (after the last backward and the optimizer
// step), so both ends use one A and one E for a whole step.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "desync/algorithms/pipeline/boundary_codec.h"

namespace desync {

class MaplCodec : public BoundaryCodec {
 public:
  MaplCodec(BoundaryInfo info, const CodecOptions& options, int64_t r,
            const OptimizerConfig& optimizer);

  bool needs_tokens() const override { return anchor_ != Anchor::kNone; }
  std::vector<torch::Tensor> encode(int64_t id, const torch::Tensor& x,
                                    const torch::Tensor& tokens) override;
  std::vector<torch::Tensor> payload_buffers() const override;
  torch::Tensor decode(int64_t id, const std::vector<torch::Tensor>& payload,
                       const torch::Tensor& tokens) override;
  torch::Tensor encode_grad(int64_t id, const torch::Tensor& grad) override;
  torch::Tensor grad_buffer() const override;
  torch::Tensor decode_grad(int64_t id, const torch::Tensor& payload) override;
  void setup(Communicator& comm, const torch::Tensor& activation,
             const torch::Tensor& tokens) override;
  void end_step(Communicator& comm, double lr) override;
  torch::Tensor roundtrip(const torch::Tensor& x, const torch::Tensor& tokens) const override;
  void share(Communicator& comm) override;
  void save(Archive& archive, const std::string& prefix) const override;
  void load(const Archive& archive, const std::string& prefix) override;
  MemoryReport memory() const override;

  torch::Tensor& projector() { return a_; }                 // A
  torch::Tensor& anchors() { return e_; }                   // E
  const torch::Tensor& anchor_basis() const { return p_; }  // P
  // This end's part of dL/dA, and (receiver) dL/dE, accumulated since the last end_step().
  const torch::Tensor& projector_gradient() const { return g_a_; }
  const torch::Tensor& anchor_gradient() const { return g_e_; }

 private:
  enum class Anchor { kShared, kReceiver, kStatic, kNone };
  bool sender_subtracts() const { return anchor_ == Anchor::kShared || anchor_ == Anchor::kStatic; }
  bool trains_anchors() const { return anchor_ == Anchor::kShared || anchor_ == Anchor::kReceiver; }
  torch::Tensor anchor_of(const torch::Tensor& tokens) const;  // [N, d], E[tok] P
  std::vector<int64_t> projected_shape() const;                // [B, T, r]
  int64_t wire_tag(int64_t k) const { return 1000 + 16 * info().index + k; }
  void sender_end_step(Communicator& comm, double lr);
  void receiver_end_step(Communicator& comm, double lr);

  CodecOptions options_;
  Anchor anchor_;
  int64_t r_;
  torch::Tensor a_;                // A [d, r]; on both ends (and observers, for evaluation)
  std::optional<SpelState> spel_;  // the owner(s) of A's step
  torch::Tensor p_, e_;            // P [r, d]; E [V, r] (trained anchors only)
  torch::Tensor e_fix_;            // anchor = "static": [V, d] ~ N(0, 0.02^2), fixed
  torch::Tensor g_a_;              // this end's part of dL/dA, accumulated over the step
  torch::Tensor g_e_;              // receiver: dL/dE, accumulated over the step
  std::unique_ptr<Optimizer> e_optimizer_;
  std::unique_ptr<ResidualVq> vq_;       // sender: the trained codebooks
  std::unique_ptr<ResidualVq> vq_copy_;  // receiver's copy (evaluation copy elsewhere)
  std::unique_ptr<CodebookStream> stream_;
  std::map<int64_t, torch::Tensor> sent_;                                // sender: X - a, by id
  std::map<int64_t, std::pair<torch::Tensor, torch::Tensor>> received_;  // receiver: Z, tokens
};

}  // namespace desync
