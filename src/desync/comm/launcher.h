// The local launcher: starts this node's worker processes and watches them.
//
// launch() starts `workers_per_node` copies of `worker_argv` with the torchrun variables (RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and DESYNC_JOB_TOKEN set,
// streams each one's output line by line prefixed with "[rank R] ", and returns an exit status:
//   - every worker exited 0: 0;
//   - a worker failed (non-zero exit or killed by a signal): the launcher prints which rank,
//     its status and its last lines, kills the other workers at once and returns 1 — within a
//     fraction of a second of the failure. Of several failures found at once, one by a signal is
//     named before exits with an error (a peer's broken collective);
//   - SIGINT/SIGTERM to the launcher: forwarded once to the workers, which finish their step,
//     checkpoint and exit 130; a second signal kills them. Returns 130.
// Workers die with the launcher (PR_SET_PDEATHSIG), so none is left behind.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace desync {

struct LaunchSpec {
  std::vector<std::string> worker_argv;  // argv[0] is the executable
  int64_t nnodes = 1;
  int64_t node_rank = 0;
  int64_t workers_per_node = 1;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 0;  // 0: pick a free loopback port (single node only)
  std::string job_token;    // "": a random one (single node only)
  int64_t last_lines = 20;  // lines of a failed worker's output to show
};

int launch(const LaunchSpec& spec);

// A TCP port on 127.0.0.1 that was free a moment ago (another process may take it since).
int64_t free_loopback_port();

// A socket already listening on 127.0.0.1, on a port the kernel chose. launch() makes one when
// it picks the port itself and hands it to rank 0 (DESYNC_STORE_FD), whose store serves on it:
// no other process can take the port between the choice and the store's start.
struct LoopbackListener {
  int fd = -1;  // close-on-exec
  int64_t port = 0;
};
LoopbackListener listen_on_free_loopback_port();

// 128 random bits as hex, from /dev/urandom.
std::string random_token();

}  // namespace desync
