// The subcommands of the `desync` command, as functions returning the exit status.
// They may throw desync::Error; main() turns it into one line and the error's exit status.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace desync {

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;
  std::string out;
  bool resume = false;
  bool quiet = false;
  // Launch (train only): 0 = take run.workers from the config.
  int64_t workers = 0;
  int64_t nnodes = 1;
  int64_t node_rank = 0;
  std::string master_addr;  // "" = 127.0.0.1
  int64_t master_port = 0;  // 0 = a free loopback port (single node)
  std::string job_token;
};

// `desync train`: one worker in this process, or a launcher for several.
int run_train(const TrainArgs& args);
// `desync worker`: one worker of a job whose rank and rendezvous come from the environment.
int run_worker(const TrainArgs& args);

struct MetaTrainArgs {
  std::string config;
  std::vector<std::string> overrides;
  std::string out;
  bool resume = false;
  bool quiet = false;
  int64_t workers = 0;  // local worker processes; 0 = run.workers
};
// `desync meta-train`: PES meta-training (meta/meta_train.h) in this process, or a launcher for
// several local workers (cli/meta_train.cpp).
int run_meta_train(const MetaTrainArgs& args);
// `desync meta-worker` (hidden): one meta-training worker; rank and rendezvous from the
// environment, as `desync worker`.
int run_meta_worker(const MetaTrainArgs& args);
struct CompareArgs {
  std::vector<std::string> runs;  // run directories
  std::string out = "compare.html";
  double target_accuracy = -1;  // < 0: the lowest final accuracy among the runs
};

// `desync compare`: a table on stdout and an HTML page of overlaid curves at args.out.
int run_compare(const CompareArgs& args);
struct GenerateArgs {
  std::string run_dir;
  std::string prompt;
  int64_t tokens = 200;
  double temperature = 1.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = the whole vocabulary
  uint64_t seed = 0;
};

// `desync generate`: samples text from a language-model run's newest checkpoint
// (models/sampling.h), deterministically for a seed.
int run_generate(const GenerateArgs& args);

struct CheckpointInspectArgs {
  std::string path;   // a run directory or its checkpoints/ folder
  int64_t step = -1;  // -1: the newest step on disk
  int64_t rank = 0;   // whose archive is listed entry by entry
};

// `desync checkpoint inspect` (cli/checkpoint.cpp): a checkpoint's step, world, algorithm,
// per-rank bytes, CRC-32 and verification, and one rank's entries; exit 1 if a rank fails.
int run_checkpoint_inspect(const CheckpointInspectArgs& args);

struct TokenizeArgs {
  std::string config;
  std::vector<std::string> overrides;
};

// `desync tokenize`: builds (or checks and reuses) the token cache of the config's text corpus
// and prints one line per split. A config whose dataset is not a text corpus is a ConfigError.
int run_tokenize(const TokenizeArgs& args);
struct PartitionArgs {
  std::string config;
  std::vector<std::string> overrides;
};

// `desync partition`: the per-client label histogram of a federated config's partition.
int run_partition(const PartitionArgs& args);
// Word embeddings (cli/embeddings.cpp).
struct CorpusArgs {
  std::string out;
  std::string gcide_dir;    // "" = /usr/share/dictd
  std::string wordnet_dir;  // "" = /usr/share/wordnet
  bool glosses = true;
  bool keep_syn = false;
};
// `desync corpus`: the GCIDE + WordNet-gloss corpus, one sentence per line.
int run_corpus(const CorpusArgs& args);

struct WnBatsArgs {
  std::string corpus;
  std::string out;
  std::string wordnet_dir;  // "" = /usr/share/wordnet
  int64_t pairs = 50;
  int64_t min_count = 5;
  bool both_directions = false;
};
// `desync wn-bats`: relation categories built from WordNet, in the BATS layout.
int run_wn_bats(const WnBatsArgs& args);

struct ExportArgs {
  std::string run_dir;
  std::string out;
  std::string format = "auto";  // auto | text | binary
  bool c_compat = false;
};
// `desync embeddings`: an embedding run's W_in as a word2vec file.
int run_export_embeddings(const ExportArgs& args);

struct RegularitiesArgs {
  std::string embeddings;
  std::string categories;
  std::string json;  // "" = none
  std::string html;  // "" = none
  int64_t limit = 0;
  int64_t restrict_vocab = 300000;
  int64_t shuffles = 50;
  int64_t draws = 10;
  int64_t size_random = 50;
  int64_t limit_word = 10000;
  int64_t min_pairs = 5;
  double cosmul_eps = 1e-3;
  uint64_t seed = 0;
  bool no_controls = false;
  bool all_targets = false;
  bool float64 = false;
  bool allow_nonfinite = false;
  bool keep_first = false;
  bool replace_invalid_utf8 = false;
  std::string derangement = "uniform";
};
// `desync regularities`: analogy tests, decompositions, OCS/PCS and controls per category.
int run_regularities(const RegularitiesArgs& args);

struct ParaphraseArgs {
  std::string run_dir;
  std::string categories;
  std::string json;
  int64_t n_pmi = 2000;
  int64_t n_tri = 10000;
  bool full_context = false;
  std::string closeness = "increasing";
};
// `desync paraphrase`: the paraphrase test of an sgns run.
int run_paraphrase(const ParaphraseArgs& args);

int run_list();
int run_version();

}  // namespace desync
