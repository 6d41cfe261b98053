#include "desync/report/svg.h"

#include <gtest/gtest.h>

#include <cmath>
#include <regex>

namespace desync {
namespace {

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

std::vector<double> attribute_values(const std::string& text, const std::string& element,
                                     const std::string& attribute) {
  std::vector<double> out;
  std::regex element_re("<" + element + " [^>]*>");
  std::regex attr_re(" " + attribute + "=\"([-0-9.e]+)\"");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), element_re);
       it != std::sregex_iterator(); ++it) {
    std::smatch m;
    std::string tag = it->str();
    if (std::regex_search(tag, m, attr_re)) out.push_back(std::stod(m[1]));
  }
  return out;
}

TEST(Svg, LineChartHasItsIdOneMarkedPathPerSeriesAndEscapedLabels) {
  LineChart c{"loss-chart", "Loss <train>", "step", "loss", {}, ""};
  c.series.push_back({"a<b", {1, 2, 3}, {3, 2, 1}});
  c.series.push_back({"c&d", {1, 2, 3}, {2, 2, 2}});
  std::string svg = render_line_chart(c);
  EXPECT_NE(svg.find("id=\"loss-chart\""), std::string::npos);
  EXPECT_NE(svg.find("data-chart=\"line\""), std::string::npos);
  EXPECT_EQ(count(svg, "<svg "), 1u);
  EXPECT_EQ(count(svg, "<path class=\"series\""), 2u);
  EXPECT_NE(svg.find("data-series=\"a&lt;b\""), std::string::npos);
  EXPECT_NE(svg.find("data-series=\"c&amp;d\""), std::string::npos);
  EXPECT_NE(svg.find("Loss &lt;train&gt;"), std::string::npos);
  EXPECT_EQ(svg.find("<train>"), std::string::npos);
  EXPECT_EQ(svg.find("no data"), std::string::npos);
}

TEST(Svg, LineChartSkipsNonFinitePointsAndSaysNoDataWhenNothingIsLeft) {
  LineChart c{"c", "t", "x", "y", {}, ""};
  c.series.push_back({"s", {1, 2, NAN, 4}, {1, INFINITY, 3, 4}});
  std::string svg = render_line_chart(c);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(svg, m, std::regex("class=\"series\"[^>]* d=\"([^\"]*)\"")));
  std::string d = m[1];
  EXPECT_EQ(count(d, "M"), 1u);
  EXPECT_EQ(count(d, "L"), 1u);  // (1,1) and (4,4) only
  EXPECT_EQ(d.find("nan"), std::string::npos);

  LineChart empty{"e", "t", "x", "y", {{"s", {NAN}, {1}}}, ""};
  std::string none = render_line_chart(empty);
  EXPECT_NE(none.find("no data"), std::string::npos);
  EXPECT_EQ(none.find("class=\"series\""), std::string::npos);
  EXPECT_NE(none.find("id=\"e\""), std::string::npos);
}

