#include "desync/algorithms/decentralized/gossip.h"

#include <gtest/gtest.h>

#include "algorithms/fake_run.h"
#include "desync/comm/fake_communicator.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::tiny_model;

TEST(Consensus, AveragesParametersAndBuffersAndMeasuresTheSpread) {
  auto fake = FakeWorld::create(2);
  std::vector<StagedModel> models = {tiny_model(true), tiny_model(true)};
  std::vector<torch::Tensor> xs(2), avg(2), running_mean(2);
  std::vector<double> distance(2);
  {
    torch::NoGradGuard no_grad;
    models[1]->named_bufs()[0].second.fill_(2.0);  // a running mean that differs
    models[0]->named_bufs()[0].second.fill_(0.0);
  }
  fake->run([&](int64_t r, Communicator& comm) {
    Consensus consensus(models[r]);
    xs[r] = flat_params(models[r]) + static_cast<double>(r);  // rank 1 sits 1 above rank 0
    StagedModel mean = consensus.average(comm, xs[r], models[r]);
    avg[r] = flat_params(mean);
    running_mean[r] = mean->named_bufs()[0].second.clone();
    distance[r] = consensus.distance();
  });
  torch::Tensor expected = (xs[0] + xs[1]) / 2;
  for (int r = 0; r < 2; ++r) {
    EXPECT_LT((avg[r] - expected).abs().max().item<double>(), 1e-6);
    EXPECT_TRUE(torch::allclose(running_mean[r], torch::ones_like(running_mean[r])));
    EXPECT_NEAR(distance[r], (xs[1] - xs[0]).norm().item<double>() / 2, 1e-4);
  }
}

}  // namespace
}  // namespace desync
