// `pipeline`: exact backprop across a pipeline of ranks, with a flush every step.
// References: GPipe (arXiv 1811.06965), 1F1B / PipeDream-Flush (arXiv 2006.09503); spec:
// shared/algorithms/pipelines-and-petra.md §1.
//
// Rank s (of J) owns a contiguous range of model stages. One step is M = `accumulation`
// micro-batches; rank 0 reads them, the labels travel forward with the activations, the last
// rank computes the loss. Each rank runs its schedule of forwards F_b and backwards B_b:
//
//   gpipe:  F_0 .. F_{M-1}, then B_{M-1} .. B_0
//   1f1b:   min(J-1-s, M) warm-up forwards; then F, B alternately; then the remaining Bs
//
// F_b: receive x from s-1 (rank 0: the data), y = stages(x) keeping the graph, send y to s+1
//      (last rank: loss_b = CE(y, labels) / M).
// B_b: receive dy from s+1 (last rank: d loss_b), backward through the kept graph, send dx to
//      s-1.
// After the last backward every rank takes its optimizer step on its own stages (gradient
// clipping uses the global norm, one scalar all-reduce). Both schedules compute exactly the
// gradients of sequential backprop with accumulation over M; they differ in how many
// micro-batches a rank keeps in flight (GPipe M; 1F1B min(J-s, M)), which memory() reports.
// Options: schedule ("1f1b" | "gpipe"), stages_per_rank ([] = balanced), balance ("count" |
// "measured").
#pragma once

#include <map>
#include <memory>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/pipeline/stages.h"

namespace desync {

struct PipelineOptions {
  bool gpipe = false;
  std::vector<int64_t> stages_per_rank;
  bool balance_measured = false;
};

// How the pipeline methods place stages; used by all of them.
PipelineOptions read_pipeline_options(SectionReader& r, bool with_schedule);
std::vector<StageRange> place_pipeline(Context& ctx, const PipelineOptions& o);
// The model's named parameters that `flat` holds (a rank's stages), for param_slots().
std::vector<std::pair<std::string, torch::Tensor>> named_params_of(const StagedModel& model,
                                                                   const FlatParameters& flat);

class Pipeline : public Algorithm {
 public:
  explicit Pipeline(PipelineOptions options) : opts_(std::move(options)) {}
  bool shards_data() const override { return false; }
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  StagedModel model_for_eval(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  MemoryReport memory() const override;
  std::vector<std::pair<std::string, int64_t>> stats() const override;

  // The schedule of rank s of J for M micro-batches: +b+1 is F_b, -(b+1) is B_b.
  static std::vector<int64_t> schedule(bool gpipe, int64_t s, int64_t j, int64_t m);

 private:
  void forward(Context& ctx, int64_t b, StepReport& report);
  void backward(int64_t step, int64_t b);

  PipelineOptions opts_;
  int64_t micro_batches_ = 1;  // M
  std::vector<StageRange> ranges_;
  StageRange mine_;
  bool first_ = false, last_ = false;
  std::unique_ptr<FlatParameters> flat_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<PipeLink> link_;
  struct InFlight {
    torch::Tensor input, output;  // output: the activation, or the loss on the last rank
    int64_t bytes = 0;            // of the input and output activations kept
  };
  std::map<int64_t, InFlight> in_flight_;
  int64_t peak_in_flight_ = 0, peak_activation_bytes_ = 0, activation_bytes_ = 0;
};

}  // namespace desync
