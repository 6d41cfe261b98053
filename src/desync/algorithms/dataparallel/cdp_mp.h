// `cdp_mp`: the model-parallel variant of cyclic data parallelism — S processes, one cyclic stage
// each, serve N staggered micro-batch streams.
// Reference: "Cyclic Data Parallelism for Efficient Parallelism of Deep Neural Networks"
// (arXiv 2403.08837), the model-parallel variant; docs/algorithms/cdp_mp.md. The schedule is
// the one of cyclic_schedule.h with the N workers read as N streams.
//
// Rank l of S owns cyclic stage l (the model's stages grouped by cyclic_stages() with n_stages =
// S, or at stage_cuts). Stream r's cycle k enters stage 0 at tick N*2S*k + 2S*r. Rank l runs
// the operations of the schedule that fall on stage l, in schedule order (tick, then stream), so
// the results do not depend on timing; step w runs those with ticks in
// [2SN*w + N*l, 2SN*(w+1) + N*l) (stage_step_ops): the N forwards of cycle w and the backwards
// due by then. A message leaves in the sender's step w and is received in the receiver's step w
// (forward) or w + 1 (backward), never earlier: no rank waits for a step its neighbour has not
// begun.
//
//   forward of stream r, cycle k:
//     l == 0: take the next micro-batch; else receive (id, x, labels) from rank l-1
//     v <- k if fresh_by_timing(r, l, N, S) else k-1 (>= 0);  y = F_l(x; theta_v)
//     l == S-1: loss = CE(y, labels)  else: send (id, y, labels) to rank l+1
//   backward of stream r, cycle k:
//     l == S-1: backward of the loss  else: receive dy from rank l+1; backward of y with dy
//     G += the stage gradient (through theta_v: the version the forward used);
//     l > 0: send dx to rank l-1
//     the N-th backward of cycle k: theta_{k+1} <- Opt(theta_k, G / N) at lr(k); G <- 0
//
// Versions. The stage keeps theta_v in buffer v % 2: the stage's own parameters of ctx.model
// (buffer 0) and a second copy of the stage (buffer 1, the weight stash), whose parameters'
// gradients are views of the same G and whose buffers (BatchNorm statistics) are those of
// buffer 0. Update k writes theta_{k+1} into buffer (k+1) % 2, which holds theta_{k-1}: every
// graph through theta_{k-1} ended with the backwards of cycle k, which all precede update k,
// and no forward of cycle k+1 uses theta_{k-1}. So no tensor an autograd graph holds is ever
// written (the runtime checks it, and the version counters would too). A stale micro-batch of
// cycle k runs its forward on theta_{k-1} and its backward against that same buffer, although
// theta_k exists by then. A stage where every stream is fresh (the last one, with N = S) keeps
// one buffer and updates it in place.
//
// The update after the N-th backward is what makes fresh_by_timing the rule: a forward that
// starts after the update's last backward ended sees the new version. setup() reads the
// order of the stage's operations and checks that every forward the predicate calls fresh
// comes after the update (forward_follows_update); a forward that comes after the update but
// started while its last backward ran (an oversubscribed stage, N > S) gets the previous
// version, as the predicate says. So cdp_mp computes what `cdp` with rule = "cdp2",
// fresh_predicate = "timing", n_stages = S, final_model = "latest" computes on N workers.
//
// Data: rank 0 reads the stream (pipeline_traits); stream r's micro-batch of cycle k is the
// stream's micro-batch k*N + r, which is cdp worker r's k-th. cdp drops, at the end of an
// epoch, the micro-batches that do not fill a global batch of N; rank 0 skips them too.
//
// finish(): runs the backwards still owed by the last cycle, applies its update (theta_K), and
// shares every stage from its owner, so that ctx.model holds the whole final model on every
// rank. model_for_eval(): the latest versions shared into a copy, on ctx.eval_channel().
//
// Checkpoints, between steps, hold what is in flight: both version buffers, the optimizer, G
// with the backwards of the current cycle so far, the counters, each micro-batch between its
// forward and its backward (its stage input, labels on the last stage, the buffer it used and
// the RNG state before its forward: load() runs the forward again, with the same parameters,
// which no update overwrites while a graph holds them, and the same RNG draws), and the backward
// messages of the last step that rank l-1 takes only in the next one, which a resumed rank sends
// again before anything else. A forward message is always taken in the step that sends it.
//
// Options: streams (N; default run.workers, which `desync train --workers S` sets to S),
// stage_cuts ([]). algorithm.accumulation must be 1; optimizer.grad_clip is not supported.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/dataparallel/cyclic_schedule.h"
#include "desync/algorithms/pipeline/stages.h"

