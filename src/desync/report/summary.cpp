#include "desync/report/summary.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>

#include "desync/report/timelines.h"

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
  if (auto a = s.find("activation_memory"); a != s.end() && a->is_object()) {
    // Summed over ranks, in the steady state (report/timelines.h); "-" without one.
    const auto peak = a->find("summed_peak_bytes"), ratio = a->find("summed_peak_to_mean");
    row("act. peak (sum)",
        peak != a->end() && peak->is_number() ? human_bytes(peak->get<double>()) : "-",
        "act. peak/mean", ratio != a->end() ? number_or_dash(*ratio, "{:.2f}") : "-");
  }
  row("parameters", std::to_string(s.value("parameters", int64_t{0})), "seed",
      std::to_string(s.value("seed", int64_t{0})));
  if (s.contains("tokens")) {  // a language model
    row("bits/byte", number_or_dash(s["test_bits_per_byte"], "{:.4f}"), "perplexity",
        number_or_dash(s["test_perplexity"], "{:.2f}"));
    row("tokens", std::to_string(s.value("tokens", int64_t{0})), "tokens/s",
        fmt::format("{:.0f}", s.value("tokens_per_second", 0.0)));
    if (s.contains("gflops_per_second"))
      row("GFLOP/s", fmt::format("{:.2f}", s.value("gflops_per_second", 0.0)), "FLOPs/token",
          fmt::format("{:.3g}", s.value("flops_per_token", 0.0)));
  }
  out += fmt::format("  run directory   {}\n", s.value("run_dir", ""));
  return out;
}

}  // namespace desync

namespace desync {
namespace {

// Named per-rank values, gathered from every rank with one all-reduce of a [world, K] matrix
// (each rank fills its row). Every rank adds the same names in the same order.
class RankTable {
 public:
  void add(const std::string& name, double value) {
    names_.push_back(name);
    values_.push_back(value);
  }
  // Collective: after it, column(name) holds every rank's value in rank order.
  void gather(Communicator& comm) {
    const auto k = static_cast<int64_t>(values_.size());
    all_ = torch::zeros({comm.world_size(), k}, torch::kFloat64);
    all_[comm.rank()].copy_(torch::tensor(values_, torch::kFloat64));
    comm.all_reduce(all_);
  }
  std::vector<double> column(const std::string& name) const {
    auto i = static_cast<int64_t>(std::find(names_.begin(), names_.end(), name) - names_.begin());
    torch::Tensor c = all_.select(1, i).contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  }
  std::vector<int64_t> ints(const std::string& name) const {
    std::vector<double> c = column(name);
    return std::vector<int64_t>(c.begin(), c.end());
  }

