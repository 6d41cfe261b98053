// The paths the benchmarks need, fixed when the build is configured, compiled into this file
// alone (see tests/paths.cpp for why).
#include <string>

#include "harness.h"

namespace desync::bench {

const std::string& source_dir() {
  static const std::string dir = DESYNC_SOURCE_DIR;
  return dir;
}

const std::string& desync_binary() {
  static const std::string path = DESYNC_BINARY;
  return path;
}

}  // namespace desync::bench
