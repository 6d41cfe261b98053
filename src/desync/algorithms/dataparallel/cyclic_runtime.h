// The staggered worker shared by the cyclic data-parallel methods (cdp, cdp_zero): what is the
// same in both, whatever carries the gradients. Reference: arXiv 2403.08837;
// docs/algorithms/cdp.md. The schedule and the update rules are in cyclic_schedule.h.
//
// CyclicModel is one worker's model as the cyclic methods see it: the cyclic stages, the flat
// parameters W and gradient G (replicated from rank 0), the slice W_l / G_l of each stage, and
// fresh(r, l) for this rank.
//
// CyclicRuntime runs the worker's operations, one window of 2S units per Trainer step, on the
// clock (worker r's cycles start r*delta units after worker 0's):
//   forward of stage l (cycle k):
//     l == 0: take the cycle's batch: the next `accumulation` micro-batches, as one batch
//     fresh(r, l) and stage l pending: next_version(l, k-1, W_l)          (W_l <- theta_{k,l})
//     forward stage l with W_l
//   backward of stage l (cycle k):
//     stale and pending: next_version(l, k-1, M_l)    (M_l <- theta_{k,l}; W_l keeps theta_{k-1})
//     backward stage l into G_l
//     stale: W_l <- M_l                                        (the copy the next cycle uses)
//     send_gradient(l, k, G_l); stage l pending
// The method supplies the hooks (CyclicExchange): how a stage's gradient leaves this worker
// after its backward, and how the stage's next version theta_{k+1,l} is obtained. Only stale
// stages keep a second copy M_l: the runtime's own, or a buffer the method already keeps (it
// must then hold theta_{k,l} from next_version until the worker's next send_gradient of l).
// Steps are windows of the common clock, so the Trainer's own synchronisations (logging,
// evaluation) find every worker at the same point of the schedule.
//
// Checkpoints, between two windows w and w+1 (the cut at tick 2SN(w+1)), hold what is in flight:
//   the pass (StagedPass: its micro-batch, RNG state and the operations it ran; the forwards run
//     again on resume), the next operation, M_l where the runtime owns it,
//   each pending stage l (its gradient of cycle k sent, theta_{k+1,l} not yet taken):
//     complete, when every worker sent its gradient of (l, k) before the cut (sent_by_all): what
//       is left of the exchange needs no further operation of anyone; the method waits for it
//       and saves what next_version takes
//     in flight, otherwise: the method saves what this worker sent (send_gradient is told, so
//       that it can keep a copy), and after a resume every worker that sent it sends it again
//       (resend), in schedule order, before it sends anything new.
// A resumed run therefore computes exactly what the uninterrupted one computes; taking a
// checkpoint only waits, and changes nothing.
//
// Thread-safety: everything here runs on the training thread; the hooks may hand work to
// threads of the method's own.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/dataparallel/cyclic_schedule.h"

namespace desync {

// How a cyclic method moves a stage's gradient out and its next version in.
class CyclicExchange {
 public:
  virtual ~CyclicExchange() = default;
  // After this worker's backward of stage l in `cycle`: `grad` (G_l) holds this worker's
  // gradient of the cycle's micro-batch. Starts it on its way without waiting for other
  // workers; G_l is not written again until next_version(l) has returned. `in_flight`: some
  // worker sends its gradient of (l, cycle) only after this step, so a checkpoint at the end of
  // the step finds the exchange in flight (what save_pending must then save).
  virtual void send_gradient(Context& ctx, int64_t l, int64_t cycle, torch::Tensor grad,
                             bool in_flight) = 0;
  // Puts theta_{cycle+1,l}, the version made from the gradients every worker sent in `cycle`,
  // into `params` (laid out as W_l: W_l itself or the stale stage's copy M_l), blocking until it
  // is known, and leaves G_l zeroed for the next backward. Called once per send_gradient of
  // stage l, in the same order.
  virtual void next_version(Context& ctx, int64_t l, int64_t cycle, torch::Tensor params) = 0;

  // Checkpoints (see above), for a pending stage l, under `prefix`. `complete`: wait until the
  // exchange of (l, cycle) has finished on this worker, and save what next_version takes; else
  // save what this worker sent. Not collective.
  virtual void save_pending(Archive& archive, const std::string& prefix, int64_t l, int64_t cycle,
                            bool complete) const = 0;
  // On --resume, after setup(): restores what save_pending saved.
  virtual void load_pending(const Archive& archive, const std::string& prefix, int64_t l,
                            int64_t cycle, bool complete) = 0;
  // At the first step after a resume, for each stage whose exchange was in flight, in schedule
  // order: sends again what send_gradient(l, cycle) sent.
  virtual void resend(Context& ctx, int64_t l, int64_t cycle) = 0;
};

class CyclicModel {
 public:
  // The cyclic stages (a probe micro-batch for the FLOP balance) and the flat buffers, made
  // identical on every rank. Collective on ctx.comm (the broadcast of make_replicated_flat).
  CyclicModel(Context& ctx, const CyclicOptions& o);

