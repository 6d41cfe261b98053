#include "desync/core/system.h"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>

namespace desync {
namespace {

std::atomic<bool> g_interrupted{false};

void on_signal(int sig) {
  if (g_interrupted.exchange(true)) {
    ::signal(sig, SIG_DFL);
    ::raise(sig);
  }
}

}  // namespace

int64_t peak_rss_bytes() {
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

bool stderr_is_tty() {
  // A launcher that owns a terminal asks rank 0 to draw its progress bar through the pipe.
  const char* forced = std::getenv("DESYNC_PROGRESS");
  if (forced && std::string(forced) == "tty") return true;
  return ::isatty(STDERR_FILENO) == 1;
}

void install_interrupt_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

bool interrupted() { return g_interrupted.load(std::memory_order_relaxed); }

}  // namespace desync
