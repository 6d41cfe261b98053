// The inner problems that `desync meta-train` unrolls under PES (meta/pes.h; spec
// ../shared/algorithms/optimizers-spectron-mulo.md §2.3, §2.4 test 4).
//
// QuadraticTask ("quadratic", D = 1): SGD with learning rate exp(theta[0]) on the 1-D quadratic
// f(x) = 0.5 a x^2 from x_0, with a = kQuadraticA and x_0 = kQuadraticX0:
//
//     x_{k+1} = x_k - exp(theta[0]) a x_k        loss of step k: f(x_{k+1})
//
// so x_k = x_0 r^k with r = 1 - exp(theta) a. Every step's loss is 0 when r = 0: the total loss
// over any horizon is minimised at theta* = -log(a) (kQuadraticOptimum).
//
// MlpTask ("mlp", D = MuloParams::numel()): an MLP classifier (model.name "mlp", built by
// make_model with every width of model.hidden replaced by one width drawn uniformly from
// meta.widths, and model.parametrization as configured) trained on the training split by the
// learned optimizer Mulo (optim/mulo.h) with meta-parameters theta, its slots scaled by
// set_mup_lr_scales (models/mup.h) and its options from [optimizer] (lopt_alpha1, lopt_alpha2,
// lopt_clip). Inner step k uses data.batch_size training examples drawn with replacement by a
// generator keyed by (reset seed, k), so both members see the same batches; its loss is the
// cross-entropy of the batch before the update. A loss that is not finite, or above
// kMetaLossCap, counts as kMetaLossCap, so that a diverging member gives ES a large but finite
// difference.
//
// For both, reset(seed) draws the horizon ~ LogUniform[meta.horizon_min, meta.horizon_max]
// (draw_horizon) and puts both members in the same initial state; unroll() returns the mean of
// the steps' losses; save()/load() hold both members' state and counters, so that a task
// restored from a checkpoint continues bitwise.
//
// Thread-safety: none. MlpTask::reset() and load() draw the initial weights from the global torch
// RNG, seeded from the reset seed, and restore its state afterwards.
#pragma once

#include <torch/torch.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "desync/core/config.h"
#include "desync/data/dataset.h"
#include "desync/meta/pes.h"

namespace desync {

inline constexpr double kQuadraticA = 0.5;                       // curvature a of f(x) = 0.5 a x^2
inline constexpr double kQuadraticX0 = 1.0;                      // the inner problem's start x_0
inline const double kQuadraticOptimum = -std::log(kQuadraticA);  // theta* = -log(a)
inline constexpr double kMetaLossCap = 1e3;  // an MLP step's loss counts as at most this

// round(exp(U)) with U ~ Uniform[log(min), log(max)] from a generator keyed by `seed`, clamped
// to [min, max] (min when min == max). REQUIRES: 1 <= min <= max.
int64_t draw_horizon(uint64_t seed, int64_t horizon_min, int64_t horizon_max);

class QuadraticTask : public PesTask {
 public:
  QuadraticTask(int64_t horizon_min, int64_t horizon_max);

  int64_t reset(uint64_t seed) override;
  double unroll(int sign, const torch::Tensor& theta, int64_t steps) override;
  void save(Archive& archive, const std::string& prefix) const override;
  void load(const Archive& archive, const std::string& prefix) override;

  double x(int sign) const;  // member `sign`'s iterate x_k

 private:
  int64_t horizon_min_, horizon_max_;
  std::array<double, 2> x_ = {kQuadraticX0, kQuadraticX0};  // members +, -
};

class MlpTask : public PesTask {
 public:
  // REQUIRES: `train` (an image or feature split with labels) outlives the task.
  MlpTask(const Config& cfg, const Dataset& train);
  ~MlpTask() override;

  int64_t reset(uint64_t seed) override;
  double unroll(int sign, const torch::Tensor& theta, int64_t steps) override;
  void save(Archive& archive, const std::string& prefix) const override;
  void load(const Archive& archive, const std::string& prefix) override;

  // The hidden width drawn at the last reset (0 before any).
  int64_t width() const;
  // Member `sign`'s parameters by name (empty before any reset).
  std::vector<std::pair<std::string, torch::Tensor>> named_params(int sign) const;

 private:
  struct Member;
  void build(uint64_t seed);  // both members, freshly initialised from `seed`

  ModelConfig model_cfg_;
  OptimizerConfig optimizer_cfg_;
  DataConfig data_cfg_;
  MetaConfig meta_cfg_;
  const Dataset& train_;
  uint64_t seed_ = 0;
  bool ready_ = false;
  int64_t width_ = 0;
  std::array<std::unique_ptr<Member>, 2> members_;  // +, -
};

// The dimension D of theta for cfg.meta.task.
int64_t meta_dim(const Config& cfg);

// Checks that cfg describes a task that can be meta-trained (mlp: model.name "mlp" and a
// labelled image or feature dataset); throws ConfigError naming the key.
void validate_meta_task(const Config& cfg);

// Builds a task of kind cfg.meta.task. `train` is the training split (mlp; unused and may be
// null for quadratic) and must outlive the task.
std::unique_ptr<PesTask> make_meta_task(const Config& cfg, const Dataset* train);

}  // namespace desync
