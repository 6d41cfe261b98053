// μP's roles and per-tensor learning-rate scales (mup.h).
#include "desync/models/mup.h"

#include <fmt/format.h>

#include <map>

#include "desync/core/error.h"

namespace desync {
namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

bool starts_with(const std::string& s, const std::string& head) {
  return s.compare(0, head.size(), head) == 0;
}

}  // namespace

MupRole mup_role(const ModelConfig& cfg, const std::string& name, const torch::Tensor& param) {
  const std::string stage = name.substr(0, name.find('.'));
  const bool mlp = cfg.name == "mlp", gpt = cfg.name == "gpt";
  const bool known = name.find('[') == std::string::npos &&
                     (stage == "head" || (mlp && starts_with(stage, "fc")) ||
                      (gpt && (stage == "embed" || starts_with(stage, "block"))));
  if (!known)
    throw ConfigError(fmt::format(
        "model.parametrization = \"mup\": the optimizer holds '{}', which is not a whole "
        "parameter of the {} model (a shard of a flat buffer, or an auxiliary head); μP needs the "
        "model's own tensors, as ddp, diloco or the pipelines give them",
        name, cfg.name));
  if (param.dim() <= 1) return MupRole::kVector;
  if (stage == "head") return MupRole::kOutput;
  if (stage == "fc1" || stage == "embed") return MupRole::kInput;
  return MupRole::kHidden;
}

void set_mup_lr_scales(const ModelConfig& cfg, std::vector<ParamSlot>& slots) {
  if (cfg.parametrization != "mup") {
    for (ParamSlot& s : slots) s.lr_scale = 1.0;
    return;
  }
  std::map<std::string, torch::Tensor> by_name;
  for (const ParamSlot& s : slots) by_name[s.name] = s.param;
  for (ParamSlot& s : slots) {
    s.lr_scale = 1.0;
    if (mup_role(cfg, s.name, s.param) != MupRole::kHidden) continue;
    int64_t fan_in = s.param.size(1);  // W [out, in]
    if (ends_with(s.name, ".A") || ends_with(s.name, ".B")) {
      const std::string b = s.name.substr(0, s.name.size() - 1) + "B";
      const auto it = by_name.find(b);
      if (it == by_name.end())
        throw ConfigError(fmt::format(
            "model.parametrization = \"mup\": factor '{}' has no sibling '{}' among the "
            "optimizer's slots",
            s.name, b));
      fan_in = it->second.size(0);  // B [in, r]
    }
    s.lr_scale = cfg.mup_hidden_lr_mult / static_cast<double>(fan_in);
  }
}

}  // namespace desync
