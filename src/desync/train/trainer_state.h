// What a checkpoint carries besides the algorithm's own state: the Trainer's counters, the
// model, the stream position and the RNG — and how one rank's checkpoint is written and read.
//
// Keys: meta.{step,algorithm,world_size}, model.param.*, model.buffer.*, sampler.{epoch,batch},
// rng.torch, trainer.* (below), and whatever Algorithm::save() adds.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <string>

#include "desync/algorithms/algorithm.h"
#include "desync/core/archive.h"
#include "desync/core/checkpoint.h"

namespace desync {

struct TrainerState {
  static constexpr size_t kLossWindow = 100;  // summary's train_loss: mean of the last N steps

  int64_t step = 0;           // steps taken
  int64_t samples = 0;        // examples this rank consumed
  int64_t micro_batches = 0;  // micro-batches this rank consumed
  int64_t budget_used = 0;    // global micro-batches consumed, as the budget counts them
  double train_seconds = 0.0;
  double wall_seconds = 0.0;         // of the runs before a resume
  std::deque<double> recent_losses;  // this rank's last kLossWindow step losses

  // Counts one step's consumption; `global_micro_batches` is what all ranks consumed.
  void add_step(const StepReport& report, int64_t global_micro_batches);

  // Mean of recent_losses (0 without any).
  double mean_recent_loss() const;

  void save(Archive& a) const;
  void load(const Archive& a);
};

// Everything one rank's checkpoint holds at `state.step` (wall_seconds: the run's so far).
Archive checkpoint_archive(const std::string& algorithm_name, int64_t world,
                           const TrainerState& state, double wall_seconds, const StagedModel& model,
                           const Algorithm& algorithm, const MicroBatchSource& batches);

// Restores the model, the algorithm, the stream position, the RNG and `state` from `a`.
// Throws CheckpointError if `a` was written by another algorithm.
void restore_checkpoint(const Archive& a, const std::string& algorithm_name, TrainerState& state,
                        StagedModel& model, Algorithm& algorithm, MicroBatchSource& batches);

// The newest checkpoint in `store` that every rank of `comm` holds intact (one all-reduce of the
// ranks' newest steps), for --resume; throws CheckpointError naming `dir` when there is none.
// `warn` hears about checkpoints skipped as damaged. Collective.
CheckpointStore::Loaded load_common_checkpoint(CheckpointStore& store, Communicator& comm,
                                               const std::string& dir,
                                               const std::function<void(const std::string&)>& warn);

}  // namespace desync
