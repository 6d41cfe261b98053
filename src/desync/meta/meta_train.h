// The outer loop of `desync meta-train` in one worker: truncated Persistent ES (meta/pes.h) over a
// learned optimizer's meta-parameters (spec ../shared/algorithms/optimizers-spectron-mulo.md
// §2.3), with the tasks of meta/tasks.h.
//
//     theta <- optimizer.lopt_weights if set, else MuloParams::init(optimizer.lopt_seed)
//              (quadratic: theta = {0}); float64
//     for outer step s = 1..meta.outer_steps:
//       g <- PES estimate at theta (one all-reduce; bitwise the same on every rank and world size)
//       g <- clip_grad_norm(g, meta.grad_clip)  (optim/optimizer.h; grad_clip = 0: no clipping)
//       theta <- AdamW(theta, g, lr(s))   betas (0.9, 0.999), eps 1e-8, no weight decay
//
// lr(s) rises linearly from meta.lr_start (s = 1) to meta.lr_peak (s = warmup_steps + 1), then
// falls linearly to meta.lr_final at s = outer_steps. Every rank holds theta and updates it
// identically, so no parameters are exchanged beyond PES's all-reduce. (The MLP task is bitwise
// the same across world sizes only where LibTorch's kernels give the same results at the ranks'
// thread counts, as they do for small layers.)
//
// Run directory (run_dir_of(cfg), train/trainer.h), written by rank 0 unless noted:
//   config.toml    the resolved configuration
//   metrics.jsonl  one line per outer step: {"type": "meta", "step", "mean_loss" (mean over
//                  tasks of (L+ + L-)/2), "grad_norm" (before clipping), "lr", "resets",
//                  "seconds" (wall time of the run so far, resumed runs included)}
//   lopt.pt        the meta-parameters, at every checkpoint and at the end: MuloParams::save
//                  (mlp), or an Archive (core/archive.h) holding "theta", float64 [1] (quadratic)
//   summary.json   task, workers, outer_steps, steps done, wall_seconds, mean_loss_last10,
//                  interrupted; quadratic: theta and theta_optimum
//   checkpoints/   every meta.checkpoint_every outer steps and at the end (core/checkpoint.h):
//                  each rank its estimator's state; rank 0 also theta, AdamW's state and the
//                  recent losses. A resumed run continues bitwise; it needs the same task and
//                  world size (task i lives on rank i mod world).
// On SIGINT/SIGTERM (core/system.h) the ranks agree to stop after the same outer step (an
// all-reduce of a flag every outer step when there are several), write a checkpoint and return a
// summary with "interrupted": true.
//
// Thread-safety: one call per process at a time; collective over `comm`.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>

#include "desync/comm/communicator.h"
#include "desync/core/config.h"

namespace desync {

struct MetaTrainOptions {
  bool resume = false;        // continue from the newest checkpoint common to all ranks
  bool show_progress = true;  // rank 0 prints progress (core/progress.h)
  int64_t local_workers = 1;  // workers on this machine, to divide the cores among them
};

// Runs meta-training on this rank and returns the summary (written to summary.json by rank 0).
// Throws ConfigError for a config that cannot be meta-trained, CheckpointError when --resume
// finds no checkpoint common to all ranks.
nlohmann::json meta_train(const Config& cfg, Communicator& comm, const MetaTrainOptions& options);

// The meta learning rate of outer step `step` (1-based), as above.
double meta_lr(const MetaConfig& meta, int64_t step);

// The initial meta-parameters of cfg (float64, [meta_dim(cfg)]).
torch::Tensor initial_theta(const Config& cfg);

}  // namespace desync
