// `dsp`: a delayed-gradient pipeline that buffers stage inputs and recomputes with the current
// weights (Diversely Stale Parameters).
//
// Contract: the memory policy of the delayed-pipeline runtime (delayed_pipeline.h) in which a
// stage keeps only its inputs, no weight copies. Reference: "On the Acceleration of Deep
// Learning Model Parallelism with Staleness" (arXiv 1909.02625). Docs: docs/algorithms/dsp.md.
//
//   forward of b:   Buf.push(x_b); y = F(x_b; theta) without graph; send y
//   backward of b:  x_b = Buf.pop(); recompute F(x_b; theta_now) with graph; VJP with dy
//
// The gradient is that of the current weights at a stale input: 2(J-1-s) ticks old at stage s.
// Memory: up to 2(J-1-s)+1 buffered inputs, no weight copies.
#pragma once

#include <memory>

#include "desync/algorithms/pipeline/delayed_stage.h"

namespace desync {

// The input-buffer policy: every stage buffers its inputs and recomputes with current weights.
std::unique_ptr<const MemoryPolicy> dsp_policy();

// The registry's factory: the delayed-pipeline runtime with dsp_policy().
std::unique_ptr<Algorithm> make_dsp(const AlgorithmConfig& cfg);

}  // namespace desync
