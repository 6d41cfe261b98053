#include "desync/algorithms/decentralized/gossip.h"

#include "desync/core/trace.h"

namespace desync {

PeerExchange::PeerExchange(const torch::Tensor& like, int64_t max_degree) {
  for (int64_t k = 0; k < max_degree; ++k) buffers_.push_back(torch::empty_like(like));
}

void PeerExchange::start(Communicator& comm, const torch::Tensor& x, std::vector<Peer> peers,
                         int64_t round) {
  TORCH_CHECK(peers.size() <= buffers_.size(), "PeerExchange: ", peers.size(),
              " peers, buffers for ", buffers_.size());
  peers_ = std::move(peers);
  const int64_t tag = round & 0x7fff;
  for (size_t k = 0; k < peers_.size(); ++k) {
    pending_.push_back(comm.send_async(x, peers_[k].rank, tag));
    pending_.push_back(comm.recv_async(buffers_[k], peers_[k].rank, tag));
  }
}

void PeerExchange::finish(torch::Tensor& x) {
  for (auto& w : pending_) w->wait();
  pending_.clear();
  TraceSpan span("mix", "optimizer");
  torch::NoGradGuard no_grad;
  double self = 1.0;
  for (const Peer& p : peers_) self -= p.weight;
  if (peers_.empty()) return;
  x.mul_(self);
  for (size_t k = 0; k < peers_.size(); ++k) x.add_(buffers_[k], peers_[k].weight);
}

int64_t PeerExchange::buffer_bytes() const {
  int64_t n = 0;
  for (const auto& b : buffers_) n += b.numel() * b.element_size();
  return n;
}

Consensus::Consensus(const StagedModel& model) : model_(model->clone_model()) {
  flat_ = std::make_unique<FlatParameters>(model_->parameters_of(0, model_->num_stages()));
}

StagedModel Consensus::average(Communicator& comm, const torch::Tensor& params,
                               const StagedModel& local) {
  torch::NoGradGuard no_grad;
  const auto n = static_cast<double>(comm.world_size());
  torch::Tensor& avg = flat_->params_flat();
  avg.copy_(params.narrow(0, 0, avg.numel()));
  comm.all_reduce(avg);
  avg.div_(n);
  torch::Tensor dist =
      (params.narrow(0, 0, avg.numel()) - avg).norm().reshape({1}).to(torch::kFloat64);
  comm.all_reduce(dist);
  distance_ = dist.item<double>() / n;
  average_buffers(comm, local);
  return model_;
}

StagedModel Consensus::shared(Communicator& comm, const torch::Tensor& params,
                              const StagedModel& local) {
  torch::NoGradGuard no_grad;
  flat_->params_flat().copy_(params.narrow(0, 0, flat_->numel()));
  average_buffers(comm, local);
  return model_;
}

void Consensus::average_buffers(Communicator& comm, const StagedModel& local) {
  const int64_t n = comm.world_size();
  auto mine = local->named_bufs();
  auto theirs = model_->named_bufs();
  for (size_t i = 0; i < mine.size(); ++i) {
    torch::Tensor& b = theirs[i].second;
    b.copy_(mine[i].second);
    comm.all_reduce(b);
    if (b.is_floating_point())
      b.div_(static_cast<double>(n));
    else
      b.div_(n, "floor");
  }
}

}  // namespace desync