 private:
  std::vector<std::string> names_;
  std::vector<double> values_;
  torch::Tensor all_;
};

}  // namespace

void add_rank_figures(nlohmann::json& summary, Communicator& comm, const RankFigures& mine) {
  const std::vector<std::pair<const char*, double>> scalars = {
      {"samples_per_rank", static_cast<double>(mine.samples)},
      {"micro_batches", static_cast<double>(mine.micro_batches)},
      {"bytes_sent", static_cast<double>(mine.training.bytes_sent)},
      {"bytes_received", static_cast<double>(mine.training.bytes_received)},
      {"comm_wait_seconds", mine.comm_time.blocked},
      {"overlapped_comm_seconds", mine.comm_overlapped_seconds},
      {"peak_rss_bytes", static_cast<double>(mine.peak_rss_bytes)},
      {"comm_in_flight_seconds", mine.comm_in_flight_seconds},
      {"wait_without_comm_seconds", mine.wait_without_comm_seconds},
      {"eval_bytes_sent", static_cast<double>(mine.eval_bytes_sent)},
      {"train_loss", mine.has_train_loss ? mine.train_loss : 0.0},
      {"has_train_loss", mine.has_train_loss ? 1.0 : 0.0}};
  const std::vector<std::pair<const char*, double>> times = {
      {"window", mine.window_seconds},    {"compute", mine.time.compute},
      {"optimizer", mine.time.optimizer}, {"wait", mine.time.wait},
      {"eval", mine.time.eval},           {"checkpoint", mine.time.checkpoint},
      {"other", mine.time.other}};
  RankTable t;
  for (const auto& [name, v] : scalars) t.add(name, v);
  for (const auto& [name, v] : times) t.add(std::string("time.") + name, v);
  for (const auto& [name, v] : mine.algorithm.memory)
    t.add("memory." + name, static_cast<double>(v));
  for (const auto& [name, v] : mine.algorithm.counts)
    t.add("counts." + name, static_cast<double>(v));
  t.gather(comm);

  for (const char* name :
       {"samples_per_rank", "bytes_sent", "bytes_received", "peak_rss_bytes", "eval_bytes_sent"})
    summary[name] = t.ints(name);
  for (const char* name : {"comm_wait_seconds", "overlapped_comm_seconds", "comm_in_flight_seconds",
                           "wait_without_comm_seconds"})
    summary[name] = t.column(name);
  int64_t samples = 0;
  for (int64_t s : t.ints("samples_per_rank")) samples += s;
  summary["samples"] = samples;
  int64_t micro_batches = 0;
  for (int64_t n : t.ints("micro_batches")) micro_batches += n;
  summary["micro_batches"] = micro_batches;
  double loss_sum = 0.0, loss_ranks = 0.0;  // the mean over the ranks that computed losses
  std::vector<double> losses = t.column("train_loss"), has = t.column("has_train_loss");
  for (size_t r = 0; r < losses.size(); ++r) loss_sum += losses[r], loss_ranks += has[r];
  summary["train_loss"] = loss_sum / std::max(1.0, loss_ranks);
  nlohmann::json breakdown = nlohmann::json::object();
  for (const auto& [name, v] : times) breakdown[name] = t.column(std::string("time.") + name);
  summary["time_breakdown_seconds"] = breakdown;
  nlohmann::json memory = nlohmann::json::object(), counts = nlohmann::json::object();
  for (const auto& entry : mine.algorithm.memory)
    memory[entry.first] = t.ints("memory." + entry.first);
  for (const auto& entry : mine.algorithm.counts)
    counts[entry.first] = t.ints("counts." + entry.first);
  summary["memory_bytes"] = memory;
  summary["algorithm_stats"] = counts;
}

namespace {

// Identifies this machine's monotonic clock: its boot id (shared by every process and network
// namespace of the machine) hashed to an integer a double holds exactly; 0 if unknown.
double machine_clock_id() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  if (!(in >> id)) return 0.0;
  return static_cast<double>(std::hash<std::string>{}(id) & ((uint64_t{1} << 52) - 1));
}

}  // namespace

