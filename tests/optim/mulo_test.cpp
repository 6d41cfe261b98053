// μLO (optim/mulo.h) against independent computations: a per-element brute force of the
// accumulators, the 28 channels and the MLP; closed forms for a constant MLP output and for the
// decay reparametrisation.
#include "desync/optim/mulo.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "desync/core/archive.h"
#include "desync/core/error.h"
#include "desync/core/fs.h"
#include "test_util.h"

namespace desync {
namespace {

constexpr std::array<double, 11> kTaus = {1, 3, 10, 30, 100, 300, 1e3, 3e3, 1e4, 3e4, 1e5};

torch::Tensor state_of(Optimizer& opt, const std::string& name) {
  for (auto& [n, t] : opt.state()) {
    if (n == name) return t;
  }
  ADD_FAILURE() << "no state " << name;
  return {};
}

MuloAccumulators accumulators_of(Optimizer& opt, const std::string& slot) {
  MuloAccumulators acc;
  for (auto& [n, t] : opt.state()) {
    if (n == slot + ".momentum") acc.momentum = t;
    if (n == slot + ".rms") acc.rms = t;
    if (n == slot + ".row") acc.row = t;
    if (n == slot + ".col") acc.col = t;
    if (n == slot + ".v") acc.v = t;
  }
  return acc;
}

std::vector<double> values(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kDouble).contiguous().reshape(-1);
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// ---- A brute-force μLO for a 1-D [n] or 2-D [R, C] tensor, one element at a time ----

struct Reference {
  Reference(std::vector<int64_t> shape, std::array<double, 3> mom_decays, double rms_decay,
            std::array<double, 3> fac_decays)
      : shape(shape), mom_decays(mom_decays), rms_decay(rms_decay), fac_decays(fac_decays) {
    n = shape.size() == 1 ? shape[0] : shape[0] * shape[1];
    if (shape.size() == 2) {
      large = shape[1] >= shape[0] ? 1 : 0;  // the largest dim; the row accumulator averages it
      n_row = shape[1 - large];
      n_col = shape[large];
    }
    for (int k = 0; k < 3; ++k) {
      m[k].assign(n, 0.0);
      v[k].assign(n, 0.0);
      row[k].assign(n_row, 0.0);
      col[k].assign(n_col, 0.0);
    }
    rms.assign(n, 0.0);
  }

  // Coordinates of element e along the small (a) and the large (b) dim.
  int64_t a_of(int64_t e) const { return large == 1 ? e / shape[1] : e % shape[1]; }
  int64_t b_of(int64_t e) const { return large == 1 ? e % shape[1] : e / shape[1]; }

  void accumulate(const std::vector<double>& g) {
    for (int k = 0; k < 3; ++k) {
      for (int64_t e = 0; e < n; ++e)
        m[k][e] = mom_decays[k] * m[k][e] + (1 - mom_decays[k]) * g[e];
    }
    for (int64_t e = 0; e < n; ++e) rms[e] = rms_decay * rms[e] + (1 - rms_decay) * g[e] * g[e];
    for (int k = 0; k < 3; ++k) {
      const double f = fac_decays[k];
      if (shape.size() == 1) {
        for (int64_t e = 0; e < n; ++e) v[k][e] = f * v[k][e] + (1 - f) * (g[e] * g[e] + 1e-30);
        continue;
      }
      std::vector<double> row_sum(n_row, 0.0), col_sum(n_col, 0.0);
      for (int64_t e = 0; e < n; ++e) {
        row_sum[a_of(e)] += g[e] * g[e] + 1e-30;
        col_sum[b_of(e)] += g[e] * g[e] + 1e-30;
      }
      for (int64_t a = 0; a < n_row; ++a) row[k][a] = f * row[k][a] + (1 - f) * row_sum[a] / n_col;
      for (int64_t b = 0; b < n_col; ++b) col[k][b] = f * col[k][b] + (1 - f) * col_sum[b] / n_row;
    }
  }

