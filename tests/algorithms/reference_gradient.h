// The gradient an algorithm should have used, recomputed independently of it: for tests that
// check an algorithm's update against its defining recurrence.
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "desync/core/config.h"
#include "desync/data/batch_source.h"
#include "desync/data/dataset.h"
#include "desync/models/staged_model.h"

namespace desync::testing {

// The gradient of the mean cross-entropy of `mb` at the flat parameters `x`, computed on a fresh
// model (not the one the algorithm trained).
inline torch::Tensor gradient_at(const Config& cfg, const DatasetSplits& data,
                                 const torch::Tensor& x, const MicroBatch& mb) {
  StagedModel model = make_model(cfg.model, {data.train.example_shape(), data.train.num_classes});
  int64_t offset = 0;
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) {
      p.copy_(x.narrow(0, offset, p.numel()).view(p.sizes()));
      offset += p.numel();
    }
  }
  EXPECT_EQ(offset, x.numel());
  torch::nn::functional::cross_entropy(model->forward(mb.inputs), mb.targets).backward();
  std::vector<torch::Tensor> g;
  for (auto& p : model->parameters()) g.push_back(p.grad().reshape({-1}).clone());
  return torch::cat(g);
}

}  // namespace desync::testing
