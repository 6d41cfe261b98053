// `cdp_zero`: cyclic data parallelism, ZeRO-DP variant with point-to-point transfers. The
// staggered workers and update rules of `cdp` (rule, fresh_predicate, n_stages, stage_cuts,
// unit_ms), with no collective during training: each stage's gradient accumulator and its new
// parameters travel a ring of workers by send/recv. Reference: "Cyclic Data Parallelism for
// Efficient Parallelism of Deep Neural Networks" (arXiv 2403.08837), whose abstract says CDP lets
// ZeRO use point-to-point operations instead of a collective; the protocol is not given there and
// this one is our design (docs/algorithms/cdp_zero.md).
//
// The ring is the workers' start order. For every cyclic stage l and cycle k:
//
//   gradients:   0 --G--> 1 --G--> 2 ... --G--> N-1        N-1 hops; N-1 owns stage l's
//                                                          optimizer and makes theta_{k+1,l}
//   parameters:  N-1 --θ--> 0 --θ--> 1 ... --θ--> N-2      N-1 hops, each worker forwarding
//                                                          them as soon as it has them
//
// On worker r (CyclicRuntime, cyclic_runtime.h, runs the schedule; these are its hooks):
//   send_gradient(l, k): hand G_l to the gradient relay
//   next_version(l, k, buffer): wait until P_l holds theta_{k+1,l}; buffer <- P_l (a stale
//     stage's buffer M_l is P_l itself); G_l <- 0
// gradient relay (a thread), for each handed (k, l) in order:
//   r == 0:       send G_l to 1
//   0 < r < N-1:  A_l <- recv from r-1; A_l += G_l; send A_l to r+1
//   r == N-1:     A_l <- recv from N-2; A_l += G_l; A_l /= N
//                 P_l <- Opt_l(P_l, A_l)                              (theta_{k+1,l})
// parameter relay (a thread), for each handed (k, l) in order:
//   r == N-1:     once P_l is theta_{k+1,l}: send P_l to 0
//   r <  N-1:     P_l <- recv from r-1 (r = 0: from N-1); mark it ready; r < N-2: send to r+1
// A worker's parameter relay thus waits for nobody but its predecessor: a fresh worker is not
// held up by a stale one upstream (which takes the version from P_l only when its schedule
// needs it). Each direction has its own thread and background channel ("cdp_zero.gradients",
// "cdp_zero.parameters"): one thread blocked on a stage's parameters would hold up the next
// stage's gradient (under rule dp, for ever). Tags tell the stages and the two kinds apart.
//
// Bytes, per step and stage l: N-1 gradient hops and N-1 parameter hops of Psi_l*b each
// (b bytes per element). Per step, ranks 0..N-3 send 2*Psi*b (a gradient and a parameter hop of
// every stage), rank N-2 sends Psi*b (gradients only: it is the parameters' last stop) and rank
// N-1 sends Psi*b (parameters only): 2(N-1)*Psi*b in all, the bytes of a ring reduce-scatter +
// all-gather, not evenly spread. Rank 0 and rank N-1 receive Psi*b, the others 2*Psi*b.
//
// Memory: the optimizer state of every stage lives on worker N-1 only. Worker N-1 holds what
// DDP's workers each hold (SGD momentum: Psi*b; AdamW: 2*Psi*b); the others hold none. This is
// an imbalance, not ZeRO's even sharding. Every worker keeps W and G, and two ring buffers of
// Psi*b: A (the accumulator it receives) and P (the newest version it received, which is also
// the copy M_l of its stale stages and, on worker N-1, the parameters the optimizer updates).
//
// finish(): drains the ring. final_model = "latest" (default) ends with theta_K on every stage
// of every worker, which the ring delivers without a collective; only the floating-point buffers
// (BatchNorm running statistics) are averaged, one all-reduce per buffer, none for models
// without them. "average" ends with the reference's average of the workers' copies (theta_K on
// fresh stages, theta_{K-1} on stale ones), one all-reduce of the parameters, as cdp.
// model_for_eval() evaluates the average of the current copies (on the evaluation channel).
//
// Checkpoints (between steps; the runtime's part is in cyclic_runtime.h). A stage's exchange of
// cycle k at the cut is complete when the owner handed its gradient before the cut: every hop of
// both relays then needs no further operation, so save waits for them, and P_l (with the
// owner's optimizers) is all the ring holds. Otherwise it is in flight: the worker saves G_l (the
// relays only read it; A_l is not saved) and, after a resume, every worker that handed it hands
// it again, so that both relays run that exchange again from the start: worker 0 sends G_l, the
// next ones sum again, and the owner, which had not handed it, steps once. P_l is not saved
// where a version is on its way into it (it is not read before that version arrives).
//
// Options: rule ("cdp2"), fresh_predicate ("code"), n_stages (4), stage_cuts ([]), unit_ms (0),
// final_model ("latest"); algorithm.accumulation micro-batches make a cycle's batch, taken
// together. optimizer.grad_clip is not supported (the stages are updated at different times).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/dataparallel/cyclic_runtime.h"
#include "desync/algorithms/dataparallel/cyclic_schedule.h"

namespace desync {

class StageRing;

class CdpZero : public Algorithm, private CyclicExchange {
 public:
  CdpZero(CyclicOptions o, bool final_latest, int64_t accumulation = 1);
  ~CdpZero() override;
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  StagedModel model_for_eval(Context& ctx) override;
  void finish(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  AlgorithmReport report() const override;

 private:
  void send_gradient(Context& ctx, int64_t l, int64_t cycle, torch::Tensor grad,
                     bool in_flight) override;
  void next_version(Context& ctx, int64_t l, int64_t cycle, torch::Tensor params) override;
  void save_pending(Archive& archive, const std::string& prefix, int64_t l, int64_t cycle,
                    bool complete) const override;
  void load_pending(const Archive& archive, const std::string& prefix, int64_t l, int64_t cycle,
                    bool complete) override;
  void resend(Context& ctx, int64_t l, int64_t cycle) override;

  CyclicOptions opts_;
  bool final_latest_;
  int64_t accumulation_;  // micro-batches in a cycle's batch
  int64_t rank_ = 0, world_ = 1;
  std::unique_ptr<CyclicModel> model_;
  std::unique_ptr<StageRing> ring_;
  std::unique_ptr<CyclicRuntime> runtime_;
  int64_t optimizer_state_bytes_ = 0, ring_bytes_ = 0;  // for report(), kept past finish()
  bool finished_ = false;
};

}  // namespace desync
