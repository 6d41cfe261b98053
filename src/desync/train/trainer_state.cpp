#include "desync/train/trainer_state.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include "desync/algorithms/elastic.h"
#include "desync/algorithms/registry.h"
#include "desync/core/error.h"

namespace desync {
namespace {

StreamPosition stream_position(const Archive& a) {
  return {a.integer("sampler.epoch"), a.integer("sampler.batch")};
}

void restore_rng(const Archive& a) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(a.tensor("rng.torch"));
}

// Rank `rank`'s share of `total` split over `world` ranks: equal parts, the rest to the first.
int64_t even_share(int64_t total, int64_t rank, int64_t world) {
  return total / world + (rank < total % world ? 1 : 0);
}

}  // namespace

void TrainerState::add_step(const StepReport& report, int64_t global_micro_batches) {
  ++step;
  samples += report.samples;  // this rank's; ranks may differ (ACCO, uneven workers)
  micro_batches += report.micro_batches;
  budget_used += global_micro_batches;
  if (report.micro_batches > 0) {  // a step may consume nothing (a worker with fewer steps)
    recent_losses.push_back(report.loss);
    if (recent_losses.size() > kLossWindow) recent_losses.pop_front();
  }
}

double TrainerState::mean_recent_loss() const {
  double sum = 0.0;
  for (double l : recent_losses) sum += l;
  return recent_losses.empty() ? 0.0 : sum / static_cast<double>(recent_losses.size());
}

void TrainerState::save(Archive& a) const {
  a.put("meta.step", step);
  a.put("trainer.samples", samples);
  a.put("trainer.micro_batches", micro_batches);
  a.put("trainer.budget_used", budget_used);
  a.put("trainer.train_seconds", train_seconds);
  a.put("trainer.wall_seconds", wall_seconds);
  a.put("trainer.recent_losses",
        torch::tensor(std::vector<double>(recent_losses.begin(), recent_losses.end()),
                      torch::kFloat64));
}

void TrainerState::load(const Archive& a) {
  step = a.integer("meta.step");
  samples = a.integer("trainer.samples");
  micro_batches = a.integer("trainer.micro_batches");
  budget_used = a.integer("trainer.budget_used");
  train_seconds = a.real("trainer.train_seconds");
  wall_seconds = a.real("trainer.wall_seconds");
  torch::Tensor losses = a.tensor("trainer.recent_losses");
  recent_losses.clear();
  for (int64_t i = 0; i < losses.numel(); ++i) recent_losses.push_back(losses[i].item<double>());
}

Archive checkpoint_archive(const std::string& algorithm_name, int64_t world,
                           const TrainerState& state, double wall_seconds, const StagedModel& model,
                           const Algorithm& algorithm, const MicroBatchSource& batches) {
  Archive a;
  a.put("meta.algorithm", algorithm_name);
  a.put("meta.world_size", world);
  for (const auto& [name, t] : model->named_params()) a.put("model.param." + name, t);
  for (const auto& [name, t] : model->named_bufs()) a.put("model.buffer." + name, t);
  algorithm.save(a);
  a.put("sampler.epoch", batches.position().epoch);
  a.put("sampler.batch", batches.position().batch);
  a.put("rng.torch", at::detail::getDefaultCPUGenerator().get_state());
  TrainerState s = state;
  s.wall_seconds = wall_seconds;
  s.save(a);
  return a;
}

void restore_checkpoint(const Archive& a, const std::string& algorithm_name, TrainerState& state,
                        StagedModel& model, Algorithm& algorithm, MicroBatchSource& batches) {
  if (a.string("meta.algorithm") != algorithm_name)
    throw CheckpointError(fmt::format(
        "--resume: the checkpoint was written by algorithm '{}', the config selects '{}'",
        a.string("meta.algorithm"), algorithm_name));
  for (auto& [name, t] : model->named_params()) a.copy_into("model.param." + name, t);
  for (auto& [name, t] : model->named_bufs()) a.copy_into("model.buffer." + name, t);
  algorithm.load(a);
  batches.seek(stream_position(a));
  restore_rng(a);
  state.load(a);
}

std::string elastic_refusal(const std::string& algorithm_name) {
  std::string family;
  for (const AlgorithmInfo& info : algorithm_registry())
    if (info.name == algorithm_name) family = info.family;
  if (family == "pipeline") return "its model is cut into one stage per worker";
  if (family == "decentralized")
    return "each worker's model and gossip state belong to its place in the topology";
  if (family == "population") return "each worker trains its own member of the population";
  if (family == "federated") return "each worker holds its own clients and their state";
  if (family == "local") return "its model is cut into one block per worker";
  return "its per-worker state is not re-sharded";
}

StreamPosition elastic_stream_position(const std::vector<StreamPosition>& old, int64_t batch_size,
                                       int64_t old_world, int64_t world) {
  // The furthest old rank: ranks whose consumption varies (ACCO) stand at different batches.
  StreamPosition far = old.front();
  for (const StreamPosition& p : old)
    if (p.epoch > far.epoch || (p.epoch == far.epoch && p.batch > far.batch)) far = p;
  const int64_t consumed = far.batch * batch_size * old_world, global = batch_size * world;
  if (consumed % global != 0)
    throw CheckpointError(fmt::format(
        "--resume: the {} examples of epoch {} that the {}-worker checkpoint consumed are not a "
        "whole number of global batches of {} x {}; resume on {} workers, or from a checkpoint "
        "whose step makes them one",
        consumed, far.epoch, old_world, world, batch_size, old_world));
  return {far.epoch, consumed / global};
}

