// μLO's small_fc_lopt (spec §2.2). Per parameter tensor p (a 0-dim one viewed as [1]) with
// gradient g, at step t (the number of steps taken before this one):
//
//   g <- nan_to_num(g); with options.clip, all gradients scaled to global norm <= 1
//   m_k   <- b_k m_k + (1 - b_k) g               k = 0, 1, 2   (b from 0.9, 0.99, 0.999)
//   rms   <- b_r rms + (1 - b_r) g^2                           (b_r from 0.999)
//   2-D and up, d0 / d1 the largest / second largest dim, e = g^2 + 1e-30:
//     row_k <- f_k row_k + (1 - f_k) mean_d0(e);  col_k <- f_k col_k + (1 - f_k) mean_d1(e)
//     r_k = safe_rsqrt(row_k / (mean_d1(row_k) + 1e-9)) * safe_rsqrt(col_k)   (broadcast)
//   1-D: v_k <- f_k v_k + (1 - f_k) e
//   channels (28): g, p, m (3), rms, m rsqrt(rms + 1e-6) (3), rsqrt(rms + 1e-6),
//     factored: g r (3), row (3), col (3), rsqrt(row + 1e-8) (3), rsqrt(col + 1e-8) (3), m r (3)
//     1-D:      g safe_rsqrt(v + 1e-9) (3), v (3), v (3), rsqrt(v + 1e-8) (3, twice),
//               m (v + 1e-6)^-1/2 (3)
//   x = each channel * rsqrt(1e-5 + mean over the tensor of its square), then tanh(t / tau - 1)
//   [d, mag] = MLP(x);  p <- p - lr_scale * alpha1 * d * exp(alpha2 * mag)
//
// with safe_rsqrt(x) = rsqrt(max(x, 1e-9)) and the decays b, b_r, f from mulo_decay. The exact
// definitions the spec leaves open (the 1e-30 in e, the factored normalisation r with its 1e-9
// guards, the normalised gradient of 1-D tensors, t counting the steps before this one) follow
// google/learned_optimization (learned_optimizers/adafac_mlp_lopt.py and common.py). Where that
// code differs from the spec we follow the spec: it has no nan_to_num or gradient clipping, and
// it keeps the factored accumulators without their reduced dims (we keep them with size 1, so
// they broadcast). As it does, we clamp the RMS and factored decays to [0, 1] (not the momentum
// decays).
//
// Memory: the 28 channels and the MLP's activations exist for one block of at most
// options.chunk elements at a time (whole slices of dim 0). The normalisation needs
// the mean over the whole tensor, so a tensor larger than one block builds its channels twice:
// once for the means, once for the MLP.
#include "desync/optim/mulo.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <utility>

#include "desync/core/archive.h"
#include "desync/core/error.h"
#include "desync/core/fs.h"

