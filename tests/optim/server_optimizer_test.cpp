// The server optimizers (federated.md §2 "How to test it"): FedAvgM against FedAvg and
// torch::optim::SGD, the scalar fp64 reference of FedAdam / FedYogi / FedAdagrad / FedAvgM,
// bias-corrected FedAdam against torch::optim::Adam; the post_opt mask (scales the step, not
// the moments); the state for checkpoints; the options read from a config table.
#include "desync/optim/server_optimizer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <ostream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "desync/core/config.h"
#include "desync/core/error.h"

namespace desync {
namespace {

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

ServerOptimizerOptions options_for(const std::string& name) {
  ServerOptimizerOptions o;
  o.name = name;
  return o;
}

// --- FedAvg and FedAvgM -------------------------------------------------------------------------

TEST(ServerOptimizerTest, FedAvgStepsByEtaTimesDelta) {
  torch::manual_seed(1);
  torch::Tensor theta = torch::randn({7}, torch::kFloat64);
  ServerOptimizerOptions o = options_for("fedavg");
  o.lr = 0.7;
  auto opt = make_server_optimizer(o, theta);
  for (int round = 0; round < 3; ++round) {
    const torch::Tensor delta = torch::randn({7}, torch::kFloat64);
    const torch::Tensor expected = theta - 0.7 * delta;
    opt->step(theta, delta);
    EXPECT_LE(max_abs_diff(theta, expected), 1e-15);
  }
}

TEST(ServerOptimizerTest, FedAvgMWithZeroMomentumEqualsFedAvg) {
  torch::manual_seed(2);
  const torch::Tensor init = torch::randn({33}, torch::kFloat64);
  torch::Tensor avg = init.clone(), avgm = init.clone();
  ServerOptimizerOptions o = options_for("fedavg");
  o.lr = 0.7;
  auto fedavg = make_server_optimizer(o, init);
  o.name = "fedavgm";
  o.momentum = 0.0;
  auto fedavgm = make_server_optimizer(o, init);
  for (int round = 0; round < 6; ++round) {
    const torch::Tensor delta = torch::randn({33}, torch::kFloat64);
    fedavg->step(avg, delta);
    fedavgm->step(avgm, delta);
    EXPECT_TRUE(torch::equal(avg, avgm)) << "round " << round;
  }
  EXPECT_GT(max_abs_diff(avg, init), 1e-2);
}

struct SgdCase {
  std::string label;
  double lr, momentum, weight_decay;
};

void PrintTo(const SgdCase& c, std::ostream* os) { *os << c.label; }

class FedAvgMMatchesTorchSgd : public ::testing::TestWithParam<SgdCase> {};

// Delta_bar is fed to torch::optim::SGD as the gradient, round after round.
TEST_P(FedAvgMMatchesTorchSgd, Float64) {
  const SgdCase& c = GetParam();
  torch::manual_seed(3);
  const int64_t n = 40;
  const torch::Tensor init = torch::randn({n}, torch::kFloat64);
  const torch::Tensor target = torch::randn({n}, torch::kFloat64);
  torch::Tensor ours = init.clone();
  torch::Tensor theirs = init.clone().requires_grad_(true);
  ServerOptimizerOptions o = options_for("fedavgm");
  o.lr = c.lr;
  o.momentum = c.momentum;
  o.weight_decay = c.weight_decay;
  auto fedavgm = make_server_optimizer(o, init);
  torch::optim::SGD reference(
      {theirs}, torch::optim::SGDOptions(c.lr).momentum(c.momentum).weight_decay(c.weight_decay));
  double worst = 0.0;
  for (int round = 0; round < 8; ++round) {
    const torch::Tensor delta = 0.5 * (ours - target) + 0.1 * torch::randn({n}, torch::kFloat64);
    fedavgm->step(ours, delta);
    theirs.mutable_grad() = delta.clone();
    reference.step();
    worst = std::max(worst, max_abs_diff(ours, theirs.detach()));
  }
  EXPECT_LE(worst, 1e-7);
  EXPECT_GT(max_abs_diff(ours, init), 1e-2);
}

INSTANTIATE_TEST_SUITE_P(ServerOptimizer, FedAvgMMatchesTorchSgd,
                         ::testing::Values(SgdCase{"Default", 1.0, 0.9, 0.0},
                                           SgdCase{"SmallLr", 0.3, 0.5, 0.0},
                                           SgdCase{"WeightDecay", 0.3, 0.9, 0.05}),
                         [](const ::testing::TestParamInfo<SgdCase>& info) {
                           return info.param.label;
                         });

// --- The scalar reference (spec §2, test 3) -----------------------------------------------------

struct ScalarCase {
  std::string label;
  std::string name;
  double lr, beta1;
  double after_first, after_second;
};

void PrintTo(const ScalarCase& c, std::ostream* os) { *os << c.label; }

class ServerScalarReference : public ::testing::TestWithParam<ScalarCase> {};

// theta_0 = 1, Delta_bar = 0.5 then -0.2, beta = (0.9, 0.99) (FedAvgM: beta 0.9), tau = 1e-3,
// v_0 = 1e-6, no bias correction, fp64.
TEST_P(ServerScalarReference, Float64) {
  const ScalarCase& c = GetParam();
  ServerOptimizerOptions o = options_for(c.name);
  o.lr = c.lr;
  o.momentum = 0.9;
  o.beta1 = c.beta1;
  o.beta2 = 0.99;
  o.tau = 1e-3;
  o.v_init = 1e-6;
  o.bias_correction = false;
  torch::Tensor theta = torch::ones({1}, torch::kFloat64);
  auto opt = make_server_optimizer(o, theta);
  opt->step(theta, torch::full({1}, 0.5, torch::kFloat64));
  EXPECT_NEAR(theta.item<double>(), c.after_first, 1e-7);
  opt->step(theta, torch::full({1}, -0.2, torch::kFloat64));
  EXPECT_NEAR(theta.item<double>(), c.after_second, 1e-7);
}

INSTANTIATE_TEST_SUITE_P(
    ServerOptimizer, ServerScalarReference,
    ::testing::Values(ScalarCase{"FedAdam", "fedadam", 0.1, 0.9, 0.9019798, 0.8562159},
                      ScalarCase{"FedYogi", "fedyogi", 0.1, 0.9, 0.9019800, 0.8564102},
                      ScalarCase{"FedAdagrad", "fedadagrad", 0.1, 0.0, 0.9001998, 0.9372700},
                      ScalarCase{"FedAvgM", "fedavgm", 1.0, 0.9, 0.5, 0.25}),
    [](const ::testing::TestParamInfo<ScalarCase>& info) { return info.param.label; });

// --- Bias-corrected FedAdam against torch::optim::Adam (spec §2, test 4) ------------------------

struct AdamCase {
  std::string label;
  double weight_decay;
};

void PrintTo(const AdamCase& c, std::ostream* os) { *os << c.label; }

class BiasCorrectedFedAdamMatchesTorchAdam : public ::testing::TestWithParam<AdamCase> {};

// 5 rounds, Psi = 10, v_0 = 0, Delta_bar fed to torch::optim::Adam(lr eta, betas, eps tau) as the
// gradient; returns the largest difference.
double run_against_adam(const AdamCase& c, torch::Dtype dtype) {
  torch::manual_seed(4);
  const int64_t n = 10;
  const torch::Tensor init = torch::randn({n}, dtype);
  const torch::Tensor target = torch::randn({n}, dtype);
  torch::Tensor ours = init.clone();
  torch::Tensor theirs = init.clone().requires_grad_(true);
  ServerOptimizerOptions o = options_for("fedadam");
  o.lr = 0.05;
  o.beta1 = 0.9;
  o.beta2 = 0.99;
  o.tau = 1e-3;
  o.v_init = 0.0;
  o.bias_correction = true;
  o.weight_decay = c.weight_decay;
  auto fedadam = make_server_optimizer(o, init);
  torch::optim::Adam reference({theirs}, torch::optim::AdamOptions(0.05)
                                             .betas(std::make_tuple(0.9, 0.99))
                                             .eps(1e-3)
                                             .weight_decay(c.weight_decay));
  double worst = 0.0;
  for (int round = 0; round < 5; ++round) {
    const torch::Tensor delta = (ours - target) + 0.1 * torch::randn({n}, dtype);
    fedadam->step(ours, delta);
    theirs.mutable_grad() = delta.clone();
    reference.step();
    worst = std::max(worst, max_abs_diff(ours, theirs.detach()));
  }
  EXPECT_GT(max_abs_diff(ours, init), 1e-2);
  return worst;
}

TEST_P(BiasCorrectedFedAdamMatchesTorchAdam, Float32) {
  EXPECT_LE(run_against_adam(GetParam(), torch::kFloat32), 1e-6);
}

TEST_P(BiasCorrectedFedAdamMatchesTorchAdam, Float64) {
  EXPECT_LE(run_against_adam(GetParam(), torch::kFloat64), 1e-12);
}

INSTANTIATE_TEST_SUITE_P(ServerOptimizer, BiasCorrectedFedAdamMatchesTorchAdam,
                         ::testing::Values(AdamCase{"NoDecay", 0.0}, AdamCase{"WeightDecay", 0.1}),
                         [](const ::testing::TestParamInfo<AdamCase>& info) {
                           return info.param.label;
                         });

// Without bias correction (and with v_0 = tau^2) FedAdam is not torch's Adam: the comparison
// above can tell the two forms apart.
TEST(ServerOptimizerTest, BiasCorrectionChangesTheStep) {
  torch::manual_seed(5);
  const torch::Tensor init = torch::randn({10}, torch::kFloat64);
  const torch::Tensor delta = torch::randn({10}, torch::kFloat64);
  ServerOptimizerOptions o = options_for("fedadam");
  torch::Tensor plain = init.clone(), corrected = init.clone();
  auto a = make_server_optimizer(o, init);
  o.bias_correction = true;
  auto b = make_server_optimizer(o, init);
  a->step(plain, delta);
  b->step(corrected, delta);
  EXPECT_GT(max_abs_diff(plain, corrected), 1e-4);
}

// --- The post_opt mask ---------------------------------------------------------------------------

class PostOptMask : public ::testing::TestWithParam<std::string> {};

ServerOptimizerOptions mask_options(const std::string& name) {
  ServerOptimizerOptions o = options_for(name);
  o.lr = 0.3;
  return o;
}

TEST_P(PostOptMask, AllOnesEqualsNoMask) {
  torch::manual_seed(6);
  const int64_t n = 16;
  const torch::Tensor init = torch::randn({n}, torch::kFloat64);
  torch::Tensor plain = init.clone(), masked = init.clone();
  auto a = make_server_optimizer(mask_options(GetParam()), init);
  auto b = make_server_optimizer(mask_options(GetParam()), init);
  const torch::Tensor ones = torch::ones({n}, torch::kFloat64);
  for (int round = 0; round < 4; ++round) {
    const torch::Tensor delta = torch::randn({n}, torch::kFloat64);
    a->step(plain, delta);
    b->step(masked, delta, ones);
  }
  EXPECT_LE(max_abs_diff(plain, masked), 1e-12);
  EXPECT_GT(max_abs_diff(plain, init), 1e-2);
}

// Mask 0 on the first quarter (theta stays), 0.5 on the second (half of every step), 1 on the
// rest (as unmasked); the state (u, or m and v) is the unmasked run's: the moments see Delta_bar.
TEST_P(PostOptMask, ScalesTheStepButNotTheMoments) {
  torch::manual_seed(7);
  const int64_t n = 16;
  const torch::Tensor init = torch::randn({n}, torch::kFloat64);
  torch::Tensor plain = init.clone(), masked = init.clone();
  auto a = make_server_optimizer(mask_options(GetParam()), init);
  auto b = make_server_optimizer(mask_options(GetParam()), init);
  torch::Tensor mask = torch::ones({n}, torch::kFloat64);
  mask.slice(0, 0, 4).fill_(0.0);
  mask.slice(0, 4, 8).fill_(0.5);
  for (int round = 0; round < 4; ++round) {
    const torch::Tensor delta = torch::randn({n}, torch::kFloat64);
    a->step(plain, delta);
    b->step(masked, delta, mask);
  }
  EXPECT_TRUE(torch::equal(masked.slice(0, 0, 4), init.slice(0, 0, 4)));
  const torch::Tensor moved = plain - init;
  EXPECT_LE(max_abs_diff(masked.slice(0, 4, 8) - init.slice(0, 4, 8), 0.5 * moved.slice(0, 4, 8)),
            1e-12);
  EXPECT_LE(max_abs_diff(masked.slice(0, 8, n), plain.slice(0, 8, n)), 1e-12);
  EXPECT_GT(moved.slice(0, 0, 8).abs().min().item<double>(), 1e-6);

  const auto sa = a->state(), sb = b->state();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].first, sb[i].first);
    EXPECT_TRUE(torch::equal(sa[i].second, sb[i].second)) << sa[i].first;
    if (sa[i].first == "t") continue;
    // The moments moved where the mask is 0.
    EXPECT_GT(sb[i].second.slice(0, 0, 4).abs().min().item<double>(), 1e-8) << sa[i].first;
  }
}

