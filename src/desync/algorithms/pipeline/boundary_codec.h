// Boundary codecs: what a pipeline puts on the wire at a stage boundary, in place of the raw
// activation and its gradient (spec compression-mapl.md; docs/compression.md).
//
// A pipeline over J ranks has J - 1 boundaries; boundary p joins rank p (the sender of the
// activation) and rank p + 1 (the receiver, which sends the gradient back). Every rank holds one
// codec per boundary, in the role it plays there: sender, receiver, or observer (a rank on
// neither side keeps the state that evaluation needs, which share() refreshes). PipeLink calls
// the codecs of its two boundaries on every message:
//
//   sender:    payload = encode(id, x, tokens)          ->  wire  ->  receiver: x^ = decode(...)
//   receiver:  gpayload = encode_grad(id, dL/dx^)       ->  wire  ->  sender: dL/dx = decode_grad
//
// and the pipeline calls end_step() on both ends of every boundary it touches once per step,
// after its optimizer step (a codec's own learning and synchronisation: MAPL's projector and
// anchors), and after_optimizer_step() right after the optimizer (SSN's projection of the
// sender's weights). Every tensor a codec sends goes through the Communicator, so the run's byte
// counts are the compressed messages' bytes.
//
// Kinds (algorithm.compression): "ssn" (ssn.h: a fixed subspace the model is constrained to;
// lossless), "mapl" (mapl.h: a learned Stiefel projector per boundary with factorised token
// anchors, optional residual VQ); with "none" there are no codecs and PipeLink sends the
// activation itself.
//
// Evaluation runs the model as it trains: CompressedModel applies roundtrip() at every boundary.
//
// Thread-safety: none; codecs belong to one rank's training thread.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/pipeline/residual_vq.h"
#include "desync/optim/stiefel.h"

namespace desync {

struct StageRange;

// The [algorithm] keys of the codecs (docs/compression.md lists them with their defaults).
struct CodecOptions {
  std::string kind = "none";  // compression: none | ssn | mapl
  int64_t rank = 0;           // compression_rank: r (SSN's k); 0 = d / compression_ratio
  int64_t ratio = 8;          // compression_ratio: d / r when compression_rank = 0
  uint64_t seed = 0;          // the shared constants' seed: run.seed, set by the pipeline
  // MAPL (spec §2 and its open points §2.1)
  double projector_lr = 0.1;         // projector_lr: alpha as a fraction of the model's lr
  SpelOptions spel;                  // spel_beta, ns_steps, retraction
  bool projector_pca = false;        // projector_init: "random" (default) | "pca"
  bool projector_sync_both = false;  // projector_sync: "sender" (default) | "both"
  std::string anchor = "shared";     // anchor: shared | receiver | none
  bool backward_bf16 = false;        // backward_dtype: "model" | "bfloat16"
  bool vq = false;                   // vq
  ResidualVqOptions vq_options;      // vq_groups, vq_levels, vq_codes, vq_decay
  int64_t vq_stream_rows = 0;  // rows of every codebook streamed per micro-batch; 0 = ceil(K/M)
};

// Reads the keys above from `r` (all but the seed).
CodecOptions read_codec_options(SectionReader& r);

// What one boundary's codec needs to know about it.
struct BoundaryInfo {
  int64_t index = 0;           // p
  std::vector<int64_t> shape;  // the activation of one micro-batch, [B, T, d]
  torch::ScalarType dtype = torch::kFloat;
  int64_t vocab = 0;          // token ids are in [0, vocab)
  int64_t micro_batches = 1;  // M, micro-batches per step
  enum class Role { kSender, kReceiver, kObserver } role = Role::kObserver;
  int64_t d() const { return shape.back(); }
  int64_t tokens() const;  // B T
};

class BoundaryCodec {
 public:
  explicit BoundaryCodec(BoundaryInfo info) : info_(std::move(info)) {}
  virtual ~BoundaryCodec() = default;

  const BoundaryInfo& info() const { return info_; }
  // True when the token ids travel with the activation (the receiver decodes with them).
  virtual bool needs_tokens() const { return false; }

