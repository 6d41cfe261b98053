#include "desync/comm/communicator.h"

#include <fmt/format.h>

#include <chrono>
#include <functional>
#include <thread>

#include "desync/core/error.h"
#include "desync/core/system.h"
#include "desync/core/trace.h"

namespace desync {
namespace {

class DoneWork : public Work {
 public:
  void wait() override {}
};

// Times and traces the wait of an underlying Work, once.
class AccountedWork : public Work {
 public:
  AccountedWork(const char* op, std::shared_ptr<Work> inner, int64_t bytes,
                std::function<void(double)> add_wait, double latency_seconds)
      : latency_us_(static_cast<int64_t>(latency_seconds * 1e6)),
        op_(op),
        inner_(std::move(inner)),
        bytes_(bytes),
        add_wait_(std::move(add_wait)),
        issued_us_(Tracer::now_us()) {}

  void wait() override {
    if (done_) return;
    int64_t t0 = Tracer::now_us();
    inner_->wait();
    if (latency_us_ > 0) {  // emulated latency: not complete before issue + latency
      int64_t ready = issued_us_ + latency_us_;
      int64_t now = Tracer::now_us();
      if (now < ready) std::this_thread::sleep_for(std::chrono::microseconds(ready - now));
    }
    int64_t t1 = Tracer::now_us();
    done_ = true;
    add_wait_(static_cast<double>(t1 - t0) * 1e-6);
    Tracer::instance().span("wait", "wait", t0, t1);
    Tracer::instance().span(op_, "comm", issued_us_, t1, bytes_);
  }

 private:
  int64_t latency_us_;
  const char* op_;
  std::shared_ptr<Work> inner_;
  int64_t bytes_;
  std::function<void(double)> add_wait_;
  int64_t issued_us_;
  bool done_ = false;
};

// Runs `then` after `first` completes, when waited on.
class ChainedWork : public Work {
 public:
  ChainedWork(std::shared_ptr<Work> first, std::function<void()> then)
      : first_(std::move(first)), then_(std::move(then)) {}
  void wait() override {
    if (done_) return;
    first_->wait();
    then_();
    done_ = true;
  }

 private:
  std::shared_ptr<Work> first_;
  std::function<void()> then_;
  bool done_ = false;
};

int64_t nbytes(const torch::Tensor& t) { return t.numel() * t.element_size(); }

void check_contiguous(const torch::Tensor& t, const char* op) {
  if (!t.is_contiguous())
    throw CommError(fmt::format("{}: tensors passed to the communicator must be contiguous", op));
}

}  // namespace

std::shared_ptr<Work> completed_work() { return std::make_shared<DoneWork>(); }

int64_t broadcast_bytes_sent(int64_t rank, int64_t root, int64_t world, int64_t bytes) {
  // Binomial tree on virtual ranks (root = 0): v sends to v + 2^k for every 2^k > v.
  int64_t v = (rank - root + world) % world;
  int64_t children = 0;
  for (int64_t bit = 1; bit < world; bit <<= 1)
    if (bit > v && v + bit < world) ++children;
  return children * bytes;
}

std::shared_ptr<Work> Communicator::account(const char* op, std::shared_ptr<Work> work,
                                            int64_t sent, int64_t received) {
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.bytes_sent += sent;
    stats_.bytes_received += received;
    ++stats_.calls;
  }
  auto add_wait = [this](double seconds) {
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_.wait_seconds += seconds;
  };
  return std::make_shared<AccountedWork>(op, std::move(work), sent, add_wait, latency_seconds_);
}

std::shared_ptr<Work> Communicator::all_reduce_async(torch::Tensor t) {
  check_contiguous(t, "all_reduce");
  int64_t n = world_size();
  int64_t bytes = 2 * (n - 1) * nbytes(t) / n;
  return account("all_reduce", do_all_reduce(t), bytes, bytes);
}

std::shared_ptr<Work> Communicator::all_reduce_async(torch::Tensor t, torch::ScalarType wire) {
  check_contiguous(t, "all_reduce");
  if (wire == t.scalar_type()) return all_reduce_async(t);
  int64_t n = world_size();
  int64_t chunk = (t.numel() + n - 1) / n;
  auto low = torch::zeros({n * chunk}, t.options().dtype(wire));
  low.narrow(0, 0, t.numel()).copy_(t.reshape({-1}));
  auto mine = torch::empty({chunk}, t.options().dtype(wire));
  std::shared_ptr<Work> rs = reduce_scatter_async(mine, low);
  // The all-gather is issued when the reduce-scatter is waited on.
  return std::make_shared<ChainedWork>(rs, [this, t, low, mine, n, chunk]() mutable {
    std::vector<torch::Tensor> parts = low.chunk(n);
    all_gather(parts, mine);
    t.reshape({-1}).copy_(low.narrow(0, 0, t.numel()));
  });
}

std::shared_ptr<Work> Communicator::broadcast_async(torch::Tensor t, int64_t root) {
  check_contiguous(t, "broadcast");
  int64_t bytes = nbytes(t);
  return account("broadcast", do_broadcast(t, root),
                 broadcast_bytes_sent(rank(), root, world_size(), bytes),
                 rank() == root ? 0 : bytes);
}

