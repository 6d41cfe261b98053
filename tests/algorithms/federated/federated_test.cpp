// Federated rounds on in-process ranks (spec federated.md §1-§4 "How to test it").
#include "desync/algorithms/federated/federated.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "algorithms/fake_run.h"
#include "desync/algorithms/common.h"
#include "desync/algorithms/federated/gma.h"
#include "desync/algorithms/federated/last_layer.h"
#include "desync/core/error.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::max_diff;
using testing::run_on_fake_world;

// A small federated job on the synthetic task: 4 classes, 12 features, an MLP, fp64.
Config fed_config(const std::string& algorithm, std::vector<std::string> extra) {
  std::vector<std::string> o = {"data.dataset=\"synthetic\"",
                                "data.synthetic_train=480",
                                "data.synthetic_test=100",
                                "data.synthetic_shape=[12]",
                                "data.synthetic_classes=4",
                                "data.batch_size=16",
                                "model.name=\"mlp\"",
                                "model.hidden=[16]",
                                "model.dtype=\"float64\"",
                                "optimizer.lr=0.1",
                                "algorithm.name=\"" + algorithm + "\"",
                                "algorithm.clients=8",
                                "algorithm.heldout_clients=2",
                                "algorithm.clients_per_round=4",
                                "algorithm.alpha=1.0",
                                "algorithm.min_client_size=5",
                                "run.steps=3"};
  o.insert(o.end(), extra.begin(), extra.end());
  return parse_config("", "test.toml", o);
}

DatasetSplits data_of(const Config& cfg) {
  return load_dataset(cfg.data, static_cast<uint64_t>(cfg.run.seed));
}

Federated& fed(testing::RankState& s) { return dynamic_cast<Federated&>(*s.algorithm); }

// The model as assemble_run builds it (the same seeded initialisation as every rank's).
StagedModel initial_model(const Config& cfg, const DatasetSplits& data) {
  return assemble_run(cfg, data, 0, 1).model;
}

// theta_0 - lr * (mean-loss gradient of `model` over examples [0, n)).
torch::Tensor sgd_step(StagedModel model, const Dataset& d, int64_t n, double lr) {
  for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
  MicroBatch mb = take_range(d, 0, n, true);
  loss_of(model->forward(mb.inputs), mb.targets).backward();
  std::vector<torch::Tensor> out;
  for (auto& p : model->parameters()) out.push_back((p - lr * p.grad()).detach().reshape(-1));
  return torch::cat(out);
}

// §1 test 1.
TEST(FedAvg, OneClientOneLocalStepIsOneSgdStepOfTheProductLearningRate) {
  const Config cfg =
      fed_config("fedavg", {"data.synthetic_train=32", "data.batch_size=32", "algorithm.clients=1",
                            "algorithm.heldout_clients=0", "algorithm.clients_per_round=1",
                            "algorithm.partition=\"iid\"", "algorithm.local_steps=1",
                            "algorithm.server_lr=0.5", "optimizer.lr=0.2"});
  const DatasetSplits data = data_of(cfg);
  auto ranks = run_on_fake_world(cfg, 1, 1, data);
  const torch::Tensor expected = sgd_step(initial_model(cfg, data), data.train, 32, 0.5 * 0.2);
  EXPECT_LT(max_diff(flat_params(ranks[0].model), expected), 1e-12);
  EXPECT_LT(max_diff(fed(ranks[0]).global(), expected), 1e-12);
}

// §1 test 2, for p_i uniform and p_i = n_i.
TEST(FedAvg, EqualIidClientsWithOneStepEachAreOneLargeBatchSgdStep) {
  for (const char* weighting : {"uniform", "samples"}) {
    SCOPED_TRACE(weighting);
    const Config cfg =
        fed_config("fedavg", {"data.synthetic_train=64", "algorithm.clients=4",
                              "algorithm.heldout_clients=0", "algorithm.clients_per_round=4",
                              "algorithm.partition=\"iid\"", "algorithm.local_steps=1",
                              std::string("algorithm.weighting=\"") + weighting + "\""});
    const DatasetSplits data = data_of(cfg);
    auto ranks = run_on_fake_world(cfg, 2, 1, data);
    const torch::Tensor expected = sgd_step(initial_model(cfg, data), data.train, 64, 0.1);
    EXPECT_LT(max_diff(fed(ranks[0]).global(), expected), 1e-12);
    EXPECT_LT(max_diff(fed(ranks[1]).global(), expected), 1e-12);
  }
}

