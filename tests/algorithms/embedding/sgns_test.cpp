// The sgns algorithm over fake ranks: its modes against each other and against the C-style
// sequential trainer built from the kernel, its traffic, and its checkpoint.
#include "desync/algorithms/embedding/sgns.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "algorithms/fake_run.h"
#include "desync/core/error.h"
#include "desync/data/word_dataset.h"
#include "test_util.h"

namespace desync {
namespace {

using testing::max_diff;
using testing::run_on_fake_world;
using testing::TempDir;

// A seeded corpus of `sentences` lines over a `words`-word Zipf-ish vocabulary; `copies`
// repeats the whole list (identical shards for 2 ranks).
std::string corpus_text(int sentences, int copies = 1, uint64_t seed = 7, double words = 60) {
  std::string one;
  uint64_t x = seed;
  for (int s = 0; s < sentences; ++s) {
    const int len = 3 + static_cast<int>((x = x * 6364136223846793005ULL + 1) >> 60);
    for (int i = 0; i < len; ++i) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      const double u = static_cast<double>(x >> 11) * 0x1.0p-53;
      const int w = static_cast<int>(std::pow(words, u * u));  // more small ids
      one += (i ? " w" : "w");
      for (int k = w; k >= 0; k /= 26) {
        one += static_cast<char>('a' + k % 26);
        if (k < 26) break;
      }
    }
    one += "\n";
  }
  std::string all;
  for (int c = 0; c < copies; ++c) all += one;
  return all;
}

struct Job {
  TempDir dir;
  Config cfg;
  DatasetSplits data;
};

std::unique_ptr<Job> make_job(const std::string& text, std::vector<std::string> overrides) {
  auto job = std::make_unique<Job>();
  testing::write_file(job->dir.file("corpus.txt"), text);
  std::vector<std::string> base = {"data.dataset=\"words\"",
                                   "data.path=\"" + job->dir.file("corpus.txt") + "\"",
                                   "data.cache_dir=\"" + job->dir.file("cache") + "\"",
                                   "data.text_test_fraction=0.0",
                                   "model.name=\"sgns\"",
                                   "model.d_model=8",
                                   "algorithm.name=\"sgns\"",
                                   "algorithm.sgns.min_count=2",
                                   "algorithm.sgns.sync_words=300",
                                   "algorithm.sgns.batch_pairs=64",
                                   "algorithm.sgns.subsample=0.01",
                                   "optimizer.lr=0.05",
                                   "run.steps=6"};
  base.insert(base.end(), overrides.begin(), overrides.end());
  job->cfg = parse_config("", "test.toml", base);
  job->data = load_dataset(job->cfg.data, 0);
  return job;
}

torch::Tensor tables(testing::RankState& s) { return testing::flat_params(s.model); }

// The C-style trainer, written out from the kernel: one rank reads every sentence in order
// with C's generator and alpha, sync_words tokens per step, for `steps` steps.
torch::Tensor sequential_reference(const Job& job, int64_t steps, int64_t min_count,
                                   int64_t sync_words, const sgns::Options& o) {
  torch::manual_seed(static_cast<uint64_t>(job.cfg.run.seed));
  StagedModel model = make_model(job.cfg.model, {{}, job.data.train.num_classes});
  torch::Tensor w_in, w_out;
  for (auto& [n, p] : model->named_params()) (n.ends_with("w_in") ? w_in : w_out) = p;
  const WordCorpus corpus = word_corpus_of(job.data.train);
  int64_t vocab = 0;
  while (vocab < corpus.vocab.size() && corpus.vocab.count(vocab) >= min_count) ++vocab;
  const std::vector<int64_t> counts(corpus.vocab.counts().begin(),
                                    corpus.vocab.counts().begin() + vocab);
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  sgns::NegativeSampler neg(counts, o.noise_exponent);
  sgns::Lcg rng{static_cast<uint64_t>(job.cfg.run.seed)};
  sgns::AlphaSchedule schedule(job.cfg.optimizer.lr, steps * sync_words);
  int64_t read = 0, s = 0;
  torch::NoGradGuard no_grad;
  for (int64_t t = 0; t < steps; ++t) {
    for (int64_t in_step = 0; in_step < sync_words;) {
      const double alpha = schedule.before_sentence(read);
      std::vector<int32_t> words, ex;
      for (int64_t i = corpus.offsets[s]; i < corpus.offsets[s + 1]; ++i)
        if (corpus.tokens[i] < vocab) words.push_back(corpus.tokens[i]);
      s = (s + 1) % corpus.sentences();
      sgns::sentence_examples(words.data(), static_cast<int64_t>(words.size()), counts, total, rng,
                              neg, o, ex);
      sgns::sequential_update(w_in.data_ptr<float>(), w_out.data_ptr<float>(), w_in.size(1),
                              ex.data(), static_cast<int64_t>(ex.size()) / (o.negatives + 2),
                              o.negatives, alpha, o);
      in_step += static_cast<int64_t>(words.size());
      read += static_cast<int64_t>(words.size());
    }
  }
  return testing::flat_params(model);
}

TEST(SgnsLocalAvg, OneRankEqualsTheSequentialTrainerBitwise) {
  auto job = make_job(corpus_text(400), {});
  auto ranks = run_on_fake_world(job->cfg, 1, 6, job->data);
  sgns::Options o;
  o.subsample = 0.01;
  const torch::Tensor expected = sequential_reference(*job, 6, 2, 300, o);
  EXPECT_TRUE(torch::equal(tables(ranks[0]), expected));
}

TEST(SgnsLocalAvg, IdenticalShardsWithoutRankSeedOffsetEqualOneRank) {
  // Two copies of the corpus: rank 0 reads the first, rank 1 the second, with the same
  // generator; their average is what one rank computes on one copy.
  auto two = make_job(corpus_text(300, 2), {"algorithm.sgns.rank_seed_offset=false"});
  auto one = make_job(corpus_text(300, 1), {});
  auto pair = run_on_fake_world(two->cfg, 2, 4, two->data);
  auto single = run_on_fake_world(one->cfg, 1, 4, one->data);
  EXPECT_LT(max_diff(tables(pair[0]), tables(single[0])), 1e-6);
  EXPECT_TRUE(torch::equal(tables(pair[0]), tables(pair[1])));
}

TEST(SgnsLocalAvg, TouchedRowsEqualsAveragingEveryRow) {
  // 2,000 words, 30 tokens between averages: most rows are not touched in a step.
  const std::string text = corpus_text(400, 1, 7, 2000);
  const std::vector<std::string> small = {"algorithm.sgns.min_count=1",
                                          "algorithm.sgns.sync_words=30"};
  auto all = make_job(text, small);
  std::vector<std::string> sets = small;
  sets.push_back("algorithm.sgns.sync_rows=\"touched\"");
  auto touched = make_job(text, sets);
  auto a = run_on_fake_world(all->cfg, 2, 5, all->data);
  auto b = run_on_fake_world(touched->cfg, 2, 5, touched->data);
  EXPECT_LT(max_diff(tables(a[0]), tables(b[0])), 1e-6);
  // Fewer bytes: only the rows some rank changed, plus the V-byte mask.
  EXPECT_LT(b[0].stats.bytes_sent, a[0].stats.bytes_sent);
}

TEST(SgnsLocalAvg, RanksDifferBeforeAveragingAndAgreeAfter) {
  auto job = make_job(corpus_text(400), {});
  std::vector<torch::Tensor> after(2);
  testing::FakeRunOptions opts;
  opts.after_step = [&](int64_t r, int64_t, testing::RankState& s) { after[r] = tables(s); };
  auto ranks = run_on_fake_world(job->cfg, 2, 3, job->data, opts);
  EXPECT_TRUE(torch::equal(after[0], after[1]));
  // Without the average the ranks would differ: rank 0 alone on its shard is not the result.
  auto alone = run_on_fake_world(job->cfg, 1, 3, job->data);
  EXPECT_GT(max_diff(tables(ranks[0]), tables(alone[0])), 1e-4);
}

class SgnsBatched : public ::testing::TestWithParam<int64_t> {};

TEST_P(SgnsBatched, SparseRowsEqualsDenseDdp) {
  const int64_t world = GetParam();
  for (const char* dtype : {"float32", "float64"}) {
    auto dense = make_job(corpus_text(400), {"algorithm.sgns.sgns_mode=\"dense_ddp\"",
                                             std::string("model.dtype=\"") + dtype + "\""});
    auto sparse = make_job(corpus_text(400), {"algorithm.sgns.sgns_mode=\"sparse_rows\"",
                                              std::string("model.dtype=\"") + dtype + "\""});
    auto d = run_on_fake_world(dense->cfg, world, 20, dense->data);
    auto s = run_on_fake_world(sparse->cfg, world, 20, sparse->data);
    const double tol = std::string(dtype) == "float32" ? 1e-5 : 1e-10;
    for (int64_t r = 0; r < world; ++r) EXPECT_LT(max_diff(tables(d[r]), tables(s[r])), tol);
    EXPECT_GT(max_diff(tables(d[0]), testing::flat_params(d[0].model).zero_()), 1e-3);
    // Dense DDP all-reduces [2, V, d] every step: 2 (N-1)/N * 2 V d * b bytes.
    const int64_t vocab = dynamic_cast<Sgns&>(*d[0].algorithm).vocabulary();
    const int64_t b = std::string(dtype) == "float32" ? 4 : 8;
    const int64_t setup = d[0].setup_stats.bytes_sent;
    EXPECT_EQ(d[0].stats.bytes_sent - setup, 20 * (2 * (world - 1) * (2 * vocab * 8 * b) / world));
  }
}

INSTANTIATE_TEST_SUITE_P(Worlds, SgnsBatched, ::testing::Values(2, 3));

TEST(SgnsDenseDdp, EqualsOneProcessOnTheConcatenatedBatchScaledByOneOverN) {
  auto job = make_job(corpus_text(400),
                      {"algorithm.sgns.sgns_mode=\"dense_ddp\"", "model.dtype=\"float64\""});
  const int64_t steps = 3, world = 2, pairs = 64;
  auto ranks = run_on_fake_world(job->cfg, world, steps, job->data);

  // The reference: the same per-rank example streams, concatenated, one gradient, 1/N.
  torch::manual_seed(static_cast<uint64_t>(job->cfg.run.seed));
  StagedModel model = make_model(job->cfg.model, {{}, job->data.train.num_classes});
  model->set_dtype(torch::kDouble);
  torch::Tensor w_in, w_out;
  for (auto& [n, p] : model->named_params()) (n.ends_with("w_in") ? w_in : w_out) = p;
  const WordCorpus corpus = word_corpus_of(job->data.train);
  int64_t vocab = 0;
  while (vocab < corpus.vocab.size() && corpus.vocab.count(vocab) >= 2) ++vocab;
  const std::vector<int64_t> counts(corpus.vocab.counts().begin(),
                                    corpus.vocab.counts().begin() + vocab);
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  sgns::Options o;
  o.subsample = 0.01;
  sgns::NegativeSampler neg(counts, o.noise_exponent);
  std::vector<sgns::Lcg> rng;
  std::vector<int64_t> next, end;
  std::vector<std::vector<int32_t>> pending(world);
  for (int64_t r = 0; r < world; ++r) {
    rng.push_back(sgns::Lcg{static_cast<uint64_t>(job->cfg.run.seed + r)});
    next.push_back(r * corpus.sentences() / world);
    end.push_back((r + 1) * corpus.sentences() / world);
  }
  torch::NoGradGuard no_grad;
  for (int64_t t = 0; t < steps; ++t) {
    std::vector<torch::Tensor> batches;
    for (int64_t r = 0; r < world; ++r) {
      while (static_cast<int64_t>(pending[r].size()) < pairs * 7) {
        std::vector<int32_t> words;
        for (int64_t i = corpus.offsets[next[r]]; i < corpus.offsets[next[r] + 1]; ++i)
          if (corpus.tokens[i] < vocab) words.push_back(corpus.tokens[i]);
        next[r] = next[r] + 1 == end[r] ? r * corpus.sentences() / world : next[r] + 1;
        sgns::sentence_examples(words.data(), static_cast<int64_t>(words.size()), counts, total,
                                rng[r], neg, o, pending[r]);
      }
      batches.push_back(
          torch::from_blob(pending[r].data(), {pairs, 7}, torch::kInt).to(torch::kLong));
      pending[r].erase(pending[r].begin(), pending[r].begin() + pairs * 7);
    }
    const torch::Tensor examples = torch::cat(batches);
    // Autograd of the summed loss over the concatenated batch, scaled 1/N.
    torch::Tensor a = w_in.narrow(0, 0, vocab).detach().clone().requires_grad_(true);
    torch::Tensor c = w_out.narrow(0, 0, vocab).detach().clone().requires_grad_(true);
    {
      torch::AutoGradMode grad(true);
      const torch::Tensor x = a.index_select(0, examples.select(1, 0));
      const torch::Tensor pos = (x * c.index_select(0, examples.select(1, 1))).sum(1);
      torch::Tensor loss = -torch::log_sigmoid(pos).sum();
      for (int64_t j = 2; j < 7; ++j) {
        const torch::Tensor n = examples.select(1, j).clamp_min(0);  // kSkipped = -1
        const torch::Tensor keep = (examples.select(1, j) >= 0).to(torch::kDouble);
        const torch::Tensor s = (x * c.index_select(0, n)).sum(1);
        loss = loss - (torch::log_sigmoid(-s) * keep).sum();
      }
      (loss / static_cast<double>(world)).backward();
    }
    const double alpha = job->cfg.optimizer.lr * std::max(1e-4, 1.0 - static_cast<double>(t) / 3.0);
    w_in.narrow(0, 0, vocab).sub_(a.grad() * alpha);
    w_out.narrow(0, 0, vocab).sub_(c.grad() * alpha);
  }
  EXPECT_LT(max_diff(tables(ranks[0]), testing::flat_params(model)), 1e-10);
}

TEST(Sgns, ResumedFromItsArchiveContinuesExactly) {
  for (const char* mode : {"local_avg", "sparse_rows"}) {
    auto job =
        make_job(corpus_text(400), {std::string("algorithm.sgns.sgns_mode=\"") + mode + "\""});
    // The uninterrupted run; its state after step 2 (3 steps) is what a checkpoint holds.
    std::vector<Archive> saved(2);
    std::vector<torch::Tensor> params(2);
    testing::FakeRunOptions first;
    first.after_step = [&](int64_t r, int64_t t, testing::RankState& s) {
      if (t == 2) {
        s.algorithm->save(saved[r]);
        params[r] = testing::flat_params(s.model);
      }
    };
    auto whole = run_on_fake_world(job->cfg, 2, 6, job->data, first);
    testing::FakeRunOptions second;
    second.before_setup = [&](int64_t r, StagedModel& m) {
      torch::NoGradGuard no_grad;
      int64_t at = 0;
      for (auto& p : m->parameters()) {
        p.copy_(params[r].narrow(0, at, p.numel()).view(p.sizes()));
        at += p.numel();
      }
    };
    // run_on_fake_world has no load hook: emulate resume by running steps 3..5 after load.
    Config cfg = job->cfg;
    cfg.run.steps = 6;
    std::vector<RunParts> parts;
    for (int64_t r = 0; r < 2; ++r) parts.push_back(assemble_run(cfg, job->data, r, 2));
    auto fake = FakeWorld::create(2);
    std::vector<torch::Tensor> resumed(2);
    fake->run([&](int64_t r, Communicator& comm) {
      Context ctx = make_context(cfg, comm, parts[r]);
      second.before_setup(r, parts[r].model);
      parts[r].algorithm->setup(ctx);
      parts[r].algorithm->load(saved[r]);
      for (int64_t t = 3; t < 6; ++t) {
        ctx.step = t;
        parts[r].algorithm->step(ctx);
      }
      resumed[r] = testing::flat_params(parts[r].model);
    });
    EXPECT_TRUE(torch::equal(resumed[0], tables(whole[0]))) << mode;
  }
}

TEST(Sgns, RefusesOtherOptimizersAndOtherAlgorithms) {
  auto job = make_job(corpus_text(100), {"optimizer.momentum=0.9"});
  EXPECT_THROW(run_on_fake_world(job->cfg, 1, 1, job->data), ConfigError);
  auto mlp = make_job(corpus_text(100), {"algorithm.name=\"ddp\""});
  EXPECT_THROW(assemble_run(mlp->cfg, mlp->data, 0, 1), ConfigError);
}

}  // namespace
}  // namespace desync
