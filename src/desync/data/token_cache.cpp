// The token cache: documents, the seeded split, building and checking an entry, and the
// memory-mapped windows.
//
// Entry. One directory per corpus source and settings under data.cache_dir, named
// `<dataset>-<kind>[<vocab_size>]-<16 hex digits>`, the digits a 64-bit FNV-1a hash of the
// format version, the dataset, the corpus path (absolute), data.split_seed,
// data.text_test_fraction, the tokenizer kind and, for SentencePiece, data.vocab_size. The
// corpus content is not part of the name: a corpus edited in place is rebuilt in its entry,
// found stale through the manifest, instead of leaving the old entry behind.
//
// Hashes are zlib CRC-32s, written as 8 hex digits. The corpus hash runs over every document
// in order, each as its length (8 bytes, little-endian) and its bytes, so it covers the
// extraction (GCIDE markup rules) as well as the files.
//
// Check. The corpus is read and hashed on every call. An entry is used only when its
// manifest parses, has this format version and these settings, names this corpus hash, and
// tokenizer.model and tokens.u16 have the manifest's sizes and CRC-32s; anything else is
// reported through `say` and the entry is rebuilt. A rebuild first removes the manifest, then
// writes tokenizer.model, tokens.u16 and manifest.json, each atomically (core/fs.h), so an
// interrupted build leaves no manifest and is rebuilt by the next call. The check and the
// build run under an exclusive flock() on `<entry>/lock`.
//
// Split. Document i gets the key mix64(mix64(split_seed ^ kSplitStream) + i); the
// round(n * data.text_test_fraction) documents with the smallest keys are held out. Both
// splits keep the corpus order. The split depends on the seed and the document count only.
//
// Token counts include one end-of-document token per document; byte counts are the
// documents' UTF-8 bytes.
#include "desync/data/token_cache.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <tuple>

#include "desync/core/error.h"
#include "desync/core/fs.h"
#include "desync/data/batch_source.h"
#include "desync/data/tokenizer.h"

namespace desync {
namespace {

namespace fs = std::filesystem;

constexpr int kFormatVersion = 1;
constexpr uint64_t kSplitStream = 0x73706c6974646f63ULL;  // "splitdoc"
constexpr const char* kTokenizerFile = "tokenizer.model";
constexpr const char* kTokensFile = "tokens.u16";
constexpr const char* kManifestFile = "manifest.json";

static_assert(std::endian::native == std::endian::little,
              "tokens.u16 is little-endian and is mapped as int16 as it is");

using Say = std::function<void(const std::string&)>;

void tell(const Say& say, const std::string& line) {
  if (say) say(line);
}

std::string hex8(uint32_t v) { return fmt::format("{:08x}", v); }

uint64_t fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

// ---- documents ------------------------------------------------------------------------------

// The corpus location of cfg: data.path, or the dataset's default.
std::string corpus_path(const DataConfig& cfg) {
  if (cfg.dataset != "text" && cfg.dataset != "gcide") {
    throw ConfigError(
        fmt::format("data.dataset = \"{}\" is not a text corpus; token caches are "
                    "built for \"text\" and \"gcide\"",
                    cfg.dataset));
  }
  const std::string path = cfg.path.empty() ? default_data_path(cfg.dataset) : cfg.path;
  if (path.empty()) {
    throw ConfigError(
        "data.dataset = \"text\" needs data.path, a UTF-8 text file or a directory "
        "of them");
  }
  return path;
}

bool blank_line(std::string_view line) {
  return std::all_of(line.begin(), line.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f'; });
}

// Appends the blank-line-separated paragraphs of `text` (lines joined by '\n', unchanged).
void append_paragraphs(const std::string& text, std::vector<std::string>& docs) {
  std::string paragraph;
  bool open = false;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + begin, end - begin);
    if (blank_line(line)) {
      if (open) docs.push_back(std::move(paragraph));
      paragraph.clear();
      open = false;
    } else {
      if (open) paragraph += '\n';
      paragraph.append(line);
      open = true;
    }
    begin = end + 1;
  }
  if (open) docs.push_back(std::move(paragraph));
}

std::vector<std::string> read_text_documents(const std::string& path) {
  std::vector<std::string> files;
  if (fs::is_directory(path)) {
    for (const fs::directory_entry& e : fs::directory_iterator(path)) {
      const std::string name = e.path().filename().string();
      if (e.is_regular_file() && !name.empty() && name[0] != '.')
        files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) throw DataError(fmt::format("{}: the directory holds no text files", path));
  } else if (fs::is_regular_file(path)) {
    files.push_back(path);
  } else {
    throw DataError(
        fmt::format("{} does not exist; set data.path to a UTF-8 text file or a "
                    "directory of them",
                    path));
  }
  std::vector<std::string> docs;
  for (const std::string& f : files) {
    std::string text;
    try {
      text = read_file(f);
    } catch (const Error&) {
      throw DataError(fmt::format("cannot read {}", f));
    }
    append_paragraphs(text, docs);
  }
  if (docs.empty()) throw DataError(fmt::format("{}: no text (no non-blank lines)", path));
  return docs;
}

uint32_t corpus_crc(const std::vector<std::string>& docs) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  for (const std::string& d : docs) {
    unsigned char len[8];
    for (int k = 0; k < 8; ++k) len[k] = static_cast<unsigned char>(uint64_t{d.size()} >> (8 * k));
    crc = ::crc32(crc, len, 8);
    crc = ::crc32_z(crc, reinterpret_cast<const Bytef*>(d.data()), d.size());
  }
  return static_cast<uint32_t>(crc);
}

