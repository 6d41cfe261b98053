#include "desync/train/trainer_state.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include "desync/core/error.h"

namespace desync {

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
  batches.seek({a.integer("sampler.epoch"), a.integer("sampler.batch")});
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(a.tensor("rng.torch"));
  }
  state.load(a);
}

CheckpointStore::Loaded load_common_checkpoint(
    CheckpointStore& store, Communicator& comm, const std::string& dir,
    const std::function<void(const std::string&)>& warn) {
  auto loaded = store.load_latest(warn);
  torch::Tensor newest = torch::zeros({comm.world_size()}, torch::kFloat64);  // one slot a rank
  newest[comm.rank()] = loaded ? static_cast<double>(loaded->step) : -1.0;
  comm.all_reduce(newest);
  const auto agreed = static_cast<int64_t>(newest.min().item<double>());
  if (agreed >= 0 && loaded && loaded->step != agreed) loaded = store.load_latest(warn, agreed);
  if (agreed < 0 || !loaded || loaded->step != agreed)
    throw CheckpointError(fmt::format(
        "--resume: no intact checkpoint common to all {} ranks in {}/checkpoints; start without "
        "--resume",
        comm.world_size(), dir));
  return std::move(*loaded);
}

}  // namespace desync
