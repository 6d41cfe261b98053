// Word-embedding files: the word2vec text and binary formats and GloVe's headerless text.
//
// Text: a header line "V d", then V lines "word x_1 ... x_d" separated by single spaces (C's
// word2vec adds a trailing space). A first line that is not two integers means a headerless
// GloVe file, whose d is the number of fields of its first line minus one. Binary: the same
// header line, then per entry the word's bytes up to a space (0x20) and d little-endian
// float32; C writes '\n' after each vector and gensim 4 does not, so a '\n' before a word is
// skipped. Names ending in ".gz" go through zlib, both ways. '\r' before '\n' is ignored.
//
// The writer prints "%.9g" (an exact float32 round trip) or, with c_compat, C's "%lf"; binary
// follows C's layout (a '\n' after each vector).
//
// Every malformed input throws EmbeddingFileError whose message is one line naming the file and
// the line (text) or entry (binary): a header that is not two positive integers, a line without
// d + 1 fields, a number strtof rejects, NaN or Inf (unless allow_nonfinite), an empty or
// duplicate word (unless duplicates = kKeepFirst), fewer or more entries than V, end of file
// inside a vector, a word over 1000 bytes, invalid UTF-8 (unless unicode_errors = kReplace,
// which writes U+FFFD for each bad byte).
//
// Torch-free (standard library and zlib only) so that the fuzz target builds without LibTorch.
// Pure functions of their inputs; safe to call from any thread.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "desync/core/error.h"

namespace desync {

// A malformed or unreadable embeddings file. The CLI prints its one line and exits 2: the file
// is the user's input, like a config.
class EmbeddingFileError : public DataError {
 public:
  using DataError::DataError;
  int exit_code() const override { return 2; }
};

struct WordVectors {
  std::vector<std::string> words;  // row order of the file
  int64_t dim = 0;
  std::vector<float> values;  // words.size() * dim, row-major

  int64_t size() const { return static_cast<int64_t>(words.size()); }
  const float* row(int64_t i) const { return values.data() + i * dim; }
};

enum class EmbeddingFormat { kAuto, kText, kBinary };

struct ReadOptions {
  EmbeddingFormat format = EmbeddingFormat::kAuto;  // auto: binary when the bytes after the
                                                    // header are not text (see word2vec.cpp)
  int64_t limit = 0;             // keep only the first `limit` entries (the top-n words); 0 = all
  bool allow_nonfinite = false;  // accept NaN and Inf values
  enum class Duplicates { kError, kKeepFirst } duplicates = Duplicates::kError;
  enum class UnicodeErrors { kStrict, kReplace } unicode_errors = UnicodeErrors::kStrict;
};

struct WriteOptions {
  EmbeddingFormat format = EmbeddingFormat::kText;  // kAuto: binary for names ending .bin(.gz)
  bool c_compat = false;                            // text values as C's "%lf" instead of "%.9g"
};

// Parses `bytes`, the whole content of a file called `name` (used in messages only; it is not
// opened, and a ".gz" name is not decompressed here).
WordVectors parse_word_vectors(std::string_view bytes, const std::string& name,
                               const ReadOptions& options = {});

// Reads `path` (decompressing ".gz" names) and parses it.
WordVectors read_word_vectors(const std::string& path, const ReadOptions& options = {});

// Writes `vectors` to `path` atomically (`path`.tmp, fsynced, renamed over it); ".gz" names are
// compressed. Throws Error for what the formats cannot hold: no words, dim < 1, a values size
// other than words x dim, a word that is empty, over 1000 bytes, or holds a space or a newline
// (binary: a leading newline), and for a failed write.
void write_word_vectors(const std::string& path, const WordVectors& vectors,
                        const WriteOptions& options = {});

// The bytes write_word_vectors() would write, uncompressed.
std::string format_word_vectors(const WordVectors& vectors, const WriteOptions& options = {});

}  // namespace desync
