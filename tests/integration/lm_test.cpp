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

struct LmRun {
  testing::CommandResult result;
  nlohmann::json summary;
  std::vector<double> losses;
};

class Lm : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::write_file(dir_.file("corpus.txt"), testing::dictionary_corpus(600));
    testing::write_file(dir_.file("job.toml"), kJob);
  }

  LmRun train(const std::string& name, const std::string& args, const std::string& env = "") const {
    LmRun r;
    r.result = testing::run_command(env + " " + kDesync + " train " + dir_.file("job.toml") +
                                    " --quiet --out " + dir_.file(name) + " --set 'data.path=\"" +
                                    dir_.file("corpus.txt") + "\"' --set 'data.cache_dir=\"" +
                                    dir_.file("cache") + "\"' " + args);
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

// Boundary compression on 2 pipeline processes (one boundary of width d = 32; 5 steps of 4
// micro-batches of 8 x 16 tokens): the bytes each rank hands the Communicator, against the
// codec's formula (docs/compression.md#bytes), for every setting. Per micro-batch, forward: an
// 8-byte id, the payload, the token ids when the codec needs them (int32, one slot of b = 4
// bytes), the labels (int64); backward: the id and the payload. Per step (MAPL): the projector or
// the sender's part of its gradient forward, the receiver's part backward (d r b each), and with
// the shared anchor a row count and the changed rows backward.
TEST_F(Lm, CompressedPipelineBytesMatchTheCodecFormula) {
  struct Case {
    std::string name, args;
    double forward_payload, backward_payload;  // bytes per token
    bool tokens;
    double forward_per_step, backward_per_step;
  };
  const double d = 32, b = 4, dr = 32 * 8 * 4;  // r = 8 (ratio 4)
  const std::string mapl = "--set algorithm.compression=mapl --set algorithm.compression_ratio=4 ";
  const std::string receiver = "--set algorithm.anchor=receiver ";
  // VQ: G = 4 groups, R = 2 levels, K = 16 codes (4 bits): 8 indices of 4 bits a token; a slice
  // of 4 rows of the 8 codebooks of 2 coordinates per micro-batch (128 tokens).
  const std::string vq =
      "--set algorithm.vq=true --set algorithm.vq_groups=4 --set algorithm.vq_levels=2 "
      "--set algorithm.vq_codes=16 --set algorithm.vq_stream_rows=4 ";
  const std::vector<Case> cases = {
      {"none", "", d * b, d * b, false, 0, 0},
      {"ssn", "--set algorithm.compression=ssn --set algorithm.compression_ratio=4", 8 * b, 8 * b,
       true, 0, 0},
      {"mapl_no_anchor", mapl + "--set algorithm.anchor=none", 8 * b, 8 * b, false, dr, dr},
      {"mapl_receiver", mapl + receiver, 8 * b, 8 * b, true, dr, dr},
      {"mapl_bf16", mapl + receiver + "--set algorithm.backward_dtype=bfloat16", 8 * b, 8 * 2, true,
       dr, dr},
      {"mapl_both", mapl + receiver + "--set algorithm.projector_sync=both", 8 * b, 8 * b, true, dr,
       dr},
      {"mapl_vq", mapl + receiver + vq, 8 * 4 / 8.0 + 4 * 8 * 2 * b / 128, 8 * b, true, dr, dr},
  };
  const double tokens = 5 * 4 * 8 * 16, micro_batches = 5 * 4, steps = 5;
  for (const Case& c : cases) {
    LmRun r =
        train(c.name,
              "--workers 2 --set algorithm.name=pipeline --set algorithm.accumulation=4 " + c.args);
    ASSERT_EQ(r.result.status, 0) << c.name << "\n" << r.result.output;
    const double forward =
        tokens * (c.forward_payload + (c.tokens ? b : 0) + 8) + micro_batches * 8;
    const double backward = tokens * c.backward_payload + micro_batches * 8;
    const auto& stats = r.summary["algorithm_stats"];
    EXPECT_EQ(stats["boundary_forward_bytes"][0].get<double>(), forward) << c.name;
    EXPECT_EQ(stats["boundary_backward_bytes"][1].get<double>(), backward) << c.name;
    const double sent0 = r.summary["bytes_sent"][0].get<double>();
    const double sent1 = r.summary["bytes_sent"][1].get<double>();
    EXPECT_NEAR(sent0 / (forward + steps * c.forward_per_step), 1.0, 0.05) << c.name;
    EXPECT_NEAR(sent1 / (backward + steps * c.backward_per_step), 1.0, 0.05) << c.name;
    std::printf("[  bytes   ] %-15s forward %.1f B/token (formula %.1f), backward %.1f (%.1f)\n",
                c.name.c_str(), sent0 / tokens, (forward + steps * c.forward_per_step) / tokens,
                sent1 / tokens, (backward + steps * c.backward_per_step) / tokens);
  }
  // The shared anchor adds, per step, a count and at most every row of E (id + r numbers).
  LmRun shared = train("mapl_shared",
                       "--workers 2 --set algorithm.name=pipeline "
                       "--set algorithm.accumulation=4 " +
                           mapl);
  ASSERT_EQ(shared.result.status, 0) << shared.result.output;
  const double backward = tokens * 8 * b + micro_batches * 8 + steps * (dr + 8);
  const double sent1 = shared.summary["bytes_sent"][1].get<double>();
  EXPECT_GT(sent1, backward + steps * 8 * (8 + 8 * b));  // some rows changed
  EXPECT_LT(sent1, 1.05 * (backward + steps * 257 * (8 + 8 * b)));
}

// A compressed pipeline's checkpoint holds the codecs' state (projector, momentum, anchors and
// their optimizer, codebooks with their EMA state, the receiver's copy, the stream position):
// killed and resumed, it reproduces the uninterrupted run's losses exactly.
TEST_F(Lm, CompressedPipelineResumesExactly) {
  const std::string args =
      "--workers 2 --set algorithm.name=pipeline --set algorithm.accumulation=2 "
      "--set algorithm.compression=mapl --set algorithm.compression_ratio=4 "
      "--set algorithm.vq=true --set algorithm.vq_groups=4 --set algorithm.vq_codes=16 "
      "--set algorithm.vq_stream_rows=2 --set run.steps=8 --set checkpoint.enabled=true "
      "--set checkpoint.every=4";
  LmRun ref = train("ref", args);
  ASSERT_EQ(ref.result.status, 0) << ref.result.output;
  LmRun cut = train("cut", args, "DESYNC_FAULT=rank=1,step=6,action=kill");
  EXPECT_NE(cut.result.status, 0);
  LmRun resumed = train("cut", args + " --resume");
  ASSERT_EQ(resumed.result.status, 0) << resumed.result.output;
  EXPECT_EQ(ref.losses, resumed.losses);
  EXPECT_EQ(ref.summary["test_loss"], resumed.summary["test_loss"]);
}

TEST_F(Lm, GenerateIsDeterministicForASeedAndNeedsALanguageModelRun) {
  LmRun r = train("run", "--set run.steps=20 --set checkpoint.enabled=true");
  ASSERT_EQ(r.result.status, 0) << r.result.output;
  auto generate = [&](const std::string& args) {
    return testing::run_command("(" + kDesync + " generate " + dir_.file("run") +
                                " --prompt 'Entry 7, n. the' --tokens 40 " + args +
                                " 2>/dev/null)");
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
