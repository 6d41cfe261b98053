// Gradient masked averaging (FedGMA; Tenison et al., TMLR 2023, arXiv 2201.11986), the rule of
// DecLearn's GradientMaskedAveraging (spec federated.md §3):
//
//   G   <- sum_i q_i * sign(Delta_i)       q_i = p_i (sign_weights = same) | 1 (uniform)
//   a_j <- |G_j| / sum_i q_i               agreement in [0, 1]; sign(0) = 0
//   M_j <- 1 if a_j >= tau else a_j        (tie = gt: a_j > tau)
//   Delta_gma <- M (.) Delta_bar           (placement pre_opt; post_opt masks the server step)
//
// Thread-safety: pure functions.
#pragma once

#include <torch/torch.h>

#include <string>

#include "desync/core/config.h"

namespace desync {

struct GmaOptions {
  double tau = 0.4;
  bool uniform_sign_weights = false;  // sign_weights = uniform: q_i = 1
  bool tie_gt = false;                // tie = gt: keep the full update only where a_j > tau
  bool post_opt = false;              // placement = post_opt: the mask scales the server step
};

// Reads gma_tau (0.4), gma_sign_weights (same | uniform), gma_tie (ge | gt) and gma_placement
// (pre_opt | post_opt).
GmaOptions read_gma_options(SectionReader& r);

// The mask M from the weighted sign sum G and the weight sum Q = sum_i q_i > 0.
torch::Tensor gma_mask(const torch::Tensor& sign_sum, double weight_sum, const GmaOptions& options);

}  // namespace desync
