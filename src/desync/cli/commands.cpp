#include "desync/cli/commands.h"

#include <fmt/format.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "desync/algorithms/registry.h"
#include "desync/comm/communicator.h"
#include "desync/comm/gloo_communicator.h"
#include "desync/comm/launcher.h"
#include "desync/comm/nccl_communicator.h"
#include "desync/core/error.h"
#include "desync/core/fs.h"
#include "desync/core/system.h"
#include "desync/data/token_cache.h"
#include "desync/data/unigram.h"
#include "desync/report/compare.h"
#include "desync/report/summary.h"
#include "desync/train/trainer.h"

namespace desync {
namespace {

std::vector<std::string> overrides_of(const TrainArgs& args) {
  std::vector<std::string> o = args.overrides;
  if (!args.out.empty()) o.push_back("run.out=\"" + args.out + "\"");
  return o;
}

// Loads and fully validates the config (the algorithm's own keys included) before any work.
Config load_validated(const TrainArgs& args, const std::vector<std::string>& overrides) {
  Config cfg = load_config(args.config, overrides);
  make_algorithm(cfg.algorithm);
  return cfg;
}

int train_here(const Config& cfg, Communicator& comm, const TrainArgs& args, int64_t local_workers,
               bool print_summary) {
  TrainOptions opts;
  opts.resume = args.resume;
  opts.show_progress = !args.quiet;
  opts.local_workers = local_workers;
  Trainer trainer(cfg, comm, opts);
  nlohmann::json summary = trainer.run();
  if (print_summary) {
    std::fputs(summary_table(summary).c_str(), stdout);
    std::fflush(stdout);
  }
  return summary.value("interrupted", false) ? 130 : 0;
}

std::string self_executable() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) throw Error("cannot find the desync executable (/proc/self/exe)");
  return p.string();
}

}  // namespace

int run_train(const TrainArgs& args) {
  std::vector<std::string> overrides = overrides_of(args);
  Config probe = load_validated(args, overrides);
  int64_t per_node = args.workers > 0 ? args.workers : probe.run.workers;
  if (args.nnodes < 1 || args.node_rank < 0 || args.node_rank >= args.nnodes)
    throw UsageError(
        fmt::format("--node-rank {} must be in [0, --nnodes {})", args.node_rank, args.nnodes));
  const int64_t world = per_node * args.nnodes;

  install_interrupt_handlers();
  if (world == 1) {
    SoloCommunicator comm;
    return train_here(probe, comm, args, 1, true);
  }

  // Launcher: the workers get the same config and overrides, with the world size recorded.
  if (args.nnodes > 1 && (args.master_addr.empty() || args.master_port == 0))
    throw UsageError("a multi-node job needs --master-addr and --master-port on every node");
  overrides.push_back(fmt::format("run.workers={}", world));
  Config cfg = load_validated(args, overrides);
  validate_for_world(cfg, world);  // what the workers would refuse, refused before they start
  LaunchSpec spec;
  spec.worker_argv = {self_executable(), "worker", args.config};
  for (const std::string& o : overrides) {
    spec.worker_argv.push_back("--set");
    spec.worker_argv.push_back(o);
  }
  if (args.resume) spec.worker_argv.push_back("--resume");
  if (args.quiet) spec.worker_argv.push_back("--quiet");
  spec.nnodes = args.nnodes;
  spec.node_rank = args.node_rank;
  spec.workers_per_node = per_node;
  spec.master_addr = args.master_addr.empty() ? "127.0.0.1" : args.master_addr;
  spec.master_port = args.master_port;
  spec.job_token = args.job_token;
  if (spec.job_token.empty() && args.nnodes > 1) {
    // Every node must present the same token: derive it from what they share.
    spec.job_token =
        fmt::format("{:08x}", crc32_of(read_file(args.config) + cfg.resolved_toml() +
                                       spec.master_addr + std::to_string(spec.master_port)));
  }
  int status = launch(spec);
  if (status == 0 && args.node_rank == 0) {
    nlohmann::json summary =
        nlohmann::json::parse(read_file(run_dir_of(cfg) + "/summary.json"), nullptr, false);
    if (!summary.is_discarded()) std::fputs(summary_table(summary).c_str(), stdout);
  }
  return status;
}

int run_worker(const TrainArgs& args) {
  Config cfg = load_validated(args, overrides_of(args));
  WorldInfo info = world_from_env();
  info.timeout_seconds = cfg.run.comm_timeout;
  install_interrupt_handlers();
  std::shared_ptr<Communicator> comm =
      cfg.run.backend == "nccl" ? connect_nccl(info) : connect_gloo(info);
  bool launched = std::getenv("DESYNC_LAUNCHED") != nullptr;
  TrainArgs quiet_others = args;
  if (info.rank != 0) quiet_others.quiet = true;
  return train_here(cfg, *comm, quiet_others, info.local_world_size, info.rank == 0 && !launched);
}

