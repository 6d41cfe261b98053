#include "desync/algorithms/local/contrastive.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "desync/data/batch_source.h"

namespace desync {
namespace {

constexpr uint64_t kViewStream = 0x7669657773303031ULL;  // "views001"
constexpr int64_t kPad = 4;                              // random-crop padding, pixels

}  // namespace

torch::Tensor contrastive_views(const torch::Tensor& inputs, uint64_t seed, int64_t id,
                                double noise) {
  torch::NoGradGuard no_grad;
  at::Generator gen =
      at::detail::createCPUGenerator(mix64(mix64(seed ^ kViewStream) + static_cast<uint64_t>(id)));
  const int64_t n = inputs.size(0);
  std::vector<torch::Tensor> views;
  for (int v = 0; v < 2; ++v) {
    if (inputs.dim() == 4) {
      const int64_t h = inputs.size(2), w = inputs.size(3);
      const torch::Tensor shift = torch::randint(0, 2 * kPad + 1, {n, 2}, gen, torch::kLong);
      const torch::Tensor flip = torch::randint(0, 2, {n}, gen, torch::kLong);
      const torch::Tensor padded = torch::constant_pad_nd(inputs, {kPad, kPad, kPad, kPad}, 0.0);
      std::vector<torch::Tensor> rows;
      rows.reserve(n);
      const int64_t* s = shift.data_ptr<int64_t>();
      const int64_t* f = flip.data_ptr<int64_t>();
      for (int64_t i = 0; i < n; ++i) {
        torch::Tensor crop = padded[i].narrow(1, s[2 * i], h).narrow(2, s[2 * i + 1], w);
        rows.push_back(f[i] ? crop.flip({2}) : crop);
      }
      views.push_back(torch::stack(rows));
    } else {
      views.push_back(inputs + noise * torch::randn(inputs.sizes(), gen, inputs.options()));
    }
  }
  return torch::cat(views).contiguous();
}

torch::Tensor pool_features(const torch::Tensor& h) {
  if (h.dim() == 4) return h.mean({2, 3});
  if (h.dim() == 2) return h;
  return h.reshape({h.size(0), -1});
}

torch::Tensor nt_xent(const torch::Tensor& z, double temperature) {
  const int64_t n2 = z.size(0), n = n2 / 2;
  const torch::Tensor u = torch::nn::functional::normalize(
      z, torch::nn::functional::NormalizeFuncOptions().dim(1).eps(1e-12));
  const torch::Tensor eye =
      torch::eye(n2, torch::TensorOptions().dtype(torch::kBool).device(z.device()));
  const torch::Tensor sim = (u.matmul(u.t()) / temperature).masked_fill(eye, -INFINITY);
  const torch::Tensor positive =
      torch::cat({torch::arange(n, 2 * n), torch::arange(0, n)}).to(z.device());
  return torch::nn::functional::cross_entropy(sim, positive);
}

torch::Tensor least_similar(const torch::Tensor& features, double ratio) {
  torch::NoGradGuard no_grad;
  const int64_t b = features.size(0);
  const int64_t m = std::clamp<int64_t>(std::llround(ratio * static_cast<double>(b)), 2, b);
  if (m >= b) return torch::arange(b, torch::kLong);
  const torch::Tensor u = torch::nn::functional::normalize(
      features.to(torch::kFloat64), torch::nn::functional::NormalizeFuncOptions().dim(1));
  const torch::Tensor sim = u.matmul(u.t());
  // Mean cosine to the other rows (the diagonal taken out).
  const torch::Tensor score =
      ((sim.sum(1) - sim.diagonal()) / static_cast<double>(b - 1)).contiguous();
  const double* s = score.data_ptr<double>();
  std::vector<int64_t> order(b);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) { return s[i] < s[j]; });
  std::vector<int64_t> keep(order.begin(), order.begin() + m);
  std::sort(keep.begin(), keep.end());
  return torch::tensor(keep, torch::kLong);
}

double effective_rank(const torch::Tensor& z) {
  torch::NoGradGuard no_grad;
  const torch::Tensor x = z.to(torch::kFloat64).reshape({z.size(0), -1});
  const torch::Tensor centred = x - x.mean(0, /*keepdim=*/true);
  const torch::Tensor sigma = torch::linalg_svdvals(centred);
  const double total = sigma.sum().item<double>();
  if (!(total > 0)) return 0.0;
  const torch::Tensor p = sigma / total;
  const torch::Tensor positive = p.masked_select(p > 0);
  return std::exp(-(positive * positive.log()).sum().item<double>());
}

double linear_probe_accuracy(const torch::Tensor& train, const torch::Tensor& labels,
                             const torch::Tensor& test, const torch::Tensor& test_labels,
                             int64_t classes, int64_t steps, double lr) {
  const torch::Tensor a = train.detach().to(torch::kFloat64).reshape({train.size(0), -1});
  const torch::Tensor t = test.detach().to(torch::kFloat64).reshape({test.size(0), -1});
  const torch::Tensor mean = a.mean(0, true), dev = a.std(0, /*unbiased=*/false, true) + 1e-6;
  const torch::Tensor xa = (a - mean) / dev, xt = (t - mean) / dev;
  torch::Tensor w = torch::zeros({xa.size(1), classes}, torch::kFloat64).requires_grad_(true);
  torch::Tensor bias = torch::zeros({classes}, torch::kFloat64).requires_grad_(true);
  {
    torch::AutoGradMode grad(true);
    torch::optim::Adam adam({w, bias}, torch::optim::AdamOptions(lr));
    for (int64_t i = 0; i < steps; ++i) {
      adam.zero_grad();
      torch::nn::functional::cross_entropy(xa.matmul(w) + bias, labels).backward();
      adam.step();
    }
  }
  torch::NoGradGuard no_grad;
  const torch::Tensor predicted = (xt.matmul(w) + bias).argmax(1);
  return predicted.eq(test_labels).to(torch::kFloat64).mean().item<double>();
}

}  // namespace desync
