#include "desync/core/config.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "desync/algorithms/registry.h"
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

// The message of the ConfigError that validating the algorithm section throws, or "" if none.
std::string algorithm_error(const std::string& text,
                            const std::vector<std::string>& overrides = {}) {
  try {
    Config c = parse_config(text, "cfg.toml", overrides);
    validate_algorithms(c.algorithm);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
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

TEST(Config, UnknownBackendListsGlooAndNccl) {
  EXPECT_EQ(parse_config("", "cfg.toml").run.backend, "gloo");
  EXPECT_EQ(parse_config("[run]\nbackend = \"nccl\"\n", "cfg.toml").run.backend, "nccl");
  std::string e = config_error("[run]\nbackend = \"mpi\"\n");
  EXPECT_NE(e.find("run.backend = \"mpi\" is not one of: gloo, nccl"), std::string::npos) << e;
  e = config_error("", {"run.backend=mpi"});
  EXPECT_NE(e.find("--set: run.backend"), std::string::npos) << e;
}

TEST(Config, NcclBackendWithSeveralWorkersNeedsACudaBuild) {
  Config c = parse_config("[run]\nbackend = \"nccl\"\n", "cfg.toml");
  EXPECT_NO_THROW(validate_for_world(c, 1));
#ifndef DESYNC_CUDA
  try {
    validate_for_world(c, 2);
    FAIL() << "nccl accepted by a build without CUDA";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("-DDESYNC_CUDA=ON"), std::string::npos) << e.what();
  }
#endif
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

const char* kTwoTables = R"([algorithm]
name = "ddp"
[algorithm.ddp]
bucket_cap_mb = 10
[algorithm.acco]
fixed_count = true
accumulation = 3
)";

TEST(AlgorithmTables, KeysApplyOnlyToTheSelectedAlgorithm) {
  Config ddp = parse_config(kTwoTables, "cfg.toml");
  EXPECT_EQ(ddp.algorithm.accumulation, 1);
  {
    SectionReader r = algorithm_options(ddp.algorithm);
    EXPECT_DOUBLE_EQ(r.get("bucket_cap_mb", 25.0), 10.0);
    EXPECT_FALSE(r.get("fixed_count", false));  // acco's key is not ddp's
    EXPECT_EQ(r.where("bucket_cap_mb"), "cfg.toml:4");
  }
  EXPECT_NO_THROW(make_algorithm(ddp.algorithm));

  Config acco = parse_config(kTwoTables, "cfg.toml", {"algorithm.name=acco"});
  EXPECT_EQ(acco.algorithm.accumulation, 3);  // the table's accumulation
  {
    SectionReader r = algorithm_options(acco.algorithm);
    EXPECT_TRUE(r.get("fixed_count", false));
    EXPECT_DOUBLE_EQ(r.get("bucket_cap_mb", 25.0), 25.0);
  }
  EXPECT_NO_THROW(make_algorithm(acco.algorithm));
  // Algorithms without a table get the defaults.
  EXPECT_NO_THROW(
      make_algorithm(parse_config(kTwoTables, "cfg.toml", {"algorithm.name=zero1"}).algorithm));
}

TEST(AlgorithmTables, TypoInAnUnselectedTableFails) {
  std::string e =
      algorithm_error("[algorithm]\nname = \"ddp\"\n[algorithm.acco]\nfixed_cont = 1\n");
  EXPECT_TRUE(contains(e, "cfg.toml:4: unknown key algorithm.acco.fixed_cont")) << e;
  EXPECT_TRUE(contains(e, "fixed_count")) << e;  // the valid keys
  e = algorithm_error("[algorithm]\nname = \"ddp\"\n[algorithm.acco]\nfixed_count = 1\n");
  EXPECT_TRUE(contains(e, "cfg.toml:4: algorithm.acco.fixed_count must be true or false")) << e;
  e = algorithm_error("[algorithm]\nname = \"single\"\n[algorithm.diloco]\nlocal_steps = 0\n");
  EXPECT_TRUE(contains(e, "algorithm.diloco.local_steps = 0 is out of range")) << e;
  // make_algorithm, which the CLI and the trainer call, validates the same way.
  Config c =
      parse_config("[algorithm]\nname = \"ddp\"\n[algorithm.acco]\nfixed_cont = 1\n", "cfg.toml");
  EXPECT_THROW(make_algorithm(c.algorithm), ConfigError);
}

TEST(AlgorithmTables, TableThatIsNoAlgorithmListsTheNames) {
  std::string e = algorithm_error("[algorithm]\nname = \"ddp\"\n[algorithm.adam]\nlr = 1\n");
  EXPECT_TRUE(contains(e, "[algorithm.adam] is not an algorithm")) << e;
  EXPECT_TRUE(contains(e, "single, ddp, zero1")) << e;
  e = algorithm_error("[algorithm]\nname = \"ddp\"\n", {"algorithm.dp.bucket_cap_mb=3"});
  EXPECT_TRUE(contains(e, "[algorithm.dp] is not an algorithm")) << e;
}

TEST(AlgorithmTables, FlatForeignKeyNamesItsAlgorithm) {
  const std::string flat_ddp = "[run]\nseed = 1\n[algorithm]\nname = \"ddp\"\nbucket_cap_mb = 25\n";
  // The flat (older) form still works for the selected algorithm.
  Config c = parse_config(flat_ddp, "test.toml");
  EXPECT_DOUBLE_EQ(algorithm_options(c.algorithm).get("bucket_cap_mb", 1.0), 25.0);
  EXPECT_NO_THROW(make_algorithm(c.algorithm));

  std::string e = algorithm_error(flat_ddp, {"algorithm.name=acco"});
  EXPECT_EQ(e,
            "cfg.toml:5: algorithm.bucket_cap_mb is an option of ddp, not of acco; put it under "
            "[algorithm.ddp]");
  e = algorithm_error("[algorithm]\nname = \"ddp\"\nlocal_steps = 4\n");
  EXPECT_TRUE(contains(e,
                       "algorithm.local_steps is an option of diloco, gasloc, fedavg, fedlp, "
                       "fedncm, not of ddp; put it under [algorithm.diloco] or [algorithm.gasloc] "
                       "or [algorithm.fedavg] or [algorithm.fedlp] or [algorithm.fedncm]"))
      << e;
  e = algorithm_error("[algorithm]\nname = \"ddp\"\n[algorithm.acco]\nbucket_cap_mb = 4\n");
  EXPECT_TRUE(contains(e,
                       "cfg.toml:4: algorithm.acco.bucket_cap_mb is an option of ddp, not of "
                       "acco; put it under [algorithm.ddp]"))
      << e;
  e = algorithm_error("", {"algorithm.name=ddp", "algorithm.outer_lr=0.7"});
  EXPECT_TRUE(contains(e, "--set: algorithm.outer_lr is an option of diloco, gasloc")) << e;
  // A key no algorithm has is an unknown key of the selected one.
  e = algorithm_error("[algorithm]\nname = \"ddp\"\nwarmup = 3\n");
  EXPECT_TRUE(contains(e, "cfg.toml:3: unknown key algorithm.warmup; valid keys:")) << e;
  EXPECT_TRUE(contains(e, "bucket_cap_mb")) << e;
}

TEST(AlgorithmTables, SetIntoATable) {
  Config c = parse_config(kTwoTables, "cfg.toml",
                          {"algorithm.ddp.bucket_cap_mb=5", "algorithm.ddp.overlap=false"});
  SectionReader r = algorithm_options(c.algorithm);
  EXPECT_DOUBLE_EQ(r.get("bucket_cap_mb", 25.0), 5.0);
  EXPECT_FALSE(r.get("overlap", true));
  EXPECT_EQ(r.where("bucket_cap_mb"), "--set");
  r.finish();
  // Into a table the file does not have, and into an unselected table.
  c = parse_config("", "cfg.toml",
                   {"algorithm.name=diloco", "algorithm.diloco.local_steps=2",
                    "algorithm.gasloc.local_steps=3"});
  EXPECT_EQ(algorithm_options(c.algorithm).get("local_steps", int64_t{20}), 2);
  EXPECT_NO_THROW(make_algorithm(c.algorithm));
  std::string e = algorithm_error("", {"algorithm.name=ddp", "algorithm.acco.fixed_cont=true"});
  EXPECT_TRUE(contains(e, "--set: unknown key algorithm.acco.fixed_cont")) << e;
  e = config_error("[algorithm]\nname = \"ddp\"\n", {"algorithm.name.x=1"});
  EXPECT_TRUE(contains(e, "--set algorithm.name.x=1: algorithm.name is not a table")) << e;
  e = config_error("", {"algorithm..x=1"});
  EXPECT_TRUE(contains(e, "section.key")) << e;
}

TEST(AlgorithmTables, KeyBothFlatAndInTheTable) {
  const std::string both =
      "[algorithm]\nname = \"ddp\"\nbucket_cap_mb = 1\n[algorithm.ddp]\nbucket_cap_mb = 2\n";
  // Both in the file: an error naming both places.
  std::string e = config_error(both);
  EXPECT_EQ(e,
            "cfg.toml:3: algorithm.bucket_cap_mb is also set in [algorithm.ddp] (cfg.toml:5); set "
            "it in one place, preferably [algorithm.ddp]");
  // A --set value beats the file's, flat or in the table.
  Config c = parse_config("[algorithm]\nname = \"ddp\"\n[algorithm.ddp]\nbucket_cap_mb = 2\n",
                          "cfg.toml", {"algorithm.bucket_cap_mb=7"});
  EXPECT_DOUBLE_EQ(algorithm_options(c.algorithm).get("bucket_cap_mb", 25.0), 7.0);
  EXPECT_NO_THROW(make_algorithm(c.algorithm));
  c = parse_config("[algorithm]\nname = \"ddp\"\nbucket_cap_mb = 2\n", "cfg.toml",
                   {"algorithm.ddp.bucket_cap_mb=8"});
  EXPECT_DOUBLE_EQ(algorithm_options(c.algorithm).get("bucket_cap_mb", 25.0), 8.0);
  // Both from --set: an error.
  e = config_error(
      "", {"algorithm.name=ddp", "algorithm.bucket_cap_mb=1", "algorithm.ddp.bucket_cap_mb=2"});
  EXPECT_TRUE(contains(e, "also set in [algorithm.ddp]")) << e;
  // Only the selected algorithm's table conflicts with flat keys.
  c = parse_config(
      "[algorithm]\nname = \"diloco\"\nlocal_steps = 4\n[algorithm.gasloc]\n"
      "local_steps = 8\n",
      "cfg.toml");
  EXPECT_EQ(algorithm_options(c.algorithm).get("local_steps", int64_t{1}), 4);
  EXPECT_NO_THROW(make_algorithm(c.algorithm));
}

TEST(AlgorithmTables, AccumulationIsCommonAndPerTable) {
  const std::string text =
      "[algorithm]\nname = \"acco\"\naccumulation = 2\n[algorithm.acco]\naccumulation = 4\n"
      "[algorithm.dpu]\nn_warmup = 1\n";
  EXPECT_EQ(parse_config(text, "cfg.toml").algorithm.accumulation, 4);  // the table's
  Config dpu = parse_config(text, "cfg.toml", {"algorithm.name=dpu"});
  EXPECT_EQ(dpu.algorithm.accumulation, 2);  // [algorithm]'s
  EXPECT_EQ(dpu.algorithm.for_table("acco").accumulation, 4);
  // --set beats the file, at either level.
  EXPECT_EQ(parse_config(text, "cfg.toml", {"algorithm.accumulation=8"}).algorithm.accumulation, 8);
  EXPECT_EQ(
      parse_config(text, "cfg.toml", {"algorithm.acco.accumulation=5"}).algorithm.accumulation, 5);
  // Validated in every table; a table takes no name.
  std::string e = config_error("[algorithm]\nname = \"ddp\"\n[algorithm.acco]\naccumulation = 0\n");
  EXPECT_TRUE(contains(e, "cfg.toml:4: algorithm.acco.accumulation = 0 is out of range")) << e;
  e = config_error("[algorithm]\nname = \"ddp\"\n[algorithm.ddp]\nname = \"acco\"\n");
  EXPECT_TRUE(contains(e, "cfg.toml:4: algorithm.ddp.name")) << e;
  EXPECT_TRUE(contains(e, "algorithm.name selects")) << e;
}

TEST(AlgorithmTables, ResolvedConfigRoundTripsAndMovesFlatKeysIntoTheTable) {
  const std::string text =
      "[algorithm]\nname = \"ddp\"\naccumulation = 2\nfirst_bucket_mb = 2\n"
      "[algorithm.ddp]\naccumulation = 3\n[algorithm.acco]\nfixed_count = true\n"
      "[algorithm.dpu]\nn_warmup = 5\naccumulation = 3\n";
  Config a = parse_config(text, "cfg.toml",
                          {"algorithm.ddp.bucket_cap_mb=10", "algorithm.diloco.local_steps=2"});
  std::string resolved = a.resolved_toml();
  Config b = parse_config(resolved, "resolved.toml");
  EXPECT_EQ(b.algorithm.name, "ddp");
  EXPECT_EQ(b.algorithm.accumulation, 3);
  EXPECT_EQ(b.algorithm.section()->get("accumulation")->value_or(int64_t{0}), 2) << resolved;
  {
    SectionReader r = algorithm_options(b.algorithm);
    EXPECT_DOUBLE_EQ(r.get("bucket_cap_mb", 25.0), 10.0);
    EXPECT_DOUBLE_EQ(r.get("first_bucket_mb", 1.0), 2.0);
    EXPECT_TRUE(r.where("first_bucket_mb") != "resolved.toml") << resolved;
  }
  // The flat key went into [algorithm.ddp]: switching algorithms on the resolved file works.
  const toml::table* ddp = b.algorithm.table();
  ASSERT_NE(ddp, nullptr) << resolved;
  EXPECT_TRUE(ddp->contains("first_bucket_mb")) << resolved;
  EXPECT_FALSE(b.algorithm.section()->contains("first_bucket_mb")) << resolved;
  EXPECT_NO_THROW(make_algorithm(b.algorithm));
  // Every other algorithm gets what it got from the original.
  for (std::string other : {"acco", "dpu", "diloco", "zero1"}) {
    Config from_a = parse_config(text, "cfg.toml",
                                 {"algorithm.ddp.bucket_cap_mb=10",
                                  "algorithm.diloco.local_steps=2", "algorithm.name=" + other});
    Config from_b = parse_config(resolved, "resolved.toml", {"algorithm.name=" + other});
    EXPECT_EQ(from_a.algorithm.accumulation, from_b.algorithm.accumulation) << other;
    EXPECT_NO_THROW(make_algorithm(from_b.algorithm)) << other;
  }
  EXPECT_EQ(parse_config(resolved, "r.toml", {"algorithm.name=acco"}).algorithm.accumulation, 2);
  EXPECT_EQ(algorithm_options(parse_config(resolved, "r.toml", {"algorithm.name=diloco"}).algorithm)
                .get("local_steps", int64_t{20}),
            2);
  EXPECT_EQ(resolved, b.resolved_toml());
}

TEST(Config, DataBudgetKeys) {
  Config c = parse_config("[run]\nsamples = 6400\n", "cfg.toml");
  EXPECT_EQ(c.run.samples, 6400);
  EXPECT_EQ(c.run.tokens, 0);
  c = parse_config("[run]\ntokens = 100000\nsteps = 10\n[data]\ndataset = \"text\"\n", "cfg.toml");
  EXPECT_EQ(c.run.tokens, 100000);
  EXPECT_EQ(c.run.steps, 10);  // steps > 0 takes precedence; both may be set

  std::string e = config_error("[run]\nsamples = -1\n");
  EXPECT_TRUE(contains(e, "cfg.toml:2: run.samples = -1 is out of range: must be >= 0")) << e;
  e = config_error("[run]\ntokens = -5\n[data]\ndataset = \"text\"\n");
  EXPECT_TRUE(contains(e, "run.tokens = -5 is out of range")) << e;
  e = config_error("[run]\nsamples = 10\ntokens = 64\n[data]\ndataset = \"text\"\n");
  EXPECT_TRUE(contains(e, "cfg.toml:3: run.samples and run.tokens are both set")) << e;
  e = config_error("[run]\ntokens = 640\n");
  EXPECT_TRUE(
      contains(e,
               "cfg.toml:2: run.tokens needs a sequence dataset (data.dataset = \"text\" or "
               "\"gcide\"), not \"fashion-mnist\""))
      << e;
  e = config_error("", {"run.tokens=640", "data.dataset=synthetic"});
  EXPECT_TRUE(contains(e, "--set: run.tokens needs a sequence dataset")) << e;

  // Resolved: the budget reproduces.
  c = parse_config("[run]\ntokens = 4096\nepochs = 2\n[data]\ndataset = \"text\"\n", "cfg.toml");
  Config again = parse_config(c.resolved_toml(), "resolved.toml");
  EXPECT_EQ(again.run.tokens, 4096);
  EXPECT_EQ(again.run.samples, 0);
  EXPECT_DOUBLE_EQ(again.run.epochs, 2.0);
}

TEST(Config, ValidateForWorldChecksWorkerSpeed) {
  Config c = parse_config("[run]\nworker_speed = [1.0, 0.5]\n", "cfg.toml");
  EXPECT_NO_THROW(validate_for_world(c, 2));
  try {
    validate_for_world(c, 3);
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "run.worker_speed has 2 entries; the job has 3 workers");
  }
  EXPECT_NO_THROW(validate_for_world(parse_config("", "cfg.toml"), 5));
}

