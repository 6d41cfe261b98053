// Process-level facts: monotonic time, peak memory, terminal detection, interruption.
#pragma once

#include <chrono>
#include <cstdint>

namespace desync {

// Seconds on the monotonic clock since `start`.
class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  void reset() { start_ = std::chrono::steady_clock::now(); }

 private:
  std::chrono::steady_clock::time_point start_;
};

// Peak resident set size of this process, in bytes.
int64_t peak_rss_bytes();

bool stderr_is_tty();

// SIGINT/SIGTERM set a flag that interrupted() reports; a second signal kills the process.
void install_interrupt_handlers();
bool interrupted();

}  // namespace desync
