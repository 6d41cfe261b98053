// libFuzzer target for the checkpoint reader (src/desync/core/checkpoint.h: the manifest, its
// checks and the archive).
//
// Input: a mode byte, a manifest length byte L, L bytes of manifest, then the archive's bytes.
// Mode bit 0 set: the manifest is replaced by a correct one (the archive's size and CRC-32), so
// the archive itself reaches the deserialiser. The files are written as rank 0's checkpoint of
// step 1 and read back by CheckpointStore::load_latest. It must return nothing with one warning,
// or an archive; an archive that loads must serialise and load again with the same entries.
// Anything else (another exception, a crash) is reported.
//
// Built and run by scripts/fuzz, which compiles the sources listed here:
// fuzz-sources: src/desync/core/checkpoint.cpp src/desync/core/archive.cpp src/desync/core/fs.cpp
// fuzz-torch: yes
// LibTorch's unpickler allocates a string's declared length (up to 4 GiB) before it finds the
// record too short: bounded by the format, slow (seconds, more under ASan), not a memory error.
// The memory and time limits allow for it, and a small quarantine keeps ASan's freeing of such
// blocks quick. Its zip reader (PyTorchStreamReader) leaks miniz's state when a malformed zip
// makes its constructor throw, so leak detection is off here.
// fuzz-options: -rss_limit_mb=8192 -malloc_limit_mb=8192 -detect_leaks=0 -timeout=120
// fuzz-asan-options: detect_leaks=0:quarantine_size_mb=64
#include <fmt/format.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "desync/core/archive.h"
#include "desync/core/checkpoint.h"
#include "desync/core/fs.h"

namespace {

std::string scratch_dir() {
  char pattern[] = "/tmp/checkpoint-fuzz-XXXXXX";
  if (!mkdtemp(pattern)) abort();
  return pattern;
}

void write(const std::string& path, std::string_view bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = scratch_dir();
  if (size < 2) return 0;
  const bool good_manifest = data[0] & 1;
  const size_t manifest_size = std::min<size_t>(data[1], size - 2);
  std::string_view manifest(reinterpret_cast<const char*>(data) + 2, manifest_size);
  const std::string_view archive(reinterpret_cast<const char*>(data) + 2 + manifest_size,
                                 size - 2 - manifest_size);
  const desync::CheckpointStore store(dir, 0, 1);
  std::filesystem::create_directories(store.step_dir(1));
  std::string made;
  if (good_manifest) {
    made = fmt::format(
        R"({{"step": 1, "rank": 0, "world_size": 1, "file": "rank0.pt", "bytes": {}, "crc32": {}, "complete": true}})",
        archive.size(), desync::crc32_of(archive));
    manifest = made;
  }
  write(store.archive_path(1), archive);
  write(store.manifest_path(1), manifest);
  int warnings = 0;
  auto loaded = store.load_latest([&](const std::string&) { ++warnings; });
  if (!loaded) {
    if (warnings != 1) abort();
    return 0;
  }
  if (warnings != 0 || loaded->step != 1) abort();
  const desync::Archive again =
      desync::Archive::deserialize(loaded->archive.serialize(), "round trip");
  if (again.names() != loaded->archive.names()) abort();
  return 0;
}
