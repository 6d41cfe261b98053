// libFuzzer target for the token cache reader (src/desync/data/token_cache.h: the check of an
// entry and the memory-mapped windows) and the tokenizer file reader (data/tokenizer.h).
//
// A fixed corpus of eight paragraphs, cached with the byte tokenizer, gives the reference entry
// (built once, at start-up). Each input then replaces the entry's three files and loads the
// dataset with load_token_dataset(). Input: a mode byte, the manifest's length M and the
// tokenizer file's length T (two bytes each, little-endian), M bytes of manifest.json, T bytes
// of tokenizer.model, and the rest is tokens.u16. Mode bits 0-1 pick data.seq_len (1, 4, 16 or
// 1000; 1000 is longer than either split, so the reference itself is a DataError); bit 2 set: the
// manifest, when it parses, gets the files' true sizes and CRC-32s and the corpus's CRC-32, so
// the fuzzer reaches the checks behind them; bit 3 set: no manifest is written.
//
// Properties. An entry the reader rebuilds (its files become the reference's again) must give
// exactly the reference's result: the same windows and counts, or the same DataError. An entry
// it uses as it is must give a DataError, or windows that are the file's tokens at stride
// seq_len, with counts that add up to the file (non-negative, training split first) and a
// vocabulary of 1 to 65536 ids. The tokenizer file, read by load_tokenizer(), must give a
// DataError or a tokenizer whose file (serialize()) reads back to the same tokenizer. Any other
// exception, or a crash, is reported.
//
// Built and run by scripts/fuzz, which compiles the sources listed here:
// fuzz-sources: src/desync/data/token_cache.cpp src/desync/data/tokenizer.cpp src/desync/data/gcide.cpp src/desync/data/utf8.cpp src/desync/data/batch_source.cpp src/desync/core/fs.cpp
// fuzz-torch: yes
// fuzz-libs: -lsentencepiece -lsentencepiece_train
#include <fmt/format.h>
#include <torch/torch.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "desync/core/error.h"
#include "desync/core/fs.h"
#include "desync/data/dataset.h"
#include "desync/data/token_cache.h"
#include "desync/data/tokenizer.h"
#include "fuzz_file.h"

namespace desync {
// dataset.cpp (every dataset reader) is not linked: data.path is always set here, so the
// default location is never asked for.
std::string default_data_path(const std::string&) { return ""; }
}  // namespace desync

namespace {

namespace fs = std::filesystem;
using desync::DataConfig;
using desync::DatasetSplits;

constexpr int64_t kSeqLens[] = {1, 4, 16, 1000};

std::string scratch_dir() {
  // On tmpfs when there is one: a rebuilt entry is written with fsync.
  std::string pattern = fs::is_directory("/dev/shm") ? "/dev/shm/token-cache-fuzz-XXXXXX"
                                                     : "/tmp/token-cache-fuzz-XXXXXX";
  if (!mkdtemp(pattern.data())) abort();
  return pattern;
}

void write(const std::string& path, std::string_view bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) abort();
}

std::string read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// The result of load_token_dataset(): the splits, or a DataError's message.
struct Outcome {
  std::optional<DatasetSplits> splits;
  std::string error;
};

Outcome load(const DataConfig& cfg) {
  Outcome o;
  try {
    o.splits = desync::load_token_dataset(cfg);
  } catch (const desync::DataError& e) {
    o.error = e.what();
  }
  return o;
}

bool same_split(const desync::Dataset& a, const desync::Dataset& b) {
  return a.name == b.name && a.num_classes == b.num_classes && a.text_bytes == b.text_bytes &&
         a.text_tokens == b.text_tokens && a.inputs.sizes() == b.inputs.sizes() &&
         a.inputs.equal(b.inputs);
}

bool same(const Outcome& a, const Outcome& b) {
  if (a.splits.has_value() != b.splits.has_value()) return false;
  if (!a.splits) return a.error == b.error;
  return same_split(a.splits->train, b.splits->train) && same_split(a.splits->test, b.splits->test);
}

// Windows of `d` are tokens[begin + w * seq_len + j] of the file for w < (count - 1) / seq_len.
bool windows_match(const desync::Dataset& d, const std::string& file, int64_t begin,
                   int64_t seq_len) {
  const int64_t count = d.text_tokens;
  if (d.inputs.dim() != 2 || d.inputs.size(0) != (count - 1) / seq_len ||
      d.inputs.size(1) != seq_len + 1 || d.inputs.scalar_type() != torch::kInt16) {
    return false;
  }
  const auto a = d.inputs.accessor<int16_t, 2>();
  for (int64_t w = 0; w < d.inputs.size(0); ++w) {
    for (int64_t j = 0; j <= seq_len; ++j) {
      const auto at = static_cast<size_t>(2 * (begin + w * seq_len + j));
      if (at + 2 > file.size()) return false;
      int16_t want;
      std::memcpy(&want, file.data() + at, 2);
      if (a[w][j] != want) return false;
    }
  }
  return true;
}

