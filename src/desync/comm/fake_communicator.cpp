#include "desync/comm/fake_communicator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <exception>
#include <thread>

#include "desync/core/error.h"

namespace desync {

// One rank's view of a FakeWorld channel. `members` maps group ranks to world ranks.
// The world owns its ranks' communicators, and each of them its splits, so a communicator
// refers to its world without owning it (an owning pointer back made a cycle that leaked the
// world and everything in it); FakeWorld::comm() hands out pointers that keep the world alive.
class FakeCommunicator : public Communicator {
 public:
  FakeCommunicator(std::weak_ptr<FakeWorld> world, std::string channel, int64_t rank,
                   std::vector<int64_t> members)
      : world_(std::move(world)),
        channel_(std::move(channel)),
        rank_(rank),
        members_(std::move(members)) {}

  int64_t rank() const override { return rank_; }
  int64_t world_size() const override { return static_cast<int64_t>(members_.size()); }

 protected:
  // A collective: deposit now, compute this rank's result from everyone's inputs on wait().
  class CollectiveWork : public Work {
   public:
    CollectiveWork(FakeCommunicator* c, int64_t seq, const char* op,
                   std::function<void(const std::vector<torch::Tensor>&)> finish)
        : c_(c), seq_(seq), op_(op), finish_(std::move(finish)) {}
    void wait() override {
      if (done_) return;
      finish_(c_->world()->collect(c_->channel_, seq_, c_->world_size(), op_));
      done_ = true;
    }

   private:
    FakeCommunicator* c_;
    int64_t seq_;
    const char* op_;
    std::function<void(const std::vector<torch::Tensor>&)> finish_;
    bool done_ = false;
  };

  std::shared_ptr<Work> collective(const char* op, torch::Tensor input,
                                   std::function<void(const std::vector<torch::Tensor>&)> finish) {
    int64_t seq = seq_++;
    world()->deposit(channel_, seq, rank_, world_size(), input.detach().clone(), op);
    return std::make_shared<CollectiveWork>(this, seq, op, std::move(finish));
  }

  std::shared_ptr<Work> do_all_reduce(torch::Tensor& t) override {
    return collective("all_reduce", t, [t](const std::vector<torch::Tensor>& all) mutable {
      torch::NoGradGuard g;
      t.copy_(all[0]);
      for (size_t r = 1; r < all.size(); ++r) t.add_(all[r]);
    });
  }
  std::shared_ptr<Work> do_broadcast(torch::Tensor& t, int64_t root) override {
    return collective("broadcast", t, [t, root](const std::vector<torch::Tensor>& all) mutable {
      torch::NoGradGuard g;
      t.copy_(all[root]);
    });
  }
  std::shared_ptr<Work> do_all_gather(std::vector<torch::Tensor>& out, torch::Tensor& in) override {
    return collective("all_gather", in, [out](const std::vector<torch::Tensor>& all) mutable {
      torch::NoGradGuard g;
      for (size_t r = 0; r < all.size(); ++r) out[r].copy_(all[r]);
    });
  }
  std::shared_ptr<Work> do_all_to_all(torch::Tensor& out, torch::Tensor& in) override {
    int64_t me = rank_;
    int64_t n = world_size();
    return collective("all_to_all", in,
                      [out, me, n](const std::vector<torch::Tensor>& all) mutable {
                        torch::NoGradGuard g;
                        std::vector<torch::Tensor> dst = out.chunk(n);
                        for (int64_t s = 0; s < n; ++s) dst[s].copy_(all[s].chunk(n)[me]);
                      });
  }
  std::shared_ptr<Work> do_send(torch::Tensor& t, int64_t dst, int64_t tag) override {
    world()->post(mail_key(rank_, dst, tag), t.detach().clone());
    return completed_work();
  }
  std::shared_ptr<Work> do_recv(torch::Tensor& t, int64_t src, int64_t tag) override {
    class RecvWork : public Work {
     public:
      RecvWork(FakeCommunicator* c, std::string key, torch::Tensor t)
          : c_(c), key_(std::move(key)), t_(std::move(t)) {}
      void wait() override {
        if (done_) return;
        torch::NoGradGuard g;
        t_.copy_(c_->world()->take(key_, "recv"));
        done_ = true;
      }

     private:
      FakeCommunicator* c_;
      std::string key_;
      torch::Tensor t_;
      bool done_ = false;
    };
    return std::make_shared<RecvWork>(this, mail_key(src, rank_, tag), t);
  }
  void do_barrier() override {
    collective("barrier", torch::zeros({1}), [](const std::vector<torch::Tensor>&) {})->wait();
  }
  std::shared_ptr<Communicator> do_split(const std::string& name) override {
    return std::make_shared<FakeCommunicator>(world_, channel_ + "/" + name, rank_, members_);
  }

