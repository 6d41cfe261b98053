// Forward gradient on in-process ranks: the spec's tests (§2 of
// ../shared/algorithms/local-learning-and-forward-gradient.md) and what makes the method what it
// is: a projection onto the guess, pulled back through one block whose input is detached.
#include "desync/algorithms/local/forward_gradient.h"

#include <gtest/gtest.h>

#include "algorithms/fake_run.h"
#include "desync/algorithms/local/jvp.h"
#include "desync/core/error.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::max_diff;
using testing::RankState;
using testing::run_on_fake_world;
using testing::tiny_config;

// Four stages (fc1, fc2, fc3, head) on 12 features; SGD of lr 0.5 without momentum, in float64.
std::vector<std::string> mlp4(std::vector<std::string> more = {}) {
  std::vector<std::string> o = {"model.hidden=[32, 16, 16]",  "model.dtype=\"float64\"",
                                "optimizer.lr=0.5",           "optimizer.momentum=0.0",
                                "optimizer.weight_decay=0.0", "data.batch_size=8"};
  o.insert(o.end(), more.begin(), more.end());
  return o;
}
// The same depth as a BatchNorm CNN on 1x8x8 images (block1, block2, block3, head).
std::vector<std::string> cnn4(std::vector<std::string> more = {}) {
  std::vector<std::string> o =
      mlp4({"model.name=\"cnn\"", "model.channels=[3, 4, 4]", "data.synthetic_shape=[1, 8, 8]"});
  o.insert(o.end(), more.begin(), more.end());
  return o;
}
std::vector<std::string> fg(std::vector<std::string> base, const std::string& target,
                            const std::string& guess, std::vector<std::string> more = {}) {
  base.push_back("algorithm.name=\"forward_gradient\"");
  base.push_back("algorithm.blocks=3");
  base.push_back("algorithm.aux=\"mlp\"");
  base.push_back("algorithm.aux_hidden=16");
  base.push_back("algorithm.target=\"" + target + "\"");
  base.push_back("algorithm.guess=\"" + guess + "\"");
  base.insert(base.end(), more.begin(), more.end());
  return base;
}

ForwardGradient& fg_of(RankState& s) { return dynamic_cast<ForwardGradient&>(*s.algorithm); }

// Spec test 1: with the guess equal to the target, the estimate is the target, and training is
// backprop's, whatever computes the inner product and in either space, with or without
// BatchNorm downstream.
TEST(ForwardGradient, GuessEqualToTargetTrainsAsBackprop) {
  for (const bool bn : {false, true})
    for (const char* jvp : {"simulated", "forward_ad", "double_vjp"})
      for (const char* space : {"activation", "weight"}) {
        const std::vector<std::string> base = bn ? cnn4() : mlp4();
        std::vector<std::string> single = base;
        single.push_back("algorithm.name=\"single\"");
        const Config reference_cfg = tiny_config(single);
        const Config cfg = tiny_config(fg(base, "global", "global",
                                          {std::string("algorithm.jvp=\"") + jvp + "\"",
                                           std::string("algorithm.space=\"") + space + "\""}));
        DatasetSplits data = load_dataset(cfg.data, 0);
        auto reference = run_on_fake_world(reference_cfg, 1, 3, data);
        auto ranks = run_on_fake_world(cfg, 1, 3, data);
        EXPECT_LT(max_diff(flat_params(ranks[0].model), flat_params(reference[0].model)), 1e-6)
            << (bn ? "cnn " : "mlp ") << jvp << " " << space;
        EXPECT_NEAR(ranks[0].losses.back(), reference[0].losses.back(), 1e-8);
      }
}

// A local guess is not the target: the same run moves elsewhere (the test above can fail).
TEST(ForwardGradient, LocalGuessIsNotBackprop) {
  const Config reference_cfg = tiny_config(mlp4({"algorithm.name=\"single\""}));
  const Config cfg = tiny_config(fg(mlp4(), "global", "local"));
  DatasetSplits data = load_dataset(cfg.data, 0);
  auto reference = run_on_fake_world(reference_cfg, 1, 3, data);
  auto ranks = run_on_fake_world(cfg, 1, 3, data);
  EXPECT_GT(max_diff(flat_params(ranks[0].model), flat_params(reference[0].model)), 1e-4);
}

