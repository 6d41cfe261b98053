#include "desync/algorithms/pipeline/dsp.h"

#include <string>

#include "desync/algorithms/pipeline/delayed_pipeline.h"

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

class DspPolicy : public MemoryPolicy {
 public:
  std::string name() const override { return "dsp"; }
  std::unique_ptr<StageMemory> make_memory(StagedModel, StageRange) const override {
    return std::make_unique<DspMemory>();
  }
};

}  // namespace

std::unique_ptr<const MemoryPolicy> dsp_policy() { return std::make_unique<DspPolicy>(); }

std::unique_ptr<Algorithm> make_dsp(const AlgorithmConfig& cfg) {
  return make_delayed_pipeline(dsp_policy(), cfg);
}

}  // namespace desync
