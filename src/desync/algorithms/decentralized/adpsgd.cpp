#include "desync/algorithms/decentralized/adpsgd.h"

#include <random>

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"
#include "desync/core/trace.h"

namespace desync {

std::unique_ptr<Algorithm> make_adpsgd(const AlgorithmConfig& cfg) {
  algorithm_options(cfg).finish();
  return std::make_unique<Adpsgd>();
}

namespace {
constexpr int64_t kRequestTag = 1, kActiveTag = 2, kPassiveTag = 3;
}  // namespace

void average_with_passive(Communicator& channel, torch::Tensor& x, torch::Tensor& buffer,
                          int64_t peer) {
  TraceSpan span("average", "comm");
  channel.send(torch::ones({1}), peer, kRequestTag);
  auto sent = channel.send_async(x, peer, kActiveTag);
  channel.recv(buffer, peer, kPassiveTag);
  sent->wait();
  torch::NoGradGuard no_grad;
  x.add_(buffer).mul_(0.5);
}

bool serve_one_request(Communicator& channel, torch::Tensor& x, torch::Tensor& buffer, int64_t peer,
                       std::mutex& mu) {
  torch::Tensor request = torch::zeros({1});
  int64_t t0 = Tracer::now_us();
  channel.recv(request, peer, kRequestTag);
  channel.record_idle(static_cast<double>(Tracer::now_us() - t0) * 1e-6);
  if (request.item<float>() == 0.0f) return false;
  channel.recv(buffer, peer, kActiveTag);
  TraceSpan span("serve_average", "comm");
  std::lock_guard<std::mutex> lock(mu);
  channel.send(x, peer, kPassiveTag);
  torch::NoGradGuard no_grad;
  buffer.add_(x);  // the same sum as the active side's x_a + x_p
  x.copy_(buffer.mul_(0.5));
  return true;
}

void Adpsgd::setup(Context& ctx) {
  const int64_t n = ctx.comm.world_size(), r = ctx.comm.rank();
  active_ = r % 2 == 0;
  seed_ = static_cast<uint64_t>(ctx.config.run.seed);
  // Ring edge (i, i+1) runs on channel "even" when i is even, "odd" otherwise; an edge joins an
  // active and a passive rank only when i and i+1 differ in parity.
  // An active rank uses its edges from the training thread, a passive one from its servers.
  const Caller caller = active_ ? Caller::kTrainingThread : Caller::kBackgroundThread;
  std::shared_ptr<Communicator> even = ctx.comm.split("adpsgd-even", caller);
  std::shared_ptr<Communicator> odd = ctx.comm.split("adpsgd-odd", caller);
  auto edge_from = [&](int64_t i) -> std::shared_ptr<Communicator> {
    int64_t j = (i + 1) % n;
    if (n < 2 || i % 2 == j % 2) return nullptr;
    return i % 2 == 0 ? even : odd;
  };
  if (auto ch = edge_from(r)) edges_.push_back({(r + 1) % n, ch});
  if (auto ch = edge_from((r + n - 1) % n)) edges_.push_back({(r + n - 1) % n, ch});

  flat_ = std::make_unique<FlatParameters>(ctx.model->parameters_of(0, ctx.model->num_stages()));
  x_ = flat_->params_flat().clone();
  buffer_ = torch::empty_like(x_);
  std::vector<ParamSlot> slots = param_slots(ctx.model->named_params(), ctx.config.optimizer);
  for (size_t i = 0; i < slots.size(); ++i)  // update x_ (not the model) with the model's grads
    slots[i].param =
        x_.narrow(0, flat_->offset(i), slots[i].param.numel()).view(slots[i].param.sizes());
  optimizer_ = ctx.make_optimizer(std::move(slots));
  consensus_ = std::make_unique<Consensus>(ctx.model);
  if (!active_) {
    for (const Edge& e : edges_) {
      server_buffers_.push_back(torch::empty_like(x_));
      servers_.push_back(std::make_unique<BackgroundTask>());
      servers_.back()->start([this, e, b = server_buffers_.back()] { serve(e, b); });
    }
  }
}

void Adpsgd::serve(Edge edge, torch::Tensor buffer) {
  while (serve_one_request(*edge.channel, x_, buffer, edge.peer, mu_)) ++averagings_;
}

StepReport Adpsgd::step(Context& ctx) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    torch::NoGradGuard no_grad;
    flat_->params_flat().copy_(x_);  // x_hat
  }
  flat_->grads_flat().zero_();
  StepReport report = accumulate_gradients(ctx, ctx.config.algorithm.accumulation);
  if (active_ && !edges_.empty()) {
    std::mt19937_64 pick(seed_ * 1000003ULL + static_cast<uint64_t>(ctx.comm.rank()) * 7919ULL +
                         static_cast<uint64_t>(ctx.step));
    const Edge& e = edges_[pick() % edges_.size()];
    average_with_passive(*e.channel, x_, buffer_, e.peer);
    ++averagings_;
  }
  std::lock_guard<std::mutex> lock(mu_);
  apply_update(ctx, *flat_, *optimizer_);
  return report;
}

void Adpsgd::finish(Context& ctx) {
  if (finished_) return;
  finished_ = true;
  if (active_)
    for (const Edge& e : edges_) e.channel->send(torch::zeros({1}), e.peer, kRequestTag);
  for (auto& s : servers_) s->join();
  torch::NoGradGuard no_grad;
  flat_->params_flat().copy_(x_);
}

torch::Tensor Adpsgd::parameters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return x_.clone();
}

StagedModel Adpsgd::model_for_eval(Context& ctx) {
  return consensus_->average(ctx.eval_channel(), parameters(), ctx.model);
}

void Adpsgd::save(Archive& archive) const {
  std::lock_guard<std::mutex> lock(mu_);
  archive.put("adpsgd.x", x_.clone());
  save_optimizer(*optimizer_, archive);
}

void Adpsgd::load(const Archive& archive) {
  std::lock_guard<std::mutex> lock(mu_);
  archive.copy_into("adpsgd.x", x_);
  load_optimizer(*optimizer_, archive);
}

AlgorithmReport Adpsgd::report() const {
  MemoryReport r = model_state_memory(*flat_, *optimizer_);
  int64_t elem = x_.element_size();
  r.push_back({"local_copy", x_.numel() * elem});
  r.push_back(
      {"receive_buffers",
       (buffer_.numel() + static_cast<int64_t>(server_buffers_.size()) * x_.numel()) * elem});
  return {.memory = r, .eval_metrics = {{"consensus_distance", consensus_->distance()}}};
}

}  // namespace desync
