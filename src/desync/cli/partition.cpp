// `desync partition`: the clients of a federated config, one row per client.
#include "desync/data/partition.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

#include "desync/algorithms/federated/federated.h"
#include "desync/algorithms/registry.h"
#include "desync/cli/commands.h"
#include "desync/core/config.h"
#include "desync/core/error.h"
#include "desync/data/dataset.h"

namespace desync {

int run_partition(const PartitionArgs& args) {
  const Config cfg = load_config(args.config, args.overrides);
  std::unique_ptr<Algorithm> algorithm = make_algorithm(cfg.algorithm);
  const auto* federated = dynamic_cast<const Federated*>(algorithm.get());
  if (federated == nullptr)
    throw ConfigError(
        fmt::format("desync partition needs a federated algorithm (fedavg, fedlp, "
                    "fedncm), not '{}'",
                    cfg.algorithm.name));
  const DatasetSplits data = load_dataset(cfg.data, static_cast<uint64_t>(cfg.run.seed));
  if (!data.train.targets.defined())
    throw ConfigError("desync partition needs a labelled dataset, not '" + cfg.data.dataset + "'");
  const PartitionOptions& o = federated->options().partition;
  const ClientPartition p = make_partition(data.train.targets, data.train.num_classes, o,
                                           static_cast<uint64_t>(cfg.run.seed));
  std::printf("%s", format_partition(p, data.train.targets, data.train.num_classes).c_str());
  int64_t lo = INT64_MAX, hi = 0, assigned = 0;
  for (const auto& c : p.indices) {
    lo = std::min<int64_t>(lo, static_cast<int64_t>(c.size()));
    hi = std::max<int64_t>(hi, static_cast<int64_t>(c.size()));
    assigned += static_cast<int64_t>(c.size());
  }
  std::printf(
      "%s: %lld training and %lld held-out clients over %lld of %lld examples; "
      "%lld to %lld examples per client\n",
      o.kind == "dirichlet" ? fmt::format("dirichlet ({}, alpha {})", o.mode, o.alpha).c_str()
                            : o.kind.c_str(),
      static_cast<long long>(p.train_ids.size()), static_cast<long long>(p.heldout_ids.size()),
      static_cast<long long>(assigned), static_cast<long long>(data.train.size()),
      static_cast<long long>(lo), static_cast<long long>(hi));
  return 0;
}

}  // namespace desync