// Every example validates as written, and with any algorithm selected instead: the options of
// each algorithm sit in its own table.
TEST(AlgorithmTables, EveryExampleValidatesWithEveryAlgorithm) {
  int examples = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(testing::source_dir() + "/examples")) {
    if (entry.path().extension() != ".toml") continue;
    ++examples;
    const std::string path = entry.path().string();
    EXPECT_NO_THROW(make_algorithm(load_config(path).algorithm)) << path;
    for (const AlgorithmInfo& info : algorithm_registry()) {
      try {
        make_algorithm(load_config(path, {"algorithm.name=" + info.name}).algorithm);
      } catch (const ConfigError& e) {
        ADD_FAILURE() << path << " with algorithm.name=" << info.name << ": " << e.what();
      }
    }
  }
  EXPECT_GE(examples, 10);
}

}  // namespace
}  // namespace desync

namespace desync {
namespace {

// Inputs found by fuzz/config_fuzz.cpp (seeds under fuzz/corpus/config/regression-*).
TEST(ConfigFuzzRegressions, ControlCharacterAfterTableBracketIsAConfigError) {
  // toml++ 3.3.0 asserts in parse_key() on this before it reports the error; with assertions off
  // (NDEBUG, as desync builds it) it reports the error.
  try {
    parse_config(std::string("[\x01", 2), "fuzz.toml");
    FAIL() << "parsed";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("fuzz.toml:1"), std::string::npos) << e.what();
  }
}

TEST(ConfigFuzzRegressions, NonAsciiOutsideStringsIsRefusedBeforeTomlSeesIt) {
  // toml++ 3.3.0 reaches __builtin_unreachable() on U+0394 read in a bare key ("[Δ").
  for (const std::string text : {"[Δ]\n", "[run]\nnamé = 1\n", "[run]\n\n\u3000steps = 3\n"}) {
    try {
      parse_config(text, "u.toml");
      FAIL() << "parsed: " << text;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("a non-ASCII character outside a string or comment"),
                std::string::npos)
          << e.what();
    }
  }
  try {
    parse_config("[run]\n\n\u3000steps = 3\n", "u.toml");
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("u.toml:3:"), std::string::npos) << e.what();
  }
  // Inside strings and comments, and after a byte-order mark, non-ASCII text is fine; so is an
  // override's bare word.
  const std::string text =
      "\xEF\xBB\xBF# café\n"
      "[run]\n"
      "name = \"a \\\"café\\\" ☕\"  # Δ\n"
      "out = '''\nruns/é'''\n"
      "[data]\n"
      "cache_dir = \"\"\"x\"yé\"\"\"\n";
  const Config c = parse_config(text, "ok.toml", {"optimizer.name=adamw", "model.name=mlp"});
  EXPECT_EQ(c.run.name, "a \"café\" ☕");
  EXPECT_EQ(c.run.out, "runs/é");
  EXPECT_EQ(c.data.cache_dir, "x\"yé");
  EXPECT_EQ(parse_config("", "o.toml", {"run.name=café"}).run.name, "café");
}

