// μP (maximal-update parametrisation) for the mlp and gpt models: which role each parameter
// plays, and the per-tensor learning-rate scale an optimizer applies to it (spec
// ../shared/algorithms/optimizers-spectron-mulo.md §2.1).
//
//   role     tensors                                         init              lr scale
//   input    the first layer's weight (mlp fc1; gpt embed)   N(0, 1/fan_in)*   1
//   hidden   every other weight matrix (and its factors)     N(0, 1/fan_in)*   hidden_lr_mult /
//   fan_in output   the head's weight                               0 (or N(0, 1))    1 vector
//   biases, normalisation weights, scalars          N(0, 1) (biases)  1
//   (* truncated at two standard deviations)
//
// Forward multipliers: the input layer's output is multiplied by model.mup_input_mult and the
// head's by model.mup_output_mult / fan_in (the builders apply them; mlp.cpp, gpt.cpp). Under the
// standard parametrisation ("sp") every scale is 1 and the builders keep LibTorch's init.
//
// Thread-safety: pure functions.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "desync/core/config.h"
#include "desync/optim/optimizer.h"

namespace desync {

enum class MupRole { kInput, kHidden, kOutput, kVector };

// The role of parameter `name` (as StagedModel::named_params() names it, "<stage>.<path>") of
// model cfg.name: 1-D and 0-D tensors are vectors; mlp stage fc1 is the input layer, the other
// fc<i> hidden, head the output; gpt stage embed is the input layer, block<i> hidden, head the
// output. Throws ConfigError for a stage an mlp or gpt model does not have.
MupRole mup_role(const ModelConfig& cfg, const std::string& name, const torch::Tensor& param);

// Sets slot.lr_scale for every slot: 1 under "sp"; under "mup" hidden_lr_mult / fan_in for hidden
// matrices and 1 for the rest. The fan-in of W [out, in] is `in`; a LinearLayer's factors A
// [out, r] and B [in, r] both take W's, B's rows. A slot whose name is not a model parameter (a
// flat shard of a sharded optimizer) is refused under "mup" with a ConfigError.
void set_mup_lr_scales(const ModelConfig& cfg, std::vector<ParamSlot>& slots);

}  // namespace desync
