#include "desync/models/reversible.h"

#include <vector>

namespace desync {

bool is_reversible(torch::nn::Sequential& stage) {
  if (stage->size() == 0) return false;
  for (const auto& m : stage->children())
    if (dynamic_cast<ReversibleModule*>(m.get()) == nullptr) return false;
  return true;
}

torch::Tensor invert_stage(torch::nn::Sequential& stage, const torch::Tensor& y) {
  torch::NoGradGuard no_grad;
  std::vector<std::shared_ptr<torch::nn::Module>> modules = stage->children();
  torch::Tensor x = y;
  for (auto it = modules.rbegin(); it != modules.rend(); ++it)
    x = dynamic_cast<ReversibleModule&>(**it).inverse(x);
  return x;
}

}  // namespace desync
