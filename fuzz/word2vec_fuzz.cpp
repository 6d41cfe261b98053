// libFuzzer target for the word2vec / GloVe reader (src/desync/embeddings/word2vec.h).
//
// The first byte picks the options (format, allow_nonfinite, duplicates, unicode_errors, limit);
// the rest is the file. A malformed file must throw EmbeddingFileError and nothing else; a file
// that parses must round-trip: written as binary and read back it gives the same words and the
// same value bits, and written as "%.9g" text (when its words fit on a text line) the same
// words and values (NaN for NaN). Anything else aborts, so the fuzzer reports it.
//
// Built and run by scripts/fuzz, which compiles the sources listed here:
// fuzz-sources: src/desync/embeddings/word2vec.cpp src/desync/data/utf8.cpp
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "desync/embeddings/word2vec.h"

namespace {

using desync::EmbeddingFormat;
using desync::ReadOptions;
using desync::WordVectors;

bool same_values(const WordVectors& a, const WordVectors& b, bool bitwise) {
  if (a.words != b.words || a.dim != b.dim || a.values.size() != b.values.size()) return false;
  for (size_t i = 0; i < a.values.size(); ++i) {
    const float x = a.values[i], y = b.values[i];
    if (bitwise
            ? std::memcmp(&x, &y, 4) != 0
            : !(x == y || (std::isnan(x) && std::isnan(y))) || std::signbit(x) != std::signbit(y)) {
      return false;
    }
  }
  return true;
}

void check_round_trips(const WordVectors& v, const ReadOptions& read) {
  ReadOptions again;
  again.allow_nonfinite = read.allow_nonfinite;
  again.format = EmbeddingFormat::kBinary;
  const std::string binary = desync::format_word_vectors(v, {.format = EmbeddingFormat::kBinary});
  if (!same_values(desync::parse_word_vectors(binary, "binary", again), v, true)) abort();
  for (const std::string& w : v.words) {
    if (w.find('\n') != std::string::npos) return;  // fits binary only
  }
  again.format = EmbeddingFormat::kText;
  const std::string text = desync::format_word_vectors(v);
  // NaN payloads do not survive text; signs and every other value do.
  if (!same_values(desync::parse_word_vectors(text, "text", again), v, false)) abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  ReadOptions options;
  options.format = static_cast<EmbeddingFormat>((mode & 3) % 3);  // kAuto, kText, kBinary
  options.allow_nonfinite = (mode >> 2) & 1;
  if ((mode >> 3) & 1) options.duplicates = ReadOptions::Duplicates::kKeepFirst;
  if ((mode >> 4) & 1) options.unicode_errors = ReadOptions::UnicodeErrors::kReplace;
  options.limit = mode >> 6;  // 0 (all) to 3
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  WordVectors v;
  try {
    v = desync::parse_word_vectors(bytes, "fuzz", options);
  } catch (const desync::EmbeddingFileError&) {
    return 0;  // expected for malformed input
  }
  if (v.dim <= 0 || v.words.empty() || v.values.size() != v.words.size() * v.dim) abort();
  check_round_trips(v, options);
  return 0;
}
