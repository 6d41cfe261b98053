// The multi-process runtime of the delayed-gradient pipelines: one DelayedStage per rank, with
// the MemoryPolicy of the method it runs (delayed_stage.h).
//
// Contract: computes exactly what the TickSimulator computes for the same policy, k and data;
// rank 0 reads the whole stream (k micro-batches per step), the others read none; step() talks
// to the neighbouring ranks only (point-to-point, no collective). Docs: docs/pipelines.md.
//
// Rank s (of J) runs one DelayedStage over its range of model stages. One trainer step feeds
// k = `accumulation` micro-batches into the pipeline: k ticks, in each of which the rank does
// the forward due at that tick (receiving from s-1, or reading the data on rank 0), then the
// backward due (receiving from s+1), then its pending update. Messages sent in tick t are
// received in tick t+1. After the last step, finish() drains the pipeline (the backwards still
// owed).
//
// A checkpoint (between steps, so between ticks) holds each rank's stage state (DelayedStage::
// save: optimizer, buffered inputs, weight stashes, forwards owed a backward, accumulated
// gradients), its tick and micro-batch counts, and the messages it sent in the last tick, which
// the neighbours receive only in the next tick: after a resume each rank sends those again
// before its first tick, so the resumed run computes exactly what the uninterrupted one does.
// After finish() nothing is in flight.
// Options: stages_per_rank ([] = balanced), balance ("count" | "measured").
#pragma once

#include <memory>
#include <optional>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/pipeline/delayed_stage.h"
#include "desync/algorithms/pipeline/stages.h"

namespace desync {

class DelayedPipeline : public Algorithm {
 public:
  // `k`: micro-batches per step and backwards per update (`accumulation`).
  DelayedPipeline(std::unique_ptr<const MemoryPolicy> policy, PlacementOptions placement,
                  int64_t k);
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  void finish(Context& ctx) override;
  StagedModel model_for_eval(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  // memory: the rank's model state, "input_buffers" and "weight_stashes" (peak bytes);
  // counts: reversible, peak_buffered_inputs, peak_stashed_params, min_delay_ticks,
  // max_delay_ticks, updates.
  AlgorithmReport report() const override;

  const MemoryPolicy& policy() const { return *policy_; }
  DelayedStage& stage() { return *stage_; }

 private:
  void run_tick(Context& ctx, int64_t t, StepReport& report);
  void send_backward(PipeMessage m);  // to rank - 1, kept as the tick's backward message

  std::unique_ptr<const MemoryPolicy> policy_;
  PlacementOptions placement_;
  int64_t k_;
  std::vector<StageRange> ranges_;
  std::unique_ptr<DelayedStage> stage_;
  std::unique_ptr<PipeLink> link_;
  int64_t fed_ = 0, tick_ = 0;
  bool finished_ = false;
  // The messages this rank sent in its last tick (for a checkpoint), and those a resumed run
  // sends again before its first tick.
  std::optional<PipeMessage> sent_forward_, sent_backward_;
  std::optional<PipeMessage> resend_forward_, resend_backward_;
};

// Reads the placement options of `cfg` and builds the runtime with `policy`: the factory body
// of every delayed-gradient method.
std::unique_ptr<Algorithm> make_delayed_pipeline(std::unique_ptr<const MemoryPolicy> policy,
                                                 const AlgorithmConfig& cfg);

}  // namespace desync
