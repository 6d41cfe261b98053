// Sampling text from a language model: temperature and top-k over the next-token distribution.
//
// sample_tokens() extends a prompt one token at a time, each time running the model on the last
// `context` tokens and drawing from softmax(logits / temperature) restricted to the top_k most
// likely tokens (all when top_k is 0); temperature 0 takes the most likely token. The draws
// come from a generator seeded with `seed`, so the same model, prompt and options give the same
// tokens. The model runs in evaluation mode without gradients and is left as it was found.
#pragma once

#include <cstdint>
#include <vector>

#include "desync/models/staged_model.h"

namespace desync {

struct SamplingOptions {
  int64_t tokens = 200;      // tokens to add
  double temperature = 1.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = the whole vocabulary
  uint64_t seed = 0;
};

// `prompt` (non-empty) followed by options.tokens sampled tokens.
std::vector<int> sample_tokens(StagedModel model, std::vector<int> prompt, int64_t context,
                               const SamplingOptions& options);

}  // namespace desync
