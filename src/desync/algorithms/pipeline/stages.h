// What the pipeline methods share: stage placement and its options, messages between
// neighbouring stages, and the bookkeeping around a stage's part of the model. Used by the
// exact pipeline (pipeline.h) and the delayed-gradient runtime (delayed_pipeline.h); see
// docs/pipelines.md.
//
// A pipeline runs one StagedModel across the ranks: rank r owns a contiguous range of model
// stages (place_stages, place_pipeline), computes its forward on what rank r-1 sends and its
// backward on what rank r+1 sends back. Every rank builds the whole model from the same seed, so
// the stages it does not own are simply unused; for evaluation the owners broadcast their stages
// to everyone (share_stages). Rank 0 reads the whole data stream (pipeline_traits).
//
// PipeLink carries the messages: forward (micro-batch id, activation, labels) to rank+1, and
// backward (id, activation gradient, and, when the stages rebuild their inputs, the rebuilt
// activation) to rank-1, as tagged point-to-point sends whose shapes both ends know from the
// model (boundary_shapes). A receiver checks the id it expected. Sends are asynchronous;
// wait_sends() completes those issued so far.
//
// With boundary codecs (boundary_codec.h) the activation and its gradient travel encoded: the
// codec of the boundary after this rank encodes forward messages and decodes the gradients that
// come back, the codec of the boundary before it decodes forward messages and encodes the
// gradients it returns; the token ids travel too when a codec needs them.
//
// BufferSnapshot keeps BatchNorm running statistics from being updated by passes that do not
// count (a forward without graph, an inversion): it saves the buffers and puts them back.
//
// Thread-safety: none; a PipeLink belongs to one rank's training thread.
#pragma once

#include <torch/torch.h>

#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "desync/algorithms/algorithm.h"

namespace desync {

class BoundaryCodec;

struct StageRange {
  int64_t begin = 0, end = 0;  // model stages [begin, end)
};

// Contiguous ranges of `num_stages` model stages over `ranks` ranks: `counts` (stages per rank)
// when given, else the partition that minimises the largest sum of `costs` (one per stage).
// Throws ConfigError when it cannot be done (fewer stages than ranks, counts that do not add up).
std::vector<StageRange> place_stages(int64_t num_stages, int64_t ranks,
                                     const std::vector<int64_t>& counts,
                                     const std::vector<double>& costs);

// Seconds of forward + backward of each model stage on one micro-batch, measured on every rank
// and averaged over ranks (so every rank gets the same numbers). Collective on `comm`.
std::vector<double> measure_stage_costs(StagedModel& model, const torch::Tensor& inputs,
                                        Communicator& comm);

// Shapes of the activations at the model's stage boundaries for a micro-batch of `inputs`:
// shapes[i] is the input of model stage i, shapes[num_stages] the output.
std::vector<std::vector<int64_t>> boundary_shapes(StagedModel& model, const torch::Tensor& inputs);

// How the pipelines place stages on ranks: the [algorithm] keys stages_per_rank ([] = balanced)
// and balance ("count" | "measured"; see docs/pipelines.md#placement).
struct PlacementOptions {
  std::vector<int64_t> stages_per_rank;
  bool balance_measured = false;
};

// Reads stages_per_rank and balance from `r`.
PlacementOptions read_placement_options(SectionReader& r);

// The ranges of model stages of every rank of ctx.comm: stages_per_rank when given, else the
// balanced split (by count, or by stage costs measured on one micro-batch, which is collective
// on ctx.comm). Call from setup(); consumes no data.
std::vector<StageRange> place_pipeline(Context& ctx, const PlacementOptions& o);

// What a pipeline declares: rank 0 reads the whole stream, `accumulation` micro-batches per step
// (GPipe/1F1B: the M of a flush; delayed pipelines: the k fed per step); the others read none.
AlgorithmTraits pipeline_traits();

// The model's named parameters that `flat` holds (a rank's stages), for param_slots().
std::vector<std::pair<std::string, torch::Tensor>> named_params_of(const StagedModel& model,
                                                                   const FlatParameters& flat);

// Broadcasts the parameters and buffers of every model stage from the rank that owns it.
void share_stages(StagedModel& model, const std::vector<StageRange>& ranges, Communicator& comm);

class BufferSnapshot {
 public:
  BufferSnapshot(StagedModel& model, StageRange range);
  ~BufferSnapshot();  // restores the buffers

