#include "desync/core/checkpoint.h"

#include <fmt/format.h>

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
std::string CheckpointStore::archive_path(int64_t step) const {
  return fmt::format("{}/rank{}.pt", step_dir(step), rank_);
}
std::string CheckpointStore::manifest_path(int64_t step) const {
  return fmt::format("{}/rank{}.manifest.json", step_dir(step), rank_);
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

std::optional<Archive> CheckpointStore::verify(int64_t step, std::string* why) const {
  std::string manifest_text;
  try {
    manifest_text = read_file(manifest_path(step));
  } catch (const Error&) {
    *why = "no manifest (the write did not finish)";
    return std::nullopt;
  }
  nlohmann::json m = nlohmann::json::parse(manifest_text, nullptr, false);
  if (m.is_discarded() || !m.contains("crc32") || !m.contains("bytes")) {
    *why = "manifest is damaged";
    return std::nullopt;
  }
  if (m.value("world_size", int64_t{-1}) != world_) {
    *why = fmt::format("written by a run with {} workers, this run has {}",
                       m.value("world_size", int64_t{-1}), world_);
    return std::nullopt;
  }
  std::string bytes;
  try {
    bytes = read_file(archive_path(step));
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
    return Archive::deserialize(bytes, archive_path(step));
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
    if (std::optional<Archive> a = verify(*it, &why)) return Loaded{*it, std::move(*a)};
    if (warn) warn(fmt::format("skipping checkpoint {}: {}", step_dir(*it), why));
  }
  return std::nullopt;
}

}  // namespace desync
