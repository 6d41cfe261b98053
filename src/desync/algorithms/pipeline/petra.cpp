#include "desync/algorithms/pipeline/petra.h"

#include <string>
#include <utility>

#include "desync/algorithms/pipeline/delayed_pipeline.h"
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

class PetraPolicy : public MemoryPolicy {
 public:
  std::string name() const override { return "petra"; }
  std::unique_ptr<StageMemory> make_memory(StagedModel model, StageRange range) const override {
    return std::make_unique<PetraMemory>(std::move(model), range);
  }
  bool rebuilds_inputs() const override { return true; }
};

}  // namespace

std::unique_ptr<const MemoryPolicy> petra_policy() { return std::make_unique<PetraPolicy>(); }

std::unique_ptr<Algorithm> make_petra(const AlgorithmConfig& cfg) {
  return make_delayed_pipeline(petra_policy(), cfg);
}

}  // namespace desync
