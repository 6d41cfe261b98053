// `pipeline`: exact backprop across a pipeline of ranks, with a flush every step.
//
// Contract: the gradients equal sequential backprop's with accumulation over M micro-batches;
// rank 0 reads the whole stream (M micro-batches per step), the others read none; step() is
// collective over all ranks (point-to-point with the neighbours, and one scalar all-reduce when
// clipping). Resumes exactly, because nothing is in flight between steps.
// References: "GPipe: Efficient Training of Giant Neural Networks using Pipeline Parallelism"
// (arXiv 1811.06965); 1F1B / PipeDream-Flush, "Memory-Efficient Pipeline-Parallel DNN Training"
// (arXiv 2006.09503). Docs: docs/algorithms/pipeline.md, docs/pipelines.md.
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
// micro-batches a rank keeps in flight (GPipe M; 1F1B min(J-s, M)), which report() shows.
// Options: schedule ("1f1b" | "gpipe"), stages_per_rank ([] = balanced), balance ("count" |
// "measured"), and the boundary compression (boundary_codec.h: compression = "none" | "ssn" |
// "mapl", with its keys). With compression, every message between ranks goes through the
// boundary's codec, each codec takes its per-step update after the optimizer step, and
// evaluation runs the model through the same codecs (CompressedModel).
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/pipeline/boundary_codec.h"
#include "desync/algorithms/pipeline/stages.h"

namespace desync {

struct PipelineOptions {
  bool gpipe = false;  // schedule = "gpipe"; else 1F1B
  PlacementOptions placement;
  CodecOptions codec;  // seed filled in at setup (run.seed)
};

// One entry of a rank's schedule: the forward F_b or the backward B_b of micro-batch b.
struct PipeOp {
  enum class Kind { kForward, kBackward } kind;
  int64_t micro_batch;

  bool operator==(const PipeOp& o) const { return kind == o.kind && micro_batch == o.micro_batch; }
  bool operator!=(const PipeOp& o) const { return !(*this == o); }
};

class Pipeline : public Algorithm {
 public:
  // `micro_batches`: M, the micro-batches of one step (`accumulation`).
  Pipeline(PipelineOptions options, int64_t micro_batches);
  void setup(Context& ctx) override;
  StepReport step(Context& ctx) override;
  StagedModel model_for_eval(Context& ctx) override;
  void save(Archive& archive) const override;
  void load(const Archive& archive) override;
  // memory: the rank's model state, "activations" (the peak bytes of boundary tensors kept) and
  // the codecs' state; counts: stage_begin, stage_end, peak_in_flight_micro_batches, and the
  // bytes this rank sent in forward, backward and codec messages (boundary_forward_bytes,
  // boundary_backward_bytes, boundary_sync_bytes).
  AlgorithmReport report() const override;

  // The schedule of rank s of J for M micro-batches, in order.
  static std::vector<PipeOp> schedule(bool gpipe, int64_t s, int64_t j, int64_t m);

 private:
  void forward(Context& ctx, int64_t b, StepReport& report);
  void backward(int64_t step, int64_t b);

  PipelineOptions opts_;
  int64_t micro_batches_;  // M
  std::vector<StageRange> ranges_;
  StageRange mine_;
  bool first_ = false, last_ = false;
  std::unique_ptr<FlatParameters> flat_;
  std::unique_ptr<Optimizer> optimizer_;
  std::vector<std::unique_ptr<BoundaryCodec>> codecs_;        // one per boundary (compression only)
  BoundaryCodec *in_codec_ = nullptr, *out_codec_ = nullptr;  // this rank's two boundaries
  std::unique_ptr<PipeLink> link_;
  struct InFlight {
    torch::Tensor input, output;  // output: the activation, or the loss on the last rank
    int64_t bytes = 0;            // of the input and output activations kept
  };
  std::map<int64_t, InFlight> in_flight_;
  int64_t peak_in_flight_ = 0, peak_activation_bytes_ = 0, activation_bytes_ = 0;
};

// The registry's factory: reads schedule and the placement options.
std::unique_ptr<Algorithm> make_pipeline(const AlgorithmConfig& cfg);

}  // namespace desync
