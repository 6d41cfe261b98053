#include "desync/algorithms/population/ensemble.h"

#include "desync/algorithms/registry.h"

namespace desync {

std::unique_ptr<Algorithm> make_ensemble(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  Population::Options options = population_options(r, "distinct");
  r.finish();
  return std::make_unique<Ensemble>(options);
}

}  // namespace desync
