// The summary's timelines across ranks, as plain functions of what the ranks recorded: activation
// memory summed over ranks instant by instant (core/activation_memory.h), and gradient
// reductions in flight across the job (core/reductions.h). report/summary.cpp gathers the ranks'
// records with collectives and hands them to these; the tests feed them synthetic records.
//
// Definitions (docs/observability.md, "Activation memory and reductions"):
//   common instant   a grid instant every rank sampled
//   steady state     the instants at which every rank was sampled inside a step, past the first
//                    step it ran and before its last
//   window           a few steps of rank 0 in the middle of the steady state, at most
//                    `max_points` instants: the span the curve and the reduction timeline show
//   in flight        a reduction of (group, step) is in flight across the job from the latest of
//                    the ranks' issues to the latest of their completions
// All times are microseconds on the machine's monotonic clock (steady_clock), so the ranks of
// one machine share them. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "desync/core/activation_memory.h"
#include "desync/core/reductions.h"

namespace desync {

// The instants first + i * stride, for i in [0, size).
struct Grid {
  int64_t first = 0, stride = 1, size = 0;
  int64_t instant(int64_t i) const { return first + i * stride; }
};

// The instants every rank may have sampled: from the latest first sample to the earliest last
// one, at the coarsest of the ranks' strides (a multiple of the others: they are powers of two).
// size is 0 when the ranks' sampling does not overlap. One entry per rank in each list.
Grid common_grid(const std::vector<int64_t>& first, const std::vector<int64_t>& last,
                 const std::vector<int64_t>& stride);

// Rows over the instants of a grid. One rank's rows hold 0/1 flags and its bytes; the ranks'
// rows added element by element (what summary.cpp's all-reduce does) hold counts and sums.
struct GridRows {
  std::vector<double> bytes;      // live activation bytes; 0 where not sampled
  std::vector<double> sampled;    // 1 where sampled
  std::vector<double> steady;     // 1 where sampled in a step s with first_step < s < last_step
  std::vector<double> lead_step;  // rank 0's rows only: its step + 1 there (0 between steps)
  explicit GridRows(int64_t size = 0);
  GridRows& operator+=(const GridRows& other);
};

// One rank's rows on `grid`; `lead`: this rank's steps define the window (rank 0).
GridRows rank_rows(const ActivationSampler::Record& record, const Grid& grid, bool lead);

// The instants (indices into the grid) of the job's steady state: steady[i] == world.
std::vector<int64_t> steady_instants(const GridRows& sum, int64_t world);

// The window: indices [begin, end] into the grid, and rank 0's steps it spans. Up to `steps`
// steps of rank 0 among those it ran during the steady state, the middle ones, fewer if they take
// more than `max_points` instants (then cut at max_points instants if one step is longer).
// found = false if there is no steady state.
struct Window {
  bool found = false;
  int64_t begin = 0, end = 0;
  int64_t first_step = 0, last_step = 0;
};
Window choose_window(const GridRows& sum, const std::vector<int64_t>& steady, size_t max_points,
                     int64_t steps = 4);

// The "activation_memory" object of summary.json (see the README's run directory table) from the
// summed rows; the steady state's and the window's times are returned beside it, for the
// reductions.
struct ActivationSummary {
  nlohmann::json json;
  bool steady = false;                             // the run had a steady state
  int64_t steady_begin_us = 0, steady_end_us = 0;  // from its first instant to past its last
  bool window = false;
  int64_t window_begin_us = 0, window_end_us = 0;
};
ActivationSummary summarize_activation(const GridRows& sum, const Grid& grid, int64_t world,
                                       int64_t period_us, const std::vector<int64_t>& rank_peaks,
                                       size_t max_points = 2000);

// A reduction of one group and step as the job saw it.
struct JobReduction {
  int64_t group = 0, step = 0;
  int64_t start_us = 0, end_us = 0;  // in flight across the job: [start, end)
  int64_t ranks = 0;                 // the ranks that recorded it
};
// Pairs the ranks' records by (group, k) (the k-th record of a group on a rank is its reduction
// of step k) and takes [latest issue, latest completion] over the ranks that recorded each pair.
// The records' times must share one clock. Sorted by start, then group.
std::vector<JobReduction> job_reductions(const std::vector<std::vector<ReductionRecord>>& ranks);

// The largest number of reductions in flight at one instant of [begin_us, end_us). Intervals
// are half-open: one ending when another starts does not overlap it.
int64_t max_in_flight(const std::vector<JobReduction>& reductions, int64_t begin_us,
                      int64_t end_us);

// The "reductions" object of summary.json: groups, steps (reductions per group), max_in_flight
// over the steady state and the timeline of the window (null where `activation` has none).
nlohmann::json summarize_reductions(const std::vector<JobReduction>& reductions,
                                    const ActivationSummary& activation);

}  // namespace desync
