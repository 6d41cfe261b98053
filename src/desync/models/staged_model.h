// A model as an ordered list of named stages.
//
// Every model in desync is a StagedModel: stage i consumes stage i-1's output. Data-parallel
// algorithms run the whole model, pipelines place stage ranges on ranks, local learning attaches
// heads to stages. Each stage is a torch::nn::Sequential registered as a submodule named after
// the stage, so parameter names read `<stage>.<layer>.<param>`.
//
// FlatParameters packs a set of parameters into one contiguous buffer (padded to a multiple of
// `pad_to`, for sharding) and makes every parameter's data a view into it; it does the same for
// gradients. Algorithms then communicate and update the flat buffers without copies, and the
// autograd engine accumulates gradients straight into the flat gradient buffer.
//
// Thread-safety: none; a model belongs to one worker thread at a time.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "desync/core/config.h"

namespace desync {

class StagedModelImpl : public torch::nn::Module {
 public:
  void add_stage(const std::string& name, torch::nn::Sequential stage);

  int64_t num_stages() const { return static_cast<int64_t>(stages_.size()); }
  const std::string& stage_name(int64_t i) const { return names_.at(i); }
  torch::nn::Sequential& stage(int64_t i) { return stages_.at(i); }

  // Runs all stages.
  torch::Tensor forward(torch::Tensor x) { return forward_range(x, 0, num_stages()); }
  // Runs stages [begin, end). A floating-point input to stage 0 is converted to dtype() (the
  // data is float32).
  torch::Tensor forward_range(torch::Tensor x, int64_t begin, int64_t end);

  // The floating-point type of the parameters and buffers (model.dtype); set_dtype() converts
  // them.
  torch::ScalarType dtype() const { return dtype_; }
  void set_dtype(torch::ScalarType dtype);

  // Parameters of stages [begin, end), in registration order.
  std::vector<torch::Tensor> parameters_of(int64_t begin, int64_t end) const;
  // Named parameters of the whole model with their full names.
  std::vector<std::pair<std::string, torch::Tensor>> named_params() const;
  // Named buffers (e.g. BatchNorm running statistics).
  std::vector<std::pair<std::string, torch::Tensor>> named_bufs() const;

  int64_t parameter_count() const;

  // A deep copy: the same stages with their own parameters and buffers (for evaluation copies
  // such as a consensus model). Every layer must be Cloneable, as all of desync's are.
  std::shared_ptr<StagedModelImpl> clone_model() const;

  // Parameters shared across stages (a GPT's head tied to its token embedding): the first stage
  // that uses the parameter registers it, later ones hold it unregistered, so it is counted,
  // flattened and updated once. `relink` points a copy's later stages at the copy's registered
  // parameter; clone_model() calls it. Pipelines refuse to place tied stages on different ranks.
  void set_relink(std::function<void(StagedModelImpl&)> relink) { relink_ = std::move(relink); }
  bool has_tied_stages() const { return static_cast<bool>(relink_); }

 private:
  std::vector<std::string> names_;
  std::vector<torch::nn::Sequential> stages_;
  torch::ScalarType dtype_ = torch::kFloat;
  std::function<void(StagedModelImpl&)> relink_;
};
TORCH_MODULE(StagedModel);

class FlatParameters {
 public:
  // Packs `params` (which must all be float tensors of one dtype) into one buffer of length
  // padded_numel() = numel() rounded up to a multiple of pad_to; padding is zero. Afterwards
  // every param's data and grad are views of params_flat() and grads_flat().
  FlatParameters(std::vector<torch::Tensor> params, int64_t pad_to = 1);

  torch::Tensor& params_flat() { return params_; }
  torch::Tensor& grads_flat() { return grads_; }
  int64_t numel() const { return numel_; }
  int64_t padded_numel() const { return params_.numel(); }
  const std::vector<torch::Tensor>& params() const { return tensors_; }
  // Offset of params()[i] in the flat buffers.
  int64_t offset(size_t i) const { return offsets_.at(i); }

  // Re-points the params' grads at the flat gradient views (after something replaced them).
  void rebind_grads();

 private:
  std::vector<torch::Tensor> tensors_;
  std::vector<int64_t> offsets_;
  int64_t numel_ = 0;
  torch::Tensor params_, grads_;
};

// What a model factory needs to know about the data.
struct ModelInput {
  std::vector<int64_t> example_shape;  // e.g. {1, 28, 28}
  int64_t num_classes = 10;
};

// Builds the model named by cfg.name, initialised from the current torch RNG state.
// Throws ConfigError for an unknown name or a model that does not fit the input.
StagedModel make_model(const ModelConfig& cfg, const ModelInput& input);

}  // namespace desync
