#include "desync/models/sampling.h"

#include <ATen/CPUGeneratorImpl.h>

#include <limits>
#include <stdexcept>

namespace desync {

std::vector<int> sample_tokens(StagedModel model, std::vector<int> prompt, int64_t context,
                               const SamplingOptions& options) {
  if (prompt.empty()) throw std::invalid_argument("sample_tokens: the prompt is empty");
  if (context < 1) throw std::invalid_argument("sample_tokens: the context must be positive");
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  std::vector<int> ids = std::move(prompt);
  for (int64_t n = 0; n < options.tokens; ++n) {
    const int64_t length = std::min<int64_t>(context, static_cast<int64_t>(ids.size()));
    std::vector<int64_t> window(ids.end() - length, ids.end());
    torch::Tensor x = torch::tensor(window, torch::kLong).unsqueeze(0);
    torch::Tensor logits = model->forward(x).select(1, length - 1).squeeze(0).to(torch::kDouble);
    int64_t next = 0;
    if (options.temperature <= 0) {
      next = logits.argmax().item<int64_t>();
    } else {
      logits = logits / options.temperature;
      if (options.top_k > 0 && options.top_k < logits.size(0)) {
        const double kth = std::get<0>(logits.topk(options.top_k)).min().item<double>();
        logits.masked_fill_(logits < kth, -std::numeric_limits<double>::infinity());
      }
      next = torch::multinomial(logits.softmax(0), 1, false, generator).item<int64_t>();
    }
    ids.push_back(static_cast<int>(next));
  }
  if (was_training) model->train();
  return ids;
}

}  // namespace desync
