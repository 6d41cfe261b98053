// The multi-process runtime of the delayed-gradient pipelines (`pipedream`, `dsp`, `petra`).
//
// Rank s (of J) runs one DelayedStage (delayed_stage.h) over its range of model stages. One
// trainer step feeds k = `accumulation` micro-batches into the pipeline: k ticks, in each of
// which the rank does the forward due at that tick (receiving from s-1, or reading the data on
// rank 0), then the backward due (receiving from s+1), then its pending update. Messages sent in
// tick t are received in tick t+1, so the runtime computes exactly what the TickSimulator does.
// After the last step, finish() drains the pipeline (the backwards still owed).
//
// Checkpoints hold each stage's parameters and optimizer state, but not the micro-batches in
// flight between stages, so a run cannot be resumed (load() says so).
// Options: stages_per_rank ([] = balanced), balance ("count" | "measured").
#pragma once

#include <memory>
#include <string>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/pipeline/delayed_stage.h"
#include "desync/algorithms/pipeline/pipeline.h"

namespace desync {

class DelayedPipeline : public Algorithm {
 public:
  DelayedPipeline(std::string mode, PipelineOptions options)
      : mode_(std::move(mode)), opts_(std::move(options)) {}
  bool shards_data() const override { return false; }
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  void finish(Context& ctx) override;
  StagedModel model_for_eval(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  MemoryReport memory() const override;
  std::vector<std::pair<std::string, int64_t>> stats() const override;

  DelayedStage& stage() { return *stage_; }

 private:
  void run_tick(Context& ctx, int64_t t, StepReport& report);

  std::string mode_;
  PipelineOptions opts_;
  int64_t k_ = 1;
  std::vector<StageRange> ranges_;
  std::unique_ptr<DelayedStage> stage_;
  std::unique_ptr<PipeLink> link_;
  int64_t fed_ = 0, tick_ = 0;
  bool finished_ = false;
};

// Reads the pipeline options of `cfg` and builds the runtime for `mode`.
std::unique_ptr<Algorithm> make_delayed_pipeline(const std::string& mode,
                                                 const AlgorithmConfig& cfg);

}  // namespace desync
