// The Trainer: the loop around an Algorithm.
//
// It builds what a run needs from the Config (data, model seeded identically on every rank,
// schedule, algorithm, micro-batch source sharded by rank), then runs the step budget:
// progress on rank 0, metrics every run.log_every steps, evaluation every eval.every steps and
// at the end, checkpoints every checkpoint.every steps and at the end, and summary.json. It
// resumes bit-exactly from the newest intact checkpoint, and on SIGINT/SIGTERM stops cleanly
// with a checkpoint: a single worker after the step in hand; several workers at the next
// logging step (run.log_every), where they agree to stop at the same step.
//
// Run directory: config.toml (resolved), metrics.jsonl, summary.json, checkpoints/.
// Only rank 0 writes the shared files; every rank writes its own checkpoint files.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "desync/comm/communicator.h"
#include "desync/core/config.h"

namespace desync {

struct TrainOptions {
  bool resume = false;        // continue from the newest intact checkpoint in the run directory
  bool show_progress = true;  // rank 0 prints progress (bar on a TTY, plain lines otherwise)
  int64_t local_workers = 1;  // workers on this machine, to divide the cores among them
};

struct EvalResult {
  double loss = 0.0;
  double accuracy = 0.0;
  int64_t examples = 0;
};

class Trainer {
 public:
  Trainer(Config config, Communicator& comm, TrainOptions options);

  // Runs the whole job and returns the summary (also written to summary.json by rank 0).
  // The summary's "interrupted" is true if a signal stopped the run early.
  nlohmann::json run();

  const std::string& run_dir() const { return run_dir_; }

 private:
  Config cfg_;
  Communicator& comm_;
  TrainOptions opts_;
  std::string run_dir_;
};

// The run directory a config names: run.out, or runs/<run.name>.
std::string run_dir_of(const Config& cfg);

}  // namespace desync
