#include "desync/models/staged_model.h"

#include <stdexcept>
#include <string>
#include <utility>

#include "desync/core/error.h"
#include "desync/models/builders.h"

namespace desync {

void StagedModelImpl::add_stage(const std::string& name, torch::nn::Sequential stage) {
  register_module(name, stage);
  names_.push_back(name);
  stages_.push_back(std::move(stage));
}

torch::Tensor StagedModelImpl::forward_range(torch::Tensor x, int64_t begin, int64_t end) {
  TORCH_CHECK(0 <= begin && begin <= end && end <= num_stages(), "forward_range [", begin, ", ",
              end, ") is outside the model's ", num_stages(), " stages");
  if (begin == 0 && x.is_floating_point() && x.scalar_type() != dtype_) x = x.to(dtype_);
  for (int64_t i = begin; i < end; ++i) x = stages_[i]->forward(x);
  return x;
}

void StagedModelImpl::set_dtype(torch::ScalarType dtype) {
  to(dtype);
  dtype_ = dtype;
}

std::vector<torch::Tensor> StagedModelImpl::parameters_of(int64_t begin, int64_t end) const {
  TORCH_CHECK(0 <= begin && begin <= end && end <= num_stages(), "parameters_of [", begin, ", ",
              end, ") is outside the model's ", num_stages(), " stages");
  std::vector<torch::Tensor> out;
  for (int64_t i = begin; i < end; ++i) {
    for (const auto& p : stages_[i]->parameters()) out.push_back(p);
  }
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> StagedModelImpl::named_params() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : named_parameters()) out.emplace_back(item.key(), item.value());
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> StagedModelImpl::named_bufs() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : named_buffers()) out.emplace_back(item.key(), item.value());
  return out;
}

std::shared_ptr<StagedModelImpl> StagedModelImpl::clone_model() const {
  auto copy = std::make_shared<StagedModelImpl>();
  for (size_t i = 0; i < stages_.size(); ++i) {
    auto stage = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(stages_[i]->clone());
    copy->add_stage(names_[i], torch::nn::Sequential(stage));
  }
  copy->train(is_training());
  copy->dtype_ = dtype_;
  copy->relink_ = relink_;
  if (relink_) relink_(*copy);
  return copy;
}

int64_t StagedModelImpl::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

FlatParameters::FlatParameters(std::vector<torch::Tensor> params, int64_t pad_to)
    : tensors_(std::move(params)) {
  if (pad_to < 1) throw std::invalid_argument("FlatParameters: pad_to must be >= 1");
  auto options = torch::TensorOptions().dtype(torch::kFloat32);
  if (!tensors_.empty()) options = tensors_.front().options().requires_grad(false);
  for (const auto& p : tensors_) {
    if (!p.defined() || !p.is_floating_point() || p.scalar_type() != options.dtype() ||
        p.device() != options.device()) {
      throw std::invalid_argument(
          "FlatParameters: parameters must be defined floating-point tensors of one dtype and "
          "device");
    }
    offsets_.push_back(numel_);
    numel_ += p.numel();
  }
  const int64_t padded = (numel_ + pad_to - 1) / pad_to * pad_to;

  torch::NoGradGuard no_grad;
  params_ = torch::zeros({padded}, options);
  grads_ = torch::zeros({padded}, options);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    torch::Tensor& p = tensors_[i];
    const int64_t n = p.numel();
    torch::Tensor view = params_.narrow(0, offsets_[i], n).view(p.sizes());
    view.copy_(p.detach());
    // An existing gradient is carried over into the flat gradient buffer.
    if (p.grad().defined()) grads_.narrow(0, offsets_[i], n).view(p.sizes()).copy_(p.grad());
    p.set_data(view);
  }
  rebind_grads();
}

void FlatParameters::rebind_grads() {
  for (size_t i = 0; i < tensors_.size(); ++i) {
    torch::Tensor& p = tensors_[i];
    p.mutable_grad() = grads_.narrow(0, offsets_[i], p.numel()).view(p.sizes());
  }
}

StagedModel make_model(const ModelConfig& cfg, const ModelInput& input) {
  if (input.num_classes < 1) {
    throw ConfigError("model: the data has " + std::to_string(input.num_classes) +
                      " classes; a classifier needs at least 1");
  }
  for (int64_t d : input.example_shape) {
    if (d < 1) throw ConfigError("model: the input shape has an empty dimension");
  }
  StagedModel model;
  if (cfg.name == "mlp") {
    models::build_mlp(*model, cfg, input);
  } else if (cfg.name == "cnn") {
    models::build_cnn(*model, cfg, input);
  } else if (cfg.name == "resnet18") {
    models::build_resnet18(*model, cfg, input);
  } else if (cfg.name == "revnet18" || cfg.name == "revnet34" || cfg.name == "revnet") {
    models::build_revnet(*model, cfg, input);
  } else if (cfg.name == "gpt") {
    models::build_gpt(*model, cfg, input);
  } else if (cfg.name == "sgns") {
    models::build_sgns(*model, cfg, input);
  } else {
    throw ConfigError(
        "model.name: unknown model '" + cfg.name +
        "'; valid choices: mlp, cnn, resnet18, revnet18, revnet34, revnet, gpt, sgns");
  }
  if (cfg.dtype == "float64") model->set_dtype(torch::kDouble);
  return model;
}

}  // namespace desync
