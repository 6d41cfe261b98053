// Test-only fault injection, for the failure-handling tests and for trying a setup by hand.
//
//   DESYNC_FAULT="rank=R,step=S,action=A"
//
// makes rank R, right after finishing step S, do A: `exit` (exit status 3), `kill` (SIGKILL
// itself), `stall` (sleep until killed: its peers' collectives time out) or `throw` (a runtime
// error, exit status 1). Unset: nothing happens and the check costs one comparison per step.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace desync {

struct Fault {
  int64_t rank = -1;
  int64_t step = -1;
  std::string action;
};

// Parses DESYNC_FAULT; throws UsageError if it is set but malformed.
std::optional<Fault> fault_from_env();

// Carries out `fault` if it is for this rank and step.
void maybe_inject_fault(const std::optional<Fault>& fault, int64_t rank, int64_t step_done);

}  // namespace desync
