// A background communication thread with a channel of its own: the comm thread of the
// overlapped algorithms (ACCO, DPU).
//
// The constructor splits a background channel from `comm` (collective: every rank constructs
// its CommThread in the same order). start(fn) runs fn on the thread, which communicates on
// channel() only; done() tells, without blocking, whether it has returned; join() waits for it,
// records the wait on the channel as time the training thread was blocked (CommStats::
// join_wait_seconds), and rethrows what fn threw. The channel's own waits count as overlapped
// communication (see communicator.h, "Time").
//
// Thread-safety: start(), done() and join() are called from the training thread.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "desync/comm/communicator.h"
#include "desync/core/background.h"

namespace desync {

class CommThread {
 public:
  CommThread(Communicator& comm, const std::string& name)
      : channel_(comm.split(name, Caller::kBackgroundThread)) {}

  Communicator& channel() { return *channel_; }
  void start(std::function<void()> fn) { task_.start(std::move(fn)); }
  bool done() const { return task_.done(); }
  void join() { channel_->record_join_wait(task_.join()); }

 private:
  std::shared_ptr<Communicator> channel_;
  BackgroundTask task_;  // last: destroyed (joined) before the channel
};

}  // namespace desync
