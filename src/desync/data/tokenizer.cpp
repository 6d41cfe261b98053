// Tokenizers: the byte tokenizer, SentencePiece training and loading, and the tokenizer file.
//
// Reversible text for SentencePiece. Even with the identity normalisation, SentencePiece does
// not keep every byte string: it replaces malformed UTF-8 with U+FFFD, decodes its whitespace
// mark U+2581 to a space, and control characters are best kept out of its training. So
// SentencePiece never sees the text itself but this image of it:
//   - a valid UTF-8 character passes unchanged, except those of the next line;
//   - every byte b of an invalid UTF-8 sequence (stray continuation byte, truncated or overlong
//     sequence, UTF-16 surrogate, code point above U+10FFFF), every C0 control byte
//     (0x00-0x1F: NUL, \t, \n, \r, ...) and DEL (0x7F), and every byte of the characters
//     U+2581 and U+F700..U+F7FF (the escape range itself) becomes the private-use character
//     U+F700 + b (so "\n" becomes U+F70A).
// Decoding maps every U+F700 + b back to the byte b and keeps every other character's bytes.
// The image never holds an unescaped U+F7xx, so decode(encode(s)) == s for every s. Spaces,
// runs of spaces included, survive as they are: SentencePiece runs with add_dummy_prefix and
// remove_extra_whitespaces off.
//
// Training feeds SentencePiece sentences through a SentenceIterator (no temporary files): each
// training document's image is cut into pieces of at most kMaxSentenceBytes at line ends, and
// when they hold more than kTrainBytes a seeded, fixed draw keeps about kTrainBytes of them.
// SentencePiece's own sampling and shuffling are off and its thread count is fixed, so the same
// documents give the same model bytes on every machine.
//
// The tokenizer file is one header line and a payload:
//   desync-tokenizer 1 <kind> <vocab_size> <crc32 of the payload, 8 hex digits> <payload bytes>\n
// followed by the serialized SentencePiece model (empty for "bytes"). The kind comes from the
// header; a wrong CRC or length, or a model SentencePiece cannot parse, is a DataError. (The
// payload alone is a plain SentencePiece model: `tail -c +N` after the first line.)
#include "desync/data/tokenizer.h"

#include <fmt/format.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "desync/core/error.h"
#include "desync/core/fs.h"
#include "desync/data/batch_source.h"
#include "desync/data/utf8.h"

