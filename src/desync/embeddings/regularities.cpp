#include "desync/embeddings/regularities.h"

#include <fmt/format.h>

#include <cmath>

#include "desync/report/svg.h"

namespace desync {
namespace {

double share(int64_t part, int64_t whole) {
  return whole > 0 ? static_cast<double>(part) / static_cast<double>(whole) : NAN;
}

nlohmann::json number(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); }

nlohmann::json counts_json(const AnalogyCounts& c) {
  return {{"questions", c.questions},
          {"oov", c.oov},
          {"standard_accuracy", number(share(c.standard, c.questions))},
          {"honest_accuracy", number(share(c.honest, c.questions))},
          {"honest_predicted_a", c.honest_a},
          {"honest_predicted_a_star", c.honest_a_star},
          {"honest_predicted_b", c.honest_b}};
}

nlohmann::json scores_json(const OffsetScores& s) {
  return {{"pairs", s.pairs}, {"ocs", number(s.ocs)}, {"pcs", number(s.pcs)}};
}

// The six controls with their names, in the spec's order.
std::vector<std::pair<std::string, const OffsetScores*>> controls_of(const ControlScores& c) {
  return {{"permutation_within", &c.permutation_within},
          {"mismatched_within", &c.mismatched_within},
          {"mismatched_across", &c.mismatched_across},
          {"random_start", &c.random_start},
          {"random_end", &c.random_end},
          {"fully_random", &c.fully_random}};
}

std::string cell(double x) { return std::isfinite(x) ? fmt::format("{:.3f}", x) : "-"; }

}  // namespace

std::vector<CategoryRegularity> measure_regularities(const EmbeddingSpace& space,
                                                     const std::vector<Category>& categories,
                                                     const RegularityOptions& options) {
  std::vector<CategoryRegularity> out;
  std::vector<RowPairs> rows;
  std::vector<std::string> groups;
  for (size_t c = 0; c < categories.size(); ++c) {
    const Category& category = categories[c];
    RowPairs p = row_pairs(space, category);
    CategoryRegularity r;
    r.group = category.group;
    r.name = category.name;
    r.pairs = p.size();
    r.oov = p.oov;
    r.analogy = analogy_test(space, p, options.analogy);
    r.decomposition = decompose(space, p);
    OffsetOptions o = options.offsets;
    o.seed = options.offsets.seed + c;
    r.offsets = offset_scores(space, p, o);
    out.push_back(std::move(r));
    rows.push_back(std::move(p));
    groups.push_back(category.group);
  }
  if (options.run_controls) {
    const std::vector<ControlScores> controls =
        control_scores(space, rows, groups, options.controls);
    for (size_t c = 0; c < out.size(); ++c) out[c].controls = controls[c];
  }
  return out;
}

nlohmann::json regularities_json(const std::vector<CategoryRegularity>& results,
                                 const RegularityOptions& options) {
  nlohmann::json categories = nlohmann::json::array();
  for (const CategoryRegularity& r : results) {
    const Decomposition& d = r.decomposition;
    nlohmann::json controls = nlohmann::json::object();
    if (options.run_controls)
      for (const auto& [name, s] : controls_of(r.controls)) controls[name] = scores_json(*s);
    categories.push_back({
        {"group", r.group},
        {"name", r.name},
        {"pairs", r.pairs},
        {"oov_pairs", r.oov},
        {"3cosadd", counts_json(r.analogy.add)},
        {"3cosmul", counts_json(r.analogy.mul)},
        {"decomposition",
         {{"questions", d.questions},
          {"cos", number(d.cos)},
          {"b*b'", number(d.b_b)},
          {"o_a*o_b", number(d.oa_ob)},
          {"o_a*b", number(d.oa_b)},
          {"reference",
           {{"b*analogy", number(d.ref_b_analogy)},
            {"o_a*b", number(d.ref_oa_b)},
            {"o_a^2", number(d.ref_oa2)}}},
          {"delta_sim",
           {{"delta_sim", number(d.dsim)},
            {"rest", number(d.dsim_rest)},
            {"o_a*o_b", number(d.dsim_oa_ob)},
            {"o_b*b", number(d.dsim_ob_b)}}}}},
        {"offsets", scores_json(r.offsets)},
        {"controls", controls},
    });
  }
  return {{"options",
           {{"restrict_vocab", options.analogy.restrict_vocab},
            {"cosmul_eps", options.analogy.cosmul_eps},
            {"shuffles", options.offsets.shuffles},
            {"min_pairs", options.offsets.min_pairs},
            {"control_draws", options.controls.draws},
            {"size_random", options.controls.size_random},
            {"limit_word", options.controls.limit_word},
            {"seed", options.offsets.seed}}},
          {"categories", categories}};
}

std::string regularities_table(const std::vector<CategoryRegularity>& results) {
  std::string out = fmt::format(
      "{:<28} {:>5} {:>7} {:>7} {:>7} {:>6} {:>7} {:>7} {:>6} {:>6} {:>7} {:>7}\n", "category",
      "pairs", "add", "honest", "mul", "n_b", "b*b'", "oa*ob", "OCS", "PCS", "PCSperm", "PCSrand");
  for (const CategoryRegularity& r : results) {
    const AnalogyCounts& a = r.analogy.add;
    out += fmt::format("{:<28} {:>5} {:>7} {:>7} {:>7} {:>6} {:>7} {:>7} {:>6} {:>6} {:>7} {:>7}\n",
                       (r.group.empty() ? "" : r.group + "/") + r.name, r.pairs,
                       cell(share(a.standard, a.questions)), cell(share(a.honest, a.questions)),
                       cell(share(r.analogy.mul.standard, r.analogy.mul.questions)),
                       cell(share(a.honest_b, a.questions)), cell(r.decomposition.b_b),
                       cell(r.decomposition.oa_ob), cell(r.offsets.ocs), cell(r.offsets.pcs),
                       cell(r.controls.permutation_within.pcs), cell(r.controls.fully_random.pcs));
  }
  return out;
}

std::string regularities_html(const std::vector<CategoryRegularity>& results,
                              const std::string& title) {
  std::string body = "<h1>" + html_escape(title) + "</h1>\n<pre>" +
                     html_escape(regularities_table(results)) + "</pre>\n";
  body +=
      "<p>add, honest, mul: 3CosAdd standard and honest accuracy, 3CosMul standard accuracy; "
      "n_b: share of honest predictions equal to b; b*b', oa*ob: mean 3CosAdd terms; PCSperm, "
      "PCSrand: PCS of the permutation-within and fully random controls.</p>\n";
  for (size_t c = 0; c < results.size(); ++c) {
    const CategoryRegularity& r = results[c];
    for (const bool pcs : {false, true}) {
      BarChart chart;
      chart.id = fmt::format("{}-{}", pcs ? "pcs" : "ocs", c);
      chart.title = fmt::format("{}{}: {} beside its controls",
                                r.group.empty() ? "" : r.group + "/", r.name, pcs ? "PCS" : "OCS");
      chart.value_label = pcs ? "PCS" : "OCS";
      chart.segments = {chart.value_label};
      chart.bars.push_back("true pairs");
      chart.values.push_back({pcs ? r.offsets.pcs : r.offsets.ocs});
      for (const auto& [name, s] : controls_of(r.controls)) {
        chart.bars.push_back(name);
        chart.values.push_back({pcs ? s->pcs : s->ocs});
      }
      body += render_bar_chart(chart);
    }
  }
  return html_page(title, body);
}

}  // namespace desync
