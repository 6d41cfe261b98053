#include "desync/algorithms/registry.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>

#include "desync/core/error.h"

namespace desync {

// Factories, one per algorithm file.
std::unique_ptr<Algorithm> make_single(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_sgns(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_ppmi_svd(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_ddp(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_zero1(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_dpu(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_acco(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_cdp(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_cdp_zero(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_cdp_mp(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_sdp(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_diloco(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_dpsgd(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_adpsgd(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_gasloc(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_wash(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_papa(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_ensemble(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_pipeline(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_pipedream(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_dsp(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_petra(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_dgl(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_forward_gradient(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_contrastive_local(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_fedavg(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_fedlp(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_fedncm(const AlgorithmConfig& cfg);

const std::vector<AlgorithmInfo>& algorithm_registry() {
  static const std::vector<AlgorithmInfo> kRegistry = {
      {"single", "reference",
       "plain backprop on one worker, with micro-batch gradient accumulation", make_single},
      {"ddp", "dataparallel",
       "synchronous data parallel: bucketed all-reduce overlapped with backward", make_ddp},
      {"zero1", "dataparallel",
       "ZeRO-1: optimizer state sharded; reduce-scatter, shard update, all-gather", make_zero1},
      {"dpu", "dataparallel",
       "delayed parameter update: step t's update overlaps step t+1's gradients, after "
       "n_warmup = 50 ordinary steps",
       make_dpu},
      {"acco", "dataparallel",
       "ACCO: estimate/real rounds hide sharded communication behind accumulation", make_acco},
      {"cdp", "dataparallel",
       "cyclic data parallelism: staggered workers, per-stage reductions spread over the step "
       "(rule = dp | cdp1 | cdp2)",
       make_cdp},
      {"cdp_zero", "dataparallel",
       "cyclic data parallelism, ZeRO variant: stage gradients and parameters travel a ring of "
       "workers by send/recv, the last worker owns the optimizer; no collective",
       make_cdp_zero},
      {"cdp_mp", "dataparallel",
       "cyclic data parallelism, model-parallel: S ranks, one cyclic stage each, serve N "
       "staggered micro-batch streams; point-to-point only",
       make_cdp_mp},
      {"sdp", "dataparallel",
       "subnetwork data parallelism: each worker trains a subnetwork (blocks or hidden units) "
       "and each parameter's gradient is averaged over its holders",
       make_sdp},
      {"diloco", "decentralized",
       "DiLoCo: H local inner steps, then an outer Nesterov step on the averaged pseudo-gradient",
       make_diloco},
      {"dpsgd", "decentralized",
       "D-PSGD: every step, mix parameters with graph neighbours and apply the local gradient",
       make_dpsgd},
      {"adpsgd", "decentralized",
       "AD-PSGD: asynchronous pairwise averaging with a random neighbour, no global barrier",
       make_adpsgd},
      {"gasloc", "decentralized",
       "GASLoC: local steps, gossip of proposals with random peers, outer momentum", make_gasloc},
      {"wash", "population",
       "WASH: a population of models, one per worker; a few coordinates permuted across them "
       "every step (early layers most); the members' average is the model",
       make_wash},
      {"papa", "population",
       "PAPA: a population pulled towards its mean (gradual EMA, all, or pairs); the members' "
       "average is the model",
       make_papa},
      {"ensemble", "population",
       "independent members, no communication; evaluated as an ensemble and as their average",
       make_ensemble},
      {"pipeline", "pipeline",
       "exact backprop over a pipeline of ranks, GPipe or 1F1B schedule, flush every step",
       make_pipeline},
      {"pipedream", "pipeline",
       "delayed-gradient pipeline with weight stashing: no flush, update every k backwards",
       make_pipedream},
      {"dsp", "pipeline",
       "delayed-gradient pipeline with input buffers and current weights (no stash)", make_dsp},
      {"petra", "pipeline",
       "PETRA: reversible stages (RevNets; not gpt) rebuild their inputs; one weight version",
       make_petra},
      {"dgl", "local",
       "decoupled greedy learning: K blocks, each trained by its own auxiliary head's loss, as "
       "a forward-only pipeline (activations and labels go forward, nothing comes back)",
       make_dgl},
      {"forward_gradient", "local",
       "forward gradient: each block's gradient estimated from one directional derivative (a "
       "forward-mode JVP) along a guess, local or random; data parallel",
       make_forward_gradient},
      {"contrastive_local", "local",
       "contrastive local learning: K blocks, each trained by NT-Xent on two augmented views "
       "through its own projection head (optional similarity subsampling, ours); erank and "
       "linear-probe accuracy per block",
       make_contrastive_local},
      {"fedavg", "federated",
       "federated rounds over many simulated clients: FedAvg, FedAvgM, FedAdam, FedYogi, "
       "FedAdagrad server optimizers, FedProx, gradient masked averaging (aggregation = gma)",
       make_fedavg},
      {"fedlp", "federated",
       "federated linear probing: the backbone frozen, only the last layer trained by rounds",
       make_fedlp},
      {"fedncm", "federated",
       "FedNCM: the last layer set exactly in one round from federated class means, then "
       "federated fine-tuning of the whole model (FedNCM+FT)",
       make_fedncm},
      {"sgns", "embedding",
       "skip-gram with negative sampling (word2vec) on a words corpus: local averaging, dense "
       "DDP or sparse row exchange (sgns_mode)",
       make_sgns},
      {"ppmi_svd", "embedding",
       "PPMI-SVD word vectors: co-occurrences counted on each rank's shard and merged, one "
       "randomized SVD on rank 0, broadcast",
       make_ppmi_svd},
  };
  return kRegistry;
}

namespace {

// Set while a factory runs to learn its keys: algorithm_options() readers record into it.
thread_local std::vector<std::string>* key_sink = nullptr;

const AlgorithmInfo* find_algorithm(const std::string& name) {
  for (const AlgorithmInfo& info : algorithm_registry())
    if (info.name == name) return &info;
  return nullptr;
}

std::string registered_names() {
  std::vector<std::string> names;
  for (const AlgorithmInfo& info : algorithm_registry()) names.push_back(info.name);
  return fmt::format("{}", fmt::join(names, ", "));
}

bool knows(const std::string& algorithm, const std::string& key) {
  const std::vector<std::string>& keys = algorithm_keys(algorithm);
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

// Rejects a key of cfg's options that cfg's algorithm does not read but others do, naming them.
// Keys no algorithm reads are left to the factory's finish() ("unknown key ...; valid keys").
void check_foreign_keys(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_reader(cfg);
  for (const SectionReader::Entry& e : r.entries()) {
    if (e.key == "name" || e.key == "accumulation" || knows(cfg.name, e.key)) continue;
    std::vector<std::string> owners, tables;
    for (const AlgorithmInfo& info : algorithm_registry()) {
      if (!knows(info.name, e.key)) continue;
      owners.push_back(info.name);
      tables.push_back("[algorithm." + info.name + "]");
    }
    if (owners.empty()) continue;
    throw ConfigError(fmt::format("{}: {}.{} is an option of {}, not of {}; put it under {}",
                                  r.where(e.key.c_str()), e.section, e.key, fmt::join(owners, ", "),
                                  cfg.name, fmt::join(tables, " or ")));
  }
}

}  // namespace

const std::vector<std::string>& algorithm_keys(const std::string& name) {
  // Learned once by running each factory on no options.
  static const std::map<std::string, std::vector<std::string>> kKeys = [] {
    std::map<std::string, std::vector<std::string>> out;
    for (const AlgorithmInfo& info : algorithm_registry()) {
      AlgorithmConfig probe;
      probe.name = info.name;
      probe.selected = false;
      std::vector<std::string> keys;
      key_sink = &keys;
      try {
        info.make(probe);
      } catch (...) {
        key_sink = nullptr;
        throw;
      }
      key_sink = nullptr;
      keys.erase(
          std::remove_if(keys.begin(), keys.end(),
                         [](const std::string& k) { return k == "name" || k == "accumulation"; }),
          keys.end());
      out[info.name] = std::move(keys);
    }
    return out;
  }();
  static const std::vector<std::string> kNone;
  auto it = kKeys.find(name);
  return it == kKeys.end() ? kNone : it->second;
}

namespace {

// Validates every table of [algorithm] and returns the selected algorithm, built.
std::unique_ptr<Algorithm> validate_and_make(const AlgorithmConfig& cfg) {
  const AlgorithmInfo* selected = find_algorithm(cfg.name);
  if (!selected) {
    SectionReader r(cfg.section(), "algorithm", cfg.file);
    throw ConfigError(fmt::format("{}: algorithm.name = \"{}\" is not one of: {}", r.where("name"),
                                  cfg.name, registered_names()));
  }
  const std::vector<std::string> tables = cfg.table_names();
  for (const std::string& t : tables) {
    if (find_algorithm(t)) continue;
    SectionReader r(cfg.section(), "algorithm", cfg.file);
    throw ConfigError(fmt::format(
        "{}: [algorithm.{}] is not an algorithm; tables of [algorithm] are named by one of: {}",
        r.where(t.c_str()), t, registered_names()));
  }
  // The selected algorithm first: its errors matter most to this run.
  check_foreign_keys(cfg);
  std::unique_ptr<Algorithm> algorithm = selected->make(cfg);
  for (const std::string& t : tables) {
    if (t == cfg.name) continue;
    AlgorithmConfig other = cfg.for_table(t);
    check_foreign_keys(other);
    find_algorithm(t)->make(other);
  }
  return algorithm;
}

}  // namespace

void validate_algorithms(const AlgorithmConfig& cfg) { validate_and_make(cfg); }

std::unique_ptr<Algorithm> make_algorithm(const AlgorithmConfig& cfg) {
  return validate_and_make(cfg);
}

SectionReader algorithm_options(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_reader(cfg);
  if (cfg.selected) r.get("name", cfg.name);  // a table takes no name (core/config.cpp)
  r.get("accumulation", cfg.accumulation);
  if (key_sink) r.record_keys(key_sink);
  return r;
}

std::optional<torch::ScalarType> comm_dtype_option(SectionReader& r, const char* key) {
  std::string v = r.get_choice(key, "full", {"full", "float32", "bfloat16", "float16"});
  if (v == "bfloat16") return torch::kBFloat16;
  if (v == "float16") return torch::kHalf;
  if (v == "float32") return torch::kFloat32;
  return std::nullopt;
}

}  // namespace desync
