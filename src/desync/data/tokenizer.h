// Tokenizers for the text datasets: SentencePiece BPE or unigram models trained on the training
// documents, and a byte tokenizer (one token per byte).
//
// Every tokenizer round-trips arbitrary bytes exactly: decode(encode(s)) == s for any string s,
// invalid UTF-8, NUL and control bytes included (SentencePiece runs with byte fallback on a
// reversible mapping of the bytes it would otherwise normalise; see tokenizer.cpp). eos_id()
// ends every document in a token file. A tokenizer is saved to one file and loaded from it;
// load_tokenizer() tells the kinds apart by the file's content.
//
// Thread-safety: encode/decode are const and may run concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace desync {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::vector<int> encode(std::string_view text) const = 0;
  virtual std::string decode(const std::vector<int>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int eos_id() const = 0;
  // "bpe", "unigram" or "bytes".
  virtual std::string kind() const = 0;
  // The file content load_tokenizer() reads back.
  virtual std::string serialize() const = 0;
};

// One token per byte; vocabulary 256 plus the end-of-document token 256.
std::unique_ptr<Tokenizer> make_byte_tokenizer();

// Trains a SentencePiece model of `kind` ("bpe" or "unigram") with `vocab_size` pieces on
// `documents`, deterministically (same documents, same model). Throws DataError when the
// documents cannot support the vocabulary.
std::unique_ptr<Tokenizer> train_tokenizer(const std::vector<std::string>& documents,
                                           const std::string& kind, int64_t vocab_size);

// Reads a file written from serialize(). Throws DataError for a missing or corrupt file.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

}  // namespace desync