namespace desync {
namespace {

constexpr const char* kMagic = "desync-tokenizer";
constexpr int kFileVersion = 1;
constexpr uint32_t kEscapeBase = 0xF700;    // U+F700 + byte
constexpr size_t kMaxSentenceBytes = 2048;  // a training sentence, in bytes of the image
constexpr size_t kTrainBytes = 8u << 20;    // training sample, bytes of the image
constexpr int kTrainThreads = 4;            // fixed: the unigram E-step sums per thread
constexpr uint64_t kSampleStream = 0x7370746f6b656e31ULL;  // "sptoken1"
constexpr int kByteVocab = 256;

// ---- the reversible image -------------------------------------------------------------------

bool must_escape(uint32_t cp) {
  return cp < 0x20 || cp == 0x7F || cp == 0x2581 || (cp >= kEscapeBase && cp <= kEscapeBase + 0xFF);
}

std::string to_image(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  size_t i = 0;
  while (i < text.size()) {
    uint32_t cp = 0;
    const size_t n = utf8_char(text, i, &cp);
    if (n > 0 && !must_escape(cp)) {
      out.append(text.data() + i, n);
      i += n;
      continue;
    }
    for (size_t k = 0; k < std::max<size_t>(n, 1); ++k) {
      append_utf8(out, kEscapeBase + static_cast<unsigned char>(text[i + k]));
    }
    i += std::max<size_t>(n, 1);
  }
  return out;
}

std::string from_image(std::string_view image) {
  std::string out;
  out.reserve(image.size());
  size_t i = 0;
  while (i < image.size()) {
    uint32_t cp = 0;
    const size_t n = utf8_char(image, i, &cp);
    if (n == 0) {  // SentencePiece only emits valid UTF-8; keep anything else as it is
      out += image[i++];
    } else if (cp >= kEscapeBase && cp <= kEscapeBase + 0xFF) {
      out += static_cast<char>(cp - kEscapeBase);
      i += n;
    } else {
      out.append(image.data() + i, n);
      i += n;
    }
  }
  return out;
}

// ---- the file -------------------------------------------------------------------------------

std::string file_content(const std::string& kind, int64_t vocab, const std::string& payload) {
  return fmt::format("{} {} {} {} {:08x} {}\n", kMagic, kFileVersion, kind, vocab,
                     crc32_of(payload), payload.size()) +
         payload;
}

// ---- tokenizers -----------------------------------------------------------------------------

class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int> encode(std::string_view text) const override {
    std::vector<int> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  std::string decode(const std::vector<int>& ids) const override {
    std::string s;
    s.reserve(ids.size());
    for (int id : ids) {
      if (id == kByteVocab) continue;  // end of document
      if (id < 0 || id > kByteVocab) {
        throw DataError(fmt::format("token id {} is outside the byte vocabulary [0, 257)", id));
      }
      s += static_cast<char>(id);
    }
    return s;
  }
  int64_t vocab_size() const override { return kByteVocab + 1; }
  int eos_id() const override { return kByteVocab; }
  std::string kind() const override { return "bytes"; }
  std::string serialize() const override { return file_content("bytes", vocab_size(), ""); }
};

class SentencePieceTokenizer : public Tokenizer {
 public:
  // Throws DataError (naming `source`) when `model` is not a SentencePiece model.
  SentencePieceTokenizer(std::string kind, std::string model, const std::string& source)
      : kind_(std::move(kind)), model_(std::move(model)) {
    const auto status = sp_.LoadFromSerializedProto(model_);
    if (!status.ok()) {
      throw DataError(fmt::format("{}: not a SentencePiece model ({})", source, status.message()));
    }
    if (sp_.eos_id() < 0 || sp_.GetPieceSize() > 65536) {
      throw DataError(
          fmt::format("{}: the SentencePiece model has no end-of-document piece or "
                      "more than 65536 pieces",
                      source));
    }
  }
  std::vector<int> encode(std::string_view text) const override {
    std::vector<int> ids;
    const auto status = sp_.Encode(to_image(text), &ids);
    if (!status.ok()) throw DataError(fmt::format("SentencePiece: {}", status.message()));
    return ids;
  }
  std::string decode(const std::vector<int>& ids) const override {
    const int size = sp_.GetPieceSize();
    for (int id : ids) {
      if (id < 0 || id >= size) {
        throw DataError(fmt::format("token id {} is outside the vocabulary [0, {})", id, size));
      }
    }
    std::string image;
    const auto status = sp_.Decode(ids, &image);
    if (!status.ok()) throw DataError(fmt::format("SentencePiece: {}", status.message()));
    return from_image(image);
  }
  int64_t vocab_size() const override { return sp_.GetPieceSize(); }
  int eos_id() const override { return sp_.eos_id(); }
  std::string kind() const override { return kind_; }
  std::string serialize() const override { return file_content(kind_, vocab_size(), model_); }

