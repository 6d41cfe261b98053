// Directional derivatives (Jacobian-vector products) of a map to per-example values, two ways:
//
//   forward_ad   forward-mode automatic differentiation: the input (or the parameters) carries a
//                tangent through one forward pass, and the output's tangent is J·u. Costs one
//                forward pass (with its tangent); nothing is kept for a backward pass.
//   double_vjp   the identity J·u = d/dv <J^T v, u>: a backward pass with create_graph, then a
//                second backward. The same numbers as forward_ad, for ops without forward-mode
//                formulas; no speed benefit.
//
// Both run `f` once more, in its current mode: a train-mode BatchNorm in it normalises with the
// batch's statistics (as the primal pass did) and also updates its running statistics, which a
// caller that wants one update per batch saves and restores around the call.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <vector>

namespace desync {

// y = f(a) and J·u, where J = dy/da; u has a's shape, y is any shape (per-example losses [B]).
torch::Tensor jvp_forward_ad(const std::function<torch::Tensor(const torch::Tensor&)>& f,
                             const torch::Tensor& a, const torch::Tensor& u);
torch::Tensor jvp_double_vjp(const std::function<torch::Tensor(const torch::Tensor&)>& f,
                             const torch::Tensor& a, const torch::Tensor& u);

// The same along a tangent on parameters: `f` reads `params` (a module's own tensors, which
// must require grad for double_vjp) and `tangents` matches them one for one.
torch::Tensor jvp_forward_ad(const std::function<torch::Tensor()>& f,
                             const std::vector<torch::Tensor>& params,
                             const std::vector<torch::Tensor>& tangents);
torch::Tensor jvp_double_vjp(const std::function<torch::Tensor()>& f,
                             const std::vector<torch::Tensor>& params,
                             const std::vector<torch::Tensor>& tangents);

}  // namespace desync