// ---- split ----------------------------------------------------------------------------------

struct Split {
  std::vector<size_t> train, test;  // document indices, in corpus order
};

Split split_documents(size_t n, int64_t seed, double fraction, const std::string& source) {
  const auto held = static_cast<size_t>(std::llround(static_cast<double>(n) * fraction));
  if (held < 1 || held >= n) {
    throw DataError(fmt::format(
        "{}: {} documents with data.text_test_fraction = {} give {} training and {} test "
        "documents; each split needs at least one (add documents or change the fraction)",
        source, n, fraction, n - std::min(held, n), held));
  }
  const uint64_t key = mix64(static_cast<uint64_t>(seed) ^ kSplitStream);
  std::vector<std::pair<uint64_t, size_t>> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = {mix64(key + i), i};
  std::sort(order.begin(), order.end());
  std::vector<bool> test(n, false);
  for (size_t k = 0; k < held; ++k) test[order[k].second] = true;
  Split s;
  for (size_t i = 0; i < n; ++i) (test[i] ? s.test : s.train).push_back(i);
  return s;
}

// ---- the entry ------------------------------------------------------------------------------

std::string entry_dir(const DataConfig& cfg, const std::string& corpus) {
  const bool bytes = cfg.tokenizer == "bytes";
  const std::string key =
      fmt::format("{}|{}|{}|{}|{:.17g}|{}|{}", kFormatVersion, cfg.dataset,
                  fs::absolute(corpus).lexically_normal().string(), cfg.split_seed,
                  cfg.text_test_fraction, cfg.tokenizer, bytes ? 0 : cfg.vocab_size);
  const std::string name = fmt::format("{}-{}{}-{:016x}", cfg.dataset, cfg.tokenizer,
                                       bytes ? "" : std::to_string(cfg.vocab_size), fnv1a64(key));
  return (fs::path(cfg.cache_dir) / name).string();
}

// An exclusive flock() on `path`, held for the object's lifetime.
class EntryLock {
 public:
  EntryLock(const std::string& path, const Say& say) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      throw DataError(fmt::format("cannot open the lock file {}: {}", path, std::strerror(errno)));
    }
    if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return;
    tell(say, fmt::format("waiting for another process to finish {}",
                          fs::path(path).parent_path().string()));
    while (::flock(fd_, LOCK_EX) != 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd_);
      throw DataError(fmt::format("cannot lock {}: {}", path, std::strerror(err)));
    }
  }
  ~EntryLock() { ::close(fd_); }  // closing releases the lock
  EntryLock(const EntryLock&) = delete;
  EntryLock& operator=(const EntryLock&) = delete;

 private:
  int fd_ = -1;
};

struct Expected {
  std::string dataset, corpus_crc, kind;
  int64_t split_seed = 0, vocab_size = 0;
  double fraction = 0;
};

