// A population's evaluation (train/evaluation.h) against figures computed here, directly from
// the members: the ensemble's accuracy and loss, each member's, and the BatchNorm statistics the
// averaged model is given.
#include "desync/train/evaluation.h"

#include <gtest/gtest.h>

#include "algorithms/fake_run.h"
#include "desync/comm/fake_communicator.h"
#include "desync/data/batch_source.h"

namespace desync {
namespace {

using testing::tiny_config;

// n members of the tiny config's MLP, each from its own seed.
std::vector<StagedModel> members(const Config& cfg, const DatasetSplits& data, int64_t n) {
  std::vector<StagedModel> out;
  for (int64_t k = 0; k < n; ++k) {
    torch::manual_seed(static_cast<uint64_t>(10 + k));
    out.push_back(
        make_model(cfg.model, ModelInput{data.train.example_shape(), data.train.num_classes}));
  }
  return out;
}

TEST(PopulationEvaluation, EnsembleIsTheMeanOfTheMembersSoftmaxAndMembersAreScoredAlone) {
  const Config cfg = tiny_config({"data.eval_batch_size=50"});  // batches do not divide 128
  DatasetSplits data = load_dataset(cfg.data, 0);
  const int64_t n = 3;
  std::vector<StagedModel> models = members(cfg, data, n);

  // Directly: every member on the whole test split, the mean of the probabilities.
  torch::NoGradGuard no_grad;
  MicroBatch all = take_range(data.test, 0, data.test.size(), cfg.data.normalize);
  torch::Tensor probs = torch::zeros({data.test.size(), data.test.num_classes}, torch::kFloat64);
  std::vector<double> accuracy;
  for (auto& m : models) {
    m->eval();
    torch::Tensor logits = m->forward(all.inputs).to(torch::kFloat64);
    accuracy.push_back(logits.argmax(-1).eq(all.targets).to(torch::kFloat64).mean().item<double>());
    probs += torch::softmax(logits, -1);
    m->train();
  }
  probs /= static_cast<double>(n);
  const double ens_accuracy =
      probs.argmax(-1).eq(all.targets).to(torch::kFloat64).mean().item<double>();
  const double ens_loss = -probs.gather(1, all.targets.unsqueeze(1)).log().mean().item<double>();

  std::vector<PopulationResult> results(n);
  auto world = FakeWorld::create(n);
  world->run([&](int64_t r, Communicator& comm) {
    StagedModel average(models[0]->clone_model());  // any model: its score is checked apart
    results[r] = evaluate_population(models[r], average, data, 0, 0, cfg, comm);
  });
  for (int64_t r = 0; r < n; ++r) {
    EXPECT_NEAR(results[r].ensemble.accuracy, ens_accuracy, 1e-12) << r;
    EXPECT_NEAR(results[r].ensemble.loss, ens_loss, 1e-6) << r;
    EXPECT_EQ(results[r].ensemble.examples, data.test.size());
    ASSERT_EQ(results[r].member_accuracy.size(), static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k)
      EXPECT_NEAR(results[r].member_accuracy[k], accuracy[k], 1e-12) << r << " " << k;
    EXPECT_FALSE(results[r].repaired);  // repair_batches = 0 (and an MLP has no BatchNorm)
  }
  // The members disagree somewhere, so the ensemble is not one of them.
  EXPECT_FALSE(accuracy[0] == accuracy[1] && accuracy[1] == accuracy[2]);
}

TEST(PopulationEvaluation, BatchNormStatisticsBecomeTheirMeanOverTheFirstTrainingBatches) {
  const Config cfg = tiny_config({"model.name=\"cnn\"", "model.channels=[2]",
                                  "data.synthetic_shape=[1, 8, 8]", "data.batch_size=16"});
  DatasetSplits data = load_dataset(cfg.data, 0);
  torch::manual_seed(3);
  StagedModel model =
      make_model(cfg.model, ModelInput{data.train.example_shape(), data.train.num_classes});
  std::vector<torch::nn::BatchNorm2dImpl*> bns;
  for (const auto& m : model->modules())
    if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) bns.push_back(bn);
  ASSERT_FALSE(bns.empty());

  // Directly: each batch's statistics alone (momentum 1 keeps only the last batch's), averaged.
  const int64_t batches = 3;
  std::vector<torch::Tensor> mean(bns.size()), var(bns.size());
  {
    StagedModel probe = model->clone_model();
    std::vector<torch::nn::BatchNorm2dImpl*> pbns;
    for (const auto& m : probe->modules())
      if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>()) pbns.push_back(bn);
    torch::NoGradGuard no_grad;
    probe->train();
    for (auto* bn : pbns) bn->options.momentum(1.0);
    for (int64_t b = 0; b < batches; ++b) {
      MicroBatch mb = take_range(data.train, b * 16, (b + 1) * 16, cfg.data.normalize);
      probe->forward(mb.inputs);
      for (size_t i = 0; i < pbns.size(); ++i) {
        torch::Tensor m = pbns[i]->running_mean.clone(), v = pbns[i]->running_var.clone();
        mean[i] = b == 0 ? m : mean[i] + m;
        var[i] = b == 0 ? v : var[i] + v;
      }
    }
  }
  for (auto* bn : bns) bn->running_mean.fill_(7.0);  // stale statistics, to be replaced
  model->eval();
  ASSERT_TRUE(reestimate_batchnorm(model, data.train, batches, cfg));
  EXPECT_FALSE(model->is_training());  // its mode is kept
  for (size_t i = 0; i < bns.size(); ++i) {
    EXPECT_LT((bns[i]->running_mean - mean[i] / batches).abs().max().item<double>(), 1e-6) << i;
    EXPECT_LT((bns[i]->running_var - var[i] / batches).abs().max().item<double>(), 1e-6) << i;
    EXPECT_TRUE(bns[i]->options.momentum().has_value());  // restored
  }
  EXPECT_FALSE(reestimate_batchnorm(model, data.train, 0, cfg));  // 0 batches: nothing done
  EXPECT_LT((bns[0]->running_mean - mean[0] / batches).abs().max().item<double>(), 1e-6);
}

}  // namespace
}  // namespace desync