std::shared_ptr<Work> Communicator::all_gather_async(std::vector<torch::Tensor> out,
                                                     torch::Tensor in) {
  check_contiguous(in, "all_gather");
  if (static_cast<int64_t>(out.size()) != world_size())
    throw CommError("all_gather: needs one output tensor per rank");
  int64_t bytes = (world_size() - 1) * nbytes(in);
  return account("all_gather", do_all_gather(out, in), bytes, bytes);
}

std::shared_ptr<Work> Communicator::all_to_all_async(torch::Tensor out, torch::Tensor in) {
  check_contiguous(in, "all_to_all");
  check_contiguous(out, "all_to_all");
  int64_t n = world_size();
  if (in.size(0) % n != 0 || out.sizes() != in.sizes())
    throw CommError("all_to_all: input and output must have the same shape, divisible by N");
  int64_t bytes = (n - 1) * nbytes(in) / n;
  return account("all_to_all", do_all_to_all(out, in), bytes, bytes);
}

std::shared_ptr<Work> Communicator::reduce_scatter_async(torch::Tensor out, torch::Tensor in) {
  int64_t n = world_size();
  if (in.size(0) != n * out.size(0))
    throw CommError("reduce_scatter: input must be N times the output along dim 0");
  check_contiguous(in, "reduce_scatter");
  check_contiguous(out, "reduce_scatter");
  bool low = out.scalar_type() == torch::kBFloat16 || out.scalar_type() == torch::kHalf;
  if (!low)
    if (std::shared_ptr<Work> w = do_reduce_scatter(out, in)) {
      int64_t bytes = (n - 1) * nbytes(in) / n;
      return account("reduce_scatter", std::move(w), bytes, bytes);
    }
  // Without a true reduce-scatter in the backend: exchange chunks with all_to_all (the
  // reduce-scatter traffic), then sum the N received chunks locally, low-precision ones in
  // float32.
  auto received = torch::empty_like(in);
  std::shared_ptr<Work> a2a = all_to_all_async(received, in);
  return std::make_shared<ChainedWork>(a2a, [out, received, n, low]() mutable {
    torch::NoGradGuard no_grad;
    if (low)
      out.view({-1}).copy_(received.view({n, -1}).to(torch::kFloat32).sum(0));
    else {
      torch::Tensor flat = out.view({-1});
      torch::sum_out(flat, received.view({n, -1}), 0);
    }
  });
}

std::shared_ptr<Work> Communicator::send_async(torch::Tensor t, int64_t dst, int64_t tag) {
  check_contiguous(t, "send");
  return account("send", do_send(t, dst, tag), nbytes(t), 0);
}

std::shared_ptr<Work> Communicator::recv_async(torch::Tensor t, int64_t src, int64_t tag) {
  check_contiguous(t, "recv");
  return account("recv", do_recv(t, src, tag), 0, nbytes(t));
}

void Communicator::barrier() {
  int64_t t0 = Tracer::now_us();
  do_barrier();
  int64_t t1 = Tracer::now_us();
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    ++stats_.calls;
    stats_.wait_seconds += static_cast<double>(t1 - t0) * 1e-6;
  }
  Tracer::instance().span("barrier", "wait", t0, t1);
  Tracer::instance().span("barrier", "comm", t0, t1, 0);
}

std::shared_ptr<Communicator> Communicator::split(const std::string& name, Caller caller) {
  splits_.push_back(do_split(name));
  splits_.back()->set_emulated_latency(latency_seconds_);
  splits_.back()->caller_ = caller;
  return splits_.back();
}

void Communicator::record_idle(double seconds) {
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.idle_seconds += seconds;
}

void Communicator::record_join_wait(double seconds) {
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.join_wait_seconds += seconds;
}

CommTime Communicator::time() const {
  const CommStats s = stats();
  CommTime t;
  const double busy = s.wait_seconds - s.idle_seconds;
  (caller_ == Caller::kTrainingThread ? t.blocked : t.overlapped) += busy;
  t.blocked += s.join_wait_seconds;
  t.idle += s.idle_seconds;
  for (const auto& c : splits_) t += c->time();
  return t;
}

CommStats Communicator::stats() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return stats_;
}

CommStats Communicator::total_stats() const {
  CommStats s = stats();
  for (const auto& c : splits_) s += c->total_stats();
  return s;
}

std::shared_ptr<Work> SoloCommunicator::do_all_reduce(torch::Tensor& t) { return completed_work(); }
std::shared_ptr<Work> SoloCommunicator::do_broadcast(torch::Tensor& t, int64_t root) {
  return completed_work();
}
std::shared_ptr<Work> SoloCommunicator::do_all_gather(std::vector<torch::Tensor>& out,
                                                      torch::Tensor& in) {
  out[0].copy_(in);
  return completed_work();
}
std::shared_ptr<Work> SoloCommunicator::do_all_to_all(torch::Tensor& out, torch::Tensor& in) {
  out.copy_(in);
  return completed_work();
}
std::shared_ptr<Work> SoloCommunicator::do_send(torch::Tensor& t, int64_t dst, int64_t tag) {
  throw CommError("send: a single worker has no peer");
}
std::shared_ptr<Work> SoloCommunicator::do_recv(torch::Tensor& t, int64_t src, int64_t tag) {
  throw CommError("recv: a single worker has no peer");
}
std::shared_ptr<Communicator> SoloCommunicator::do_split(const std::string& name) {
  return std::make_shared<SoloCommunicator>();
}

}  // namespace desync
