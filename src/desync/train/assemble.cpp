#include "desync/train/assemble.h"

#include "desync/algorithms/population/population.h"
#include "desync/algorithms/registry.h"
#include "desync/core/error.h"
#include "desync/train/init_from.h"

namespace desync {
namespace {

// The embedding trainers, the sgns model and the words dataset only make sense together.
void check_embedding_run(const Config& cfg) {
  const AlgorithmInfo* info = nullptr;
  for (const AlgorithmInfo& a : algorithm_registry())
    if (a.name == cfg.algorithm.name) info = &a;
  const bool trainer = info && info->family == "embedding";
  const bool model = cfg.model.name == "sgns", words = cfg.data.dataset == "words";
  if (trainer && (!model || !words))
    throw ConfigError("algorithm " + cfg.algorithm.name +
                      " needs model.name = \"sgns\" and data.dataset = \"words\"");
  if (!trainer && (model || words))
    throw ConfigError(std::string(model ? "model.name = \"sgns\"" : "data.dataset = \"words\"") +
                      " trains with algorithm sgns or ppmi_svd, not " + cfg.algorithm.name);
}

}  // namespace

RunParts assemble_run(const Config& cfg, const DatasetSplits& data, int64_t rank, int64_t world) {
  validate_for_world(cfg, world);
  check_embedding_run(cfg);
  RunParts p;
  p.algorithm = make_algorithm(cfg.algorithm);
  // Every rank starts from the same weights, except the members of a population that start
  // apart: rank r's model is seeded with run.seed + r.
  const Population* population = as_population(*p.algorithm);
  const bool distinct = population && population->population().distinct_init;
  torch::manual_seed(static_cast<uint64_t>(cfg.run.seed + (distinct ? rank : 0)));
  p.model = make_model(cfg.model, ModelInput{data.train.example_shape(), data.train.num_classes});
  if (!cfg.model.init_from.empty()) init_from_run(p.model, cfg.model.init_from);
  const bool sharded = p.algorithm->traits().data == AlgorithmTraits::Data::kSharded;
  const int64_t readers = sharded ? world : 1;
  p.batches = std::make_unique<MicroBatchSource>(
      data.train, cfg.data.batch_size, sharded ? rank : 0, readers,
      static_cast<uint64_t>(cfg.run.seed), TransformOptions{cfg.data.normalize, cfg.data.augment});
  p.budget = make_budget(cfg, p.algorithm->traits(), readers, p.batches->batches_per_epoch());
  p.schedule = std::make_unique<Schedule>(cfg.schedule, cfg.optimizer.lr, p.budget.steps);
  return p;
}

Context make_context(const Config& cfg, Communicator& comm, RunParts& parts) {
  Context ctx{cfg, comm, parts.model, *parts.batches, *parts.schedule};
  if (!cfg.run.worker_speed.empty()) ctx.compute_stretch = 1.0 / cfg.run.worker_speed[comm.rank()];
  ctx.micro_batches_left = parts.budget.left(0);
  return ctx;
}

}  // namespace desync