namespace desync {

// Stage l's operations in step w of n streams over s stages: those of the cyclic schedule on
// stage l whose ticks lie in [2*s*n*w + n*l, 2*s*n*(w+1) + n*l), ordered by tick, then stream.
// They are the n forwards of cycle w and the backwards of cycles w-1 and w that are due.
std::vector<CyclicOp> stage_step_ops(int64_t n, int64_t s, int64_t l, int64_t w);

// Whether, in stage l's order of operations, stream r's forward of a cycle k >= 1 comes after
// the n-th backward of cycle k-1 (the stage's update), read from the order itself.
bool forward_follows_update(int64_t n, int64_t s, int64_t l, int64_t r);

class CdpMp : public Algorithm {
 public:
  // `streams`: N; `stage_cuts`: as cyclic_stages(); `accumulation` must be 1 (setup() checks).
  CdpMp(int64_t streams, std::vector<int64_t> stage_cuts, int64_t accumulation = 1);
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  StagedModel model_for_eval(Context& ctx) override;
  void finish(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  // memory: parameters, gradients, optimizer_state, weight_stash (the second buffer),
  // activations (peak bytes of stage inputs and outputs held for backwards);
  // counts: stage_begin, stage_end, streams, stale_streams, updates,
  // peak_in_flight_micro_batches.
  AlgorithmReport report() const override;

  const std::vector<StageRange>& stages() const { return ranges_; }
  // Whether stream r reads the current version of this rank's stage (fresh_by_timing).
  bool fresh(int64_t r) const { return fresh_.at(r); }

 private:
  struct InFlight {
    torch::Tensor input, output;  // output: the stage's output, or the loss on the last stage
    torch::Tensor labels;         // on the last stage
    torch::Tensor rng;            // the CPU generator's state before the forward
    int64_t buffer = 0;           // the version buffer the forward used
    int64_t bytes = 0;
  };

  void run_op(Context& ctx, const CyclicOp& op, StepReport& report);
  void forward(Context& ctx, const CyclicOp& op, StepReport& report);
  void run_forward(InFlight& e);  // e.output from e.input through buffer e.buffer
  void backward(Context& ctx, const CyclicOp& op);
  void update(Context& ctx, int64_t cycle);
  int64_t buffer_of(int64_t version) const { return stashes_ ? version % 2 : 0; }
  StagedModel& replica(int64_t buffer) { return buffer == 0 ? model_ : stash_model_; }

  int64_t streams_;
  std::vector<int64_t> stage_cuts_;
  int64_t accumulation_;
  int64_t rank_ = 0, world_ = 1;
  std::vector<StageRange> ranges_;  // every rank's cyclic stage
  StageRange mine_;
  bool first_ = true, last_ = true;
  std::vector<bool> fresh_;  // per stream
  bool stashes_ = false;     // some stream is stale here: two version buffers

  StagedModel model_{nullptr};        // ctx.model: buffer 0
  StagedModel stash_model_{nullptr};  // a copy of the stage: buffer 1
  torch::Tensor stash_;               // buffer 1's parameters, flat
  std::unique_ptr<FlatParameters> flat_;
  std::vector<torch::Tensor> params_[2];  // per buffer, in the optimizer's slot order
  std::vector<size_t> flat_index_;        // slot i's parameter is flat_->params()[flat_index_[i]]
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<PipeLink> link_;
  StagedModel eval_model_{nullptr};

  std::map<int64_t, InFlight> in_flight_;  // by micro-batch id k*N + r
  std::vector<PipeMessage> unreceived_;    // sent backward this step, taken in the next
  std::vector<PipeMessage> resend_;        // after a resume: unreceived_ of the checkpoint
  int64_t in_flight_on_[2] = {0, 0};       // graphs alive per buffer
  int64_t latest_ = 0;                     // the newest version: theta_latest_
  int64_t backwards_ = 0;                  // backwards of cycle latest_ accumulated in G
  int64_t steps_ = 0;                      // steps taken (= cycles started)
  bool finished_ = false;

  int64_t updates_ = 0, peak_in_flight_ = 0;
  int64_t activation_bytes_ = 0, peak_activation_bytes_ = 0;
  double loss_sum_ = 0.0;
};

}  // namespace desync
