// Resume checks on real processes: a job run to the end, then a copy of its run directory cut
// back to its checkpoint at step `at` and resumed with --resume; the two are then compared.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "desync/core/checkpoint.h"
#include "desync/core/error.h"
#include "test_util.h"

namespace desync::testing {

// Runs `train` (a `desync train ...` command line without --out) into `ref`, copies `ref` to
// `cut`, deletes the copy's checkpoints after step `at` and resumes it. Returns how many steps'
// checkpoints were deleted; fails the test, fatally, when a run fails.
inline void run_and_resume(const std::string& train, const std::string& ref,
                           const std::string& cut, int64_t workers, int64_t at,
                           int64_t* deleted) {
  CommandResult r = run_command(train + " --out " + ref);
  ASSERT_EQ(r.status, 0) << r.output;
  std::filesystem::copy(ref, cut, std::filesystem::copy_options::recursive);
  CheckpointStore store(cut + "/checkpoints", 0, workers);  // a step's directory holds every rank
  *deleted = 0;
  for (int64_t step : store.steps_on_disk())
    if (step > at) {
      std::filesystem::remove_all(store.step_dir(step));
      ++*deleted;
    }
  r = run_command(train + " --out " + cut + " --resume");
  ASSERT_EQ(r.status, 0) << r.output;
}

// Entry `name` of `a` and of `b` hold the same value, bit for bit.
inline bool same_entry(const Archive& a, const Archive& b, const std::string& name) {
  try {
    return torch::equal(a.tensor(name), b.tensor(name));
  } catch (const CheckpointError&) {
  }
  try {
    return a.integer(name) == b.integer(name);
  } catch (const CheckpointError&) {
  }
  try {
    return a.real(name) == b.real(name);
  } catch (const CheckpointError&) {
  }
  return a.string(name) == b.string(name);
}

// Every rank's newest checkpoint in `ref` and in `cut` is of the same step and holds the same
// entries whose names start with `prefix`, bit for bit (the wall-clock *_seconds excepted).
inline void expect_same_checkpoints(const std::string& ref, const std::string& cut,
                                    int64_t workers, const std::string& prefix) {
  for (int64_t rank = 0; rank < workers; ++rank) {
    SCOPED_TRACE("rank " + std::to_string(rank));
    auto x = CheckpointStore(ref + "/checkpoints", rank, workers).load_latest(nullptr);
    auto y = CheckpointStore(cut + "/checkpoints", rank, workers).load_latest(nullptr);
    ASSERT_TRUE(x && y);
    ASSERT_EQ(x->step, y->step);
    auto names = [&](const Archive& a) {
      std::vector<std::string> out;
      for (const std::string& name : a.names())
        if (name.rfind(prefix, 0) == 0 && name != "trainer.train_seconds" &&
            name != "trainer.wall_seconds")
          out.push_back(name);
      return out;
    };
    ASSERT_EQ(names(x->archive), names(y->archive));
    for (const std::string& name : names(x->archive))
      EXPECT_TRUE(same_entry(x->archive, y->archive, name)) << name;
  }
}

}  // namespace desync::testing
