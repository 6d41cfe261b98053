// `dsp`: a delayed-gradient pipeline that buffers stage inputs and recomputes with the current
// weights. Reference: "On the Acceleration of Deep Learning Model Parallelism with Staleness"
// (Diversely Stale Parameters, arXiv 1909.02625); spec:
// shared/algorithms/pipelines-and-petra.md §2.
//
//   forward of b:   Buf.push(x_b); y = F(x_b; theta) without graph; send y
//   backward of b:  x_b = Buf.pop(); recompute F(x_b; theta_now) with graph; VJP with dy
//
// The gradient is that of the current weights at a stale input: 2(J-1-s) ticks old at stage s.
// Memory: up to 2(J-1-s)+1 buffered inputs, no weight copies.
#include "desync/algorithms/pipeline/delayed_pipeline.h"
#include "desync/algorithms/registry.h"

namespace desync {
namespace {

class DspMemory : public StageMemory {
 public:
  void on_forward(int64_t id, const torch::Tensor& input, const torch::Tensor&) override {
    push_input(id, input);
  }
  torch::Tensor input_for_backward(int64_t id, const torch::Tensor&) override {
    return pop_input(id);
  }
};

}  // namespace

std::unique_ptr<StageMemory> make_dsp_memory() { return std::make_unique<DspMemory>(); }

std::unique_ptr<Algorithm> make_dsp(const AlgorithmConfig& cfg) {
  return make_delayed_pipeline("dsp", cfg);
}

}  // namespace desync