// BatchNorm statistics take the clients' p-weighted mean (ours): two clients of unequal size,
// one full-batch local step each, against each client's statistics computed apart.
TEST(FedAvg, BatchNormStatisticsAreTheClientsWeightedMean) {
  const Config cfg =
      fed_config("fedavg", {"data.synthetic_train=50", "data.synthetic_shape=[1, 8, 8]",
                            "model.name=\"cnn\"", "model.channels=[2]", "data.batch_size=50",
                            "algorithm.clients=2", "algorithm.heldout_clients=0",
                            "algorithm.clients_per_round=2", "algorithm.partition=\"quantity\"",
                            "algorithm.alpha=1.0", "algorithm.local_steps=1"});
  const DatasetSplits data = data_of(cfg);
  auto ranks = run_on_fake_world(cfg, 1, 1, data);
  const ClientPartition& part = fed(ranks[0]).partition();
  ASSERT_NE(part.size(0), part.size(1));
  std::vector<std::vector<torch::Tensor>> stats;
  for (int64_t client : {0, 1}) {
    StagedModel m = initial_model(cfg, data);
    m->train();
    m->forward(
        take_indices(data.train, torch::tensor(part.indices[client], torch::kLong), true).inputs);
    std::vector<torch::Tensor> bufs;
    for (const auto& [name, b] : m->named_bufs())
      if (b.is_floating_point()) bufs.push_back(b.clone());
    stats.push_back(bufs);
  }
  const double n0 = static_cast<double>(part.size(0)), n1 = static_cast<double>(part.size(1));
  size_t i = 0;
  for (const auto& [name, b] : ranks[0].model->named_bufs()) {
    if (!b.is_floating_point()) continue;
    const torch::Tensor expected = (n0 * stats[0][i] + n1 * stats[1][i]) / (n0 + n1);
    EXPECT_LT(max_diff(b, expected), 1e-12) << name;
    if (name.find("num_batches_tracked") == std::string::npos) {  // 1 on both clients
      EXPECT_GT(max_diff(b, (stats[0][i] + stats[1][i]) / 2), 1e-9) << name << ": weighted";
    }
    ++i;
  }
  EXPECT_GT(i, 0u);
}

// §1 test 3: theta and S_t are the same for any number of processes and any placement.
TEST(FedAvg, RoundsDoNotDependOnTheProcessesOrThePlacement) {
  const Config base = fed_config("fedavg", {"algorithm.local_epochs=2"});
  const DatasetSplits data = data_of(base);
  auto reference = run_on_fake_world(base, 1, 3, data);
  const torch::Tensor theta = fed(reference[0]).global().clone();
  const std::vector<int64_t> sample = fed(reference[0]).last_sample();
  for (int64_t world : {1, 2, 4}) {
    for (const char* placement : {"deal", "lpt", "static"}) {
      SCOPED_TRACE(std::to_string(world) + " ranks, " + placement);
      const Config cfg = fed_config(
          "fedavg",
          {"algorithm.local_epochs=2", std::string("algorithm.placement=\"") + placement + "\""});
      auto ranks = run_on_fake_world(cfg, world, 3, data);
      for (auto& r : ranks) {
        EXPECT_LT(max_diff(fed(r).global(), theta), 1e-10);
        EXPECT_LT(max_diff(flat_params(r.model), theta), 1e-10);
        EXPECT_EQ(fed(r).last_sample(), sample);
      }
    }
  }
  // The rounds did train: theta moved.
  StagedModel init = initial_model(base, data);
  EXPECT_GT(max_diff(theta, flat_params(init)), 1e-3);
}

int64_t psi(testing::RankState& s) { return flat_params(s.model).numel(); }

