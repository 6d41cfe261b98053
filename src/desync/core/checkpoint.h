// Durable, verifiable checkpoints in a run directory.
//
// Layout: <dir>/step-<8 digits>/rank<R>.pt holds rank R's Archive (a torch zip, readable by
// Python's torch.load); rank<R>.manifest.json, written last, records the step, world size,
// byte count and CRC-32 of the archive. The manifest is the completion marker: a checkpoint
// without one, or whose archive no longer matches it, is incomplete and skipped with a warning
// in favour of the previous good one. Both files are written atomically (temp file, fsync,
// rename). After a successful write only the newest `keep` complete checkpoints are kept.
//
// Each rank reads and writes only its own files, so the layout works on nodes without a shared
// file system. Thread-safety: none.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "desync/core/archive.h"

namespace desync {

class CheckpointStore {
 public:
  CheckpointStore(std::string dir, int64_t rank, int64_t world_size);

  // Writes `archive` as this rank's checkpoint for `step`, then prunes old ones beyond `keep`.
  void write(int64_t step, const Archive& archive, int64_t keep);

  struct Loaded {
    int64_t step;
    Archive archive;
  };
  // The newest complete, intact checkpoint of this rank at or below `max_step`, or nothing.
  // Damaged ones are reported through `warn` and skipped.
  std::optional<Loaded> load_latest(const std::function<void(const std::string&)>& warn,
                                    int64_t max_step = INT64_MAX) const;

  // Steps that have a directory (complete or not), ascending.
  std::vector<int64_t> steps_on_disk() const;
  std::string step_dir(int64_t step) const;
  std::string archive_path(int64_t step) const;
  std::string manifest_path(int64_t step) const;

 private:
  // Returns the archive of `step` if complete and intact, else the reason it is not.
  std::optional<Archive> verify(int64_t step, std::string* why) const;

  std::string dir_;
  int64_t rank_, world_;
};

}  // namespace desync
