// A tiny harness for desync's benchmarks: repeated timed rounds, medians and spread, a table on
// stdout and a JSON file. Rounds of the variants being compared are interleaved, so drift in the
// machine's speed affects them alike. Benchmarks never pass or fail on time.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace desync::bench {

// Paths fixed when the build is configured (bench/paths.cpp).
const std::string& source_dir();     // the repository's root
const std::string& desync_binary();  // the desync executable

struct Variant {
  std::string name;
  std::function<void()> run_round;  // one timed round
  std::vector<double> seconds;      // filled by measure()
};

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Runs `warmup` untimed and `rounds` timed rounds of every variant, interleaved.
inline void measure(std::vector<Variant>& variants, int warmup, int rounds) {
  for (int r = 0; r < warmup; ++r)
    for (Variant& v : variants) v.run_round();
  for (int r = 0; r < rounds; ++r)
    for (Variant& v : variants) {
      auto t0 = std::chrono::steady_clock::now();
      v.run_round();
      v.seconds.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
}

inline void write_json(const std::string& path, const nlohmann::json& j) {
  std::ofstream(path) << j.dump(2) << "\n";
}

}  // namespace desync::bench

namespace desync::bench {

// Runs `desync train <args> --quiet` and returns its summary.json (empty on failure).
inline nlohmann::json run_desync(const std::string& desync, const std::string& args,
                                 const std::string& out_dir) {
  std::string cmd =
      desync + " train " + args + " --quiet --out " + out_dir + " > " + out_dir + ".log 2>&1";
  if (std::system(("rm -rf " + out_dir).c_str()) != 0 || std::system(cmd.c_str()) != 0) {
    fmt::print(stderr, "failed: {} (see {}.log)\n", cmd, out_dir);
    return {};
  }
  std::ifstream in(out_dir + "/summary.json");
  return nlohmann::json::parse(in, nullptr, false);
}

inline double mean_of(const nlohmann::json& list) {
  double s = 0;
  for (const auto& v : list) s += v.get<double>();
  return list.empty() ? 0.0 : s / static_cast<double>(list.size());
}

}  // namespace desync::bench
