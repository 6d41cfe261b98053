// The Communicator: the only door from one worker to the others.
//
// Everything that crosses a process boundary goes through this interface, so that every byte
// and every second spent waiting is accounted for in one place. Collective calls must be issued
// by every rank of the group in the same order. Asynchronous calls return a Work handle; the
// tensors passed in must stay alive and untouched until wait() returns. Tensors must be
// contiguous.
//
// Accounting (stats()) is done here, in the base class, for every backend alike: the bytes this
// rank puts on the wire and takes off it for the algorithm Gloo uses for the call —
//   all_reduce (ring)            2(N-1)/N * size sent, the same received
//   all_gather (ring)            (N-1) * chunk sent and received (chunk = this rank's input)
//   all_to_all (pairwise)        (N-1)/N * size sent and received
//   reduce_scatter               (N-1)/N * input size sent and received: the backend's own
//                                (ring), or else all_to_all and a local sum
//   broadcast (binomial tree)    size received by every non-root; size sent per child
//   send / recv                  size
// — and the seconds the calling thread was blocked in a call or in wait(). Each call also
// records a trace span (see core/trace.h): "<op>" from issue to completion as seen by the
// caller, and "wait" for the blocked part.
//
// Time: a channel knows which thread issues its calls (Caller). Waits on a training-thread
// channel block training; waits on a background channel overlap it, except the time the
// training thread spends joining that background thread (record_join_wait) and the time a
// background server spends waiting for a request (record_idle: idle, not communication).
// time() adds these up over a channel and its splits; docs/observability.md defines each figure.
//
// Thread-safety: one thread issues calls on a Communicator; stats(), total_stats() and time()
// may be read from any thread. A thread that communicates concurrently with another uses its
// own channel: split() returns a communicator over the same ranks whose calls are ordered
// independently (a second process group).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace desync {

struct CommStats {
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;
  double wait_seconds = 0.0;  // time the caller was blocked in calls and waits
  // Of wait_seconds, the time a server thread waited in a call for a request to arrive.
  double idle_seconds = 0.0;
  // Time the training thread waited for this channel's background thread to finish.
  double join_wait_seconds = 0.0;
  int64_t calls = 0;

  CommStats& operator+=(const CommStats& o) {
    bytes_sent += o.bytes_sent;
    bytes_received += o.bytes_received;
    wait_seconds += o.wait_seconds;
    idle_seconds += o.idle_seconds;
    join_wait_seconds += o.join_wait_seconds;
    calls += o.calls;
    return *this;
  }
  CommStats& operator-=(const CommStats& o) {
    bytes_sent -= o.bytes_sent;
    bytes_received -= o.bytes_received;
    wait_seconds -= o.wait_seconds;
    idle_seconds -= o.idle_seconds;
    join_wait_seconds -= o.join_wait_seconds;
    calls -= o.calls;
    return *this;
  }
};

// Who issues a channel's calls.
enum class Caller { kTrainingThread, kBackgroundThread };

// How a rank's communication time divides, over a channel and its splits.
struct CommTime {
  double blocked = 0.0;     // the training thread waited: in calls, or joining a comm thread
  double overlapped = 0.0;  // background threads waited in calls while training went on
  double idle = 0.0;        // background servers waited for requests

  CommTime& operator+=(const CommTime& o) {
    blocked += o.blocked;
    overlapped += o.overlapped;
    idle += o.idle;
    return *this;
  }
  CommTime& operator-=(const CommTime& o) {
    blocked -= o.blocked;
    overlapped -= o.overlapped;
    idle -= o.idle;
    return *this;
  }
};

