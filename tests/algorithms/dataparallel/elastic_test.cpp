// Elastic restart of the sharded data-parallel methods: the state saved by 4 ranks and restored
// onto 2 with Elastic::load_resharded() is what 2 ranks with the same global batch hold after
// the same steps, and training on from it follows them (ZeRO-1's AdamW shards cut anew; DPU's
// delayed gradient folded onto the new ranks); ACCO's buffers and counts keep their sums.
#include "desync/algorithms/elastic.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "algorithms/dataparallel/sharded_job.h"
#include "algorithms/fake_run.h"
#include "desync/core/archive.h"
#include "desync/core/error.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::kAdamW;
using testing::max_diff;
using testing::run_on_fake_world;
using testing::tiny_config;
using testing::with;

std::vector<Archive> saved(const std::vector<testing::RankState>& ranks) {
  std::vector<Archive> out(ranks.size());
  for (size_t r = 0; r < ranks.size(); ++r) {
    ranks[r].algorithm->save(out[r]);  // and the model, which the Trainer saves
    for (const auto& [name, t] : ranks[r].model->named_params())
      out[r].put("model.param." + name, t);
  }
  return out;
}

// Every entry is in both and equal within `tol` (tensors) or exactly (integers).
void expect_same_state(const Archive& a, const Archive& b, double tol, const std::string& what) {
  ASSERT_EQ(a.names(), b.names()) << what;
  for (const std::string& name : a.names()) {
    torch::Tensor x, y;
    try {
      x = a.tensor(name);
      y = b.tensor(name);
    } catch (const CheckpointError&) {
      EXPECT_EQ(a.integer(name), b.integer(name)) << what << " " << name;
      continue;
    }
    ASSERT_EQ(x.sizes(), y.sizes()) << what << " " << name;
    if (x.numel() > 0) {
      EXPECT_LE(max_diff(x.to(torch::kDouble), y.to(torch::kDouble)), tol) << what << " " << name;
    }
  }
}

struct Resumed {
  std::vector<Archive> restored;     // each rank's state right after load_resharded()
  std::vector<torch::Tensor> final;  // each rank's parameters after `more` steps
};

// A fresh world of `world` ranks restored from `old` at step `step`, the stream at `at`, then
// `more` steps on.
Resumed resume_on(const Config& base, int64_t world, const DatasetSplits& data,
                  const std::vector<Archive>& old, int64_t step, StreamPosition at, int64_t more) {
  Config cfg = base;
  cfg.run.steps = step + more;
  std::vector<RunParts> parts;
  for (int64_t r = 0; r < world; ++r) parts.push_back(assemble_run(cfg, data, r, world));
  Resumed out{std::vector<Archive>(static_cast<size_t>(world)),
              std::vector<torch::Tensor>(static_cast<size_t>(world))};
  FakeWorld::create(world)->run([&](int64_t r, Communicator& comm) {
    RunParts& p = parts[r];
    Context ctx = make_context(cfg, comm, p);
    p.algorithm->setup(ctx);
    {
      torch::NoGradGuard no_grad;  // what the Trainer restores: old rank (r % old world)'s model
      for (auto& [name, t] : p.model->named_params())
        old[static_cast<size_t>(r) % old.size()].copy_into("model.param." + name, t);
    }
    Elastic* elastic = as_elastic(*p.algorithm);
    ASSERT_NE(elastic, nullptr);
    elastic->load_resharded(old, step);
    p.algorithm->save(out.restored[r]);
    for (const auto& [name, t] : p.model->named_params())
      out.restored[r].put("model.param." + name, t);
    p.batches->seek(at);
    for (int64_t t = step; t < step + more; ++t) {
      ctx.step = t;
      p.algorithm->step(ctx);
    }
    p.algorithm->finish(ctx);
    out.final[r] = flat_params(p.model);
  });
  return out;
}

