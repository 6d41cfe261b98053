// What a checkpoint carries besides the algorithm's own state: the Trainer's counters, the
// model, the stream position and the RNG — and how one rank's checkpoint is written and read.
//
// Keys: meta.{step,algorithm,world_size}, model.param.*, model.buffer.*, sampler.{epoch,batch},
// rng.torch, trainer.* (below), and whatever Algorithm::save() adds.
//
// Elastic restart (restore_resharded): a run with another number of workers continues from the
// archives of all the old ranks. Every new rank takes the model, RNG, loss window and clocks of
// old rank (rank % old world); the stream continues after the examples of the epoch that the
// old world consumed (elastic_stream_position()); the examples and micro-batches consumed are split
// evenly over the new ranks; the global data consumed (budget_used) is kept, and the step count
// becomes the number of this world's steps that consume as much (budget_used / global micro-batches
// per step), so that a data budget ends after the same total data and the schedule stands where the
// data does. The algorithm restores itself with Elastic::load_resharded() (algorithms/elastic.h).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <vector>

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

// Elastic restart: where a world of `world` ranks continues the stream after old ranks that
// stand at `old` (each with `batch_size` examples per batch, `old_world` of them). The examples
// of the epoch that the old world consumed are a prefix of the epoch's permutation (the furthest
// old rank's, when ranks read unequal amounts: ACCO); the new world continues right after it, so
// every example of the epoch is read once. Throws CheckpointError when that prefix is not a whole
// number of the new world's global batches.
StreamPosition elastic_stream_position(const std::vector<StreamPosition>& old, int64_t batch_size,
                                       int64_t old_world, int64_t world);

// Elastic restart: restores rank `rank` of `world` from `old_ranks`, every rank's archive of a run
// with old_ranks.size() workers (see above); `per_step` is the global micro-batches a step of this
// run consumes (Budget::per_step). Throws CheckpointError if the archives were written by another
// algorithm or world, if the algorithm cannot continue on another number of workers (it is not
// Elastic; elastic_refusal() says why) or if the stream cannot continue there.
void restore_resharded(const std::vector<Archive>& old_ranks, const std::string& algorithm_name,
                       int64_t rank, int64_t world, int64_t per_step, TrainerState& state,
                       StagedModel& model, Algorithm& algorithm, MicroBatchSource& batches);

// Why the registered algorithm `algorithm_name` cannot continue on another number of workers,
// in a few words, by its family (a pipeline's stages, a gossip worker's place in the topology).
std::string elastic_refusal(const std::string& algorithm_name);

// The newest checkpoint in `store` that every rank of `comm` holds intact (one all-reduce of the
// ranks' newest steps), for --resume; throws CheckpointError naming `dir` when there is none.
// `warn` hears about checkpoints skipped as damaged. Collective.
CheckpointStore::Loaded load_common_checkpoint(CheckpointStore& store, Communicator& comm,
                                               const std::string& dir,
                                               const std::function<void(const std::string&)>& warn);
// The same, also accepting a checkpoint written by a run with another number of workers
// (CheckpointStore::load_resumable()); every rank must have read the same world's files.
// Collective.
CheckpointStore::Resumable load_common_resumable(
    CheckpointStore& store, Communicator& comm, const std::string& dir,
    const std::function<void(const std::string&)>& warn);

}  // namespace desync
