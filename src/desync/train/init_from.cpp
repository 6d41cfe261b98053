#include "desync/train/init_from.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>
#include <vector>

#include "desync/core/checkpoint.h"
#include "desync/core/error.h"
#include "desync/core/fs.h"

namespace desync {
namespace {

std::string shape_of(const torch::Tensor& t) {
  return fmt::format("[{}]", fmt::join(t.sizes(), ", "));
}

// The world size recorded by rank 0's newest readable manifest, or -1.
int64_t recorded_world(const CheckpointStore& store) {
  std::vector<int64_t> steps = store.steps_on_disk();
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    try {
      nlohmann::json m = nlohmann::json::parse(read_file(store.manifest_path(*it)), nullptr, false);
      if (!m.is_discarded() && m.contains("world_size")) return m["world_size"].get<int64_t>();
    } catch (const Error&) {
    }
  }
  return -1;
}

void copy_named(const Archive& a, const std::string& prefix,
                const std::vector<std::pair<std::string, torch::Tensor>>& named,
                const std::string& where) {
  for (const auto& [name, t] : named) {
    const std::string key = prefix + name;
    if (!a.has(key))
      throw ConfigError(
          fmt::format("model.init_from: {} has no '{}'; it was written for another "
                      "model (or by a pipeline rank that holds only its stages)",
                      where, name));
    torch::Tensor src = a.tensor(key);
    if (src.sizes() != t.sizes())
      throw ConfigError(fmt::format(
          "model.init_from: '{}' has shape {} in {} but {} in this model; use the same model "
          "section and data classes as the run that wrote it",
          name, shape_of(src), where, shape_of(t)));
    torch::NoGradGuard no_grad;
    t.copy_(src);
  }
}

}  // namespace

int64_t init_from_run(StagedModel& model, const std::string& run_dir) {
  const std::string dir = run_dir + "/checkpoints";
  const int64_t world = recorded_world(CheckpointStore(dir, 0, 1));
  if (world < 1)
    throw ConfigError(fmt::format(
        "model.init_from: {} holds no checkpoint; train that run first (checkpoints on)", dir));
  std::string damaged;
  auto loaded =
      CheckpointStore(dir, 0, world).load_latest([&](const std::string& why) { damaged = why; });
  if (!loaded)
    throw ConfigError(fmt::format("model.init_from: no intact checkpoint in {}{}", dir,
                                  damaged.empty() ? "" : " (" + damaged + ")"));
  const std::string where = CheckpointStore(dir, 0, world).archive_path(loaded->step);
  copy_named(loaded->archive, "model.param.", model->named_params(), where);
  copy_named(loaded->archive, "model.buffer.", model->named_bufs(), where);
  return loaded->step;
}

}  // namespace desync