TEST(ConfigFuzzRegressions, ResolvedTomlOfAnyStringParsesBack) {
  // toml++ 3.3.0 wrote this name as a multi-line literal string, which cannot hold '''.
  const Config c = parse_config(R"([run]
name = "a'''b# \n\"\"\" \\ é"
)",
                                "n.toml");
  EXPECT_EQ(c.run.name, "a'''b# \n\"\"\" \\ é");
  const std::string resolved = c.resolved_toml();
  EXPECT_EQ(parse_config(resolved, "resolved.toml").run.name, c.run.name) << resolved;
}

TEST(ConfigFuzzRegressions, AlgorithmNamesAreBareKeys) {
  // An algorithm's name names its table, [algorithm.<name>], and toml++ 3.3.0 wrote the header
  // [algorithm.f''''] unquoted: the resolved config did not parse back.
  for (const std::string text : {"[algorithm]\nname = \"f''''\"\nx = 55\n",
                                 "[algorithm]\nname = \"\"\n", "[algorithm.\"a b\"]\nx = 1\n"}) {
    try {
      parse_config(text, "a.toml");
      FAIL() << "parsed: " << text;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("letters, digits, '_' and '-'"), std::string::npos)
          << e.what();
    }
  }
  const Config c = parse_config("[algorithm]\nname = \"my_algo-2\"\nx = 55\n", "a.toml");
  const std::string resolved = c.resolved_toml();
  EXPECT_EQ(parse_config(resolved, "resolved.toml").resolved_toml(), resolved);
}