 private:
  std::shared_ptr<FakeWorld> world() const {
    std::shared_ptr<FakeWorld> w = world_.lock();
    if (!w) throw CommError(fmt::format("channel {}: its FakeWorld no longer exists", channel_));
    return w;
  }
  std::string mail_key(int64_t src, int64_t dst, int64_t tag) const {
    return fmt::format("{}:{}->{}#{}", channel_, src, dst, tag);
  }

  std::weak_ptr<FakeWorld> world_;
  std::string channel_;
  int64_t rank_;
  std::vector<int64_t> members_;
  int64_t seq_ = 0;
};

std::shared_ptr<FakeWorld> FakeWorld::create(int64_t world_size,
                                             std::chrono::milliseconds timeout) {
  std::shared_ptr<FakeWorld> w(new FakeWorld(world_size, timeout));
  std::vector<int64_t> members(world_size);
  for (int64_t r = 0; r < world_size; ++r) members[r] = r;
  for (int64_t r = 0; r < world_size; ++r)
    w->comms_.push_back(std::make_shared<FakeCommunicator>(w, "world", r, members));
  return w;
}

// Shares ownership of the world: a rank's communicator keeps its world alive.
std::shared_ptr<Communicator> FakeWorld::comm(int64_t rank) {
  return std::shared_ptr<Communicator>(shared_from_this(), comms_.at(rank).get());
}

std::vector<std::string> FakeWorld::issued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return issued_;
}

void FakeWorld::on_issue(std::function<void(const std::string&, int64_t)> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  hook_ = std::move(hook);
}

void FakeWorld::deposit(const std::string& channel, int64_t seq, int64_t rank, int64_t group_size,
                        torch::Tensor input, const char* op) {
  std::function<void(const std::string&, int64_t)> hook;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Round& r = rounds_[{channel, seq}];
    if (r.inputs.empty()) {
      r.inputs.resize(group_size);
      r.arrived.assign(group_size, false);
    }
    r.inputs[rank] = std::move(input);
    r.arrived[rank] = true;
    ++r.arrivals;
    issued_.push_back(fmt::format("{}:{}:rank{}", channel, op, rank));
    hook = hook_;
  }
  cv_.notify_all();
  if (hook) hook(op, rank);
}

std::vector<torch::Tensor> FakeWorld::collect(const std::string& channel, int64_t seq,
                                              int64_t group_size, const char* op) {
  std::unique_lock<std::mutex> lock(mu_);
  auto key = std::make_pair(channel, seq);
  bool ok = cv_.wait_for(lock, timeout_, [&] { return rounds_[key].arrivals == group_size; });
  Round& r = rounds_[key];
  if (!ok) {
    std::vector<int64_t> missing;
    for (int64_t i = 0; i < group_size; ++i)
      if (!r.arrived[i]) missing.push_back(i);
    throw CommError(
        fmt::format("{} #{} on channel {} timed out after {} ms; ranks that did not "
                    "arrive: {}",
                    op, seq, channel, timeout_.count(), fmt::join(missing, ", ")));
  }
  std::vector<torch::Tensor> inputs = r.inputs;
  if (++r.readers == group_size) rounds_.erase(key);
  return inputs;
}

void FakeWorld::post(const std::string& key, torch::Tensor t) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    mail_[key].push_back(std::move(t));
  }
  cv_.notify_all();
}

torch::Tensor FakeWorld::take(const std::string& key, const char* op) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout_, [&] { return !mail_[key].empty(); }))
    throw CommError(
        fmt::format("{} of message {} timed out after {} ms", op, key, timeout_.count()));
  torch::Tensor t = mail_[key].front();
  mail_[key].erase(mail_[key].begin());
  return t;
}

void FakeWorld::run(const std::function<void(int64_t, Communicator&)>& fn) {
  std::vector<std::thread> threads;
  std::vector<std::exception_ptr> errors(size_);
  for (int64_t r = 0; r < size_; ++r)
    threads.emplace_back([&, r] {
      try {
        fn(r, *comm(r));
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace desync
