// `petra`: Parallel End-to-end Training with Reversible Architectures.
// Reference: arXiv 2406.02052 (and the simulation in stephane-rivaud/PETRA); spec:
// shared/algorithms/pipelines-and-petra.md §3.
//
//   forward of b:   (non-reversible stage) Buf.push(x_b)
//                   y = F(x_b; theta) without graph; send (y, b, labels)
//   backward of b:  receive (y_rec, dy) from the next stage
//                   x_rec = reversible ? F^{-1}(y_rec; theta_now) : Buf.pop()
//                   recompute F(x_rec; theta_now) with graph; VJP with dy
//                   send (x_rec, dx) to the previous stage
//
// One parameter version per stage, no weight stash, and no activation buffer on reversible
// stages: they rebuild their input from the output the next stage rebuilt, with the current
// weights, so the reconstruction is approximate once the weights moved (errors compound down
// the pipeline). Non-reversible stages (stem, downsampling, head) keep up to 2(J-1-s)+1 inputs.
// Inversion leaves BatchNorm running statistics untouched; the recomputation updates them.
#include "desync/algorithms/pipeline/delayed_pipeline.h"
#include "desync/algorithms/registry.h"
#include "desync/models/reversible.h"

namespace desync {
namespace {

class PetraMemory : public StageMemory {
 public:
  PetraMemory(StagedModel model, StageRange range) : model_(std::move(model)), range_(range) {
    reversible_ = range.end > range.begin;
    for (int64_t i = range.begin; i < range.end; ++i)
      reversible_ = reversible_ && is_reversible(model_->stage(i));
  }
  bool inverts() const override { return reversible_; }
  void on_forward(int64_t id, const torch::Tensor& input, const torch::Tensor&) override {
    if (!reversible_) push_input(id, input);
  }
  torch::Tensor input_for_backward(int64_t id, const torch::Tensor& output) override {
    if (!reversible_) return pop_input(id);
    BufferSnapshot keep(model_, range_);  // inverting does not count for BatchNorm statistics
    torch::Tensor x = output;
    for (int64_t i = range_.end - 1; i >= range_.begin; --i) x = invert_stage(model_->stage(i), x);
    return x;
  }

 private:
  StagedModel model_;
  StageRange range_;
  bool reversible_ = false;
};

}  // namespace

std::unique_ptr<StageMemory> make_petra_memory(StagedModel model, StageRange range) {
  return std::make_unique<PetraMemory>(std::move(model), range);
}

std::unique_ptr<Algorithm> make_petra(const AlgorithmConfig& cfg) {
  return make_delayed_pipeline("petra", cfg);
}

}  // namespace desync