// §1 test 3: `server` equals `allreduce`; the wire bytes are the table's.
TEST(FedAvg, ServerTransportEqualsAllReduceAndBothSendTheTablesBytes) {
  const int64_t rounds = 3, k = 4, world = 2, b = 8;
  const Config ar = fed_config("fedavg", {});
  const Config sv = fed_config("fedavg", {"algorithm.transport=\"server\""});
  const DatasetSplits data = data_of(ar);
  auto a = run_on_fake_world(ar, world, rounds, data);
  auto s = run_on_fake_world(sv, world, rounds, data);
  for (int64_t r = 0; r < world; ++r)
    EXPECT_LT(max_diff(fed(a[r]).global(), fed(s[r]).global()), 1e-10);
  const int64_t n = psi(a[0]);
  for (int64_t r = 0; r < world; ++r) {
    CommStats round = a[r].stats;
    round -= a[r].setup_stats;
    EXPECT_EQ(round.bytes_sent, rounds * (n + 1) * b) << "2(N-1)/N (Psi+1) b, N = 2";
    EXPECT_EQ(round.bytes_received, rounds * (n + 1) * b);
  }
  CommStats root = s[0].stats, other = s[1].stats;
  root -= s[0].setup_stats;
  other -= s[1].setup_stats;
  const int64_t per_rank = k / world;  // `deal`
  EXPECT_EQ(other.bytes_sent, rounds * per_rank * (n + 1) * b);
  EXPECT_EQ(root.bytes_received, rounds * (k - per_rank) * (n + 1) * b);
  EXPECT_EQ(root.bytes_sent, rounds * n * b);  // theta broadcast to the one other rank
  EXPECT_EQ(other.bytes_received, rounds * n * b);
}

// §1 test 5: resuming after round 3 is bitwise equal to an uninterrupted run.
TEST(FedAvg, ResumingAfterRoundThreeIsBitwiseEqual) {
  const Config cfg =
      fed_config("fedavg", {"algorithm.server_optimizer=\"fedadam\"", "algorithm.local_epochs=1"});
  const DatasetSplits data = data_of(cfg);
  const int64_t world = 2;
  auto whole = run_on_fake_world(cfg, world, 6, data);
  std::vector<Archive> saved(world);
  testing::FakeRunOptions at3;
  at3.after_step = [&](int64_t r, int64_t t, testing::RankState& s) {
    if (t != 2) return;
    s.algorithm->save(saved[r]);
    for (const auto& [name, p] : s.model->named_params()) saved[r].put("model." + name, p);
  };
  run_on_fake_world(cfg, world, 3, data, at3);
  Config rest = cfg;
  rest.run.steps = 6;
  std::vector<RunParts> parts;
  for (int64_t r = 0; r < world; ++r) parts.push_back(assemble_run(rest, data, r, world));
  std::vector<torch::Tensor> resumed(world);
  FakeWorld::create(world)->run([&](int64_t r, Communicator& comm) {
    Context ctx = make_context(rest, comm, parts[r]);
    parts[r].algorithm->setup(ctx);
    for (auto& [name, p] : parts[r].model->named_params()) saved[r].copy_into("model." + name, p);
    parts[r].algorithm->load(saved[r]);
    for (int64_t t = 3; t < 6; ++t) {
      ctx.step = t;
      parts[r].algorithm->step(ctx);
    }
    resumed[r] = dynamic_cast<Federated&>(*parts[r].algorithm).global().clone();
  });
  for (int64_t r = 0; r < world; ++r) EXPECT_TRUE(torch::equal(resumed[r], fed(whole[r]).global()));
}

// §2 test 1: FedProx's term enters the gradient as mu (w - theta): three full-batch local steps
// against autograd of loss + (mu / 2) ||w - theta||^2.
TEST(FedProx, ProximalTermIsTheGradientOfHalfMuSquaredDistance) {
  const double mu = 0.5, lr = 0.1;
  const Config cfg =
      fed_config("fedavg", {"data.synthetic_train=32", "data.batch_size=32", "algorithm.clients=1",
                            "algorithm.heldout_clients=0", "algorithm.clients_per_round=1",
                            "algorithm.partition=\"iid\"", "algorithm.local_steps=3",
                            "algorithm.prox_mu=0.5"});
  const DatasetSplits data = data_of(cfg);
  auto ranks = run_on_fake_world(cfg, 1, 1, data);
  StagedModel model = initial_model(cfg, data);
  std::vector<torch::Tensor> theta;
  for (auto& p : model->parameters()) theta.push_back(p.detach().clone());
  MicroBatch mb = take_range(data.train, 0, 32, true);
  for (int step = 0; step < 3; ++step) {
    for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
    torch::Tensor loss = loss_of(model->forward(mb.inputs), mb.targets);
    auto params = model->parameters();
    for (size_t i = 0; i < params.size(); ++i)
      loss = loss + 0.5 * mu * (params[i] - theta[i]).square().sum();
    loss.backward();
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.sub_(lr * p.grad());
  }
  EXPECT_LT(max_diff(fed(ranks[0]).global(), flat_params(model)), 1e-12);
  // Without the term the result is another one.
  Config plain = cfg;
  auto fedavg = run_on_fake_world(
      fed_config("fedavg", {"data.synthetic_train=32", "data.batch_size=32", "algorithm.clients=1",
                            "algorithm.heldout_clients=0", "algorithm.clients_per_round=1",
                            "algorithm.partition=\"iid\"", "algorithm.local_steps=3"}),
      1, 1, data);
  EXPECT_GT(max_diff(fed(fedavg[0]).global(), flat_params(model)), 1e-6);
}