  // The 28 channels of element e (spec §2.2, in its order).
  std::array<double, 28> channels(int64_t e, double g, double p) const {
    std::vector<double> f = {g, p, m[0][e], m[1][e], m[2][e], rms[e]};
    const double rs = 1 / std::sqrt(rms[e] + 1e-6);
    for (int k = 0; k < 3; ++k) f.push_back(m[k][e] * rs);
    f.push_back(rs);
    if (shape.size() == 1) {
      for (int k = 0; k < 3; ++k) f.push_back(g / std::sqrt(std::max(v[k][e] + 1e-9, 1e-9)));
      for (int twice = 0; twice < 2; ++twice) {
        for (int k = 0; k < 3; ++k) f.push_back(v[k][e]);
      }
      for (int twice = 0; twice < 2; ++twice) {
        for (int k = 0; k < 3; ++k) f.push_back(1 / std::sqrt(v[k][e] + 1e-8));
      }
      for (int k = 0; k < 3; ++k) f.push_back(m[k][e] / std::sqrt(v[k][e] + 1e-6));
    } else {
      const int64_t a = a_of(e), b = b_of(e);
      std::array<double, 3> r;
      for (int k = 0; k < 3; ++k) {
        double row_mean = 0;
        for (double x : row[k]) row_mean += x / n_row;
        r[k] = 1 / std::sqrt(std::max(row[k][a] / (row_mean + 1e-9), 1e-9)) /
               std::sqrt(std::max(col[k][b], 1e-9));
      }
      for (int k = 0; k < 3; ++k) f.push_back(g * r[k]);
      for (int k = 0; k < 3; ++k) f.push_back(row[k][a]);
      for (int k = 0; k < 3; ++k) f.push_back(col[k][b]);
      for (int k = 0; k < 3; ++k) f.push_back(1 / std::sqrt(row[k][a] + 1e-8));
      for (int k = 0; k < 3; ++k) f.push_back(1 / std::sqrt(col[k][b] + 1e-8));
      for (int k = 0; k < 3; ++k) f.push_back(m[k][e] * r[k]);
    }
    std::array<double, 28> out;
    std::copy(f.begin(), f.end(), out.begin());
    EXPECT_EQ(f.size(), 28u);
    return out;
  }

  // The MLP's 39 inputs of every element: channels normalised over the tensor, step features.
  std::vector<std::array<double, 39>> inputs(const std::vector<double>& g,
                                             const std::vector<double>& p, int64_t t) const {
    std::vector<std::array<double, 28>> raw;
    std::array<double, 28> mean_sq{};
    for (int64_t e = 0; e < n; ++e) {
      raw.push_back(channels(e, g[e], p[e]));
      for (int c = 0; c < 28; ++c) mean_sq[c] += raw[e][c] * raw[e][c] / n;
    }
    std::vector<std::array<double, 39>> out(n);
    for (int64_t e = 0; e < n; ++e) {
      for (int c = 0; c < 28; ++c) out[e][c] = raw[e][c] / std::sqrt(1e-5 + mean_sq[c]);
      for (int j = 0; j < 11; ++j) out[e][28 + j] = std::tanh(t / kTaus[j] - 1);
    }
    return out;
  }

  std::vector<int64_t> shape;
  std::array<double, 3> mom_decays;
  double rms_decay;
  std::array<double, 3> fac_decays;
  int64_t n = 0, large = -1, n_row = 0, n_col = 0;
  std::array<std::vector<double>, 3> m, v, row, col;
  std::vector<double> rms;
};

Reference default_reference(std::vector<int64_t> shape) {
  return Reference(shape, {0.9, 0.99, 0.999}, 0.999, {0.9, 0.99, 0.999});
}

// The per-element MLP 39 -> 32 -> 32 -> 2 with ReLU, in double, written out.
std::array<double, 2> mlp_forward(const MuloParams& w, const std::array<double, 39>& x) {
  auto layer = [](const torch::Tensor& weight, const torch::Tensor& bias,
                  const std::vector<double>& in, bool relu) {
    const auto W = weight.accessor<float, 2>();
    const auto b = bias.accessor<float, 1>();
    std::vector<double> out(weight.size(0));
    for (int64_t o = 0; o < weight.size(0); ++o) {
      double s = b[o];
      for (int64_t i = 0; i < weight.size(1); ++i) s += W[o][i] * in[i];
      out[o] = relu ? std::max(s, 0.0) : s;
    }
    return out;
  };
  const std::vector<double> h1 = layer(w.w1, w.b1, std::vector<double>(x.begin(), x.end()), true);
  const std::vector<double> h2 = layer(w.w2, w.b2, h1, true);
  const std::vector<double> out = layer(w.w3, w.b3, h2, false);
  return {out[0], out[1]};
}

void expect_near_all(const std::vector<double>& got, const std::vector<double>& want, double rel,
                     const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], rel * (1 + std::abs(want[i]))) << what << " [" << i << "]";
  }
}

