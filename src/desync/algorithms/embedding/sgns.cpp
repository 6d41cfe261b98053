#include "desync/algorithms/embedding/sgns.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "desync/algorithms/registry.h"
#include "desync/core/error.h"
#include "desync/data/word_corpus.h"

namespace desync {
namespace {

constexpr double kAlphaFloor = 1e-4;  // as word2vec.c: alpha never falls below 1e-4 alpha0

torch::Tensor table(Context& ctx, const char* name) {
  for (auto& [n, p] : ctx.model->named_params())
    if (n.size() >= std::string(name).size() &&
        n.compare(n.size() - std::string(name).size(), std::string::npos, name) == 0)
      return p;
  throw ConfigError("algorithm sgns needs model.name = \"sgns\"");
}

}  // namespace

SgnsConfig read_sgns_config(SectionReader& r) {
  SgnsConfig c;
  const std::string mode =
      r.get_choice("sgns_mode", "local_avg", {"local_avg", "dense_ddp", "sparse_rows"});
  c.mode = mode == "dense_ddp"     ? SgnsConfig::Mode::kDenseDdp
           : mode == "sparse_rows" ? SgnsConfig::Mode::kSparseRows
                                   : SgnsConfig::Mode::kLocalAvg;
  c.kernel.window = r.get("window", c.kernel.window, 1, 1000);
  c.kernel.negatives = r.get("negatives", c.kernel.negatives, 0, 1000);
  c.kernel.noise_exponent = r.get("noise_exponent", c.kernel.noise_exponent, 0.0, 10.0);
  c.kernel.subsample = r.get("subsample", c.kernel.subsample, 0.0, 1.0);
  c.kernel.subsample_rule = r.get_choice("subsample_rule", "c_code", {"c_code", "paper"}) == "paper"
                                ? sgns::Options::Subsample::kPaper
                                : sgns::Options::Subsample::kCCode;
  c.kernel.exact_sigmoid = r.get_choice("sigmoid", "exact", {"exact", "table"}) == "exact";
  c.min_count = r.get("min_count", c.min_count, 1, int64_t{1} << 40);
  c.sync_words = r.get("sync_words", c.sync_words, 1, int64_t{1} << 40);
  c.batch_pairs = r.get("batch_pairs", c.batch_pairs, 1, int64_t{1} << 30);
  c.touched_rows = r.get_choice("sync_rows", "all", {"all", "touched"}) == "touched";
  c.merge_counts = r.get_choice("vocab_mode", "full_scan", {"full_scan", "merge"}) == "merge";
  c.rank_seed_offset = r.get("rank_seed_offset", c.rank_seed_offset);
  return c;
}

std::unique_ptr<Algorithm> make_sgns(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  SgnsConfig c = read_sgns_config(r);
  r.finish();
  return std::make_unique<Sgns>(c);
}

Sgns::Sgns(SgnsConfig cfg) : cfg_(cfg) {}

void Sgns::setup(Context& ctx) {
  const Config& config = ctx.config;
  if (ctx.micro_batches_left >= 0)
    throw ConfigError(
        "algorithm sgns counts synchronisations: set run.steps (one step reads sync_words "
        "tokens per rank, or batch_pairs examples; see docs/algorithms/sgns.md)");
  if (config.optimizer.name != "sgd" || config.optimizer.momentum != 0 ||
      config.optimizer.weight_decay != 0)
    throw ConfigError(
        "algorithm sgns trains with plain SGD at optimizer.lr (word2vec's alpha): set "
        "optimizer.name = \"sgd\", momentum = 0, weight_decay = 0");
  const Dataset& data = ctx.batches.dataset();
  if (config.data.dataset != "words")
    throw ConfigError("algorithm sgns needs data.dataset = \"words\"");
  w_in_ = table(ctx, "w_in");
  w_out_ = table(ctx, "w_out");
  dim_ = w_in_.size(1);
  k_ = cfg_.kernel.negatives;
  const int64_t rank = ctx.comm.rank(), world = ctx.comm.world_size();

  // This rank's shard: whole sentences.
  const torch::Tensor ids = data.inputs, bounds = data.targets;
  tokens_ = ids.data_ptr<int32_t>();
  const int64_t sentences = bounds.numel() - 1;
  const int64_t first = rank * sentences / world, end = (rank + 1) * sentences / world;
  const int64_t* b = bounds.data_ptr<int64_t>();
  offsets_.assign(b + first, b + end + 1);
  if (end <= first)
    throw ConfigError(
        fmt::format("the corpus has {} sentences, fewer than the {} workers", sentences, world));

  // Counts: of the whole corpus on every rank, or of each shard merged.
  const int64_t all = data.num_classes;
  torch::Tensor counts;
  if (cfg_.merge_counts) {
    counts = torch::bincount(
        ids.narrow(0, offsets_.front(), offsets_.back() - offsets_.front()).to(torch::kLong), {},
        all);
    ctx.comm.all_reduce(counts);
  } else {
    counts = torch::bincount(ids.to(torch::kLong), {}, all);
  }
  counts_.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + all);
  // The data's ids are sorted by count: the vocabulary is the prefix with count >= min_count.
  vocab_ =
      std::find_if(counts_.begin(), counts_.end(), [&](int64_t c) { return c < cfg_.min_count; }) -
      counts_.begin();
  if (vocab_ == 0)
    throw ConfigError(fmt::format("no word occurs min_count = {} times", cfg_.min_count));
  counts_.resize(vocab_);
  total_ = 0;
  for (int64_t c : counts_) total_ += c;