// §2 test 1: mu = 0 is FedAvg, bitwise.
TEST(FedProx, MuZeroIsFedAvgBitwise) {
  const DatasetSplits data = data_of(fed_config("fedavg", {}));
  auto a = run_on_fake_world(fed_config("fedavg", {}), 2, 2, data);
  auto b = run_on_fake_world(fed_config("fedavg", {"algorithm.prox_mu=0.0"}), 2, 2, data);
  EXPECT_TRUE(torch::equal(fed(a[0]).global(), fed(b[0]).global()));
}

// §3 test 2, the spec's worked example.
TEST(Gma, MaskOnTheWorkedExample) {
  const torch::Tensor d1 = torch::tensor({1.0, 2.0, -1.0, 0.0}, torch::kFloat64);
  const torch::Tensor d2 = torch::tensor({1.0, -2.0, -1.0, 0.0}, torch::kFloat64);
  const torch::Tensor d3 = torch::tensor({1.0, -2.0, 1.0, 3.0}, torch::kFloat64);
  const torch::Tensor mean = (d1 + d2 + d3) / 3.0;
  const torch::Tensor g = d1.sign() + d2.sign() + d3.sign();
  EXPECT_TRUE(
      torch::allclose(mean, torch::tensor({1.0, -2.0 / 3, -1.0 / 3, 1.0}, torch::kFloat64)));
  GmaOptions o;
  auto masked = [&](double tau, bool gt) {
    o.tau = tau;
    o.tie_gt = gt;
    return gma_mask(g, 3.0, o) * mean;
  };
  const torch::Tensor half = torch::tensor({1.0, -2.0 / 9, -1.0 / 9, 1.0 / 3}, torch::kFloat64);
  EXPECT_LT(max_diff(masked(0.5, false), half), 1e-15);
  EXPECT_LT(max_diff(masked(0.3, false), mean), 1e-15);
  EXPECT_LT(max_diff(masked(1.0 / 3, false), mean), 1e-15);
  EXPECT_LT(max_diff(masked(1.0 / 3, true), half), 1e-15);
  // The same in float32, where the agreement 1/3 and tau 1/3 round alike.
  o.tau = 1.0 / 3;
  o.tie_gt = false;
  EXPECT_TRUE(torch::equal(gma_mask(g.to(torch::kFloat), 3.0, o), torch::ones({4}, torch::kFloat)));
}

// §3 test 1: tau = 0 with `ge` is FedAvg bitwise; tau = 0.4 is not FedAvg.
TEST(Gma, TauZeroIsFedAvgAndTheDefaultTauIsNot) {
  const DatasetSplits data = data_of(fed_config("fedavg", {}));
  auto mean = run_on_fake_world(fed_config("fedavg", {}), 2, 2, data);
  auto zero = run_on_fake_world(
      fed_config("fedavg", {"algorithm.aggregation=\"gma\"", "algorithm.gma_tau=0.0"}), 2, 2, data);
  auto gma = run_on_fake_world(fed_config("fedavg", {"algorithm.aggregation=\"gma\""}), 2, 2, data);
  EXPECT_TRUE(torch::equal(fed(mean[0]).global(), fed(zero[0]).global()));
  EXPECT_GT(max_diff(fed(mean[0]).global(), fed(gma[0]).global()), 1e-6);
}

