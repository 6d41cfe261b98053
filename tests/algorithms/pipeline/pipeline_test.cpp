#include "desync/algorithms/pipeline/pipeline.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <ostream>
#include <string>

#include "algorithms/fake_run.h"
#include "desync/core/error.h"

namespace desync {

// How gtest prints a schedule entry: F3, B0.
void PrintTo(const PipeOp& op, std::ostream* os) {
  *os << (op.kind == PipeOp::Kind::kForward ? "F" : "B") << op.micro_batch;
}

namespace {

using testing::flat_params;
using testing::max_diff;
using testing::RankState;
using testing::run_on_fake_world;
using testing::tiny_config;

int64_t stat(RankState& s, const std::string& name) {
  for (auto& [n, v] : s.algorithm->report().counts)
    if (n == name) return v;
  ADD_FAILURE() << "no stat " << name;
  return -1;
}

// The parameters of every model stage, taken from the rank that owns it.
torch::Tensor pipeline_params(std::vector<RankState>& ranks) {
  std::vector<torch::Tensor> parts;
  for (auto& s : ranks)
    for (int64_t i = stat(s, "stage_begin"); i < stat(s, "stage_end"); ++i)
      for (auto& p : s.model->stage(i)->parameters()) parts.push_back(p.detach().reshape({-1}));
  return torch::cat(parts);
}

// Four stages: fc0, fc1, fc2, head.
std::vector<std::string> mlp4(std::vector<std::string> extra) {
  std::vector<std::string> base = {"model.hidden=[32, 16, 16]", "data.batch_size=8",
                                   "optimizer.momentum=0.9"};
  base.insert(base.end(), extra.begin(), extra.end());
  return base;
}

TEST(Pipeline, PlacementIsContiguousAndBalanced) {
  auto even = place_stages(10, 4, {}, std::vector<double>(10, 1.0));
  ASSERT_EQ(even.size(), 4u);
  EXPECT_EQ(even.front().begin, 0);
  EXPECT_EQ(even.back().end, 10);
  for (size_t r = 1; r < even.size(); ++r) EXPECT_EQ(even[r].begin, even[r - 1].end);
  for (auto& g : even) EXPECT_LE(g.end - g.begin, 3);
  auto skewed = place_stages(4, 2, {}, {10, 1, 1, 1});  // the first stage is the heavy one
  EXPECT_EQ(skewed[0].end, 1);
  auto fixed = place_stages(5, 2, {2, 3}, {});
  EXPECT_EQ(fixed[1].begin, 2);
  EXPECT_THROW(place_stages(3, 4, {}, {1, 1, 1}), ConfigError);
  EXPECT_THROW(place_stages(5, 2, {1, 3}, {}), ConfigError);
}

// A GPT with tied embeddings shares a weight between its first and last stages: a pipeline
// over two ranks would split them; one rank keeps them together.
TEST(Pipeline, PlacementRefusesTiedStagesOnDifferentRanks) {
  Config cfg = tiny_config({});
  DatasetSplits data = load_dataset(cfg.data, 0);
  MicroBatchSource batches(data.train, 8, 0, 1, 0, {false, false});
  Schedule schedule(cfg.schedule, 0.1, 1);
  ModelConfig gpt;
  gpt.name = "gpt";
  gpt.n_layer = 2;
  gpt.n_head = 2;
  gpt.d_model = 8;
  auto world = FakeWorld::create(2);
  SoloCommunicator solo;
  for (bool tie : {false, true}) {
    gpt.tie_embeddings = tie;
    torch::manual_seed(0);
    StagedModel model = make_model(gpt, {{6}, 11});
    Context one{cfg, solo, model, batches, schedule, 0};
    Context two{cfg, *world->comm(0), model, batches, schedule, 0};
    EXPECT_EQ(place_pipeline(one, {}).size(), 1u);
    if (!tie) {
      EXPECT_EQ(place_pipeline(two, {}).size(), 2u);
      continue;
    }
    try {
      place_pipeline(two, {});
      ADD_FAILURE() << "a tied model was split over two ranks";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("model.tie_embeddings = false"), std::string::npos);
    }
  }
}

TEST(Pipeline, SchedulesKeepTheSpecsNumberOfMicroBatchesInFlight) {
  for (int64_t j : {2, 4})
    for (int64_t m : {1, 4, 8})
      for (int64_t s = 0; s < j; ++s)
        for (bool gpipe : {true, false}) {
          int64_t in_flight = 0, peak = 0, forwards = 0, backwards = 0;
          for (const PipeOp& op : Pipeline::schedule(gpipe, s, j, m)) {
            const bool forward = op.kind == PipeOp::Kind::kForward;
            in_flight += forward ? 1 : -1;
            (forward ? forwards : backwards) += 1;
            peak = std::max(peak, in_flight);
            ASSERT_GE(in_flight, 0);
          }
          EXPECT_EQ(forwards, m);
          EXPECT_EQ(backwards, m);
          EXPECT_EQ(peak, gpipe ? m : std::min(j - s, m)) << "J=" << j << " M=" << m << " s=" << s;
        }
}

TEST(Pipeline, SchedulesRunTheSpecsOrderOfForwardsAndBackwards) {
  const auto f = [](int64_t i) { return PipeOp{PipeOp::Kind::kForward, i}; };
  const auto b = [](int64_t i) { return PipeOp{PipeOp::Kind::kBackward, i}; };
  // GPipe: all forwards, then the backwards in reverse order, on every rank.
  const std::vector<PipeOp> gpipe = {f(0), f(1), f(2), b(2), b(1), b(0)};
  EXPECT_EQ(Pipeline::schedule(true, 0, 2, 3), gpipe);
  EXPECT_EQ(Pipeline::schedule(true, 1, 2, 3), gpipe);
  // 1F1B, J = 3, M = 4: J-1-s warm-up forwards, then alternating, then the remaining backwards.
  EXPECT_EQ(Pipeline::schedule(false, 0, 3, 4),
            std::vector<PipeOp>({f(0), f(1), f(2), b(0), f(3), b(1), b(2), b(3)}));
  EXPECT_EQ(Pipeline::schedule(false, 1, 3, 4),
            std::vector<PipeOp>({f(0), f(1), b(0), f(2), b(1), f(3), b(2), b(3)}));
  EXPECT_EQ(Pipeline::schedule(false, 2, 3, 4),
            std::vector<PipeOp>({f(0), b(0), f(1), b(1), f(2), b(2), f(3), b(3)}));
}

TEST(Pipeline, DeclaresThatRankZeroReadsOneAccumulationPerStep) {
  auto algorithm = make_algorithm(
      tiny_config({"algorithm.name=\"pipeline\"", "algorithm.accumulation=6"}).algorithm);
  EXPECT_EQ(algorithm->traits().data, AlgorithmTraits::Data::kFirstRank);
  EXPECT_EQ(algorithm->traits().accumulations_per_step, 1);  // M = accumulation per step
}

// GPipe and 1F1B equal sequential backprop with accumulation over M micro-batches.
void expect_pipeline_equals_single(const std::string& schedule, int64_t j, int64_t m,
                                   std::vector<std::string> model,
                                   const testing::Precision& precision = testing::kFloat32) {
  // float32 holds to 1e-6 here (few steps), float64 to 1e-10.
  const double tolerance = std::min(1e-6, precision.tolerance);
  model.insert(model.end(), precision.overrides.begin(), precision.overrides.end());
  std::vector<std::string> p = {"algorithm.name=\"pipeline\"",
                                "algorithm.schedule=\"" + schedule + "\"",
                                "algorithm.accumulation=" + std::to_string(m)};
  std::vector<std::string> s = {"algorithm.accumulation=" + std::to_string(m)};
  p.insert(p.end(), model.begin(), model.end());
  s.insert(s.end(), model.begin(), model.end());
  Config pipe = tiny_config(p), single = tiny_config(s);
  DatasetSplits data = load_dataset(pipe.data, 0);
  auto ranks = run_on_fake_world(pipe, j, 4, data);
  auto ref = run_on_fake_world(single, 1, 4, data);
  EXPECT_LT(max_diff(pipeline_params(ranks), flat_params(ref[0].model)), tolerance)
      << precision.name << " " << schedule << " J=" << j << " M=" << m;
  for (size_t t = 0; t < ref[0].losses.size(); ++t)
    EXPECT_NEAR(ranks[j - 1].losses[t], ref[0].losses[t], tolerance);
  EXPECT_EQ(stat(ranks[0], "peak_in_flight_micro_batches"),
            schedule == "gpipe" ? m : std::min(j, m));
}

TEST(Pipeline, GpipeEqualsSingleProcess) {
  for (int64_t j : {2, 4})
    for (int64_t m : {1, 4, 8}) expect_pipeline_equals_single("gpipe", j, m, mlp4({}));
}

TEST(Pipeline, OneFOneBEqualsSingleProcess) {
  for (int64_t j : {2, 4})
    for (int64_t m : {1, 4, 8}) expect_pipeline_equals_single("1f1b", j, m, mlp4({}));
}

TEST(Pipeline, GpipeAndOneFOneBEqualSingleProcessInFloat64) {
  for (const char* schedule : {"gpipe", "1f1b"})
    expect_pipeline_equals_single(schedule, 4, 4, mlp4({}), testing::kFloat64);
}

TEST(Pipeline, BatchNormModelAndClippingMatchSingleProcess) {
  // CNN stages block0, block1, head with BatchNorm; the clipping norm is global over stages.
  std::vector<std::string> cnn = {"model.name=\"cnn\"", "model.channels=[4, 4]",
                                  "data.synthetic_shape=[1, 8, 8]", "data.batch_size=8",
                                  "optimizer.grad_clip=0.5"};
  expect_pipeline_equals_single("1f1b", 3, 4, cnn);
  expect_pipeline_equals_single("gpipe", 2, 2, cnn);
}

}  // namespace
}  // namespace desync
