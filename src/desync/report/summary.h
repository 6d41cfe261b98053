// The end-of-run summary: summary.json in the run directory and a table on the terminal.
//
// The Trainer fills in the figures that every rank knows alike (algorithm, steps, accuracy);
// add_rank_figures() gathers the per-rank ones (bytes, time, memory) from every rank in one
// collective call and adds them as lists in rank order; add_timelines() adds the activation
// memory summed over ranks and the reductions in flight across the job (report/timelines.h).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "desync/algorithms/algorithm.h"
#include "desync/comm/communicator.h"
#include "desync/core/activation_memory.h"
#include "desync/core/reductions.h"
#include "desync/core/trace.h"

namespace desync {

// One rank's figures for summary.json (see README, "The run directory", and
// docs/observability.md for how each is derived).
struct RankFigures {
  int64_t samples = 0;                  // examples this rank consumed
  int64_t micro_batches = 0;            // micro-batches this rank consumed
  CommStats training;                   // training traffic: every channel but evaluation's
  CommTime comm_time;                   // blocked / overlapped / idle, training channels
  int64_t eval_bytes_sent = 0;          // evaluation traffic
  double comm_in_flight_seconds = 0.0;  // some communication call was in flight
  // some communication call was in flight while the training thread was not waiting
  double comm_overlapped_seconds = 0.0;
  // the training thread waited while no communication was in flight (for a background thread's
  // compute, e.g. DPU's shard update)
  double wait_without_comm_seconds = 0.0;
  int64_t peak_rss_bytes = 0;
  AlgorithmReport algorithm;    // memory by buffer and counts (same names on every rank)
  double window_seconds = 0.0;  // the time the breakdown covers
  Tracer::ThreadTime time;      // where the training thread's time went
  double train_loss = 0.0;      // mean of the last steps' losses
  bool has_train_loss = false;  // false on ranks that compute no loss (pipelines)
};

// Adds every rank's figures to `summary`: samples_per_rank, bytes_sent, bytes_received,
// comm_wait_seconds, overlapped_comm_seconds, peak_rss_bytes, memory_bytes, algorithm_stats,
// time_breakdown_seconds, comm_in_flight_seconds, wait_without_comm_seconds, eval_bytes_sent, and
// train_loss (the mean over the ranks that computed one), samples and micro_batches (sums over the
// ranks). Collective on `comm` (one all-reduce); every rank gets the whole summary.
void add_rank_figures(nlohmann::json& summary, Communicator& comm, const RankFigures& mine);

// Adds "activation_memory" and "reductions" (report/timelines.h) from every rank's activation
// samples, its exact peak of live activation bytes, and its reduction records (times on
// Tracer::now_us()). Collective on `comm`: two all-reduces, then an all-gather if some rank
// recorded reductions; every rank gets the same objects. "reductions" is null when no rank
// recorded any.
void add_timelines(nlohmann::json& summary, Communicator& comm,
                   const ActivationSampler::Record& samples, int64_t peak_bytes,
                   const std::vector<ReductionRecord>& reductions);

// Renders the summary (as written to summary.json) as an aligned table for the terminal.
std::string summary_table(const nlohmann::json& summary);

}  // namespace desync
