// Word embeddings end to end on real processes: SGNS trained by `desync train` on 2 workers
// over a planted corpus, exported with `desync embeddings`, scored by `desync regularities`
// (spec §6 test 11); sparse_rows equal to dense_ddp over Gloo; the bytes per epoch of the
// local-averaging mode against dense DDP; malformed embedding files.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "desync/embeddings/word2vec.h"
#include "test_util.h"

namespace desync {
namespace {

const std::string kDesync = testing::desync_binary();

std::string letters(int i) {
  std::string s;
  do {
    s.insert(s.begin(), static_cast<char>('a' + i % 26));
    i /= 26;
  } while (i > 0);
  return s;
}
std::string form(int topic, bool b) { return std::string(b ? "xb" : "xa") + letters(topic); }

// Spec §6 test 11: 40 concepts x 4 topic words, forms x_iA / x_iB, 4 markers per form; each
// sentence holds 3 topic words of a concept, one of its forms and 2 markers of that form, in a
// shuffled order.
std::string planted_corpus(int sentences, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string text;
  for (int s = 0; s < sentences; ++s) {
    const int c = static_cast<int>(rng() % 40);
    const bool b = rng() % 2;
    std::vector<std::string> words;
    for (int k = 0; k < 3; ++k) words.push_back("t" + letters(c) + "q" + letters(rng() % 4));
    words.push_back(form(c, b));
    for (int k = 0; k < 2; ++k) words.push_back(std::string(b ? "mb" : "ma") + letters(rng() % 4));
    std::shuffle(words.begin(), words.end(), rng);
    for (size_t i = 0; i < words.size(); ++i) text += (i ? " " : "") + words[i];
    text += "\n";
  }
  return text;
}

void write_categories(const testing::TempDir& dir) {
  std::filesystem::create_directories(dir.file("cats/planted"));
  std::string forms, shifted;
  for (int c = 0; c < 40; ++c) {
    forms += form(c, false) + "\t" + form(c, true) + "\n";
    shifted += form(c, false) + "\t" + form((c + 1) % 40, true) + "\n";
  }
  testing::write_file(dir.file("cats/planted/forms.txt"), forms);
  testing::write_file(dir.file("cats/planted/shifted.txt"), shifted);
}

std::string job(const testing::TempDir& dir, int64_t steps) {
  return "[run]\nname = \"sgns\"\nsteps = " + std::to_string(steps) +
         "\nthreads = 1\ncomm_timeout = 60\n"
         "[data]\ndataset = \"words\"\npath = \"" +
         dir.file("corpus.txt") + "\"\ncache_dir = \"" + dir.file("cache") +
         "\"\ntext_test_fraction = 0.01\n"
         "[model]\nname = \"sgns\"\nd_model = 50\n"
         "[optimizer]\nname = \"sgd\"\nlr = 0.025\n"
         "[algorithm]\nname = \"sgns\"\n"
         "[algorithm.sgns]\nmin_count = 1\nsubsample = 0.0\nsync_words = 20000\n";
}

nlohmann::json category(const nlohmann::json& report, const std::string& name) {
  for (const auto& c : report["categories"])
    if (c["name"] == name) return c;
  ADD_FAILURE() << "no category " << name;
  return {};
}

struct Trained {
  testing::CommandResult train, exported, scored;
  nlohmann::json report, summary;
};

Trained train_and_score(testing::TempDir& dir, const std::string& name, int64_t steps,
                        const std::string& sets) {
  testing::write_file(dir.file(name + ".toml"), job(dir, steps));
  Trained t;
  t.train =
      testing::run_command(kDesync + " train " + dir.file(name + ".toml") +
                           " --workers 2 --quiet --out " + dir.file(name) + " " + sets + " 2>&1");
  if (t.train.status != 0) return t;
  t.summary = nlohmann::json::parse(testing::read_file(dir.file(name + "/summary.json")));
  t.exported = testing::run_command(kDesync + " embeddings " + dir.file(name) + " --out " +
                                    dir.file(name + ".bin") + " 2>&1");
  t.scored = testing::run_command(kDesync + " regularities " + dir.file(name + ".bin") +
                                  " --categories " + dir.file("cats") + " --draws 3 --json " +
                                  dir.file(name + ".json") + " 2>&1");
  if (t.scored.status == 0)
    t.report = nlohmann::json::parse(testing::read_file(dir.file(name + ".json")));
  return t;
}

void expect_planted(const Trained& t, const std::string& mode) {
  ASSERT_EQ(t.train.status, 0) << t.train.output;
  ASSERT_EQ(t.exported.status, 0) << t.exported.output;
  ASSERT_EQ(t.scored.status, 0) << t.scored.output;
  const nlohmann::json forms = category(t.report, "forms");
  const nlohmann::json shifted = category(t.report, "shifted");
  EXPECT_GE(forms["offsets"]["ocs"].get<double>(), 0.8) << mode;
  EXPECT_GE(forms["offsets"]["pcs"].get<double>(), 0.95) << mode;
  EXPECT_GE(forms["3cosadd"]["standard_accuracy"].get<double>(), 0.9) << mode;
  EXPECT_GE(shifted["offsets"]["pcs"].get<double>(), 0.4) << mode;
  EXPECT_LE(shifted["offsets"]["pcs"].get<double>(), 0.6) << mode;
  EXPECT_GE(shifted["offsets"]["ocs"].get<double>(), 0.25) << mode;
}

TEST(EmbeddingsProcesses, SgnsOnAPlantedCorpusRecoversThePlantedAnalogy) {
  testing::TempDir dir;
  testing::write_file(dir.file("corpus.txt"), planted_corpus(40000, 1));
  write_categories(dir);
  // 40,000 sentences of 6 tokens on 2 ranks: 6 averages per epoch, 5 epochs.
  expect_planted(train_and_score(dir, "local", 30, ""), "local_avg");
}

TEST(EmbeddingsProcesses, SlowEveryModeOnTheSpecPlantedCorpus) {
  testing::TempDir dir;
  testing::write_file(dir.file("corpus.txt"), planted_corpus(100000, 1));
  write_categories(dir);
  expect_planted(train_and_score(dir, "local", 75, ""), "local_avg");
  // About 4.4 examples per token: 300,000 tokens per rank and epoch in batches of 128. The
  // summed loss makes a row's step grow with its repeats in a batch: on these 248 words the
  // spec's 4,096 examples diverge at alpha 0.025 (NaN), 128 do not.
  for (const char* mode : {"dense_ddp", "sparse_rows"})
    expect_planted(train_and_score(dir, mode, 51500,
                                   std::string("--set algorithm.sgns.batch_pairs=128 ") +
                                       "--set algorithm.sgns.sgns_mode=" + mode),
                   mode);
}

TEST(EmbeddingsProcesses, SparseRowsEqualsDenseDdpOverGlooAndLocalAveragingSendsFarLess) {
  testing::TempDir dir;
  testing::write_file(dir.file("corpus.txt"), planted_corpus(4000, 2));
  write_categories(dir);
  const std::string batched = "--set algorithm.sgns.batch_pairs=512 --set model.d_model=16 ";
  Trained dense =
      train_and_score(dir, "dense", 30, batched + "--set algorithm.sgns.sgns_mode=dense_ddp");
  Trained sparse =
      train_and_score(dir, "sparse", 30, batched + "--set algorithm.sgns.sgns_mode=sparse_rows");
  Trained local = train_and_score(dir, "local", 3,
                                  "--set model.d_model=16 --set algorithm.sgns.sync_words=4000");
  for (const Trained* t : {&dense, &sparse, &local})
    ASSERT_EQ(t->exported.status, 0) << t->train.output << t->exported.output;
  const WordVectors d = read_word_vectors(dir.file("dense.bin"));
  const WordVectors s = read_word_vectors(dir.file("sparse.bin"));
  ASSERT_EQ(d.words, s.words);
  double diff = 0;
  for (size_t i = 0; i < d.values.size(); ++i)
    diff = std::max(diff, std::abs(static_cast<double>(d.values[i]) - s.values[i]));
  EXPECT_LT(diff, 1e-5);
  // Bytes per epoch = bytes sent per token read x tokens per epoch: compare per token read.
  auto per_token = [](const Trained& t) {
    double sent = 0;
    for (const auto& b : t.summary["bytes_sent"]) sent += b.get<double>();
    return sent / t.summary["samples"].get<double>();
  };
  EXPECT_GE(per_token(dense) / per_token(local), 10.0)
      << "dense " << per_token(dense) << " B/token, local " << per_token(local) << " B/token";
  EXPECT_LT(per_token(sparse), per_token(dense));
}

TEST(EmbeddingsProcesses, MalformedEmbeddingFilesExitTwoWithOneLine) {
  testing::TempDir dir;
  write_categories(dir);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"header.txt", "2 x\nxaa 1 2\n"},  {"fields.txt", "2 2\nxaa 1 2\nxba 1\n"},
      {"number.txt", "1 2\nxaa 1 zz\n"}, {"count.txt", "3 2\nxaa 1 2\nxba 1 2\n"},
      {"utf8.txt", "1 2\nx\xff 1 2\n"},
  };
  for (const auto& [name, bytes] : cases) {
    testing::write_file(dir.file(name), bytes);
    const auto r = testing::run_command(kDesync + " regularities " + dir.file(name) +
                                        " --categories " + dir.file("cats") + " 2>&1");
    EXPECT_EQ(r.status, 2) << name << ": " << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << name << ": " << r.output;
    EXPECT_NE(r.output.find(name), std::string::npos) << r.output;
  }
}

}  // namespace
}  // namespace desync
