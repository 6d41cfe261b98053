// Charts as inline SVG, for self-contained HTML pages: no scripts, no fonts or styles fetched
// from anywhere, so a page opens offline and in any browser.
//
// Each chart renders as <figure class="chart" id="ID" data-chart="KIND"> holding a caption and
// one <svg>; a series is a <path class="series" data-series="LABEL">, a bar segment a
// <rect class="segment" data-segment="LABEL">, each with a <title> tooltip. Tests and readers
// find a chart by its id and its marks by these classes. Non-finite values are skipped. A chart
// without data renders its frame and the words "no data" (and no marks). A timeline chart draws
// one lane per row and an interval as a <rect class="interval" data-row="ROW">. A line chart in
// which no series has more than one point (a run evaluated only at its end) is no chart: it renders
// as data-chart="value", one large <text class="value" data-series="LABEL"> per series, e.g. "test
// accuracy 0.8812 at step 937", and no axes, paths or dots. Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace desync {

// One line of a line chart: points (x[i], y[i]).
struct Series {
  std::string label;
  std::vector<double> x, y;
};

struct LineChart {
  std::string id, title, x_label, y_label;
  std::vector<Series> series;
  // Formats axis ticks and tooltips: "" (plain numbers) or "bytes" (B, KiB, MiB, ...).
  std::string y_unit;
};

// Horizontal bars, one per label in `bars`, each stacked from `segments` (values[bar][segment]).
struct BarChart {
  std::string id, title, value_label;
  std::vector<std::string> bars;
  std::vector<std::string> segments;
  std::vector<std::vector<double>> values;
  std::string unit;        // "" (plain numbers), "bytes", "s" or "%"
  bool fractions = false;  // draw each bar as shares of its own total (axis 0-100 %)
};

// Intervals on lanes (e.g. reductions in flight, one lane per group), against a shared x axis
// from x_lo to x_hi (widened to cover every interval).
struct TimelineChart {
  std::string id, title, x_label;
  std::vector<std::string> rows;  // lane labels, top to bottom
  struct Interval {
    size_t row = 0;
    double start = 0, end = 0;
    std::string tip;  // tooltip; the row label and the times when empty
  };
  std::vector<Interval> intervals;
  double x_lo = 0, x_hi = 0;
};

std::string render_line_chart(const LineChart& chart);
std::string render_bar_chart(const BarChart& chart);
std::string render_timeline_chart(const TimelineChart& chart);

// Escapes &, <, >, " and ' for HTML text and attribute values.
std::string html_escape(std::string_view text);
// 1536 -> "1.5 KiB".
std::string human_bytes(double bytes);
// A complete HTML document: `title`, the charts' CSS, and `body` (already HTML).
std::string html_page(const std::string& title, const std::string& body);

}  // namespace desync
