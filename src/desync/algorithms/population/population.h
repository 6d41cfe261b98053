// A population method (WASH, PAPA, independent ensembles): every rank trains a model of its own,
// a member, and the method's model is the members' average.
//
// What sets such a method apart for the Trainer, which asks with as_population():
//   - it builds rank r's model with seed run.seed + r when `distinct_init` (train/assemble.cpp);
//   - each evaluation scores every member, their ensemble (the mean of their softmax outputs)
//     and model_for_eval(), the members' average, whose BatchNorm statistics are first
//     re-estimated on `repair_batches` training batches (train/evaluation.h). The run's
//     test_accuracy is the average's.
#pragma once

#include <cstdint>
#include <vector>

#include "desync/algorithms/algorithm.h"

namespace desync {

class Population : public Algorithm {
 public:
  struct Options {
    bool distinct_init = true;    // member r starts from weights seeded with run.seed + r
    int64_t repair_batches = 16;  // 0: the average's BatchNorm statistics are not re-estimated
    // Member r's loss (algorithms/loss_recipe.h): mixup alpha mixup[r mod A] and label
    // smoothing label_smoothing[floor(r / A) mod B], A and B the lists' lengths.
    std::vector<double> mixup{0.0}, label_smoothing{0.0};
  };
  explicit Population(Options options) : population_(options) {}
  const Options& population() const { return population_; }

 private:
  Options population_;
};

// The population method `algorithm` is, or null.
inline const Population* as_population(const Algorithm& algorithm) {
  return dynamic_cast<const Population*>(&algorithm);
}

}  // namespace desync