// ---- Tests ----

// Spec §2.4 test 1.
TEST(MuloFeatures, ChannelsHaveUnitMeanSquareAndStepFeaturesAreAppended) {
  torch::manual_seed(11);
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{6, 10}, {9}, {3, 4, 5}}) {
    torch::Tensor param = torch::randn(shape), grad = torch::zeros(shape);
    Mulo mulo({{"p", param, grad}}, MuloParams::init(1), MuloOptions{});
    for (int s = 0; s < 3; ++s) {
      grad.copy_(3 * torch::randn(shape));
      mulo.step(0.0);
    }
    const MuloAccumulators acc = accumulators_of(mulo, "p");
    const torch::Tensor raw = mulo_features(grad, param, acc).to(torch::kDouble);
    ASSERT_EQ(raw.sizes(), torch::IntArrayRef({param.numel(), 28}));
    const torch::Tensor raw_ms = raw.square().mean(0);
    for (int64_t t : {0, 5, 40000}) {
      const torch::Tensor in = mulo_inputs(grad, param, acc, t);
      ASSERT_EQ(in.sizes(), torch::IntArrayRef({param.numel(), 39}));
      ASSERT_EQ(in.scalar_type(), torch::kFloat);
      const torch::Tensor ms = in.narrow(1, 0, 28).to(torch::kDouble).square().mean(0);
      int checked = 0;
      for (int c = 0; c < 28; ++c) {
        if (raw_ms[c].item<double>() <= 1e-2) continue;
        ++checked;
        EXPECT_NEAR(ms[c].item<double>(), 1.0, 1e-3) << "channel " << c << " t " << t;
      }
      EXPECT_GE(checked, 20);
      for (int j = 0; j < 11; ++j) {
        const float want = static_cast<float>(std::tanh(t / kTaus[j] - 1.0));
        EXPECT_TRUE(torch::all(in.select(1, 28 + j) == want).item<bool>()) << "tau " << kTaus[j];
      }
    }
  }
}

// Spec §2.4 test 2: with w3 = 0 the MLP outputs b3 everywhere, so every element moves by
// lr_scale * alpha1 * b3[0] * exp(alpha2 * b3[1]).
TEST(MuloUpdate, ConstantOutputMovesEveryElementByMuScaleTimesAlpha1C) {
  torch::manual_seed(12);
  struct Case {
    std::vector<int64_t> shape;
    double lr_scale;
  };
  const std::vector<Case> cases = {{{16, 4}, 1.0},        // input layer
                                   {{16, 16}, 1.0 / 16},  // hidden layer: 1 / fan_in
                                   {{3, 16}, 1.0},        // output layer
                                   {{16}, 1.0},           // bias
                                   {{}, 1.0}};            // a 0-dim scalar
  std::vector<ParamSlot> slots;
  for (size_t i = 0; i < cases.size(); ++i) {
    slots.push_back({"p" + std::to_string(i), torch::randn(cases[i].shape, torch::kDouble),
                     torch::zeros(cases[i].shape, torch::kDouble), 0.0, cases[i].lr_scale});
  }
  MuloParams params = MuloParams::init(2);
  params.w3.zero_();
  const double c = 0.75;
  MuloOptions options;
  options.alpha1 = 1e-2;
  options.alpha2 = 0.1;
  Mulo mulo(slots, params, options);
  for (double magnitude : {0.0, 0.0, 2.0}) {
    params.b3 = torch::tensor({static_cast<float>(c), static_cast<float>(magnitude)});
    mulo.set_params(params);
    std::vector<torch::Tensor> before;
    for (ParamSlot& s : slots) {
      s.grad.copy_(torch::randn(s.grad.sizes(), torch::kDouble));
      before.push_back(s.param.clone());
    }
    mulo.step(123.0);                                   // the learning rate is ignored
    const double tol = magnitude == 0.0 ? 1e-7 : 1e-6;  // exp() is float32
    for (size_t i = 0; i < slots.size(); ++i) {
      const double want = cases[i].lr_scale * options.alpha1 * c * std::exp(0.1 * magnitude);
      const torch::Tensor moved = before[i] - slots[i].param;
      EXPECT_LE(((moved - want).abs() / want).max().item<double>(), tol) << slots[i].name;
    }
  }
}