 private:
  std::vector<torch::Tensor> live_, saved_;
};

struct PipeMessage {
  int64_t id = -1;
  torch::Tensor x;       // forward: the activation; backward: the rebuilt activation, if any
  torch::Tensor labels;  // forward only
  torch::Tensor grad;    // backward only
  torch::Tensor tokens;  // forward, when a codec needs them: the model's input token ids
};

// A message in a checkpoint, under `prefix` (its id and defined tensors), and back: what a rank
// sent in the last tick before a checkpoint, which its neighbour takes only in the next tick, so
// the sender sends it again after a resume.
void save_message(Archive& archive, const std::string& prefix, const PipeMessage& m);
PipeMessage load_message(const Archive& archive, const std::string& prefix);

class PipeLink {
 public:
  // `in_shape`: this rank's input activation; `out_shape`: its output; `labels`: a label batch.
  // `backward_carries_x`: backward messages carry the rebuilt activation as well. Activations
  // and gradients are of type `dtype` (the model's).
  // `in_codec` / `out_codec`: the codecs of the boundaries before and after this rank (null:
  // raw tensors); not with backward_carries_x.
  PipeLink(Communicator& comm, std::vector<int64_t> in_shape, std::vector<int64_t> out_shape,
           std::vector<int64_t> label_shape, bool backward_carries_x,
           torch::ScalarType dtype = torch::kFloat, BoundaryCodec* in_codec = nullptr,
           BoundaryCodec* out_codec = nullptr);

  void send_forward(const PipeMessage& m);   // to rank + 1
  PipeMessage recv_forward(int64_t id);      // from rank - 1; checks the id
  void send_backward(const PipeMessage& m);  // to rank - 1
  PipeMessage recv_backward(int64_t id);     // from rank + 1; checks the id
  // Waits for the sends issued before the previous call of this function; the newer ones stay
  // in flight (a pipeline tick waits for the sends of two ticks ago).
  void wait_older_sends();
  void wait_sends();
  // Waits for the oldest sends until at most `messages` forward messages remain in flight (a
  // rank that only sends forward, as local learning's do: a bounded queue). Without codecs.
  void wait_until_in_flight(int64_t messages);

  // Bytes this rank has handed to the Communicator in forward and in backward messages.
  int64_t forward_bytes_sent() const { return forward_bytes_; }
  int64_t backward_bytes_sent() const { return backward_bytes_; }

 private:
  void send(const torch::Tensor& t, int64_t dst, int64_t tag);
  torch::ScalarType token_wire_type() const;
  void recv_header(int64_t src, int64_t tag, int64_t expected, const char* what);

  Communicator& comm_;
  std::vector<int64_t> in_shape_, out_shape_, label_shape_;
  bool backward_carries_x_;
  torch::TensorOptions dtype_;
  std::deque<std::pair<std::shared_ptr<Work>, torch::Tensor>> pending_;
  size_t older_ = 0;  // pending sends issued before the last wait_older_sends()
  BoundaryCodec *in_codec_, *out_codec_;
  int64_t forward_bytes_ = 0, backward_bytes_ = 0;
};

// The PipeLink of rank ctx.comm.rank(), which owns model stages `mine`, with the boundary shapes
// measured on one micro-batch of ctx.batches.dataset() (read directly, not consumed), and the
// codecs of its boundaries, if any.
std::unique_ptr<PipeLink> make_pipe_link(Context& ctx, StageRange mine, bool backward_carries_x,
                                         BoundaryCodec* in_codec = nullptr,
                                         BoundaryCodec* out_codec = nullptr);

}  // namespace desync
