// Pipelines side by side on 4 real worker processes (loopback Gloo): exact backprop with the
// 1F1B schedule against PETRA, PipeDream and DSP, on the small Fashion-MNIST RevNet of
// examples/fmnist_petra.toml (synthetic 1x28x28 data, so no dataset is needed).
//
//   build/bench/pipeline_bench [--steps N] [--repeats R] [--json F]
//
// Columns: samples/s (global, median over the repeats), MiB sent per rank per step (mean over
// ranks), and per rank the peak RSS and the bytes of buffered stage inputs and weight stashes
// (1F1B: of the activations of the micro-batches in flight), from summary.json.
#include <cstring>
#include <thread>

#include "harness.h"

using namespace desync;

int main(int argc, char** argv) {
  int steps = 40, repeats = 1;
  std::string json_path = "pipeline_bench.json";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--json")) json_path = argv[i + 1];
  }
  const std::string common = fmt::format(
      "{}/examples/fmnist_petra.toml --workers 4 --set data.dataset=synthetic "
      "--set data.synthetic_train=8192 --set 'data.synthetic_shape=[1, 28, 28]' "
      "--set run.steps={} --set eval.limit=256",
      bench::source_dir(), steps);
  const std::vector<std::pair<std::string, std::string>> methods = {
      {"1f1b", "--set algorithm.name=pipeline --set algorithm.schedule=1f1b"},
      {"petra", "--set algorithm.name=petra"},
      {"pipedream", "--set algorithm.name=pipedream"},
      {"dsp", "--set algorithm.name=dsp"},
  };
  fmt::print(
      "pipeline of 4 workers · RevNet [2, 2] width 8 · micro-batch 32 × 2 · {} steps · "
      "{} repeat(s) · {} cores\n",
      steps, repeats, std::thread::hardware_concurrency());
  fmt::print("{:<11}{:>11}{:>15}   {}\n", "method", "samples/s", "MiB sent/step",
             "per rank: peak RSS MiB / buffered KiB (inputs + stashes, or activations)");
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [name, args] : methods) {
    std::vector<double> sps;
    nlohmann::json last;
    for (int r = 0; r < repeats; ++r) {
      last = bench::run_desync(bench::desync_binary(), common + " " + args,
                               "/tmp/desync-pipeline-bench-" + name);
      if (last.is_null() || last.is_discarded()) return 1;
      sps.push_back(last["samples_per_second"].get<double>());
    }
    const nlohmann::json& m = last["memory_bytes"];
    std::string ranks;
    for (int r = 0; r < 4; ++r) {
      double buffered = 0;
      for (const char* k : {"input_buffers", "weight_stashes", "activations"})
        if (m.contains(k)) buffered += m[k][r].get<double>();
      ranks += fmt::format("  {:.0f} / {:.0f}", last["peak_rss_bytes"][r].get<double>() / 1048576,
                           buffered / 1024);
    }
    double mib = bench::mean_of(last["bytes_sent"]) / 1048576 / steps;
    fmt::print("{:<11}{:>11.0f}{:>15.2f}  {}\n", name, bench::median(sps), mib, ranks);
    out.push_back({{"method", name},
                   {"samples_per_second", sps},
                   {"mib_sent_per_step", mib},
                   {"peak_rss_bytes", last["peak_rss_bytes"]},
                   {"memory_bytes", m}});
  }
  bench::write_json(json_path, out);
  return 0;
}
