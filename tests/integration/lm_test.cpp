// The language-model workload across real processes: a tiny GPT on a generated corpus trained by
// every algorithm that runs on it, the equivalences that hold for it (DDP = single at the same
// global batch, ZeRO-1 = DDP with AdamW, a pipeline = single), the language-model figures of
// summary.json, and `desync generate`.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_util.h"

namespace desync {
namespace {

const std::string kDesync = testing::desync_binary();

// A tiny GPT (4 stages: embed, block0, block1, head) on byte tokens: no tokenizer to train.
const char* kJob = R"(
[run]
name = "lm"
steps = 5
log_every = 1
comm_timeout = 30
[data]
dataset = "text"
tokenizer = "bytes"
seq_len = 16
batch_size = 8
eval_batch_size = 64
text_test_fraction = 0.2
[model]
name = "gpt"
n_layer = 2
n_head = 2
d_model = 32
[optimizer]
name = "adamw"
lr = 3e-3
[eval]
limit = 128
[checkpoint]
enabled = false
)";

// Dictionary-like paragraphs from a seeded generator: learnable, and the same on every machine.
std::string corpus(int paragraphs) {
  const std::vector<std::string> words = {"the",  "a",     "of",   "to",   "make",  "light",
                                          "wind", "stone", "held", "over", "water", "quick",
                                          "old",  "kind",  "act",  "see",  "noun",  "verb"};
  uint64_t x = 12345;
  auto next = [&x] {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return x >> 33;
  };
  std::string text;
  for (int p = 0; p < paragraphs; ++p) {
    text += "Entry " + std::to_string(p) + ", n. ";
    for (int w = 0, n = 8 + static_cast<int>(next() % 12); w < n; ++w)
      text += words[next() % words.size()] + (w + 1 == n ? ".\n\n" : " ");
  }
  return text;
}

struct LmRun {
  testing::CommandResult result;
  nlohmann::json summary;
  std::vector<double> losses;
};

class Lm : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::write_file(dir_.file("corpus.txt"), corpus(600));
    testing::write_file(dir_.file("job.toml"), kJob);
  }

  LmRun train(const std::string& name, const std::string& args) const {
    LmRun r;
    r.result =
        testing::run_command(kDesync + " train " + dir_.file("job.toml") + " --quiet --out " +
                             dir_.file(name) + " --set 'data.path=\"" + dir_.file("corpus.txt") +
                             "\"' --set 'data.cache_dir=\"" + dir_.file("cache") + "\"' " + args);
    r.summary = nlohmann::json::parse(testing::read_file(dir_.file(name + "/summary.json")),
                                      nullptr, false);
    r.losses = testing::train_losses(dir_.file(name));
    return r;
  }

  testing::TempDir dir_;
};

void expect_close(const std::vector<double>& a, const std::vector<double>& b, double tol) {
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], tol) << "step " << i + 1;
}

TEST_F(Lm, DdpOnFourWorkersMatchesOneWorkerWithTheGlobalBatch) {
  LmRun single = train("single", "--set data.batch_size=16");
  LmRun ddp = train("ddp", "--workers 4 --set algorithm.name=ddp --set data.batch_size=4");
  ASSERT_EQ(single.result.status, 0) << single.result.output;
  ASSERT_EQ(ddp.result.status, 0) << ddp.result.output;
  expect_close(single.losses, ddp.losses, 1e-5);
  EXPECT_NEAR(single.summary["test_loss"].get<double>(), ddp.summary["test_loss"].get<double>(),
              1e-5);
  EXPECT_EQ(single.summary["tokens"], 5 * 16 * 16);
  EXPECT_EQ(ddp.summary["tokens"], single.summary["tokens"]);
}

TEST_F(Lm, Zero1MatchesDdpWithAdamW) {
  LmRun ddp = train("ddp", "--workers 2 --set algorithm.name=ddp");
  LmRun zero1 = train("zero1", "--workers 2 --set algorithm.name=zero1");
  ASSERT_EQ(ddp.result.status, 0) << ddp.result.output;
  ASSERT_EQ(zero1.result.status, 0) << zero1.result.output;
  expect_close(ddp.losses, zero1.losses, 1e-5);
}

TEST_F(Lm, PipelineOnFourProcessesMatchesOneWorker) {
  LmRun single = train("single", "--set algorithm.accumulation=4");
  ASSERT_EQ(single.result.status, 0) << single.result.output;
  for (const char* schedule : {"gpipe", "1f1b"}) {
    LmRun pipe = train(schedule, std::string("--workers 4 --set algorithm.name=pipeline "
                                             "--set algorithm.accumulation=4 "
                                             "--set algorithm.schedule=") +
                                     schedule);
    ASSERT_EQ(pipe.result.status, 0) << pipe.result.output;
    expect_close(single.losses, pipe.losses, 1e-5);
    EXPECT_NEAR(single.summary["test_loss"].get<double>(), pipe.summary["test_loss"].get<double>(),
                1e-5);
  }
}