// Spec test 3 (and its batch-level twin): the scalars a forward-mode JVP computes give the same
// training as the exact inner products from backprop, per example where nothing downstream
// couples the examples (the MLP), per batch where a train-mode BatchNorm does (the CNN).
TEST(ForwardGradient, RealJvpTrainsAsTheSimulatedEstimator) {
  for (const bool bn : {false, true})
    for (const char* guess : {"local", "random", "ntk"})
      for (const char* space : {"activation", "weight"}) {
        auto cfg_for = [&](const char* jvp) {
          std::vector<std::string> more = {std::string("algorithm.jvp=\"") + jvp + "\"",
                                           std::string("algorithm.space=\"") + space + "\""};
          // The simulated estimator is per example unless told; the real one per batch under BN.
          if (bn) more.push_back("algorithm.scalars=\"batch\"");
          return tiny_config(fg(bn ? cnn4() : mlp4(), "global", guess, more));
        };
        DatasetSplits data = load_dataset(cfg_for("simulated").data, 0);
        auto simulated = run_on_fake_world(cfg_for("simulated"), 1, 2, data);
        for (const char* jvp : {"forward_ad", "double_vjp"}) {
          auto real = run_on_fake_world(cfg_for(jvp), 1, 2, data);
          EXPECT_LT(max_diff(flat_params(real[0].model), flat_params(simulated[0].model)), 1e-9)
              << (bn ? "cnn " : "mlp ") << guess << " " << space << " " << jvp;
          // The JVP passes ran the blocks again: BatchNorm statistics still moved once a batch.
          for (auto& [name, b] : real[0].model->named_bufs())
            for (auto& [other, c] : simulated[0].model->named_bufs())
              if (name == other)
                EXPECT_LT(max_diff(b.to(torch::kFloat64), c.to(torch::kFloat64)), 1e-9)
                    << name << " " << jvp;
        }
      }
}

// Under a train-mode BatchNorm, `auto` scalars are per batch for a real JVP: per example they
// would not be the inner products backprop gives.
TEST(ForwardGradient, AutoScalarsArePerBatchUnderBatchNorm) {
  auto run = [](const char* jvp, const char* scalars) {
    const Config cfg = tiny_config(fg(cnn4(), "global", "local",
                                      {std::string("algorithm.jvp=\"") + jvp + "\"",
                                       std::string("algorithm.scalars=\"") + scalars + "\""}));
    DatasetSplits data = load_dataset(cfg.data, 0);
    auto ranks = run_on_fake_world(cfg, 1, 2, data);
    return flat_params(ranks[0].model);
  };
  EXPECT_LT(max_diff(run("forward_ad", "auto"), run("simulated", "batch")), 1e-9);
  EXPECT_GT(max_diff(run("forward_ad", "sample"), run("simulated", "sample")), 1e-6);
}

// One micro-batch through a fresh run's algorithm, scale 1, gradients zeroed first; returns
// every block's parameter gradients.
std::vector<std::vector<torch::Tensor>> one_estimate(RankState& s, const MicroBatch& mb,
                                                     uint64_t draw) {
  ForwardGradient& f = fg_of(s);
  for (auto& p : s.model->parameters()) p.mutable_grad().zero_();
  for (size_t k = 0; k + 1 < f.block_stages().size(); ++k)
    for (auto& p : f.head(static_cast<int64_t>(k))->parameters()) p.mutable_grad().zero_();
  f.accumulate(mb.inputs, mb.targets, 1.0, draw);
  std::vector<std::vector<torch::Tensor>> out;
  for (size_t k = 0; k < f.block_stages().size(); ++k) {
    out.emplace_back();
    for (const torch::Tensor& p : f.block_parameters(static_cast<int64_t>(k)))
      out.back().push_back(p.grad().clone());
  }
  return out;
}

MicroBatch first_batch(const Config& cfg, const DatasetSplits& data) {
  MicroBatchSource source(data.train, cfg.data.batch_size, 0, 1,
                          static_cast<uint64_t>(cfg.run.seed),
                          TransformOptions{cfg.data.normalize, cfg.data.augment});
  MicroBatch mb = source.next();
  mb.inputs = mb.inputs.to(torch::kFloat64);
  return mb;
}

