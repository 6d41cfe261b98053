#include "desync/embeddings/categories.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string_view>

#include "desync/core/error.h"
#include "desync/data/utf8.h"

namespace desync {
namespace fs = std::filesystem;
namespace {

// ASCII and Latin-1 letters lower-cased (A-Z, À-Þ but ×): the letters of BATS's words.
std::string lower(const std::string& word) {
  std::string out;
  out.reserve(word.size());
  for (size_t i = 0; i < word.size();) {
    uint32_t cp = 0;
    const size_t n = utf8_char(word, i, &cp);
    if (cp >= 'A' && cp <= 'Z') cp += 'a' - 'A';
    if (cp >= 0xC0 && cp <= 0xDE && cp != 0xD7) cp += 0x20;
    append_utf8(out, cp);
    i += n;
  }
  return out;
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    uint32_t cp = 0;
    const size_t n = utf8_char(s, i, &cp);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, sep)) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

Category read_category(const fs::path& path, const std::string& group,
                       const CategoryReadOptions& options) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError("cannot open " + path.string());
  Category c{group, path.stem().string(), {}};
  std::set<std::pair<std::string, std::vector<std::string>>> seen;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    const std::string where = path.string() + ":" + std::to_string(number);
    if (!valid_utf8(line)) throw DataError(where + ": invalid UTF-8");
    std::istringstream fields(line);
    std::vector<std::string> f;
    for (std::string w; fields >> w;) f.push_back(w);
    if (f.empty()) continue;
    if (f.size() != 2) {
      throw DataError(where + ": expected 'source<TAB>target[/target...]', got " +
                      std::to_string(f.size()) + " fields");
    }
    const std::string source = lower(f[0]);
    std::vector<std::string> targets = split(lower(f[1]), '/');
    if (targets.empty()) throw DataError(where + ": no target after the source");
    if (!options.all_targets) targets.resize(1);
    targets.erase(std::remove(targets.begin(), targets.end(), source), targets.end());
    if (targets.empty() || !seen.emplace(source, targets).second) continue;
    c.pairs.emplace_back(source, std::move(targets));
  }
  if (in.bad()) throw DataError("cannot read " + path.string());
  return c;
}

// The *.txt files directly in `dir`, sorted.
std::vector<fs::path> category_files(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

std::vector<Category> read_categories(const std::string& dir, const CategoryReadOptions& options) {
  if (!fs::is_directory(dir)) throw DataError("category folder " + dir + " does not exist");
  std::vector<Category> out;
  try {
    for (const fs::path& f : category_files(dir)) out.push_back(read_category(f, "", options));
    std::vector<fs::path> groups;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.is_directory()) groups.push_back(e.path());
    }
    std::sort(groups.begin(), groups.end());
    for (const fs::path& g : groups) {
      for (const fs::path& f : category_files(g)) {
        out.push_back(read_category(f, g.filename().string(), options));
      }
    }
  } catch (const fs::filesystem_error& e) {
    throw DataError("cannot list " + dir + ": " + e.code().message());
  }
  if (out.empty()) {
    throw DataError(dir + " holds no category: expected <group>/<name>.txt files");
  }
  return out;
}

void write_categories(const std::string& dir, const std::vector<Category>& categories) {
  for (const Category& c : categories) {
    const fs::path folder = c.group.empty() ? fs::path(dir) : fs::path(dir) / c.group;
    std::error_code ec;
    fs::create_directories(folder, ec);
    if (ec) throw DataError("cannot create " + folder.string() + ": " + ec.message());
    const fs::path path = folder / (c.name + ".txt");
    const fs::path tmp = folder / (c.name + ".txt.tmp");
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      for (const auto& [source, targets] : c.pairs) {
        out << source << '\t';
        for (size_t i = 0; i < targets.size(); ++i) out << (i > 0 ? "/" : "") << targets[i];
        out << '\n';
      }
      out.flush();
      if (!out) throw DataError("cannot write " + tmp.string());
    }
    fs::rename(tmp, path, ec);
    if (ec) throw DataError("cannot rename " + tmp.string() + " to " + path.string());
  }
}

int64_t clean_pairs(Category& c, const std::function<bool(const std::string&)>& known) {
  const size_t before = c.pairs.size();
  std::vector<std::pair<std::string, std::vector<std::string>>> kept;
  for (auto& [source, targets] : c.pairs) {
    if (!known(source)) continue;
    targets.erase(std::remove_if(targets.begin(), targets.end(),
                                 [&](const std::string& t) { return !known(t); }),
                  targets.end());
    if (!targets.empty()) kept.emplace_back(std::move(source), std::move(targets));
  }
  c.pairs = std::move(kept);
  return static_cast<int64_t>(before - c.pairs.size());
}

}  // namespace desync
