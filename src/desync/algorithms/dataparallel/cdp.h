// `cdp`: cyclic data parallelism — staggered workers, stage reductions spread over the step.
// Reference: "Cyclic Data Parallelism for Efficient Parallelism of Deep Neural Networks"
// (arXiv 2403.08837); docs/algorithms/cdp.md. The schedule and the rules are in
// cyclic_schedule.h.
//
// runtime = "staggered" (default), on worker r, one window of 2S units per step:
//   for each of the worker's operations j in the window, at its tick on the clock:
//     forward of stage l (cycle k):
//       l == 0: take the next micro-batch
//       fresh(r, l) and stage l's reduction of cycle k-1 pending: wait for it;
//         W_l <- Opt_l(W_l, G_l / N)                                    (theta_{k,l})
//       forward stage l with W_l
//     backward of stage l (cycle k):
//       stale and pending: wait; M_l <- Opt_l(M_l, G_l / N)  (theta_{k,l}; W_l keeps theta_{k-1})
//       backward stage l into G_l
//       stale: W_l <- M_l                                  (the copy the next cycle uses)
//       launch the all-reduce of G_l on the reduction thread
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
// Options: rule ("cdp2"), fresh_predicate ("code"), n_stages (4), stage_cuts ([]), unit_ms (0),
// runtime ("staggered"), final_model ("average"). One optimizer per stage; optimizer.grad_clip is
// not supported (stages are updated at different times) and algorithm.accumulation must be 1.
#pragma once

#include <memory>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/dataparallel/cyclic_schedule.h"

namespace desync {

class StageReducer;

class Cdp : public Algorithm {
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

  const std::vector<StageRange>& stages() const { return stages_; }

 private:
  // The flat range [begin, end) of a cyclic stage's parameters.
  struct Slice {
    int64_t begin = 0, end = 0;
  };
  torch::Tensor slice(torch::Tensor& flat, int64_t l) const {
    return flat.narrow(0, slices_[l].begin, slices_[l].end - slices_[l].begin);
  }
  std::unique_ptr<Optimizer> stage_optimizer(Context& ctx, int64_t l, torch::Tensor params) const;
  int64_t num_stages() const { return static_cast<int64_t>(stages_.size()); }

  StepReport simulate(Context& ctx);
  void run_op(Context& ctx, int64_t j, StepReport& report);
  void apply(Context& ctx, int64_t l);
  void average_copies(StagedModel& model, Communicator& comm) const;

  CyclicOptions opts_;
  bool staggered_;
  int64_t accumulation_;  // micro-batches in a cycle's batch
  bool final_latest_;     // final_model = "latest": theta_K on every stage, not the copies' average
  int64_t rank_ = 0, world_ = 1;
  std::vector<StageRange> stages_;
  std::vector<Slice> slices_;
  std::vector<bool> fresh_;               // per stage, for this rank
  std::unique_ptr<FlatParameters> flat_;  // W (the model) and G
  std::vector<std::unique_ptr<Optimizer>> optimizers_;
  bool finished_ = false;

  // staggered
  std::vector<torch::Tensor> master_;  // M_l for stale stages (undefined for fresh ones)
  std::vector<bool> pending_;          // stage l's last reduction is not applied yet
  std::vector<int64_t> pending_cycle_;
  std::unique_ptr<StageReducer> reducer_;
  std::unique_ptr<StagedPass> pass_;
  CyclicClock clock_;
  int64_t next_op_ = 0;
  double last_loss_ = 0.0;

  // simulator
  torch::Tensor theta_, prev_;  // theta_k and theta_{k-1}
};

}  // namespace desync
