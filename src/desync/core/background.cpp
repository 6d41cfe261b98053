#include "desync/core/background.h"

#include <torch/torch.h>

#include <chrono>

#include "desync/core/trace.h"

namespace desync {

BackgroundTask::~BackgroundTask() {
  if (thread_.joinable()) thread_.join();
}

void BackgroundTask::start(std::function<void()> fn) {
  join();
  done_.store(false, std::memory_order_release);
  error_ = nullptr;
  thread_ = std::thread([this, fn = std::move(fn)] {
    try {
      torch::NoGradGuard no_grad;
      fn();
    } catch (...) {
      error_ = std::current_exception();
    }
    done_.store(true, std::memory_order_release);
  });
}

double BackgroundTask::join() {
  auto t0 = std::chrono::steady_clock::now();
  if (thread_.joinable()) {
    int64_t start_us = Tracer::now_us();
    thread_.join();
    Tracer::instance().span("join_comm_thread", "wait", start_us, Tracer::now_us());
  }
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (error_) {
    std::exception_ptr e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
  return waited;
}

}  // namespace desync
