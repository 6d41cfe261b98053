#include "desync/comm/nccl_communicator.h"

#include "desync/core/error.h"

#ifdef DESYNC_CUDA

#include <c10/cuda/CUDAFunctions.h>
#include <fmt/format.h>
#include <torch/cuda.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#include <utility>
#include <vector>

#include "desync/comm/rendezvous.h"

namespace desync {
namespace {

using StorePtr = c10::intrusive_ptr<c10d::Store>;
using GroupPtr = c10::intrusive_ptr<c10d::ProcessGroupNCCL>;
using C10dWork = c10::intrusive_ptr<c10d::Work>;

// How a call uses a tensor: read it (copied to the device), write it (copied back on wait).
enum Use { kIn = 1, kOut = 2, kInOut = kIn | kOut };

// The device buffers of one call: those to copy back into CPU tensors on wait, and those only
// to keep alive until then.
struct Staging {
  std::vector<std::pair<torch::Tensor, torch::Tensor>> back;  // (cpu, device)
  std::vector<torch::Tensor> keep;
};

// One c10d launch, shared by the Works of the calls it carries: set when a collective is issued,
// or when the queue of sends and receives it belongs to is flushed.
struct Launch {
  C10dWork work;
};

// A send or receive waiting in the queue for the channel's next flush.
struct QueuedP2p {
  bool send;
  torch::Tensor tensor;  // on the device
  int peer;
  int tag;
  int64_t seq;
  std::shared_ptr<Launch> launch;
};

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(StorePtr store, const WorldInfo& info, torch::Device device, std::string name)
      : store_(std::move(store)),
        rank_(info.rank),
        size_(info.world_size),
        info_(info),
        device_(device),
        name_(std::move(name)) {
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(static_cast<int64_t>(info.timeout_seconds * 1000));
    try {
      group_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          c10::make_intrusive<c10d::PrefixStore>(name_, store_), static_cast<int>(rank_),
          static_cast<int>(size_), opts);
      // Bound and connected now: every rank creates the NCCL communicator here, in the same
      // order, and point-to-point calls use it instead of creating one per pair on first use.
      group_->setBoundDeviceId(device_);
      group_->eagerConnectSingleDevice(device_);
    } catch (const std::exception& e) {
      throw CommError(fmt::format("rank {}: could not connect NCCL process group '{}' on {}: {}",
                                  rank_, name_, device_.str(), first_line(e.what())));
    }
  }

  ~NcclCommunicator() override {
    try {
      if (failed_)
        group_->abort();  // a peer may be gone: do not wait for it
      else
        group_->shutdown();
    } catch (const std::exception&) {
      // Nothing left to tell anyone: the process group is going away either way.
    }
  }

  int64_t rank() const override { return rank_; }
  int64_t world_size() const override { return size_; }

 protected:
  class NcclWork : public Work {
   public:
    NcclWork(NcclCommunicator* c, std::shared_ptr<Launch> launch, Staging staging, const char* op,
             int64_t seq)
        : c_(c), launch_(std::move(launch)), staging_(std::move(staging)), op_(op), seq_(seq) {}

    void wait() override {
      if (done_) return;
      if (!launch_->work) c_->flush();  // a queued send or receive: launch the queue
      if (!launch_->work) c_->fail(op_, seq_, "its group of sends and receives did not launch");
      try {
        launch_->work->wait();
        torch::NoGradGuard no_grad;  // the tensors may be parameters, as with Gloo
        for (auto& [cpu, device] : staging_.back) cpu.copy_(device);
      } catch (const std::exception& e) {
        c_->fail(op_, seq_, e.what());
      }
      staging_ = Staging();
      done_ = true;
    }

   private:
    NcclCommunicator* c_;
    std::shared_ptr<Launch> launch_;
    Staging staging_;
    const char* op_;
    int64_t seq_;
    bool done_ = false;
  };

  // `t` where NCCL can use it: t itself on this rank's device; for a CPU tensor, a device buffer
  // that holds t's values when the call reads it and is copied back when it writes it.
  torch::Tensor stage(const torch::Tensor& t, int use, Staging& s) {
    if (t.is_cuda()) {
      if (t.device() != device_)
        throw CommError(fmt::format(
            "rank {}: a tensor on {} was passed to the nccl communicator of {}; pass CPU "
            "tensors or tensors on {}",
            rank_, t.device().str(), device_.str(), device_.str()));
      return t;
    }
    torch::NoGradGuard no_grad;  // a plain buffer, even for a parameter
    torch::Tensor d =
        (use & kIn) ? t.to(device_) : torch::empty(t.sizes(), t.options().device(device_));
    if (use & kOut)
      s.back.emplace_back(t, d);
    else
      s.keep.push_back(d);
    return d;
  }

  // Launches a collective (after the queued sends and receives, which were issued first).
  // `launch(staging)` stages the tensors and calls c10d.
  template <class F>
  std::shared_ptr<Work> issue(const char* op, F&& launch) {
    flush();
    int64_t seq = ++calls_;
    try {
      Staging s;
      C10dWork w = launch(s);
      return std::make_shared<NcclWork>(this, std::make_shared<Launch>(Launch{std::move(w)}),
                                        std::move(s), op, seq);
    } catch (const CommError&) {
      throw;
    } catch (const std::exception& e) {
      fail(op, seq, e.what());
    }
  }

  // Queues a send or receive; it is launched by the next flush().
  std::shared_ptr<Work> queue(bool send, torch::Tensor& t, int64_t peer, int64_t tag) {
    const char* op = send ? "send" : "recv";
    int64_t seq = ++calls_;
    auto launch = std::make_shared<Launch>();
    Staging s;
    try {
      torch::Tensor d = stage(t, send ? kIn : kOut, s);
      queue_.push_back(
          QueuedP2p{send, d, static_cast<int>(peer), static_cast<int>(tag), seq, launch});
    } catch (const CommError&) {
      throw;
    } catch (const std::exception& e) {
      fail(op, seq, e.what());
    }
    return std::make_shared<NcclWork>(this, std::move(launch), std::move(s), op, seq);
  }

