// `pipedream`: a delayed-gradient pipeline with weight stashing.
// Reference: "PipeDream: Fast and Efficient Pipeline Parallel DNN Training" (arXiv 1806.03377);
// spec: shared/algorithms/pipelines-and-petra.md §2.
//
//   forward of b:   Buf.push(x_b); Stash.push(theta); y = F(x_b; theta) without graph; send y
//   backward of b:  x_b = Buf.pop(); theta_b = Stash.pop();
//                   recompute F(x_b; theta_b) with graph; VJP with dy; apply to theta_now
//
// The backward of b uses bitwise the weights its forward used, so each micro-batch's gradient
// is consistent; it is applied 2(J-1-s) ticks late. Memory: up to 2(J-1-s)+1 buffered inputs
// and as many copies of the stage's parameters.
#include "desync/algorithms/pipeline/delayed_pipeline.h"
#include "desync/algorithms/registry.h"

namespace desync {
namespace {

class PipeDreamMemory : public StageMemory {
 public:
  void on_forward(int64_t id, const torch::Tensor& input, const torch::Tensor& params) override {
    push_input(id, input);
    push_params(id, params);
  }
  torch::Tensor input_for_backward(int64_t id, const torch::Tensor&) override {
    return pop_input(id);
  }
  torch::Tensor params_for_backward(int64_t id) override { return pop_params(id); }
};

}  // namespace

std::unique_ptr<StageMemory> make_pipedream_memory() { return std::make_unique<PipeDreamMemory>(); }

std::unique_ptr<Algorithm> make_pipedream(const AlgorithmConfig& cfg) {
  return make_delayed_pipeline("pipedream", cfg);
}

}  // namespace desync
