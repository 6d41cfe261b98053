// One stage of a delayed-gradient pipeline, its memory policy, and the tick simulator.
//
// Contract: a DelayedStage computes one pipeline stage's forward, backward and update,
// independent of how messages travel; a MemoryPolicy decides what the stage keeps between the
// forward and the backward of a micro-batch, and is the only thing that tells the delayed methods
// apart (each method's file defines its own). TickSimulator runs J stages in one process: the
// deterministic ground truth that the multi-process runtime (delayed_pipeline.h) must reproduce.
// Docs: docs/pipelines.md (the tick model) and each method's page under docs/algorithms/.
//
// There is no flush: every stage updates its parameters after every k backwards. In tick t every
// stage that has a message does its forward, then every stage that has one does its backward,
// then every stage applies its pending update. With J stages (s = 0..J-1), micro-batch b is
// forwarded by stage s at tick b + s and backpropagated at tick b + 2J - s - 2, a delay of
// 2(J-1-s) ticks.
//
//   forward(in):   (not last) memory.on_forward(id, x); y = F(x) without graph; -> next stage
//                  (last)     loss = CE(F(x), labels); backward; -> (id, x, dx) to the previous
//   backward(in):  x = memory.input_for_backward(id, rebuilt output); theta = current, or the
//                  weights stashed at the forward; y = F(x) with graph; backward with dy;
//                  -> (id, x, dx)
//   end_tick(lr):  after every k backwards: theta <- Opt(theta, grads / k)
//
// Passes that do not count (forward without graph, inversion) leave BatchNorm running statistics
// untouched; the recomputation in the backward updates them, once per micro-batch.
//
// A checkpoint between two ticks holds each stage's state (DelayedStage::save) and the messages
// it sent in the last tick, which the neighbour takes in the next one (delayed_pipeline.h).
//
// Thread-safety: none.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "desync/algorithms/pipeline/stages.h"

namespace desync {

// What a stage keeps between the forward and the backward of a micro-batch.
class StageMemory {
 public:
  virtual ~StageMemory() = default;
  // Called at the forward of micro-batch `id` with the stage's input and current parameters.
  virtual void on_forward(int64_t id, const torch::Tensor& input, const torch::Tensor& params) = 0;
  // The input to recompute the backward of `id` from. `output` is the stage's output as rebuilt
  // by the next stage (when the policy rebuilds inputs), else undefined.
  virtual torch::Tensor input_for_backward(int64_t id, const torch::Tensor& output) = 0;
  // The parameters the forward of `id` used, to recompute with (a weight stash), or an
  // undefined tensor: the current parameters.
  virtual torch::Tensor params_for_backward(int64_t id) { return {}; }
  // Whether this stage rebuilds its input by inverting its output (reversible stages).
  virtual bool inverts() const { return false; }

  int64_t buffered_inputs() const { return static_cast<int64_t>(inputs_.size()); }
  int64_t stashed_params() const { return static_cast<int64_t>(stash_.size()); }
  int64_t input_bytes() const { return input_bytes_; }
  int64_t stash_bytes() const { return stash_bytes_; }

  // The buffered inputs and stashed parameters, in a checkpoint under `prefix`, and back (into
  // an empty memory).
  void save(Archive& archive, const std::string& prefix) const;
  void load(const Archive& archive, const std::string& prefix);

 protected:
  void push_input(int64_t id, const torch::Tensor& x);
  torch::Tensor pop_input(int64_t id);  // REQUIRES: `id` is the oldest buffered input
  void push_params(int64_t id, const torch::Tensor& params);
  torch::Tensor pop_params(int64_t id);

 private:
  std::map<int64_t, torch::Tensor> inputs_, stash_;
  int64_t input_bytes_ = 0, stash_bytes_ = 0;
};

// A delayed-gradient method's memory policy: the StageMemory each stage gets, and the
// properties of the method that the runtime needs. Stateless and immutable once built; one
// instance serves every stage.
class MemoryPolicy {
 public:
  virtual ~MemoryPolicy() = default;
  // The registered name of the algorithm the policy belongs to, for messages.
  virtual std::string name() const = 0;
  // A fresh StageMemory for the stage that owns model stages `range` of `model` (a policy that
  // inverts stages needs the model to do it).
  virtual std::unique_ptr<StageMemory> make_memory(StagedModel model, StageRange range) const = 0;
  // Whether the stages rebuild their inputs from the output the next stage rebuilt (by
  // inversion): then every backward message carries the sender's rebuilt input along with the
  // gradient, so that the stage below can keep rebuilding.
  virtual bool rebuilds_inputs() const { return false; }
};

struct StageCounters {
  int64_t peak_buffered_inputs = 0;
  int64_t peak_stashed_params = 0;
  int64_t peak_input_bytes = 0;
  int64_t peak_stash_bytes = 0;
  int64_t min_delay_ticks = -1, max_delay_ticks = -1;  // forward-to-backward, per micro-batch
  int64_t updates = 0;
};

class DelayedStage {
 public:
  // The stage that owns model stages `range` of `model`, updating every `k` backwards, with the
  // StageMemory that `policy` makes for it (the policy is not kept).
  DelayedStage(const Config& config, StagedModel model, StageRange range, bool first, bool last,
               int64_t k, const MemoryPolicy& policy);

