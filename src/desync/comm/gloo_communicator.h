// The default backend (run.backend = "gloo"): c10d ProcessGroupGloo over TCP, with TCPStore
// rendezvous. nccl_communicator.h is the other one.
//
// WorldInfo says who this worker is and where the rendezvous is; world_from_env() reads it from
// the torchrun variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT) plus DESYNC_JOB_TOKEN. connect_gloo() rendezvous: rank 0 hosts the TCPStore on
// MASTER_ADDR:MASTER_PORT and publishes the job token and WORLD_SIZE; every other rank checks
// them, so a stray process from another job cannot join; each rank claims its number once, and
// all wait for the whole world (rendezvous.h says what is refused, and how); all keys of the job
// live under a prefix derived from the token. Each Gloo device binds the loopback address when the master is on loopback, else
// DESYNC_LOCAL_ADDR if set, else this host's name.
//
// A call that fails (peer gone) or exceeds the timeout throws CommError naming the operation and
// the ranks that had not reached it (each failing rank posts how many calls it issued; the ranks
// that posted fewer, or nothing, are named).
//
// Only the backends' .cpp files (this one's and nccl_communicator.cpp, which shares the
// rendezvous and the failure report through the internal rendezvous.h) include c10d headers:
// differences between LibTorch versions stay there.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "desync/comm/communicator.h"

namespace desync {

struct WorldInfo {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  int64_t local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
  std::string job_token;
  int64_t store_fd = -1;  // rank 0: a socket listening on master_port for the store, or -1
  double timeout_seconds = 300.0;  // per collective and for the rendezvous
};

// Reads the torchrun variables; throws UsageError naming a missing or malformed one.
WorldInfo world_from_env();

std::shared_ptr<Communicator> connect_gloo(const WorldInfo& info);

}  // namespace desync