// Spec §2.4 test 5.
TEST(MuloDecay, ReparametrisationRoundTrips) {
  for (double decay0 : {0.9, 0.99, 0.999}) {
    EXPECT_NEAR(mulo_decay(decay0, 0.0), decay0, 1e-15);
    for (double delta : {-0.2, -0.01, 0.03, 0.1}) {
      // Closed form: 1 - decay = (1 - decay0) exp(10 delta).
      EXPECT_NEAR(mulo_decay(decay0, delta), 1 - (1 - decay0) * std::exp(10 * delta), 1e-12);
      EXPECT_NEAR(mulo_delta(decay0, mulo_decay(decay0, delta)), delta, 1e-7);
    }
    for (double decay : {0.9, 0.99, 0.999}) {
      EXPECT_NEAR(mulo_decay(decay0, mulo_delta(decay0, decay)), decay, 1e-7);
    }
  }
}

TEST(MuloDecay, OffsetsChangeTheDecaysTheOptimizerUses) {
  torch::manual_seed(13);
  MuloParams params = MuloParams::init(3);
  params.momentum_delta = torch::tensor({0.05f, -0.1f, 0.2f});
  params.rms_delta = torch::tensor({0.1f});
  params.adafactor_delta = torch::tensor({-0.05f, 0.1f, 0.02f});
  auto decay = [](double decay0, const torch::Tensor& delta) {
    return 1 - (1 - decay0) * std::exp(10 * static_cast<double>(delta.item<float>()));
  };
  std::array<double, 3> mom, fac;
  for (int k = 0; k < 3; ++k) {
    mom[k] = decay(std::array<double, 3>{0.9, 0.99, 0.999}[k], params.momentum_delta[k]);
    fac[k] = decay(std::array<double, 3>{0.9, 0.99, 0.999}[k], params.adafactor_delta[k]);
  }
  Reference ref_v({5}, mom, decay(0.999, params.rms_delta[0]), fac);
  Reference ref_f({3, 4}, mom, decay(0.999, params.rms_delta[0]), fac);
  torch::Tensor pv = torch::randn({5}, torch::kDouble), gv = torch::zeros({5}, torch::kDouble);
  torch::Tensor pf = torch::randn({3, 4}, torch::kDouble),
                gf = torch::zeros({3, 4}, torch::kDouble);
  Mulo mulo({{"v", pv, gv}, {"f", pf, gf}}, params, MuloOptions{});
  std::vector<std::vector<double>> gv_history;
  for (int s = 0; s < 3; ++s) {
    gv.copy_(torch::randn({5}, torch::kDouble));
    gf.copy_(torch::randn({3, 4}, torch::kDouble));
    ref_v.accumulate(values(gv));
    gv_history.push_back(values(gv));
    ref_f.accumulate(values(gf));
    mulo.step(0.0);
  }
  const torch::Tensor m = state_of(mulo, "v.momentum");
  for (int k = 0; k < 3; ++k) {
    expect_near_all(values(m[k]), ref_v.m[k], 1e-12, "momentum " + std::to_string(k));
    expect_near_all(values(state_of(mulo, "v.v")[k]), ref_v.v[k], 1e-12, "v");
    expect_near_all(values(state_of(mulo, "f.row")[k]), ref_f.row[k], 1e-12, "row");
  }
  expect_near_all(values(state_of(mulo, "v.rms")), ref_v.rms, 1e-12, "rms");
  // The offsets matter: the EMA at the base decays is far from the state.
  Reference plain = default_reference({5});
  for (const auto& g : gv_history) plain.accumulate(g);
  EXPECT_GT((m[0] - torch::tensor(plain.m[0], torch::kDouble)).abs().max().item<double>(), 1e-3);
}

