#include "desync/report/compare.h"

#include <gtest/gtest.h>

namespace desync {
namespace {

RunData run_with_samples(const std::string& name, int64_t samples) {
  RunData r;
  r.dir = "runs/" + name;
  r.name = name;
  r.summary = {{"algorithm", name}, {"samples", samples}};
  return r;
}

TEST(Compare, WarnsOnlyAboutRunsWhoseBudgetIsMoreThanOnePercentSmaller) {
  std::vector<RunData> runs = {run_with_samples("ddp", 60000), run_with_samples("acco", 59500),
                               run_with_samples("diloco", 59000)};
  std::vector<std::string> w = budget_warnings(runs);
  ASSERT_EQ(w.size(), 1u);  // 59500 is within 1% of 60000; 59000 is 1.7% fewer
  EXPECT_NE(w[0].find("diloco"), std::string::npos);
  EXPECT_NE(w[0].find("59000"), std::string::npos);
  EXPECT_NE(compare_html(runs, 0.5).find(w[0].substr(0, 30)), std::string::npos);
}

TEST(Compare, EqualBudgetsGiveNoWarning) {
  EXPECT_TRUE(budget_warnings({run_with_samples("a", 6400), run_with_samples("b", 6400)}).empty());
}

}  // namespace
}  // namespace desync
