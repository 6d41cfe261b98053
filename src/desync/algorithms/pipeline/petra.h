// `petra`: Parallel End-to-end Training with Reversible Architectures.
//
// Contract: the memory policy of the delayed-pipeline runtime (delayed_pipeline.h) in which each
// stage keeps one, current parameter copy, and reversible stages keep no inputs: they rebuild
// them by inversion. Reference: "PETRA: Parallel End-to-end Training with Reversible
// Architectures" (arXiv 2406.02052; the public simulation is stephane-rivaud/PETRA). Docs:
// docs/algorithms/petra.md.
//
//   forward of b:   (non-reversible stage) Buf.push(x_b)
//                   y = F(x_b; theta) without graph; send (y, b, labels)
//   backward of b:  receive (y_rec, dy) from the next stage
//                   x_rec = reversible ? F^{-1}(y_rec; theta_now) : Buf.pop()
//                   recompute F(x_rec; theta_now) with graph; VJP with dy
//                   send (x_rec, dx) to the previous stage
//
// No weight stash, and no activation buffer on reversible stages (all their model stages are
// RevNet blocks, reversible.h): they rebuild their input from the output the next stage rebuilt,
// with the current weights, so the reconstruction is approximate once the weights moved (errors
// compound down the pipeline). Non-reversible stages (stem, downsampling, head) keep up to
// 2(J-1-s)+1 inputs. Inversion leaves BatchNorm running statistics untouched; the recomputation
// updates them.
#pragma once

#include <memory>

#include "desync/algorithms/pipeline/delayed_stage.h"

namespace desync {

// The reversible policy: stages rebuild their inputs by inversion where they can
// (rebuilds_inputs() is true), and buffer them where they cannot.
std::unique_ptr<const MemoryPolicy> petra_policy();

// The registry's factory: the delayed-pipeline runtime with petra_policy().
std::unique_ptr<Algorithm> make_petra(const AlgorithmConfig& cfg);

}  // namespace desync
