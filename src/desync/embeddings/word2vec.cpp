// Reading and writing word2vec / GloVe files (see word2vec.h for the formats and the errors).
//
// Parsing works on the whole file in memory: lines are found with memchr, fields split on single
// spaces (as C word2vec and gensim write them), and each number is read with std::from_chars,
// falling back to strtof on a NUL-terminated copy whenever from_chars does not accept the whole
// field, so strtof decides what a valid number is ("+1", hex floats, out-of-range values). A
// value that overflows float32 becomes ±Inf and is then a non-finite value; one that underflows
// keeps strtof's (subnormal or zero) result.
//
// Header. The first line is a header when it holds exactly two integers (then both must be
// positive); otherwise the file is headerless GloVe text, d = fields - 1 of its first line, and
// it ends at the end of the file.
//
// Binary or text (format = kAuto, files with a header). Look at the first entry: its word runs
// to the first space; in a text file the rest of that line holds d numbers, that is at least
// 2d - 1 bytes, all printable ASCII, tab or '\r'. The file is binary when that rest holds any
// other byte before its '\n' (a binary vector nearly always has a byte below 0x20 or above 0x7E)
// or is shorter than 2d - 1 bytes. A binary file whose first vector is printable ASCII for 2d - 1
// bytes (possible only for tiny d) needs format = kBinary; a text file whose first entry has a
// non-ASCII byte after its word, or too few bytes for d numbers, is read as binary and then
// fails with a binary error.
//
// Text lines: trailing spaces, tabs and '\r' are ignored; a blank line is an error unless only
// blank lines follow it. Binary entries: '\n' bytes before a word are skipped (C's layout); after
// V entries only whitespace may follow. With `limit`, parsing stops after that many entries, so
// nothing after them is checked.
#include "desync/embeddings/word2vec.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <unordered_set>

#include "desync/data/utf8.h"