int run_compare(const CompareArgs& args) {
  std::vector<RunData> runs;
  for (const std::string& dir : args.runs) runs.push_back(load_run(dir));
  double target = comparison_target(runs, args.target_accuracy >= 0 ? args.target_accuracy : NAN);
  std::string html = compare_html(runs, target);
  std::filesystem::path parent = std::filesystem::path(args.out).parent_path();
  if (!parent.empty()) make_dirs(parent.string());
  write_file_atomic(args.out, html);
  std::fputs(compare_table(runs, target).c_str(), stdout);
  std::fflush(stdout);
  for (const std::string& w : budget_warnings(runs)) std::fprintf(stderr, "%s\n", w.c_str());
  std::fprintf(stderr, "wrote %s\n", args.out.c_str());
  return 0;
}

int run_tokenize(const TokenizeArgs& args) {
  const Config cfg = load_config(args.config, args.overrides);
  const DataConfig& data = cfg.data;
  if (data.dataset != "text" && data.dataset != "gcide") {
    throw ConfigError(
        fmt::format("desync tokenize needs a text corpus (data.dataset = \"text\" "
                    "or \"gcide\"), not \"{}\"",
                    data.dataset));
  }
  const auto start = std::chrono::steady_clock::now();
  const TokenCacheInfo info = prepare_token_cache(data, [](const std::string& line) {
    std::fprintf(stderr, "%s\n", line.c_str());
    std::fflush(stderr);
  });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: %s, %s tokenizer, %lld pieces, in %.1f s\n", info.dir.c_str(),
              info.built ? "built" : "reused", data.tokenizer.c_str(),
              static_cast<long long>(info.vocab_size), seconds);
  const auto line = [](const char* name, int64_t docs, int64_t tokens, int64_t bytes) {
    std::printf("  %-5s %9lld documents %11lld tokens %12lld bytes %6.3f bytes/token\n", name,
                static_cast<long long>(docs), static_cast<long long>(tokens),
                static_cast<long long>(bytes),
                tokens > 0 ? static_cast<double>(bytes) / static_cast<double>(tokens) : 0.0);
  };
  line("train", info.train_documents, info.train_tokens, info.train_bytes);
  line("test", info.test_documents, info.test_tokens, info.test_bytes);
  // What a model must beat to have learned anything beyond token frequencies.
  std::printf("  unigram baseline: %.4f bits/byte on the test split\n",
              unigram_bits_per_byte(info));
  return 0;
}

int run_list() {
  std::puts("algorithms:");
  for (const AlgorithmInfo& a : algorithm_registry())
    std::printf("  %-12s %-12s %s\n", a.name.c_str(), a.family.c_str(), a.summary.c_str());
  std::puts("models:");
  std::puts("  mlp          fully connected layers with ReLU (model.hidden)");
  std::puts("  cnn          conv3x3 + BatchNorm + ReLU + max-pool blocks, then two linear layers");
  std::puts("  resnet18     ResNet-18 with the CIFAR stem (3x3 conv, no max-pool)");
  std::puts("  revnet18     RevNet-18: reversible blocks, one stage per block (PETRA layout)");
  std::puts("  revnet34     RevNet-34: reversible blocks [3, 4, 6, 3], one stage per block");
  std::puts("  revnet       RevNet of model.blocks per group, model.width; one stage per block");
  std::puts("  gpt          decoder-only transformer language model; one stage per block");
  std::puts(
      "  sgns         word2vec tables W_in, W_out (model.d_model); algorithms sgns, ppmi_svd");
  std::puts("datasets:");
  std::puts("  fashion-mnist  IDX files, default /usr/share/datasets/fashion-mnist");
  std::puts("  mnist          IDX files, default /usr/share/datasets/mnist");
  std::puts("  cifar10        CIFAR-10 binary batches (data_batch_*.bin, test_batch.bin)");
  std::puts("  text           UTF-8 files, paragraphs as documents, tokenized (data.tokenizer)");
  std::puts("  gcide          GCIDE dictionary entries (dict-gcide), default /usr/share/dictd");
  std::puts("  words          a word corpus, one sentence per line (desync corpus), for sgns");
  std::puts("  synthetic      seeded Gaussian inputs labelled by a random teacher network");
  return 0;
}

int run_version() {
  std::printf("desync %s (LibTorch %s)\n", DESYNC_VERSION, TORCH_VERSION);
  return 0;
}

}  // namespace desync