// Every other method trains the GPT: the run succeeds and its loss falls over 30 steps (from the
// first step that reports one: a delayed pipeline's first steps complete no backward).
TEST_F(Lm, EveryMethodLowersTheLoss) {
  struct Case {
    std::string name, args;
  };
  const std::vector<Case> cases = {
      {"dpu", "--workers 2 --set algorithm.name=dpu --set algorithm.dpu.n_warmup=5"},
      {"acco", "--workers 2 --set algorithm.name=acco"},
      {"diloco", "--workers 2 --set algorithm.name=diloco --set algorithm.diloco.local_steps=5"},
      {"dpsgd", "--workers 3 --set algorithm.name=dpsgd"},
      {"adpsgd", "--workers 2 --set algorithm.name=adpsgd"},
      {"gasloc", "--workers 2 --set algorithm.name=gasloc --set algorithm.gasloc.local_steps=5"},
      {"pipedream", "--workers 4 --set algorithm.name=pipedream --set algorithm.accumulation=2"},
      {"dsp", "--workers 4 --set algorithm.name=dsp --set algorithm.accumulation=2"},
  };
  for (const Case& c : cases) {
    LmRun r = train(c.name, "--set run.steps=30 " + c.args);
    ASSERT_EQ(r.result.status, 0) << c.name << "\n" << r.result.output;
    ASSERT_GE(r.losses.size(), 10u) << c.name;
    double first = 0.0;
    for (double l : r.losses)
      if (first == 0.0) first = l;
    const double last = r.losses.back();
    ASSERT_GT(first, 0.0) << c.name;
    EXPECT_TRUE(std::isfinite(last)) << c.name;
    EXPECT_LT(last, first - 0.3) << c.name << ": loss " << first << " -> " << last;
    EXPECT_LT(r.summary["test_loss"].get<double>(), std::log(257.0)) << c.name;
  }
}

// Perplexity and bits per byte follow from the test loss and the test split's counts, which
// the token cache's manifest records independently of the trainer.
TEST_F(Lm, SummaryReportsPerplexityBitsPerByteAndThroughput) {
  LmRun r = train("single", "--set eval.limit=0");
  ASSERT_EQ(r.result.status, 0) << r.result.output;
  const auto& s = r.summary;
  const double loss = s["test_loss"].get<double>();
  EXPECT_NEAR(s["test_perplexity"].get<double>(), std::exp(loss), 1e-9 * std::exp(loss));
  // The byte tokenizer: one token per byte, plus one end-of-document token per document.
  const std::string text = testing::read_file(dir_.file("corpus.txt"));
  auto manifest = testing::run_command("cat " + dir_.file("cache") + "/*/manifest.json");
  ASSERT_EQ(manifest.status, 0) << manifest.output;
  const nlohmann::json m = nlohmann::json::parse(manifest.output, nullptr, false);
  ASSERT_FALSE(m.is_discarded()) << manifest.output;
  const double tokens = m["test"]["tokens"].get<double>();
  const double bytes = m["test"]["bytes"].get<double>();
  EXPECT_GT(tokens, bytes);  // the end-of-document tokens
  EXPECT_NEAR(s["test_bits_per_byte"].get<double>(), loss * tokens / bytes / std::log(2.0), 1e-9);
  EXPECT_GT(s["tokens_per_second"].get<double>(), 0.0);
  EXPECT_GT(s["flops_per_token"].get<double>(), 0.0);
  EXPECT_NEAR(s["gflops_per_second"].get<double>(),
              s["flops_per_token"].get<double>() * s["tokens_per_second"].get<double>() * 1e-9,
              1e-9 * s["gflops_per_second"].get<double>());
}

TEST_F(Lm, GenerateIsDeterministicForASeedAndNeedsALanguageModelRun) {
  LmRun r = train("run", "--set run.steps=20 --set checkpoint.enabled=true");
  ASSERT_EQ(r.result.status, 0) << r.result.output;
  auto generate = [&](const std::string& args) {
    return testing::run_command("(" + kDesync + " generate " + dir_.file("run") +
                                " --prompt 'Entry 7, n. the' --tokens 40 " + args + " 2>/dev/null)");
  };
  auto a = generate("--seed 1"), b = generate("--seed 1"), c = generate("--seed 2");
  ASSERT_EQ(a.status, 0) << a.output;
  EXPECT_EQ(a.output, b.output);
  EXPECT_NE(a.output, c.output);
  EXPECT_EQ(a.output.rfind("Entry 7, n. the", 0), 0u) << a.output;  // the prompt, continued
  EXPECT_GT(a.output.size(), std::string("Entry 7, n. the").size() + 10);
  auto greedy = generate("--temperature 0 --seed 1"),
       greedy2 = generate("--temperature 0 --seed 9");
  EXPECT_EQ(greedy.output, greedy2.output);  // no draws: the seed does not matter

  auto missing = testing::run_command(kDesync + " generate " + dir_.file("nowhere") + " 2>&1");
  EXPECT_EQ(missing.status, 2);
  EXPECT_NE(missing.output.find("is not a run directory"), std::string::npos) << missing.output;
}

}  // namespace
}  // namespace desync
