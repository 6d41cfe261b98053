#include "desync/comm/launcher.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>

#include "desync/core/error.h"
#include "desync/core/system.h"

namespace desync {
namespace {

struct Worker {
  int64_t rank = 0;
  pid_t pid = -1;
  int fd = -1;  // read end of its stdout+stderr
  std::string partial;
  std::deque<std::string> last;
  bool exited = false;
  int status = 0;  // exit status, or 128 + signal
};

std::string describe(int status) {
  if (status > 128)
    return fmt::format("killed by signal {} ({})", status - 128, strsignal(status - 128));
  return fmt::format("exit status {}", status);
}

void emit(Worker& w, const std::string& segment, bool carriage, size_t keep) {
  if (carriage) {
    std::fprintf(stderr, "\r\033[K[rank %lld] %s", static_cast<long long>(w.rank), segment.c_str());
  } else {
    std::fprintf(stderr, "[rank %lld] %s\n", static_cast<long long>(w.rank), segment.c_str());
    w.last.push_back(segment);
    if (w.last.size() > keep) w.last.pop_front();
  }
  std::fflush(stderr);
}

// Reads what is available from a worker and prints complete lines; returns false at EOF.
bool pump(Worker& w, size_t keep) {
  char buf[8192];
  ssize_t n = ::read(w.fd, buf, sizeof buf);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
  if (n <= 0) {
    if (!w.partial.empty()) emit(w, w.partial, false, keep);
    w.partial.clear();
    ::close(w.fd);
    w.fd = -1;
    return false;
  }
  for (ssize_t i = 0; i < n; ++i) {
    char c = buf[i];
    if (c == '\n' || c == '\r') {
      if (c == '\n' || !w.partial.empty()) emit(w, w.partial, c == '\r', keep);
      w.partial.clear();
    } else {
      w.partial.push_back(c);
    }
  }
  return true;
}

// A TCP socket bound to 127.0.0.1 at a port the kernel chose; returns it and the port.
LoopbackListener bind_free_loopback_port() {
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) throw Error("cannot create a socket to find a free port");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(s);
    throw Error("cannot find a free loopback port");
  }
  return {s, ntohs(addr.sin_port)};
}

}  // namespace

int64_t free_loopback_port() {
  LoopbackListener l = bind_free_loopback_port();
  ::close(l.fd);
  return l.port;
}

LoopbackListener listen_on_free_loopback_port() {
  LoopbackListener l = bind_free_loopback_port();
  if (::listen(l.fd, SOMAXCONN) != 0) {
    ::close(l.fd);
    throw Error(fmt::format("cannot listen on loopback port {}: {}", l.port, std::strerror(errno)));
  }
  return l;
}

std::string random_token() {
  unsigned char bytes[16] = {};
  std::ifstream in("/dev/urandom", std::ios::binary);
  in.read(reinterpret_cast<char*>(bytes), sizeof bytes);
  if (!in) throw Error("cannot read /dev/urandom for a job token");
  std::string hex;
  for (unsigned char b : bytes) hex += fmt::format("{:02x}", b);
  return hex;
}

