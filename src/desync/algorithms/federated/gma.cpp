#include "desync/algorithms/federated/gma.h"

namespace desync {

GmaOptions read_gma_options(SectionReader& r) {
  GmaOptions o;
  o.tau = r.get("gma_tau", o.tau, 0.0, 1.0);
  o.uniform_sign_weights =
      r.get_choice("gma_sign_weights", "same", {"same", "uniform"}) == "uniform";
  o.tie_gt = r.get_choice("gma_tie", "ge", {"ge", "gt"}) == "gt";
  o.post_opt = r.get_choice("gma_placement", "pre_opt", {"pre_opt", "post_opt"}) == "post_opt";
  return o;
}

torch::Tensor gma_mask(const torch::Tensor& sign_sum, double weight_sum,
                       const GmaOptions& options) {
  torch::NoGradGuard no_grad;
  torch::Tensor agreement = sign_sum.abs() / weight_sum;
  torch::Tensor full = options.tie_gt ? agreement > options.tau : agreement >= options.tau;
  return torch::where(full, torch::ones_like(agreement), agreement);
}

}  // namespace desync