// Spec test 5, recomputed here from end-to-end backprop: block k's parameters receive
// VJP_k(g^_k) with g^_k the per-example projection of dL/dh_k onto the local head's gradient;
// nothing from the blocks above reaches them; the last block gets its true gradient and each
// head the gradient of its own loss.
TEST(ForwardGradient, EachBlockReceivesThePullBackOfItsOwnEstimate) {
  for (const char* jvp : {"simulated", "forward_ad"}) {
    const Config cfg =
        tiny_config(fg(mlp4(), "global", "local",
                       {std::string("algorithm.jvp=\"") + jvp + "\"", "algorithm.eps=0.0"}));
    DatasetSplits data = load_dataset(cfg.data, 0);
    auto ranks = run_on_fake_world(cfg, 1, 0, data);
    ForwardGradient& f = fg_of(ranks[0]);
    const MicroBatch mb = first_batch(cfg, data);
    const auto got = one_estimate(ranks[0], mb, 7);

    StagedModel model = ranks[0].model;
    const int64_t K = 3;
    std::vector<torch::Tensor> h;  // end to end: no detaching
    torch::Tensor a = mb.inputs;
    for (int64_t k = 0; k < K; ++k) {
      a = model->forward_range(a, f.block_stages()[k].begin, f.block_stages()[k].end);
      h.push_back(a);
    }
    const torch::Tensor loss = torch::nn::functional::cross_entropy(h[K - 1], mb.targets);
    std::vector<torch::Tensor> t = torch::autograd::grad({loss}, {h[0], h[1]}, {}, true);
    const std::vector<torch::Tensor> last =
        torch::autograd::grad({loss}, f.block_parameters(K - 1), {}, true);
    for (size_t i = 0; i < last.size(); ++i)
      EXPECT_LT(max_diff(got[K - 1][i], last[i]), 1e-10) << jvp << " last block";
    for (int64_t k = 0; k + 1 < K; ++k) {
      // A separate copy of block k, its input detached, and the head's gradient as the guess.
      torch::Tensor in = k == 0 ? mb.inputs : h[k - 1].detach();
      torch::Tensor hk =
          model->forward_range(in, f.block_stages()[k].begin, f.block_stages()[k].end);
      torch::Tensor z = hk.detach().requires_grad_(true);
      torch::Tensor l = torch::nn::functional::cross_entropy(f.head(k)->forward(z), mb.targets);
      std::vector<torch::Tensor> wrt = f.head(k)->parameters();
      wrt.push_back(z);
      std::vector<torch::Tensor> head_grads = torch::autograd::grad({l}, wrt);
      torch::Tensor u = head_grads.back();
      for (size_t i = 0; i + 1 < wrt.size(); ++i)  // the head learns its own loss
        EXPECT_LT(max_diff(wrt[i].grad(), head_grads[i]), 1e-10) << jvp << " head " << k;
      torch::Tensor coef = (t[k] * u).sum(1) / (u * u).sum(1);
      torch::Tensor estimate = coef.unsqueeze(1) * u;
      std::vector<torch::Tensor> want =
          torch::autograd::grad({hk}, f.block_parameters(k), {estimate});
      for (size_t i = 0; i < want.size(); ++i)
        EXPECT_LT(max_diff(got[k][i], want[i]), 1e-10) << jvp << " block " << k << " tensor " << i;
    }
  }
}