int launch(const LaunchSpec& spec) {
  const int64_t world = spec.nnodes * spec.workers_per_node;
  // With no port given, the store's socket is opened here and inherited by rank 0.
  LoopbackListener store;
  if (spec.master_port == 0) store = listen_on_free_loopback_port();
  const int64_t port = spec.master_port > 0 ? spec.master_port : store.port;
  const std::string token = spec.job_token.empty() ? random_token() : spec.job_token;
  const bool tty = stderr_is_tty();
  install_interrupt_handlers();

  std::vector<Worker> workers(spec.workers_per_node);
  for (int64_t lr = 0; lr < spec.workers_per_node; ++lr) {
    Worker& w = workers[lr];
    w.rank = spec.node_rank * spec.workers_per_node + lr;
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw Error("cannot create a pipe for a worker");
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) throw Error("cannot fork a worker process");
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(1);
      ::dup2(fds[1], STDOUT_FILENO);
      ::dup2(fds[1], STDERR_FILENO);
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      ::setenv("RANK", std::to_string(w.rank).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(lr).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(spec.workers_per_node).c_str(), 1);
      ::setenv("MASTER_ADDR", spec.master_addr.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      ::setenv("DESYNC_JOB_TOKEN", token.c_str(), 1);
      ::setenv("DESYNC_LAUNCHED", "1", 1);
      if (w.rank == 0 && tty) ::setenv("DESYNC_PROGRESS", "tty", 1);
      if (w.rank == 0 && store.fd >= 0) {
        ::fcntl(store.fd, F_SETFD, 0);  // kept across exec by rank 0 only
        ::setenv("DESYNC_STORE_FD", std::to_string(store.fd).c_str(), 1);
      }
      std::vector<char*> argv;
      for (const std::string& a : spec.worker_argv) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      std::fprintf(stderr, "cannot execute %s: %s\n", argv[0], std::strerror(errno));
      ::_exit(127);
    }
    ::close(fds[1]);
    w.pid = pid;
    w.fd = fds[0];
  }
  if (store.fd >= 0) ::close(store.fd);  // rank 0 has it now

  const size_t keep = static_cast<size_t>(spec.last_lines);
  bool forwarded_interrupt = false, killed = false;
  int64_t failed = -1;
  auto kill_all = [&](int sig) {
    for (Worker& w : workers)
      if (!w.exited) ::kill(w.pid, sig);
  };

  while (true) {
    // Output.
    std::vector<pollfd> pfds;
    std::vector<Worker*> owners;
    for (Worker& w : workers)
      if (w.fd >= 0) {
        pfds.push_back({w.fd, POLLIN, 0});
        owners.push_back(&w);
      }
    if (!pfds.empty()) {
      int ready = ::poll(pfds.data(), pfds.size(), 100);
      for (size_t i = 0; ready > 0 && i < pfds.size(); ++i)
        if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) pump(*owners[i], keep);
    } else {
      ::usleep(50 * 1000);
    }
    // Exits. When several workers are found failed at once, one killed by a signal is named
    // before those that exited with an error: theirs is usually the collective it broke.
    int status = 0;
    pid_t pid;
    bool failed_by_signal = false;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      for (Worker& w : workers) {
        if (w.pid != pid) continue;
        w.exited = true;
        w.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        bool interrupted_exit = forwarded_interrupt && (w.status == 130 || w.status == 0);
        if (w.status == 0 || interrupted_exit || killed) continue;
        const bool by_signal = WIFSIGNALED(status);
        if (failed < 0 || (by_signal && !failed_by_signal)) {
          failed = w.rank;
          failed_by_signal = by_signal;
        }
      }
    }
    // Reactions.
    if (failed >= 0 && !killed) {
      killed = true;
      kill_all(SIGKILL);
    }
    if (interrupted() && !forwarded_interrupt) {
      forwarded_interrupt = true;
      kill_all(SIGINT);
    }
    bool all_exited = true;
    for (Worker& w : workers) all_exited = all_exited && w.exited;
    if (all_exited) {
      for (Worker& w : workers)
        while (w.fd >= 0 && pump(w, keep)) {
        }
      break;
    }
  }

  if (failed >= 0) {
    const Worker& w = workers[failed - spec.node_rank * spec.workers_per_node];
    std::fprintf(stderr, "\ndesync: worker rank %lld failed (%s); its last lines:\n",
                 static_cast<long long>(w.rank), describe(w.status).c_str());
    for (const std::string& line : w.last) std::fprintf(stderr, "  | %s\n", line.c_str());
    std::fprintf(stderr, "desync: stopped the other workers of this node\n");
    return 1;
  }
  if (forwarded_interrupt) return 130;
  for (const Worker& w : workers)
    if (w.status != 0) return 1;
  return 0;
}

}  // namespace desync