class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the operation completed; throws CommError if it failed or timed out.
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int64_t rank() const = 0;
  virtual int64_t world_size() const = 0;

  // In-place sum over ranks.
  std::shared_ptr<Work> all_reduce_async(torch::Tensor t);
  void all_reduce(torch::Tensor t) { all_reduce_async(std::move(t))->wait(); }
  // Sum over ranks of a float tensor, sent as `wire` (kBFloat16 or kHalf) and summed in the
  // tensor's own precision: a reduce-scatter and an all-gather of the low-precision copy.
  std::shared_ptr<Work> all_reduce_async(torch::Tensor t, torch::ScalarType wire);
  // In-place copy of `root`'s tensor to every rank.
  std::shared_ptr<Work> broadcast_async(torch::Tensor t, int64_t root);
  void broadcast(torch::Tensor t, int64_t root) { broadcast_async(std::move(t), root)->wait(); }
  // out[r] <- rank r's `in`; every out[r] has in's shape.
  std::shared_ptr<Work> all_gather_async(std::vector<torch::Tensor> out, torch::Tensor in);
  void all_gather(std::vector<torch::Tensor> out, torch::Tensor in) {
    all_gather_async(std::move(out), std::move(in))->wait();
  }
  // `in` is N equal chunks along dim 0; chunk r goes to rank r; out's chunk s came from rank s.
  std::shared_ptr<Work> all_to_all_async(torch::Tensor out, torch::Tensor in);
  // `in` is N equal chunks along dim 0; out (one chunk) <- the sum over ranks of their chunk r.
  std::shared_ptr<Work> reduce_scatter_async(torch::Tensor out, torch::Tensor in);
  void reduce_scatter(torch::Tensor out, torch::Tensor in) {
    reduce_scatter_async(std::move(out), std::move(in))->wait();
  }
  // Point to point; `tag` tells apart concurrent messages between the same two ranks.
  std::shared_ptr<Work> send_async(torch::Tensor t, int64_t dst, int64_t tag);
  std::shared_ptr<Work> recv_async(torch::Tensor t, int64_t src, int64_t tag);
  void send(torch::Tensor t, int64_t dst, int64_t tag) {
    send_async(std::move(t), dst, tag)->wait();
  }
  void recv(torch::Tensor t, int64_t src, int64_t tag) {
    recv_async(std::move(t), src, tag)->wait();
  }
  void barrier();

  // A communicator over the same ranks with an independent order of calls. Collective: every
  // rank calls split() with the same name in the same order (`caller` may differ by rank). Its
  // traffic is counted in its own stats(); total_stats() adds up a communicator and all its
  // splits.
  std::shared_ptr<Communicator> split(const std::string& name,
                                      Caller caller = Caller::kTrainingThread);
  Caller caller() const { return caller_; }

  // Called by the thread that issued the call: `seconds` of its last blocked call were spent
  // waiting for a request to serve, not for the network.
  void record_idle(double seconds);
  // The training thread waited `seconds` for this channel's background thread (CommThread).
  void record_join_wait(double seconds);

  CommStats stats() const;
  CommStats total_stats() const;
  // Blocked, overlapped and idle time of this channel and all its splits.
  CommTime time() const;

  // Emulated network latency: every call completes no earlier than `seconds` after it was
  // issued (the waiting counts as communication wait). For benchmarks on one machine; splits
  // created afterwards inherit it.
  void set_emulated_latency(double seconds) { latency_seconds_ = seconds; }

 protected:
  virtual std::shared_ptr<Work> do_all_reduce(torch::Tensor& t) = 0;
  virtual std::shared_ptr<Work> do_broadcast(torch::Tensor& t, int64_t root) = 0;
  virtual std::shared_ptr<Work> do_all_gather(std::vector<torch::Tensor>& out,
                                              torch::Tensor& in) = 0;
  virtual std::shared_ptr<Work> do_all_to_all(torch::Tensor& out, torch::Tensor& in) = 0;
  // The backend's own reduce-scatter of a float32/float64 tensor (the contract of
  // reduce_scatter_async), moving (N-1)/N of the input per rank; nullptr where it has none
  // that does: the base class then exchanges the chunks with all_to_all and sums them itself.
  virtual std::shared_ptr<Work> do_reduce_scatter(torch::Tensor& out, torch::Tensor& in) {
    return nullptr;
  }
  virtual std::shared_ptr<Work> do_send(torch::Tensor& t, int64_t dst, int64_t tag) = 0;
  virtual std::shared_ptr<Work> do_recv(torch::Tensor& t, int64_t src, int64_t tag) = 0;
  virtual void do_barrier() = 0;
  virtual std::shared_ptr<Communicator> do_split(const std::string& name) = 0;

 private:
  // Counts bytes and a call, and wraps `work` so that wait() is timed and traced.
  std::shared_ptr<Work> account(const char* op, std::shared_ptr<Work> work, int64_t sent,
                                int64_t received);

  mutable std::mutex stats_mu_;  // stats may be read by another thread than the caller's
  CommStats stats_;
  Caller caller_ = Caller::kTrainingThread;
  double latency_seconds_ = 0.0;
  std::vector<std::shared_ptr<Communicator>> splits_;
};

// A world of one rank: every collective is the identity and moves no bytes.
class SoloCommunicator : public Communicator {
 public:
  int64_t rank() const override { return 0; }
  int64_t world_size() const override { return 1; }

 protected:
  std::shared_ptr<Work> do_all_reduce(torch::Tensor& t) override;
  std::shared_ptr<Work> do_broadcast(torch::Tensor& t, int64_t root) override;
  std::shared_ptr<Work> do_all_gather(std::vector<torch::Tensor>& out, torch::Tensor& in) override;
  std::shared_ptr<Work> do_all_to_all(torch::Tensor& out, torch::Tensor& in) override;
  std::shared_ptr<Work> do_send(torch::Tensor& t, int64_t dst, int64_t tag) override;
  std::shared_ptr<Work> do_recv(torch::Tensor& t, int64_t src, int64_t tag) override;
  void do_barrier() override {}
  std::shared_ptr<Communicator> do_split(const std::string& name) override;
};

// A Work that is already complete.
std::shared_ptr<Work> completed_work();

// Bytes a rank sends in a binomial-tree broadcast of `bytes` from `root` (see the table above).
int64_t broadcast_bytes_sent(int64_t rank, int64_t root, int64_t world, int64_t bytes);

}  // namespace desync
