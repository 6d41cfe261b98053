#include "desync/algorithms/registry.h"

#include <fmt/format.h>

#include "desync/core/error.h"

namespace desync {

// Factories, one per algorithm file.
std::unique_ptr<Algorithm> make_single(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_ddp(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_zero1(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_dpu(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_acco(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_diloco(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_dpsgd(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_adpsgd(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_gasloc(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_pipeline(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_pipedream(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_dsp(const AlgorithmConfig& cfg);
std::unique_ptr<Algorithm> make_petra(const AlgorithmConfig& cfg);

const std::vector<AlgorithmInfo>& algorithm_registry() {
  static const std::vector<AlgorithmInfo> kRegistry = {
      {"single", "reference",
       "plain backprop on one worker, with micro-batch gradient accumulation", make_single},
      {"ddp", "dataparallel",
       "synchronous data parallel: bucketed all-reduce overlapped with backward", make_ddp},
      {"zero1", "dataparallel",
       "ZeRO-1: optimizer state sharded; reduce-scatter, shard update, all-gather", make_zero1},
      {"dpu", "dataparallel",
       "delayed parameter update: step t's update overlaps step t+1's gradients", make_dpu},
      {"acco", "dataparallel",
       "ACCO: estimate/real rounds hide sharded communication behind accumulation", make_acco},
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
      {"pipeline", "pipeline",
       "exact backprop over a pipeline of ranks, GPipe or 1F1B schedule, flush every step",
       make_pipeline},
      {"pipedream", "pipeline",
       "delayed-gradient pipeline with weight stashing: no flush, update every k backwards",
       make_pipedream},
      {"dsp", "pipeline",
       "delayed-gradient pipeline with input buffers and current weights (no stash)", make_dsp},
      {"petra", "pipeline",
       "PETRA: reversible stages rebuild their inputs; one weight version, no activation buffer",
       make_petra},
  };
  return kRegistry;
}

std::unique_ptr<Algorithm> make_algorithm(const AlgorithmConfig& cfg) {
  std::vector<std::string> names;
  for (const AlgorithmInfo& info : algorithm_registry()) {
    if (info.name == cfg.name) return info.make(cfg);
    names.push_back(info.name);
  }
  SectionReader r(cfg.section(), "algorithm", cfg.file);
  throw ConfigError(fmt::format("{}: algorithm.name = \"{}\" is not one of: {}", r.where("name"),
                                cfg.name, fmt::join(names, ", ")));
}

SectionReader algorithm_options(const AlgorithmConfig& cfg) {
  SectionReader r(cfg.section(), "algorithm", cfg.file);
  r.get("name", cfg.name);
  r.get("accumulation", cfg.accumulation);
  return r;
}

torch::ScalarType comm_dtype_option(SectionReader& r, const char* key) {
  std::string v = r.get_choice(key, "float32", {"float32", "bfloat16", "float16"});
  if (v == "bfloat16") return torch::kBFloat16;
  if (v == "float16") return torch::kHalf;
  return torch::kFloat32;
}

}  // namespace desync
