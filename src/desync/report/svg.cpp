#include "desync/report/svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace desync {
namespace {

// Tableau 10: distinguishable, and readable in print.
const char* const kPalette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
const char* color(size_t i) { return kPalette[i % (sizeof kPalette / sizeof kPalette[0])]; }

const char* const kCss =
    R"(body{font:14px/1.4 sans-serif;margin:1.5em 2em;color:#222;max-width:1400px}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
p.sub{color:#555;margin-top:0}
table{border-collapse:collapse;margin:.5em 0 1em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f4f4f4}
.notes{color:#444;max-width:60em}
figure.chart{display:inline-block;margin:0 1.5em 1.5em 0;vertical-align:top}
figure.chart figcaption{font-weight:600;margin-bottom:.3em}
figure.chart svg{font:11px sans-serif;background:#fff}
figure.chart .axis{stroke:#444;stroke-width:1}
figure.chart .grid{stroke:#e4e4e4;stroke-width:1}
figure.chart .series{fill:none;stroke-width:1.8}
figure.chart .no-data{fill:#888;font-size:14px}
figure.chart .value{fill:#222}
figure.chart .value-number{font-weight:700}
figure.chart .value-at{fill:#555}
ul.legend{list-style:none;padding:0;margin:.3em 0 0 0;font:12px sans-serif;max-width:640px}
ul.legend li{display:inline-block;margin-right:1em}
ul.legend .swatch{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-.1em}
)";

constexpr double kWidth = 640, kHeight = 300;
constexpr double kLeft = 72, kRight = 16, kTop = 12, kBottom = 44;

std::string number(double v) {
  if (v == 0) return "0";
  double a = std::fabs(v);
  if (a >= 1e6 || a < 1e-3) return fmt::format("{:.3g}", v);
  return fmt::format("{:.4g}", v);
}

std::string format_value(double v, const std::string& unit) {
  if (unit == "bytes") return human_bytes(v);
  if (unit == "%") return fmt::format("{:.1f} %", v);
  if (unit == "s") return number(v) + " s";
  return number(v);
}

// About `count` round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten;
// for bytes, powers of two times 1, 2 or 5 of a binary unit read just as well).
std::vector<double> ticks(double lo, double hi, int count) {
  if (!(hi > lo)) return {lo};
  double raw = (hi - lo) / count;
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> out;
  for (double t = std::ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step)
    out.push_back(std::fabs(t) < step * 1e-9 ? 0.0 : t);
  return out;
}

// Widens a degenerate range and rounds it out to tick steps.
void nice_range(double& lo, double& hi) {
  if (!(hi > lo)) {
    double pad = lo == 0 ? 1.0 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  std::vector<double> t = ticks(lo, hi, 5);
  if (t.size() >= 2) {
    double step = t[1] - t[0];
    lo = std::floor(lo / step + 1e-9) * step;
    hi = std::ceil(hi / step - 1e-9) * step;
  }
}

// Byte axes tick at round numbers of a binary unit (1, 2, 5 MiB, ...): the unit's size.
double tick_unit(double lo, double hi, const std::string& unit) {
  double scale = 1, m = std::max(std::fabs(lo), std::fabs(hi));
  if (unit == "bytes")
    while (m / scale >= 1024.0) scale *= 1024.0;
  return scale;
}

std::string legend(const std::vector<std::string>& labels) {
  std::string out = "<ul class=\"legend\">";
  for (size_t i = 0; i < labels.size(); ++i)
    out += fmt::format("<li><span class=\"swatch\" style=\"background:{}\"></span>{}</li>",
                       color(i), html_escape(labels[i]));
  return out + "</ul>";
}

std::string open_figure(const std::string& id, const char* kind, const std::string& title,
                        double height) {
  return fmt::format(
      "<figure class=\"chart\" id=\"{0}\" data-chart=\"{1}\"><figcaption>{2}</figcaption>"
      "<svg viewBox=\"0 0 {3} {4}\" width=\"{3}\" "
      "height=\"{4}\" role=\"img\" aria-label=\"{2}\">",
      html_escape(id), kind, html_escape(title), kWidth, height);
}

std::string no_data(double cx, double cy) {
  return fmt::format(
      "<text class=\"no-data\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">no data</text>", cx, cy);
}

// "at step 937"; an x label with its unit in parentheses reads "at training time 81.2 s".
std::string at_x(const std::string& x_label, double x) {
  const size_t open = x_label.rfind(" (");
  if (open != std::string::npos && x_label.size() > open + 3 && x_label.back() == ')')
    return fmt::format("at {} {} {}", x_label.substr(0, open), number(x),
                       x_label.substr(open + 2, x_label.size() - open - 3));
  return x_label.empty() ? "at " + number(x) : fmt::format("at {} {}", x_label, number(x));
}

// A line chart whose series have one point each: each series' label, value and x as a line of
// large text, one row per series, in the frame a chart would take.
std::string render_values(const LineChart& chart) {
  struct Row {
    size_t k;
    double x, y;
  };
  std::vector<Row> rows;
  for (size_t k = 0; k < chart.series.size(); ++k) {
    const Series& s = chart.series[k];
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i)
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) rows.push_back({k, s.x[i], s.y[i]});
  }
  const double pw = kWidth - 2 * kRight, ph = kHeight - 2 * kTop;
  const double row_height = std::min(96.0, ph / static_cast<double>(rows.size()));
  std::string out = open_figure(chart.id, "value", chart.title, kHeight);
  out += fmt::format(
      "<rect class=\"grid\" fill=\"none\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>", kRight,
      kTop, pw, ph);
  const double top = kTop + (ph - row_height * static_cast<double>(rows.size())) / 2;
  for (size_t r = 0; r < rows.size(); ++r) {
    const Series& s = chart.series[rows[r].k];
    const std::string value = format_value(rows[r].y, chart.y_unit),
                      at = at_x(chart.x_label, rows[r].x);
    // Large, but narrow enough for the frame (text at about 0.6 em per character).
    const double chars = static_cast<double>(value.size()) +
                         0.5 * static_cast<double>(s.label.size() + at.size() + 2);
    const double size = std::min({40.0, 0.5 * row_height, (pw - 24) / (0.6 * chars)});
    out += fmt::format(
        "<text class=\"value\" data-series=\"{0}\" x=\"{1}\" y=\"{2:.1f}\" "
        "text-anchor=\"middle\" font-size=\"{3:.1f}\"><tspan class=\"value-label\" fill=\"{4}\" "
        "font-size=\"{5:.1f}\">{0}</tspan> <tspan class=\"value-number\">{6}</tspan> "
        "<tspan class=\"value-at\" font-size=\"{5:.1f}\">{7}</tspan><title>{0}: {8} = {6}, {9} = "
        "{10}</title></text>",
        html_escape(s.label), kWidth / 2,
        top + (static_cast<double>(r) + 0.5) * row_height + size / 3, size, color(rows[r].k),
        size / 2, html_escape(value), html_escape(at), html_escape(chart.y_label),
        html_escape(chart.x_label), number(rows[r].x));
  }
  return out + "</svg></figure>";
}

}  // namespace

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  double a = std::fabs(b);
  while (a >= 1024.0 && u < 4) {
    a /= 1024.0;
    b /= 1024.0;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", b) : fmt::format("{:.1f} {}", b, units[u]);
}

std::string html_page(const std::string& title, const std::string& body) {
  return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" +
         html_escape(title) + "</title><style>" + kCss + "</style></head><body>\n" + body +
         "\n</body></html>\n";
}

std::string render_line_chart(const LineChart& chart) {
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
  double y_lo = x_lo, y_hi = -x_lo;
  bool any = false;
  size_t most_points = 0;  // of any one series
  for (const Series& s : chart.series) {
    size_t points = 0;
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      any = true;
      ++points;
      x_lo = std::min(x_lo, s.x[i]);
      x_hi = std::max(x_hi, s.x[i]);
      y_lo = std::min(y_lo, s.y[i]);
      y_hi = std::max(y_hi, s.y[i]);
    }
    most_points = std::max(most_points, points);
  }
  if (most_points == 1) return render_values(chart);  // lone dots would be no curve: the numbers
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  std::string out = open_figure(chart.id, "line", chart.title, kHeight);
  out += fmt::format(
      "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>"
      "<text transform=\"translate(14 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
      kLeft + pw / 2, kHeight - 6, html_escape(chart.x_label), kTop + ph / 2,
      html_escape(chart.y_label));
  if (!any) {
    out += fmt::format(
        "<rect class=\"axis\" fill=\"none\" x=\"{}\" y=\"{}\" width=\"{}\" "
        "height=\"{}\"/>",
        kLeft, kTop, pw, ph);
    out += no_data(kLeft + pw / 2, kTop + ph / 2);
    return out + "</svg></figure>";
  }
  if (y_lo > 0 && y_lo < 0.5 * y_hi) y_lo = 0;  // anchor positive quantities at zero
  nice_range(x_lo, x_hi);
  const double y_unit = tick_unit(y_lo, y_hi, chart.y_unit);
  y_lo /= y_unit;
  y_hi /= y_unit;
  nice_range(y_lo, y_hi);
  y_lo *= y_unit;
  y_hi *= y_unit;
  auto px = [&](double x) { return kLeft + (x - x_lo) / (x_hi - x_lo) * pw; };
  auto py = [&](double y) { return kTop + ph - (y - y_lo) / (y_hi - y_lo) * ph; };

  for (double tick : ticks(y_lo / y_unit, y_hi / y_unit, 5)) {
    const double t = tick * y_unit;
    out += fmt::format(
        "<line class=\"grid\" x1=\"{0}\" x2=\"{1}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\"/>"
        "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\">{5}</text>",
        kLeft, kLeft + pw, py(t), kLeft - 4, py(t) + 4, html_escape(format_value(t, chart.y_unit)));
  }
  for (double t : ticks(x_lo, x_hi, 6)) {
    out += fmt::format(
        "<line class=\"grid\" x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\"/>"
        "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>",
        px(t), kTop, kTop + ph, kTop + ph + 14, number(t));
  }
  out += fmt::format("<path class=\"axis\" fill=\"none\" d=\"M{0} {1}V{2}H{3}\"/>", kLeft, kTop,
                     kTop + ph, kLeft + pw);

  std::vector<std::string> labels;
  for (size_t k = 0; k < chart.series.size(); ++k) {
    const Series& s = chart.series[k];
    labels.push_back(s.label);
    std::string d, dots;
    size_t points = 0;
    size_t n = std::min(s.x.size(), s.y.size());
    for (size_t i = 0; i < n; ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      d += fmt::format("{}{:.1f} {:.1f}", points == 0 ? "M" : "L", px(s.x[i]), py(s.y[i]));
      ++points;
    }
    if (points == 0) continue;
    if (points <= 40) {  // few points (evaluations): mark each, with its values as a tooltip
      for (size_t i = 0; i < n; ++i) {
        if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
        dots += fmt::format(
            "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.5\" fill=\"{}\"><title>{}: {} = {}, {} = "
            "{}</title></circle>",
            px(s.x[i]), py(s.y[i]), color(k), html_escape(s.label), html_escape(chart.x_label),
            number(s.x[i]), html_escape(chart.y_label),
            html_escape(format_value(s.y[i], chart.y_unit)));
      }
    }
    out += fmt::format(
        "<path class=\"series\" data-series=\"{0}\" stroke=\"{1}\" d=\"{2}\"><title>{0}</title>"
        "</path>{3}",
        html_escape(s.label), color(k), d, dots);
  }
  out += "</svg>";
  if (!labels.empty()) out += legend(labels);
  return out + "</figure>";
}

std::string render_bar_chart(const BarChart& chart) {
  constexpr double kRow = 22, kLabel = 96, kBarRight = 44;  // room for the last tick's label
  const size_t nbars = chart.bars.size();
  const double height = kTop + std::max<double>(1, nbars) * kRow + kBottom;
  const double pw = kWidth - kLabel - kBarRight, ph = std::max<double>(1, nbars) * kRow;
  std::string out = open_figure(chart.id, "bar", chart.title, height);
  out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>", kLabel + pw / 2,
                     height - 6, html_escape(chart.value_label));

  std::vector<double> totals(nbars, 0.0);
  double max_total = 0;
  for (size_t b = 0; b < nbars; ++b) {
    if (b < chart.values.size())
      for (double v : chart.values[b])
        if (std::isfinite(v) && v > 0) totals[b] += v;
    max_total = std::max(max_total, totals[b]);
  }
  if (nbars == 0 || max_total <= 0) {
    out += fmt::format(
        "<rect class=\"axis\" fill=\"none\" x=\"{}\" y=\"{}\" width=\"{}\" "
        "height=\"{}\"/>",
        kLabel, kTop, pw, ph);
    out += no_data(kLabel + pw / 2, kTop + ph / 2);
    return out + "</svg></figure>";
  }
  double hi = chart.fractions ? 100.0 : max_total, lo = 0;
  const double unit = chart.fractions ? 1.0 : tick_unit(lo, hi, chart.unit);
  hi /= unit;
  if (!chart.fractions) nice_range(lo, hi);
  hi *= unit;
  const std::string axis_unit = chart.fractions ? "%" : chart.unit;
  auto px = [&](double v) { return kLabel + v / hi * pw; };
  for (double tick : ticks(0, hi / unit, 5)) {
    const double t = tick * unit;
    out += fmt::format(
        "<line class=\"grid\" x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\"/>"
        "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>",
        px(t), kTop, kTop + ph, kTop + ph + 14, html_escape(format_value(t, axis_unit)));
  }
  for (size_t b = 0; b < nbars; ++b) {
    double y = kTop + b * kRow + 3, x = 0;
    out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", kLabel - 6,
                       y + kRow / 2 + 1, html_escape(chart.bars[b]));
    for (size_t s = 0; s < chart.segments.size(); ++s) {
      double v = b < chart.values.size() && s < chart.values[b].size() ? chart.values[b][s] : 0;
      if (!std::isfinite(v) || v <= 0) continue;
      double shown = chart.fractions ? 100.0 * v / totals[b] : v;
      std::string tip =
          fmt::format("{} · {}: {}", chart.bars[b], chart.segments[s], format_value(v, chart.unit));
      if (chart.fractions) tip += fmt::format(" ({:.1f} %)", shown);
      out += fmt::format(
          "<rect class=\"segment\" data-segment=\"{}\" x=\"{:.2f}\" y=\"{}\" width=\"{:.2f}\" "
          "height=\"{}\" fill=\"{}\"><title>{}</title></rect>",
          html_escape(chart.segments[s]), px(x), y, px(x + shown) - px(x), kRow - 6, color(s),
          html_escape(tip));
      x += shown;
    }
  }
  out += fmt::format("<path class=\"axis\" fill=\"none\" d=\"M{0} {1}V{2}H{3}\"/>", kLabel, kTop,
                     kTop + ph, kLabel + pw);
  out += "</svg>";
  return out + legend(chart.segments) + "</figure>";
}

std::string render_timeline_chart(const TimelineChart& chart) {
  constexpr double kRow = 18, kLabel = 96;
  const size_t nrows = chart.rows.size();
  const double ph = std::max<double>(1, nrows) * kRow;
  const double height = kTop + ph + kBottom, pw = kWidth - kLabel - kRight;
  std::string out = open_figure(chart.id, "timeline", chart.title, height);
  out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>", kLabel + pw / 2,
                     height - 6, html_escape(chart.x_label));
  double lo = chart.x_lo, hi = chart.x_hi;
  bool any = false;
  for (const auto& iv : chart.intervals) {
    if (iv.row >= nrows || !std::isfinite(iv.start) || !std::isfinite(iv.end)) continue;
    any = true;
    lo = std::min(lo, iv.start);
    hi = std::max(hi, iv.end);
  }
  if (!any) {
    out += fmt::format(
        "<rect class=\"axis\" fill=\"none\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>", kLabel,
        kTop, pw, ph);
    out += no_data(kLabel + pw / 2, kTop + ph / 2);
    return out + "</svg></figure>";
  }
  nice_range(lo, hi);
  auto px = [&](double x) { return kLabel + (x - lo) / (hi - lo) * pw; };
  for (double t : ticks(lo, hi, 6))
    out += fmt::format(
        "<line class=\"grid\" x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\"/>"
        "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>",
        px(t), kTop, kTop + ph, kTop + ph + 14, number(t));
  for (size_t r = 0; r < nrows; ++r)
    out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", kLabel - 6,
                       kTop + static_cast<double>(r) * kRow + kRow / 2 + 4,
                       html_escape(chart.rows[r]));
  for (const auto& iv : chart.intervals) {
    if (iv.row >= nrows || !std::isfinite(iv.start) || !std::isfinite(iv.end)) continue;
    const std::string tip = iv.tip.empty() ? fmt::format("{}: {} to {}", chart.rows[iv.row],
                                                         number(iv.start), number(iv.end))
                                           : iv.tip;
    out += fmt::format(
        "<rect class=\"interval\" data-row=\"{}\" x=\"{:.2f}\" y=\"{}\" width=\"{:.2f}\" "
        "height=\"{}\" fill=\"{}\" fill-opacity=\"0.8\"><title>{}</title></rect>",
        html_escape(chart.rows[iv.row]), px(iv.start),
        kTop + static_cast<double>(iv.row) * kRow + 3, std::max(1.0, px(iv.end) - px(iv.start)),
        kRow - 6, color(iv.row), html_escape(tip));
  }
  out += fmt::format("<path class=\"axis\" fill=\"none\" d=\"M{0} {1}V{2}H{3}\"/>", kLabel, kTop,
                     kTop + ph, kLabel + pw);
  return out + "</svg></figure>";
}

}  // namespace desync
