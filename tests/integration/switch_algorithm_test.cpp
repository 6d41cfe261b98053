// Comparing methods on one config, as users do: the documented DDP example trained with every
// data-parallel and decentralized algorithm selected by `--set algorithm.name=X` on real worker
// processes. Each algorithm's options sit in its own [algorithm.<name>] table, so switching
// needs no other change (tiny overrides keep each run to a few seconds).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "test_util.h"

namespace desync {
namespace {

const std::string kDesync = testing::desync_binary();
const std::string kExample = testing::source_dir() + "/examples/fmnist_ddp.toml";
const char* kFashionMnist = "/usr/share/datasets/fashion-mnist";

// A few steps on a slice of the data; nothing written but the run directory's files.
const std::string kTiny =
    " --quiet --set run.steps=4 --set run.log_every=1 --set data.train_limit=512"
    " --set data.test_limit=256 --set eval.limit=256 --set checkpoint.enabled=false";

// Trains the example with `algorithm` on `workers` processes; `extra` sets the algorithm's own
// keys into its table.
void trains_with(const std::string& algorithm, int workers, const std::string& extra = "") {
  if (!std::filesystem::exists(kFashionMnist))
    GTEST_SKIP() << "Fashion-MNIST not installed (scripts/install-deps installs it)";
  testing::TempDir dir;
  auto r = testing::run_command(kDesync + " train " + kExample + " --workers " +
                                std::to_string(workers) + " --out " + dir.file("run") + kTiny +
                                " --set algorithm.name=" + algorithm + " " + extra);
  ASSERT_EQ(r.status, 0) << r.output;
  auto summary = nlohmann::json::parse(testing::read_file(dir.file("run/summary.json")), nullptr,
                                       /*allow_exceptions=*/false);
  ASSERT_FALSE(summary.is_discarded()) << r.output;
  EXPECT_EQ(summary["algorithm"], algorithm);
  EXPECT_EQ(summary["workers"], workers);
  EXPECT_EQ(summary["steps"], 4);
  EXPECT_EQ(testing::train_losses(dir.file("run")).size(), 4u);
  // The resolved config names the algorithm and keeps DDP's table beside the run's.
  std::string resolved = testing::read_file(dir.file("run/config.toml"));
  EXPECT_NE(resolved.find("name = \"" + algorithm + "\""), std::string::npos) << resolved;
  EXPECT_NE(resolved.find("[algorithm.ddp]"), std::string::npos) << resolved;
}

TEST(SwitchAlgorithm, Single) { trains_with("single", 1); }
TEST(SwitchAlgorithm, Ddp) { trains_with("ddp", 2); }
TEST(SwitchAlgorithm, Zero1) { trains_with("zero1", 2); }
TEST(SwitchAlgorithm, Dpu) { trains_with("dpu", 2, "--set algorithm.dpu.n_warmup=1"); }
TEST(SwitchAlgorithm, Acco) { trains_with("acco", 2); }
TEST(SwitchAlgorithm, Diloco) { trains_with("diloco", 2, "--set algorithm.diloco.local_steps=2"); }
TEST(SwitchAlgorithm, Dpsgd) { trains_with("dpsgd", 2); }
TEST(SwitchAlgorithm, Adpsgd) { trains_with("adpsgd", 2); }
TEST(SwitchAlgorithm, Gasloc) { trains_with("gasloc", 2, "--set algorithm.gasloc.local_steps=2"); }

// A typo in the table of an algorithm the run does not select still stops the run, before any
// worker starts, with one line naming the key.
TEST(SwitchAlgorithm, TypoInAnUnselectedTableExitsTwo) {
  auto r = testing::run_command(kDesync + " train " + kExample +
                                " --quiet --set algorithm.acco.fixed_cont=true");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("unknown key algorithm.acco.fixed_cont"), std::string::npos) << r.output;
}

// DDP's key flat in [algorithm] (the older form) with another algorithm selected names its owner.
TEST(SwitchAlgorithm, ForeignFlatKeyNamesItsAlgorithm) {
  auto r = testing::run_command(kDesync + " train " + kExample +
                                " --quiet --set algorithm.name=acco"
                                " --set algorithm.bucket_cap_mb=10");
  EXPECT_EQ(r.status, 2) << r.output;
  EXPECT_NE(r.output.find("algorithm.bucket_cap_mb is an option of ddp, not of acco; put it "
                          "under [algorithm.ddp]"),
            std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace desync