  // Every rank must hold the same vocabulary.
  uint64_t h = kFnvOffset;
  for (int64_t c : counts_) h = fnv1a64(std::to_string(c) + "\n", h);
  torch::Tensor mine = torch::tensor({static_cast<int64_t>(h)}, torch::kLong);
  std::vector<torch::Tensor> theirs;
  for (int64_t r = 0; r < world; ++r) theirs.push_back(torch::empty_like(mine));
  ctx.comm.all_gather(theirs, mine);
  for (int64_t r = 0; r < world; ++r)
    if (theirs[r].item<int64_t>() != mine.item<int64_t>())
      throw DataError(fmt::format(
          "rank {}'s vocabulary differs from rank {}'s (fingerprints {:016x} and {:016x}): the "
          "workers must read the same corpus",
          r, rank, static_cast<uint64_t>(theirs[r].item<int64_t>()), h));

  negatives_ = std::make_unique<sgns::NegativeSampler>(counts_, cfg_.kernel.noise_exponent);
  rng_ = sgns::Lcg{static_cast<uint64_t>(config.run.seed + (cfg_.rank_seed_offset ? rank : 0))};
  alpha0_ = config.optimizer.lr;
  alpha_tokens_ = config.run.steps * cfg_.sync_words;
  alpha_ = std::make_unique<sgns::AlphaSchedule>(alpha0_, alpha_tokens_);
  if (cfg_.touched_rows) {
    if (world > 255)
      throw ConfigError("sync_rows = \"touched\" sums a byte mask: at most 255 workers");
    touched_.assign(vocab_, 0);
  }
}

int64_t Sgns::next_sentence(std::vector<int32_t>& out) {
  if (sentence_ + 1 >= static_cast<int64_t>(offsets_.size())) {
    sentence_ = 0;
    ++epoch_;
  }
  // Tokens of words under min_count are dropped, as word2vec.c drops unknown words.
  words_.clear();
  for (int64_t i = offsets_[sentence_]; i < offsets_[sentence_ + 1]; ++i)
    if (tokens_[i] < vocab_) words_.push_back(tokens_[i]);
  ++sentence_;
  sgns::sentence_examples(words_.data(), static_cast<int64_t>(words_.size()), counts_, total_, rng_,
                          *negatives_, cfg_.kernel, out);
  return static_cast<int64_t>(words_.size());
}

StepReport Sgns::step(Context& ctx) {
  return cfg_.mode == SgnsConfig::Mode::kLocalAvg ? local_step(ctx) : batched_step(ctx);
}