void add_timelines(nlohmann::json& summary, Communicator& comm,
                   const ActivationSampler::Record& samples, int64_t peak_bytes,
                   const std::vector<ReductionRecord>& reductions) {
  const int64_t world = comm.world_size();
  // Where each rank's samples lie on the grid, and the shape of its reduction records.
  int64_t groups = 0;
  std::vector<int64_t> per_group;
  for (const ReductionRecord& r : reductions) {
    groups = std::max(groups, r.group + 1);
    if (static_cast<int64_t>(per_group.size()) < groups) per_group.resize(groups, 0);
    ++per_group[r.group];
  }
  const int64_t most =
      per_group.empty() ? 0 : *std::max_element(per_group.begin(), per_group.end());
  const bool sampled = !samples.samples.empty();
  RankTable t;
  t.add("sampled", sampled ? 1.0 : 0.0);
  t.add("first", sampled ? static_cast<double>(samples.samples.front().instant) : 0.0);
  t.add("last", sampled ? static_cast<double>(samples.samples.back().instant) : 0.0);
  t.add("stride", static_cast<double>(samples.stride));
  t.add("period_us", static_cast<double>(samples.period_us));
  t.add("peak", static_cast<double>(peak_bytes));
  t.add("groups", static_cast<double>(groups));
  t.add("most", static_cast<double>(most));
  t.add("clock", machine_clock_id());
  t.gather(comm);

  // Samples are summed only where they share a clock and a period.
  const std::vector<int64_t> period = t.ints("period_us"), have = t.ints("sampled");
  const std::vector<double> clock = t.column("clock");
  const bool one_clock = std::count(clock.begin(), clock.end(), clock[0]) == world;
  const bool comparable = one_clock && std::count(have.begin(), have.end(), 1) == world &&
                          std::count(period.begin(), period.end(), period[0]) == world;
  Grid grid;
  if (comparable) grid = common_grid(t.ints("first"), t.ints("last"), t.ints("stride"));

  // The ranks' rows summed, instant by instant: one all-reduce of [4, instants].
  GridRows sum(grid.size);
  if (grid.size > 0) {
    GridRows mine = rank_rows(samples, grid, comm.rank() == 0);
    torch::Tensor rows = torch::empty({4, grid.size}, torch::kFloat64);
    const std::vector<double>* parts[] = {&mine.bytes, &mine.sampled, &mine.steady,
                                          &mine.lead_step};
    for (int64_t k = 0; k < 4; ++k)
      rows[k].copy_(
          torch::from_blob(const_cast<double*>(parts[k]->data()), {grid.size}, torch::kFloat64));
    comm.all_reduce(rows);
    std::vector<double>* into[] = {&sum.bytes, &sum.sampled, &sum.steady, &sum.lead_step};
    for (int64_t k = 0; k < 4; ++k) {
      torch::Tensor row = rows[k].contiguous();
      std::copy(row.data_ptr<double>(), row.data_ptr<double>() + grid.size, into[k]->begin());
    }
  }
  const ActivationSummary activation =
      summarize_activation(sum, grid, world, period[0], t.ints("peak"));
  summary["activation_memory"] = activation.json;
  if (!one_clock)
    summary["activation_memory"]["note"] =
        "ranks on different machines: their monotonic clocks are unrelated, so their samples are "
        "not summed";
  else if (!comparable)
    summary["activation_memory"]["note"] =
        "not every rank sampled its activation memory, or not at the same period";

  // Reductions: every rank's records as a [groups, most, 2] matrix of (issue, completion) on the
  // machine's monotonic clock, NaN where a rank has fewer, gathered from all ranks.
  std::vector<int64_t> all_groups = t.ints("groups"), all_most = t.ints("most");
  const int64_t g = *std::max_element(all_groups.begin(), all_groups.end());
  const int64_t k = *std::max_element(all_most.begin(), all_most.end());
  if (g == 0 || k == 0) {
    summary["reductions"] = nullptr;
    return;
  }
  const double epoch = static_cast<double>(Tracer::epoch_us());
  torch::Tensor mine = torch::full({g, k, 2}, NAN, torch::kFloat64);
  {
    auto m = mine.accessor<double, 3>();
    std::vector<int64_t> next(g, 0);
    for (const ReductionRecord& r : reductions) {
      const int64_t i = next[r.group]++;
      m[r.group][i][0] = epoch + static_cast<double>(r.issue_us);
      m[r.group][i][1] = epoch + static_cast<double>(r.complete_us);
    }
  }
  std::vector<torch::Tensor> all;
  for (int64_t r = 0; r < world; ++r) all.push_back(torch::empty_like(mine));
  comm.all_gather(all, mine);
  std::vector<std::vector<ReductionRecord>> ranks(world);
  for (int64_t r = 0; r < world; ++r) {
    auto m = all[r].accessor<double, 3>();
    for (int64_t group = 0; group < g; ++group)
      for (int64_t i = 0; i < k && std::isfinite(m[group][i][0]); ++i)
        ranks[r].push_back(
            {group, static_cast<int64_t>(m[group][i][0]), static_cast<int64_t>(m[group][i][1]), 0});
  }
  summary["reductions"] = summarize_reductions(job_reductions(ranks), activation);
}

}  // namespace desync
