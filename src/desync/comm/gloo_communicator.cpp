#include "desync/comm/gloo_communicator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "desync/comm/rendezvous.h"
#include "desync/core/error.h"

namespace desync {
namespace {

using StorePtr = c10::intrusive_ptr<c10d::Store>;
using GroupPtr = c10::intrusive_ptr<c10d::ProcessGroupGloo>;

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

int64_t env_int(const char* name, bool required, int64_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) {
    if (required)
      throw UsageError(
          fmt::format("environment variable {} is not set (desync worker is started "
                      "by `desync train --workers N` or a torchrun-style launcher)",
                      name));
    return fallback;
  }
  char* end = nullptr;
  long long x = std::strtoll(v, &end, 10);
  if (*end != '\0' || x < 0)
    throw UsageError(
        fmt::format("environment variable {}={} is not a non-negative integer", name, v));
  return x;
}

}  // namespace

WorldInfo world_from_env() {
  WorldInfo w;
  w.rank = env_int("RANK", true, 0);
  w.world_size = env_int("WORLD_SIZE", true, 1);
  w.local_rank = env_int("LOCAL_RANK", false, w.rank);
  w.local_world_size = env_int("LOCAL_WORLD_SIZE", false, w.world_size);
  w.master_port = env_int("MASTER_PORT", true, 0);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) w.master_addr = a;
  if (const char* t = std::getenv("DESYNC_JOB_TOKEN"); t && *t) w.job_token = t;
  if (w.rank == 0) w.store_fd = env_int("DESYNC_STORE_FD", false, -1);  // from the launcher
  if (w.rank >= w.world_size)
    throw UsageError(fmt::format("RANK={} must be below WORLD_SIZE={}", w.rank, w.world_size));
  if (w.master_port == 0 || w.master_port > 65535)
    throw UsageError(fmt::format("MASTER_PORT={} is not a port number", w.master_port));
  return w;
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

void throw_call_failure(c10d::Store& store, const std::string& name, int64_t rank,
                        int64_t world_size, const char* op, int64_t seq, const std::string& what) {
  // The store queries run on a thread of their own, for at most kStoreSeconds: a TCPStore call
  // has no time-out when the store's host (rank 0) is stopped rather than gone, and would hold
  // this rank, and so the job, forever. A query left behind stays blocked on its detached
  // thread, which holds what it uses; this rank fails either way.
  constexpr auto kStoreSeconds = std::chrono::seconds(10);
  struct Progress {
    std::mutex mutex;
    std::condition_variable answered;
    bool done = false, unreachable = false;
    std::vector<int64_t> behind;
  };
  auto progress = std::make_shared<Progress>();
  std::thread([progress, store = c10::intrusive_ptr<c10d::Store>::reclaim_copy(&store),
               key = fmt::format("progress/{}/", name), rank, world_size, seq] {
    std::vector<int64_t> behind;
    bool unreachable = false;
    try {
      std::string mine = std::to_string(seq);
      store->set(key + std::to_string(rank), std::vector<uint8_t>(mine.begin(), mine.end()));
      std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // let the others post
      for (int64_t r = 0; r < world_size; ++r) {
        if (!store->check({key + std::to_string(r)})) {
          behind.push_back(r);
          continue;
        }
        std::vector<uint8_t> v = store->get(key + std::to_string(r));
        if (std::stoll(std::string(v.begin(), v.end())) < seq) behind.push_back(r);
      }
    } catch (const std::exception&) {
      unreachable = true;  // the store itself is gone (rank 0 died)
    }
    std::lock_guard<std::mutex> lock(progress->mutex);
    progress->behind = std::move(behind);
    progress->unreachable = unreachable;
    progress->done = true;
    progress->answered.notify_all();
  }).detach();

  std::unique_lock<std::mutex> lock(progress->mutex);
  if (!progress->answered.wait_for(lock, kStoreSeconds, [&] { return progress->done; }))
    throw CommError(fmt::format(
        "rank {}: {} (call #{}) failed, and rank 0, which hosts the rendezvous store, did not "
        "answer within {} s (stopped?): {}",
        rank, op, seq, kStoreSeconds.count(), first_line(what)));
  if (progress->unreachable)
    throw CommError(
        fmt::format("rank {}: {} (call #{}) failed and the rendezvous store is "
                    "unreachable (rank 0 is gone?): {}",
                    rank, op, seq, first_line(what)));
  const std::vector<int64_t>& behind = progress->behind;
  throw CommError(fmt::format(
      "rank {}: {} (call #{} on '{}') failed; ranks that did not arrive: "
      "{}; cause: {}",
      rank, op, seq, name, behind.empty() ? "none" : fmt::format("{}", fmt::join(behind, ", ")),
      first_line(what)));
}

