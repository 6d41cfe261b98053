// Truncated Persistent Evolution Strategies (PES, arXiv 2112.13835; spec
// ../shared/algorithms/optimizers-spectron-mulo.md §2.3) over a flat vector of meta-parameters.
//
// The population is P tasks, each an antithetic pair of members (+, -) that start from the same
// inner state and see the same data. Every outer step, for each task i:
//
//     if the task is due for a reset: new inner problem, horizon T_i, xi_i <- 0, t_i <- 0
//     eps_i ~ N(0, sigma^2 I)
//     L_i^± = mean inner training loss of `unroll` inner steps with theta ± eps_i
//     xi_i <- xi_i + eps_i  (persistent; truncated ES sets xi_i <- eps_i)
//     t_i += unroll; due for a reset when t_i >= T_i
//
//     g = 1 / (2 P sigma^2) * sum_i xi_i (L_i^+ - L_i^-)
//
// The tasks are spread over ranks (task i on rank i mod world). Every draw (a task's inner
// problem and horizon, its eps) comes from a generator keyed by (seed, i, outer step), and the
// ranks' per-task terms are summed in task order after one all-reduce of a [P, D] tensor in which
// each rank fills only its own rows (adding zeros is exact). So the estimate is bitwise the same
// on any number of ranks for the same seed.
//
// Thread-safety: none.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "desync/comm/communicator.h"
#include "desync/core/archive.h"

namespace desync {

// One inner problem unrolled in truncations, held as its two antithetic members.
class PesTask {
 public:
  virtual ~PesTask() = default;

  // Starts a new inner problem drawn from `seed`, both members in the same state; returns its
  // horizon in inner steps.
  virtual int64_t reset(uint64_t seed) = 0;

  // Runs `steps` inner steps of member `sign` (+1 or -1) with meta-parameters `theta` (float64
  // or float32, [D]) and returns the mean inner training loss over those steps. Both members of
  // one truncation see the same data.
  virtual double unroll(int sign, const torch::Tensor& theta, int64_t steps) = 0;

  // The members' state, under `prefix`, for a checkpoint.
  virtual void save(Archive& archive, const std::string& prefix) const = 0;
  virtual void load(const Archive& archive, const std::string& prefix) = 0;
};

struct PesOptions {
  int64_t tasks = 8;       // P, over all ranks
  int64_t unroll = 50;     // inner steps per truncation
  double sigma = 0.01;     // perturbation scale
  bool persistent = true;  // accumulate xi (PES); false = truncated ES
  uint64_t seed = 0;
};

// What one outer step measured, the same on every rank.
struct PesStepReport {
  double mean_loss = 0.0;  // mean over tasks of (L^+ + L^-) / 2
  int64_t resets = 0;      // tasks that started a new inner problem this step
};

class PesEstimator {
 public:
  // `make_task` builds task i (called for this rank's tasks only); `dim` is D.
  // Throws ConfigError for options out of range (tasks, unroll, sigma, dim, rank, world).
  PesEstimator(const PesOptions& options, int64_t dim, int64_t rank, int64_t world,
               const std::function<std::unique_ptr<PesTask>(int64_t task)>& make_task);
  ~PesEstimator();
  PesEstimator(PesEstimator&&) noexcept;
  PesEstimator& operator=(PesEstimator&&) noexcept;

  // The ES gradient estimate at theta for outer step `step` ([D], float64), the same on every
  // rank; collective over `comm` (one all-reduce). Advances the tasks.
  torch::Tensor gradient(const torch::Tensor& theta, int64_t step, Communicator& comm,
                         PesStepReport* report = nullptr);

  // The tasks' state and xi, t, horizons of this rank's tasks: entries pes.task<i>.{xi, t,
  // horizon, started}, the task's own state under pes.task<i>.inner. load() throws
  // CheckpointError when an entry is missing or P, D differ.
  void save(Archive& archive) const;
  void load(const Archive& archive);

 private:
  struct Slot;
  PesOptions options_;
  int64_t dim_, rank_, world_;
  std::vector<Slot> slots_;  // this rank's tasks
};

}  // namespace desync
