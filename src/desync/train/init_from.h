// model.init_from: start a run from the parameters of an earlier run (a pre-trained backbone).
//
// The newest complete, intact checkpoint of rank 0 in <run_dir>/checkpoints gives every
// parameter and buffer of the model, whatever the world size of the run that wrote it. Every
// name must be present with the same shape; the error names the first one that is not.
// Checkpoints of stage-placed runs (pipelines), whose rank 0 holds only its stages, are refused
// by that check.
#pragma once

#include <cstdint>
#include <string>

#include "desync/models/staged_model.h"

namespace desync {

// Copies the checkpoint's parameters and buffers into `model`; returns the checkpoint's step.
// Throws ConfigError when run_dir holds no usable checkpoint or a shape or name differs.
int64_t init_from_run(StagedModel& model, const std::string& run_dir);

}  // namespace desync
