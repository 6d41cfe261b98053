#include "desync/report/timelines.h"

#include <algorithm>
#include <map>

namespace desync {

Grid common_grid(const std::vector<int64_t>& first, const std::vector<int64_t>& last,
                 const std::vector<int64_t>& stride) {
  Grid g;
  if (first.empty() || first.size() != last.size() || first.size() != stride.size()) return g;
  int64_t from = first[0], to = last[0];
  g.stride = 1;
  for (size_t r = 0; r < first.size(); ++r) {
    from = std::max(from, first[r]);
    to = std::min(to, last[r]);
    g.stride = std::max(g.stride, stride[r]);
  }
  g.first = (from + g.stride - 1) / g.stride * g.stride;  // instants are non-negative
  g.size = to >= g.first ? (to - g.first) / g.stride + 1 : 0;
  return g;
}

GridRows::GridRows(int64_t size)
    : bytes(size, 0.0), sampled(size, 0.0), steady(size, 0.0), lead_step(size, 0.0) {}

GridRows& GridRows::operator+=(const GridRows& o) {
  for (size_t i = 0; i < bytes.size() && i < o.bytes.size(); ++i) {
    bytes[i] += o.bytes[i];
    sampled[i] += o.sampled[i];
    steady[i] += o.steady[i];
    lead_step[i] += o.lead_step[i];
  }
  return *this;
}

GridRows rank_rows(const ActivationSampler::Record& record, const Grid& grid, bool lead) {
  GridRows rows(grid.size);
  for (const ActivationSample& s : record.samples) {
    const int64_t offset = s.instant - grid.first;
    if (offset < 0 || offset % grid.stride != 0) continue;
    const int64_t i = offset / grid.stride;
    if (i >= grid.size) break;
    rows.bytes[i] = static_cast<double>(s.bytes);
    rows.sampled[i] = 1.0;
    const bool in_step = s.step >= 0;
    rows.steady[i] = in_step && s.step > record.first_step && s.step < record.last_step;
    if (lead && in_step) rows.lead_step[i] = static_cast<double>(s.step + 1);
  }
  return rows;
}

std::vector<int64_t> steady_instants(const GridRows& sum, int64_t world) {
  std::vector<int64_t> out;
  for (size_t i = 0; i < sum.steady.size(); ++i)
    if (sum.steady[i] == static_cast<double>(world)) out.push_back(static_cast<int64_t>(i));
  return out;
}

Window choose_window(const GridRows& sum, const std::vector<int64_t>& steady, size_t max_points,
                     int64_t steps) {
  Window w;
  std::vector<int64_t> lead;  // rank 0's steps seen in the steady state, in order
  for (int64_t i : steady) {
    const auto s = static_cast<int64_t>(sum.lead_step[i]) - 1;
    if (s >= 0 && (lead.empty() || lead.back() != s)) lead.push_back(s);
  }
  std::sort(lead.begin(), lead.end());
  lead.erase(std::unique(lead.begin(), lead.end()), lead.end());
  if (lead.empty() || max_points == 0) return w;
  // Where each of rank 0's steps begins and ends on the grid.
  std::map<int64_t, std::pair<int64_t, int64_t>> span;
  for (size_t i = 0; i < sum.lead_step.size(); ++i) {
    const auto s = static_cast<int64_t>(sum.lead_step[i]) - 1;
    if (s < 0) continue;
    auto [it, fresh] = span.try_emplace(s, i, i);
    if (!fresh) it->second.second = static_cast<int64_t>(i);
  }
  const auto n = static_cast<int64_t>(lead.size());
  for (int64_t k = std::min(steps, n); k >= 1; --k) {
    const int64_t j = (n - k) / 2;
    w.first_step = lead[j];
    w.last_step = lead[j + k - 1];
    w.begin = span[w.first_step].first;
    w.end = span[w.last_step].second;
    if (w.end - w.begin + 1 <= static_cast<int64_t>(max_points)) break;
  }
  if (w.end - w.begin + 1 > static_cast<int64_t>(max_points))  // one step longer than the cap
    w.end = w.begin + static_cast<int64_t>(max_points) - 1;
  w.found = true;
  return w;
}

ActivationSummary summarize_activation(const GridRows& sum, const Grid& grid, int64_t world,
                                       int64_t period_us, const std::vector<int64_t>& rank_peaks,
                                       size_t max_points) {
  ActivationSummary out;
  const double cell_us = static_cast<double>(grid.stride * period_us);
  auto at_us = [&](int64_t i) { return grid.instant(i) * period_us; };
  const double w = static_cast<double>(world);
  int64_t common = 0;
  for (double c : sum.sampled) common += c == w;
  nlohmann::json& j = out.json;
  j["sample_period_ms"] = cell_us * 1e-3;
  j["rank_peak_bytes"] = rank_peaks;
  j["grid_instants"] = grid.size;
  j["common_instants"] = common;

  const std::vector<int64_t> steady = steady_instants(sum, world);
  j["steady_instants"] = steady.size();
  j["summed_peak_bytes"] = nullptr;
  j["summed_mean_bytes"] = nullptr;
  j["summed_peak_to_mean"] = nullptr;
  j["curve"] = nullptr;
  if (!steady.empty()) {
    double peak = 0, total = 0;
    for (int64_t i : steady) {
      peak = std::max(peak, sum.bytes[i]);
      total += sum.bytes[i];
    }
    const double mean = total / static_cast<double>(steady.size());
    j["summed_peak_bytes"] = static_cast<int64_t>(peak);
    j["summed_mean_bytes"] = mean;
    if (mean > 0) j["summed_peak_to_mean"] = peak / mean;
    out.steady = true;
    out.steady_begin_us = at_us(steady.front());
    out.steady_end_us = at_us(steady.back()) + grid.stride * period_us;
  } else {
    j["note"] =
        "no steady state: no instant at which every rank was sampled inside a step past its "
        "first and before its last (a run of fewer than three steps, or ranks that never "
        "overlapped)";
  }

  const Window win = choose_window(sum, steady, max_points);
  if (win.found) {
    nlohmann::json t = nlohmann::json::array(), b = nlohmann::json::array();
    for (int64_t i = win.begin; i <= win.end; ++i) {
      if (sum.sampled[i] != w) continue;
      t.push_back(static_cast<double>(i - win.begin) * cell_us * 1e-6);
      b.push_back(static_cast<int64_t>(sum.bytes[i]));
    }
    j["curve"] = {
        {"t_s", t}, {"bytes", b}, {"first_step", win.first_step}, {"last_step", win.last_step}};
    out.window = true;
    out.window_begin_us = at_us(win.begin);
    out.window_end_us = at_us(win.end) + grid.stride * period_us;
  }

  // The whole run, coarsely: the largest summed value of each of at most 500 bins.
  j["run_curve"] = nullptr;
  if (common > 0) {
    const int64_t bins = std::min<int64_t>(500, grid.size);
    nlohmann::json t = nlohmann::json::array(), b = nlohmann::json::array();
    for (int64_t k = 0; k < bins; ++k) {
      const int64_t lo = k * grid.size / bins, hi = (k + 1) * grid.size / bins;
      double most = -1;
      for (int64_t i = lo; i < hi; ++i)
        if (sum.sampled[i] == w) most = std::max(most, sum.bytes[i]);
      if (most < 0) continue;
      t.push_back(static_cast<double>(lo) * cell_us * 1e-6);
      b.push_back(static_cast<int64_t>(most));
    }
    j["run_curve"] = {{"t_s", t}, {"bytes", b}};
  }
  return out;
}

std::vector<JobReduction> job_reductions(const std::vector<std::vector<ReductionRecord>>& ranks) {
  std::map<std::pair<int64_t, int64_t>, JobReduction> pairs;  // by (group, step)
  for (const auto& records : ranks) {
    std::map<int64_t, int64_t> seen;  // records of each group so far on this rank
    for (const ReductionRecord& r : records) {
      const int64_t k = seen[r.group]++;
      auto [it, fresh] = pairs.try_emplace({r.group, k});
      JobReduction& j = it->second;
      if (fresh) {
        j = {r.group, k, r.issue_us, r.complete_us, 0};
      } else {
        j.start_us = std::max(j.start_us, r.issue_us);
        j.end_us = std::max(j.end_us, r.complete_us);
      }
      ++j.ranks;
    }
  }
  std::vector<JobReduction> out;
  for (const auto& [key, j] : pairs) out.push_back(j);
  std::sort(out.begin(), out.end(), [](const JobReduction& a, const JobReduction& b) {
    return a.start_us != b.start_us ? a.start_us < b.start_us : a.group < b.group;
  });
  return out;
}

int64_t max_in_flight(const std::vector<JobReduction>& reductions, int64_t begin_us,
                      int64_t end_us) {
  std::vector<std::pair<int64_t, int>> events;  // (time, -1 end | +1 start): ends sort first
  for (const JobReduction& r : reductions) {
    const int64_t s = std::max(r.start_us, begin_us), e = std::min(r.end_us, end_us);
    if (e <= s) continue;
    events.emplace_back(s, +1);
    events.emplace_back(e, -1);
  }
  std::sort(events.begin(), events.end());
  int64_t open = 0, most = 0;
  for (const auto& [t, d] : events) most = std::max(most, open += d);
  return most;
}

nlohmann::json summarize_reductions(const std::vector<JobReduction>& reductions,
                                    const ActivationSummary& activation) {
  if (reductions.empty()) return nullptr;
  std::map<int64_t, int64_t> per_group;
  for (const JobReduction& r : reductions)
    per_group[r.group] = std::max(per_group[r.group], r.step + 1);
  int64_t steps = 0;
  for (const auto& [g, n] : per_group) steps = std::max(steps, n);
  nlohmann::json j = {{"groups", per_group.size()},
                      {"steps", steps},
                      {"max_in_flight", nullptr},
                      {"window_seconds", nullptr},
                      {"timeline", nullptr}};
  if (activation.steady)
    j["max_in_flight"] =
        max_in_flight(reductions, activation.steady_begin_us, activation.steady_end_us);
  if (activation.window) {
    const int64_t w0 = activation.window_begin_us, w1 = activation.window_end_us;
    nlohmann::json timeline = nlohmann::json::array();
    for (const JobReduction& r : reductions) {
      if (r.end_us <= w0 || r.start_us >= w1) continue;
      timeline.push_back({{"group", r.group},
                          {"step", r.step},
                          {"start_s", static_cast<double>(r.start_us - w0) * 1e-6},
                          {"end_s", static_cast<double>(r.end_us - w0) * 1e-6}});
    }
    j["window_seconds"] = static_cast<double>(w1 - w0) * 1e-6;
    j["timeline"] = std::move(timeline);
  }
  return j;
}

}  // namespace desync