  // `in` carries (id, input, labels). On the last stage the result is the backward message for
  // the previous stage (and loss() the micro-batch's loss); otherwise the forward message.
  PipeMessage forward(PipeMessage in, int64_t tick);
  // `in` carries (id, rebuilt output if needed, output gradient); returns the message for the
  // previous stage (id, this stage's rebuilt input, input gradient).
  PipeMessage backward(PipeMessage in, int64_t tick);
  // Applies the pending update if k backwards have accumulated since the last one.
  void end_tick(double lr);

  // Everything the stage carries from one tick to the next, for a checkpoint between ticks: the
  // optimizer state, what the memory holds, the forwards still owed a backward (and their
  // ticks), the gradients accumulated towards the next update, and the counters. load() is
  // called on a freshly built stage; the parameters are the Trainer's to restore.
  void save(Archive& archive) const;
  void load(const Archive& archive);

  double loss() const { return loss_; }
  const StageCounters& counters() const { return counters_; }
  const StageMemory& memory() const { return *memory_; }
  bool reversible() const { return memory_->inverts(); }
  FlatParameters& flat() { return *flat_; }
  Optimizer& optimizer() { return *optimizer_; }

 private:
  PipeMessage backprop(int64_t id, torch::Tensor x, const torch::Tensor& dy, bool loss_head,
                       const torch::Tensor& labels);
  void note_backward(int64_t id, int64_t tick);

  const Config& config_;
  StagedModel model_;
  StageRange range_;
  bool first_, last_;
  int64_t k_, backwards_ = 0;
  std::unique_ptr<FlatParameters> flat_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<StageMemory> memory_;
  std::map<int64_t, int64_t> forward_tick_;
  StageCounters counters_;
  double loss_ = 0.0;
};

// J stages in one process. Stage s owns model stages ranges[s] of its own copy of the model.
class TickSimulator {
 public:
  // Every stage gets the StageMemory `policy` makes for it (the policy is not kept).
  TickSimulator(const Config& config, const std::vector<StagedModel>& models,
                const std::vector<StageRange>& ranges, const MemoryPolicy& policy, int64_t k);

  // Feeds `batches` (micro-batches in order) and runs ticks until every backward is done.
  // lr(step) gives the learning rate of a trainer step; the updates at tick t use lr(t / k), k
  // ticks to a step, as the runtime does (the drain after the last step continues the count).
  // Returns the losses in order.
  std::vector<double> run(const std::vector<MicroBatch>& batches,
                          const std::function<double(int64_t step)>& lr);

  // Called in every tick after the forwards and backwards and before the updates (with k = 1, a
  // stage's gradients are then those of the one micro-batch it finished in that tick).
  void set_before_updates(std::function<void(int64_t tick)> f) { before_updates_ = std::move(f); }

  DelayedStage& stage(int64_t s) { return *stages_.at(s); }
  // For every tick, the (stage, micro-batch) pairs whose forward / backward ran.
  const std::vector<std::vector<std::pair<int64_t, int64_t>>>& forwards() const { return fwd_; }
  const std::vector<std::vector<std::pair<int64_t, int64_t>>>& backwards() const { return bwd_; }

 private:
  std::vector<std::unique_ptr<DelayedStage>> stages_;
  int64_t k_;
  std::function<void(int64_t)> before_updates_;
  std::vector<std::vector<std::pair<int64_t, int64_t>>> fwd_, bwd_;
};

// The tick at which stage s (of J) backpropagates micro-batch b; its forward is at tick b + s.
inline int64_t backward_tick(int64_t b, int64_t s, int64_t j) { return b + 2 * j - s - 2; }
// The micro-batch whose forward / backward stage s runs at tick t (none when out of range).
inline int64_t forward_due(int64_t t, int64_t s) { return t - s; }
inline int64_t backward_due(int64_t t, int64_t s, int64_t j) { return t - backward_tick(0, s, j); }

}  // namespace desync
