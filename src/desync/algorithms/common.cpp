#include "desync/algorithms/common.h"

#include <chrono>
#include <cmath>
#include <thread>

#include "desync/algorithms/loss_recipe.h"
#include "desync/core/activation_memory.h"
#include "desync/core/trace.h"

namespace desync {

torch::Tensor loss_of(const torch::Tensor& logits, const torch::Tensor& targets) {
  if (logits.dim() == 3)
    return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                targets.reshape({-1}));
  return torch::nn::functional::cross_entropy(logits, targets);
}

StepReport accumulate_gradients(Context& ctx, int64_t n, int64_t divisor) {
  return accumulate_gradients_with(ctx, n, divisor, [&](const MicroBatch& mb) {
    return loss_of(ctx.model->forward(mb.inputs), mb.targets);
  });
}

StepReport accumulate_gradients_with(
    Context& ctx, int64_t n, int64_t divisor,
    const std::function<torch::Tensor(const MicroBatch&)>& loss_fn) {
  StepReport report;
  double loss_sum = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    int64_t t0 = Tracer::now_us();
    {
      TraceSpan span("forward_backward", "compute");
      MicroBatch mb = ctx.batches.next();
      torch::Tensor loss;
      {
        ActivationScope activations;  // what forward saves for backward (core/activation_memory.h)
        loss = loss_fn(mb);
      }
      (loss / static_cast<double>(divisor)).backward();
      loss_sum += loss.item<double>();
      report.samples += mb.inputs.size(0);
    }
    if (ctx.compute_stretch > 1.0) {  // an emulated slower worker takes longer per micro-batch
      TraceSpan span("slowdown", "compute");
      auto extra = static_cast<int64_t>((Tracer::now_us() - t0) * (ctx.compute_stretch - 1.0));
      std::this_thread::sleep_for(std::chrono::microseconds(extra));
    }
  }
  report.micro_batches = n;
  report.loss = loss_sum / static_cast<double>(n);
  return report;
}

std::unique_ptr<FlatParameters> make_replicated_flat(Context& ctx, int64_t pad_to) {
  auto flat = std::make_unique<FlatParameters>(ctx.model->parameters_of(0, ctx.model->num_stages()),
                                               pad_to);
  if (ctx.comm.world_size() > 1) {
    ctx.comm.broadcast(flat->params_flat(), 0);
    for (auto& [name, buf] : ctx.model->named_bufs()) ctx.comm.broadcast(buf, 0);
  }
  return flat;
}

void apply_update(Context& ctx, FlatParameters& flat, Optimizer& optimizer) {
  TraceSpan span("optimizer", "optimizer");
  if (ctx.config.optimizer.grad_clip > 0)
    clip_grad_norm({flat.grads_flat()}, ctx.config.optimizer.grad_clip);
  optimizer.step(ctx.schedule.lr(ctx.step));
}

void clip_global_norm(Communicator& comm, torch::Tensor& grad, double max_norm) {
  if (max_norm <= 0) return;
  torch::NoGradGuard no_grad;
  torch::Tensor sq = grad.to(torch::kFloat64).pow(2).sum().reshape({1});
  comm.all_reduce(sq);
  const double scale = max_norm / (std::sqrt(sq.item<double>()) + 1e-6);
  if (scale < 1.0) grad.mul_(scale);
}

void save_optimizer(Optimizer& optimizer, Archive& archive, const std::string& prefix) {
  for (auto& [name, t] : optimizer.state()) archive.put(prefix + name, t);
}

void load_optimizer(Optimizer& optimizer, const Archive& archive, const std::string& prefix) {
  for (auto& [name, t] : optimizer.state()) archive.copy_into(prefix + name, t);
}

MemoryReport model_state_memory(FlatParameters& flat, Optimizer& optimizer) {
  int64_t elem = flat.params_flat().element_size();
  return {{"parameters", flat.padded_numel() * elem},
          {"gradients", flat.padded_numel() * elem},
          {"optimizer_state", optimizer.state_numel() * elem}};
}

}  // namespace desync
