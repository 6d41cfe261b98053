// load_dataset(): maps DataConfig to a reader, checks the data directory, applies the limits.
#include "desync/data/dataset.h"

#include <filesystem>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "desync/data/token_cache.h"
#include "desync/data/word_dataset.h"

namespace desync {
namespace {

constexpr const char* kDatasetRoot = "/usr/share/datasets";
constexpr const char* kChoices = "fashion-mnist, mnist, cifar10, text, gcide, words, synthetic";

// The first `limit` examples of `d` (all of them if limit is 0 or not smaller than the size).
// Copies, so that the rest of the split is freed.
void apply_limit(Dataset& d, int64_t limit) {
  if (limit <= 0 || limit >= d.size()) return;
  d.inputs = d.inputs.narrow(0, 0, limit).clone();
  if (d.targets.defined()) d.targets = d.targets.narrow(0, 0, limit).clone();
}

// Keeps the examples of `classes` (relabelled by their position in the list).
void select_classes(Dataset& d, const std::vector<int64_t>& classes) {
  torch::Tensor relabel = torch::full({d.num_classes}, -1, torch::kLong);
  for (size_t i = 0; i < classes.size(); ++i) relabel[classes[i]] = static_cast<int64_t>(i);
  torch::Tensor label = relabel.index_select(0, d.targets);
  torch::Tensor keep = (label >= 0).nonzero().squeeze(1);
  d.inputs = d.inputs.index_select(0, keep);
  d.targets = label.index_select(0, keep);
  d.num_classes = static_cast<int64_t>(classes.size());
}

void check_classes(const DataConfig& cfg, const DatasetSplits& s) {
  if (cfg.classes.empty()) return;
  if (!s.train.targets.defined())
    throw ConfigError("data.classes needs a labelled dataset; '" + cfg.dataset + "' has none");
  std::vector<bool> seen(static_cast<size_t>(s.train.num_classes), false);
  for (int64_t c : cfg.classes) {
    if (c >= s.train.num_classes)
      throw ConfigError("data.classes: class " + std::to_string(c) + " is not one of the " +
                        std::to_string(s.train.num_classes) + " classes of '" + cfg.dataset + "'");
    if (seen[static_cast<size_t>(c)])
      throw ConfigError("data.classes lists class " + std::to_string(c) + " twice");
    seen[static_cast<size_t>(c)] = true;
  }
}

// x -> 255 - x for uint8 images; the normalisation statistics follow.
void invert_images(Dataset& d) {
  d.inputs = 255 - d.inputs;
  for (double& m : d.mean) m = 1.0 - m;
}

void require_directory(const std::string& dir, const std::string& dataset) {
  if (std::filesystem::is_directory(dir)) return;
  std::string msg = "data directory " + dir + " for dataset '" + dataset + "' does not exist";
  if (dataset == "fashion-mnist") {
    msg += "; `apt-get install dataset-fashion-mnist` (or scripts/install-deps) provides it";
  } else if (dataset == "gcide") {
    msg += "; `apt-get install dict-gcide` (or scripts/install-deps) provides it";
  } else {
    msg += "; set data.path to the directory that holds the files";
  }
  throw DataError(msg);
}

}  // namespace

std::vector<int64_t> Dataset::example_shape() const {
  if (!inputs.defined()) return {};
  std::vector<int64_t> shape(inputs.sizes().begin() + 1, inputs.sizes().end());
  if (kind == DataKind::kText && !shape.empty()) shape.back() -= 1;  // window = seq_len + 1
  return shape;
}

std::string default_data_path(const std::string& dataset) {
  if (dataset == "fashion-mnist" || dataset == "mnist" || dataset == "cifar10") {
    return std::string(kDatasetRoot) + "/" + dataset;
  }
  if (dataset == "gcide") return "/usr/share/dictd";  // Debian's dict-gcide
  return "";  // text needs an explicit path; synthetic reads no files
}

DatasetSplits load_dataset(const DataConfig& cfg, uint64_t seed) {
  const std::string& name = cfg.dataset;
  const std::string path = cfg.path.empty() ? default_data_path(name) : cfg.path;
  DatasetSplits s;
  if (name == "fashion-mnist" || name == "mnist") {
    require_directory(path, name);
    s = load_idx(path, name);
  } else if (name == "cifar10") {
    require_directory(path, name);
    s = load_cifar10(path);
  } else if (name == "gcide") {
    require_directory(path, name);
    s = load_token_dataset(cfg);
  } else if (name == "text") {
    s = load_token_dataset(cfg);
  } else if (name == "words") {
    if (!cfg.classes.empty() || cfg.invert)
      throw ConfigError("data.classes and data.invert do not apply to data.dataset = \"words\"");
    return load_word_dataset(cfg);  // applies its own limits (sentences, test examples)
  } else if (name == "synthetic") {
    s = make_synthetic(cfg.synthetic_train, cfg.synthetic_test, cfg.synthetic_classes,
                       cfg.synthetic_shape, seed);
  } else {
    throw ConfigError("unknown data.dataset '" + name + "'; choose one of: " + kChoices);
  }
  check_classes(cfg, s);
  if (!cfg.classes.empty()) {
    select_classes(s.train, cfg.classes);
    select_classes(s.test, cfg.classes);
  }
  if (cfg.invert) {
    if (s.train.kind != DataKind::kImage)
      throw ConfigError("data.invert needs an image dataset; '" + name + "' is not one");
    invert_images(s.train);
    invert_images(s.test);
  }
  apply_limit(s.train, cfg.train_limit);
  apply_limit(s.test, cfg.test_limit);
  return s;
}

}  // namespace desync
