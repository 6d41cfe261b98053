// `desync checkpoint inspect PATH [--step S] [--rank R]`: what a checkpoint holds, and whether it
// is complete and intact on every rank (core/checkpoint.h's layout and verification).
//
// PATH is a run directory or its checkpoints/ folder. The step is the newest on disk unless
// --step names one. For every rank of the world its manifest records, one line: the archive's
// bytes and CRC-32 and the verdict of the same verification `--resume` applies. Then rank R's
// archive entry by entry (tensors with dtype, shape and bytes; scalars with their value) and its
// bytes per component (the name before the first dot). Exits 0 when every rank's archive of the
// step verifies, else 1 with one line naming the first rank that fails and why.
#include "desync/core/checkpoint.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "desync/cli/commands.h"
#include "desync/core/archive.h"
#include "desync/core/error.h"
#include "desync/core/fs.h"

namespace desync {

namespace {

namespace fs = std::filesystem;

// The checkpoints folder of a run directory, or PATH itself when it holds step-* folders.
std::string checkpoints_dir(const std::string& path) {
  if (!fs::is_directory(path)) throw UsageError(fmt::format("{}: no such directory", path));
  if (fs::is_directory(path + "/checkpoints")) return path + "/checkpoints";
  if (!CheckpointStore(path, 0, 1).steps_on_disk().empty()) return path;
  throw UsageError(fmt::format(
      "{} has no checkpoints (expected a run directory with checkpoints/, or that folder)", path));
}

// The world size a step's manifests record: rank 0's, else any readable one's; -1 if none.
int64_t world_of(const std::string& step_dir) {
  std::error_code ec;
  std::vector<std::string> manifests;
  for (const auto& entry : fs::directory_iterator(step_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("rank") && name.ends_with(".manifest.json")) {
      manifests.push_back(entry.path().string());
    }
  }
  std::sort(manifests.begin(), manifests.end());
  for (const std::string& path : manifests) {
    try {
      const auto m = nlohmann::json::parse(read_file(path), nullptr, false);
      if (m.is_object() && m.contains("world_size") && m["world_size"].is_number_integer()) {
        return m["world_size"].get<int64_t>();
      }
    } catch (const Error&) {
    }
  }
  return -1;
}

std::string human_bytes(double bytes) {
  if (bytes >= 1 << 20) return fmt::format("{:.1f} MiB", bytes / (1 << 20));
  if (bytes >= 1 << 10) return fmt::format("{:.1f} KiB", bytes / (1 << 10));
  return fmt::format("{} B", bytes);
}

// One entry: its kind and value or shape, and its bytes (tensors only).
std::pair<std::string, int64_t> describe(const Archive& a, const std::string& name) {
  try {
    const torch::Tensor t = a.tensor(name);
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    return {fmt::format("{} [{}]", c10::getDtypeNames(t.scalar_type()).first,
                        fmt::join(t.sizes(), ", ")),
            bytes};
  } catch (const CheckpointError&) {
  }
  try {
    return {fmt::format("int {}", a.integer(name)), 0};
  } catch (const CheckpointError&) {
  }
  try {
    return {fmt::format("float {}", a.real(name)), 0};
  } catch (const CheckpointError&) {
  }
  try {
    std::string s = a.string(name);
    if (s.size() > 60) s = s.substr(0, 57) + "...";
    return {fmt::format("str \"{}\"", s), 0};
  } catch (const CheckpointError&) {
  }
  return {"(unknown)", 0};
}

}  // namespace

int run_checkpoint_inspect(const CheckpointInspectArgs& args) {
  const std::string dir = checkpoints_dir(args.path);
  const std::vector<int64_t> steps = CheckpointStore(dir, 0, 1).steps_on_disk();
  const int64_t step = args.step >= 0 ? args.step : steps.back();
  if (std::find(steps.begin(), steps.end(), step) == steps.end()) {
    throw UsageError(
        fmt::format("{} has no step {} (steps on disk: {})", dir, step, fmt::join(steps, ", ")));
  }
  const std::string step_dir = CheckpointStore(dir, 0, 1).step_dir(step);
  const int64_t world = world_of(step_dir);
  fmt::print("checkpoints  {}  (steps on disk: {})\n", dir, fmt::join(steps, ", "));
  if (world < 1) {
    throw CheckpointError(
        fmt::format("{}: no readable manifest: the checkpoint is incomplete", step_dir));
  }
  if (args.rank < 0 || args.rank >= world) {
    throw UsageError(
        fmt::format("--rank {} is not a rank of this checkpoint's world of {}", args.rank, world));
  }

  // Every rank: the manifest's record and the verification --resume applies.
  std::string first_failure;
  std::optional<Archive> shown;
  std::vector<std::string> lines;
  for (int64_t r = 0; r < world; ++r) {
    const CheckpointStore store(dir, r, world);
    // The first warning is this step's ("skipping checkpoint DIR: why"); older steps follow.
    std::string why;
    const std::string prefix = fmt::format("skipping checkpoint {}: ", step_dir);
    auto loaded = store.load_latest(
        [&](const std::string& w) {
          if (why.empty()) why = w.starts_with(prefix) ? w.substr(prefix.size()) : w;
        },
        step);
    const bool ok = loaded && loaded->step == step;
    if (!ok && why.empty()) why = "no files of this rank";
    if (!ok && first_failure.empty()) first_failure = fmt::format("rank {}: {}", r, why);
    std::string record = "no manifest";
    const auto m = nlohmann::json::parse(
        fs::exists(store.manifest_path(step)) ? read_file(store.manifest_path(step)) : "", nullptr,
        false);
    if (m.is_object() && m.contains("bytes") && m.contains("crc32")) {
      record = fmt::format("{:>12} bytes  crc32 {:08x}", m["bytes"].dump(),
                           m["crc32"].is_number_unsigned() ? m["crc32"].get<uint32_t>() : 0u);
    }
    lines.push_back(fmt::format("  rank {:<3} {}  {}", r, record, ok ? "ok" : "FAILED: " + why));
    if (ok && r == args.rank) shown = std::move(loaded->archive);
  }
  std::string algorithm = "?";
  if (shown && shown->has("meta.algorithm")) algorithm = shown->string("meta.algorithm");
  fmt::print("step {} · world {} · algorithm {}\n", step, world, algorithm);
  for (const std::string& line : lines) fmt::print("{}\n", line);

  if (shown) {
    std::vector<std::string> names = shown->names();
    std::sort(names.begin(), names.end());
    std::map<std::string, std::pair<int64_t, int64_t>> components;  // entries, bytes
    size_t width = 0;
    for (const std::string& n : names) width = std::max(width, n.size());
    fmt::print("rank {}: {} entries\n", args.rank, names.size());
    for (const std::string& n : names) {
      const auto [what, bytes] = describe(*shown, n);
      auto& c = components[n.substr(0, n.find('.'))];
      c.first += 1;
      c.second += bytes;
      fmt::print("  {:<{}}  {}{}\n", n, width, what,
                 bytes > 0 ? fmt::format("  {}", human_bytes(static_cast<double>(bytes))) : "");
    }
    fmt::print("rank {} by component:", args.rank);
    for (const auto& [name, c] : components) {
      fmt::print("  {} {} ({})", name, human_bytes(static_cast<double>(c.second)), c.first);
    }
    fmt::print("\n");
  }
  if (!first_failure.empty()) {
    throw CheckpointError(
        fmt::format("step {} of {} fails verification: {}", step, dir, first_failure));
  }
  fmt::print("verified: step {} is complete and intact on all {} ranks\n", step, world);
  return 0;
}

}  // namespace desync
