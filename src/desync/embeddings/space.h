// An embedding space for the regularity metrics: words, their raw vectors, their unit vectors,
// and the rows of a category's pairs.
//
// The metrics compute in the dtype of `vectors` (float64 for the tests' 1e-12 checks, float32
// for large files). Unit rows are v / ||v||; a zero row stays zero. Immutable once built; safe
// to read from any thread.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "desync/embeddings/categories.h"
#include "desync/embeddings/word2vec.h"

namespace desync {

struct EmbeddingSpace {
  std::vector<std::string> words;  // by row
  std::unordered_map<std::string, int64_t> index;
  torch::Tensor vectors;  // [V, d]
  torch::Tensor unit;     // [V, d], rows of vectors normalised

  int64_t size() const { return static_cast<int64_t>(words.size()); }
  // The row of `word`, or -1.
  int64_t find(const std::string& word) const;
};

// REQUIRES: vectors is [words.size(), d] floating point; words distinct.
EmbeddingSpace make_space(std::vector<std::string> words, torch::Tensor vectors);
EmbeddingSpace make_space(const WordVectors& file, torch::ScalarType dtype = torch::kFloat32);

// A category's pairs as rows (first target of each pair), without the pairs with a word
// outside the space (counted in `oov`).
struct RowPairs {
  std::vector<int64_t> source, target;
  int64_t oov = 0;
  int64_t size() const { return static_cast<int64_t>(source.size()); }
};
RowPairs row_pairs(const EmbeddingSpace& space, const Category& category);

}  // namespace desync
