// `desync meta-train` and its hidden worker, `desync meta-worker` (meta/meta_train.h).
#include "desync/meta/meta_train.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "desync/cli/commands.h"
#include "desync/comm/communicator.h"
#include "desync/comm/gloo_communicator.h"
#include "desync/comm/launcher.h"
#include "desync/core/error.h"
#include "desync/core/fs.h"
#include "desync/core/system.h"
#include "desync/meta/tasks.h"
#include "desync/train/trainer.h"

namespace desync {
namespace {

std::vector<std::string> overrides_of(const MetaTrainArgs& args) {
  std::vector<std::string> o = args.overrides;
  if (!args.out.empty()) o.push_back("run.out=\"" + args.out + "\"");
  return o;
}

Config load_meta_config(const MetaTrainArgs& args, const std::vector<std::string>& overrides) {
  Config cfg = load_config(args.config, overrides);
  validate_meta_task(cfg);
  return cfg;
}

void print_result(const nlohmann::json& s) {
  std::string theta;
  if (s.contains("theta"))
    theta = fmt::format("  theta {}  (optimum {:.6g})", s["theta"].dump(),
                        s["theta_optimum"].get<double>());
  const std::string loss = s["mean_loss_last10"].is_number()
                               ? fmt::format("{:.6g}", s["mean_loss_last10"].get<double>())
                               : "-";
  std::printf("meta-train %s: %lld outer steps on %lld worker(s) in %.1f s  mean loss %s%s\n  %s\n",
              s["task"].get<std::string>().c_str(),
              static_cast<long long>(s["steps"].get<int64_t>()),
              static_cast<long long>(s["workers"].get<int64_t>()), s["wall_seconds"].get<double>(),
              loss.c_str(), theta.c_str(), s["lopt"].get<std::string>().c_str());
  std::fflush(stdout);
}

int status_of(const nlohmann::json& s) { return s.value("interrupted", false) ? 130 : 0; }

}  // namespace

int run_meta_train(const MetaTrainArgs& args) {
  std::vector<std::string> overrides = overrides_of(args);
  const Config probe = load_meta_config(args, overrides);
  const int64_t workers = args.workers > 0 ? args.workers : probe.run.workers;
  install_interrupt_handlers();
  if (workers == 1) {
    SoloCommunicator comm;
    MetaTrainOptions opts;
    opts.resume = args.resume;
    opts.show_progress = !args.quiet;
    const nlohmann::json s = meta_train(probe, comm, opts);
    print_result(s);
    return status_of(s);
  }
  // Launcher: the workers get the same config and overrides, with the world size recorded.
  overrides.push_back(fmt::format("run.workers={}", workers));
  const Config cfg = load_meta_config(args, overrides);
  LaunchSpec spec;
  // The launcher execs in a child forked from this process, where /proc/self/exe is this binary.
  spec.worker_argv = {"/proc/self/exe", "meta-worker", args.config};
  for (const std::string& o : overrides) {
    spec.worker_argv.push_back("--set");
    spec.worker_argv.push_back(o);
  }
  if (args.resume) spec.worker_argv.push_back("--resume");
  if (args.quiet) spec.worker_argv.push_back("--quiet");
  spec.workers_per_node = workers;
  const int status = launch(spec);
  if (status == 0) {
    const nlohmann::json s =
        nlohmann::json::parse(read_file(run_dir_of(cfg) + "/summary.json"), nullptr, false);
    if (!s.is_discarded()) print_result(s);
  }
  return status;
}

int run_meta_worker(const MetaTrainArgs& args) {
  const Config cfg = load_meta_config(args, overrides_of(args));
  WorldInfo info = world_from_env();
  info.timeout_seconds = cfg.run.comm_timeout;
  install_interrupt_handlers();
  std::shared_ptr<Communicator> comm = connect_gloo(info);
  MetaTrainOptions opts;
  opts.resume = args.resume;
  opts.show_progress = info.rank == 0 && !args.quiet;
  opts.local_workers = info.local_world_size;
  const nlohmann::json s = meta_train(cfg, *comm, opts);
  if (info.rank == 0 && std::getenv("DESYNC_LAUNCHED") == nullptr) print_result(s);
  return status_of(s);
}

}  // namespace desync