  // Sender: the payload of activation `x` [B, T, d] of micro-batch `id` (tokens [B, T] int64).
  virtual std::vector<torch::Tensor> encode(int64_t id, const torch::Tensor& x,
                                            const torch::Tensor& tokens) = 0;
  // Receiver: empty tensors of the payload's shapes and types.
  virtual std::vector<torch::Tensor> payload_buffers() const = 0;
  // Receiver: the activation x^ [B, T, d] (a leaf without grad) from a received payload.
  virtual torch::Tensor decode(int64_t id, const std::vector<torch::Tensor>& payload,
                               const torch::Tensor& tokens) = 0;
  // Receiver: the payload of dL/dx^ for micro-batch `id`.
  virtual torch::Tensor encode_grad(int64_t id, const torch::Tensor& grad) = 0;
  // Sender: an empty tensor of the gradient payload's shape and type.
  virtual torch::Tensor grad_buffer() const = 0;
  // Sender: dL/dx [B, T, d] from the gradient payload of micro-batch `id`.
  virtual torch::Tensor decode_grad(int64_t id, const torch::Tensor& payload) = 0;

  // Sender and receiver, once, from the pipeline's setup (collective between the two ends):
  // `activation` is the boundary's activation of a probe micro-batch on the sender (the model as
  // initialised), undefined on the receiver. MAPL's PCA initialisation of A happens here.
  virtual void setup(Communicator& comm, const torch::Tensor& activation,
                     const torch::Tensor& tokens) {}
  // Sender: right after the rank's optimizer step (SSN projects its weights here).
  virtual void after_optimizer_step() {}
  // Sender and receiver, once per step after the optimizer step: the codec's own update and
  // the messages that keep both ends in step (on `comm`, between ranks p and p + 1). `lr` is
  // the model's learning rate of the step.
  virtual void end_step(Communicator& comm, double lr) {}
  // Every rank: decode(encode(x)) with the receiver's state, changing nothing (evaluation).
  virtual torch::Tensor roundtrip(const torch::Tensor& x, const torch::Tensor& tokens) const = 0;
  // Every rank (collective on `comm`): the receiver's evaluation state to every rank.
  virtual void share(Communicator& comm) {}

  virtual void save(Archive& archive, const std::string& prefix) const {}
  virtual void load(const Archive& archive, const std::string& prefix) {}
  // Bytes held by the codec's state on this rank, by buffer name.
  virtual MemoryReport memory() const { return {}; }
  // Bytes of the per-step messages this rank has sent so far (end_step()).
  int64_t sync_bytes_sent() const { return sync_bytes_; }

 protected:
  // Sends `t` to `dst` with `tag`, asynchronously, and counts its bytes as per-step traffic;
  // wait_sync_sends() completes the sends issued so far.
  void send_sync(Communicator& comm, const torch::Tensor& t, int64_t dst, int64_t tag);
  void wait_sync_sends();

 private:
  BoundaryInfo info_;
  int64_t sync_bytes_ = 0;
  std::vector<std::pair<std::shared_ptr<Work>, torch::Tensor>> sync_sends_;
};

// The codecs of every boundary of a pipeline placed as `ranges` (rank `rank`'s roles), for
// activations of `shapes` (boundary_shapes() of the model), M = `micro_batches` per step. The
// model's stages that a sender owns are those SSN constrains; MAPL's anchors take `optimizer`.
// REQUIRES: options.kind is "ssn" or "mapl"; `model` must be a GPT (ConfigError else).
std::vector<std::unique_ptr<BoundaryCodec>> make_boundary_codecs(
    const CodecOptions& options, StagedModel& model, const std::vector<StageRange>& ranges,
    const std::vector<std::vector<int64_t>>& shapes, int64_t rank, int64_t micro_batches,
    const OptimizerConfig& optimizer);

// The model as the pipeline computes it: stages of each rank's range, then the boundary's
// roundtrip(), up to the last range. A StagedModel of one stage around `model` (evaluation only).
StagedModel compressed_model(StagedModel model, const std::vector<StageRange>& ranges,
                             const std::vector<std::unique_ptr<BoundaryCodec>>& codecs);

}  // namespace desync
