// Relation categories: pairs (source, target) grouped in named categories, read from a folder
// in the BATS 3.0 layout.
//
// Layout: one sub-folder per group, one UTF-8 file per category, named "<id> [<label>].txt" or
// "<id>.txt"; each line "a<TAB>b1/b2/..." (any whitespace separates the two fields; "_" joins
// the words of a multiword item). Reading follows BATS's own reader: words are lower-cased; a
// non-blank line without exactly two fields is an error naming the file and the line; only the
// first alternative target is kept unless all_targets; pairs whose target equals the source
// and repeated pairs are dropped (file order kept). Files directly in DIR (no sub-folder) form
// the group "". Groups and files are read in sorted order.
//
// clean_pairs() drops the pairs with a word outside a vocabulary (counted as out of
// vocabulary).
//
// Torch-free. Pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace desync {

struct Category {
  std::string group;  // the sub-folder, e.g. "morph"
  std::string name;   // the file name without ".txt", e.g. "I_noun_plural_irreg"
  // (source, targets): targets[0] is the first alternative; with all_targets, every one.
  std::vector<std::pair<std::string, std::vector<std::string>>> pairs;
};

struct CategoryReadOptions {
  bool all_targets = false;
};

// Every category under `dir`. Throws DataError (one line, naming file and line) for a missing
// folder, an unreadable file, a malformed line, invalid UTF-8 or a folder without categories.
std::vector<Category> read_categories(const std::string& dir,
                                      const CategoryReadOptions& options = {});

// Writes `categories` under `dir` in the same layout ("<group>/<name>.txt", one line
// "source<TAB>t1/t2/..." per pair), each file atomically.
void write_categories(const std::string& dir, const std::vector<Category>& categories);

// `c` without the pairs whose source or (every) target fails `known`; targets that fail it are
// dropped from a pair. Returns the number of pairs dropped.
int64_t clean_pairs(Category& c, const std::function<bool(const std::string&)>& known);

}  // namespace desync
