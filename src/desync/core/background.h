// Runs one function on a background thread (a communication thread: see comm/comm_thread.h,
// or a server of an asynchronous method).
//
// start(fn) launches it; done() tells, without blocking, whether it has returned; join() waits,
// says how long it waited (and records it as a "join_comm_thread" wait span in the trace), and
// rethrows an exception the task threw. Autograd is disabled on the background thread (it only
// moves and updates tensors). The destructor joins a task still running.
#pragma once

#include <atomic>
#include <exception>
#include <functional>
#include <thread>

namespace desync {

class BackgroundTask {
 public:
  BackgroundTask() = default;
  ~BackgroundTask();
  BackgroundTask(const BackgroundTask&) = delete;
  BackgroundTask& operator=(const BackgroundTask&) = delete;

  void start(std::function<void()> fn);
  bool done() const { return done_.load(std::memory_order_acquire); }
  // Waits for the task; returns the seconds spent waiting. Rethrows the task's exception.
  double join();

 private:
  std::thread thread_;
  std::atomic<bool> done_{true};
  std::exception_ptr error_;
};

}  // namespace desync
