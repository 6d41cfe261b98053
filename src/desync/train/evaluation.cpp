#include "desync/train/evaluation.h"

#include <cmath>
#include <optional>

#include "desync/algorithms/common.h"
#include "desync/data/batch_source.h"

namespace desync {
namespace {

// Loss, correct predictions and count summed over the ranks, as a result over `data`.
EvalResult result_of(double loss_sum, double correct, double count, const Dataset& data) {
  EvalResult r;
  r.examples = static_cast<int64_t>(count);
  r.loss = count > 0 ? loss_sum / count : 0.0;
  r.accuracy = count > 0 ? correct / count : 0.0;
  if (data.kind == DataKind::kText && data.text_bytes > 0) {
    r.perplexity = std::exp(r.loss);
    r.bits_per_byte = r.loss * static_cast<double>(data.text_tokens) /
                      (static_cast<double>(data.text_bytes) * std::log(2.0));
  }
  return r;
}

// Runs `fn` with `model` in evaluation mode and no autograd, restoring its mode afterwards.
template <class Fn>
void in_eval_mode(StagedModel& model, Fn fn) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  fn();
  if (was_training) model->train();
}

int64_t eval_size(const Dataset& data, int64_t limit) {
  return limit > 0 ? std::min(data.size(), limit) : data.size();
}

}  // namespace

EvalResult evaluate(StagedModel model, const Dataset& data, int64_t limit, const Config& cfg,
                    Communicator& comm) {
  const int64_t n = eval_size(data, limit);
  const int64_t per_rank = (n + comm.world_size() - 1) / comm.world_size();
  const int64_t begin = std::min(n, comm.rank() * per_rank);
  const int64_t end = std::min(n, begin + per_rank);
  double loss_sum = 0.0, correct = 0.0, count = 0.0;
  in_eval_mode(model, [&] {
    for (int64_t b = begin; b < end; b += cfg.data.eval_batch_size) {
      MicroBatch mb =
          take_range(data, b, std::min(end, b + cfg.data.eval_batch_size), cfg.data.normalize);
      torch::Tensor logits = model->forward(mb.inputs);
      const double items = static_cast<double>(mb.targets.numel());
      loss_sum += loss_of(logits, mb.targets).item<double>() * items;
      correct += logits.argmax(-1).eq(mb.targets).sum().item<double>();
      count += items;
    }
  });
  torch::Tensor totals = torch::tensor({loss_sum, correct, count}, torch::kFloat64);
  comm.all_reduce(totals);
  auto t = totals.accessor<double, 1>();
  return result_of(t[0], t[1], t[2], data);
}

bool reestimate_batchnorm(StagedModel model, const Dataset& train, int64_t batches,
                          const Config& cfg) {
  // Every BatchNorm layer and its momentum, to restore: none (nullopt) makes the running
  // statistics the plain mean over the batches seen since reset_running_stats().
  std::vector<torch::nn::BatchNorm1dImpl*> bn1;
  std::vector<torch::nn::BatchNorm2dImpl*> bn2;
  for (const auto& m : model->modules()) {
    if (auto* bn = m->as<torch::nn::BatchNorm1dImpl>(); bn && bn->options.track_running_stats())
      bn1.push_back(bn);
    if (auto* bn = m->as<torch::nn::BatchNorm2dImpl>(); bn && bn->options.track_running_stats())
      bn2.push_back(bn);
  }
  if ((bn1.empty() && bn2.empty()) || batches <= 0) return false;
  std::vector<std::pair<std::optional<double>*, std::optional<double>>> momenta;
  auto reset = [&](auto& layers) {
    for (auto* bn : layers) {
      bn->reset_running_stats();
      momenta.push_back({&bn->options.momentum(), bn->options.momentum()});
      bn->options.momentum(std::nullopt);
    }
  };
  reset(bn1);
  reset(bn2);
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->train();
  const int64_t size = cfg.data.batch_size;
  for (int64_t b = 0; b < batches && b * size < train.size(); ++b) {
    MicroBatch mb =
        take_range(train, b * size, std::min(train.size(), (b + 1) * size), cfg.data.normalize);
    model->forward(mb.inputs);
  }
  for (auto& [slot, old] : momenta) *slot = old;
  if (!was_training) model->eval();
  return true;
}

PopulationResult evaluate_population(StagedModel member, StagedModel average,
                                     const DatasetSplits& data, int64_t limit,
                                     int64_t repair_batches, const Config& cfg,
                                     Communicator& comm) {
  const Dataset& test = data.test;
  const int64_t n = eval_size(test, limit), world = comm.world_size();
  double loss_sum = 0.0, correct = 0.0, count = 0.0;  // this rank's member
  double ens_loss_sum = 0.0, ens_correct = 0.0;       // the ensemble (same count)
  in_eval_mode(member, [&] {
    for (int64_t b = 0; b < n; b += cfg.data.eval_batch_size) {
      MicroBatch mb =
          take_range(test, b, std::min(n, b + cfg.data.eval_batch_size), cfg.data.normalize);
      torch::Tensor logits = member->forward(mb.inputs);
      torch::Tensor flat = logits.reshape({-1, logits.size(-1)}).to(torch::kFloat64);
      torch::Tensor targets = mb.targets.reshape({-1});
      const double items = static_cast<double>(targets.numel());
      loss_sum += loss_of(logits, mb.targets).item<double>() * items;
      correct += logits.argmax(-1).eq(mb.targets).sum().item<double>();
      count += items;
      torch::Tensor probs = torch::softmax(flat, -1).contiguous();
      comm.all_reduce(probs);
      probs.div_(static_cast<double>(world));
      torch::Tensor p = probs.gather(1, targets.unsqueeze(1)).squeeze(1);
      ens_loss_sum -= p.clamp_min(1e-300).log().sum().item<double>();
      ens_correct += probs.argmax(-1).eq(targets).sum().item<double>();
    }
  });
  // Every member's loss and accuracy, one slot per rank.
  torch::Tensor members = torch::zeros({world, 2}, torch::kFloat64);
  members[comm.rank()][0] = count > 0 ? loss_sum / count : 0.0;
  members[comm.rank()][1] = count > 0 ? correct / count : 0.0;
  comm.all_reduce(members);

  PopulationResult r;
  r.ensemble = result_of(ens_loss_sum, ens_correct, count, test);
  for (int64_t k = 0; k < world; ++k) {
    r.member_loss.push_back(members[k][0].item<double>());
    r.member_accuracy.push_back(members[k][1].item<double>());
  }
  r.repaired = reestimate_batchnorm(average, data.train, repair_batches, cfg);
  r.average = evaluate(average, test, limit, cfg, comm);
  return r;
}

}  // namespace desync
