// Per-architecture builders behind make_model (private to models/).
//
// Each builder appends its stages to an empty StagedModel, drawing the initial weights from the
// global torch RNG (LibTorch's default initialisers). make_model validates the configuration
// name; the builders validate the sizes and throw ConfigError when the model does not fit the
// input (e.g. more pooling stages than the image has pixels for).
#pragma once

#include "desync/core/config.h"
#include "desync/models/staged_model.h"

namespace desync::models {

// Flatten, then per hidden width a stage "fc<i>" (Linear + ReLU); stage "head" maps to classes.
void build_mlp(StagedModelImpl& model, const ModelConfig& cfg, const ModelInput& input);

// Per entry of cfg.channels a stage "block<i>": Conv3x3 (padding 1) [+ BatchNorm2d] + ReLU +
// MaxPool2; then "head": Flatten, Linear(->128) [+ BatchNorm1d], ReLU, Linear(->classes).
// Convolutions and the hidden Linear drop their bias when BatchNorm follows. Input {C, H, W}.
void build_cnn(StagedModelImpl& model, const ModelConfig& cfg, const ModelInput& input);

// ResNet-18 with the CIFAR stem (3x3 conv, no max-pool): stages "stem", "layer1".."layer4"
// (two BasicBlocks each, widths cfg.width * {1, 2, 4, 8}) and "head" (global average pool,
// flatten, linear). Input {C, H, W}.
void build_resnet18(StagedModelImpl& model, const ModelConfig& cfg, const ModelInput& input);

// RevNets (revnet.h), one stage per block: "stem" (conv3x3 + BN + ReLU to 2 * cfg.width
// channels, both streams), then per group g and block b a stage "g<g>b<b>" holding one RevBlock,
// or for the first block of groups 2.. one RevDownsampleBlock (stride 2, width doubled), then
// "head" (global average pool over both streams, flatten, linear). Blocks per group:
// revnet18 [2, 2, 2, 2], revnet34 [3, 4, 6, 3], revnet cfg.blocks. Input {C, H, W}.
void build_revnet(StagedModelImpl& model, const ModelConfig& cfg, const ModelInput& input);

// A decoder-only transformer (gpt.h): "embed", "block<i>" per layer, "head". Input {seq_len}
// token ids; num_classes is the vocabulary.
void build_gpt(StagedModelImpl& model, const ModelConfig& cfg, const ModelInput& input);

// Skip-gram with negative sampling (sgns.h): one stage "embed" holding W_in and W_out,
// [num_classes, cfg.d_model] each. Input: the words dataset's examples.
void build_sgns(StagedModelImpl& model, const ModelConfig& cfg, const ModelInput& input);

}  // namespace desync::models
