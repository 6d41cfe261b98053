#include "desync/embeddings/space.h"

#include <utility>

namespace desync {

int64_t EmbeddingSpace::find(const std::string& word) const {
  const auto it = index.find(word);
  return it == index.end() ? -1 : it->second;
}

EmbeddingSpace make_space(std::vector<std::string> words, torch::Tensor vectors) {
  EmbeddingSpace s;
  s.words = std::move(words);
  s.index.reserve(s.words.size());
  for (size_t i = 0; i < s.words.size(); ++i) s.index.emplace(s.words[i], static_cast<int64_t>(i));
  s.vectors = std::move(vectors);
  const torch::Tensor norm = s.vectors.norm(2, /*dim=*/1, /*keepdim=*/true);
  s.unit = s.vectors / torch::where(norm > 0, norm, torch::ones_like(norm));
  return s;
}

EmbeddingSpace make_space(const WordVectors& file, torch::ScalarType dtype) {
  torch::Tensor v = torch::from_blob(const_cast<float*>(file.values.data()),
                                     {file.size(), file.dim}, torch::kFloat32)
                        .to(dtype, /*non_blocking=*/false, /*copy=*/true);
  return make_space(file.words, std::move(v));
}

RowPairs row_pairs(const EmbeddingSpace& space, const Category& category) {
  RowPairs p;
  for (const auto& [source, targets] : category.pairs) {
    const int64_t s = space.find(source);
    const int64_t t = targets.empty() ? -1 : space.find(targets.front());
    if (s < 0 || t < 0) {
      ++p.oov;
      continue;
    }
    p.source.push_back(s);
    p.target.push_back(t);
  }
  return p;
}

}  // namespace desync
