// libFuzzer target for the TOML config reader (src/desync/core/config.h).
//
// The input is a config file. A malformed one must throw ConfigError and nothing else. One that
// parses must round-trip: its resolved TOML (every key, defaults included) parses again to the
// same resolved TOML. Anything else aborts, so the fuzzer reports it.
//
// Built and run by scripts/fuzz, which compiles the sources listed here:
// fuzz-sources: src/desync/core/config.cpp
#include <cstdint>
#include <cstdlib>
#include <string>

#include "desync/core/config.h"
#include "desync/core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  desync::Config cfg;
  try {
    cfg = desync::parse_config(text, "fuzz.toml");
  } catch (const desync::ConfigError&) {
    return 0;  // expected for malformed input
  }
  const std::string resolved = cfg.resolved_toml();
  desync::Config again;
  try {
    again = desync::parse_config(resolved, "resolved.toml");
  } catch (const desync::ConfigError&) {
    abort();  // the resolved form of a valid config must itself be valid
  }
  if (again.resolved_toml() != resolved) abort();
  return 0;
}