  int64_t num_stages() const { return static_cast<int64_t>(stages_.size()); }
  const std::vector<StageRange>& stages() const { return stages_; }
  bool fresh(int64_t l) const { return fresh_[l]; }
  int64_t stale_stages() const;
  FlatParameters& flat() { return *flat_; }
  int64_t stage_numel(int64_t l) const { return slices_[l].end - slices_[l].begin; }
  // Stage l's slice of a flat buffer (W: flat().params_flat(), G: flat().grads_flat()).
  torch::Tensor slice(const torch::Tensor& flat, int64_t l) const {
    return flat.narrow(0, slices_[l].begin, stage_numel(l));
  }
  torch::Tensor params(int64_t l) { return slice(flat_->params_flat(), l); }
  torch::Tensor grads(int64_t l) { return slice(flat_->grads_flat(), l); }
  // Stage l's optimizer slots (names, weight decay) pointed at `params` and `grads`, buffers
  // laid out as the stage's slice of the flat parameters.
  std::vector<ParamSlot> stage_slots(Context& ctx, int64_t l, torch::Tensor params,
                                     torch::Tensor grads) const;

 private:
  struct Slice {  // the flat range [begin, end) of a cyclic stage's parameters
    int64_t begin = 0, end = 0;
  };
  std::vector<StageRange> stages_;
  std::vector<Slice> slices_;
  std::vector<bool> fresh_;
  std::unique_ptr<FlatParameters> flat_;
};

// Averages `model`'s parameters (unless `with_params` is false) and floating-point buffers over
// the ranks of `comm` (one all-reduce per tensor). Collective.
void average_copies(StagedModel& model, Communicator& comm, bool with_params = true);

class CyclicRuntime {
 public:
  // A cycle's batch is `accumulation` micro-batches, concatenated. `retained[l]`, where given
  // for a stale stage, is the method's buffer that serves as M_l; the runtime allocates the
  // others (initialised to theta_0).
  CyclicRuntime(Context& ctx, CyclicModel& model, const CyclicOptions& o, int64_t accumulation = 1,
                std::vector<torch::Tensor> retained = {});

  // The buffer stage l's versions go into: W_l for a fresh stage, M_l for a stale one.
  torch::Tensor version_buffer(int64_t l);

  // Measures the unit (unless unit_ms is set; collective), then starts the clock after a
  // barrier on ctx.comm. `exchange` must outlive the runtime's last call.
  void start(Context& ctx, CyclicExchange& exchange);
  // The operations of window ctx.step (step 0 runs on to the worker's first loss).
  StepReport step(Context& ctx);
  // The runtime's part of a checkpoint (see above; calls the exchange's save_pending), and back
  // on --resume, after start(): the pass is rebuilt at once, the clock restarts and the sends in
  // flight go again at the next step.
  void save(Archive& archive) const;
  void load(const Archive& archive);
  bool pending(int64_t l) const { return pending_[l]; }
  // Whether stage l's exchange was in flight at the end of the last step taken (see above).
  bool in_flight(int64_t l) const;

  // After the last step: the backwards the last cycle still owes (without the clock), then
  // every pending version. Fresh stages end with theta_K, stale ones with theta_{K-1} in W_l
  // and theta_K in M_l; `latest`: W_l <- M_l, so theta_K on every stage.
  void drain(Context& ctx, bool latest);

  int64_t retained_bytes() const;  // the copies M_l the runtime allocated
  double unit_seconds() const { return clock_.unit_seconds(); }

 private:
  void run_op(Context& ctx, int64_t j, StepReport& report);
  void resend_in_flight(Context& ctx);  // after a resume, before any operation
  void apply(Context& ctx, int64_t l);

  CyclicModel& model_;
  CyclicOptions opts_;
  int64_t accumulation_ = 1;
  int64_t rank_ = 0, world_ = 1;
  std::vector<torch::Tensor> master_;  // M_l for stale stages (undefined for fresh ones)
  std::vector<bool> own_master_;       // M_l was allocated here
  std::vector<bool> pending_;          // stage l's last gradient has no version applied yet
  std::vector<int64_t> pending_cycle_;
  CyclicExchange* exchange_ = nullptr;
  std::unique_ptr<StagedPass> pass_;
  CyclicClock clock_;
  int64_t next_op_ = 0;
  int64_t windows_ = 0;   // steps taken
  bool resumed_ = false;  // loaded from a checkpoint, no step taken since
  double last_loss_ = 0.0;
};

}  // namespace desync
