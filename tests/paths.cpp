// The paths the tests need, fixed when the build is configured. They are compiled into this
// file alone, so that every other test source compiles the same in any checkout (and ccache
// serves a fresh clone's build from the cache).
#include <string>

#include "test_util.h"

namespace desync::testing {

const std::string& source_dir() {
  static const std::string dir = DESYNC_SOURCE_DIR;
  return dir;
}

const std::string& desync_binary() {
  static const std::string path = DESYNC_BINARY;
  return path;
}

const std::string& python() {
  static const std::string path = DESYNC_PYTHON;
  return path;
}

}  // namespace desync::testing