namespace desync {

namespace {

constexpr std::array<double, 3> kMomentumDecays = {0.9, 0.99, 0.999};
constexpr double kRmsDecay = 0.999;
constexpr std::array<double, 3> kAdafactorDecays = {0.9, 0.99, 0.999};
constexpr std::array<double, kMuloStepFeatures> kTaus = {1,    3,    10,  30,  100, 300,
                                                         1000, 3000, 1e4, 3e4, 1e5};
constexpr double kSquareEps = 1e-30;  // added to g^2 in the factored / full accumulators

// ---- Meta-parameters ----

struct Field {
  const char* name;
  torch::Tensor MuloParams::*member;
  std::vector<int64_t> shape;
};

const std::vector<Field>& fields() {
  static const std::vector<Field> kFields = {
      {"w1", &MuloParams::w1, {kMuloHidden, kMuloInputs}},
      {"b1", &MuloParams::b1, {kMuloHidden}},
      {"w2", &MuloParams::w2, {kMuloHidden, kMuloHidden}},
      {"b2", &MuloParams::b2, {kMuloHidden}},
      {"w3", &MuloParams::w3, {2, kMuloHidden}},
      {"b3", &MuloParams::b3, {2}},
      {"momentum_delta", &MuloParams::momentum_delta, {3}},
      {"rms_delta", &MuloParams::rms_delta, {1}},
      {"adafactor_delta", &MuloParams::adafactor_delta, {3}},
  };
  return kFields;
}

// "" when every field of `params` has its shape, else what is wrong with the first that has not.
std::string shape_error(const MuloParams& params) {
  for (const Field& f : fields()) {
    const torch::Tensor& t = params.*f.member;
    if (!t.defined() || t.sizes() != torch::IntArrayRef(f.shape)) {
      return fmt::format("'{}' must have shape [{}], got [{}]", f.name, fmt::join(f.shape, ", "),
                         t.defined() ? fmt::format("{}", fmt::join(t.sizes(), ", ")) : "none");
    }
  }
  return "";
}

template <typename E>
void check_shapes(const MuloParams& params, const std::string& what) {
  const std::string error = shape_error(params);
  if (!error.empty()) throw E(fmt::format("{}: μLO parameter {}", what, error));
}

// N(0, stddev^2) cut at two standard deviations (redrawing what falls outside).
torch::Tensor truncated_normal(torch::IntArrayRef shape, double stddev, at::Generator& gen) {
  torch::Tensor x = torch::randn(shape, gen, torch::kFloat);
  for (;;) {
    const torch::Tensor outside = x.abs() > 2.0;
    const int64_t n = outside.sum().item<int64_t>();
    if (n == 0) break;
    x.masked_scatter_(outside, torch::randn({n}, gen, torch::kFloat));
  }
  return x.mul_(stddev);
}

// ---- Features ----

torch::Tensor at_least_1d(const torch::Tensor& t) { return t.dim() == 0 ? t.view({1}) : t; }

torch::Tensor safe_rsqrt(const torch::Tensor& x) { return x.clamp_min(1e-9).rsqrt(); }

// {d0, d1}: the largest and the second largest dim (of equal sizes, the later counts as larger).
std::pair<int64_t, int64_t> factored_dims(torch::IntArrayRef sizes) {
  std::vector<int64_t> order(sizes.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return sizes[a] < sizes[b]; });
  return {order[order.size() - 1], order[order.size() - 2]};
}

// The step features tanh(t / tau - 1), [1, 11] float32.
torch::Tensor step_features(int64_t t, const torch::Device& device) {
  std::vector<float> values;
  for (double tau : kTaus) {
    values.push_back(static_cast<float>(std::tanh(static_cast<double>(t) / tau - 1.0)));
  }
  return torch::tensor(values).view({1, kMuloStepFeatures}).to(device);
}

// The 28 channels of one tensor (at least 1-D), over slices [start, start + len) of dim 0.
class Channels {
 public:
  Channels(const torch::Tensor& g, const torch::Tensor& p, const MuloAccumulators& acc)
      : g_(g), p_(p), m_(acc.momentum), rms_(acc.rms), shape3_(acc.momentum.sizes().vec()) {
    factored_ = g.dim() >= 2;
    if (factored_) {
      const int64_t d1 = factored_dims(g.sizes()).second + 1;  // +1: the decays' dim
      stats_ = {acc.row, acc.col, (acc.row + 1e-8).rsqrt(), (acc.col + 1e-8).rsqrt()};
      scale_a_ = safe_rsqrt(acc.row / (acc.row.mean(d1, true) + 1e-9));
      scale_b_ = safe_rsqrt(acc.col);
    } else {
      const torch::Tensor v_rsqrt = (acc.v + 1e-8).rsqrt();
      stats_ = {acc.v, acc.v, v_rsqrt, v_rsqrt};
      scale_a_ = safe_rsqrt(acc.v + 1e-9);  // the normalised gradient's
      scale_b_ = (acc.v + 1e-6).pow(-0.5);  // the normalised momentum's
    }
  }

  int64_t rows() const { return g_.size(0); }

  // [28, len * (numel / rows)] in the accumulators' dtype.
  torch::Tensor slice(int64_t start, int64_t len) const {
    auto own = [&](const torch::Tensor& x) {
      return x.narrow(0, start, len).reshape({1, -1}).to(m_.scalar_type());
    };
    auto per_decay = [&](const torch::Tensor& x) {
      return x.expand(shape3_).narrow(1, start, len).reshape({3, -1});
    };
    const torch::Tensor g = own(g_), m = per_decay(m_), rms = own(rms_);
    const torch::Tensor rms_rsqrt = (rms + 1e-6).rsqrt();
    torch::Tensor g_scale, m_scale;
    if (factored_) {
      g_scale = m_scale = per_decay(scale_a_) * per_decay(scale_b_);
    } else {
      g_scale = per_decay(scale_a_);
      m_scale = per_decay(scale_b_);
    }
    return torch::cat({g, own(p_), m, rms, m * rms_rsqrt, rms_rsqrt, g * g_scale,
                       per_decay(stats_[0]), per_decay(stats_[1]), per_decay(stats_[2]),
                       per_decay(stats_[3]), m * m_scale});
  }

