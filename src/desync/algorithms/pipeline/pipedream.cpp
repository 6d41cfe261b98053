#include "desync/algorithms/pipeline/pipedream.h"

#include <string>

#include "desync/algorithms/pipeline/delayed_pipeline.h"

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

class PipeDreamPolicy : public MemoryPolicy {
 public:
  std::string name() const override { return "pipedream"; }
  std::unique_ptr<StageMemory> make_memory(StagedModel, StageRange) const override {
    return std::make_unique<PipeDreamMemory>();
  }
};

}  // namespace

std::unique_ptr<const MemoryPolicy> pipedream_policy() {
  return std::make_unique<PipeDreamPolicy>();
}

std::unique_ptr<Algorithm> make_pipedream(const AlgorithmConfig& cfg) {
  return make_delayed_pipeline(pipedream_policy(), cfg);
}

}  // namespace desync