// Accumulators, channels and the update against the per-element brute force, for a 2-D tensor
// whose largest dim comes first, a 2-D tensor whose largest dim comes last and a 1-D tensor, with
// chunks smaller than the tensors (so the normalisation must span chunks).
TEST(MuloBruteForce, AccumulatorsChannelsAndUpdateMatchPerElementLoops) {
  torch::manual_seed(14);
  const std::vector<std::vector<int64_t>> shapes = {{5, 3}, {2, 4}, {7}};
  const std::vector<double> lr_scales = {0.5, 1.0, 2.0};
  std::vector<ParamSlot> slots;
  for (size_t i = 0; i < shapes.size(); ++i) {
    slots.push_back({"p" + std::to_string(i), torch::randn(shapes[i], torch::kDouble),
                     torch::zeros(shapes[i], torch::kDouble), 0.0, lr_scales[i]});
  }
  MuloParams params = MuloParams::init(4);
  params.b1 = 0.3 * torch::randn({32});
  params.b2 = 0.3 * torch::randn({32});
  params.b3 = torch::tensor({0.2f, -0.5f});
  MuloOptions options;
  options.alpha1 = 1e-2;
  options.alpha2 = 0.5;
  options.chunk = 4;
  Mulo mulo(slots, params, options);
  std::vector<Reference> refs;
  for (const auto& shape : shapes) refs.push_back(default_reference(shape));
  for (int64_t t = 0; t < 2; ++t) {
    std::vector<std::vector<double>> before;
    for (size_t i = 0; i < slots.size(); ++i) {
      slots[i].grad.copy_(torch::randn(shapes[i], torch::kDouble));
      refs[i].accumulate(values(slots[i].grad));
      before.push_back(values(slots[i].param));
    }
    mulo.step(0.0);
    for (size_t i = 0; i < slots.size(); ++i) {
      const Reference& ref = refs[i];
      const std::string name = slots[i].name;
      const std::vector<double> g = values(slots[i].grad);
      // The accumulators.
      const MuloAccumulators acc = accumulators_of(mulo, name);
      for (int k = 0; k < 3; ++k) {
        expect_near_all(values(acc.momentum[k]), ref.m[k], 1e-12, name + " momentum");
        if (shapes[i].size() == 1) {
          expect_near_all(values(acc.v[k]), ref.v[k], 1e-12, name + " v");
        } else {
          // row has size 1 in the largest dim, col in the other.
          std::vector<int64_t> row_shape = shapes[i], col_shape = shapes[i];
          row_shape[ref.large] = 1;
          col_shape[1 - ref.large] = 1;
          ASSERT_EQ(acc.row[k].sizes(), torch::IntArrayRef(row_shape)) << name;
          ASSERT_EQ(acc.col[k].sizes(), torch::IntArrayRef(col_shape)) << name;
          expect_near_all(values(acc.row[k]), ref.row[k], 1e-12, name + " row");
          expect_near_all(values(acc.col[k]), ref.col[k], 1e-12, name + " col");
        }
      }
      expect_near_all(values(acc.rms), ref.rms, 1e-12, name + " rms");
      // Each channel, from the parameter before this step.
      const torch::Tensor p_before = torch::tensor(before[i], torch::kDouble).view(shapes[i]);
      const torch::Tensor raw = mulo_features(slots[i].grad, p_before, acc);
      for (int64_t e = 0; e < ref.n; ++e) {
        const std::array<double, 28> want = ref.channels(e, g[e], before[i][e]);
        expect_near_all(values(raw[e]), std::vector<double>(want.begin(), want.end()), 1e-10,
                        name + " channels of element " + std::to_string(e));
      }
      // The inputs and the update, through a hand-written MLP.
      const std::vector<std::array<double, 39>> x = ref.inputs(g, before[i], t);
      const torch::Tensor in = mulo_inputs(slots[i].grad, p_before, acc, t);
      const std::vector<double> moved = values(p_before - slots[i].param);
      double largest = 0;
      std::vector<double> want(ref.n);
      for (int64_t e = 0; e < ref.n; ++e) {
        expect_near_all(values(in[e]), std::vector<double>(x[e].begin(), x[e].end()), 1e-6,
                        name + " inputs");
        const std::array<double, 2> out = mlp_forward(params, x[e]);
        want[e] = lr_scales[i] * options.alpha1 * out[0] * std::exp(options.alpha2 * out[1]);
        largest = std::max(largest, std::abs(want[e]));
      }
      ASSERT_GT(largest, 1e-4);
      for (int64_t e = 0; e < ref.n; ++e) {
        EXPECT_NEAR(moved[e], want[e], 1e-5 * largest) << name << " step " << t << " elem " << e;
      }
    }
  }
}