class GlooCommunicator : public Communicator {
 public:
  GlooCommunicator(StorePtr store, int64_t rank, int64_t size, const WorldInfo& info,
                   std::string name)
      : store_(std::move(store)), rank_(rank), size_(size), info_(info), name_(std::move(name)) {
    auto opts = c10d::ProcessGroupGloo::Options::create(
        std::chrono::milliseconds(static_cast<int64_t>(info.timeout_seconds * 1000)));
    std::string local = is_loopback(info.master_addr) ? "127.0.0.1" : "";
    if (const char* a = std::getenv("DESYNC_LOCAL_ADDR"); a && *a) local = a;
    opts->devices.push_back(local.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                          : c10d::ProcessGroupGloo::createDeviceForHostname(local));
    try {
      group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(
          c10::make_intrusive<c10d::PrefixStore>(name_, store_), static_cast<int>(rank),
          static_cast<int>(size), opts);
    } catch (const std::exception& e) {
      throw CommError(fmt::format("rank {}: could not connect process group '{}': {}", rank, name_,
                                  first_line(e.what())));
    }
  }

  int64_t rank() const override { return rank_; }
  int64_t world_size() const override { return size_; }

 protected:
  class GlooWork : public Work {
   public:
    GlooWork(GlooCommunicator* c, c10::intrusive_ptr<c10d::Work> work, const char* op, int64_t seq)
        : c_(c), work_(std::move(work)), op_(op), seq_(seq) {}
    void wait() override {
      try {
        work_->wait();
      } catch (const std::exception& e) {
        c_->fail(op_, seq_, e.what());
      }
    }

   private:
    GlooCommunicator* c_;
    c10::intrusive_ptr<c10d::Work> work_;
    const char* op_;
    int64_t seq_;
  };

  template <class F>
  std::shared_ptr<Work> issue(const char* op, F&& launch) {
    int64_t seq = ++calls_;
    try {
      return std::make_shared<GlooWork>(this, launch(), op, seq);
    } catch (const CommError&) {
      throw;
    } catch (const std::exception& e) {
      fail(op, seq, e.what());
    }
  }

  std::shared_ptr<Work> do_all_reduce(torch::Tensor& t) override {
    return issue("all_reduce", [&] {
      std::vector<at::Tensor> v{t};
      return group_->allreduce(v);
    });
  }
  std::shared_ptr<Work> do_broadcast(torch::Tensor& t, int64_t root) override {
    return issue("broadcast", [&] {
      std::vector<at::Tensor> v{t};
      c10d::BroadcastOptions o;
      o.rootRank = static_cast<int>(root);
      return group_->broadcast(v, o);
    });
  }
  std::shared_ptr<Work> do_all_gather(std::vector<torch::Tensor>& out, torch::Tensor& in) override {
    return issue("all_gather", [&] {
      std::vector<std::vector<at::Tensor>> o{out};
      std::vector<at::Tensor> i{in};
      return group_->allgather(o, i);
    });
  }
  std::shared_ptr<Work> do_all_to_all(torch::Tensor& out, torch::Tensor& in) override {
    return issue("all_to_all", [&] {
      std::vector<int64_t> splits;  // empty: equal splits
      return group_->alltoall_base(out, in, splits, splits);
    });
  }
  // No do_reduce_scatter: 2.15's ProcessGroupGloo::reduce_scatter_single is an all-reduce of
  // the whole input and a copy of this rank's chunk, twice the bytes of the base class's
  // all-to-all and local sum.
  std::shared_ptr<Work> do_send(torch::Tensor& t, int64_t dst, int64_t tag) override {
    return issue("send", [&] {
      std::vector<at::Tensor> v{t};
      return group_->send(v, static_cast<int>(dst), static_cast<int>(tag));
    });
  }
  std::shared_ptr<Work> do_recv(torch::Tensor& t, int64_t src, int64_t tag) override {
    return issue("recv", [&] {
      std::vector<at::Tensor> v{t};
      return group_->recv(v, static_cast<int>(src), static_cast<int>(tag));
    });
  }
  void do_barrier() override {
    issue("barrier", [&] { return group_->barrier(); })->wait();
  }
  std::shared_ptr<Communicator> do_split(const std::string& name) override {
    return std::make_shared<GlooCommunicator>(store_, rank_, size_, info_, name_ + "/" + name);
  }

 private:
  // Throws a CommError naming the ranks that had not reached call number `seq`.
  [[noreturn]] void fail(const char* op, int64_t seq, const std::string& what) {
    throw_call_failure(*store_, name_, rank_, size_, op, seq, what);
  }

  StorePtr store_;
  int64_t rank_, size_;
  WorldInfo info_;
  std::string name_;
  GroupPtr group_;
  int64_t calls_ = 0;
};

namespace {

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }
std::string string_of(const std::vector<uint8_t>& v) { return {v.begin(), v.end()}; }

// The rendezvous' own keys, outside every job's prefix.
constexpr const char* kTokenKey = "desync/job_token";
constexpr const char* kWorldKey = "desync/world_size";
constexpr const char* kJoinedKey = "desync/joined";
constexpr const char* kRefusedKey = "desync/refused";
std::string rank_key(int64_t rank) { return fmt::format("desync/rank/{}", rank); }

