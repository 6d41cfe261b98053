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
int run_list();
int run_version();

}  // namespace desync