TEST(MuloGradients, NanBecomesZeroAndGlobalNormIsClippedToOne) {
  torch::manual_seed(15);
  torch::Tensor a = torch::randn({4, 3}, torch::kDouble), b = torch::randn({6}, torch::kDouble);
  torch::Tensor ga = 10 * torch::randn({4, 3}, torch::kDouble);
  torch::Tensor gb = 10 * torch::randn({6}, torch::kDouble);
  gb[2].fill_(std::nan(""));
  MuloOptions options;
  options.clip = true;
  Mulo mulo({{"a", a, ga}, {"b", b, gb}}, MuloParams::init(5), options);
  mulo.step(0.0);
  EXPECT_TRUE(std::isnan(gb[2].item<double>()));  // the slot's gradient is only read
  const torch::Tensor clean_b = torch::nan_to_num(gb, 0.0);
  const double norm =
      std::sqrt(ga.square().sum().item<double>() + clean_b.square().sum().item<double>());
  ASSERT_GT(norm, 10);
  // After one step m_0 = (1 - 0.9) g / |g| (clip_grad_norm divides by |g| + 1e-6).
  const torch::Tensor ma = state_of(mulo, "a.momentum")[0], mb = state_of(mulo, "b.momentum")[0];
  EXPECT_LT((ma - 0.1 * ga / norm).abs().max().item<double>(), 1e-7);
  EXPECT_LT((mb - 0.1 * clean_b / norm).abs().max().item<double>(), 1e-7);
  EXPECT_EQ(mb[2].item<double>(), 0.0);
  EXPECT_TRUE(torch::isfinite(a).all().item<bool>() && torch::isfinite(b).all().item<bool>());
}

// Spec §2.2 "Meta-parameters": 39*32+32 + 32*32+32 + 32*2+2 weights and biases, 3+1+3 offsets.
TEST(MuloParams, FlattenUnflattenRoundTripsAndCounts2409) {
  EXPECT_EQ(MuloParams::numel(), 39 * 32 + 32 + 32 * 32 + 32 + 32 * 2 + 2 + 3 + 1 + 3);
  EXPECT_EQ(MuloParams::numel(), 2409);
  MuloParams p = MuloParams::init(6);
  p.b2 = torch::randn({32});
  p.rms_delta = torch::tensor({0.25f});
  const torch::Tensor flat = p.flatten();
  ASSERT_EQ(flat.sizes(), torch::IntArrayRef({2409}));
  EXPECT_TRUE(torch::equal(flat.narrow(0, 0, 32 * 39), p.w1.reshape(-1)));
  EXPECT_EQ(flat[2409 - 4].item<float>(), 0.25f);  // order: ..., momentum (3), rms (1), ...
  const MuloParams q = MuloParams::unflatten(flat * 2);
  EXPECT_TRUE(torch::equal(q.w2, p.w2 * 2));
  EXPECT_TRUE(torch::equal(q.b2, p.b2 * 2));
  EXPECT_TRUE(torch::equal(MuloParams::unflatten(flat).flatten(), flat));
  EXPECT_THROW(MuloParams::unflatten(torch::zeros({2408})), Error);
}

TEST(MuloParams, InitIsSeededTruncatedAndLeavesTheGlobalRngAlone) {
  torch::manual_seed(99);
  const torch::Tensor expected = torch::randn({4});
  torch::manual_seed(99);
  const MuloParams a = MuloParams::init(7), b = MuloParams::init(7), c = MuloParams::init(8);
  EXPECT_TRUE(torch::equal(torch::randn({4}), expected));
  EXPECT_TRUE(torch::equal(a.flatten(), b.flatten()));
  EXPECT_FALSE(torch::equal(a.w1, c.w1));
  const std::vector<std::pair<torch::Tensor, double>> weights = {
      {a.w1, 39.0}, {a.w2, 32.0}, {a.w3, 32.0}};
  for (const auto& [w, fan_in] : weights) {
    const double sd = 1 / std::sqrt(fan_in);
    EXPECT_LE(w.abs().max().item<double>(), 2 * sd * (1 + 1e-6));
    // A normal cut at ±2 sd keeps 0.88 of its sd; w3 has only 64 draws.
    EXPECT_NEAR(w.std().item<double>() / sd, 0.88, w.numel() > 64 ? 0.05 : 0.2);
  }
  EXPECT_TRUE(torch::all(a.b1 == 0).item<bool>() && torch::all(a.b3 == 0).item<bool>());
  EXPECT_TRUE(torch::all(a.momentum_delta == 0).item<bool>());
}

