// Elastic restart: an algorithm that can continue from a checkpoint that a run with another
// number of workers wrote (`--resume` with another --workers) implements Elastic; the Trainer asks
// with as_elastic() and refuses, with a one-line reason, for the algorithms that do not (a
// pipeline's stages, a gossip worker's place in the topology, a population's members: per-worker
// state with no counterpart in another world). See docs/distributed.md.
#pragma once

#include <cstdint>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/core/archive.h"

namespace desync {

class Elastic {
 public:
  virtual ~Elastic() = default;
  // Called instead of Algorithm::load(), once, after setup(), with the archives of all the old
  // ranks (old_ranks[q] is old rank q's, old_ranks.size() of them); the Trainer has already
  // restored the model, stream, RNG and its counters (the model from old rank
  // rank % old world). `step` is the step the run continues from, in this world's steps (the
  // Trainer rescales the step count so that the same data counts as consumed). Not collective.
  // Throws CheckpointError for state that cannot be restored.
  virtual void load_resharded(const std::vector<Archive>& old_ranks, int64_t step) = 0;
};

inline Elastic* as_elastic(Algorithm& algorithm) { return dynamic_cast<Elastic*>(&algorithm); }

}  // namespace desync
