// LinearLayer: dense or factorised (low_rank.h).
#include "desync/models/low_rank.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "desync/core/error.h"

namespace desync::models {
namespace {

// x ~ N(0, std²) truncated to [-2 std, 2 std], by the inverse CDF of a uniform draw on
// [Φ(-2), Φ(2)] (as torch.nn.init.trunc_normal_).
void truncated_normal_(torch::Tensor& x, double std) {
  const double lo = 0.5 * std::erfc(2.0 / std::sqrt(2.0));  // Φ(-2)
  x.uniform_(2.0 * lo - 1.0, 1.0 - 2.0 * lo).erfinv_().mul_(std * std::sqrt(2.0));
}

// The standard deviation of each factor's entries that gives W = A Bᵀ entries of std `std`:
// Var(W_ij) = r s⁴.
double factor_std(double std, int64_t rank) {
  return std::sqrt(std / std::sqrt(static_cast<double>(rank)));
}

}  // namespace

LinearLayerImpl::LinearLayerImpl(int64_t in, int64_t out, bool bias, int64_t rank, double mult)
    : in_(in), out_(out), rank_(rank), has_bias_(bias), mult_(mult) {
  TORCH_CHECK(in >= 1 && out >= 1 && rank >= 0 && rank <= std::min(in, out),
              "LinearLayer: need in, out >= 1 and 0 <= rank <= min(in, out); got in ", in, ", out ",
              out, ", rank ", rank);
  reset();
}

void LinearLayerImpl::reset() {
  torch::NoGradGuard no_grad;
  // LibTorch's Linear: W ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a = sqrt(5)), the
  // bias the same; the factorised layer draws factors whose product has W's standard deviation.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_));
  if (rank_ == 0) {
    weight = register_parameter("weight", torch::empty({out_, in_}));
    torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  } else {
    const double s = factor_std(bound / std::sqrt(3.0), rank_);
    A = register_parameter("A", torch::empty({out_, rank_}).normal_(0.0, s));
    B = register_parameter("B", torch::empty({in_, rank_}).normal_(0.0, s));
  }
  if (has_bias_) bias = register_parameter("bias", torch::empty({out_}).uniform_(-bound, bound));
}

torch::Tensor LinearLayerImpl::forward(const torch::Tensor& x) {
  if (mult_ == 1.0) {
    if (rank_ == 0) return torch::linear(x, weight, bias);
    return torch::linear(torch::matmul(x, B), A, bias);
  }
  torch::Tensor y = rank_ == 0 ? torch::linear(x, weight) : torch::linear(torch::matmul(x, B), A);
  y = y * mult_;
  return bias.defined() ? y + bias : y;
}

void LinearLayerImpl::init_normal(double std) {
  torch::NoGradGuard no_grad;
  if (rank_ == 0) {
    weight.normal_(0.0, std);
  } else {
    const double s = factor_std(std, rank_);
    A.normal_(0.0, s);
    B.normal_(0.0, s);
  }
  if (bias.defined()) bias.zero_();
}

void LinearLayerImpl::init_truncated_normal(double std, double bias_std) {
  torch::NoGradGuard no_grad;
  if (rank_ == 0) {
    if (std > 0)
      truncated_normal_(weight, std);
    else
      weight.zero_();
  } else {
    const double s = factor_std(std, rank_);
    truncated_normal_(A, s);
    truncated_normal_(B, s);
  }
  if (bias.defined()) {
    if (bias_std > 0)
      bias.normal_(0.0, bias_std);
    else
      bias.zero_();
  }
}

void LinearLayerImpl::init_zero() {
  torch::NoGradGuard no_grad;
  for (torch::Tensor& p : parameters()) p.zero_();
}

int64_t resolve_rank(double low_rank, int64_t in, int64_t out) {
  const int64_t full = std::min(in, out);
  if (low_rank <= 0.0) return 0;
  if (low_rank < 1.0)
    return std::max<int64_t>(1, static_cast<int64_t>(std::llround(low_rank * full)));
  const auto rank = static_cast<int64_t>(low_rank);
  if (rank > full)
    throw ConfigError(fmt::format(
        "model.low_rank ({}) exceeds min(in, out) = {} of a {} x {} layer; use a smaller rank "
        "or a ratio in (0, 1)",
        rank, full, out, in));
  return rank;
}

}  // namespace desync::models