namespace desync {
namespace {

constexpr size_t kMaxWordBytes = 1000;
constexpr int64_t kNoLimit = std::numeric_limits<int64_t>::max();

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool all_blank(std::string_view s) { return std::all_of(s.begin(), s.end(), is_blank); }

// A byte a text line may hold after its word: printable ASCII, tab or '\r'.
bool text_byte(char c) {
  const auto u = static_cast<unsigned char>(c);
  return (u >= 0x20 && u < 0x7F) || c == '\t' || c == '\r';
}

// `s` for a one-line message: quoted, at most 40 bytes, control and invalid UTF-8 bytes as \xNN.
std::string printable(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  size_t i = 0;
  for (; i < s.size() && i < 40;) {
    uint32_t cp;
    size_t n = utf8_char(s, i, &cp);
    if (n == 0 || cp < 0x20 || cp == 0x7F || cp == '"' || cp == '\\') {
      const auto u = static_cast<unsigned char>(s[i]);
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
      n = 1;
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
  if (i < s.size()) out += "...";
  return out + "\"";
}

// One field as a float, with strtof's acceptance; `scratch` holds the NUL-terminated copy.
bool parse_float(std::string_view field, float* value, std::string& scratch) {
  const char* end = field.data() + field.size();
  auto [ptr, ec] = std::from_chars(field.data(), end, *value);
  if (ec == std::errc() && ptr == end) return true;
  scratch.assign(field);
  char* stop = nullptr;
  *value = std::strtof(scratch.c_str(), &stop);
  return !field.empty() && stop == scratch.c_str() + scratch.size();
}

// Parses one file. Rows are appended to out_; `where` strings ("line 7", "entry 3") prefix the
// messages.
class Parser {
 public:
  Parser(std::string_view bytes, const std::string& name, const ReadOptions& options)
      : bytes_(bytes),
        name_(name),
        options_(options),
        seen_(16, WordHash{&out_.words}, WordEq{&out_.words}) {}

  WordVectors run() {
    if (options_.limit < 0) {
      throw ConfigError("embeddings limit must be >= 0 (0 = all), not " +
                        std::to_string(options_.limit));
    }
    if (all_blank(bytes_)) {
      fail("", "empty file; expected a header \"V d\" or a line \"word x_1 ... x_d\"");
    }
    const size_t eol = std::min(bytes_.find('\n'), bytes_.size());
    std::string_view first = trim(bytes_.substr(0, eol));
    int64_t count, dim;
    if (!two_integers(first, &count, &dim)) {
      if (options_.format == EmbeddingFormat::kBinary) {
        fail("line 1", "a binary file needs a header \"V d\", found " + printable(first));
      }
      parse_text(0, /*count=*/-1, /*dim=*/-1);
    } else {
      if (count <= 0 || dim <= 0) {
        fail("line 1",
             "the header must be two positive integers \"V d\", found " + printable(first));
      }
      const size_t start = std::min(eol + 1, bytes_.size());
      bool binary =
          options_.format == EmbeddingFormat::kBinary ||
          (options_.format == EmbeddingFormat::kAuto && looks_binary(bytes_.substr(start), dim));
      if (binary) {
        parse_binary(start, count, dim);
      } else {
        parse_text(start, count, dim);
      }
    }
    return std::move(out_);
  }

 private:
  // Hash and equality of row indices by their words: the set of words seen, without copies.
  struct WordHash {
    const std::vector<std::string>* words;
    size_t operator()(size_t i) const { return std::hash<std::string>()((*words)[i]); }
  };
  struct WordEq {
    const std::vector<std::string>* words;
    bool operator()(size_t a, size_t b) const { return (*words)[a] == (*words)[b]; }
  };

  [[noreturn]] void fail(const std::string& where, const std::string& what) const {
    throw EmbeddingFileError(name_ + ": " + (where.empty() ? "" : where + ": ") + what);
  }

  static std::string_view trim(std::string_view line) {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r')) {
      line.remove_suffix(1);
    }
    return line;
  }

  // "V d": exactly two whitespace-separated integers (any sign; range checked by the caller).
  static bool two_integers(std::string_view line, int64_t* count, int64_t* dim) {
    int64_t* out[2] = {count, dim};
    size_t pos = 0;
    for (int k = 0; k < 2; ++k) {
      while (pos < line.size() && (line[pos] == ' ' || line[pos] == '\t')) ++pos;
      size_t end = pos;
      if (end < line.size() && (line[end] == '-' || line[end] == '+')) ++end;
      const size_t digits = end;
      while (end < line.size() && line[end] >= '0' && line[end] <= '9') ++end;
      if (end == digits || (end < line.size() && line[end] != ' ' && line[end] != '\t')) {
        return false;
      }
      const char* first = line.data() + pos + (line[pos] == '+');
      if (std::from_chars(first, line.data() + end, *out[k]).ec != std::errc()) {
        *out[k] = -1;  // out of range: still a header, an invalid one
      }
      pos = end;
    }
    return pos == line.size();
  }

  static bool looks_binary(std::string_view rest, int64_t dim) {
    const size_t space = rest.find(' ');
    if (space == std::string_view::npos) return false;
    uint64_t n = 0;
    for (size_t j = space + 1; j < rest.size() && rest[j] != '\n'; ++j, ++n) {
      if (!text_byte(rest[j])) return true;
    }
    return (n + 1) / 2 < static_cast<uint64_t>(dim);  // shorter than 2d - 1 bytes
  }

  // Room for `rows` rows, or as many as the input can hold at `value_bytes` bytes a value.
  void reserve(int64_t rows, int64_t dim, size_t value_bytes) {
    if (static_cast<uint64_t>(dim) > bytes_.size() / value_bytes) return;
    const size_t fit = bytes_.size() / (value_bytes * dim + 2);
    const size_t n = std::min(static_cast<size_t>(rows), fit);
    out_.words.reserve(n);
    out_.values.reserve(n * dim);
  }

  // Validates `raw` and appends it as the next row's word. Returns false for a duplicate that
  // keep_first drops (its values must then be skipped).
  bool add_word(std::string_view raw, const std::string& where) {
    if (raw.empty()) fail(where, "empty word");
    if (raw.size() > kMaxWordBytes) {
      fail(where, "word of " + std::to_string(raw.size()) + " bytes, over the limit of " +
                      std::to_string(kMaxWordBytes) + ": " + printable(raw));
    }
    std::string& word = out_.words.emplace_back();
    bool ascii = std::all_of(raw.begin(), raw.end(),
                             [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    if (ascii) {
      word.assign(raw);
    } else {
      word.reserve(raw.size());
      for (size_t i = 0; i < raw.size();) {
        uint32_t cp;
        size_t n = utf8_char(raw, i, &cp);
        if (n == 0) {
          if (options_.unicode_errors == ReadOptions::UnicodeErrors::kStrict) {
            out_.words.pop_back();
            fail(where, "invalid UTF-8 in word " + printable(raw) + " at byte " +
                            std::to_string(i) +
                            " (unicode_errors = replace writes U+FFFD instead)");
          }
          append_utf8(word, 0xFFFD);
          n = 1;
        } else {
          word.append(raw.substr(i, n));
        }
        i += n;
      }
      if (word.size() > kMaxWordBytes) {  // each bad byte became 3
        out_.words.pop_back();
        fail(where, "word of " + std::to_string(raw.size()) + " bytes, over the limit of " +
                        std::to_string(kMaxWordBytes) +
                        " once invalid UTF-8 is replaced: " + printable(raw));
      }
    }
    auto [it, inserted] = seen_.insert(out_.words.size() - 1);
    if (inserted) return true;
    const size_t first = *it;
    out_.words.pop_back();
    if (options_.duplicates == ReadOptions::Duplicates::kKeepFirst) return false;
    // Without keep_first no row was dropped, so row r is the r-th entry.
    fail(where, "duplicate word " + printable(out_.words[first]) + ", first at " + row_name_ + " " +
                    std::to_string(row_zero_ + first) +
                    " (duplicates = keep_first keeps that one)");
  }

  void check_finite(float v, const std::string& where, size_t k) const {
    if (options_.allow_nonfinite || std::isfinite(v)) return;
    fail(where, std::string("value ") + std::to_string(k + 1) + " is " +
                    (std::isnan(v) ? "NaN" : "infinite") + " (allow_nonfinite accepts it)");
  }

  // count = V from the header, or -1 (headerless: V open, d from the first line).
  void parse_text(size_t pos, int64_t count, int64_t dim) {
    const int64_t limit = options_.limit > 0 ? options_.limit : kNoLimit;
    int64_t line_no = count < 0 ? 1 : 2;
    int64_t entries = 0;
    row_name_ = "line";
    row_zero_ = line_no;
    if (dim > 0) reserve(std::min(count, limit), dim, 2);
    std::string scratch;
    for (; pos < bytes_.size() && entries < limit; ++line_no) {
      const size_t eol = std::min(bytes_.find('\n', pos), bytes_.size());
      const std::string_view line = trim(bytes_.substr(pos, eol - pos));
      const size_t next = std::min(eol + 1, bytes_.size());
      const std::string where = "line " + std::to_string(line_no);
      if (line.empty() && all_blank(bytes_.substr(pos))) break;
      if (entries == count) {
        fail(where, "more entries than the " + std::to_string(count) + " the header announces");
      }
      const int64_t fields = 1 + std::count(line.begin(), line.end(), ' ');
      if (dim < 0) {
        dim = fields - 1;
        if (dim == 0) {
          fail(where,
               "no header \"V d\" and no values after the word: expected \"word x_1 ... "
               "x_d\" (GloVe) or a header");
        }
        reserve(limit, dim, 2);
      }
      if (fields != dim + 1 || line.empty()) {
        fail(where, std::to_string(line.empty() ? 0 : fields) + " fields, expected " +
                        std::to_string(dim + 1) + " (a word and " + std::to_string(dim) +
                        " values)");
      }
      size_t space = line.find(' ');
      if (add_word(line.substr(0, space), where)) {
        for (int64_t k = 0; k < dim; ++k) {
          const size_t begin = space + 1;
          space = std::min(line.find(' ', begin), line.size());
          const std::string_view field = line.substr(begin, space - begin);
          float v;
          if (!parse_float(field, &v, scratch)) {
            fail(where,
                 "value " + std::to_string(k + 1) + " " + printable(field) + " is not a number");
          }
          check_finite(v, where, k);
          out_.values.push_back(v);
        }
      }
      ++entries;
      pos = next;
    }
    if (entries < std::min(count, limit)) {
      fail("line " + std::to_string(line_no), "end of file after " + std::to_string(entries) +
                                                  " of the " + std::to_string(count) +
                                                  " entries the header announces");
    }
    out_.dim = dim;
  }

  void parse_binary(size_t pos, int64_t count, int64_t dim) {
    const int64_t limit = options_.limit > 0 ? options_.limit : kNoLimit;
    const size_t size = bytes_.size();
    int64_t entries = 0;
    row_name_ = "entry";
    row_zero_ = 1;
    reserve(std::min(count, limit), dim, 4);
    for (; entries < limit; ++entries) {
      while (pos < size && bytes_[pos] == '\n') ++pos;
      if (pos == size) break;
      const std::string where = "entry " + std::to_string(entries + 1);
      if (entries == count) {
        if (all_blank(bytes_.substr(pos))) break;  // a word may be blank bytes: only after V
        fail(where, "more entries than the " + std::to_string(count) + " the header announces");
      }
      const size_t space = bytes_.find(' ', pos);
      if (space == std::string_view::npos || space - pos > kMaxWordBytes) {
        const size_t len = std::min(space, size) - pos;
        if (len <= kMaxWordBytes) fail(where, "end of file inside the word");
        fail(where, "no space within " + std::to_string(kMaxWordBytes) +
                        " bytes: a word over the limit of " + std::to_string(kMaxWordBytes) +
                        " bytes, or not a binary file: " + printable(bytes_.substr(pos, len)));
      }
      const std::string_view word = bytes_.substr(pos, space - pos);
      const std::string at = where + " " + printable(word);
      pos = space + 1;
      if (static_cast<uint64_t>(dim) > (size - pos) / 4) {
        fail(at, "end of file inside its vector (" + std::to_string(size - pos) + " of " +
                     std::to_string(4 * static_cast<uint64_t>(dim)) + " bytes)");
      }
      if (add_word(word, where)) {
        const size_t first = out_.values.size();
        out_.values.resize(first + dim);
        float* row = out_.values.data() + first;
        std::memcpy(row, bytes_.data() + pos, 4 * dim);
        if constexpr (std::endian::native == std::endian::big) {
          for (int64_t k = 0; k < dim; ++k) {
            row[k] = std::bit_cast<float>(__builtin_bswap32(std::bit_cast<uint32_t>(row[k])));
          }
        }
        for (int64_t k = 0; k < dim; ++k) check_finite(row[k], at, k);
      }
      pos += 4 * dim;
    }
    if (entries < std::min(count, limit)) {
      fail("entry " + std::to_string(entries + 1), "end of file after " + std::to_string(entries) +
                                                       " of the " + std::to_string(count) +
                                                       " entries the header announces");
    }
    out_.dim = dim;
  }

  std::string_view bytes_;
  const std::string& name_;
  const ReadOptions& options_;
  std::string row_name_;  // "line" or "entry"
  int64_t row_zero_ = 0;  // the line or entry number of row 0
  WordVectors out_;
  std::unordered_set<size_t, WordHash, WordEq> seen_;
};

std::string read_bytes(const std::string& path) {
  const bool gz = ends_with(path, ".gz");
  if (gz) {
    gzFile in = gzopen(path.c_str(), "rb");
    if (in == nullptr) {
      throw EmbeddingFileError("cannot read " + path + ": " + std::strerror(errno));
    }
    gzbuffer(in, 1 << 20);
    std::string bytes(1 << 20, '\0');
    size_t used = 0;
    int n;
    do {
      if (used == bytes.size()) bytes.resize(2 * bytes.size());
      const size_t want = std::min<size_t>(bytes.size() - used, 1u << 30);
      n = gzread(in, bytes.data() + used, static_cast<unsigned>(want));
      used += std::max(n, 0);
    } while (n > 0);
    int err;
    const std::string what = gzerror(in, &err);  // a truncated stream: "unexpected end of file"
    gzclose(in);
    if (n < 0 || err != Z_OK) throw EmbeddingFileError("cannot decompress " + path + ": " + what);
    bytes.resize(used);
    return bytes;
  }
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) throw EmbeddingFileError("cannot read " + path + ": " + std::strerror(errno));
  std::string bytes;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, f)) > 0) bytes.append(buffer, n);
  const bool failed = std::ferror(f);
  std::fclose(f);
  if (failed) throw EmbeddingFileError("cannot read " + path);
  return bytes;
}

std::string gzip(const std::string& bytes, const std::string& path) {
  z_stream z{};
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    throw Error("cannot compress " + path + ": zlib deflateInit2 failed");
  }
  std::string out(deflateBound(&z, bytes.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) throw Error("cannot compress " + path + ": zlib deflate failed");
  return out;
}

// Writes `path + ".tmp"`, fsyncs it, renames it over `path` and fsyncs the folder.
void write_atomic(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  const auto fail = [&](const std::string& what) {
    const std::string reason = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw Error("cannot write " + path + ": " + what + ": " + reason);
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("open " + tmp);
  for (size_t done = 0; done < bytes.size();) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      fail("write");
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    fail("fsync");
  }
  if (::close(fd) != 0) fail("close");
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename");
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const int dir = ::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

}  // namespace

WordVectors parse_word_vectors(std::string_view bytes, const std::string& name,
                               const ReadOptions& options) {
  return Parser(bytes, name, options).run();
}

WordVectors read_word_vectors(const std::string& path, const ReadOptions& options) {
  return parse_word_vectors(read_bytes(path), path, options);
}

std::string format_word_vectors(const WordVectors& vectors, const WriteOptions& options) {
  const int64_t dim = vectors.dim;
  if (vectors.words.empty() || dim <= 0 ||
      vectors.values.size() != vectors.words.size() * static_cast<size_t>(dim)) {
    throw Error("cannot format word vectors: needs words and dim > 0, has dim " +
                std::to_string(dim) + " with " + std::to_string(vectors.words.size()) +
                " words and " + std::to_string(vectors.values.size()) + " values");
  }
  const bool binary = options.format == EmbeddingFormat::kBinary;
  std::string out = std::to_string(vectors.size()) + " " + std::to_string(dim) + "\n";
  out.reserve(out.size() + vectors.words.size() * (16 + dim * (binary ? 4 : 16)));
  char buffer[64];
  for (int64_t i = 0; i < vectors.size(); ++i) {
    const std::string& word = vectors.words[i];
    if (word.empty() || word.size() > kMaxWordBytes || word.find(' ') != std::string::npos ||
        (binary ? word.front() == '\n' : word.find('\n') != std::string::npos)) {
      throw Error("cannot write word " + std::to_string(i + 1) + " " + printable(word) +
                  ": a word needs 1 to 1000 bytes without spaces or newlines");
    }
    out += word;
    out += ' ';
    const float* row = vectors.row(i);
    if (binary) {
      for (int64_t k = 0; k < dim; ++k) {
        uint32_t bits = std::bit_cast<uint32_t>(row[k]);
        if constexpr (std::endian::native == std::endian::big) bits = __builtin_bswap32(bits);
        out.append(reinterpret_cast<const char*>(&bits), 4);
      }
    } else {
      for (int64_t k = 0; k < dim; ++k) {
        // to_chars with a precision prints as printf would in the C locale.
        const auto r = options.c_compat
                           ? std::to_chars(buffer, buffer + sizeof buffer, double{row[k]},
                                           std::chars_format::fixed, 6)  // "%lf"
                           : std::to_chars(buffer, buffer + sizeof buffer, row[k],
                                           std::chars_format::general, 9);  // "%.9g"
        if (k > 0) out += ' ';
        out.append(buffer, r.ptr);
      }
      if (options.c_compat) out += ' ';  // C's trailing space
    }
    out += '\n';
  }
  return out;
}

void write_word_vectors(const std::string& path, const WordVectors& vectors,
                        const WriteOptions& options) {
  WriteOptions resolved = options;
  if (resolved.format == EmbeddingFormat::kAuto) {
    const bool bin = ends_with(path, ".bin") || ends_with(path, ".bin.gz");
    resolved.format = bin ? EmbeddingFormat::kBinary : EmbeddingFormat::kText;
  }
  const std::string bytes = format_word_vectors(vectors, resolved);
  write_atomic(path, ends_with(path, ".gz") ? gzip(bytes, path) : bytes);
}

}  // namespace desync