 private:
  torch::Tensor g_, p_, m_, rms_;
  std::vector<int64_t> shape3_;  // [3, S]
  bool factored_;
  std::array<torch::Tensor, 4> stats_;  // the broadcast channels 13..24, [3, ...]
  torch::Tensor scale_a_, scale_b_;     // factors of the normalised gradient and momentum
};

// rsqrt(1e-5 + mean(x^2)) per channel, [28, 1], from the channels' sums of squares.
torch::Tensor normaliser(const torch::Tensor& sum_sq, int64_t numel, torch::ScalarType dtype) {
  return (sum_sq / static_cast<double>(numel) + 1e-5).rsqrt().to(dtype).unsqueeze(1);
}

// The MLP's inputs [n, 39] float32 from a slice's channels [28, n].
torch::Tensor inputs(const torch::Tensor& channels, const torch::Tensor& scale,
                     const torch::Tensor& step_feats) {
  const int64_t n = channels.size(1);
  return torch::cat(
      {(channels * scale).t().to(torch::kFloat), step_feats.expand({n, kMuloStepFeatures})}, 1);
}

// [n, 39] -> [n, 2] (direction, magnitude).
torch::Tensor mlp(const MuloParams& w, const torch::Tensor& x) {
  const torch::Tensor h1 = torch::addmm(w.b1, x, w.w1.t()).relu_();
  const torch::Tensor h2 = torch::addmm(w.b2, h1, w.w2.t()).relu_();
  return torch::addmm(w.b3, h2, w.w3.t());
}

struct Decays {
  std::array<double, 3> momentum;
  double rms;
  std::array<double, 3> adafactor;
};

Decays decays_of(const MuloParams& params) {
  auto clamp01 = [](double d) { return std::clamp(d, 0.0, 1.0); };
  Decays d;
  for (int k = 0; k < 3; ++k) {
    d.momentum[k] = mulo_decay(kMomentumDecays[k], params.momentum_delta[k].item<double>());
    d.adafactor[k] =
        clamp01(mulo_decay(kAdafactorDecays[k], params.adafactor_delta[k].item<double>()));
  }
  d.rms = clamp01(mulo_decay(kRmsDecay, params.rms_delta[0].item<double>()));
  return d;
}

struct SlotState {
  torch::Tensor param;       // the slot's parameter, at least 1-D (a view: updated in place)
  torch::ScalarType dtype;   // of the accumulators: the parameter's, at least float32
  int64_t d0 = -1, d1 = -1;  // factored dims (2-D and up)
  MuloAccumulators acc;
};

}  // namespace

// ---- MuloParams ----

MuloParams MuloParams::init(uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  MuloParams p;
  for (const Field& f : fields()) {
    p.*f.member =
        f.shape.size() == 2
            ? truncated_normal(f.shape, 1.0 / std::sqrt(static_cast<double>(f.shape[1])), gen)
            : torch::zeros(f.shape, torch::kFloat);
  }
  return p;
}

torch::Tensor MuloParams::flatten() const {
  check_shapes<Error>(*this, "MuloParams::flatten");
  std::vector<torch::Tensor> parts;
  for (const Field& f : fields()) {
    parts.push_back((this->*f.member).detach().to(torch::kCPU, torch::kFloat).reshape(-1));
  }
  return torch::cat(parts);
}

MuloParams MuloParams::unflatten(const torch::Tensor& flat) {
  if (flat.dim() != 1 || flat.numel() != numel()) {
    throw Error(fmt::format("MuloParams::unflatten: expected a vector of {} values, got [{}]",
                            numel(), fmt::join(flat.sizes(), ", ")));
  }
  const torch::Tensor values = flat.detach().to(torch::kCPU, torch::kFloat);
  MuloParams p;
  int64_t offset = 0;
  for (const Field& f : fields()) {
    const int64_t n = c10::multiply_integers(f.shape);
    p.*f.member = values.narrow(0, offset, n).reshape(f.shape).clone();
    offset += n;
  }
  return p;
}

int64_t MuloParams::numel() {
  int64_t n = 0;
  for (const Field& f : fields()) n += c10::multiply_integers(f.shape);
  return n;
}

void MuloParams::save(const std::string& path) const {
  check_shapes<Error>(*this, "MuloParams::save");
  Archive archive;
  for (const Field& f : fields()) {
    archive.put(f.name, (this->*f.member).detach().to(torch::kCPU, torch::kFloat));
  }
  try {
    write_file_atomic(path, archive.serialize());
  } catch (const Error& e) {
    throw CheckpointError(e.what());
  }
}