void restore_resharded(const std::vector<Archive>& old_ranks, const std::string& algorithm_name,
                       int64_t rank, int64_t world, int64_t per_step, TrainerState& state,
                       StagedModel& model, Algorithm& algorithm, MicroBatchSource& batches) {
  const auto old_world = static_cast<int64_t>(old_ranks.size());
  for (const Archive& a : old_ranks) {
    if (a.string("meta.algorithm") != algorithm_name)
      throw CheckpointError(fmt::format(
          "--resume: the checkpoint was written by algorithm '{}', the config selects '{}'",
          a.string("meta.algorithm"), algorithm_name));
    if (a.integer("meta.world_size") != old_world)
      throw CheckpointError(
          fmt::format("--resume: an archive of the {}-worker checkpoint says it is from {} workers",
                      old_world, a.integer("meta.world_size")));
  }
  const Archive& mine = old_ranks[static_cast<size_t>(rank % old_world)];
  TrainerState old;
  old.load(mine);
  // The same data consumed, counted in this world's steps.
  const int64_t step = per_step > 0 ? old.budget_used / per_step : old.step;

  Elastic* elastic = as_elastic(algorithm);
  if (!elastic)
    throw CheckpointError(fmt::format(
        "--resume: {} cannot resume on another number of workers: {} (the checkpoint is from {} "
        "workers; resume with --workers {})",
        algorithm_name, elastic_refusal(algorithm_name), old_world, old_world));
  std::vector<StreamPosition> positions;
  for (const Archive& a : old_ranks) positions.push_back(stream_position(a));
  const StreamPosition at =
      elastic_stream_position(positions, batches.batch_size(), old_world, world);

  for (auto& [name, t] : model->named_params()) mine.copy_into("model.param." + name, t);
  for (auto& [name, t] : model->named_bufs()) mine.copy_into("model.buffer." + name, t);
  elastic->load_resharded(old_ranks, step);
  batches.seek(at);
  restore_rng(mine);

  // Counters: this world's step; the examples consumed, split evenly over the new ranks.
  state = old;
  state.step = step;
  int64_t samples = 0, micro_batches = 0;
  for (const Archive& a : old_ranks) {
    samples += a.integer("trainer.samples");
    micro_batches += a.integer("trainer.micro_batches");
  }
  state.samples = even_share(samples, rank, world);
  state.micro_batches = even_share(micro_batches, rank, world);
}

namespace {

// The checkpoint of the newest step common to all ranks of `comm`, from this rank's newest
// readable one (`loaded`, if any) and one all-reduce; `reload(step)` reads this rank's checkpoint
// at or below `step`. Throws CheckpointError naming `dir` when no step is common to all.
template <typename Loaded, typename Reload>
Loaded agree_on_newest(std::optional<Loaded> loaded, Communicator& comm, const std::string& dir,
                       const Reload& reload) {
  torch::Tensor newest = torch::zeros({comm.world_size()}, torch::kFloat64);  // one slot a rank
  newest[comm.rank()] = loaded ? static_cast<double>(loaded->step) : -1.0;
  comm.all_reduce(newest);
  const auto agreed = static_cast<int64_t>(newest.min().item<double>());
  if (agreed >= 0 && loaded && loaded->step != agreed) loaded = reload(agreed);
  if (agreed < 0 || !loaded || loaded->step != agreed)
    throw CheckpointError(fmt::format(
        "--resume: no intact checkpoint common to all {} ranks in {}/checkpoints; start without "
        "--resume",
        comm.world_size(), dir));
  return std::move(*loaded);
}

}  // namespace

CheckpointStore::Loaded load_common_checkpoint(
    CheckpointStore& store, Communicator& comm, const std::string& dir,
    const std::function<void(const std::string&)>& warn) {
  return agree_on_newest(store.load_latest(warn), comm, dir,
                         [&](int64_t step) { return store.load_latest(warn, step); });
}

CheckpointStore::Resumable load_common_resumable(
    CheckpointStore& store, Communicator& comm, const std::string& dir,
    const std::function<void(const std::string&)>& warn) {
  CheckpointStore::Resumable loaded = agree_on_newest(
      store.load_resumable(warn), comm, dir,
      [&](int64_t step) { return store.load_resumable(warn, step); });
  const int64_t agreed = loaded.step;
  // Every rank must have read the files of the same world (a step directory may mix runs).
  torch::Tensor worlds = torch::zeros({comm.world_size()}, torch::kFloat64);
  worlds[comm.rank()] = static_cast<double>(loaded.world);
  comm.all_reduce(worlds);
  const auto lo = static_cast<int64_t>(worlds.min().item<double>());
  const auto hi = static_cast<int64_t>(worlds.max().item<double>());
  if (lo != hi)
    throw CheckpointError(fmt::format(
        "--resume: {}/checkpoints step {} holds files of runs with {} and {} workers; remove the "
        "other run's files",
        dir, agreed, lo, hi));
  return loaded;
}

}  // namespace desync