INSTANTIATE_TEST_SUITE_P(ServerOptimizer, PostOptMask,
                         ::testing::Values("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// --- State ---------------------------------------------------------------------------------------

TEST(ServerOptimizerTest, StateNamesAndSizes) {
  const torch::Tensor like = torch::zeros({12}, torch::kFloat32);
  auto fedavg = make_server_optimizer(options_for("fedavg"), like);
  EXPECT_TRUE(fedavg->state().empty());
  EXPECT_EQ(fedavg->state_numel(), 0);

  auto fedavgm = make_server_optimizer(options_for("fedavgm"), like);
  ASSERT_EQ(fedavgm->state().size(), 1u);
  EXPECT_EQ(fedavgm->state()[0].first, "u");
  EXPECT_TRUE(torch::equal(fedavgm->state()[0].second, torch::zeros({12})));
  EXPECT_EQ(fedavgm->state_numel(), 12);

  for (const char* name : {"fedadam", "fedyogi", "fedadagrad"}) {
    ServerOptimizerOptions o = options_for(name);
    o.v_init = 0.25;
    auto opt = make_server_optimizer(o, like);
    const auto state = opt->state();
    ASSERT_EQ(state.size(), 3u) << name;
    EXPECT_EQ(state[0].first, "m");
    EXPECT_EQ(state[1].first, "v");
    EXPECT_EQ(state[2].first, "t");
    EXPECT_TRUE(torch::equal(state[0].second, torch::zeros({12})));
    EXPECT_TRUE(torch::equal(state[1].second, torch::full({12}, 0.25)));
    EXPECT_EQ(state[1].second.scalar_type(), torch::kFloat32);
    EXPECT_EQ(state[2].second.dim(), 0);
    EXPECT_EQ(state[2].second.scalar_type(), torch::kInt64);
    EXPECT_EQ(state[2].second.item<int64_t>(), 0);
    EXPECT_EQ(opt->state_numel(), 24);
    torch::Tensor theta = torch::zeros({12});
    opt->step(theta, torch::ones({12}));
    opt->step(theta, torch::ones({12}));
    EXPECT_EQ(opt->state()[2].second.item<int64_t>(), 2) << name;
  }
}

// Copying a run's state into a fresh optimizer resumes it exactly (the step count included:
// bias correction reads it).
TEST(ServerOptimizerTest, CopiedStateResumesTheRun) {
  torch::manual_seed(8);
  const int64_t n = 9;
  ServerOptimizerOptions o = options_for("fedadam");
  o.bias_correction = true;
  torch::Tensor theta = torch::randn({n}, torch::kFloat64);
  auto first = make_server_optimizer(o, theta);
  for (int round = 0; round < 3; ++round) first->step(theta, torch::randn({n}, torch::kFloat64));
  auto resumed = make_server_optimizer(o, theta);
  const auto from = first->state();
  auto to = resumed->state();
  for (size_t i = 0; i < from.size(); ++i) to[i].second.copy_(from[i].second);
  torch::Tensor other = theta.clone();
  for (int round = 0; round < 2; ++round) {
    const torch::Tensor delta = torch::randn({n}, torch::kFloat64);
    first->step(theta, delta);
    resumed->step(other, delta);
  }
  EXPECT_TRUE(torch::equal(theta, other));
}

TEST(ServerOptimizerTest, RejectsMismatchedArguments) {
  auto opt = make_server_optimizer(options_for("fedadam"), torch::zeros({4}));
  torch::Tensor theta = torch::zeros({4});
  EXPECT_THROW(opt->step(theta, torch::zeros({5})), std::invalid_argument);
  EXPECT_THROW(opt->step(theta, torch::zeros({4}, torch::kFloat64)), std::invalid_argument);
  EXPECT_THROW(opt->step(theta, torch::zeros({4}), torch::ones({3})), std::invalid_argument);
  EXPECT_NO_THROW(opt->step(theta, torch::zeros({4}), torch::ones({4})));
}

TEST(ServerOptimizerTest, UnknownNameIsAConfigError) {
  EXPECT_THROW(make_server_optimizer(options_for("fedsgd"), torch::zeros({4})), ConfigError);
}

// --- Options from a config table -----------------------------------------------------------------

ServerOptimizerOptions read_options(const std::string& text,
                                    std::vector<std::string>* keys = nullptr) {
  toml::table table = toml::parse(text);
  SectionReader r(&table, "algorithm", "test.toml");
  if (keys) r.record_keys(keys);
  ServerOptimizerOptions o = read_server_optimizer_options(r);
  r.finish();
  return o;
}

TEST(ServerOptimizerOptionsTest, DefaultsAreFedAvg) {
  const ServerOptimizerOptions o = read_options("");
  EXPECT_EQ(o.name, "fedavg");
  EXPECT_EQ(o.lr, 1.0);
  EXPECT_EQ(o.momentum, 0.9);
  EXPECT_EQ(o.beta1, 0.9);
  EXPECT_EQ(o.beta2, 0.99);
  EXPECT_EQ(o.tau, 1e-3);
  EXPECT_DOUBLE_EQ(o.v_init, 1e-6);
  EXPECT_FALSE(o.bias_correction);
  EXPECT_EQ(o.weight_decay, 0.0);
}

TEST(ServerOptimizerOptionsTest, EachNameHasItsDefaults) {
  EXPECT_EQ(read_options("server_optimizer = \"fedavgm\"").lr, 1.0);
  EXPECT_EQ(read_options("server_optimizer = \"fedavgm\"").momentum, 0.9);
  EXPECT_EQ(read_options("server_optimizer = \"fedadam\"").lr, 0.01);
  EXPECT_EQ(read_options("server_optimizer = \"fedadam\"").beta1, 0.9);
  EXPECT_EQ(read_options("server_optimizer = \"fedyogi\"").lr, 0.01);
  EXPECT_EQ(read_options("server_optimizer = \"fedyogi\"").beta2, 0.99);
  const ServerOptimizerOptions adagrad = read_options("server_optimizer = \"fedadagrad\"");
  EXPECT_EQ(adagrad.lr, 0.1);
  EXPECT_EQ(adagrad.beta1, 0.0);
  EXPECT_EQ(adagrad.tau, 1e-3);
}

TEST(ServerOptimizerOptionsTest, VInitDefaultsToTauSquared) {
  EXPECT_DOUBLE_EQ(read_options("server_tau = 0.01").v_init, 1e-4);
  EXPECT_EQ(read_options("server_tau = 0.01\nserver_v_init = 0.0").v_init, 0.0);
}

TEST(ServerOptimizerOptionsTest, ReadsEveryKeyWhateverTheName) {
  std::vector<std::string> keys;
  const ServerOptimizerOptions o = read_options(
      "server_optimizer = \"fedavg\"\nserver_lr = 0.5\nserver_momentum = 0.8\n"
      "server_beta1 = 0.7\nserver_beta2 = 0.95\nserver_tau = 0.02\nserver_v_init = 0.3\n"
      "server_bias_correction = true\nserver_wd = 1e-5\n",
      &keys);
  EXPECT_EQ(o.name, "fedavg");
  EXPECT_EQ(o.lr, 0.5);
  EXPECT_EQ(o.momentum, 0.8);
  EXPECT_EQ(o.beta1, 0.7);
  EXPECT_EQ(o.beta2, 0.95);
  EXPECT_EQ(o.tau, 0.02);
  EXPECT_EQ(o.v_init, 0.3);
  EXPECT_TRUE(o.bias_correction);
  EXPECT_EQ(o.weight_decay, 1e-5);
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys,
            (std::vector<std::string>{"server_beta1", "server_beta2", "server_bias_correction",
                                      "server_lr", "server_momentum", "server_optimizer",
                                      "server_tau", "server_v_init", "server_wd"}));
}

TEST(ServerOptimizerOptionsTest, RejectsValuesOutOfRange) {
  for (const char* text :
       {"server_optimizer = \"fedsgd\"", "server_lr = 0", "server_lr = -1.0",
        "server_momentum = 1.0", "server_momentum = -0.1", "server_beta1 = 1.0", "server_beta2 = 1",
        "server_tau = 0.0", "server_v_init = -1e-9", "server_wd = -0.1"}) {
    EXPECT_THROW(read_options(text), ConfigError) << text;
  }
  EXPECT_NO_THROW(read_options("server_momentum = 0.0\nserver_beta2 = 0.999\nserver_wd = 0.0"));
}

TEST(ServerOptimizerOptionsTest, OutOfRangeMessageNamesTheKey) {
  try {
    read_options("server_beta1 = 1.0");
    FAIL() << "no ConfigError";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("algorithm.server_beta1"), std::string::npos) << what;
    EXPECT_NE(what.find("test.toml"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace desync
