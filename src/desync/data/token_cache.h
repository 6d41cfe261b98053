// Text corpora as token files: documents, the train/test split, the tokenizer and the cache.
//
// A corpus is a list of documents: for data.dataset = "text", the blank-line-separated
// paragraphs of a UTF-8 file (or of every regular file of a directory, in name order); for
// "gcide", the entries of the GNU Collaborative International Dictionary of English read from
// Debian's dict-gcide (gcide.dict.dz + gcide.index), with its markup turned into plain text
// (gcide.cpp says how). A seeded draw (data.split_seed) holds out data.text_test_fraction of
// the documents for evaluation.
//
// prepare_token_cache() trains the tokenizer on the training documents and encodes both splits
// once into a cache entry under data.cache_dir: `tokenizer.model`, `tokens.u16` (the training
// split's tokens, then the test split's; each document followed by the end-of-document token)
// and `manifest.json` (the corpus hash, the tokenizer's hash, the token file's hash and the
// counts), written last and atomically. An entry whose manifest does not match the corpus, or
// whose files do not match the manifest, is rebuilt, never used. Concurrent workers build an
// entry once: the first takes an exclusive lock on the entry, the others wait for it.
//
// load_token_dataset() memory-maps tokens.u16 and serves (seq_len + 1)-token windows at stride
// seq_len as int16 views (dataset.h), so every worker shares the page cache.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "desync/core/config.h"
#include "desync/data/dataset.h"

namespace desync {

struct TokenCacheInfo {
  std::string dir;  // the cache entry
  std::string tokenizer_path, tokens_path, manifest_path;
  int64_t vocab_size = 0;
  int64_t train_documents = 0, test_documents = 0;
  int64_t train_tokens = 0, test_tokens = 0;
  int64_t train_bytes = 0, test_bytes = 0;
  bool built = false;  // false: an intact entry was found and used
};

// The corpus of cfg (text or gcide) as documents. Throws DataError for missing files.
std::vector<std::string> read_documents(const DataConfig& cfg);

// GCIDE's entries as plain-text documents, from `dir` (gcide.dict.dz and gcide.index).
std::vector<std::string> read_gcide(const std::string& dir);

// Makes sure the cache entry of cfg exists and is intact, building it if not. `say` receives
// progress lines (may be empty).
TokenCacheInfo prepare_token_cache(const DataConfig& cfg,
                                   const std::function<void(const std::string&)>& say = {});

// The splits of a text corpus (prepare_token_cache() first, then memory-mapped windows).
DatasetSplits load_token_dataset(const DataConfig& cfg);

}  // namespace desync
