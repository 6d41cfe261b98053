// Auxiliary heads for local learning: a small classifier on a block's output, trained by the
// block's own loss (docs/algorithms/dgl.md). The kinds, as the forward-gradient study's code
// defines them (the hidden sizes keep their FLOPs small next to the blocks'):
//
//   linear   BatchNorm, average pool to 2x2, linear
//   cnn      1x1 conv to `hidden` channels, 3 x [3x3 stride-2 conv, BatchNorm, ReLU], average
//            pool to 2x2, linear
//   mlp      average pool to 2x2, 3 x [linear to `hidden`, ReLU], linear
//
// On a flat activation {F} (an MLP's), pooling is skipped and BatchNorm is 1-d; `cnn` needs an
// image activation {C, H, W}.
//
// Projection heads for contrastive local learning (docs/algorithms/contrastive_local.md; ours,
// the paper's auxiliary network is not known): average pool an image activation to one vector
// per example (pool_features of contrastive.h), then
//
//   mlp      linear to `width`, ReLU, linear to `dim`
//   linear   linear to `dim`
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "desync/core/archive.h"
#include "desync/models/staged_model.h"

namespace desync {

struct AuxHeadOptions {
  std::string kind = "mlp";  // "mlp" | "cnn" | "linear"
  int64_t hidden = 0;        // 0: the kind's default (mlp 1024, cnn 32)
};

// The head for activations of `shape` (one example's, without the batch dimension) and
// `classes` classes. Its weights and biases are drawn from `gen` as PyTorch's defaults draw them
// (uniform in ±1/sqrt(fan_in)), so that no global RNG state is read or changed. Throws
// ConfigError for a kind that does not fit the shape.
torch::nn::Sequential make_aux_head(const AuxHeadOptions& options,
                                    const std::vector<int64_t>& shape, int64_t classes,
                                    at::Generator& gen);

struct ProjectionHeadOptions {
  std::string kind = "mlp";  // "mlp" | "linear"
  int64_t width = 256;       // the mlp's hidden width
  int64_t dim = 128;         // the projection's width
};

// The projection head for activations of `shape` (one example's: {C, H, W} or {F}), drawn from
// `gen` as make_aux_head's. Throws ConfigError for another shape or kind.
torch::nn::Sequential make_projection_head(const ProjectionHeadOptions& options,
                                           const std::vector<int64_t>& shape, at::Generator& gen);

// A head's parameters and buffers in a checkpoint, under "<name>." (heads are not part of the
// model the Trainer saves).
void save_head(Archive& archive, const std::string& name, const torch::nn::Module& head);
void load_head(const Archive& archive, const std::string& name, torch::nn::Module& head);

// The model's stages [0, stages) followed by `head` as a stage called `name`: what a head is
// scored on. Shares the modules; copies nothing.
StagedModel model_with_head(StagedModel model, int64_t stages, const std::string& name,
                            const torch::nn::Sequential& head);

}  // namespace desync
