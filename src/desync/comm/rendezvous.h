// What the two c10d backends share: the TCPStore rendezvous and the report of a failed call.
//
// Internal to src/desync/comm/: only gloo_communicator.cpp (which defines these functions) and
// nccl_communicator.cpp include this header, because it includes c10d headers and the rest of
// the tree must not see c10d types (differences between LibTorch versions stay in those files).
//
// rendezvous(): rank 0 hosts the TCPStore on MASTER_ADDR:MASTER_PORT and publishes the job
// token and WORLD_SIZE; every other rank checks both, so a stray process from another job cannot
// join. Each rank then claims its number and all wait until every rank has come. Returns the
// store under the prefix "job/<token>", where every key of the job lives. Throws CommError with
// one line naming the mismatch: the store cannot be reached or its port is taken, it belongs to
// another job (token), WORLD_SIZE disagrees, RANK is already taken (a duplicate, or a stale
// store of a job that already started), or ranks did not arrive within the time-out (named). A
// duplicate rank or a wrong WORLD_SIZE stops the waiting ranks at once, with the same reason.
//
// throw_call_failure(): a call on channel `name` failed on this rank. Posts how far this rank
// got (call number `seq`), reads how far the others got, and throws a CommError naming the
// operation and the ranks that had not reached it (or, when the store is gone or does not
// answer within 10 s because rank 0 is stopped, saying so).
#pragma once

#include <cstdint>
#include <string>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "desync/comm/gloo_communicator.h"

namespace desync {

c10::intrusive_ptr<c10d::Store> rendezvous(const WorldInfo& info);

[[noreturn]] void throw_call_failure(c10d::Store& store, const std::string& name, int64_t rank,
                                     int64_t world_size, const char* op, int64_t seq,
                                     const std::string& what);

// The first line of an exception message (c10d's go on with a C++ backtrace).
std::string first_line(const std::string& s);

}  // namespace desync
