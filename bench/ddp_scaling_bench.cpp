// DDP throughput and overlap, on real worker processes over loopback Gloo.
//
//   build/bench/ddp_scaling_bench [--steps N] [--repeats R] [--json F]
//
// Same model (the Fashion-MNIST CNN on 1x28x28 synthetic data), same global batch (64), same
// number of steps:
//   single      1 worker, batch 64
//   ddp         2 workers x batch 32, all-reduce overlapped with backward
//   ddp-serial  2 workers x batch 32, all-reduce after backward (algorithm.overlap = false)
// Reports median samples/s over the repeats, the time per step each rank waited for
// communication, and the share of all-reduce time hidden behind backward:
//   hidden = 1 - wait(ddp) / wait(ddp-serial)
// (with overlap off, the wait is the whole all-reduce; with it on, only the exposed part).
// On a machine with fewer cores than workers x threads the workers compete for cores, so the
// 2-worker throughput says little about a real cluster; the table prints the core count.
#include <cstring>
#include <thread>

#include "harness.h"

using namespace desync;

int main(int argc, char** argv) {
  int steps = 150, repeats = 3;
  std::string json_path = "ddp_scaling_bench.json";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--json")) json_path = argv[i + 1];
  }
  const std::string cfg = bench::source_dir() + "/examples/fmnist_cnn.toml";
  const std::string common = fmt::format(
      "{} --set data.dataset=synthetic --set data.synthetic_train=8192 "
      "--set 'data.synthetic_shape=[1, 28, 28]' --set run.steps={} --set checkpoint.enabled=false "
      "--set eval.limit=256",
      cfg, steps);
  struct Variant {
    std::string name, args;
    std::vector<double> sps, wait_per_step;
  };
  std::vector<Variant> variants = {
      {"single", "--workers 1 --set algorithm.name=single --set data.batch_size=64", {}, {}},
      {"ddp", "--workers 2 --set algorithm.name=ddp --set data.batch_size=32", {}, {}},
      {"ddp-serial",
       "--workers 2 --set algorithm.name=ddp --set data.batch_size=32 --set "
       "algorithm.overlap=false",
       {},
       {}},
  };
  const std::string tmp = "/tmp/desync-ddp-bench";
  for (int r = 0; r < repeats; ++r)
    for (Variant& v : variants) {  // interleaved, so drift affects all alike
      nlohmann::json s =
          bench::run_desync(bench::desync_binary(), common + " " + v.args, tmp + "-" + v.name);
      if (s.is_null() || s.is_discarded()) return 1;
      v.sps.push_back(s["samples_per_second"].get<double>());
      v.wait_per_step.push_back(bench::mean_of(s["comm_wait_seconds"]) / steps);
    }

  double serial_wait = bench::median(variants[2].wait_per_step);
  double base = bench::median(variants[0].sps);
  fmt::print("DDP on loopback · CNN · global batch 64 · {} steps · {} repeats · {} cores\n", steps,
             repeats, std::thread::hardware_concurrency());
  fmt::print("{:<12}{:>14}{:>22}{:>12}{:>20}\n", "variant", "samples/s", "spread (min..max)",
             "vs single", "comm wait ms/step");
  nlohmann::json out = {
      {"steps", steps}, {"repeats", repeats}, {"variants", nlohmann::json::array()}};
  for (const Variant& v : variants) {
    double med = bench::median(v.sps);
    auto [lo, hi] = std::minmax_element(v.sps.begin(), v.sps.end());
    fmt::print("{:<12}{:>14.0f}{:>22}{:>11.2f}x{:>20.2f}\n", v.name, med,
               fmt::format("{:.0f}..{:.0f}", *lo, *hi), med / base,
               1e3 * bench::median(v.wait_per_step));
    out["variants"].push_back({{"name", v.name},
                               {"samples_per_second", med},
                               {"comm_wait_seconds_per_step", bench::median(v.wait_per_step)}});
  }
  double hidden =
      serial_wait > 0 ? 1.0 - bench::median(variants[1].wait_per_step) / serial_wait : 0;
  fmt::print("all-reduce time hidden behind backward: {:.0f}%\n", 100.0 * hidden);
  out["hidden_share"] = hidden;
  bench::write_json(json_path, out);
  fmt::print("wrote {}\n", json_path);
  return 0;
}
