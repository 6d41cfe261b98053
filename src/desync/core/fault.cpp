#include "desync/core/fault.h"

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>

#include "desync/core/error.h"

namespace desync {

std::optional<Fault> fault_from_env() {
  const char* spec = std::getenv("DESYNC_FAULT");
  if (!spec || !*spec) return std::nullopt;
  Fault f;
  std::stringstream ss(spec);
  std::string item;
  try {
    while (std::getline(ss, item, ',')) {
      auto eq = item.find('=');
      if (eq == std::string::npos) throw UsageError("");
      std::string k = item.substr(0, eq), v = item.substr(eq + 1);
      if (k == "rank")
        f.rank = std::stoll(v);
      else if (k == "step")
        f.step = std::stoll(v);
      else if (k == "action")
        f.action = v;
      else
        throw UsageError("");
    }
  } catch (const std::exception&) {
    f.action.clear();
  }
  if (f.rank < 0 || f.step < 0 ||
      (f.action != "exit" && f.action != "kill" && f.action != "stall" && f.action != "throw"))
    throw UsageError(
        fmt::format("DESYNC_FAULT={} is malformed; expected "
                    "rank=R,step=S,action=exit|kill|stall|throw",
                    spec));
  return f;
}

void maybe_inject_fault(const std::optional<Fault>& fault, int64_t rank, int64_t step_done) {
  if (!fault || fault->rank != rank || fault->step != step_done) return;
  std::fprintf(stderr, "injected fault: rank %lld %s after step %lld\n",
               static_cast<long long>(rank), fault->action.c_str(),
               static_cast<long long>(step_done));
  std::fflush(stderr);
  if (fault->action == "exit") std::_Exit(3);
  if (fault->action == "kill") ::raise(SIGKILL);
  if (fault->action == "stall")
    while (true) ::pause();
  throw Error(fmt::format("injected fault at step {}", step_done));
}

}  // namespace desync
