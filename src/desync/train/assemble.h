// Assembling one rank's run from a Config: the model, the algorithm, the micro-batch source,
// the budget and the schedule, built in one place so that the Trainer and the in-process test
// harness (tests/algorithms/fake_run.h) build runs alike.
//
// The model is built from the seed (torch::manual_seed(run.seed) just before), so every rank
// starts from the same weights, then loaded from model.init_from's checkpoint when one is set. The source gives each rank its shard of every global batch,
// or, for algorithms whose first rank reads the whole stream (AlgorithmTraits::Data::
// kFirstRank), the unsharded stream on every rank (only the first one reads it).
// REQUIRES: `data` outlives the returned parts (the source holds it by reference).
#pragma once

#include <cstdint>
#include <memory>

#include "desync/algorithms/algorithm.h"
#include "desync/core/config.h"
#include "desync/data/batch_source.h"
#include "desync/data/dataset.h"
#include "desync/models/staged_model.h"
#include "desync/optim/schedule.h"
#include "desync/train/budget.h"

namespace desync {

struct RunParts {
  StagedModel model{nullptr};
  std::unique_ptr<Algorithm> algorithm;
  std::unique_ptr<MicroBatchSource> batches;
  Budget budget;
  std::unique_ptr<Schedule> schedule;  // over budget.steps
};

// Builds rank `rank` of `world`'s parts. Throws ConfigError for an invalid config.
RunParts assemble_run(const Config& cfg, const DatasetSplits& data, int64_t rank, int64_t world);

// The Context that the algorithm of `parts` is set up and stepped with.
Context make_context(const Config& cfg, Communicator& comm, RunParts& parts);

}  // namespace desync