// Spec test 2: with a Gaussian guess, the classic estimate <t, v> v is unbiased. Its mean over n
// draws (pulled back through block 1, which is linear in it) lies within `bound` standard errors
// of the true gradient in every coordinate; the reference's normalised projection
// (<t, v> / |v|^2) v, whose mean is t / dim, does not. (Over block 1's 78 coordinates, 3 standard
// errors are exceeded somewhere about one time in five by chance alone; 4 is the bound that
// holds for all of them at 1%.)
void expect_random_guess_unbiased(int draws_classic, int draws_normalized, double bound) {
  for (const char* projection : {"classic", "normalized"}) {
    const Config cfg = tiny_config(fg(
        {"model.hidden=[6, 5]", "model.dtype=\"float64\"", "data.batch_size=4"}, "global", "random",
        {"algorithm.blocks=2", "algorithm.jvp=\"simulated\"",
         std::string("algorithm.random_projection=\"") + projection + "\""}));
    DatasetSplits data = load_dataset(cfg.data, 0);
    auto ranks = run_on_fake_world(cfg, 1, 0, data);
    ForwardGradient& f = fg_of(ranks[0]);
    const MicroBatch mb = first_batch(cfg, data);
    const torch::Tensor loss =
        torch::nn::functional::cross_entropy(ranks[0].model->forward(mb.inputs), mb.targets);
    std::vector<torch::Tensor> truth = torch::autograd::grad({loss}, f.block_parameters(0));
    torch::Tensor t = torch::cat({truth[0].reshape({-1}), truth[1].reshape({-1})});

    const bool classic = std::string(projection) == "classic";
    const int n = classic ? draws_classic : draws_normalized;
    torch::Tensor sum = torch::zeros_like(t), sq = torch::zeros_like(t);
    for (int i = 0; i < n; ++i) {
      auto g = one_estimate(ranks[0], mb, static_cast<uint64_t>(i));
      torch::Tensor e = torch::cat({g[0][0].reshape({-1}), g[0][1].reshape({-1})});
      sum += e;
      sq += e * e;
    }
    torch::Tensor mean = sum / n, se = ((sq / n - mean * mean) / n).sqrt();
    const double worst = ((mean - t).abs() / (bound * se + 1e-12)).max().item<double>();
    if (classic)
      EXPECT_LT(worst, 1.0) << "mean off the true gradient by more than " << bound
                            << " standard errors";
    else
      EXPECT_GT(worst, 1.0) << "the normalised projection should be biased (mean t / dim)";
  }
}

TEST(ForwardGradient, RandomGaussianGuessIsUnbiased) {
  expect_random_guess_unbiased(1000, 600, 4.0);
}

// The spec's figures: 10^4 draws, 3 standard errors.
TEST(ForwardGradient, SlowRandomGaussianGuessIsUnbiasedOver10kDraws) {
  expect_random_guess_unbiased(10000, 2000, 3.0);
}

// Spec test 4: a forward-mode JVP, the double-VJP identity and central finite differences agree
// (relative 1e-3 in float32, 1e-7 in float64), along an activation and along the parameters, for
// a block with conv2d, train-mode BatchNorm, ReLU, pooling and linear, to per-example losses.
// The finite differences are taken in float64 (in float32 their own rounding is ~1e-3).
TEST(ForwardGradient, JvpEqualsDoubleVjpAndFiniteDifferences) {
  namespace nn = torch::nn;
  torch::manual_seed(3);
  nn::Sequential net(nn::Conv2d(nn::Conv2dOptions(2, 3, 3).padding(1)), nn::BatchNorm2d(3),
                     nn::ReLU(), nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(2)),
                     nn::Flatten(), nn::Linear(12, 4));
  net->to(torch::kFloat64);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const torch::Tensor a = torch::randn({5, 2, 6, 6}, f64), u = torch::randn({5, 2, 6, 6}, f64);
  const torch::Tensor y = torch::randint(0, 4, {5});
  std::vector<torch::Tensor> params = net->parameters(), tangents;
  for (const torch::Tensor& p : params) tangents.push_back(torch::randn_like(p));
  auto f = [&](const torch::Tensor& x) {
    return nn::functional::cross_entropy(
        net->forward(x), y, nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  };
  auto g = [&] { return f(a.to(params[0].scalar_type())); };

  torch::Tensor fd, fd_w;
  {
    torch::NoGradGuard no_grad;
    const double d = 1e-5;
    fd = (f(a + d * u) - f(a - d * u)) / (2 * d);
    auto shift = [&](double by) {
      for (size_t i = 0; i < params.size(); ++i) params[i].add_(tangents[i], by);
    };
    shift(d);
    torch::Tensor plus = g();
    shift(-2 * d);
    fd_w = (plus - g()) / (2 * d);
    shift(d);
  }
  auto relative = [](const torch::Tensor& x, const torch::Tensor& ref) {
    return ((x.to(torch::kFloat64) - ref).abs().max() / ref.abs().max()).item<double>();
  };
  for (const auto dtype : {torch::kFloat64, torch::kFloat32}) {
    net->to(dtype);
    params = net->parameters();
    std::vector<torch::Tensor> t;
    for (const torch::Tensor& x : tangents) t.push_back(x.to(dtype));
    const torch::Tensor x = a.to(dtype), v = u.to(dtype);
    const double tol = dtype == torch::kFloat64 ? 1e-7 : 1e-3;
    const char* name = dtype == torch::kFloat64 ? "float64" : "float32";
    EXPECT_LT(relative(jvp_forward_ad(f, x, v), fd), tol) << "forward_ad, activation, " << name;
    EXPECT_LT(relative(jvp_double_vjp(f, x, v), fd), tol) << "double_vjp, activation, " << name;
    EXPECT_LT(relative(jvp_forward_ad(g, params, t), fd_w), tol) << "forward_ad, weights, " << name;
    EXPECT_LT(relative(jvp_double_vjp(g, params, t), fd_w), tol) << "double_vjp, weights, " << name;
    // Releasing the level took the tangents off the parameters.
    for (const torch::Tensor& p : params) EXPECT_FALSE(p._fw_grad(0).defined());
  }
}

