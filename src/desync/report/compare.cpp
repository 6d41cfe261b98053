#include "desync/report/compare.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "desync/report/svg.h"

namespace desync {
namespace {

double mean(const std::vector<double>& v) {
  if (v.empty()) return NAN;
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

double max_of(const std::vector<double>& v) {
  if (v.empty()) return NAN;
  return *std::max_element(v.begin(), v.end());
}

// The last evaluation's test accuracy (the summary's, or the last eval record's if the run
// was interrupted before its final evaluation).
double final_accuracy(const RunData& run) {
  auto it = run.summary.find("test_accuracy");
  if (it != run.summary.end() && it->is_number()) return it->get<double>();
  auto evals = records_of(run, "eval");
  for (auto r = evals.rbegin(); r != evals.rend(); ++r)
    if ((*r)->contains("test_accuracy") && (**r)["test_accuracy"].is_number())
      return (**r)["test_accuracy"].get<double>();
  return NAN;
}

double time_to(const RunData& run, double target) {
  if (!std::isfinite(target)) return NAN;
  for (const nlohmann::json* r : records_of(run, "eval")) {
    auto acc = r->find("test_accuracy");
    auto t = r->find("elapsed");
    if (acc != r->end() && acc->is_number() && acc->get<double>() >= target && t != r->end() &&
        t->is_number())
      return t->get<double>();
  }
  return NAN;
}

std::string or_dash(double v, const char* format) {
  return std::isfinite(v) ? fmt::format(fmt::runtime(format), v) : "-";
}

std::string mib(double bytes) { return or_dash(bytes / (1024.0 * 1024.0), "{:.2f}"); }

// The summed activation peak of a run's summary (report/timelines.h), or NaN.
double summed_activation_peak(const RunData& run) {
  auto a = run.summary.find("activation_memory");
  if (a == run.summary.end() || !a->is_object()) return NAN;
  auto peak = a->find("summed_peak_bytes");
  return peak != a->end() && peak->is_number() ? peak->get<double>() : NAN;
}

// Whether any run has a summed activation peak (the table then has a column for it).
bool any_activation_peak(const std::vector<RunData>& runs) {
  for (const RunData& r : runs)
    if (std::isfinite(summed_activation_peak(r))) return true;
  return false;
}

std::vector<std::string> header(double target, bool activations) {
  std::vector<std::string> h = {"run",
                                "algorithm",
                                "workers",
                                "samples",
                                "final accuracy",
                                "final test loss",
                                or_dash(target, "time to {:.4f} (s)"),
                                "samples/s",
                                "MiB sent/rank (mean)",
                                "MiB sent/rank (max)",
                                "comm in flight/rank (s)",
                                "waiting/rank (s)",
                                "peak RSS (MiB, max)"};
  if (activations) h.push_back("peak summed activations (MiB)");
  return h;
}

std::vector<std::string> cells(const RunData& run, double target, bool activations) {
  const nlohmann::json& s = run.summary;
  auto number = [&](const char* key) {
    auto it = s.find(key);
    return it != s.end() && it->is_number() ? it->get<double>() : NAN;
  };
  std::vector<double> sent = rank_list(s, "bytes_sent");
  std::vector<std::string> c = {run.name,
                                s.value("algorithm", "?"),
                                std::to_string(s.value("workers", 1)),
                                or_dash(number("samples"), "{:.0f}"),
                                or_dash(final_accuracy(run), "{:.4f}"),
                                or_dash(number("test_loss"), "{:.4f}"),
                                or_dash(time_to(run, target), "{:.1f}"),
                                or_dash(number("samples_per_second"), "{:.1f}"),
                                mib(mean(sent)),
                                mib(max_of(sent)),
                                or_dash(mean(rank_list(s, "comm_in_flight_seconds")), "{:.2f}"),
                                or_dash(mean(rank_list(s, "comm_wait_seconds")), "{:.2f}"),
                                mib(max_of(rank_list(s, "peak_rss_bytes")))};
  if (activations) c.push_back(mib(summed_activation_peak(run)));
  return c;
}

// Mean over ranks of the cumulative bytes sent, at each logged step.
Series mean_bytes(const RunData& run) {
  Series s;
  s.label = run.name;
  for (const nlohmann::json* r : records_of(run, "train")) {
    auto it = r->find("bytes_sent_per_rank");
    auto t = r->find("elapsed");
    if (it == r->end() || !it->is_array() || it->empty() || t == r->end() || !t->is_number())
      continue;
    double sum = 0;
    for (const auto& v : *it) sum += v.is_number() ? v.get<double>() : 0.0;
    s.x.push_back(t->get<double>());
    s.y.push_back(sum / static_cast<double>(it->size()));
  }
  return s;
}

Series curve(const RunData& run, const char* type, const char* value, const char* x) {
  Series s;
  s.label = run.name;
  for (const nlohmann::json* r : records_of(run, type)) {
    auto xv = r->find(x);
    auto yv = r->find(value);
    if (xv == r->end() || yv == r->end() || !xv->is_number() || !yv->is_number()) continue;
    s.x.push_back(xv->get<double>());
    s.y.push_back(yv->get<double>());
  }
  return s;
}

}  // namespace

double comparison_target(const std::vector<RunData>& runs, double requested) {
  if (std::isfinite(requested)) return requested;
  double lowest = NAN;
  for (const RunData& r : runs) {
    double a = final_accuracy(r);
    if (std::isfinite(a) && !(a >= lowest)) lowest = a;
  }
  return lowest;
}

std::vector<std::string> budget_warnings(const std::vector<RunData>& runs) {
  auto samples_of = [](const RunData& r) {
    auto it = r.summary.find("samples");
    return it != r.summary.end() && it->is_number() ? it->get<double>() : NAN;
  };
  double most = 0;
  for (const RunData& r : runs)
    if (samples_of(r) > most) most = samples_of(r);
  std::vector<std::string> out;
  for (const RunData& r : runs) {
    const double n = samples_of(r);
    if (!std::isfinite(n) || most <= 0 || n >= 0.99 * most) continue;
    out.push_back(fmt::format(
        "warning: {} consumed {:.0f} samples, {:.1f}% fewer than the largest run ({:.0f}); "
        "compare at equal budgets (run.samples, run.epochs)",
        r.name, n, 100.0 * (most - n) / most, most));
  }
  return out;
}

std::string compare_table(const std::vector<RunData>& runs, double target) {
  const bool activations = any_activation_peak(runs);
  std::vector<std::vector<std::string>> table = {header(target, activations)};
  for (const RunData& r : runs) table.push_back(cells(r, target, activations));
  std::vector<size_t> width(table[0].size(), 3);
  for (const auto& row : table)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  auto line = [&](const std::vector<std::string>& row) {
    std::string out = "|";
    for (size_t c = 0; c < row.size(); ++c)
      out += c < 3 ? fmt::format(" {:<{}} |", row[c], width[c])
                   : fmt::format(" {:>{}} |", row[c], width[c]);
    return out + "\n";
  };
  std::string out = line(table[0]) + "|";
  for (size_t c = 0; c < width.size(); ++c)
    out += c < 3 ? std::string(width[c] + 2, '-') + "|" : std::string(width[c] + 1, '-') + ":|";
  out += "\n";
  for (size_t i = 1; i < table.size(); ++i) out += line(table[i]);
  return out;
}

std::string compare_html(const std::vector<RunData>& runs, double target) {
  std::string body =
      fmt::format("<h1>Comparison of {} run{}</h1>", runs.size(), runs.size() == 1 ? "" : "s");
  const bool activations = any_activation_peak(runs);
  body += "<table><tr>";
  for (const std::string& h : header(target, activations))
    body += "<th>" + html_escape(h) + "</th>";
  body += "</tr>";
  for (const RunData& r : runs) {
    body += "<tr>";
    for (const std::string& c : cells(r, target, activations))
      body += "<td>" + html_escape(c) + "</td>";
    body += "</tr>";
  }
  body += "</table>";
  body += "<p class=\"notes\">Runs: ";
  for (size_t i = 0; i < runs.size(); ++i)
    body += (i ? ", " : "") + html_escape(runs[i].name) + " = <code>" + html_escape(runs[i].dir) +
            "</code>";
  body += ". Time to target and the time axes are training time (evaluation excluded). " +
          std::string(std::isfinite(target) ? "" : "No run has an evaluation. ") + "</p>";
  for (const std::string& w : budget_warnings(runs))
    body += "<p class=\"notes\"><strong>" + html_escape(w) + "</strong></p>";

  auto overlay = [&](const char* id, const char* title, const char* type, const char* value,
                     const char* x, const char* x_label, const char* y_label) {
    LineChart c{id, title, x_label, y_label, {}, ""};
    for (const RunData& r : runs) c.series.push_back(curve(r, type, value, x));
    body += render_line_chart(c);
  };
  body += "<h2>Learning curves</h2>";
  overlay("compare-loss-vs-step", "Training loss against steps", "train", "loss", "step", "step",
          "loss");
  overlay("compare-accuracy-vs-step", "Test accuracy against steps", "eval", "test_accuracy",
          "step", "step", "test accuracy");
  overlay("compare-loss-vs-time", "Training loss against training time", "train", "loss", "elapsed",
          "training time (s)", "loss");
  overlay("compare-accuracy-vs-time", "Test accuracy against training time", "eval",
          "test_accuracy", "elapsed", "training time (s)", "test accuracy");
  bool language_models = false;
  for (const RunData& r : runs) language_models = language_models || r.summary.contains("tokens");
  if (language_models) {  // the comparison language-model papers make: at equal tokens, at equal
                          // time
    overlay("compare-test-loss-vs-tokens", "Test loss against training tokens", "eval", "test_loss",
            "tokens", "tokens (all workers)", "test loss (nats/token)");
    overlay("compare-test-loss-vs-time", "Test loss against training time", "eval", "test_loss",
            "elapsed", "training time (s)", "test loss (nats/token)");
  }
  body += "<h2>Communication</h2>";
  LineChart bytes{"compare-bytes",
                  "Bytes sent per rank (mean over ranks)",
                  "training time (s)",
                  "bytes sent",
                  {},
                  "bytes"};
  for (const RunData& r : runs) bytes.series.push_back(mean_bytes(r));
  body += render_line_chart(bytes);
  return html_page("desync comparison", body);
}

}  // namespace desync