  // Launches the queued sends and receives, several as one NCCL group (c10d coalescing:
  // ncclGroupStart/ncclGroupEnd), so that they progress together.
  void flush() {
    if (queue_.empty()) return;
    std::vector<QueuedP2p> ops;
    ops.swap(queue_);
    auto one = [this](QueuedP2p& q) {
      std::vector<at::Tensor> v{q.tensor};
      return q.send ? group_->send(v, q.peer, q.tag) : group_->recv(v, q.peer, q.tag);
    };
    try {
      C10dWork w;
      if (ops.size() == 1) {
        w = one(ops.front());
      } else {
        group_->startCoalescing();
        for (QueuedP2p& q : ops) one(q);
        w = group_->endCoalescing();
      }
      for (QueuedP2p& q : ops) q.launch->work = w;
    } catch (const std::exception& e) {
      fail(ops.front().send ? "send" : "recv", ops.front().seq, e.what());
    }
  }

  std::shared_ptr<Work> do_all_reduce(torch::Tensor& t) override {
    return issue("all_reduce", [&](Staging& s) {
      std::vector<at::Tensor> v{stage(t, kInOut, s)};
      return group_->allreduce(v);
    });
  }
  std::shared_ptr<Work> do_broadcast(torch::Tensor& t, int64_t root) override {
    return issue("broadcast", [&](Staging& s) {
      // The root's tensor is only read, the others' only written.
      std::vector<at::Tensor> v{stage(t, rank_ == root ? kIn : kOut, s)};
      c10d::BroadcastOptions o;
      o.rootRank = static_cast<int>(root);
      return group_->broadcast(v, o);
    });
  }
  std::shared_ptr<Work> do_all_gather(std::vector<torch::Tensor>& out, torch::Tensor& in) override {
    return issue("all_gather", [&](Staging& s) {
      std::vector<std::vector<at::Tensor>> o(1);
      for (torch::Tensor& t : out) o[0].push_back(stage(t, kOut, s));
      std::vector<at::Tensor> i{stage(in, kIn, s)};
      return group_->allgather(o, i);
    });
  }
  std::shared_ptr<Work> do_all_to_all(torch::Tensor& out, torch::Tensor& in) override {
    return issue("all_to_all", [&](Staging& s) {
      at::Tensor o = stage(out, kOut, s);
      at::Tensor i = stage(in, kIn, s);
      std::vector<int64_t> splits;  // empty: equal splits
      return group_->all_to_all_single(o, i, splits, splits);
    });
  }
  std::shared_ptr<Work> do_reduce_scatter(torch::Tensor& out, torch::Tensor& in) override {
    return issue("reduce_scatter", [&](Staging& s) {
      at::Tensor o = stage(out, kOut, s);
      at::Tensor i = stage(in, kIn, s);
      return group_->reduce_scatter_single(o, i);
    });
  }
  std::shared_ptr<Work> do_send(torch::Tensor& t, int64_t dst, int64_t tag) override {
    return queue(true, t, dst, tag);
  }
  std::shared_ptr<Work> do_recv(torch::Tensor& t, int64_t src, int64_t tag) override {
    return queue(false, t, src, tag);
  }
  void do_barrier() override {
    issue("barrier", [&](Staging&) { return group_->barrier(); })->wait();
  }
  std::shared_ptr<Communicator> do_split(const std::string& name) override {
    flush();
    return std::make_shared<NcclCommunicator>(store_, info_, device_, name_ + "/" + name);
  }

 private:
  // Throws a CommError naming the ranks that had not reached call number `seq`.
  [[noreturn]] void fail(const char* op, int64_t seq, const std::string& what) {
    failed_ = true;
    throw_call_failure(*store_, name_, rank_, size_, op, seq, what);
  }

  StorePtr store_;
  int64_t rank_, size_;
  WorldInfo info_;
  torch::Device device_;
  std::string name_;
  GroupPtr group_;
  int64_t calls_ = 0;
  std::vector<QueuedP2p> queue_;  // sends and receives issued since the last flush
  bool failed_ = false;
};

}  // namespace

std::shared_ptr<Communicator> connect_nccl(const WorldInfo& info) {
  if (!torch::cuda::is_available())
    throw UsageError(fmt::format(
        "run.backend = \"nccl\": rank {} sees no CUDA device (torch::cuda::is_available() is "
        "false); run it where a GPU is visible (check the driver and CUDA_VISIBLE_DEVICES) or "
        "use run.backend = \"gloo\"",
        info.rank));
  const int64_t count = torch::cuda::device_count();
  torch::Device device(torch::kCUDA, static_cast<c10::DeviceIndex>(info.local_rank % count));
  c10::cuda::set_device(device.index());
  // wait() must block until the operation completed and throw when it failed or timed out (the
  // Work contract); without blocking wait, c10d's watchdog ends the process on a timeout.
  setenv("TORCH_NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);
  return std::make_shared<NcclCommunicator>(rendezvous(info), info, device, "world");
}

}  // namespace desync

#else  // !DESYNC_CUDA

namespace desync {

std::shared_ptr<Communicator> connect_nccl(const WorldInfo&) {
  throw UsageError(
      "run.backend = \"nccl\" needs a build with -DDESYNC_CUDA=ON (this desync was built "
      "without CUDA; or use run.backend = \"gloo\")");
}

}  // namespace desync

#endif  // DESYNC_CUDA