MuloParams MuloParams::load(const std::string& path) {
  std::string bytes;
  try {
    bytes = read_file(path);
  } catch (const Error& e) {
    throw CheckpointError(e.what());
  }
  const Archive archive = Archive::deserialize(bytes, path);  // names the file when corrupt
  MuloParams p;
  std::string error;
  for (const Field& f : fields()) {
    if (!archive.has(f.name)) {
      error = fmt::format("no entry '{}'", f.name);
      break;
    }
    try {
      p.*f.member = archive.tensor(f.name).contiguous();
    } catch (const CheckpointError&) {
      error = fmt::format("entry '{}' is not a tensor", f.name);
      break;
    }
    if ((p.*f.member).scalar_type() != torch::kFloat) {
      error = fmt::format("entry '{}' is not float32", f.name);
      break;
    }
  }
  if (error.empty()) error = shape_error(p);
  if (!error.empty()) {
    throw CheckpointError(fmt::format("{}: not a μLO parameter file: {}", path, error));
  }
  return p;
}

double mulo_decay(double decay0, double delta) {
  return 1.0 - std::exp(10.0 * (std::log(1.0 - decay0) / 10.0 + delta));
}

double mulo_delta(double decay0, double decay) {
  return std::log(1.0 - decay) / 10.0 - std::log(1.0 - decay0) / 10.0;
}

// ---- Features ----

torch::Tensor mulo_features(const torch::Tensor& grad, const torch::Tensor& param,
                            const MuloAccumulators& acc) {
  torch::NoGradGuard no_grad;
  const Channels channels(at_least_1d(grad), at_least_1d(param), acc);
  return channels.slice(0, channels.rows()).t();
}

torch::Tensor mulo_inputs(const torch::Tensor& grad, const torch::Tensor& param,
                          const MuloAccumulators& acc, int64_t t) {
  torch::NoGradGuard no_grad;
  const Channels channels(at_least_1d(grad), at_least_1d(param), acc);
  const torch::Tensor c = channels.slice(0, channels.rows());
  const torch::Tensor sum_sq = c.square().sum(1, false, torch::kDouble);
  return inputs(c, normaliser(sum_sq, c.size(1), c.scalar_type()),
                step_features(t, param.device()));
}

// ---- Mulo ----

struct Mulo::Impl {
  MuloOptions options;
  MuloParams params;  // float32, on the slots' device
  Decays decays;
  std::vector<SlotState> slots;
  torch::Tensor step = torch::zeros({}, torch::kInt64);

  void accumulate(SlotState& s, const torch::Tensor& g) const {
    for (int k = 0; k < 3; ++k) {
      s.acc.momentum[k].mul_(decays.momentum[k]).add_(g, 1.0 - decays.momentum[k]);
    }
    s.acc.rms.mul_(decays.rms).addcmul_(g, g, 1.0 - decays.rms);
    const torch::Tensor e = g.square().add_(kSquareEps);
    if (s.d0 >= 0) {
      const torch::Tensor row = e.mean(s.d0, true), col = e.mean(s.d1, true);
      for (int k = 0; k < 3; ++k) {
        const double f = decays.adafactor[k];
        s.acc.row[k].mul_(f).add_(row, 1.0 - f);
        s.acc.col[k].mul_(f).add_(col, 1.0 - f);
      }
    } else {
      for (int k = 0; k < 3; ++k) {
        s.acc.v[k].mul_(decays.adafactor[k]).add_(e, 1.0 - decays.adafactor[k]);
      }
    }
  }

  void update(SlotState& s, const torch::Tensor& g, double lr_scale,
              const torch::Tensor& step_feats) const {
    const int64_t numel = s.param.numel();
    if (numel == 0) return;
    accumulate(s, g);
    const Channels channels(g, s.param, s.acc);
    const int64_t rows = channels.rows();
    const int64_t per_chunk = std::max<int64_t>(1, options.chunk / (numel / rows));
    torch::Tensor sum_sq = torch::zeros({kMuloFeatures}, g.options().dtype(torch::kDouble));
    torch::Tensor whole;  // the channels, when one chunk holds the tensor
    for (int64_t start = 0; start < rows; start += per_chunk) {
      const torch::Tensor c = channels.slice(start, std::min(per_chunk, rows - start));
      sum_sq += c.square().sum(1, false, torch::kDouble);
      if (per_chunk >= rows) whole = c;
    }
    const torch::Tensor norm = normaliser(sum_sq, numel, s.dtype);
    for (int64_t start = 0; start < rows; start += per_chunk) {
      const int64_t len = std::min(per_chunk, rows - start);
      const torch::Tensor c = whole.defined() ? whole : channels.slice(start, len);
      const torch::Tensor out = mlp(params, inputs(c, norm, step_feats));
      const torch::Tensor step =
          out.select(1, 0) * out.select(1, 1).mul(options.alpha2).exp_();  // alpha1 below
      torch::Tensor p = s.param.narrow(0, start, len);
      p.sub_(step.view(p.sizes()).to(p.scalar_type()), lr_scale * options.alpha1);
    }
  }
};