// §3 test 1: with every client's update equal the mask is 1 for any tau.
TEST(Gma, EqualUpdatesAreNotMasked) {
  const torch::Tensor d = torch::tensor({0.5, -1.0, 0.0, 2.0}, torch::kFloat64);
  GmaOptions o;
  o.tau = 0.9;
  const torch::Tensor g = 3.0 * d.sign();
  EXPECT_TRUE(torch::equal(gma_mask(g, 3.0, o) * d, d));
}

// §3 test 3: pre_opt = post_opt for FedAvg, not for FedAdam; N and transport do not matter; the
// all_reduce carries [A, G, W].
TEST(Gma, PlacementTransportsAndProcesses) {
  const DatasetSplits data = data_of(fed_config("fedavg", {}));
  auto run = [&](const std::string& opt, const std::string& placement, const char* transport,
                 int64_t world) {
    return run_on_fake_world(
        fed_config("fedavg", {"algorithm.aggregation=\"gma\"", "algorithm.gma_tau=0.6",
                              "algorithm.server_optimizer=\"" + opt + "\"",
                              "algorithm.gma_placement=\"" + placement + "\"",
                              std::string("algorithm.transport=\"") + transport + "\""}),
        world, 2, data);
  };
  auto pre = run("fedavg", "pre_opt", "allreduce", 1);
  auto post = run("fedavg", "post_opt", "allreduce", 1);
  EXPECT_LT(max_diff(fed(pre[0]).global(), fed(post[0]).global()), 1e-12);
  auto adam_pre = run("fedadam", "pre_opt", "allreduce", 1);
  auto adam_post = run("fedadam", "post_opt", "allreduce", 1);
  EXPECT_GT(max_diff(fed(adam_pre[0]).global(), fed(adam_post[0]).global()), 1e-6);
  for (int64_t world : {2, 4}) {
    for (const char* transport : {"allreduce", "server"}) {
      SCOPED_TRACE(std::to_string(world) + " " + transport);
      auto ranks = run("fedadam", "post_opt", transport, world);
      for (auto& r : ranks) EXPECT_LT(max_diff(fed(r).global(), fed(adam_post[0]).global()), 1e-10);
    }
  }
  auto two = run("fedavg", "pre_opt", "allreduce", 2);
  CommStats round = two[0].stats;
  round -= two[0].setup_stats;
  EXPECT_EQ(round.bytes_sent, 2 * (2 * psi(two[0]) + 1) * 8) << "2(N-1)/N (2 Psi + 1) b, N = 2";
}

// §4 test 1: FedNCM's head is the normalised class means of f over the training clients' union,
// for any number of processes; rows have unit norm and the bias is zero.
TEST(FedNcm, HeadIsTheCentralisedClassMeansOfTheTrainingClients) {
  const Config cfg = fed_config("fedncm", {"run.steps=1"});
  const DatasetSplits data = data_of(cfg);
  StagedModel reference = initial_model(cfg, data);
  LastLayer ref(reference);
  auto ranks1 = run_on_fake_world(cfg, 1, 1, data);
  const ClientPartition& part = fed(ranks1[0]).partition();
  std::vector<int64_t> train_idx;
  for (int64_t id : part.train_ids)
    train_idx.insert(train_idx.end(), part.indices[id].begin(), part.indices[id].end());
  auto means_over = [&](const std::vector<int64_t>& idx) {
    torch::NoGradGuard no_grad;
    MicroBatch mb = take_indices(data.train, torch::tensor(idx, torch::kLong), true);
    torch::Tensor f = ref.features(mb.inputs);
    torch::Tensor m = torch::zeros({4, f.size(1)}, torch::kFloat64);
    for (int64_t c = 0; c < 4; ++c) m[c] = f.index({mb.targets == c}).mean(0);
    return m / m.norm(2, {1}, true);
  };
  const torch::Tensor expected = means_over(train_idx);
  std::vector<int64_t> everything(static_cast<size_t>(data.train.size()));
  for (size_t i = 0; i < everything.size(); ++i) everything[i] = static_cast<int64_t>(i);
  EXPECT_GT(max_diff(means_over(everything), expected), 1e-6) << "held-out clients excluded";
  for (int64_t world : {1, 2, 4}) {
    auto ranks = run_on_fake_world(cfg, world, 1, data);
    for (auto& r : ranks) {
      LastLayer got(r.model);
      EXPECT_LT(max_diff(got.head()->weight, expected), 1e-10);
      EXPECT_LT(max_diff(got.head()->weight.norm(2, {1}), torch::ones({4}, torch::kFloat64)),
                1e-12);
      EXPECT_TRUE(torch::equal(got.head()->bias, torch::zeros({4}, torch::kFloat64)));
    }
  }
}

