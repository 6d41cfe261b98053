// `cdp`: cyclic data parallelism — staggered workers, stage reductions spread over the step.
// Reference: "Cyclic Data Parallelism for Efficient Parallelism of Deep Neural Networks"
// (arXiv 2403.08837); docs/algorithms/cdp.md. The schedule and the rules are in
// cyclic_schedule.h.
//
// runtime = "staggered" (default), on worker r, one window of 2S units per step
// (CyclicRuntime, cyclic_runtime.h, with this file's two hooks):
//   for each of the worker's operations j in the window, at its tick on the clock:
//     forward of stage l (cycle k):
//       l == 0: take the cycle's batch (algorithm.accumulation micro-batches, concatenated)
//       fresh(r, l) and stage l's reduction of cycle k-1 pending: wait for it;
//         W_l <- Opt_l(W_l, G_l / N)                                    (theta_{k,l})
//       forward stage l with W_l
//     backward of stage l (cycle k):
//       stale and pending: wait; M_l <- Opt_l(M_l, G_l / N)  (theta_{k,l}; W_l keeps theta_{k-1})
//       backward stage l into G_l
//       stale: W_l <- M_l                                  (the copy the next cycle uses)
//       in flight at the step's end (some worker sends (l, k) in a later step): S_l <- G_l
//       launch the all-reduce of G_l on the reduction thread           (send_gradient)
// where "wait; Opt_l" is next_version: wait for stage l's reduction, G_l <- G_l / N, the stage
// optimizer's step on the version buffer (W_l or M_l), G_l <- 0;
// so stage l's reduction leaves as soon as the worker's backward of stage l ends, and the S
// reductions of a cycle are spread over it. Only stale stages keep a second copy (M_l). The clock
// starts worker r's cycles r*delta units after worker 0's; a unit is measured at start-up
// (unit_ms overrides). Steps are windows of the common clock, so the Trainer's own
// synchronisations (logging, evaluation) find every worker at the same point of the schedule.
//
// runtime = "simulator": the update rules alone, as the reference code computes them (one
// all-reduce of the whole gradient per step, on ctx.comm; full copies of theta_k and theta_{k-1}).
// It is the ground truth the staggered runtime is tested against.
//
// finish(): both runtimes end with the workers' copies (theta_K on fresh stages, theta_{K-1} on
// stale ones, as the reference) and then average parameters and buffers over the workers;
// final_model = "latest" ends with theta_K on every stage instead (then the same on all workers).
// model_for_eval() evaluates that average of the current copies.
//
// Checkpoints (between steps; the runtime's part is in cyclic_runtime.h): the optimizers, M_l,
// the pass in flight, and for each pending stage either the reduced sum (every worker launched
// the all-reduce before the cut: wait for it) or S_l, the gradient as this worker launched it
// (some worker launches it after the cut), which a resumed worker all-reduces again before any
// new reduction. S_l is kept only for the reductions that outlive their step.
//
// Options: rule ("cdp2"), fresh_predicate ("code"), n_stages (4), stage_cuts ([]), unit_ms (0),
// runtime ("staggered"), final_model ("average"). One optimizer per stage; optimizer.grad_clip is
// not supported (stages are updated at different times).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/dataparallel/cyclic_runtime.h"
#include "desync/algorithms/dataparallel/cyclic_schedule.h"

namespace desync {

class StageReducer;

class Cdp : public Algorithm, private CyclicExchange {
 public:
  Cdp(CyclicOptions o, bool staggered, bool final_latest = false, int64_t accumulation = 1);
  ~Cdp() override;
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  StagedModel model_for_eval(Context& ctx) override;
  void finish(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  AlgorithmReport report() const override;

  const std::vector<StageRange>& stages() const { return model_->stages(); }

 private:
  // The staggered runtime's hooks: stage l's all-reduce, and its optimizer step; checkpoints.
  void send_gradient(Context& ctx, int64_t l, int64_t cycle, torch::Tensor grad,
                     bool in_flight) override;
  void next_version(Context& ctx, int64_t l, int64_t cycle, torch::Tensor params) override;
  void save_pending(Archive& archive, const std::string& prefix, int64_t l, int64_t cycle,
                    bool complete) const override;
  void load_pending(const Archive& archive, const std::string& prefix, int64_t l, int64_t cycle,
                    bool complete) override;
  void resend(Context& ctx, int64_t l, int64_t cycle) override;

  StepReport simulate(Context& ctx);

  CyclicOptions opts_;
  bool staggered_;
  bool final_latest_;     // final_model = "latest": theta_K on every stage, not the copies' average
  int64_t accumulation_;  // micro-batches in a cycle's batch
  int64_t world_ = 1;
  std::unique_ptr<CyclicModel> model_;  // stages, W and G
  std::vector<std::unique_ptr<Optimizer>> optimizers_;
  bool finished_ = false;

  // staggered
  std::unique_ptr<CyclicRuntime> runtime_;
  std::unique_ptr<StageReducer> reducer_;
  std::vector<torch::Tensor> sent_;  // S_l: G_l as launched, for reductions in flight at a cut

  // simulator
  torch::Tensor theta_, prev_;  // theta_k and theta_{k-1}
};

}  // namespace desync