TEST(Svg, SeriesOfOnePointShowTheNumberInsteadOfALoneDot) {
  LineChart c{"acc", "Test accuracy", "step", "test accuracy", {}, ""};
  c.series.push_back({"test accuracy", {NAN, 937}, {0.5, 0.88125}});
  std::string svg = render_line_chart(c);
  EXPECT_NE(svg.find("id=\"acc\""), std::string::npos);
  EXPECT_NE(svg.find("data-chart=\"value\""), std::string::npos);
  EXPECT_EQ(count(svg, "<svg "), 1u);
  // No chart: no series path, no dot, no axis, no ticks.
  EXPECT_EQ(svg.find("class=\"series\""), std::string::npos);
  EXPECT_EQ(svg.find("<circle"), std::string::npos);
  EXPECT_EQ(svg.find("class=\"axis\""), std::string::npos);
  EXPECT_EQ(svg.find("no data"), std::string::npos);
  // The number, large, with where it was measured.
  EXPECT_EQ(count(svg, "<text class=\"value\" data-series=\"test accuracy\""), 1u);
  EXPECT_NE(svg.find("<tspan class=\"value-number\">0.8812</tspan>"), std::string::npos) << svg;
  EXPECT_NE(svg.find(">at step 937<"), std::string::npos) << svg;
  for (double size : attribute_values(svg, "text class=\"value\"", "font-size")) {
    EXPECT_GE(size, 24);
  }

  // One value per series (compare: one final evaluation per run); units read as units.
  LineChart runs{"t", "t", "training time (s)", "bytes", {}, "bytes"};
  runs.series.push_back({"ddp", {81.5}, {3.0 * 1024 * 1024}});
  runs.series.push_back({"zero1", {90}, {1536}});
  std::string two = render_line_chart(runs);
  EXPECT_NE(two.find("data-chart=\"value\""), std::string::npos);
  EXPECT_EQ(count(two, "<text class=\"value\""), 2u);
  EXPECT_NE(two.find(">3.0 MiB<"), std::string::npos);
  EXPECT_NE(two.find(">at training time 81.5 s<"), std::string::npos) << two;
  EXPECT_NE(two.find(">at training time 90 s<"), std::string::npos);

  // A curve beside a single point stays a chart (train loss and the one final test loss).
  LineChart loss{"l", "t", "step", "loss", {}, ""};
  loss.series.push_back({"train loss", {1, 2, 3}, {3, 2, 1}});
  loss.series.push_back({"test loss", {3}, {1.5}});
  std::string mixed = render_line_chart(loss);
  EXPECT_NE(mixed.find("data-chart=\"line\""), std::string::npos);
  EXPECT_EQ(count(mixed, "class=\"series\""), 2u);
}

TEST(Svg, PointsStayInsideThePlotArea) {
  LineChart c{"c", "t", "x", "y", {{"s", {0, 10, 20}, {5, -3, 1e6}}}, ""};
  std::string svg = render_line_chart(c);
  for (double x : attribute_values(svg, "circle", "cx")) {
    EXPECT_GE(x, 0);
    EXPECT_LE(x, 640);
  }
  for (double y : attribute_values(svg, "circle", "cy")) {
    EXPECT_GE(y, 0);
    EXPECT_LE(y, 300);
  }
  EXPECT_EQ(attribute_values(svg, "circle", "cx").size(), 3u);
}

TEST(Svg, FractionBarsSplitEachBarInProportionToItsValues) {
  BarChart c{"util", "t", "share", {"rank 0", "rank 1"}, {"a", "b"}, {{1, 3}, {2, 2}}, "s", true};
  std::string svg = render_bar_chart(c);
  EXPECT_NE(svg.find("id=\"util\""), std::string::npos);
  EXPECT_EQ(count(svg, "<rect class=\"segment\""), 4u);
  std::vector<double> w = attribute_values(svg, "rect class=\"segment\"", "width");
  ASSERT_EQ(w.size(), 4u);
  EXPECT_NEAR(w[1] / w[0], 3.0, 0.01);
  EXPECT_NEAR(w[2] / w[3], 1.0, 0.01);
  EXPECT_NEAR(w[0] + w[1], w[2] + w[3], 0.02);  // both bars span the whole axis
  std::vector<double> x = attribute_values(svg, "rect class=\"segment\"", "x");
  EXPECT_NEAR(x[1], x[0] + w[0], 0.02);  // stacked, not overlapping
  EXPECT_NE(svg.find("rank 0 · b: 3 s (75.0 %)"), std::string::npos);
}

TEST(Svg, BarChartWithoutValuesSaysNoData) {
  BarChart c{"m", "t", "bytes", {"rank 0"}, {"rss"}, {{0}}, "bytes", false};
  std::string svg = render_bar_chart(c);
  EXPECT_NE(svg.find("no data"), std::string::npos);
  EXPECT_EQ(svg.find("class=\"segment\""), std::string::npos);
}

