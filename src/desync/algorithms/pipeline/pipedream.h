// `pipedream`: a delayed-gradient pipeline with weight stashing.
//
// Contract: the memory policy of the delayed-pipeline runtime (delayed_pipeline.h) in which the
// backward of every micro-batch recomputes the stage with bitwise the weights its forward used.
// Reference: "PipeDream: Fast and Efficient Pipeline Parallel DNN Training" (arXiv 1806.03377).
// Docs: docs/algorithms/pipedream.md.
//
//   forward of b:   Buf.push(x_b); Stash.push(theta); y = F(x_b; theta) without graph; send y
//   backward of b:  x_b = Buf.pop(); theta_b = Stash.pop();
//                   recompute F(x_b; theta_b) with graph; VJP with dy; apply to theta_now
//
// Each micro-batch's gradient is consistent; it is applied 2(J-1-s) ticks late. Memory: up to
// 2(J-1-s)+1 buffered inputs and as many copies of the stage's parameters.
#pragma once

#include <memory>

#include "desync/algorithms/pipeline/delayed_stage.h"

namespace desync {

// The weight-stashing policy: every stage buffers its inputs and stashes its parameters.
std::unique_ptr<const MemoryPolicy> pipedream_policy();

// The registry's factory: the delayed-pipeline runtime with pipedream_policy().
std::unique_ptr<Algorithm> make_pipedream(const AlgorithmConfig& cfg);

}  // namespace desync
