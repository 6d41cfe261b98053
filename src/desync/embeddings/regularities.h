// `desync regularities`: every metric of arXiv 2010.03446 on one embedding space and a set of
// relation categories, per category — the analogy tests (3CosAdd, 3CosMul; standard and honest),
// the three-term and Δsim decompositions, OCS and PCS, and the six control sets — as a table,
// JSON and an HTML page with per-category bar charts (OCS and PCS beside their controls).
//
// Pure functions of their inputs (the draws are seeded by options.seed); not thread-safe only
// in the sense that LibTorch's intra-op threads are used.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "desync/embeddings/analogy.h"
#include "desync/embeddings/categories.h"
#include "desync/embeddings/controls.h"
#include "desync/embeddings/offsets.h"
#include "desync/embeddings/space.h"

namespace desync {

struct RegularityOptions {
  AnalogyOptions analogy;
  OffsetOptions offsets;
  ControlOptions controls;
  bool run_controls = true;
};

struct CategoryRegularity {
  std::string group, name;
  int64_t pairs = 0, oov = 0;  // pairs kept, pairs dropped (a word outside the space)
  AnalogyResult analogy;
  Decomposition decomposition;
  OffsetScores offsets;
  ControlScores controls;
};

std::vector<CategoryRegularity> measure_regularities(const EmbeddingSpace& space,
                                                     const std::vector<Category>& categories,
                                                     const RegularityOptions& options);

nlohmann::json regularities_json(const std::vector<CategoryRegularity>& results,
                                 const RegularityOptions& options);
// The stdout table: one row per category.
std::string regularities_table(const std::vector<CategoryRegularity>& results);
// A self-contained HTML page: the table and, per category, OCS and PCS beside their controls.
std::string regularities_html(const std::vector<CategoryRegularity>& results,
                              const std::string& title);

}  // namespace desync