// §4 test 2: one all_reduce of C(d + 1) fp64 numbers; C(d + 1) numbers up per client.
TEST(FedNcm, IsOneAllReduceOfClassSumsAndCounts) {
  const Config cfg = fed_config("fedncm", {"run.steps=1"});
  const DatasetSplits data = data_of(cfg);
  auto ranks = run_on_fake_world(cfg, 2, 1, data);
  CommStats round = ranks[0].stats;
  round -= ranks[0].setup_stats;
  const int64_t c = 4, d = 16;
  EXPECT_EQ(round.calls, 1);
  EXPECT_EQ(round.bytes_sent, c * (d + 1) * 8);  // 2(N-1)/N = 1 for N = 2
  int64_t up = -1;
  for (const auto& [name, v] : fed(ranks[0]).report().counts)
    if (name == "fl_up_bytes") up = v;
  EXPECT_EQ(up, 8 * c * (d + 1) * 8) << "8 training clients";
}

// §4 test 2: a class with no example gets a zero row and is reported.
TEST(FedNcm, AClassWithoutExamplesGetsAZeroRow) {
  torch::nn::Linear head(3, 3);
  const torch::Tensor sums =
      torch::tensor({{2.0, 0.0, 0.0}, {0.0, 0.0, 0.0}, {0.0, 3.0, 4.0}}, torch::kFloat64);
  const torch::Tensor counts = torch::tensor({2.0, 0.0, 1.0}, torch::kFloat64);
  const std::vector<int64_t> missing = set_ncm_head(head, sums, counts, {});
  EXPECT_EQ(missing, std::vector<int64_t>{1});
  EXPECT_TRUE(torch::allclose(
      head->weight.to(torch::kFloat64),
      torch::tensor({{1.0, 0.0, 0.0}, {0.0, 0.0, 0.0}, {0.0, 0.6, 0.8}}, torch::kFloat64)));
}

// §4 test 3: rule = euclidean classifies every test example as the nearest class mean.
TEST(FedNcm, EuclideanHeadIsTheNearestMeanClassifier) {
  const Config cfg = fed_config("fedncm", {"run.steps=1", "algorithm.ncm_rule=\"euclidean\""});
  const DatasetSplits data = data_of(cfg);
  auto ranks = run_on_fake_world(cfg, 2, 1, data);
  const ClientPartition& part = fed(ranks[0]).partition();
  StagedModel reference = initial_model(cfg, data);
  LastLayer ref(reference);
  torch::NoGradGuard no_grad;
  std::vector<int64_t> train_idx;
  for (int64_t id : part.train_ids)
    train_idx.insert(train_idx.end(), part.indices[id].begin(), part.indices[id].end());
  MicroBatch tr = take_indices(data.train, torch::tensor(train_idx, torch::kLong), true);
  const torch::Tensor f = ref.features(tr.inputs);
  torch::Tensor means = torch::zeros({4, f.size(1)}, torch::kFloat64);
  for (int64_t c = 0; c < 4; ++c) means[c] = f.index({tr.targets == c}).mean(0);
  MicroBatch test = take_range(data.test, 0, data.test.size(), true);
  ranks[0].model->eval();
  const torch::Tensor predicted = ranks[0].model->forward(test.inputs).argmax(1);
  const torch::Tensor nearest = torch::cdist(ref.features(test.inputs), means).argmin(1);
  EXPECT_TRUE(torch::equal(predicted, nearest));
}

// The backbone's parameters: everything but the last Linear.
torch::Tensor backbone(StagedModel& m) {
  LastLayer last(m);
  std::vector<torch::Tensor> v;
  for (auto& p : m->parameters())
    if (!p.is_same(last.head()->weight) && !p.is_same(last.head()->bias))
      v.push_back(p.detach().reshape(-1));
  return torch::cat(v);
}

