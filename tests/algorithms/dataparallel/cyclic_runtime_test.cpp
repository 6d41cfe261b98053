// The staggered runtime shared by the cyclic methods (cyclic_runtime.h), through cdp: the
// staggered workers reproduce the semantic simulator's update rules, on a fake world of four
// ranks, in float64.
#include "desync/algorithms/dataparallel/cyclic_runtime.h"

#include <gtest/gtest.h>

#include "algorithms/fake_run.h"

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

}  // namespace
}  // namespace desync
