// The word-embedding commands: corpus, wn-bats, embeddings (export), regularities, paraphrase.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "desync/algorithms/embedding/ppmi_svd.h"
#include "desync/algorithms/embedding/sgns.h"
#include "desync/algorithms/registry.h"
#include "desync/cli/commands.h"
#include "desync/core/config.h"
#include "desync/core/error.h"
#include "desync/core/fs.h"
#include "desync/data/word_dataset.h"
#include "desync/embeddings/gcide_corpus.h"
#include "desync/embeddings/paraphrase.h"
#include "desync/embeddings/regularities.h"
#include "desync/embeddings/wn_bats.h"
#include "desync/embeddings/word2vec.h"
#include "desync/embeddings/wordnet.h"
#include "desync/train/init_from.h"

namespace desync {
namespace {

constexpr const char* kGcideDir = "/usr/share/dictd";
constexpr const char* kWordnetDir = "/usr/share/wordnet";

// An sgns or ppmi_svd run's vocabulary (words with count >= min_count) and tables.
struct TrainedRun {
  Config cfg;
  WordCorpus corpus;          // the training split over `vocab`
  torch::Tensor w_in, w_out;  // [V, d], the vocabulary's rows
};

TrainedRun load_trained(const std::string& dir) {
  if (!std::filesystem::is_regular_file(dir + "/config.toml"))
    throw ConfigError(fmt::format("{} is not a run directory (it has no config.toml)", dir));
  TrainedRun t;
  t.cfg = load_config(dir + "/config.toml");
  std::unique_ptr<Algorithm> algorithm = make_algorithm(t.cfg.algorithm);
  int64_t min_count = 0;
  if (const auto* s = dynamic_cast<const Sgns*>(algorithm.get())) min_count = s->config().min_count;
  if (const auto* p = dynamic_cast<const PpmiSvd*>(algorithm.get())) min_count = p->min_count();
  if (min_count == 0)
    throw ConfigError(fmt::format("{} is a run of algorithm {}, not sgns or ppmi_svd", dir,
                                  t.cfg.algorithm.name));
  const DatasetSplits data = load_dataset(t.cfg.data, static_cast<uint64_t>(t.cfg.run.seed));
  const Vocabulary all = read_vocabulary_file(data.tokenizer_path);
  StagedModel model = make_model(t.cfg.model, {{}, data.train.num_classes});
  init_from_run(model, dir);
  int64_t vocab = 0;
  while (vocab < all.size() && all.count(vocab) >= min_count) ++vocab;
  t.corpus = restrict_corpus(word_corpus_of(data.train, &all), vocab);
  for (auto& [name, p] : model->named_params()) {
    if (name.ends_with("w_in")) t.w_in = p.detach().narrow(0, 0, vocab).clone();
    if (name.ends_with("w_out")) t.w_out = p.detach().narrow(0, 0, vocab).clone();
  }
  return t;
}

void write_json(const std::string& path, const nlohmann::json& j) {
  if (!path.empty()) write_file_atomic(path, j.dump(2) + "\n");
}

nlohmann::json number(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(); }
nlohmann::json summary_json(const Summary& s) {
  return {{"mean", number(s.mean)}, {"median", number(s.median)}};
}
std::string cell(double x) { return std::isfinite(x) ? fmt::format("{:.3f}", x) : "-"; }

nlohmann::json paraphrase_json(const ParaphraseReport& r) {
  const LinearLinkReport& l = r.link;
  nlohmann::json categories = nlohmann::json::array();
  for (const CategoryParaphrase& c : r.categories)
    categories.push_back({{"name", c.name},
                          {"paraphrases", c.paraphrases},
                          {"cooccur", c.cooccur},
                          {"never", c.never},
                          {"absent", c.absent},
                          {"analogies", c.analogies},
                          {"kept", c.kept},
                          {"rho_l1", summary_json(c.rho_l1)},
                          {"rho_l2", summary_json(c.rho_l2)},
                          {"dependence_l1", summary_json(c.dependence_l1)},
                          {"dependence_l2", summary_json(c.dependence_l2)},
                          {"total_l1", summary_json(c.total_l1)},
                          {"total_l2", summary_json(c.total_l2)},
                          {"repo_total_l1", summary_json(c.repo_total_l1)},
                          {"repo_total_l2", summary_json(c.repo_total_l2)},
                          {"rank", summary_json(c.rank)},
                          {"ranks", c.ranks}});
  return {{"n_pmi", r.n_pmi},
          {"n_tri", r.n_tri},
          {"pair_rows", r.pair_rows},
          {"link",
           {{"words", l.words},
            {"r_emb_median", number(l.r_emb_median)},
            {"r_pmi_median", number(l.r_pmi_median)},
            {"r_emb_share_090", number(l.r_emb_share_090)},
            {"r_pmi_share_090", number(l.r_pmi_share_090)},
            {"r_emb_histogram", l.r_emb_histogram},
            {"r_pmi_histogram", l.r_pmi_histogram},
            {"r2_fit", number(l.r2_fit)},
            {"r2_link", number(l.r2_link)}}},
          {"categories", categories}};
}

std::string format_paraphrase_report(const ParaphraseReport& r) {
  const LinearLinkReport& l = r.link;
  std::string out = fmt::format(
      "linear link over the {} most frequent words: median r_emb {} (share >= 0.9: {}), median "
      "r_pmi {} (share >= 0.9: {}), R2 of W ~ PMI C+ {}, R2 of the free fit {}\n",
      l.words, cell(l.r_emb_median), cell(l.r_emb_share_090), cell(l.r_pmi_median),
      cell(l.r_pmi_share_090), cell(l.r2_link), cell(l.r2_fit));
  out += fmt::format("triples over the {} most frequent words; {} word pairs occur\n", r.n_tri,
                     r.pair_rows);
  out += fmt::format("{:<28} {:>6} {:>7} {:>6} {:>6} {:>5} {:>8} {:>8} {:>8} {:>7}\n", "category",
                     "pairs", "co-occ", "never", "absent", "kept", "|rho|2", "|dep|2", "|total|2",
                     "rank");
  for (const CategoryParaphrase& c : r.categories) {
    const double n = static_cast<double>(std::max<int64_t>(1, c.paraphrases));
    out += fmt::format("{:<28} {:>6} {:>7} {:>6} {:>6} {:>5} {:>8} {:>8} {:>8} {:>7}\n", c.name,
                       c.paraphrases, cell(c.cooccur / n), cell(c.never / n), cell(c.absent / n),
                       c.kept, cell(c.rho_l2.median), cell(c.dependence_l2.median),
                       cell(c.total_l2.median), cell(c.rank.median));
  }
  out +=
      "co-occ, never, absent: shares of the ordered pairs of pairs whose paraphrase pair W "
      "co-occurs within the window, never does, or has a word outside the vocabulary; the norms "
      "and the closeness rank of W* are medians over the kept analogies\n";
  return out;
}

}  // namespace

int run_corpus(const CorpusArgs& args) {
  GcideCorpusOptions o;
  o.keep_syn = args.keep_syn;
  o.glosses = args.glosses;
  o.wordnet_dir = args.wordnet_dir.empty() ? kWordnetDir : args.wordnet_dir;
  const std::vector<std::string> sentences =
      gcide_sentences(args.gcide_dir.empty() ? kGcideDir : args.gcide_dir, o);
  std::string text;
  for (const std::string& s : sentences) text += s + "\n";
  write_file_atomic(args.out, text);
  const WordCorpus c = make_word_corpus(sentences, 5);
  int64_t tokens = 0;
  for (const std::string& s : sentences) tokens += static_cast<int64_t>(word_tokens(s).size());
  std::printf("%s: %zu sentences, %lld tokens, %lld words with count >= 5\n", args.out.c_str(),
              sentences.size(), static_cast<long long>(tokens),
              static_cast<long long>(c.vocab.size()));
  return 0;
}

int run_wn_bats(const WnBatsArgs& args) {
  const WordCorpus c = make_word_corpus(read_sentences(args.corpus), 1);
  const WordNet wn = WordNet::read(args.wordnet_dir.empty() ? kWordnetDir : args.wordnet_dir);
  WnBatsOptions o;
  o.pairs_per_category = args.pairs;
  o.min_pair_count = args.min_count;
  o.both_directions = args.both_directions;
  const std::vector<Category> categories = build_wn_bats(
      wn,
      [&](const std::string& w) {
        const int64_t id = c.vocab.find(w);
        return id < 0 ? int64_t{0} : c.vocab.count(id);
      },
      o);
  write_categories(args.out, categories);
  for (const Category& cat : categories)
    std::printf("%-6s %-28s %4zu pairs\n", cat.group.c_str(), cat.name.c_str(), cat.pairs.size());
  return 0;
}

int run_export_embeddings(const ExportArgs& args) {
  const TrainedRun t = load_trained(args.run_dir);
  WordVectors v;
  v.words = t.corpus.vocab.words();
  v.dim = t.w_in.size(1);
  const torch::Tensor w = t.w_in.to(torch::kFloat).contiguous();
  v.values.assign(w.data_ptr<float>(), w.data_ptr<float>() + w.numel());
  WriteOptions o;
  o.format = args.format == "text"     ? EmbeddingFormat::kText
             : args.format == "binary" ? EmbeddingFormat::kBinary
                                       : EmbeddingFormat::kAuto;
  o.c_compat = args.c_compat;
  write_word_vectors(args.out, v, o);
  std::printf("%s: %lld words x %lld\n", args.out.c_str(), static_cast<long long>(v.size()),
              static_cast<long long>(v.dim));
  return 0;
}

int run_regularities(const RegularitiesArgs& args) {
  ReadOptions ro;
  ro.limit = args.limit;
  ro.allow_nonfinite = args.allow_nonfinite;
  if (args.keep_first) ro.duplicates = ReadOptions::Duplicates::kKeepFirst;
  if (args.replace_invalid_utf8) ro.unicode_errors = ReadOptions::UnicodeErrors::kReplace;
  const WordVectors file = read_word_vectors(args.embeddings, ro);
  const EmbeddingSpace space = make_space(file, args.float64 ? torch::kDouble : torch::kFloat);
  CategoryReadOptions co;
  co.all_targets = args.all_targets;
  const std::vector<Category> categories = read_categories(args.categories, co);
  RegularityOptions o;
  o.analogy.restrict_vocab = args.restrict_vocab;
  o.analogy.cosmul_eps = args.cosmul_eps;
  o.offsets.shuffles = args.shuffles;
  o.offsets.min_pairs = args.min_pairs;
  o.offsets.seed = args.seed;
  o.offsets.derangement =
      args.derangement == "repo" ? DerangementKind::kRepo : DerangementKind::kUniform;
  o.controls.draws = args.draws;
  o.controls.size_random = args.size_random;
  o.controls.limit_word = args.limit_word;
  o.controls.shuffles = args.shuffles;
  o.controls.min_pairs = args.min_pairs;
  o.controls.seed = args.seed;
  o.run_controls = !args.no_controls;
  const std::vector<CategoryRegularity> results = measure_regularities(space, categories, o);
  std::printf("%s", regularities_table(results).c_str());
  write_json(args.json, regularities_json(results, o));
  if (!args.html.empty())
    write_file_atomic(args.html, regularities_html(results, "regularities of " + args.embeddings));
  return 0;
}

int run_paraphrase(const ParaphraseArgs& args) {
  const TrainedRun t = load_trained(args.run_dir);
  const std::vector<Category> categories = read_categories(args.categories);
  std::vector<std::pair<std::string, std::vector<std::pair<int64_t, int64_t>>>> pairs;
  for (const Category& c : categories) {
    std::vector<std::pair<int64_t, int64_t>> ids;  // -1: a word outside the vocabulary
    for (const auto& [s, targets] : c.pairs)
      ids.emplace_back(t.corpus.vocab.find(s),
                       targets.empty() ? -1 : t.corpus.vocab.find(targets.front()));
    pairs.emplace_back((c.group.empty() ? "" : c.group + "/") + c.name, std::move(ids));
  }
  ParaphraseOptions o;
  o.n_pmi = args.n_pmi;
  o.n_tri = args.n_tri;
  o.full_context = args.full_context;
  o.closeness = args.closeness == "notebook" ? ParaphraseOptions::Closeness::kNotebook
                                             : ParaphraseOptions::Closeness::kIncreasing;
  const ParaphraseReport report =
      paraphrase_test(t.corpus, t.w_in.to(torch::kDouble), t.w_out.to(torch::kDouble), pairs, o);
  std::printf("%s", format_paraphrase_report(report).c_str());
  write_json(args.json, paraphrase_json(report));
  return 0;
}

}  // namespace desync