TEST(MuloParams, SaveLoadIsBitwiseAndBadFilesThrowNamingThem) {
  testing::TempDir dir;
  MuloParams p = MuloParams::init(9);
  p.adafactor_delta = torch::tensor({0.1f, -0.2f, 0.3f});
  const std::string path = dir.file("lopt.pt");
  p.save(path);
  EXPECT_TRUE(torch::equal(MuloParams::load(path).flatten(), p.flatten()));

  const std::string bytes = read_file(path);
  const std::string truncated = dir.file("truncated.pt");
  testing::write_file(truncated, bytes.substr(0, bytes.size() / 2));
  const std::string missing = dir.file("missing.pt");
  const std::string other = dir.file("other.pt");
  Archive archive;  // the right names, one of another shape
  const std::vector<std::pair<std::string, torch::Tensor>> entries = {
      {"w1", p.w1},
      {"b1", torch::zeros({31})},
      {"w2", p.w2},
      {"b2", p.b2},
      {"w3", p.w3},
      {"b3", p.b3},
      {"momentum_delta", p.momentum_delta},
      {"rms_delta", p.rms_delta},
      {"adafactor_delta", p.adafactor_delta}};
  for (const auto& [name, t] : entries) archive.put(name, t);
  write_file_atomic(other, archive.serialize());
  for (const std::string& bad : {truncated, missing, other}) {
    try {
      MuloParams::load(bad);
      ADD_FAILURE() << "no error for " << bad;
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
}

// Spec (checkpoints): copying a state() into a fresh optimizer's state() restores it.
TEST(MuloResume, RestoredStateGivesBitwiseEqualParameters) {
  torch::manual_seed(16);
  const std::vector<std::vector<int64_t>> shapes = {{6, 5}, {5}, {}};
  std::vector<ParamSlot> a, b;
  std::vector<torch::Tensor> initial;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const torch::Tensor p = torch::randn(shapes[i]);
    initial.push_back(p);
    a.push_back({"p" + std::to_string(i), p.clone(), torch::zeros(shapes[i]), 0.0, 0.5});
    b.push_back({"p" + std::to_string(i), p.clone(), torch::zeros(shapes[i]), 0.0, 0.5});
  }
  MuloOptions options;
  options.alpha1 = 1e-2;
  options.chunk = 7;
  MuloParams params = MuloParams::init(10);
  params.b3 = torch::tensor({0.1f, 0.3f});
  Mulo first(a, params, options), second(b, params, options);
  std::vector<std::vector<torch::Tensor>> grads(6);
  for (auto& step : grads) {
    for (const auto& shape : shapes) step.push_back(torch::randn(shape));
  }
  for (int s = 0; s < 3; ++s) {
    for (size_t i = 0; i < a.size(); ++i) a[i].grad.copy_(grads[s][i]);
    first.step(0.0);
  }
  for (size_t i = 0; i < a.size(); ++i) b[i].param.copy_(a[i].param);
  const auto from = first.state();
  auto to = second.state();
  ASSERT_EQ(from.size(), to.size());
  for (size_t i = 0; i < from.size(); ++i) {
    ASSERT_EQ(from[i].first, to[i].first);
    to[i].second.copy_(from[i].second);
  }
  for (int s = 3; s < 6; ++s) {
    for (size_t i = 0; i < a.size(); ++i) {
      a[i].grad.copy_(grads[s][i]);
      b[i].grad.copy_(grads[s][i]);
    }
    first.step(0.0);
    second.step(0.0);
  }
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i].param, b[i].param)) << a[i].name;
    EXPECT_FALSE(torch::equal(a[i].param, initial[i])) << "did not move";
  }
  EXPECT_EQ(state_of(second, "step").item<int64_t>(), 6);
}

}  // namespace
}  // namespace desync