TEST(Svg, TimelineChartDrawsEachIntervalOnItsRowsLane) {
  TimelineChart c{"reductions", "In flight", "time (ms)", {"group 0", "group 1"}, {}, 0, 10};
  c.intervals.push_back({0, 1, 3, ""});
  c.intervals.push_back({1, 2, 6, "late"});
  c.intervals.push_back({0, 7, 8, ""});
  c.intervals.push_back({5, 1, 2, ""});  // no such row: skipped
  std::string svg = render_timeline_chart(c);
  EXPECT_NE(svg.find("id=\"reductions\""), std::string::npos);
  EXPECT_NE(svg.find("data-chart=\"timeline\""), std::string::npos);
  EXPECT_EQ(count(svg, "class=\"interval\""), 3u);
  EXPECT_EQ(count(svg, "data-row=\"group 0\""), 2u);
  EXPECT_EQ(count(svg, "data-row=\"group 1\""), 1u);
  EXPECT_NE(svg.find("<title>late</title>"), std::string::npos);
  std::vector<double> x = attribute_values(svg, "rect class=\"interval\"", "x"),
                      y = attribute_values(svg, "rect class=\"interval\"", "y"),
                      w = attribute_values(svg, "rect class=\"interval\"", "width");
  ASSERT_EQ(x.size(), 3u);
  EXPECT_EQ(y[0], y[2]);  // one lane per row
  EXPECT_GT(y[1], y[0]);
  EXPECT_NEAR(w[1], 2 * w[0], 0.02);  // 4 ms against 2 ms on one scale
  EXPECT_NEAR(x[2] - x[0], 3 * w[0], 0.02);
  TimelineChart empty{"reductions", "In flight", "time (ms)", {}, {}, 0, 0};
  EXPECT_NE(render_timeline_chart(empty).find("no data"), std::string::npos);
}

TEST(Svg, ByteAxesTickAtRoundBinaryUnits) {
  const double mib = 1024.0 * 1024.0;
  LineChart c{"b", "t", "x", "bytes", {{"s", {0, 1, 2}, {0, 7 * mib, 14 * mib}}}, "bytes"};
  std::string svg = render_line_chart(c);
  for (const char* label : {">5.0 MiB<", ">10.0 MiB<", ">15.0 MiB<"})
    EXPECT_NE(svg.find(label), std::string::npos) << label;
  BarChart bars{"m", "t", "bytes", {"rank 0"}, {"rss"}, {{300 * mib}}, "bytes", false};
  EXPECT_NE(render_bar_chart(bars).find(">300.0 MiB<"), std::string::npos);
}

TEST(Svg, AxesStartAtALabelledTick) {
  // 0.863 rounds down to 0.86 = 43 x 0.02; 0.86 / 0.02 may come out a hair above 43.
  LineChart c{"a", "t", "step", "test accuracy", {{"s", {200, 937}, {0.863, 0.9105}}}, ""};
  std::string svg = render_line_chart(c);
  for (const char* label : {">0.86<", ">0.88<", ">0.9<", ">0.92<"})
    EXPECT_NE(svg.find(label), std::string::npos) << label;
}

TEST(Svg, HumanBytesAndEscaping) {
  EXPECT_EQ(human_bytes(0), "0 B");
  EXPECT_EQ(human_bytes(1536), "1.5 KiB");
  EXPECT_EQ(human_bytes(3.0 * 1024 * 1024), "3.0 MiB");
  EXPECT_EQ(html_escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
}

TEST(Svg, PageIsSelfContained) {
  std::string page = html_page("t<", "<p>body</p>");
  EXPECT_EQ(page.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(page.find("<title>t&lt;</title>"), std::string::npos);
  EXPECT_EQ(page.find("<script"), std::string::npos);
  EXPECT_EQ(page.find("http://"), std::string::npos);
  EXPECT_EQ(page.find("https://"), std::string::npos);
}

}  // namespace
}  // namespace desync
