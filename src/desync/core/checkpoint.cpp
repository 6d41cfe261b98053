#include "desync/core/checkpoint.h"

#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "desync/core/error.h"
#include "desync/core/fs.h"

namespace desync {

namespace fs = std::filesystem;

CheckpointStore::CheckpointStore(std::string dir, int64_t rank, int64_t world_size)
    : dir_(std::move(dir)), rank_(rank), world_(world_size) {}

std::string CheckpointStore::step_dir(int64_t step) const {
  return fmt::format("{}/step-{:08d}", dir_, step);
}
std::string CheckpointStore::archive_path(int64_t step) const { return archive_path(step, rank_); }
std::string CheckpointStore::manifest_path(int64_t step) const {
  return manifest_path(step, rank_);
}
std::string CheckpointStore::archive_path(int64_t step, int64_t rank) const {
  return fmt::format("{}/rank{}.pt", step_dir(step), rank);
}
std::string CheckpointStore::manifest_path(int64_t step, int64_t rank) const {
  return fmt::format("{}/rank{}.manifest.json", step_dir(step), rank);
}

void CheckpointStore::write(int64_t step, const Archive& archive, int64_t keep) {
  try {
    make_dirs(step_dir(step));
    std::string bytes = archive.serialize();
    write_file_atomic(archive_path(step), bytes);
    nlohmann::json manifest = {{"step", step},          {"rank", rank_},
                               {"world_size", world_},  {"file", fmt::format("rank{}.pt", rank_)},
                               {"bytes", bytes.size()}, {"crc32", crc32_of(bytes)},
                               {"complete", true}};
    write_file_atomic(manifest_path(step), manifest.dump(2) + "\n");
  } catch (const CheckpointError&) {
    throw;
  } catch (const Error& e) {
    throw CheckpointError(fmt::format("checkpoint at step {} failed: {}", step, e.what()));
  }
  // Prune: keep the newest `keep` complete checkpoints of this rank; never the one just written.
  std::vector<int64_t> complete;
  for (int64_t s : steps_on_disk())
    if (fs::exists(manifest_path(s))) complete.push_back(s);
  std::error_code ec;
  for (size_t i = 0; i + keep < complete.size(); ++i) {
    if (complete[i] == step) continue;
    fs::remove(manifest_path(complete[i]), ec);  // incomplete first, then the data
    fs::remove(archive_path(complete[i]), ec);
    fs::remove(step_dir(complete[i]), ec);  // succeeds once every rank removed its files
  }
}

std::vector<int64_t> CheckpointStore::steps_on_disk() const {
  std::vector<int64_t> steps;
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return steps;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    std::string name = entry.path().filename().string();
    if (name.size() != 13 || name.rfind("step-", 0) != 0) continue;
    try {
      steps.push_back(std::stoll(name.substr(5)));
    } catch (...) {
    }
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

std::optional<Archive> CheckpointStore::verify(int64_t step, int64_t rank, int64_t world,
                                               std::string* why) const {
  std::string manifest_text;
  try {
    manifest_text = read_file(manifest_path(step, rank));
  } catch (const Error&) {
    *why = "no manifest (the write did not finish)";
    return std::nullopt;
  }
  nlohmann::json m = nlohmann::json::parse(manifest_text, nullptr, false);
  if (m.is_discarded() || !m.contains("crc32") || !m.contains("bytes")) {
    *why = "manifest is damaged";
    return std::nullopt;
  }
  if (m.value("world_size", int64_t{-1}) != world) {
    *why = fmt::format("written by a run with {} workers, this run has {}",
                       m.value("world_size", int64_t{-1}), world);
    return std::nullopt;
  }
  std::string bytes;
  try {
    bytes = read_file(archive_path(step, rank));
  } catch (const Error&) {
    *why = "archive is missing";
    return std::nullopt;
  }
  if (bytes.size() != m["bytes"].get<size_t>()) {
    *why = fmt::format("archive is truncated ({} of {} bytes)", bytes.size(),
                       m["bytes"].get<size_t>());
    return std::nullopt;
  }
  if (crc32_of(bytes) != m["crc32"].get<uint32_t>()) {
    *why = "archive checksum does not match its manifest";
    return std::nullopt;
  }
  try {
    return Archive::deserialize(bytes, archive_path(step, rank));
  } catch (const CheckpointError& e) {
    *why = e.what();
    return std::nullopt;
  }
}

std::optional<CheckpointStore::Loaded> CheckpointStore::load_latest(
    const std::function<void(const std::string&)>& warn, int64_t max_step) const {
  std::vector<int64_t> steps = steps_on_disk();
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    if (*it > max_step) continue;
    std::string why;
    if (std::optional<Archive> a = verify(*it, rank_, world_, &why))
      return Loaded{*it, std::move(*a)};
    if (warn) warn(fmt::format("skipping checkpoint {}: {}", step_dir(*it), why));
  }
  return std::nullopt;
}

std::optional<int64_t> CheckpointStore::manifest_world(int64_t step, int64_t rank) const {
  std::error_code ec;
  if (!fs::exists(manifest_path(step, rank), ec)) return std::nullopt;
  try {
    nlohmann::json m = nlohmann::json::parse(read_file(manifest_path(step, rank)), nullptr, false);
    if (m.is_object() && m.contains("world_size") && m["world_size"].is_number_integer())
      return m["world_size"].get<int64_t>();
  } catch (const Error&) {
  }
  return std::nullopt;
}

std::optional<std::vector<Archive>> CheckpointStore::load_world(int64_t step, int64_t world,
                                                                std::string* why) const {
  std::vector<Archive> archives;
  for (int64_t r = 0; r < world; ++r) {
    std::string reason;
    std::optional<Archive> a = verify(step, r, world, &reason);
    if (!a) {
      *why = fmt::format("rank {} of the {}-worker run that wrote it: {}", r, world, reason);
      return std::nullopt;
    }
    archives.push_back(std::move(*a));
  }
  return archives;
}

std::optional<CheckpointStore::Resumable> CheckpointStore::load_resumable(
    const std::function<void(const std::string&)>& warn, int64_t max_step) const {
  std::vector<int64_t> steps = steps_on_disk();
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    if (*it > max_step) continue;
    // The world that wrote this step: this rank's manifest says, or else rank 0's.
    std::optional<int64_t> world = manifest_world(*it, rank_);
    if (!world) world = manifest_world(*it, 0);
    std::string why;
    if (!world || *world == world_) {  // this run's own world: only this rank's file is needed
      if (std::optional<Archive> a = verify(*it, rank_, world_, &why))
        return Resumable{*it, world_, {std::move(*a)}};
    } else if (*world < 1) {
      why = fmt::format("its manifest names {} workers", *world);
    } else if (std::optional<std::vector<Archive>> all = load_world(*it, *world, &why)) {
      return Resumable{*it, *world, std::move(*all)};
    }
    if (warn) warn(fmt::format("skipping checkpoint {}: {}", step_dir(*it), why));
  }
  return std::nullopt;
}

void CheckpointStore::remove_other_worlds(int64_t kept) const {
  std::error_code ec;
  for (int64_t s : steps_on_disk()) {
    bool other = false, ours = false;
    for (const auto& entry : fs::directory_iterator(step_dir(s), ec)) {
      const std::string name = entry.path().filename().string();
      long rank = -1;
      if (std::sscanf(name.c_str(), "rank%ld.", &rank) != 1) continue;
      if (s == kept && rank >= world_) fs::remove(entry.path(), ec);
      if (name.find(".manifest.json") == std::string::npos) continue;
      std::optional<int64_t> world = manifest_world(s, rank);
      (world && *world == world_ ? ours : other) = true;
    }
    if (s != kept && other && !ours) fs::remove_all(step_dir(s), ec);
  }
}

}  // namespace desync
