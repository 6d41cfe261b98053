// The staggered runtime shared by the cyclic methods (cyclic_runtime.h), through cdp: the
// staggered workers reproduce the semantic simulator's update rules, on a fake world of four
// ranks, in float64.
#include "desync/algorithms/dataparallel/cyclic_runtime.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <mutex>

#include "algorithms/fake_run.h"
#include "desync/algorithms/dataparallel/cyclic_schedule.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::max_diff;
using testing::run_on_fake_world;
using testing::tiny_config;

// The tiny MLP with four stages (fc1, fc2, fc3, head), so that four cyclic stages exist, SGD with
// momentum and weight decay; float64, so that only the order of sums separates two runs.
Config cyclic_job(const std::vector<std::string>& algorithm) {
  std::vector<std::string> o = {"model.hidden=[32, 16, 16]", "model.dtype=\"float64\"",
                                "optimizer.momentum=0.9",    "optimizer.weight_decay=0.01",
                                "optimizer.lr=0.05",         "algorithm.unit_ms=0.2"};
  o.insert(o.end(), algorithm.begin(), algorithm.end());
  return tiny_config(o);
}

TEST(CyclicRuntime, CdpStaggeredMatchesSimulatorForEveryRule) {
  struct Case {
    const char* rule;
    const char* predicate;
  };
  for (const Case& c :
       {Case{"dp", "code"}, Case{"cdp1", "code"}, Case{"cdp2", "code"}, Case{"cdp2", "timing"}}) {
    for (const char* final_model : {"average", "latest"}) {
      SCOPED_TRACE(std::string(c.rule) + " " + c.predicate + " " + final_model);
      auto job = [&](const char* runtime) {
        return cyclic_job({"algorithm.name=\"cdp\"",
                           std::string("algorithm.rule=\"") + c.rule + "\"",
                           std::string("algorithm.fresh_predicate=\"") + c.predicate + "\"",
                           std::string("algorithm.runtime=\"") + runtime + "\"",
                           std::string("algorithm.final_model=\"") + final_model + "\""});
      };
      Config simulator = job("simulator");
      DatasetSplits data = load_dataset(simulator.data, 0);
      std::vector<torch::Tensor> initial(4);
      testing::FakeRunOptions keep_initial;
      keep_initial.before_setup = [&](int64_t r, StagedModel& m) { initial[r] = flat_params(m); };
      auto a = run_on_fake_world(simulator, 4, 6, data, keep_initial);
      auto b = run_on_fake_world(job("staggered"), 4, 6, data);
      for (int64_t r = 0; r < 4; ++r) {
        EXPECT_LT(max_diff(flat_params(a[r].model), flat_params(b[r].model)), 1e-10)
            << "rank " << r;
        // The steps moved the model: agreeing on unchanged parameters would prove nothing.
        EXPECT_GT(max_diff(flat_params(a[r].model), initial[r]), 1e-3) << "rank " << r;
      }
    }
  }
}

// Three stages: BatchNorm in the first (running statistics that a forward run again would update
// twice), dropout in the second (RNG draws that a forward run again must repeat).
StagedModel batch_norm_dropout_model() {
  torch::manual_seed(3);
  StagedModel m;
  m->add_stage("a", torch::nn::Sequential(torch::nn::Linear(6, 8), torch::nn::BatchNorm1d(8),
                                          torch::nn::ReLU()));
  m->add_stage("b", torch::nn::Sequential(torch::nn::Linear(8, 8), torch::nn::Dropout(0.5)));
  m->add_stage("c", torch::nn::Sequential(torch::nn::Linear(8, 3)));
  m->train();
  return m;
}

// Operation i of a pass over three stages: forwards 0, 1, 2, then backwards 2, 1, 0.
void run_pass_ops(StagedPass& pass, int64_t from, int64_t to) {
  for (int64_t i = from; i < to; ++i) i < 3 ? pass.forward(i) : pass.backward(5 - i);
}

torch::Tensor generator_state() { return at::detail::getDefaultCPUGenerator().get_state(); }

void set_generator_state(const torch::Tensor& state) {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

// A pass cut after any of its operations, saved, and rebuilt on a copy of the model at that point
// (as a resumed worker's model is) with another RNG state, ends with the gradients, BatchNorm
// statistics and RNG state of the pass that ran through.
TEST(StagedPass, RebuiltFromACheckpointEndsAsTheUninterruptedPass) {
  const std::vector<StageRange> stages = {{0, 1}, {1, 2}, {2, 3}};
  torch::manual_seed(5);
  MicroBatch mb;
  mb.inputs = torch::randn({8, 6});
  mb.targets = torch::randint(0, 3, {8}, torch::kLong);

  StagedModel ref = batch_norm_dropout_model();
  torch::manual_seed(7);
  StagedPass through(ref, stages);
  through.begin(mb);
  run_pass_ops(through, 0, 6);
  const torch::Tensor rng_after = generator_state();

  for (int64_t cut = 1; cut < 6; ++cut) {
    SCOPED_TRACE("cut after operation " + std::to_string(cut));
    StagedModel before = batch_norm_dropout_model();
    torch::manual_seed(7);
    StagedPass first(before, stages);
    first.begin(mb);
    run_pass_ops(first, 0, cut);
    Archive archive;
    first.save(archive, "pass.");
    const torch::Tensor rng_at_cut = generator_state();

    StagedModel after = batch_norm_dropout_model();  // the checkpoint's model
    {
      torch::NoGradGuard no_grad;
      auto from = before->named_parameters(), to = after->named_parameters();
      for (const auto& p : from) {
        to[p.key()].copy_(p.value());
        if (p.value().grad().defined()) to[p.key()].mutable_grad() = p.value().grad().clone();
      }
      auto bufs = after->named_buffers();
      for (const auto& b : before->named_buffers()) bufs[b.key()].copy_(b.value());
    }
    torch::manual_seed(99);
    StagedPass rebuilt(after, stages);
    rebuilt.load(archive, "pass.");
    set_generator_state(rng_at_cut);  // as the Trainer restores it
    run_pass_ops(rebuilt, cut, 6);

    EXPECT_FALSE(rebuilt.active());
    EXPECT_TRUE(torch::equal(generator_state(), rng_after));
    auto expected = ref->named_parameters();
    for (const auto& p : after->named_parameters())
      EXPECT_TRUE(torch::equal(p.value().grad(), expected[p.key()].grad())) << p.key();
    auto expected_bufs = ref->named_buffers();
    for (const auto& b : after->named_buffers())
      EXPECT_TRUE(torch::equal(b.value(), expected_bufs[b.key()])) << b.key();
  }
}

}  // namespace
}  // namespace desync
