// The Trainer: the loop around an Algorithm.
//
// Trainer::run() reads as its steps: assemble the run from the Config (train/assemble.h: data,
// model seeded identically on every rank, algorithm, micro-batch source, budget, schedule), set
// the algorithm up, resume if asked (train/trainer_state.h), step until the budget is spent
// (train/budget.h: steps, or micro-batches of data that every algorithm consumes alike) with
// progress on rank 0, metrics every run.log_every steps, evaluation every eval.every steps and
// checkpoints every checkpoint.every steps, then finish, evaluate, checkpoint, and write
// summary.json (report/summary.h gathers the per-rank figures), the traces and report.html. It
// resumes bit-exactly from the newest intact checkpoint, and on SIGINT/SIGTERM stops cleanly
// with a checkpoint: a single worker after the step in hand; several workers at the next
// logging step (run.log_every), where they agree to stop at the same step.
//
// While training it samples the live activation memory and marks each algorithm step for the
// sampler (core/activation_memory.h); the summary sums the ranks' samples and the reductions
// the algorithm recorded (core/reductions.h).
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
  double loss = 0.0;      // mean cross-entropy; for text, nats per token
  double accuracy = 0.0;  // top-1; for text, next-token accuracy
  int64_t examples = 0;   // predictions scored; for text, tokens
  // Text only (0 otherwise): exp(loss), and the loss in bits per byte of the split's text
  // (loss * tokens / (bytes * ln 2) over the whole split, so tokenizers compare).
  double perplexity = 0.0;
  double bits_per_byte = 0.0;
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

// Intra-op threads of one worker: run.threads, else this machine's cores shared by the
// `local_workers` on it (desync meta-train follows the same rule).
int64_t intra_op_threads(const Config& cfg, int64_t local_workers);

}  // namespace desync
