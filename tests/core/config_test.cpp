#include "desync/core/config.h"

#include <gtest/gtest.h>

#include "desync/core/error.h"
#include "test_util.h"

namespace desync {
namespace {

// The message of the ConfigError that parsing `text` (with overrides) throws, or "" if none.
std::string config_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(text, "cfg.toml", overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Config, DefaultsWhenSectionsAreMissing) {
  Config c = parse_config("", "empty.toml");
  EXPECT_EQ(c.algorithm.name, "single");
  EXPECT_EQ(c.data.dataset, "fashion-mnist");
  EXPECT_EQ(c.model.name, "cnn");
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 0.1);
  EXPECT_EQ(c.algorithm.accumulation, 1);
}

TEST(Config, ReadsTypedValues) {
  Config c = parse_config(R"(
[run]
seed = 7
steps = 100
[data]
dataset = "synthetic"
synthetic_shape = [3, 4]
[model]
name = "mlp"
hidden = [32, 16]
[optimizer]
name = "adamw"
lr = 3e-4
weight_decay = 0.1
[schedule]
name = "cosine"
warmup_steps = 10
[algorithm]
accumulation = 4
)",
                          "cfg.toml");
  EXPECT_EQ(c.run.seed, 7);
  EXPECT_EQ(c.run.steps, 100);
  EXPECT_EQ(c.data.synthetic_shape, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(c.model.hidden, (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(c.optimizer.name, "adamw");
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 3e-4);
  EXPECT_EQ(c.schedule.name, "cosine");
  EXPECT_EQ(c.algorithm.accumulation, 4);
}

TEST(Config, UnknownKeyNamesKeyFileLineAndValidKeys) {
  std::string e = config_error("[optimizer]\nlr = 0.1\nlrr = 0.2\n");
  EXPECT_NE(e.find("cfg.toml:3"), std::string::npos) << e;
  EXPECT_NE(e.find("optimizer.lrr"), std::string::npos) << e;
  EXPECT_NE(e.find("valid keys:"), std::string::npos) << e;
  EXPECT_NE(e.find("momentum"), std::string::npos) << e;
}

TEST(Config, UnknownSectionIsRejected) {
  std::string e = config_error("[optimiser]\nlr = 0.1\n");
  EXPECT_NE(e.find("unknown section [optimiser]"), std::string::npos) << e;
  EXPECT_NE(e.find("optimizer"), std::string::npos) << e;
}

TEST(Config, WrongTypeIsRejected) {
  std::string e = config_error("[data]\nbatch_size = \"64\"\n");
  EXPECT_NE(e.find("cfg.toml:2"), std::string::npos) << e;
  EXPECT_NE(e.find("data.batch_size must be an integer, not a string"), std::string::npos) << e;
}

TEST(Config, OutOfRangeIsRejected) {
  std::string e = config_error("[optimizer]\nlr = -1.0\n");
  EXPECT_NE(e.find("optimizer.lr = -1 is out of range: must be > 0"), std::string::npos) << e;
  e = config_error("[optimizer]\nmomentum = 1.5\n");
  EXPECT_NE(e.find("optimizer.momentum"), std::string::npos) << e;
}

TEST(Config, InvalidChoiceListsChoices) {
  std::string e = config_error("[model]\nname = \"vgg\"\n");
  EXPECT_NE(e.find("model.name = \"vgg\" is not one of: mlp, cnn, resnet18"), std::string::npos)
      << e;
}

TEST(Config, SyntaxErrorNamesLine) {
  std::string e = config_error("[run]\nseed = = 3\n");
  EXPECT_NE(e.find("cfg.toml:2"), std::string::npos) << e;
}

TEST(Config, OverridesReplaceFileValues) {
  Config c = parse_config("[optimizer]\nlr = 0.1\n", "cfg.toml",
                          {"optimizer.lr=0.01", "optimizer.name=adamw", "model.hidden=[8, 8]",
                           "optimizer.nesterov=false"});
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 0.01);
  EXPECT_EQ(c.optimizer.name, "adamw");
  EXPECT_EQ(c.model.hidden, (std::vector<int64_t>{8, 8}));
}

TEST(Config, BadOverridesAreNamedAsOverrides) {
  EXPECT_NE(config_error("", {"optimizer.lr=-3"}).find("--set: optimizer.lr"), std::string::npos);
  EXPECT_NE(config_error("", {"optimizer.lrr=3"}).find("unknown key optimizer.lrr"),
            std::string::npos);
  EXPECT_NE(config_error("", {"lr=3"}).find("section.key"), std::string::npos);
  EXPECT_NE(config_error("", {"opt.lr=3"}).find("unknown section opt"), std::string::npos);
}

TEST(Config, NesterovNeedsMomentum) {
  std::string e = config_error("[optimizer]\nnesterov = true\n");
  EXPECT_NE(e.find("nesterov needs momentum > 0"), std::string::npos) << e;
}

TEST(Config, ResolvedTomlRoundTrips) {
  Config a = parse_config(
      "[optimizer]\nname = \"adamw\"\nlr = 0.003\n[algorithm]\naccumulation = 3\n", "cfg.toml");
  Config b = parse_config(a.resolved_toml(), "resolved.toml");
  EXPECT_EQ(b.optimizer.name, "adamw");
  EXPECT_DOUBLE_EQ(b.optimizer.lr, 0.003);
  EXPECT_EQ(b.algorithm.accumulation, 3);
  EXPECT_EQ(b.data.batch_size, a.data.batch_size);
  EXPECT_EQ(a.resolved_toml(), b.resolved_toml());
}

TEST(Config, MissingFileIsAConfigError) {
  EXPECT_THROW(load_config("/nonexistent/desync.toml"), ConfigError);
}

TEST(Config, LoadsFromFile) {
  testing::TempDir dir;
  testing::write_file(dir.file("c.toml"), "[run]\nseed = 5\n");
  EXPECT_EQ(load_config(dir.file("c.toml")).run.seed, 5);
}

}  // namespace
}  // namespace desync
