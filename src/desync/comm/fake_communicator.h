// An in-process world for fast tests: N ranks as threads of one process.
//
// FakeWorld(N) owns the shared state; comm(r) is rank r's Communicator. Semantics match the Gloo
// backend: collectives must be issued in the same order on every rank of a channel; issuing
// deposits a copy of the input, wait() blocks until every rank deposited and then computes this
// rank's result; sends complete at once (buffered), receives block until a matching message.
// Accounting is the base class's, so byte counts are the same as with Gloo.
//
// A call that does not complete within the timeout throws CommError naming the ranks that did
// not arrive. The world also records the order in which calls were issued (for tests of overlap).
//
// Thread-safety: each rank's Communicator is used by one thread; the world is thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "desync/comm/communicator.h"

namespace desync {

class FakeWorld : public std::enable_shared_from_this<FakeWorld> {
 public:
  static std::shared_ptr<FakeWorld> create(
      int64_t world_size, std::chrono::milliseconds timeout = std::chrono::seconds(60));

  int64_t size() const { return size_; }
  // Rank r's communicator on the default channel (created once; the world keeps it alive).
  std::shared_ptr<Communicator> comm(int64_t rank);

  // Log of issued calls: "<channel>:<op>:rank<r>" in issue order, and a hook run on every issue.
  std::vector<std::string> issued() const;
  void on_issue(std::function<void(const std::string& op, int64_t rank)> hook);

  // Runs fn(rank, comm) on N threads and rethrows the first exception.
  void run(const std::function<void(int64_t rank, Communicator& comm)>& fn);

 private:
  friend class FakeCommunicator;
  struct Round {
    std::vector<torch::Tensor> inputs;
    std::vector<bool> arrived;
    int64_t arrivals = 0, readers = 0;
  };
  explicit FakeWorld(int64_t size, std::chrono::milliseconds timeout)
      : size_(size), timeout_(timeout) {}

  void deposit(const std::string& channel, int64_t seq, int64_t rank, int64_t group_size,
               torch::Tensor input, const char* op);
  std::vector<torch::Tensor> collect(const std::string& channel, int64_t seq, int64_t group_size,
                                     const char* op);
  void post(const std::string& key, torch::Tensor t);
  torch::Tensor take(const std::string& key, const char* op);

  int64_t size_;
  std::chrono::milliseconds timeout_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::pair<std::string, int64_t>, Round> rounds_;
  std::map<std::string, std::vector<torch::Tensor>> mail_;
  std::vector<std::string> issued_;
  std::function<void(const std::string&, int64_t)> hook_;
  std::vector<std::shared_ptr<Communicator>> comms_;
};

}  // namespace desync
