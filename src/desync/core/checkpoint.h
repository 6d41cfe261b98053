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
// file system. The exception is an elastic resume (a checkpoint written by a run with another
// number of workers): every rank then reads all the old ranks' files, which must be on a file
// system that every node sees; it asks for them explicitly (load_resumable(), load_world()).
// Thread-safety: none.
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

  // A checkpoint to --resume from: this rank's own archive when a run with this run's number of
  // workers wrote it (world == this run's, one archive), or else the archives of all the ranks
  // of the run that wrote it, in rank order (world of them: an elastic resume).
  struct Resumable {
    int64_t step;
    int64_t world;
    std::vector<Archive> archives;
  };
  // The newest checkpoint at or below `max_step` that this rank can resume from. A step whose
  // own manifest names this world is read as load_latest() reads it; one that this rank has no
  // file of, or whose files name another world, is read with load_world(). Damaged ones are
  // reported through `warn` and skipped.
  std::optional<Resumable> load_resumable(const std::function<void(const std::string&)>& warn,
                                          int64_t max_step = INT64_MAX) const;
  // The archives of ranks 0..world-1 of `step`, each intact and written by a run of `world`
  // workers, or nothing with the reason in `why`. Reads other ranks' files.
  std::optional<std::vector<Archive>> load_world(int64_t step, int64_t world,
                                                 std::string* why) const;
  // The number of workers that the manifest of `rank` at `step` names, if it is readable.
  std::optional<int64_t> manifest_world(int64_t step, int64_t rank) const;
  // After an elastic resume, once this world's checkpoint `kept` is written by every rank:
  // removes the checkpoints written by runs with another number of workers (their step numbers
  // count another world's steps) and, in `kept`, the files of ranks outside this world.
  void remove_other_worlds(int64_t kept) const;

  // Steps that have a directory (complete or not), ascending.
  std::vector<int64_t> steps_on_disk() const;
  std::string step_dir(int64_t step) const;
  std::string archive_path(int64_t step) const;
  std::string manifest_path(int64_t step) const;
  std::string archive_path(int64_t step, int64_t rank) const;
  std::string manifest_path(int64_t step, int64_t rank) const;

 private:
  // Returns the archive of `rank` at `step` if complete, intact and written by a run of `world`
  // workers, else the reason it is not.
  std::optional<Archive> verify(int64_t step, int64_t rank, int64_t world, std::string* why) const;

  std::string dir_;
  int64_t rank_, world_;
};

}  // namespace desync
