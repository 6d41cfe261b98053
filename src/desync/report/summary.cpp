#include "desync/report/summary.h"

#include <fmt/core.h>

namespace desync {
namespace {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024.0 && u < 4) {
    b /= 1024.0;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.1f} {}", b, units[u]);
}

double mean_of(const nlohmann::json& list) {
  double s = 0;
  if (!list.is_array() || list.empty()) return 0;
  for (const auto& v : list) s += v.get<double>();
  return s / static_cast<double>(list.size());
}

double max_of(const nlohmann::json& list) {
  double m = 0;
  if (list.is_array())
    for (const auto& v : list) m = std::max(m, v.get<double>());
  return m;
}

std::string number_or_dash(const nlohmann::json& v, const char* fmtstr) {
  if (!v.is_number()) return "-";
  return fmt::format(fmt::runtime(fmtstr), v.get<double>());
}

}  // namespace

std::string summary_table(const nlohmann::json& s) {
  std::string out = fmt::format("\n{} · {} · {} · {} worker{}{}\n", s.value("algorithm", "?"),
                                s.value("model", "?"), s.value("dataset", "?"),
                                s.value("workers", 1), s.value("workers", 1) == 1 ? "" : "s",
                                s.value("interrupted", false) ? " · INTERRUPTED" : "");
  auto row = [&out](const std::string& k1, const std::string& v1, const std::string& k2,
                    const std::string& v2) {
    out += fmt::format("  {:<16}{:>14}    {:<16}{:>14}\n", k1, v1, k2, v2);
  };
  row("steps", std::to_string(s.value("steps", 0)), "samples",
      std::to_string(s.value("samples", int64_t{0})));
  row("test accuracy", number_or_dash(s["test_accuracy"], "{:.4f}"), "test loss",
      number_or_dash(s["test_loss"], "{:.4f}"));
  row("train loss", number_or_dash(s["train_loss"], "{:.4f}"), "wall time",
      fmt::format("{:.1f} s", s.value("wall_seconds", 0.0)));
  row("samples/s", fmt::format("{:.0f}", s.value("samples_per_second", 0.0)), "peak RSS (max)",
      human_bytes(max_of(s["peak_rss_bytes"])));
  row("sent/rank", human_bytes(mean_of(s["bytes_sent"])), "received/rank",
      human_bytes(mean_of(s["bytes_received"])));
  row("parameters", std::to_string(s.value("parameters", int64_t{0})), "seed",
      std::to_string(s.value("seed", int64_t{0})));
  out += fmt::format("  run directory   {}\n", s.value("run_dir", ""));
  return out;
}

}  // namespace desync