// `name` on 4 ranks of batch 8 for `steps` steps, restored onto 2 ranks of batch 16, against
// 2 ranks of batch 16 throughout.
// `name` on 4 ranks of batch 8 for `steps` steps, restored onto 2 ranks of batch 16, against
// 2 ranks of batch 16 throughout: the restored state entry by entry, and the parameters after
// more steps.
void expect_4_to_2_matches_two_ranks(const std::string& name, const std::vector<std::string>& extra,
                                     int64_t steps) {
  const int64_t more = 4;
  const std::vector<std::string> base = with(with(with(kAdamW, testing::kFloat64.overrides), extra),
                                             {"algorithm.name=\"" + name + "\""});
  const Config four = tiny_config(base);
  const Config two = tiny_config(with(base, {"data.batch_size=16"}));
  const DatasetSplits data = load_dataset(four.data, 0);
  const auto old_run = run_on_fake_world(four, 4, steps, data);
  const auto native = run_on_fake_world(two, 2, steps, data);
  auto native_on = run_on_fake_world(two, 2, steps + more, data);
  // The same examples consumed: 4 x 8 and 2 x 16 cut the stream into the same global batches.
  const StreamPosition at = native[0].batches->position();
  EXPECT_EQ(old_run[0].batches->position(), at);
  const Resumed resumed = resume_on(two, 2, data, saved(old_run), steps, at, more);
  const std::vector<Archive> expected = saved(native);
  for (int64_t r = 0; r < 2; ++r) {
    const std::string what = name + " rank " + std::to_string(r);
    expect_same_state(expected[r], resumed.restored[r], 1e-10, what);
    EXPECT_LT(max_diff(resumed.final[r], flat_params(native_on[r].model)), 1e-9) << what;
  }
}

TEST(ElasticReshard, Zero1AdamWShardsFrom4To2HoldWhatTwoRanksHold) {
  expect_4_to_2_matches_two_ranks("zero1", {}, 6);
  expect_4_to_2_matches_two_ranks("zero1", {"optimizer.grad_clip=0.5"}, 6);
}

TEST(ElasticReshard, DpuFrom4To2FoldsTheDelayedGradient) {
  expect_4_to_2_matches_two_ranks("dpu", {"algorithm.n_warmup=2"}, 6);
}

TEST(ElasticReshard, AccoFrom4To2KeepsTheSumsOfItsBuffersAndCounts) {
  // ACCO's buffers are sums over micro-batches that the round divides by the global count: the
  // new ranks hold the old ranks' sums folded (0+1, 2+3), whatever the micro-batch size.
  const Config cfg = tiny_config(with(with(kAdamW, testing::kFloat64.overrides),
                                      {"algorithm.name=\"acco\"", "algorithm.fixed_count=true"}));
  const DatasetSplits data = load_dataset(cfg.data, 0);
  const auto old_run = run_on_fake_world(cfg, 4, 3, data);
  const std::vector<Archive> old = saved(old_run);
  const Resumed resumed = resume_on(cfg, 2, data, old, 3, old_run[0].batches->position(), 2);
  for (const char* name : {"acco.buffer", "acco.grads"}) {
    for (int64_t r = 0; r < 2; ++r) {
      const torch::Tensor folded = old[2 * r].tensor(name) + old[2 * r + 1].tensor(name);
      const torch::Tensor mine = resumed.restored[r].tensor(name);
      const int64_t n = std::min(folded.numel(), mine.numel());
      EXPECT_LT(max_diff(mine.narrow(0, 0, n), folded.narrow(0, 0, n)), 1e-12) << name << " " << r;
    }
  }
  for (int64_t r = 0; r < 2; ++r) {
    EXPECT_EQ(resumed.restored[r].integer("acco.count"),
              old[2 * r].integer("acco.count") + old[2 * r + 1].integer("acco.count"));
    EXPECT_EQ(resumed.restored[r].integer("acco.real_steps"), 3);
    EXPECT_TRUE(torch::isfinite(resumed.final[r]).all().item<bool>());
  }
}

}  // namespace
}  // namespace desync