// Data parallel: two ranks with a micro-batch each train as one rank accumulating both (forward
// mode AD on both at once: the ranks are threads of one process here).
TEST(ForwardGradient, TwoRanksTrainAsOneRankAccumulatingTheirBatches) {
  const Config one = tiny_config(fg(mlp4({"algorithm.accumulation=2"}), "global", "local"));
  const Config two = tiny_config(fg(mlp4(), "global", "local"));
  DatasetSplits data = load_dataset(one.data, 0);
  auto reference = run_on_fake_world(one, 1, 3, data);
  auto ranks = run_on_fake_world(two, 2, 3, data);
  EXPECT_LT(max_diff(flat_params(ranks[0].model), flat_params(reference[0].model)), 1e-10);
  EXPECT_LT(max_diff(flat_params(ranks[1].model), flat_params(reference[0].model)), 1e-10);
}

// The probe: the cosine of a guess equal to the target is 1, of a random guess far below; and it
// leaves the training state (parameters, gradients, BatchNorm statistics) as it found it.
TEST(ForwardGradient, ProbeMeasuresTheCosineAndChangesNothing) {
  for (const char* guess : {"global", "random"}) {
    const Config cfg = tiny_config(fg(cnn4(), "global", guess));
    DatasetSplits data = load_dataset(cfg.data, 0);
    RunParts parts = assemble_run(cfg, data, 0, 1);
    FakeWorld::create(1)->run([&](int64_t, Communicator& comm) {
      Context ctx = make_context(cfg, comm, parts);
      parts.algorithm->setup(ctx);
      for (ctx.step = 0; ctx.step < 2; ++ctx.step) parts.algorithm->step(ctx);
      std::vector<torch::Tensor> before;
      for (auto& [name, b] : parts.model->named_bufs()) before.push_back(b.clone());
      const torch::Tensor params = flat_params(parts.model);

      auto figures = dynamic_cast<ForwardGradient&>(*parts.algorithm).probe(ctx, true);
      ASSERT_GE(figures.size(), 3u);
      EXPECT_EQ(figures[0].first, "grad_cosine");
      if (std::string(guess) == "global")
        EXPECT_NEAR(figures[0].second, 1.0, 1e-9);
      else
        EXPECT_LT(std::abs(figures[0].second), 0.9);
      EXPECT_EQ(max_diff(flat_params(parts.model), params), 0.0);
      size_t i = 0;
      for (auto& [name, b] : parts.model->named_bufs()) EXPECT_TRUE(b.equal(before[i++])) << name;
    });
  }
}

TEST(ForwardGradient, RejectsMoreBlocksThanStages) {
  const Config cfg = tiny_config(fg(mlp4(), "global", "local", {"algorithm.blocks=5"}));
  DatasetSplits data = load_dataset(cfg.data, 0);
  EXPECT_THROW(run_on_fake_world(cfg, 1, 1, data), ConfigError);
}

}  // namespace
}  // namespace desync