TEST(ConfigFuzzRegressions, TomlSeesOnlyAsciiAndStringsKeepTheirValues) {
  // toml++ 3.3.0 also tests the character after a backslash in a multi-line string, and looks
  // ahead past a malformed value, with the same unreachable code: it now sees \u escapes.
  EXPECT_EQ(parse_config("[run]\nname = \"\"\"a \\\n\n   é\"\"\"\n", "b.toml").run.name, "a é");
  EXPECT_THROW(parse_config("[run]\nname = \"\"\"\\é\"\"\"\n", "b.toml"), ConfigError);
  EXPECT_THROW(parse_config("[run]\nlr = 1\"\"\"ё:\ndn =r\"", "b.toml"), ConfigError);
  // Literal strings keep their backslashes and quotes, multi-line ones the quotes before the
  // delimiter; code points beyond the BMP survive.
  const Config c = parse_config(
      "[run]\nname = 'C:\\é\"x'\nout = '''a\\''''\n[data]\n"
      "cache_dir = \"😀\\t\\\"q\\\"\"\n",
      "l.toml");
  EXPECT_EQ(c.run.name, "C:\\é\"x");
  EXPECT_EQ(c.run.out, "a\\'");
  EXPECT_EQ(c.data.cache_dir, "😀\t\"q\"");
  try {
    parse_config("[run]\n\nname = \"\xC3\"\n", "u.toml");
    FAIL() << "parsed";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("u.toml:3: invalid UTF-8 in a string"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace desync