// Why the entry cannot be used ("" if it can); fills `info` from a good manifest.
std::string check_entry(const TokenCacheInfo& paths, const Expected& want, TokenCacheInfo& info) {
  if (!fs::exists(paths.manifest_path)) return "no manifest";
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(read_file(paths.manifest_path));
    if (m.at("format").get<int>() != kFormatVersion) {
      return fmt::format("manifest format {}, expected {}", m.at("format").dump(), kFormatVersion);
    }
    if (m.at("corpus_crc32").get<std::string>() != want.corpus_crc) {
      return fmt::format("the corpus changed (CRC-32 {} in the manifest, {} now)",
                         m.at("corpus_crc32").get<std::string>(), want.corpus_crc);
    }
    const nlohmann::json& tok = m.at("tokenizer");
    if (m.at("dataset").get<std::string>() != want.dataset ||
        m.at("split_seed").get<int64_t>() != want.split_seed ||
        m.at("text_test_fraction").get<double>() != want.fraction ||
        tok.at("kind").get<std::string>() != want.kind ||
        tok.at("requested_vocab_size").get<int64_t>() != want.vocab_size) {
      return "the manifest was written for other settings";
    }
    const std::string tok_bytes = read_file(paths.tokenizer_path);
    if (static_cast<int64_t>(tok_bytes.size()) != tok.at("bytes").get<int64_t>() ||
        hex8(crc32_of(tok_bytes)) != tok.at("crc32").get<std::string>()) {
      return fmt::format("{} does not match the manifest (size or CRC-32)", kTokenizerFile);
    }
    const nlohmann::json& tf = m.at("tokens");
    const int64_t expect = tf.at("bytes").get<int64_t>();
    std::error_code ec;
    const auto size = static_cast<int64_t>(fs::file_size(paths.tokens_path, ec));
    if (ec || size != expect) {
      return fmt::format("{} has {} bytes, the manifest says {}", kTokensFile, ec ? 0 : size,
                         expect);
    }
    const std::string token_bytes = read_file(paths.tokens_path);
    if (hex8(crc32_of(token_bytes)) != tf.at("crc32").get<std::string>()) {
      return fmt::format("{} does not match its CRC-32 in the manifest", kTokensFile);
    }
    const nlohmann::json& tr = m.at("train");
    const nlohmann::json& te = m.at("test");
    info.vocab_size = tok.at("vocab_size").get<int64_t>();
    info.train_documents = tr.at("documents").get<int64_t>();
    info.train_tokens = tr.at("tokens").get<int64_t>();
    info.train_bytes = tr.at("bytes").get<int64_t>();
    info.test_documents = te.at("documents").get<int64_t>();
    info.test_tokens = te.at("tokens").get<int64_t>();
    info.test_bytes = te.at("bytes").get<int64_t>();
    // Each count in range before any sum: a damaged manifest must neither overflow nor place
    // the splits' windows outside tokens.u16.
    const int64_t file_tokens = expect / 2;
    const bool in_range = info.train_tokens >= 0 && info.train_tokens <= file_tokens &&
                          info.test_tokens >= 0 && info.test_tokens <= file_tokens &&
                          info.train_documents >= 0 && info.test_documents >= 0 &&
                          info.train_bytes >= 0 && info.test_bytes >= 0;
    if (!in_range || info.train_tokens + info.test_tokens != file_tokens || expect % 2 != 0 ||
        info.vocab_size < 1 || info.vocab_size > 65536) {
      return "the manifest's counts do not add up";
    }
    // Every id inside the vocabulary: the model's embedding is indexed with them unchecked.
    for (size_t i = 0; i + 1 < token_bytes.size(); i += 2) {
      const int64_t id = static_cast<uint8_t>(token_bytes[i]) |
                         (static_cast<int64_t>(static_cast<uint8_t>(token_bytes[i + 1])) << 8);
      if (id >= info.vocab_size) {
        return fmt::format("{} holds token id {}, outside the vocabulary of {}", kTokensFile, id,
                           info.vocab_size);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return fmt::format("{} is unreadable ({})", kManifestFile, e.what());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Encodes documents[idx[k]] for every k on all cores; each followed by the eos token.
std::vector<std::vector<uint16_t>> encode_all(const Tokenizer& tok,
                                              const std::vector<std::string>& documents,
                                              const std::vector<size_t>& idx) {
  std::vector<std::vector<uint16_t>> out(idx.size());
  std::atomic<size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  const auto work = [&] {
    try {
      for (size_t k = next.fetch_add(64); k < idx.size(); k = next.fetch_add(64)) {
        for (size_t j = k; j < std::min(k + 64, idx.size()); ++j) {
          const std::vector<int> ids = tok.encode(documents[idx[j]]);
          std::vector<uint16_t>& dst = out[j];
          dst.reserve(ids.size() + 1);
          for (int id : ids) dst.push_back(static_cast<uint16_t>(id));
          dst.push_back(static_cast<uint16_t>(tok.eos_id()));
        }
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) failure = std::current_exception();
    }
  };
  const unsigned threads = std::clamp(std::thread::hardware_concurrency(), 1u, 16u);
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  if (failure) std::rethrow_exception(failure);
  return out;
}

struct SplitCounts {
  int64_t documents = 0, tokens = 0, bytes = 0;
};

// Appends the split's tokens to `file` (uint16 little-endian) and counts them.
SplitCounts append_tokens(const std::vector<std::vector<uint16_t>>& encoded,
                          const std::vector<std::string>& documents, const std::vector<size_t>& idx,
                          std::string& file) {
  SplitCounts c;
  for (size_t k = 0; k < idx.size(); ++k) {
    for (uint16_t id : encoded[k]) {
      file += static_cast<char>(id & 0xFF);
      file += static_cast<char>(id >> 8);
    }
    c.tokens += static_cast<int64_t>(encoded[k].size());
    c.bytes += static_cast<int64_t>(documents[idx[k]].size());
  }
  c.documents = static_cast<int64_t>(idx.size());
  return c;
}

nlohmann::json counts_json(const SplitCounts& c) {
  return {{"documents", c.documents}, {"tokens", c.tokens}, {"bytes", c.bytes}};
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

void build_entry(const DataConfig& cfg, const std::string& corpus, const Expected& want,
                 const std::vector<std::string>& documents, const Split& split,
                 TokenCacheInfo& info, const Say& say) {
  std::error_code ec;
  fs::remove(info.manifest_path, ec);  // an interrupted build must not look complete
  auto start = std::chrono::steady_clock::now();
  std::unique_ptr<Tokenizer> tok;
  if (cfg.tokenizer == "bytes") {
    tok = make_byte_tokenizer();
  } else {
    std::vector<std::string> train_docs;
    train_docs.reserve(split.train.size());
    for (size_t i : split.train) train_docs.push_back(documents[i]);
    tell(say, fmt::format("training a {} tokenizer of {} pieces on {} documents", cfg.tokenizer,
                          cfg.vocab_size, train_docs.size()));
    tok = train_tokenizer(train_docs, cfg.tokenizer, cfg.vocab_size);
    tell(say, fmt::format("trained in {:.1f} s", seconds_since(start)));
  }
  start = std::chrono::steady_clock::now();
  tell(say, fmt::format("encoding {} documents", documents.size()));
  std::string tokens;
  const SplitCounts train =
      append_tokens(encode_all(*tok, documents, split.train), documents, split.train, tokens);
  const SplitCounts test =
      append_tokens(encode_all(*tok, documents, split.test), documents, split.test, tokens);
  tell(say, fmt::format("encoded in {:.1f} s", seconds_since(start)));

  const std::string model = tok->serialize();
  write_file_atomic(info.tokenizer_path, model);
  write_file_atomic(info.tokens_path, tokens);
  const nlohmann::json manifest = {
      {"format", kFormatVersion},
      {"hash", "crc32 (zlib), 8 hex digits"},
      {"dataset", cfg.dataset},
      {"corpus", fs::absolute(corpus).lexically_normal().string()},
      {"corpus_crc32", want.corpus_crc},
      {"split_seed", cfg.split_seed},
      {"text_test_fraction", cfg.text_test_fraction},
      {"tokenizer",
       {{"file", kTokenizerFile},
        {"kind", tok->kind()},
        {"vocab_size", tok->vocab_size()},
        {"requested_vocab_size", want.vocab_size},
        {"eos_id", tok->eos_id()},
        {"bytes", model.size()},
        {"crc32", hex8(crc32_of(model))}}},
      {"tokens",
       {{"file", kTokensFile},
        {"dtype", "uint16 little-endian; training split first, then test"},
        {"bytes", tokens.size()},
        {"crc32", hex8(crc32_of(tokens))}}},
      {"train", counts_json(train)},
      {"test", counts_json(test)},
  };
  write_file_atomic(info.manifest_path, manifest.dump(2) + "\n");
  info.vocab_size = tok->vocab_size();
  info.train_documents = train.documents;
  info.train_tokens = train.tokens;
  info.train_bytes = train.bytes;
  info.test_documents = test.documents;
  info.test_tokens = test.tokens;
  info.test_bytes = test.bytes;
  info.built = true;
}

// A read-only shared mapping of a whole file, unmapped by the tensor's deleter.
torch::Tensor map_tokens(const std::string& path, int64_t expect_tokens) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw DataError(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size != expect_tokens * 2 || st.st_size == 0) {
    ::close(fd);
    throw DataError(
        fmt::format("{} changed while it was being opened (expected {} bytes); run "
                    "again",
                    path, expect_tokens * 2));
  }
  const auto length = static_cast<size_t>(st.st_size);
  void* p = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);  // the mapping keeps the file
  if (p == MAP_FAILED)
    throw DataError(fmt::format("cannot map {}: {}", path, std::strerror(errno)));
  return torch::from_blob(
      p, {expect_tokens}, [length](void* q) { ::munmap(q, length); }, torch::kInt16);
}

Dataset token_split(const std::string& name, const torch::Tensor& tokens, int64_t begin,
                    int64_t count, int64_t seq_len) {
  const int64_t windows = (count - 1) / seq_len;
  if (windows < 1) {
    throw DataError(
        fmt::format("{}: {} tokens, fewer than data.seq_len + 1 = {}; lower "
                    "data.seq_len or change data.text_test_fraction",
                    name, count, seq_len + 1));
  }
  Dataset d;
  d.name = name;
  d.kind = DataKind::kText;
  d.inputs = tokens.as_strided({windows, seq_len + 1}, {seq_len, 1}, begin);
  return d;
}

}  // namespace

std::vector<std::string> read_documents(const DataConfig& cfg) {
  const std::string path = corpus_path(cfg);
  if (cfg.dataset == "gcide") return read_gcide(path);
  return read_text_documents(path);
}

TokenCacheInfo prepare_token_cache(const DataConfig& cfg, const Say& say) {
  const std::string corpus = corpus_path(cfg);
  if (cfg.tokenizer != "bpe" && cfg.tokenizer != "unigram" && cfg.tokenizer != "bytes") {
    throw ConfigError(
        fmt::format("data.tokenizer = \"{}\"; choose bpe, unigram or bytes", cfg.tokenizer));
  }
  auto start = std::chrono::steady_clock::now();
  const std::vector<std::string> documents = read_documents(cfg);
  tell(say, fmt::format("read {} documents from {} in {:.1f} s", documents.size(), corpus,
                        seconds_since(start)));
  const Split split =
      split_documents(documents.size(), cfg.split_seed, cfg.text_test_fraction, corpus);
  Expected want;
  want.dataset = cfg.dataset;
  want.corpus_crc = hex8(corpus_crc(documents));
  want.kind = cfg.tokenizer;
  want.split_seed = cfg.split_seed;
  want.vocab_size = cfg.tokenizer == "bytes" ? 0 : cfg.vocab_size;
  want.fraction = cfg.text_test_fraction;

  TokenCacheInfo info;
  info.dir = entry_dir(cfg, corpus);
  info.tokenizer_path = info.dir + "/" + kTokenizerFile;
  info.tokens_path = info.dir + "/" + kTokensFile;
  info.manifest_path = info.dir + "/" + kManifestFile;
  try {
    make_dirs(info.dir);
  } catch (const Error& e) {
    throw DataError(fmt::format("{} (data.cache_dir)", e.what()));
  }
  EntryLock lock(info.dir + "/lock", say);
  const std::string why = check_entry(info, want, info);
  if (why.empty()) return info;
  tell(say,
       fmt::format("{} {}: {}", why == "no manifest" ? "building" : "rebuilding", info.dir, why));
  build_entry(cfg, corpus, want, documents, split, info, say);
  return info;
}

DatasetSplits load_token_dataset(const DataConfig& cfg) {
  if (cfg.seq_len < 1) {
    throw ConfigError(fmt::format("data.seq_len must be at least 1, got {}", cfg.seq_len));
  }
  const TokenCacheInfo info = prepare_token_cache(cfg);
  const torch::Tensor tokens = map_tokens(info.tokens_path, info.train_tokens + info.test_tokens);
  DatasetSplits s;
  s.train = token_split(cfg.dataset + "/train", tokens, 0, info.train_tokens, cfg.seq_len);
  s.test =
      token_split(cfg.dataset + "/test", tokens, info.train_tokens, info.test_tokens, cfg.seq_len);
  for (auto [d, bytes, count] : {std::tuple{&s.train, info.train_bytes, info.train_tokens},
                                 std::tuple{&s.test, info.test_bytes, info.test_tokens}}) {
    d->num_classes = info.vocab_size;
    d->text_bytes = bytes;
    d->text_tokens = count;
  }
  s.tokenizer_path = info.tokenizer_path;
  return s;
}

}  // namespace desync
