// Every entry of algorithm_registry(): it is described, builds from a default config with sane
// traits, has its page in docs/algorithms/, and sets up and takes a step on a fake world.
#include "desync/algorithms/registry.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <set>
#include <string>

#include "algorithms/fake_run.h"
#include "test_util.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::run_on_fake_world;
using testing::tiny_config;

// The tiny synthetic job (an MLP of three stages, so pipelines get at least two) with the
// algorithm selected and all its options at their defaults, but for the federated methods, whose
// default 120 clients of at least 10 examples need more than the job's 1024 (40 IID ones here).
// The embedding trainers read a words corpus: a small one, written once per test binary.
const testing::TempDir& words_dir() {
  static const testing::TempDir dir;
  static const bool written = [] {
    std::string text;
    for (int s = 0; s < 200; ++s)
      text += "the cat sat on the mat and word" + std::string(1, static_cast<char>('a' + s % 26)) +
              " ran to the " + (s % 3 ? "dog" : "bird") + "\n";
    testing::write_file(dir.file("corpus.txt"), text);
    return true;
  }();
  (void)written;
  return dir;
}

Config default_config(const AlgorithmInfo& info) {
  if (info.family == "embedding")
    return tiny_config({"algorithm.name=\"" + info.name + "\"", "data.dataset=\"words\"",
                        "data.path=\"" + words_dir().file("corpus.txt") + "\"",
                        "data.cache_dir=\"" + words_dir().file("cache") + "\"",
                        "model.name=\"sgns\"", "model.d_model=8", "algorithm.sgns.sync_words=500",
                        "algorithm.sgns.min_count=1", "algorithm.ppmi_svd.min_count=1"});
  if (info.family == "federated")
    return tiny_config({"algorithm.name=\"" + info.name + "\"", "algorithm.clients=40",
                        "algorithm.partition=\"iid\""});
  return tiny_config({"algorithm.name=\"" + info.name + "\""});
}

// The world an algorithm runs on here: two ranks, except `single`, which refuses more than one.
int64_t world_for(const AlgorithmInfo& info) { return info.name == "single" ? 1 : 2; }

// Registered algorithms without a page in docs/algorithms/ yet. Take a name out when its page
// is written: EveryAlgorithmHasADocPage fails while a listed page exists.
const std::set<std::string> kNoPageYet = {};

TEST(Registry, EveryEntryIsNamedOnceAndDescribed) {
  ASSERT_FALSE(algorithm_registry().empty());
  std::set<std::string> names;
  for (const AlgorithmInfo& info : algorithm_registry()) {
    SCOPED_TRACE(info.name);
    EXPECT_FALSE(info.name.empty());
    EXPECT_TRUE(names.insert(info.name).second) << "registered twice";
    EXPECT_FALSE(info.family.empty());
    EXPECT_FALSE(info.summary.empty());
    EXPECT_TRUE(static_cast<bool>(info.make));
  }
}

TEST(Registry, EveryAlgorithmBuildsFromADefaultConfigWithSaneTraits) {
  for (const AlgorithmInfo& info : algorithm_registry()) {
    SCOPED_TRACE(info.name);
    std::unique_ptr<Algorithm> algorithm;
    ASSERT_NO_THROW(algorithm = make_algorithm(default_config(info).algorithm));
    ASSERT_NE(algorithm, nullptr);
    const AlgorithmTraits& traits = algorithm->traits();
    EXPECT_GE(traits.accumulations_per_step, 1);
    EXPECT_TRUE(traits.data == AlgorithmTraits::Data::kSharded ||
                traits.data == AlgorithmTraits::Data::kFirstRank);
  }
}

TEST(Registry, EveryAlgorithmHasADocPage) {
  const std::filesystem::path docs =
      std::filesystem::path(testing::source_dir()) / "docs/algorithms";
  ASSERT_TRUE(std::filesystem::is_directory(docs)) << docs;
  for (const AlgorithmInfo& info : algorithm_registry()) {
    const std::filesystem::path page = docs / (info.name + ".md");
    if (kNoPageYet.count(info.name)) {
      EXPECT_FALSE(std::filesystem::exists(page))
          << page << " exists now: take " << info.name << " out of kNoPageYet";
      continue;
    }
    EXPECT_TRUE(std::filesystem::is_regular_file(page)) << info.name << ": no page " << page;
  }
}

TEST(Registry, EveryAlgorithmSetsUpAndTakesAStepOnAFakeWorld) {
  for (const AlgorithmInfo& info : algorithm_registry()) {
    SCOPED_TRACE(info.name);
    Config cfg = default_config(info);
    DatasetSplits data = load_dataset(cfg.data, 0);
    const int64_t world = world_for(info);
    std::vector<testing::RankState> ranks;
    ASSERT_NO_THROW(ranks = run_on_fake_world(cfg, world, 1, data));
    ASSERT_EQ(static_cast<int64_t>(ranks.size()), world);
    for (int64_t r = 0; r < world; ++r) {
      ASSERT_EQ(ranks[r].losses.size(), 1u) << "rank " << r;
      EXPECT_TRUE(std::isfinite(ranks[r].losses[0])) << "rank " << r;
      EXPECT_TRUE(flat_params(ranks[r].model).isfinite().all().item<bool>()) << "rank " << r;
    }
  }
}

}  // namespace
}  // namespace desync
