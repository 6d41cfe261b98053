#include "desync/algorithms/common.h"

#include "desync/core/trace.h"

namespace desync {

torch::Tensor loss_of(const torch::Tensor& logits, const torch::Tensor& targets) {
  if (logits.dim() == 3)
    return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                targets.reshape({-1}));
  return torch::nn::functional::cross_entropy(logits, targets);
}

StepReport accumulate_gradients(Context& ctx, int64_t n, int64_t divisor) {
  StepReport report;
  double loss_sum = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    TraceSpan span("forward_backward", "compute");
    MicroBatch mb = ctx.batches.next();
    torch::Tensor loss = loss_of(ctx.model->forward(mb.inputs), mb.targets);
    (loss / static_cast<double>(divisor)).backward();
    loss_sum += loss.item<double>();
    report.samples += mb.inputs.size(0);
  }
  report.micro_batches = n;
  report.loss = loss_sum / static_cast<double>(n);
  return report;
}

}  // namespace desync
