// μLO: the learned optimizer small_fc_lopt (arXiv 2406.00153, spec
// ../shared/algorithms/optimizers-spectron-mulo.md §2.2) as an Optimizer.
//
// Per parameter tensor the optimizer keeps momenta at three decays, an RMS accumulator and
// Adafactor's factored row/column accumulators (a full accumulator for 1-D tensors), builds 28
// feature channels per element, normalises each over the tensor, appends 11 step features and
// feeds the 39 inputs to a per-element MLP 39 -> 32 -> 32 -> 2 (ReLU). Its outputs
// (direction d, magnitude m) give the update
//
//     p <- p - lr_scale * alpha1 * d * exp(alpha2 * m)
//
// where lr_scale is the slot's μP multiplier (ParamSlot::lr_scale, models/mup.h; 1 under the
// standard parametrisation). The schedule's learning rate is not used: a learned optimizer
// chooses its own step.
//
// The meta-parameters (MuloParams) are the MLP's weights and three offset vectors on the decays,
// decay = 1 - exp(10 (log(1 - decay0) / 10 + delta)). Meta-training (meta/pes.h) perturbs them as
// one flat vector (flatten / unflatten).
//
// Thread-safety: none.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "desync/optim/optimizer.h"

namespace desync {

inline constexpr int64_t kMuloFeatures = 28;      // per-element channels, normalised
inline constexpr int64_t kMuloStepFeatures = 11;  // tanh(t / tau - 1), not normalised
inline constexpr int64_t kMuloInputs = kMuloFeatures + kMuloStepFeatures;
inline constexpr int64_t kMuloHidden = 32;

// The meta-parameters, float32 on the CPU.
struct MuloParams {
  torch::Tensor w1, b1;           // [32, 39], [32]
  torch::Tensor w2, b2;           // [32, 32], [32]
  torch::Tensor w3, b3;           // [2, 32], [2]: row 0 the direction, row 1 the magnitude
  torch::Tensor momentum_delta;   // [3]: offsets of the momentum decays (0.9, 0.99, 0.999)
  torch::Tensor rms_delta;        // [1]: offset of the RMS decay (0.999)
  torch::Tensor adafactor_delta;  // [3]: offsets of the factored accumulators' decays

  // Weights ~ TruncatedNormal(0, 1 / sqrt(fan_in)) (cut at two standard deviations), biases and
  // offsets 0, drawn from a generator seeded with `seed` (independent of the global RNG).
  static MuloParams init(uint64_t seed);

  // All tensors in the order above as one float32 vector, and back (a copy, not a view).
  torch::Tensor flatten() const;
  static MuloParams unflatten(const torch::Tensor& flat);
  static int64_t numel();

  // A file of its own (written atomically; CheckpointError names the file when it is missing,
  // truncated or of another shape).
  void save(const std::string& path) const;
  static MuloParams load(const std::string& path);
};

// decay = 1 - exp(10 * (log(1 - decay0) / 10 + delta)), and its inverse.
double mulo_decay(double decay0, double delta);
double mulo_delta(double decay0, double decay);

struct MuloOptions {
  double alpha1 = 1e-3;
  double alpha2 = 1e-3;
  bool clip = false;  // clip the gradients' global norm to 1 first
  // Elements per MLP evaluation: bounds transient memory. A block's temporaries (about 100 floats
  // an element) then stay in cache and below the allocator's mmap threshold; at 2^18 every
  // allocation page-faulted: `desync train examples/fmnist_mlp_mup.toml --set
  // 'model.hidden=[1024, 1024]' --set optimizer.name=mulo` took 1.74 s a step against 0.55 s.
  int64_t chunk = 1 << 14;
};

class Mulo : public Optimizer {
 public:
  Mulo(std::vector<ParamSlot> slots, MuloParams params, const MuloOptions& options);
  ~Mulo() override;

  // One update of every slot; `lr` is not used (see above).
  void step(double lr) override;
  // Per slot "<slot>.momentum" [3, ...], "<slot>.rms", and "<slot>.row" / "<slot>.col" (2-D and
  // up) or "<slot>.v" (1-D); "step".
  std::vector<std::pair<std::string, torch::Tensor>> state() override;

  // Replaces the meta-parameters, keeping the accumulators (meta-training swaps theta between
  // truncations).
  void set_params(MuloParams params);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::unique_ptr<Optimizer> make_mulo(std::vector<ParamSlot> slots, MuloParams params,
                                     const MuloOptions& options);

// ---- The features, exposed for tests and analysis ----
//
// The accumulators of one parameter tensor, as state() names them. A 0-dim parameter is viewed
// as [1]; with S that view's shape: momentum [3, S], rms [S], and for 2-D and up row [3, S] with
// size 1 in the largest dim (the mean over it) and col [3, S] with size 1 in the second largest
// (ties: the later dim counts as larger); for 1-D v [3, S]. Unused members are undefined.
struct MuloAccumulators {
  torch::Tensor momentum, rms, row, col, v;
};

// The 28 raw channels [numel, 28] of one tensor, in the order of spec §2.2, from the gradient
// (after nan_to_num and clipping), the parameter before its update and the accumulators already
// updated with that gradient. Computed in the accumulators' dtype.
torch::Tensor mulo_features(const torch::Tensor& grad, const torch::Tensor& param,
                            const MuloAccumulators& acc);
// The MLP's inputs [numel, 39] float32: each channel of mulo_features normalised over the
// tensor, x * rsqrt(1e-5 + mean(x^2)), then the 11 step features tanh(t / tau - 1), where t is
// the number of steps taken before this one.
torch::Tensor mulo_inputs(const torch::Tensor& grad, const torch::Tensor& param,
                          const MuloAccumulators& acc, int64_t t);

}  // namespace desync