// An entry used as it is: a DataError, or windows of the file with counts that add up.
void check_used(const Outcome& o, const std::string& tokens, int64_t seq_len) {
  if (!o.splits) return;
  const desync::Dataset& train = o.splits->train;
  const desync::Dataset& test = o.splits->test;
  if (train.num_classes != test.num_classes || train.num_classes < 1 ||
      train.num_classes > 65536 || train.text_tokens < 0 || test.text_tokens < 0 ||
      train.text_bytes < 0 || test.text_bytes < 0 ||
      2 * (train.text_tokens + test.text_tokens) != static_cast<int64_t>(tokens.size()) ||
      !windows_match(train, tokens, 0, seq_len) ||
      !windows_match(test, tokens, train.text_tokens, seq_len)) {
    abort();
  }
}

// load_tokenizer(): a DataError, or a tokenizer whose serialize() reads back the same.
void check_tokenizer(FuzzFile& file, std::string_view bytes) {
  file.set(bytes.data(), bytes.size());
  std::unique_ptr<desync::Tokenizer> t;
  try {
    t = desync::load_tokenizer(file.path());
  } catch (const desync::DataError&) {
    return;
  }
  const std::string saved = t->serialize();
  file.set(saved.data(), saved.size());
  const auto again = desync::load_tokenizer(file.path());  // no DataError allowed here
  if (again->kind() != t->kind() || again->vocab_size() != t->vocab_size() ||
      again->eos_id() != t->eos_id() || again->serialize() != saved || t->vocab_size() < 1 ||
      t->vocab_size() > 65536 || t->eos_id() < 0 || t->eos_id() >= t->vocab_size()) {
    abort();
  }
}

// Mode bit 2: the manifest's sizes and CRC-32s made true (when it parses as the format's JSON).
std::string fix_manifest(std::string_view manifest, std::string_view tokenizer,
                         std::string_view tokens, const std::string& corpus_crc) {
  nlohmann::json m = nlohmann::json::parse(manifest, nullptr, false);
  if (m.is_discarded() || !m.is_object()) return std::string(manifest);
  const auto hex = [](std::string_view s) { return fmt::format("{:08x}", desync::crc32_of(s)); };
  m["corpus_crc32"] = corpus_crc;
  if (m.contains("tokenizer") && m["tokenizer"].is_object()) {
    m["tokenizer"]["bytes"] = tokenizer.size();
    m["tokenizer"]["crc32"] = hex(tokenizer);
  }
  if (m.contains("tokens") && m["tokens"].is_object()) {
    m["tokens"]["bytes"] = tokens.size();
    m["tokens"]["crc32"] = hex(tokens);
  }
  return m.dump();
}

struct Reference {
  std::string root;
  DataConfig cfg;
  desync::TokenCacheInfo info;
  std::string manifest, tokenizer, tokens;
  std::string corpus_crc;
  Outcome outcome[4];  // per seq_len
};

const Reference& reference() {
  static const Reference* ref = [] {
    auto* r = new Reference;
    r->root = scratch_dir();
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(reference().root, ec);
    });
    std::string corpus;
    const char* words[] = {"amber", "bolt", "cinder", "dune", "ember", "fjord", "gale", "heath"};
    for (int d = 0; d < 8; ++d) {
      corpus += fmt::format("Doc {}:", d);
      for (int w = 0; w < 4 + d % 3; ++w) corpus += fmt::format(" {}", words[(d * 3 + w) % 8]);
      corpus += "\n\n";
    }
    write(r->root + "/corpus.txt", corpus);
    r->cfg.dataset = "text";
    r->cfg.path = r->root + "/corpus.txt";
    r->cfg.cache_dir = r->root + "/cache";
    r->cfg.tokenizer = "bytes";
    r->cfg.text_test_fraction = 0.25;
    r->cfg.split_seed = 3;
    r->info = desync::prepare_token_cache(r->cfg);
    r->manifest = read(r->info.manifest_path);
    r->tokenizer = read(r->info.tokenizer_path);
    r->tokens = read(r->info.tokens_path);
    r->corpus_crc = nlohmann::json::parse(r->manifest).at("corpus_crc32").get<std::string>();
    for (int k = 0; k < 4; ++k) {
      DataConfig cfg = r->cfg;
      cfg.seq_len = kSeqLens[k];
      r->outcome[k] = load(cfg);
      // Copies: the inputs below rewrite the mapped file in place.
      if (r->outcome[k].splits) {
        for (desync::Dataset* d : {&r->outcome[k].splits->train, &r->outcome[k].splits->test}) {
          d->inputs = d->inputs.clone();
        }
      }
    }
    if (!r->outcome[1].splits || r->outcome[3].splits) {  // the seeds need both kinds
      std::fprintf(stderr, "token_cache_fuzz: unexpected reference: '%s', '%s'\n",
                   r->outcome[1].error.c_str(), r->outcome[3].error.c_str());
      abort();
    }
    return r;
  }();
  return *ref;
}

