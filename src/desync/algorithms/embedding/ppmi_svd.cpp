#include "desync/algorithms/embedding/ppmi_svd.h"

#include <fmt/format.h>

#include <algorithm>

#include "desync/algorithms/registry.h"
#include "desync/core/error.h"
#include "desync/data/word_dataset.h"
#include "desync/embeddings/cooccurrence.h"

namespace desync {

std::unique_ptr<Algorithm> make_ppmi_svd(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  PpmiOptions o;
  const int64_t min_count = r.get("min_count", int64_t{5}, 1, int64_t{1} << 40);
  o.window = r.get("window", o.window, 1, 1000);
  o.weight = r.get_choice("window_weight", "uniform", {"uniform", "w2v"}) == "w2v"
                 ? WindowWeight::kWord2vec
                 : WindowWeight::kUniform;
  o.alpha = r.get("context_alpha", o.alpha, 0.0, 10.0);
  o.k_shift = r.get("k_shift", o.k_shift, 1e-12, 1e12);
  o.power = r.get("power", o.power, 0.0, 10.0);
  o.oversample = r.get("oversample", o.oversample, 0, 10000);
  o.power_iterations = r.get("power_iterations", o.power_iterations, 0, 100);
  r.finish();
  return std::make_unique<PpmiSvd>(o, min_count);
}

void PpmiSvd::setup(Context& ctx) {
  if (ctx.config.run.steps != 1)
    throw ConfigError("algorithm ppmi_svd computes its vectors in one step: set run.steps = 1");
  options_.dim = ctx.config.model.d_model;
  options_.seed = static_cast<uint64_t>(ctx.config.run.seed);
}

StepReport PpmiSvd::step(Context& ctx) {
  torch::NoGradGuard no_grad;
  const int64_t rank = ctx.comm.rank(), world = ctx.comm.world_size();
  const WordCorpus corpus = word_corpus_of(ctx.batches.dataset());
  const auto& counts = corpus.vocab.counts();
  vocab_ = std::find_if(counts.begin(), counts.end(), [&](int64_t c) { return c < min_count_; }) -
           counts.begin();
  if (vocab_ < options_.dim)
    throw ConfigError(
        fmt::format("ppmi_svd: {} words occur min_count = {} times, fewer than "
                    "model.d_model = {}",
                    vocab_, min_count_, options_.dim));
  const int64_t s = corpus.sentences();
  const CooccurrenceCounts mine = count_cooccurrences(
      corpus, rank * s / world, (rank + 1) * s / world, options_.window, options_.weight, vocab_);

  // All-gather the sorted (key, count) arrays, padded to the longest.
  torch::Tensor size = torch::tensor({static_cast<int64_t>(mine.keys.size())}, torch::kLong);
  std::vector<torch::Tensor> sizes;
  for (int64_t r = 0; r < world; ++r) sizes.push_back(torch::empty_like(size));
  ctx.comm.all_gather(sizes, size);
  int64_t longest = 0;
  for (const auto& t : sizes) longest = std::max(longest, t.item<int64_t>());
  torch::Tensor keys = torch::zeros({longest}, torch::kLong);
  torch::Tensor values = torch::zeros({longest}, torch::kDouble);
  std::copy(mine.keys.begin(), mine.keys.end(), keys.data_ptr<int64_t>());
  std::copy(mine.counts.begin(), mine.counts.end(), values.data_ptr<double>());
  std::vector<torch::Tensor> all_keys, all_values;
  for (int64_t r = 0; r < world; ++r) {
    all_keys.push_back(torch::empty_like(keys));
    all_values.push_back(torch::empty_like(values));
  }
  ctx.comm.all_gather(all_keys, keys);
  ctx.comm.all_gather(all_values, values);

  torch::Tensor w_in, w_out;
  for (auto& [name, p] : ctx.model->named_params()) {
    if (name.ends_with("w_in")) w_in = p;
    if (name.ends_with("w_out")) w_out = p;
  }
  torch::Tensor w = torch::zeros({vocab_, options_.dim}, torch::kDouble);
  if (rank == 0) {
    std::vector<CooccurrenceCounts> parts(world);
    for (int64_t r = 0; r < world; ++r) {
      const int64_t n = sizes[r].item<int64_t>();
      parts[r].keys.assign(all_keys[r].data_ptr<int64_t>(), all_keys[r].data_ptr<int64_t>() + n);
      parts[r].counts.assign(all_values[r].data_ptr<double>(),
                             all_values[r].data_ptr<double>() + n);
    }
    const CooccurrenceCounts merged = merge_counts(parts);
    entries_ = static_cast<int64_t>(merged.keys.size());
    w.copy_(ppmi_svd_embeddings(merged, vocab_, options_));
  }
  ctx.comm.broadcast(w, 0);
  w_in.narrow(0, 0, vocab_).copy_(w);
  w_out.narrow(0, 0, vocab_).copy_(w);
  return {.loss = 0.0, .samples = corpus.size(), .micro_batches = 1};
}

AlgorithmReport PpmiSvd::report() const {
  return {.counts = {{"vocabulary", vocab_}, {"cooccurrence_entries", entries_}}};
}

}  // namespace desync
