// Throughput of the SGNS kernel (algorithms/embedding/sgns_kernel.h) on a synthetic Zipf corpus
// shaped like the GCIDE run (V 43k, sentences of 12 tokens, d 100, L 5, k 5, s 1e-3), one thread:
// generating the examples alone (the baseline), generating and applying them with C's sequential
// update (float tables; exact sigmoid or C's table), and the batched gradient of B = 4096 pairs.
//
//   build/bench/sgns_kernel_bench [--tokens N] [--rounds R] [--dim D] [--json F]
//
// Prints tokens per second (tokens read, before subsampling) per variant: the median over rounds
// and the spread (min..max).
#include <torch/torch.h>

#include <cstring>

#include "desync/algorithms/embedding/sgns_kernel.h"
#include "harness.h"

using namespace desync;

int main(int argc, char** argv) {
  int64_t tokens = 300000, dim = 100, vocab = 43000, sentence_length = 12;
  int rounds = 5;
  std::string json_path = "sgns_kernel_bench.json";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--tokens")) tokens = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--rounds")) rounds = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--dim")) dim = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--json")) json_path = argv[i + 1];
  }
  at::set_num_threads(1);

  // Zipf corpus: word w has count ∝ 1 / (w + 1), drawn with the kernel's own sampler.
  std::vector<int64_t> counts(static_cast<size_t>(vocab));
  for (int64_t w = 0; w < vocab; ++w) counts[w] = std::max<int64_t>(5, 50000000 / (w + 1));
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  const sgns::NegativeSampler zipf(counts, 1.0);
  sgns::Lcg corpus_rng{7};
  std::vector<int32_t> corpus(static_cast<size_t>(tokens));
  for (int32_t& w : corpus) w = zipf.draw(corpus_rng);

  const sgns::Options exact;
  sgns::Options table = exact;
  table.exact_sigmoid = false;
  const sgns::NegativeSampler neg(counts, exact.noise_exponent);
  torch::manual_seed(1);
  torch::Tensor w_in = (torch::rand({vocab, dim}) - 0.5) / dim;
  torch::Tensor w_out = torch::zeros({vocab, dim});
  std::vector<int32_t> rows;
  double sink = 0;

  // One pass over the corpus, sentence by sentence, as the sequential trainer runs.
  auto pass = [&](const sgns::Options* update) {
    sgns::Lcg rng{1};
    for (int64_t at = 0; at + sentence_length <= tokens; at += sentence_length) {
      rows.clear();
      const int64_t n = sgns::sentence_examples(corpus.data() + at, sentence_length, counts, total,
                                                rng, neg, exact, rows);
      if (update)
        sink += sgns::sequential_update(w_in.data_ptr<float>(), w_out.data_ptr<float>(), dim,
                                        rows.data(), n, exact.negatives, 0.025, *update);
    }
  };
  // The batched gradient over the same rows, in batches of 4096 pairs.
  std::vector<int32_t> all_rows;
  {
    sgns::Lcg rng{1};
    for (int64_t at = 0; at + sentence_length <= tokens; at += sentence_length)
      sgns::sentence_examples(corpus.data() + at, sentence_length, counts, total, rng, neg, exact,
                              all_rows);
  }
  const int64_t width = exact.negatives + 2, pairs = static_cast<int64_t>(all_rows.size()) / width;
  const torch::Tensor examples =
      torch::from_blob(all_rows.data(), {pairs, width}, torch::kInt).to(torch::kLong);
  auto batched = [&] {
    for (int64_t at = 0; at + 4096 <= pairs; at += 4096)
      sink += sgns::batch_gradient(w_in, w_out, examples.narrow(0, at, 4096)).loss;
  };
  const double batched_tokens =
      static_cast<double>(tokens) * static_cast<double>(pairs / 4096 * 4096) / pairs;

  std::vector<bench::Variant> variants = {
      {"examples only", [&] { pass(nullptr); }, {}},
      {"sequential exact", [&] { pass(&exact); }, {}},
      {"sequential table", [&] { pass(&table); }, {}},
      {"batch_gradient", batched, {}},
  };
  bench::measure(variants, 1, rounds);

  fmt::print("sgns kernel · V {} · d {} · {} tokens ({} pairs) · 1 thread · {} rounds\n", vocab,
             dim, tokens, pairs, rounds);
  fmt::print("{:<20}{:>16}{:>28}\n", "variant", "median tok/s", "spread tok/s (min..max)");
  nlohmann::json out = {{"vocab", vocab},   {"dim", dim},
                        {"tokens", tokens}, {"pairs", pairs},
                        {"rounds", rounds}, {"variants", nlohmann::json::array()}};
  for (const bench::Variant& v : variants) {
    const double n = v.name == "batch_gradient" ? batched_tokens : static_cast<double>(tokens);
    const double med = n / bench::median(v.seconds);
    const double lo = n / *std::max_element(v.seconds.begin(), v.seconds.end());
    const double hi = n / *std::min_element(v.seconds.begin(), v.seconds.end());
    fmt::print("{:<20}{:>16.0f}{:>28}\n", v.name, med, fmt::format("{:.0f}..{:.0f}", lo, hi));
    out["variants"].push_back({{"name", v.name},
                               {"median_tokens_per_second", med},
                               {"min_tokens_per_second", lo},
                               {"max_tokens_per_second", hi}});
  }
  bench::write_json(json_path, out);
  fmt::print("wrote {} (checksum {:.3g})\n", json_path, sink);
  return 0;
}