Mulo::Mulo(std::vector<ParamSlot> slots, MuloParams params, const MuloOptions& options)
    : Optimizer(std::move(slots)), impl_(std::make_unique<Impl>()) {
  if (!std::isfinite(options.alpha1) || !std::isfinite(options.alpha2)) {
    throw ConfigError("optimizer.lopt_alpha1 / lopt_alpha2: must be finite");
  }
  if (options.chunk < 1) throw ConfigError("mulo: chunk must be >= 1");
  impl_->options = options;
  torch::NoGradGuard no_grad;
  for (const ParamSlot& slot : slots_) {
    if (!slot.grad.defined() || slot.grad.sizes() != slot.param.sizes()) {
      throw ConfigError(fmt::format("mulo: slot '{}' needs a gradient of its shape", slot.name));
    }
    SlotState s;
    s.param = at_least_1d(slot.param);
    s.dtype = torch::promote_types(slot.param.scalar_type(), torch::kFloat);
    const auto opts = slot.param.options().dtype(s.dtype);
    std::vector<int64_t> shape3 = s.param.sizes().vec();
    shape3.insert(shape3.begin(), 3);
    s.acc.momentum = torch::zeros(shape3, opts);
    s.acc.rms = torch::zeros(s.param.sizes(), opts);
    if (s.param.dim() >= 2) {
      std::tie(s.d0, s.d1) = factored_dims(s.param.sizes());
      std::vector<int64_t> row = shape3, col = shape3;
      row[s.d0 + 1] = 1;
      col[s.d1 + 1] = 1;
      s.acc.row = torch::zeros(row, opts);
      s.acc.col = torch::zeros(col, opts);
    } else {
      s.acc.v = torch::zeros(shape3, opts);
    }
    impl_->slots.push_back(std::move(s));
  }
  set_params(std::move(params));
}

Mulo::~Mulo() = default;

void Mulo::set_params(MuloParams params) {
  check_shapes<ConfigError>(params, "mulo");
  const torch::Device device = slots_.empty() ? torch::kCPU : slots_[0].param.device();
  for (const Field& f : fields()) {
    params.*f.member = (params.*f.member).detach().to(device, torch::kFloat).contiguous();
  }
  impl_->decays = decays_of(params);
  impl_->params = std::move(params);
}

void Mulo::step(double /*lr*/) {
  torch::NoGradGuard no_grad;
  const int64_t t = impl_->step.item<int64_t>();
  std::vector<torch::Tensor> grads;
  for (size_t i = 0; i < slots_.size(); ++i) {
    grads.push_back(at_least_1d(torch::nan_to_num(slots_[i].grad.to(impl_->slots[i].dtype))));
  }
  if (impl_->options.clip) clip_grad_norm(grads, 1.0);
  torch::Tensor step_feats;
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (!step_feats.defined() || step_feats.device() != grads[i].device()) {
      step_feats = step_features(t, grads[i].device());
    }
    impl_->update(impl_->slots[i], grads[i], slots_[i].lr_scale, step_feats);
  }
  impl_->step.fill_(t + 1);
}

std::vector<std::pair<std::string, torch::Tensor>> Mulo::state() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const std::string& name = slots_[i].name;
    const MuloAccumulators& acc = impl_->slots[i].acc;
    out.emplace_back(name + ".momentum", acc.momentum);
    out.emplace_back(name + ".rms", acc.rms);
    if (acc.v.defined()) {
      out.emplace_back(name + ".v", acc.v);
    } else {
      out.emplace_back(name + ".row", acc.row);
      out.emplace_back(name + ".col", acc.col);
    }
  }
  out.emplace_back("step", impl_->step);
  return out;
}

std::unique_ptr<Optimizer> make_mulo(std::vector<ParamSlot> slots, MuloParams params,
                                     const MuloOptions& options) {
  return std::make_unique<Mulo>(std::move(slots), std::move(params), options);
}

}  // namespace desync