// §4 test 3: FedLP leaves the backbone bitwise unchanged; the feature cache changes nothing.
TEST(FedLp, LeavesTheBackboneUnchangedAndTheCacheChangesNothing) {
  const Config cached = fed_config("fedlp", {});
  const DatasetSplits data = data_of(cached);
  StagedModel init = initial_model(cached, data);
  auto a = run_on_fake_world(cached, 2, 3, data);
  auto b = run_on_fake_world(fed_config("fedlp", {"algorithm.cache_features=false"}), 2, 3, data);
  EXPECT_TRUE(torch::equal(backbone(a[0].model), backbone(init)));
  EXPECT_TRUE(torch::equal(backbone(b[1].model), backbone(init)));
  LastLayer la(a[0].model), lb(b[0].model), li(init);
  EXPECT_LT(max_diff(la.head()->weight, lb.head()->weight), 1e-10);
  EXPECT_GT(max_diff(la.head()->weight, li.head()->weight), 1e-4) << "the head trained";
}

// §4 test 3: FedNCM+FT's phase 2 starts from f and FedNCM's head and trains everything.
TEST(FedNcm, FineTuningStartsFromTheBackboneAndTheNcmHead) {
  const Config cfg = fed_config("fedncm", {});
  const DatasetSplits data = data_of(cfg);
  StagedModel init = initial_model(cfg, data);
  auto ncm = run_on_fake_world(cfg, 2, 1, data);
  auto ft = run_on_fake_world(cfg, 2, 2, data);
  EXPECT_TRUE(torch::equal(backbone(ncm[0].model), backbone(init)));
  LastLayer after_ncm(ncm[0].model), init_head(init);
  EXPECT_GT(max_diff(after_ncm.head()->weight, init_head.head()->weight), 1e-3);
  EXPECT_GT(max_diff(backbone(ft[0].model), backbone(init)), 1e-6) << "round 1 trains f too";
}

// The held-out figures are those of the held-out clients' examples under the global model.
TEST(FedAvg, HeldOutClientsAreEvaluatedOnTheirOwnExamples) {
  const Config cfg = fed_config("fedavg", {"algorithm.heldout_clients=3"});
  const DatasetSplits data = data_of(cfg);
  auto ranks = run_on_fake_world(cfg, 2, 2, data);
  double reported = -1, worst = -1;
  auto fw = FakeWorld::create(2);
  fw->run([&](int64_t r, Communicator& comm) {
    Context ctx{cfg, comm, ranks[r].model, *ranks[r].batches, *ranks[r].schedule};
    const auto figures = fed(ranks[r]).probe(ctx, false);
    if (r != 0) return;
    for (const auto& [name, v] : figures) {
      if (name == "heldout_accuracy") reported = v;
      if (name == "heldout_worst_accuracy") worst = v;
    }
  });
  const ClientPartition& part = fed(ranks[0]).partition();
  torch::NoGradGuard no_grad;
  ranks[0].model->eval();
  double correct = 0, total = 0, lowest = 1;
  for (int64_t id : part.heldout_ids) {
    MicroBatch mb = take_indices(data.train, torch::tensor(part.indices[id], torch::kLong), true);
    const double c =
        ranks[0].model->forward(mb.inputs).argmax(1).eq(mb.targets).sum().item<double>();
    correct += c;
    total += static_cast<double>(part.indices[id].size());
    lowest = std::min(lowest, c / static_cast<double>(part.indices[id].size()));
  }
  EXPECT_DOUBLE_EQ(reported, correct / total);
  EXPECT_DOUBLE_EQ(worst, lowest);
}

TEST(FedAvg, RefusesADataBudget) {
  Config cfg = fed_config("fedavg", {"run.steps=0", "run.epochs=1"});
  const DatasetSplits data = data_of(cfg);
  cfg.run.steps = 0;
  RunParts parts = assemble_run(cfg, data, 0, 1);
  auto fw = FakeWorld::create(1);
  fw->run([&](int64_t, Communicator& comm) {
    Context ctx = make_context(cfg, comm, parts);
    EXPECT_THROW(parts.algorithm->setup(ctx), ConfigError);
  });
}

}  // namespace
}  // namespace desync