// Rank 0 publishes the token and the world size; every other rank checks both. Then each rank
// claims its number (a second claim is refused) and counts itself in; all wait until the count
// reaches the world size. A rank refused for a reason that concerns this job (a duplicate rank,
// another world size) posts the reason, and the waiting ranks stop with it at once; one with
// another job's token does not (it is not this job's), and the job's wait ends at the time-out
// naming the ranks that never came.
void join(c10d::Store& tcp, const WorldInfo& info, const std::string& token) {
  const std::string where = fmt::format("{}:{}", info.master_addr, info.master_port);
  auto refuse = [&](const std::string& why, bool tell_the_job) {
    if (tell_the_job) tcp.set(kRefusedKey, bytes_of(fmt::format("rank {}: {}", info.rank, why)));
    throw CommError(fmt::format("rank {}: {}", info.rank, why));
  };
  if (info.rank == 0) {
    tcp.set(kTokenKey, bytes_of(token));
    tcp.set(kWorldKey, bytes_of(std::to_string(info.world_size)));
  } else {
    if (string_of(tcp.get(kTokenKey)) != token) {
      refuse(fmt::format("the rendezvous at {} belongs to another job (job token mismatch); use "
                         "that job's token or another --master-port",
                         where),
             false);
    }
    const std::string world = string_of(tcp.get(kWorldKey));
    if (world != std::to_string(info.world_size)) {
      refuse(fmt::format("WORLD_SIZE={} disagrees with the job's WORLD_SIZE={} (rank 0's) at {}",
                         info.world_size, world, where),
             true);
    }
  }
  if (tcp.add(rank_key(info.rank), 1) > 1) {
    if (tcp.add(kJoinedKey, 0) >= info.world_size) {
      refuse(fmt::format("the job at {} already started with all {} ranks: a stale store of a "
                         "previous job with the same token, or a duplicate RANK={}",
                         where, info.world_size, info.rank),
             false);
    }
    refuse(fmt::format("RANK={} is already taken in the job at {} (a duplicate RANK)", info.rank,
                       where),
           true);
  }
  tcp.add(kJoinedKey, 1);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(info.timeout_seconds);
  while (tcp.add(kJoinedKey, 0) < info.world_size) {
    if (tcp.check({kRefusedKey})) {
      // Rank 0 hosts the store: it stays a moment so that the other ranks read the reason too.
      if (info.rank == 0) std::this_thread::sleep_for(std::chrono::milliseconds(500));
      throw CommError(fmt::format("rank {}: the job's rendezvous failed: {}", info.rank,
                                  string_of(tcp.get(kRefusedKey))));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      std::vector<int64_t> missing;
      for (int64_t r = 0; r < info.world_size; ++r) {
        if (!tcp.check({rank_key(r)})) missing.push_back(r);
      }
      throw CommError(fmt::format(
          "rank {}: rendezvous at {} timed out after {:.0f} s; ranks that did not arrive: {}",
          info.rank, where, info.timeout_seconds, fmt::join(missing, ", ")));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace

c10::intrusive_ptr<c10d::Store> rendezvous(const WorldInfo& info) {
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<uint16_t>(info.master_port);
  opts.isServer = info.rank == 0;
  if (opts.isServer && info.store_fd >= 0) opts.masterListenFd = static_cast<int>(info.store_fd);
  opts.numWorkers = c10::nullopt;
  opts.waitWorkers = false;
  opts.timeout = std::chrono::milliseconds(static_cast<int64_t>(info.timeout_seconds * 1000));
  StorePtr tcp;
  try {
    tcp = c10::make_intrusive<c10d::TCPStore>(info.master_addr, opts);
  } catch (const std::exception& e) {
    const std::string why = first_line(e.what());
    throw CommError(
        fmt::format("rank {}: rendezvous at {}:{} failed: {}{}", info.rank, info.master_addr,
                    info.master_port, why,
                    info.rank == 0 && why.find("in use") != std::string::npos
                        ? " (the port is taken: another job's store, or a duplicate RANK=0)"
                        : ""));
  }
  const std::string token = info.job_token.empty() ? "desync" : info.job_token;
  try {
    join(*tcp, info, token);
  } catch (const CommError&) {
    throw;
  } catch (const std::exception& e) {
    throw CommError(fmt::format("rank {}: rendezvous at {}:{} failed: {}", info.rank,
                                info.master_addr, info.master_port, first_line(e.what())));
  }
  return c10::make_intrusive<c10d::PrefixStore>("job/" + token, tcp);
}

std::shared_ptr<Communicator> connect_gloo(const WorldInfo& info) {
  return std::make_shared<GlooCommunicator>(rendezvous(info), info.rank, info.world_size, info,
                                            "world");
}

}  // namespace desync