std::string u16(size_t n) { return std::string{static_cast<char>(n & 0xFF), static_cast<char>(n >> 8)}; }

std::string input(uint8_t mode, std::string_view manifest, std::string_view tokenizer,
                  std::string_view tokens) {
  return std::string(1, static_cast<char>(mode)) + u16(manifest.size()) + u16(tokenizer.size()) +
         std::string(manifest) + std::string(tokenizer) + std::string(tokens);
}

// TOKEN_CACHE_FUZZ_SEEDS=DIR: writes the seeds of fuzz/corpus/token_cache (from the reference
// entry and a trained BPE tokenizer) into DIR.
void write_seeds(const std::string& dir) {
  const Reference& r = reference();
  const auto seed = [&](const std::string& name, const std::string& bytes) {
    write(dir + "/" + name, bytes);
  };
  for (int k = 0; k < 4; ++k) {
    seed(fmt::format("entry_seq{}", kSeqLens[k]), input(k, r.manifest, r.tokenizer, r.tokens));
  }
  seed("entry_fixed", input(1 | 4, r.manifest, r.tokenizer, r.tokens));
  seed("no_manifest", input(1 | 8, "", r.tokenizer, r.tokens));
  seed("truncated_manifest",
       input(1, std::string_view(r.manifest).substr(0, r.manifest.size() / 2), r.tokenizer,
             r.tokens));
  seed("truncated_tokens", input(1, r.manifest, r.tokenizer,
                                 std::string_view(r.tokens).substr(0, r.tokens.size() - 3)));
  seed("truncated_tokens_fixed",
       input(1 | 4, r.manifest, r.tokenizer,
             std::string_view(r.tokens).substr(0, r.tokens.size() - 2)));
  seed("truncated_tokenizer",
       input(1, r.manifest, std::string_view(r.tokenizer).substr(0, r.tokenizer.size() - 1),
             r.tokens));
  std::vector<std::string> docs;
  for (int d = 0; d < 40; ++d) {
    docs.push_back(fmt::format("the {} quick brown fox {} jumps over the lazy dog {}", d, d * d,
                               d % 7));
  }
  const std::string bpe = desync::train_tokenizer(docs, "bpe", 300)->serialize();
  seed("bpe_tokenizer", input(1 | 4, r.manifest, bpe, r.tokens));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  reference();
  if (const char* dir = std::getenv("TOKEN_CACHE_FUZZ_SEEDS")) {
    write_seeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static FuzzFile tokenizer_file;
  const Reference& r = reference();
  if (size < 5) return 0;
  const uint8_t mode = data[0];
  const char* p = reinterpret_cast<const char*>(data) + 5;
  size_t left = size - 5;
  const size_t m_size = std::min<size_t>(data[1] | (data[2] << 8), left);
  const std::string_view manifest_in(p, m_size);
  p += m_size, left -= m_size;
  const size_t t_size = std::min<size_t>(data[3] | (data[4] << 8), left);
  const std::string_view tokenizer(p, t_size);
  const std::string tokens(p + t_size, left - t_size);

  check_tokenizer(tokenizer_file, tokenizer);

  const int k = mode & 3;
  DataConfig cfg = r.cfg;
  cfg.seq_len = kSeqLens[k];
  const std::string manifest =
      mode & 4 ? fix_manifest(manifest_in, tokenizer, tokens, r.corpus_crc)
               : std::string(manifest_in);
  std::error_code ec;
  fs::remove(r.info.manifest_path, ec);
  if (!(mode & 8)) write(r.info.manifest_path, manifest);
  write(r.info.tokenizer_path, tokenizer);
  write(r.info.tokens_path, tokens);

  const Outcome o = load(cfg);  // any exception but DataError ends the run
  const bool rebuilt = read(r.info.manifest_path) == r.manifest &&
                       read(r.info.tokenizer_path) == r.tokenizer &&
                       read(r.info.tokens_path) == r.tokens;
  if (rebuilt) {
    if (!same(o, r.outcome[k])) abort();
  } else {
    // Used as it is: the files must be the input's, untouched.
    if (read(r.info.manifest_path) != manifest || read(r.info.tokens_path) != tokens) abort();
    check_used(o, tokens, cfg.seq_len);
  }
  return 0;
}