StepReport Sgns::local_step(Context& ctx) {
  torch::NoGradGuard no_grad;
  const int64_t width = k_ + 2;
  std::vector<int32_t> batch;
  double loss = 0;
  int64_t tokens = 0, pairs = 0;
  while (tokens < cfg_.sync_words) {
    const double alpha = alpha_->before_sentence(tokens_read_);
    batch.clear();
    const int64_t n = next_sentence(batch);
    tokens += n;
    tokens_read_ += n;
    const int64_t count = static_cast<int64_t>(batch.size()) / width;
    if (count == 0) continue;
    if (w_in_.scalar_type() == torch::kDouble)
      loss += sgns::sequential_update(w_in_.data_ptr<double>(), w_out_.data_ptr<double>(), dim_,
                                      batch.data(), count, k_, alpha, cfg_.kernel);
    else
      loss += sgns::sequential_update(w_in_.data_ptr<float>(), w_out_.data_ptr<float>(), dim_,
                                      batch.data(), count, k_, alpha, cfg_.kernel);
    if (cfg_.touched_rows)
      for (int64_t e = 0; e < count; ++e)
        for (int64_t j = 0; j < width; ++j)
          if (batch[e * width + j] >= 0) touched_[batch[e * width + j]] = 1;
    pairs += count;
  }
  if (ctx.comm.world_size() > 1) average(ctx);
  return {.loss = pairs > 0 ? loss / static_cast<double>(pairs) : 0.0,
          .samples = tokens,
          .micro_batches = 1};
}

void Sgns::average(Context& ctx) {
  const double n = static_cast<double>(ctx.comm.world_size());
  torch::Tensor in = w_in_.narrow(0, 0, vocab_), out = w_out_.narrow(0, 0, vocab_);
  if (!cfg_.touched_rows) {
    torch::Tensor both = torch::stack({in, out});
    ctx.comm.all_reduce(both);
    both.div_(n);
    in.copy_(both[0]);
    out.copy_(both[1]);
    return;
  }
  torch::Tensor mask = torch::from_blob(touched_.data(), {vocab_}, torch::kUInt8).clone();
  ctx.comm.all_reduce(mask);  // a sum of 0/1 bytes: > 0 where any rank changed the row
  const torch::Tensor rows = mask.nonzero().squeeze(1);
  if (rows.numel() > 0) {
    torch::Tensor both = torch::stack({in.index_select(0, rows), out.index_select(0, rows)});
    ctx.comm.all_reduce(both);
    both.div_(n);
    in.index_copy_(0, rows, both[0]);
    out.index_copy_(0, rows, both[1]);
  }
  std::fill(touched_.begin(), touched_.end(), 0);
}

StepReport Sgns::batched_step(Context& ctx) {
  torch::NoGradGuard no_grad;
  const int64_t width = k_ + 2;
  int64_t tokens = 0;
  while (static_cast<int64_t>(pending_.size()) < cfg_.batch_pairs * width) {
    const int64_t n = next_sentence(pending_);
    tokens += n;
    tokens_read_ += n;
  }
  const int64_t take = cfg_.batch_pairs * width;
  torch::Tensor examples =
      torch::from_blob(pending_.data(), {cfg_.batch_pairs, width}, torch::kInt).to(torch::kLong);
  pending_.erase(pending_.begin(), pending_.begin() + take);
  const double progress = static_cast<double>(ctx.step) /
                          static_cast<double>(std::max<int64_t>(1, ctx.config.run.steps));
  const double alpha = ctx.config.optimizer.lr * std::max(kAlphaFloor, 1.0 - progress);
  const sgns::SparseGradient g =
      sgns::batch_gradient(w_in_.narrow(0, 0, vocab_), w_out_.narrow(0, 0, vocab_), examples);
  if (cfg_.mode == SgnsConfig::Mode::kDenseDdp)
    apply_dense(ctx, g, alpha);
  else
    apply_sparse(ctx, g, alpha);
  return {.loss = g.loss / static_cast<double>(cfg_.batch_pairs),
          .samples = tokens,
          .micro_batches = 1};
}

void Sgns::apply_dense(Context& ctx, const sgns::SparseGradient& g, double alpha) {
  torch::Tensor grad = torch::zeros({2, vocab_, dim_}, w_in_.options());
  grad[0].index_add_(0, g.in_rows, g.in_grad);
  grad[1].index_add_(0, g.out_rows, g.out_grad);
  ctx.comm.all_reduce(grad);
  const double scale = -alpha / static_cast<double>(ctx.comm.world_size());
  w_in_.narrow(0, 0, vocab_).add_(grad[0], scale);
  w_out_.narrow(0, 0, vocab_).add_(grad[1], scale);
}

