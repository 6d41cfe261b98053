// The NCCL backend (run.backend = "nccl"): c10d ProcessGroupNCCL, one CUDA device per worker.
//
// connect_nccl() rendezvous exactly as connect_gloo() does (the same TCPStore, job token and key
// prefix: see gloo_communicator.h), then binds the process group to CUDA device
// local_rank % device_count and connects it eagerly. It needs a build with -DDESYNC_CUDA=ON;
// without one it throws UsageError, and it throws UsageError when no CUDA device is visible.
//
// Staging: the engine trains on CPU tensors. A CPU tensor passed to a call is copied to a buffer
// on the device when the call is issued (when it is an input), the operation runs there, and the
// result is copied back into the CPU tensor when the Work is waited on. A CUDA tensor on this
// rank's device is used in place; one on another device is a CommError. wait() blocks the
// calling thread until the operation completed (c10d's blocking wait: connect_nccl() sets
// TORCH_NCCL_BLOCKING_WAIT=1 unless it is set), so the waits the base class records are true.
//
// Point to point: NCCL has no tags. Messages between two ranks on one channel are matched in the
// order they were issued, whatever their tags, so a receiver must post its receives from a peer
// in the order the peer posts its sends to it (every algorithm does: its protocol fixes the
// order); messages that may be issued in different orders on the two sides go on a split()
// channel of their own. Sends and receives are queued when issued and launched together, as one
// NCCL group, when a Work of the channel is waited on or before its next collective, barrier or
// split: a send and a receive between the same two ranks then progress together, as with Gloo,
// instead of deadlocking on the NCCL stream (an NCCL send does not complete before its receive is
// posted).
//
// Accounting is the base class's, unchanged: NCCL's ring algorithms match the formulas in
// communicator.h (ring all_reduce 2(N-1)/N * size, ring all_gather (N-1) * chunk, ring
// reduce_scatter (N-1)/N * input, all_to_all as pairwise send/recv, send/recv size). NCCL's
// broadcast is a pipelined chain rather than a binomial tree: every non-root receives size, as
// counted, but each rank but the last of the chain sends size once. Where NCCL picks its Tree or
// NVLS all-reduce instead of Ring (NCCL_ALGO), the figures are those of the ring.
//
// A call that fails or exceeds run.comm_timeout throws CommError naming the operation and the
// ranks that had not reached it, as the Gloo backend does. Thread-safety: as Communicator; a
// split() is a process group of its own (its own NCCL communicator and stream).
#pragma once

#include <memory>

#include "desync/comm/communicator.h"
#include "desync/comm/gloo_communicator.h"  // WorldInfo

namespace desync {

std::shared_ptr<Communicator> connect_nccl(const WorldInfo& info);

}  // namespace desync
