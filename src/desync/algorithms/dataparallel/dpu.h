// `dpu`: delayed parameter update with a non-delayed warm-up.
// Reference: the delayed parameter update of "ZeRO-Offload" (arXiv 2101.06840);
// docs/algorithms/dpu.md.
//
//   t <  n_warmup: an ordinary ZeRO-1 step
//   t >= n_warmup: theta_{t+1} = Opt(theta_t, g(theta_{t-1}))
//     bootstrap at t = n_warmup: G_prev <- grad at theta_t (theta_{w-1} := theta_w)
//     in parallel:
//       compute thread:  G_cur <- grad at P = theta_t            (accumulation micro-batches)
//       comm thread:     theta_{t+1} <- ZeRO1_update(theta_t, G_prev)   (RS, step, AG)
//     join; P <- theta_{t+1}; G_prev <- G_cur
//
// The communication and the optimizer step are hidden behind the next step's gradients, at the
// price of a gradient one step stale. The comm thread has its own channel (CommThread "dpu");
// warm-up steps communicate on the training thread's ctx.comm.
// Options: n_warmup (kDpuDefaultWarmup = 50: the spec's fine-tuning warm-up; its pretraining
// runs use 1000; 0 is the degraded variant without warm-up).
//
// Elastic restart: the shards are cut anew (ParameterShard::load_resharded); G_prev, a per-rank
// sum whose average over ranks the update uses, is folded onto the new ranks (times N_new/N_old,
// so the average is unchanged). A run that resumes inside the warm-up drops G_prev and
// bootstraps again when the warm-up ends.
#pragma once

#include <memory>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/dataparallel/sharded.h"
#include "desync/algorithms/elastic.h"
#include "desync/comm/comm_thread.h"

namespace desync {

inline constexpr int64_t kDpuDefaultWarmup = 50;

class Dpu : public Algorithm, public Elastic {
 public:
  Dpu(int64_t accumulation, int64_t n_warmup) : n_warmup_(n_warmup), accumulation_(accumulation) {}
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  void load_resharded(const std::vector<Archive>& old_ranks, int64_t step) override;
  AlgorithmReport report() const override;

 private:
  void update(Context& ctx, Communicator& comm, const torch::Tensor& grads, torch::Tensor dst);

  int64_t n_warmup_;
  int64_t accumulation_ = 1;
  int64_t rank_ = 0, world_ = 1;
  std::unique_ptr<FlatParameters> flat_;
  std::unique_ptr<ParameterShard> shard_;
  torch::Tensor prev_;  // G_prev, then the staging buffer for theta_{t+1}
  bool have_prev_ = false;
  std::unique_ptr<CommThread> comm_thread_;
};

}  // namespace desync