void Sgns::apply_sparse(Context& ctx, const sgns::SparseGradient& g, double alpha) {
  const int64_t world = ctx.comm.world_size();
  // Row counts first, so every rank pads to the largest.
  torch::Tensor mine = torch::tensor({g.in_rows.numel(), g.out_rows.numel()}, torch::kLong);
  std::vector<torch::Tensor> counts;
  for (int64_t r = 0; r < world; ++r) counts.push_back(torch::empty_like(mine));
  ctx.comm.all_gather(counts, mine);
  const double scale = -alpha / static_cast<double>(world);
  for (int t = 0; t < 2; ++t) {
    const torch::Tensor& rows = t == 0 ? g.in_rows : g.out_rows;
    const torch::Tensor& grad = t == 0 ? g.in_grad : g.out_grad;
    int64_t u = 0;
    for (const auto& c : counts) u = std::max(u, c[t].item<int64_t>());
    torch::Tensor padded_rows = torch::zeros({u}, torch::kLong);
    torch::Tensor padded_grad = torch::zeros({u, dim_}, grad.options());
    padded_rows.narrow(0, 0, rows.numel()).copy_(rows);
    padded_grad.narrow(0, 0, rows.numel()).copy_(grad);
    std::vector<torch::Tensor> all_rows, all_grads;
    for (int64_t r = 0; r < world; ++r) {
      all_rows.push_back(torch::empty_like(padded_rows));
      all_grads.push_back(torch::empty_like(padded_grad));
    }
    ctx.comm.all_gather(all_rows, padded_rows);
    ctx.comm.all_gather(all_grads, padded_grad);
    torch::Tensor w = (t == 0 ? w_in_ : w_out_).narrow(0, 0, vocab_);
    torch::Tensor sum = torch::zeros({vocab_, dim_}, grad.options());
    // In rank order, so that every rank adds the same numbers in the same order.
    for (int64_t r = 0; r < world; ++r) {
      const int64_t n = counts[r][t].item<int64_t>();
      sum.index_add_(0, all_rows[r].narrow(0, 0, n), all_grads[r].narrow(0, 0, n));
    }
    w.add_(sum, scale);
  }
}

void Sgns::save(Archive& archive) const {
  archive.put("sgns.rng", static_cast<int64_t>(rng_.x));
  archive.put("sgns.epoch", epoch_);
  archive.put("sgns.sentence", sentence_);
  archive.put("sgns.tokens_read", tokens_read_);
  archive.put("sgns.alpha_progress", alpha_->progress());
  torch::Tensor pending = torch::empty({static_cast<int64_t>(pending_.size())}, torch::kInt);
  std::copy(pending_.begin(), pending_.end(), pending.data_ptr<int32_t>());
  archive.put("sgns.pending", pending);
}

void Sgns::load(const Archive& archive) {
  rng_.x = static_cast<uint64_t>(archive.integer("sgns.rng"));
  epoch_ = archive.integer("sgns.epoch");
  sentence_ = archive.integer("sgns.sentence");
  tokens_read_ = archive.integer("sgns.tokens_read");
  alpha_ = std::make_unique<sgns::AlphaSchedule>(alpha0_, alpha_tokens_,
                                                 archive.integer("sgns.alpha_progress"));
  const torch::Tensor p = archive.tensor("sgns.pending").contiguous();
  pending_.assign(p.data_ptr<int32_t>(), p.data_ptr<int32_t>() + p.numel());
}

AlgorithmReport Sgns::report() const {
  const int64_t b = static_cast<int64_t>(w_in_.element_size());
  return {.memory = {{"parameters", 2 * w_in_.numel() * b},
                     {"examples", static_cast<int64_t>(pending_.size() * sizeof(int32_t))}},
          .counts = {{"vocabulary", vocab_}, {"epochs_started", epoch_ + 1}}};
}

}  // namespace desync
