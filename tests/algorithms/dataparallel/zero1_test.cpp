// ZeRO-1 against DDP, and the size of its sharded optimizer state (the recurrences are in
// docs/algorithms/zero1.md).
#include "desync/algorithms/dataparallel/zero1.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "algorithms/dataparallel/sharded_job.h"
#include "algorithms/fake_run.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::kAdamW;
using testing::max_diff;
using testing::run_on_fake_world;
using testing::tiny_config;
using testing::with;

void expect_zero1_matches_ddp(const std::vector<int64_t>& worlds, const testing::Precision& p) {
  for (int64_t n : worlds) {
    for (const char* clip : {"optimizer.grad_clip=0", "optimizer.grad_clip=0.5"}) {
      Config ddp = tiny_config(with(with(kAdamW, {"algorithm.name=\"ddp\"", clip}), p.overrides));
      Config zero =
          tiny_config(with(with(kAdamW, {"algorithm.name=\"zero1\"", clip}), p.overrides));
      DatasetSplits data = load_dataset(ddp.data, 0);
      auto a = run_on_fake_world(ddp, n, 10, data);
      auto b = run_on_fake_world(zero, n, 10, data);
      for (int64_t r = 0; r < n; ++r)
        EXPECT_LT(max_diff(flat_params(a[r].model), flat_params(b[r].model)), p.tolerance)
            << p.name << " N=" << n << " rank " << r << " " << clip;
    }
  }
}

TEST(Zero1, Zero1MatchesDdpWithAdamW) { expect_zero1_matches_ddp({2, 3, 4}, testing::kFloat32); }

TEST(Zero1, Zero1MatchesDdpWithAdamWInFloat64) {
  expect_zero1_matches_ddp({3, 4}, testing::kFloat64);
}

TEST(Zero1, OptimizerStateIsShardedPerRank) {
  const int64_t n = 4, psi = 1114;
  Config zero = tiny_config(with(kAdamW, {"algorithm.name=\"zero1\""}));
  DatasetSplits data = load_dataset(zero.data, 0);
  auto ranks = run_on_fake_world(zero, n, 1, data);
  for (int64_t r = 0; r < n; ++r) {
    int64_t state_bytes = -1;
    for (auto& [name, bytes] : ranks[r].algorithm->report().memory)
      if (name == "optimizer_state") state_bytes = bytes;
    // exp_avg and exp_avg_sq for ceil(Ψ/N) elements (the padding belongs to the last shard's
    // range but to no parameter), plus the 8-byte step counter.
    int64_t shard = (psi + n - 1) / n;
    int64_t owned = std::max<int64_t>(0, std::min(psi - r * shard, shard));
    EXPECT_EQ(state_bytes, 2 * 4 * owned + 8) << "rank " << r;
  }
}

}  // namespace
}  // namespace desync
