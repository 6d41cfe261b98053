// Data-parallel methods side by side on 4 real worker processes (loopback Gloo):
// DDP, ZeRO-1, DPU and ACCO, each in three settings — uniform workers, one worker at half
// speed (run.worker_speed), and 20 ms of emulated latency on every communication call
// (run.comm_latency_ms).
//
//   build/bench/sharded_bench [--steps N] [--repeats R] [--json F]
//
// Same model (the Fashion-MNIST CNN on 1x28x28 synthetic data), micro-batch 16 per worker.
// DDP, ZeRO-1 and DPU accumulate 2 micro-batches per step; ACCO accumulates at least 1 per round
// (two rounds per step), so all consume about the same samples per step. Columns: samples/s
// (global); time per step the training thread was blocked on communication (mean over ranks,
// and the rank blocked most); bytes sent per rank per step; and samples consumed per rank
// (ACCO's fast workers consume more). Medians over the repeats.
#include <cstring>
#include <thread>

#include "harness.h"

using namespace desync;

int main(int argc, char** argv) {
  int steps = 30, repeats = 1;
  std::string json_path = "sharded_bench.json";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--json")) json_path = argv[i + 1];
  }
  const std::string common = fmt::format(
      "{}/examples/fmnist_cnn.toml --workers 4 --set data.dataset=synthetic "
      "--set data.synthetic_train=16384 --set 'data.synthetic_shape=[1, 28, 28]' "
      "--set data.batch_size=16 --set run.steps={} --set checkpoint.enabled=false "
      "--set eval.limit=256 --set optimizer.name=adamw --set optimizer.lr=0.001 "
      "--set optimizer.nesterov=false --set optimizer.momentum=0",
      bench::source_dir(), steps);
  const std::vector<std::pair<std::string, std::string>> algorithms = {
      {"ddp", "--set algorithm.name=ddp --set algorithm.accumulation=2"},
      {"zero1", "--set algorithm.name=zero1 --set algorithm.accumulation=2"},
      {"dpu", "--set algorithm.name=dpu --set algorithm.accumulation=2"},
      {"acco", "--set algorithm.name=acco --set algorithm.accumulation=1"},
  };
  const std::vector<std::pair<std::string, std::string>> settings = {
      {"uniform", ""},
      {"one at 0.5", "--set 'run.worker_speed=[1.0, 1.0, 1.0, 0.5]'"},
      {"+20 ms latency", "--set run.comm_latency_ms=20"},
  };

  fmt::print(
      "data parallel on 4 workers · CNN · micro-batch 16 · {} steps · {} repeat(s) · {} "
      "cores\n",
      steps, repeats, std::thread::hardware_concurrency());
  fmt::print("{:<16}{:<8}{:>11}{:>17}{:>13}{:>16}{:>24}\n", "setting", "method", "samples/s",
             "blocked ms/step", "max blocked", "MiB sent/step", "samples/rank (min..max)");
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [setting, setting_args] : settings) {
    for (const auto& [name, args] : algorithms) {
      std::vector<double> sps, wait, max_wait, bytes;
      nlohmann::json last;
      for (int r = 0; r < repeats; ++r) {
        last = bench::run_desync(bench::desync_binary(), common + " " + args + " " + setting_args,
                                 "/tmp/desync-sharded-bench-" + name);
        if (last.is_null() || last.is_discarded()) return 1;
        sps.push_back(last["samples_per_second"].get<double>());
        const auto& w = last["comm_wait_seconds"];
        wait.push_back(bench::mean_of(w) / steps);
        double mx = 0;
        for (const auto& v : w) mx = std::max(mx, v.get<double>());
        max_wait.push_back(mx / steps);
        bytes.push_back(bench::mean_of(last["bytes_sent"]) / steps);
      }
      double lo = 1e18, hi = 0;
      for (const auto& v : last["samples_per_rank"]) {
        lo = std::min(lo, v.get<double>());
        hi = std::max(hi, v.get<double>());
      }
      fmt::print("{:<16}{:<8}{:>11.0f}{:>17.1f}{:>13.1f}{:>16.2f}{:>24}\n", setting, name,
                 bench::median(sps), 1e3 * bench::median(wait), 1e3 * bench::median(max_wait),
                 bench::median(bytes) / (1 << 20), fmt::format("{:.0f}..{:.0f}", lo, hi));
      out.push_back({{"setting", setting},
                     {"algorithm", name},
                     {"samples_per_second", bench::median(sps)},
                     {"comm_wait_seconds_per_step", bench::median(wait)},
                     {"max_comm_wait_seconds_per_step", bench::median(max_wait)},
                     {"bytes_sent_per_step", bench::median(bytes)},
                     {"samples", last["samples"]}});
    }
  }
  bench::write_json(json_path, out);
  fmt::print("wrote {}\n", json_path);
  return 0;
}
