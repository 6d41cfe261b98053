// Synthetic activation samples of two ranks, for the tests of report/timelines.h and of the
// summary that gathers them.
#pragma once

#include <array>
#include <vector>

#include "desync/core/activation_memory.h"

namespace desync::testing {

// (instant, step, bytes) triples; step -1 = between steps.
inline ActivationSampler::Record record_of(std::vector<std::array<int64_t, 3>> samples,
                                           int64_t first_step, int64_t last_step) {
  ActivationSampler::Record r;
  r.period_us = 1000;
  for (const auto& [instant, step, bytes] : samples) r.samples.push_back({instant, bytes, step});
  r.first_step = first_step;
  r.last_step = last_step;
  return r;
}

// Two ranks, steps 0..3 each, 3 instants per step (the third between steps), 1 ms apart.
// Rank B missed instant 4.
inline ActivationSampler::Record rank_a() {
  return record_of({{0, 0, 10},
                    {1, 0, 20},
                    {2, -1, 0},
                    {3, 1, 30},
                    {4, 1, 40},
                    {5, -1, 0},
                    {6, 2, 50},
                    {7, 2, 60},
                    {8, -1, 0},
                    {9, 3, 10},
                    {10, 3, 10},
                    {11, -1, 0}},
                   0, 3);
}
inline ActivationSampler::Record rank_b() {
  return record_of({{0, 0, 1},
                    {1, 0, 2},
                    {2, -1, 0},
                    {3, 1, 3},
                    {5, -1, 0},
                    {6, 2, 5},
                    {7, 2, 6},
                    {8, -1, 0},
                    {9, 3, 1},
                    {10, 3, 1},
                    {11, -1, 0}},
                   0, 3);
}

}  // namespace desync::testing