 private:
  std::string kind_;
  std::string model_;  // the serialized ModelProto
  sentencepiece::SentencePieceProcessor sp_;
};

// The training sentences SentencePiece reads, in order.
class Sentences : public sentencepiece::SentenceIterator {
 public:
  explicit Sentences(const std::vector<std::string>& s) : s_(s) {}
  bool done() const override { return i_ >= s_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return s_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& s_;
  size_t i_ = 0;
};

// Cuts the image of `doc` into sentences of at most kMaxSentenceBytes, at line ends where it
// can (a line longer than that is cut at a character boundary).
void append_sentences(const std::string& doc, std::vector<std::string>& out) {
  const std::string image = to_image(doc);
  const std::string newline = to_image("\n");
  size_t begin = 0;
  while (begin < image.size()) {
    size_t end = image.size();
    if (end - begin > kMaxSentenceBytes) {
      const size_t limit = begin + kMaxSentenceBytes;
      const size_t nl = image.rfind(newline, limit - newline.size());
      if (nl != std::string::npos && nl > begin) {
        end = nl + newline.size();
      } else {
        end = limit;
        while (end > begin + 1 && (static_cast<unsigned char>(image[end]) & 0xC0) == 0x80) --end;
      }
    }
    out.push_back(image.substr(begin, end - begin));
    begin = end;
  }
}

// The sentences to train on: all of them, or a seeded draw of about kTrainBytes, in the
// order of the documents.
std::vector<std::string> training_sentences(const std::vector<std::string>& documents) {
  std::vector<std::string> all;
  size_t total = 0;
  for (const std::string& d : documents) append_sentences(d, all);
  for (const std::string& s : all) total += s.size();
  if (total <= kTrainBytes) return all;
  std::vector<std::pair<uint64_t, size_t>> order(all.size());
  for (size_t i = 0; i < all.size(); ++i) order[i] = {mix64(kSampleStream + i), i};
  std::sort(order.begin(), order.end());
  std::vector<size_t> keep;
  size_t bytes = 0;
  for (const auto& [key, i] : order) {
    if (bytes >= kTrainBytes) break;
    keep.push_back(i);
    bytes += all[i].size();
  }
  std::sort(keep.begin(), keep.end());
  std::vector<std::string> chosen;
  chosen.reserve(keep.size());
  for (size_t i : keep) chosen.push_back(std::move(all[i]));
  return chosen;
}

}  // namespace

std::unique_ptr<Tokenizer> make_byte_tokenizer() { return std::make_unique<ByteTokenizer>(); }

std::unique_ptr<Tokenizer> train_tokenizer(const std::vector<std::string>& documents,
                                           const std::string& kind, int64_t vocab_size) {
  if (kind != "bpe" && kind != "unigram") {
    throw ConfigError(
        fmt::format("tokenizer kind '{}' cannot be trained; choose bpe or unigram", kind));
  }
  if (vocab_size < kByteVocab + 3 || vocab_size > 65536) {
    throw ConfigError(fmt::format(
        "data.vocab_size = {} is outside [259, 65536] (256 byte pieces, <unk>, </s> and at least "
        "one more)",
        vocab_size));
  }
  const std::vector<std::string> sentences = training_sentences(documents);
  if (sentences.empty()) throw DataError("cannot train a tokenizer: the documents are empty");
  const std::unordered_map<std::string, std::string> options = {
      {"model_type", kind},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      {"normalization_rule_name", "identity"},
      {"add_dummy_prefix", "false"},
      {"remove_extra_whitespaces", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"character_coverage", "0.9995"},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"max_sentence_length", std::to_string(kMaxSentenceBytes + 16)},
      {"num_threads", std::to_string(kTrainThreads)},
      {"hard_vocab_limit", "true"},
      {"unk_id", "0"},
      {"eos_id", "1"},
      {"bos_id", "-1"},
      {"pad_id", "-1"},
      {"minloglevel", "2"},
  };
  Sentences iterator(sentences);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(options, &iterator, &model);
  if (!status.ok()) {
    throw DataError(fmt::format("cannot train a {} tokenizer of {} pieces on these documents: {}",
                                kind, vocab_size, status.message()));
  }
  return std::make_unique<SentencePieceTokenizer>(kind, std::move(model), "trained model");
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) {
    throw DataError(fmt::format("tokenizer file {} does not exist", path));
  }
  const std::string content = read_file(path);
  const size_t eol = content.find('\n');
  const std::string header = content.substr(0, std::min(eol, size_t{200}));
  std::istringstream in(header);
  std::string magic, kind, crc_hex;
  int version = 0;
  int64_t vocab = 0;
  size_t bytes = 0;
  if (eol == std::string::npos || !(in >> magic >> version >> kind >> vocab >> crc_hex >> bytes) ||
      magic != kMagic) {
    throw DataError(
        fmt::format("{}: not a desync tokenizer file (no '{}' header line)", path, kMagic));
  }
  if (version != kFileVersion) {
    throw DataError(
        fmt::format("{}: tokenizer file version {}, expected {}", path, version, kFileVersion));
  }
  const std::string payload = content.substr(eol + 1);
  if (payload.size() != bytes || fmt::format("{:08x}", crc32_of(payload)) != crc_hex) {
    throw DataError(
        fmt::format("{}: corrupt tokenizer file ({} payload bytes, header says {}, or "
                    "the CRC-32 differs); delete it to rebuild",
                    path, payload.size(), bytes));
  }
  std::unique_ptr<Tokenizer> t;
  if (kind == "bytes" && payload.empty()) {
    t = make_byte_tokenizer();
  } else if (kind == "bpe" || kind == "unigram") {
    t = std::make_unique<SentencePieceTokenizer>(kind, payload, path);
  } else {
    throw DataError(fmt::format("{}: unknown tokenizer kind '{}'", path, kind));
  }
  if (t->vocab_size() != vocab) {
    throw DataError(fmt::format("{}: the header says {} pieces, the model has {}", path, vocab,
                                t->vocab_size()));
  }
  return t;
}

}  // namespace desync
