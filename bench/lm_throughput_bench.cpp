// Language-model throughput of DDP against its no-communication limit, on real processes.
//
//   build/bench/lm_throughput_bench [--steps N] [--repeats R] [--json F]
//
// The GPT of examples/lm_gcide_ddp.toml on GCIDE, one intra-op thread per worker, batch 16 per
// worker, N steps:
//   ddp          2 workers over loopback Gloo (gradients all-reduced every step)
//   2 x single   two independent single-worker runs at the same time: the same compute on the
//                same cores with no communication at all, the ceiling DDP can reach
// Reports median tokens/s (all workers together) over the repeats, interleaved so that drift
// affects both alike, and DDP's share of the ceiling. The token cache is built before timing.
#include <cstring>
#include <fstream>
#include <thread>

#include "harness.h"

using namespace desync;

namespace {

nlohmann::json read_summary(const std::string& dir) {
  std::ifstream in(dir + "/summary.json");
  return nlohmann::json::parse(in, nullptr, false);
}

// Tokens/s of two single-worker runs started together (their sum), or a negative number.
double two_singles(const std::string& args, const std::string& out) {
  const std::string desync = bench::desync_binary();
  std::string cmd = "rm -rf " + out + "-a " + out + "-b && (";
  for (const char* part : {"-a", "-b"})
    cmd += desync + " train " + args + " --quiet --workers 1 --set algorithm.name=single --out " +
           out + part + " > " + out + part + ".log 2>&1 & ";
  cmd += "wait)";
  if (std::system(cmd.c_str()) != 0) return -1;
  nlohmann::json a = read_summary(out + "-a"), b = read_summary(out + "-b");
  if (a.is_discarded() || b.is_discarded()) return -1;
  return a["tokens_per_second"].get<double>() + b["tokens_per_second"].get<double>();
}

}  // namespace

int main(int argc, char** argv) {
  int steps = 40, repeats = 3;
  std::string json_path = "lm_throughput_bench.json";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--json")) json_path = argv[i + 1];
  }
  const std::string cfg = bench::source_dir() + "/examples/lm_gcide_ddp.toml";
  const std::string cache = bench::source_dir() + "/.cache/desync";
  const std::string common = fmt::format(
      "{} --set run.steps={} --set run.threads=1 --set data.batch_size=16 "
      "--set checkpoint.enabled=false --set eval.limit=64 --set eval.every=0 "
      "--set 'data.cache_dir=\"{}\"'",
      cfg, steps, cache);
  if (std::system((bench::desync_binary() + " tokenize " + cfg + " --set 'data.cache_dir=\"" +
                   cache + "\"' > /dev/null")
                      .c_str()) != 0) {
    fmt::print(stderr, "failed to build the token cache for {}\n", cfg);
    return 1;
  }
  const std::string tmp = "/tmp/desync-lm-bench";
  std::vector<double> ddp, ceiling;
  for (int r = 0; r < repeats; ++r) {
    nlohmann::json s = bench::run_desync(bench::desync_binary(),
                                         common + " --workers 2 --set algorithm.name=ddp", tmp);
    if (s.is_null() || s.is_discarded()) return 1;
    ddp.push_back(s["tokens_per_second"].get<double>());
    const double both = two_singles(common, tmp + "-single");
    if (both < 0) {
      fmt::print(stderr, "the two single-worker runs failed (see {}-single-*.log)\n", tmp);
      return 1;
    }
    ceiling.push_back(both);
  }
  const double ddp_med = bench::median(ddp), ceiling_med = bench::median(ceiling);
  fmt::print(
      "GPT (examples/lm_gcide_ddp.toml) · batch 16/worker · 1 thread/worker · {} steps · {} "
      "repeats · {} cores\n",
      steps, repeats, std::thread::hardware_concurrency());
  fmt::print("{:<14}{:>14}{:>22}{:>14}\n", "variant", "tokens/s", "spread (min..max)",
             "vs ceiling");
  auto line = [&](const char* name, const std::vector<double>& v, double med) {
    auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    fmt::print("{:<14}{:>14.0f}{:>22}{:>13.1f}%\n", name, med,
               fmt::format("{:.0f}..{:.0f}", *lo, *hi), 100.0 * med / ceiling_med);
  };
  line("2 x single", ceiling, ceiling_med);
  line("ddp (2)", ddp, ddp_med);
  bench::write_json(json_path, {{"steps", steps},
                                {"repeats", repeats},
                                {"ddp_tokens_per_second", ddp_med},
                                {"two_singles_tokens_per_second", ceiling_med},
                                {"ddp_share_of_ceiling", ddp_med / ceiling_med}});
  fmt::print("wrote {}\n", json_path);
  return 0;
}
