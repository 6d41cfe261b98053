#include "desync/algorithms/local/aux_head.h"

#include <fmt/format.h>

#include <cmath>

#include "desync/core/error.h"

namespace desync {

namespace {

// Linear and conv layers as torch initialises them, drawn from `gen`: weight and bias uniform in
// ±1/sqrt(fan_in) (kaiming_uniform with a = sqrt(5), and the bias rule).
void initialise(torch::nn::Sequential& head, at::Generator& gen) {
  torch::NoGradGuard no_grad;
  for (const auto& m : head->modules(/*include_self=*/false)) {
    torch::Tensor weight, bias;
    if (auto* l = m->as<torch::nn::LinearImpl>()) {
      weight = l->weight;
      bias = l->bias;
    } else if (auto* c = m->as<torch::nn::Conv2dImpl>()) {
      weight = c->weight;
      bias = c->bias;
    } else {
      continue;
    }
    const double bound = 1.0 / std::sqrt(static_cast<double>(weight[0].numel()));
    weight.uniform_(-bound, bound, gen);
    if (bias.defined()) bias.uniform_(-bound, bound, gen);
  }
}

}  // namespace

torch::nn::Sequential make_aux_head(const AuxHeadOptions& options,
                                    const std::vector<int64_t>& shape, int64_t classes,
                                    at::Generator& gen) {
  namespace nn = torch::nn;
  const bool image = shape.size() == 3;
  if (!image && shape.size() != 1)
    throw ConfigError(
        fmt::format("algorithm.aux: a block's output of {} dimensions has no "
                    "auxiliary head (image {{C, H, W}} or flat {{F}} only)",
                    shape.size()));
  const int64_t channels = shape[0];
  // Average pool to 2x2 and flatten (images); the width that comes out.
  auto pool = [&](nn::Sequential& head, int64_t c) {
    if (!image) return c;
    head->push_back(nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(2)));
    head->push_back(nn::Flatten());
    return 4 * c;
  };
  nn::Sequential head;
  if (options.kind == "linear") {
    if (image)
      head->push_back(nn::BatchNorm2d(channels));
    else
      head->push_back(nn::BatchNorm1d(channels));
    head->push_back(nn::Linear(pool(head, channels), classes));
  } else if (options.kind == "cnn") {
    if (!image)
      throw ConfigError(
          "algorithm.aux = \"cnn\" needs image activations {C, H, W}; use \"mlp\" or \"linear\"");
    const int64_t h = options.hidden > 0 ? options.hidden : 32;
    head->push_back(nn::Conv2d(nn::Conv2dOptions(channels, h, 1)));
    for (int i = 0; i < 3; ++i) {
      head->push_back(nn::Conv2d(nn::Conv2dOptions(h, h, 3).stride(2).padding(1).bias(false)));
      head->push_back(nn::BatchNorm2d(h));
      head->push_back(nn::ReLU());
    }
    head->push_back(nn::Linear(pool(head, h), classes));
  } else if (options.kind == "mlp") {
    const int64_t w = options.hidden > 0 ? options.hidden : 1024;
    int64_t in = pool(head, channels);
    for (int i = 0; i < 3; ++i) {
      head->push_back(nn::Linear(in, w));
      head->push_back(nn::ReLU());
      in = w;
    }
    head->push_back(nn::Linear(in, classes));
  } else {
    throw ConfigError(fmt::format(
        "algorithm.aux: unknown auxiliary head \"{}\" (mlp, cnn or linear)", options.kind));
  }
  initialise(head, gen);
  return head;
}

torch::nn::Sequential make_projection_head(const ProjectionHeadOptions& options,
                                           const std::vector<int64_t>& shape, at::Generator& gen) {
  namespace nn = torch::nn;
  if (shape.size() != 3 && shape.size() != 1)
    throw ConfigError(fmt::format(
        "algorithm.projection: a block's output of {} dimensions has no projection head (image "
        "{{C, H, W}} or flat {{F}} only)",
        shape.size()));
  nn::Sequential head;
  if (shape.size() == 3) {  // one vector per example: the mean over the positions
    head->push_back(nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(1)));
    head->push_back(nn::Flatten());
  }
  if (options.kind == "mlp") {
    head->push_back(nn::Linear(shape[0], options.width));
    head->push_back(nn::ReLU());
    head->push_back(nn::Linear(options.width, options.dim));
  } else if (options.kind == "linear") {
    head->push_back(nn::Linear(shape[0], options.dim));
  } else {
    throw ConfigError(fmt::format(
        "algorithm.projection: unknown projection head \"{}\" (mlp or linear)", options.kind));
  }
  initialise(head, gen);
  return head;
}

void save_head(Archive& archive, const std::string& name, const torch::nn::Module& head) {
  for (const auto& item : head.named_parameters())
    archive.put(fmt::format("{}.{}", name, item.key()), item.value().detach());
  for (const auto& item : head.named_buffers())
    archive.put(fmt::format("{}.{}", name, item.key()), item.value().detach());
}

void load_head(const Archive& archive, const std::string& name, torch::nn::Module& head) {
  torch::NoGradGuard no_grad;
  for (const auto& item : head.named_parameters())
    archive.copy_into(fmt::format("{}.{}", name, item.key()), item.value().detach());
  for (const auto& item : head.named_buffers())
    archive.copy_into(fmt::format("{}.{}", name, item.key()), item.value().detach());
}

StagedModel model_with_head(StagedModel model, int64_t stages, const std::string& name,
                            const torch::nn::Sequential& head) {
  StagedModel m;
  for (int64_t i = 0; i < stages; ++i) m->add_stage(model->stage_name(i), model->stage(i));
  m->add_stage(name, head);
  if (model->dtype() != torch::kFloat) m->set_dtype(model->dtype());
  return m;
}

}  // namespace desync
