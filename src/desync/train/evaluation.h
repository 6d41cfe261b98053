// Evaluation on the test split: one model, split across the ranks; and a population of models,
// one per rank (WASH, PAPA, independent ensembles), judged three ways.
//
// A population's evaluation (evaluate_population):
//   members    every rank scores its own member on the whole test range;
//   ensemble   per test batch, the members' softmax outputs are summed over the ranks (one
//              all-reduce of the batch's probabilities) and their mean is scored: its argmax
//              for the accuracy, the negative log of the target's mean probability for the loss;
//   average    the algorithm's model_for_eval() (the members' uniform average), its BatchNorm
//              statistics first re-estimated on training batches (the REPAIR-style step: an
//              average of weights does not have the average of the members' activation
//              statistics), then scored like any single model.
// All traffic goes over the communicator given (the Trainer's evaluation channel).
#pragma once

#include <cstdint>
#include <vector>

#include "desync/comm/communicator.h"
#include "desync/core/config.h"
#include "desync/data/dataset.h"
#include "desync/models/staged_model.h"
#include "desync/train/trainer.h"

namespace desync {

// Mean loss and accuracy of `model` on the first `limit` examples of `data` (0 = all), with the
// examples split across the ranks of `comm`.
EvalResult evaluate(StagedModel model, const Dataset& data, int64_t limit, const Config& cfg,
                    Communicator& comm);

// Re-estimates the running statistics of every BatchNorm layer of `model` from `batches`
// training batches of data.batch_size (the first ones of the split, unshuffled and not
// augmented: the same on every rank), as their plain mean over those batches. Returns false,
// and changes nothing, when the model has no BatchNorm layer or `batches` is 0.
bool reestimate_batchnorm(StagedModel model, const Dataset& train, int64_t batches,
                          const Config& cfg);

struct PopulationResult {
  EvalResult average;                   // the averaged model, after re-estimation if any
  EvalResult ensemble;                  // the mean of the members' softmax outputs
  std::vector<double> member_accuracy;  // by rank
  std::vector<double> member_loss;      // by rank
  bool repaired = false;                // the average's BatchNorm statistics were re-estimated
};

// `member` is this rank's own model, `average` the members' average (every rank holds the same
// one); `repair_batches` training batches re-estimate the average's BatchNorm statistics (0:
// not re-estimated). Collective over `comm`. `average` is changed (its statistics); `member`
// is not.
PopulationResult evaluate_population(StagedModel member, StagedModel average,
                                     const DatasetSplits& data, int64_t limit,
                                     int64_t repair_batches, const Config& cfg, Communicator& comm);

}  // namespace desync
