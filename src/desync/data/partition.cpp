// Federated client partitions, the per-round client sampler and client placement (spec
// federated.md §1). Every random draw comes from a CounterRng whose key names its purpose, so
// no two uses share a stream and none depends on the order in which the others ran.
#include "desync/data/partition.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "desync/core/error.h"
#include "desync/data/batch_source.h"

namespace desync {
namespace {

constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ULL;

// Purpose tags (ASCII), one per random use.
constexpr uint64_t kHeldoutPurpose = 0x686c646f75746964ULL;         // "hldoutid"
constexpr uint64_t kIidPurpose = 0x6969647065726d31ULL;             // "iidperm1"
constexpr uint64_t kLabelDirPurpose = 0x6c6162656c646972ULL;        // "labeldir"
constexpr uint64_t kClientShufflePurpose = 0x636c6e7473687566ULL;   // "clntshuf"
constexpr uint64_t kPerClientPiPurpose = 0x70636c6e74706931ULL;     // "pclntpi1"
constexpr uint64_t kPerClientClassPurpose = 0x70636c6e74636c73ULL;  // "pclntcls"
constexpr uint64_t kPerClientDrawPurpose = 0x70636c6e74647277ULL;   // "pclntdrw"
constexpr uint64_t kQuantityPermPurpose = 0x7175616e7470726dULL;    // "quantprm"
constexpr uint64_t kQuantityDrawPurpose = 0x7175616e74647277ULL;    // "quantdrw"
constexpr uint64_t kSamplePurpose = 0x73616d706c65636cULL;          // "samplecl"

constexpr char kGiveUpAdvice[] = "raise alpha, lower K or min_size";

std::vector<int64_t> iota_vector(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), int64_t{0});
  return v;
}

// Index of a draw from the categorical distribution with (unnormalised, non-negative) `weights`
// summing to `total` > 0. Never returns an index whose weight is 0.
int64_t draw_category(const std::vector<double>& weights, double total, CounterRng& rng) {
  const double target = rng.uniform() * total;
  double cum = 0.0;
  int64_t last_positive = -1;
  for (size_t c = 0; c < weights.size(); ++c) {
    if (weights[c] <= 0.0) continue;
    last_positive = static_cast<int64_t>(c);
    cum += weights[c];
    if (target < cum) return last_positive;
  }
  return last_positive;  // rounding left target just above the last partial sum
}

// Cuts `items` at floor(|items| * cumsum(q)_j) for j < parts - 1 and appends piece j to out[j].
void cut_by_shares(const std::vector<int64_t>& items, const std::vector<double>& q,
                   std::vector<std::vector<int64_t>>& out) {
  const int64_t total = static_cast<int64_t>(items.size());
  const size_t parts = out.size();
  double cum = 0.0;
  int64_t begin = 0;
  for (size_t j = 0; j < parts; ++j) {
    int64_t end = total;
    if (j + 1 < parts) {
      cum += q[j];
      end = static_cast<int64_t>(std::floor(static_cast<double>(total) * cum));
      end = std::clamp(end, begin, total);
    }
    out[j].insert(out[j].end(), items.begin() + begin, items.begin() + end);
    begin = end;
  }
}

void validate(const torch::Tensor& labels, int64_t num_classes, const PartitionOptions& o) {
  if (!labels.defined() || labels.dim() != 1 || labels.scalar_type() != torch::kLong) {
    throw ConfigError("partition labels must be a 1-D int64 tensor, got " +
                      (labels.defined() ? std::string(labels.toString()) + " of " +
                                              std::to_string(labels.dim()) + " dimensions"
                                        : std::string("an undefined tensor")));
  }
  if (num_classes < 1) {
    throw ConfigError(fmt::format("partition needs at least 1 class, got {}", num_classes));
  }
  const int64_t n = labels.size(0);
  if (n > 0) {
    const int64_t lo = labels.min().item<int64_t>(), hi = labels.max().item<int64_t>();
    if (lo < 0 || hi >= num_classes) {
      throw ConfigError(fmt::format("partition labels must lie in [0, {}), found {}", num_classes,
                                    lo < 0 ? lo : hi));
    }
  }
  if (o.clients < 1) {
    throw ConfigError(fmt::format("algorithm.clients must be at least 1, got {}", o.clients));
  }
  if (o.heldout < 0) {
    throw ConfigError(
        fmt::format("algorithm.heldout_clients must be at least 0, got {}", o.heldout));
  }
  if (o.kind != "iid" && o.kind != "dirichlet" && o.kind != "quantity") {
    throw ConfigError(
        fmt::format("algorithm.partition = '{}' is not one of iid, dirichlet, quantity", o.kind));
  }
  if (o.kind == "dirichlet" && o.mode != "per_class" && o.mode != "per_client") {
    throw ConfigError(
        fmt::format("algorithm.dirichlet_mode = '{}' is not one of per_class, per_client", o.mode));
  }
  if (o.kind != "iid" && !(o.alpha > 0.0 && std::isfinite(o.alpha))) {
    throw ConfigError(
        fmt::format("algorithm.alpha must be a finite number > 0 for partition = {}, "
                    "got {}",
                    o.kind, o.alpha));
  }
  const int64_t parts = o.clients + o.heldout;
  if (parts > n) {
    throw ConfigError(fmt::format(
        "algorithm.clients = {} with heldout_clients = {}: more clients than the {} training "
        "examples",
        o.clients, o.heldout, n));
  }
  const bool uses_min_size =
      o.kind == "quantity" || (o.kind == "dirichlet" && o.mode == "per_class");
  if (uses_min_size) {
    if (o.min_size < 0) {
      throw ConfigError(
          fmt::format("algorithm.min_client_size must be at least 0, got {}", o.min_size));
    }
    if (o.min_size > 0 && o.min_size > n / parts) {
      throw ConfigError(fmt::format(
          "algorithm.min_client_size = {} with {} clients (clients + heldout_clients) needs {} "
          "examples; the training split has {}",
          o.min_size, parts, o.min_size * parts, n));
    }
    if (o.max_tries < 1) {
      throw ConfigError(fmt::format("partition max_tries must be at least 1, got {}", o.max_tries));
    }
  }
}

std::vector<std::vector<int64_t>> class_members(const torch::Tensor& labels, int64_t num_classes) {
  std::vector<std::vector<int64_t>> members(static_cast<size_t>(num_classes));
  const int64_t n = labels.size(0);
  const int64_t* y = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) members[static_cast<size_t>(y[i])].push_back(i);
  return members;
}

std::vector<std::vector<int64_t>> partition_iid(int64_t n, int64_t parts, uint64_t seed) {
  std::vector<int64_t> perm = iota_vector(n);
  CounterRng rng(rng_key(seed, kIidPurpose));
  rng.shuffle(perm);
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(parts));
  const int64_t base = n / parts, extra = n % parts;
  int64_t begin = 0;
  for (int64_t j = 0; j < parts; ++j) {
    const int64_t end = begin + base + (j < extra ? 1 : 0);
    out[static_cast<size_t>(j)].assign(perm.begin() + begin, perm.begin() + end);
    begin = end;
  }
  return out;
}

// NIID-Bench "labeldir": per class, Dir(alpha) shares over the clients that are not yet full.
std::vector<std::vector<int64_t>> partition_per_class(const torch::Tensor& labels,
                                                      int64_t num_classes,
                                                      const PartitionOptions& o, uint64_t seed) {
  const int64_t n = labels.size(0);
  const int64_t parts = o.clients + o.heldout;
  const double full = static_cast<double>(n) / static_cast<double>(parts);
  const std::vector<std::vector<int64_t>> members = class_members(labels, num_classes);
  for (int64_t attempt = 0; attempt < o.max_tries; ++attempt) {
    CounterRng rng(rng_key(seed, kLabelDirPurpose, static_cast<uint64_t>(attempt)));
    std::vector<std::vector<int64_t>> out(static_cast<size_t>(parts));
    for (int64_t c = 0; c < num_classes; ++c) {
      std::vector<int64_t> items = members[static_cast<size_t>(c)];
      rng.shuffle(items);
      std::vector<double> q = dirichlet(o.alpha, parts, rng);
      double sum = 0.0;
      for (int64_t j = 0; j < parts; ++j) {
        if (static_cast<double>(out[static_cast<size_t>(j)].size()) >= full) q[j] = 0.0;
        sum += q[j];
      }
      if (sum > 0.0) {
        for (double& v : q) v /= sum;
      } else {  // every non-full share underflowed: uniform over the non-full clients
        int64_t open = 0;
        for (int64_t j = 0; j < parts; ++j) {
          open += static_cast<double>(out[static_cast<size_t>(j)].size()) < full ? 1 : 0;
        }
        for (int64_t j = 0; j < parts; ++j) {
          q[j] = static_cast<double>(out[static_cast<size_t>(j)].size()) < full
                     ? 1.0 / static_cast<double>(open)
                     : 0.0;
        }
      }
      cut_by_shares(items, q, out);
    }
    size_t smallest = out[0].size();
    for (const auto& p : out) smallest = std::min(smallest, p.size());
    if (static_cast<int64_t>(smallest) >= o.min_size) {
      for (int64_t j = 0; j < parts; ++j) {
        CounterRng shuffle_rng(rng_key(seed, kClientShufflePurpose, static_cast<uint64_t>(j)));
        shuffle_rng.shuffle(out[static_cast<size_t>(j)]);
      }
      return out;
    }
  }
  throw ConfigError(fmt::format(
      "algorithm.partition = dirichlet (dirichlet_mode = per_class, alpha = {}): none of {} draws "
      "gave each of the {} clients at least min_client_size = {} of the {} examples; {}",
      o.alpha, o.max_tries, parts, o.min_size, n, kGiveUpAdvice));
}

// GuidingLastLayerFLPretrain's DirichletSharder: client j draws pi_j ~ Dir(alpha), then takes
// floor(n / parts) examples, each the next unused one of a class drawn from pi_j.
std::vector<std::vector<int64_t>> partition_per_client(const torch::Tensor& labels,
                                                       int64_t num_classes,
                                                       const PartitionOptions& o, uint64_t seed) {
  const int64_t n = labels.size(0);
  const int64_t parts = o.clients + o.heldout;
  const int64_t quota = n / parts;
  std::vector<std::vector<int64_t>> members = class_members(labels, num_classes);
  for (int64_t c = 0; c < num_classes; ++c) {
    CounterRng rng(rng_key(seed, kPerClientClassPurpose, static_cast<uint64_t>(c)));
    rng.shuffle(members[static_cast<size_t>(c)]);
  }
  std::vector<std::vector<double>> pi(static_cast<size_t>(parts));
  {
    CounterRng rng(rng_key(seed, kPerClientPiPurpose));
    for (auto& row : pi) row = dirichlet(o.alpha, num_classes, rng);
  }
  std::vector<size_t> used(static_cast<size_t>(num_classes), 0);
  std::vector<double> remaining(static_cast<size_t>(num_classes));
  for (int64_t c = 0; c < num_classes; ++c) {
    remaining[static_cast<size_t>(c)] = static_cast<double>(members[static_cast<size_t>(c)].size());
    if (members[static_cast<size_t>(c)].empty()) {
      for (auto& row : pi) row[static_cast<size_t>(c)] = 0.0;
    }
  }
  double remaining_total = static_cast<double>(n);
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(parts));
  for (int64_t j = 0; j < parts; ++j) {
    CounterRng rng(rng_key(seed, kPerClientDrawPurpose, static_cast<uint64_t>(j)));
    std::vector<double>& row = pi[static_cast<size_t>(j)];
    auto& mine = out[static_cast<size_t>(j)];
    mine.reserve(static_cast<size_t>(quota));
    for (int64_t i = 0; i < quota; ++i) {
      double total = 0.0;
      for (double v : row) total += v;
      // All-zero row (its classes are exhausted): draw by the remaining class frequencies.
      const int64_t c = total > 0.0 ? draw_category(row, total, rng)
                                    : draw_category(remaining, remaining_total, rng);
      const size_t cs = static_cast<size_t>(c);
      mine.push_back(members[cs][used[cs]]);
      ++used[cs];
      remaining[cs] -= 1.0;
      remaining_total -= 1.0;
      if (used[cs] == members[cs].size()) {
        for (auto& r : pi) r[cs] = 0.0;  // exhausted: zeroed in every client's proportions
      }
    }
  }
  return out;
}

// NIID-Bench "iid-diff-quantity": sizes from Dir(alpha), a permutation cut at floor(n cumsum q).
std::vector<std::vector<int64_t>> partition_quantity(int64_t n, const PartitionOptions& o,
                                                     uint64_t seed) {
  const int64_t parts = o.clients + o.heldout;
  std::vector<int64_t> perm = iota_vector(n);
  CounterRng perm_rng(rng_key(seed, kQuantityPermPurpose));
  perm_rng.shuffle(perm);
  for (int64_t attempt = 0; attempt < o.max_tries; ++attempt) {
    CounterRng rng(rng_key(seed, kQuantityDrawPurpose, static_cast<uint64_t>(attempt)));
    const std::vector<double> q = dirichlet(o.alpha, parts, rng);
    const double smallest = *std::min_element(q.begin(), q.end()) * static_cast<double>(n);
    if (smallest < static_cast<double>(o.min_size)) continue;
    std::vector<std::vector<int64_t>> out(static_cast<size_t>(parts));
    cut_by_shares(perm, q, out);
    // In exact arithmetic min q_j n >= min_size implies every piece holds min_size; check the
    // pieces themselves in case the rounding of cumsum says otherwise.
    bool ok = true;
    for (const auto& p : out) ok = ok && static_cast<int64_t>(p.size()) >= o.min_size;
    if (ok) return out;
  }
  throw ConfigError(fmt::format(
      "algorithm.partition = quantity (alpha = {}): none of {} draws gave each of the {} clients "
      "at least min_client_size = {} of the {} examples; {}",
      o.alpha, o.max_tries, parts, o.min_size, n, kGiveUpAdvice));
}

}  // namespace

uint64_t CounterRng::next() { return mix64(key_ + (++counter_) * kGoldenGamma); }

double CounterRng::uniform() {
  // (x + 0.5) 2^-53 for a 53-bit x. Above 2^52 the sum rounds to even, so the top value would
  // come out as exactly 1: keep it below 1.
  const double u = (static_cast<double>(next() >> 11) + 0.5) * 0x1p-53;
  return u < 1.0 ? u : 0x1.fffffffffffffp-1;
}

double CounterRng::normal() {
  const double u1 = uniform();
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

int64_t CounterRng::below(int64_t n) {
  if (n < 1) throw Error(fmt::format("CounterRng::below needs n >= 1, got {}", n));
  const uint64_t bound = static_cast<uint64_t>(n);
  // Accept r >= 2^64 mod bound: the accepted range is a whole number of copies of [0, bound).
  const uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    const uint64_t r = next();
    if (r >= threshold) return static_cast<int64_t>(r % bound);
  }
}

void CounterRng::shuffle(std::vector<int64_t>& v) {
  for (int64_t i = static_cast<int64_t>(v.size()) - 1; i > 0; --i) {
    std::swap(v[static_cast<size_t>(i)], v[static_cast<size_t>(below(i + 1))]);
  }
}

uint64_t rng_key(uint64_t seed, uint64_t purpose, uint64_t a, uint64_t b) {
  return mix64(mix64(mix64(mix64(seed) ^ purpose) ^ a) ^ b);
}

double log_gamma_variate(double alpha, CounterRng& rng) {
  if (!(alpha > 0.0) || !std::isfinite(alpha)) {
    throw Error(fmt::format("log_gamma_variate needs a finite alpha > 0, got {}", alpha));
  }
  if (alpha < 1.0) {
    // G(a) = G(a + 1) U^(1/a), in log space so that tiny a does not underflow.
    const double boosted = log_gamma_variate(alpha + 1.0, rng);
    return boosted + std::log(rng.uniform()) / alpha;
  }
  // Marsaglia & Tsang (2000).
  const double d = alpha - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    const double x = rng.normal();
    double v = 1.0 + c * x;
    if (v <= 0.0) continue;
    v = v * v * v;
    const double u = rng.uniform();
    if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return std::log(d * v);
  }
}

std::vector<double> dirichlet(double alpha, int64_t n, CounterRng& rng) {
  if (n < 1) throw Error(fmt::format("dirichlet needs n >= 1, got {}", n));
  std::vector<double> out(static_cast<size_t>(n));
  for (double& v : out) v = log_gamma_variate(alpha, rng);
  const double top = *std::max_element(out.begin(), out.end());
  double sum = 0.0;
  for (double& v : out) {
    v = std::exp(v - top);  // the largest is exp(0) = 1, so sum >= 1
    sum += v;
  }
  for (double& v : out) v /= sum;
  return out;
}

ClientPartition make_partition(const torch::Tensor& labels, int64_t num_classes,
                               const PartitionOptions& options, uint64_t seed) {
  validate(labels, num_classes, options);
  const torch::Tensor y = labels.cpu().contiguous();
  const int64_t n = y.size(0);
  const int64_t parts = options.clients + options.heldout;

  ClientPartition p;
  if (options.kind == "iid") {
    p.indices = partition_iid(n, parts, seed);
  } else if (options.kind == "quantity") {
    p.indices = partition_quantity(n, options, seed);
  } else if (options.mode == "per_class") {
    p.indices = partition_per_class(y, num_classes, options, seed);
  } else {
    p.indices = partition_per_client(y, num_classes, options, seed);
  }

  std::vector<int64_t> ids = iota_vector(parts);
  CounterRng rng(rng_key(seed, kHeldoutPurpose));
  rng.shuffle(ids);
  p.heldout_ids.assign(ids.begin(), ids.begin() + options.heldout);
  p.train_ids.assign(ids.begin() + options.heldout, ids.end());
  std::sort(p.heldout_ids.begin(), p.heldout_ids.end());
  std::sort(p.train_ids.begin(), p.train_ids.end());
  return p;
}

std::vector<int64_t> sample_clients(const std::vector<int64_t>& train_ids, int64_t k, uint64_t seed,
                                    int64_t round) {
  const int64_t available = static_cast<int64_t>(train_ids.size());
  if (k < 0 || k > available) {
    throw ConfigError(fmt::format(
        "cannot sample {} clients per round from {} training clients (algorithm.clients)", k,
        available));
  }
  std::vector<int64_t> ids = train_ids;
  CounterRng rng(rng_key(seed, kSamplePurpose, static_cast<uint64_t>(round)));
  rng.shuffle(ids);
  ids.resize(static_cast<size_t>(k));
  return ids;
}

std::vector<int64_t> place_clients(const std::vector<int64_t>& sampled,
                                   const std::vector<int64_t>& sizes, int64_t world,
                                   const std::string& placement) {
  if (world < 1) throw ConfigError(fmt::format("client placement needs world >= 1, got {}", world));
  const size_t k = sampled.size();
  std::vector<int64_t> rank(k);
  if (placement == "deal") {
    for (size_t j = 0; j < k; ++j) rank[j] = static_cast<int64_t>(j) % world;
  } else if (placement == "static") {
    for (size_t j = 0; j < k; ++j) rank[j] = sampled[j] % world;
  } else if (placement == "lpt") {
    std::vector<int64_t> size_of(k);
    for (size_t j = 0; j < k; ++j) {
      if (sampled[j] < 0 || sampled[j] >= static_cast<int64_t>(sizes.size())) {
        throw Error(
            fmt::format("client {} has no size ({} sizes given)", sampled[j], sizes.size()));
      }
      size_of[j] = sizes[static_cast<size_t>(sampled[j])];
    }
    std::vector<size_t> order(k);
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return size_of[a] > size_of[b]; });
    std::vector<int64_t> load(static_cast<size_t>(world), 0);
    for (size_t j : order) {
      // min_element returns the first minimum: ties go to the lower rank.
      const auto least = std::min_element(load.begin(), load.end());
      rank[j] = static_cast<int64_t>(least - load.begin());
      *least += size_of[j];
    }
  } else {
    throw ConfigError(
        fmt::format("algorithm.placement = '{}' is not one of deal, lpt, static", placement));
  }
  return rank;
}

std::string format_partition(const ClientPartition& partition, const torch::Tensor& labels,
                             int64_t num_classes) {
  const torch::Tensor y = labels.cpu().contiguous();
  const int64_t* yl = y.data_ptr<int64_t>();
  const int64_t n = y.size(0);
  const size_t clients = partition.indices.size();
  std::vector<bool> heldout(clients, false);
  for (int64_t id : partition.heldout_ids) heldout.at(static_cast<size_t>(id)) = true;

  // cells[r] is one row of strings; row 0 is the header, the last the totals.
  std::vector<std::vector<std::string>> cells;
  std::vector<std::string> header = {"client", "role", "examples"};
  for (int64_t c = 0; c < num_classes; ++c) header.push_back(std::to_string(c));
  cells.push_back(std::move(header));
  std::vector<int64_t> totals(static_cast<size_t>(num_classes), 0);
  int64_t total_examples = 0;
  for (size_t id = 0; id < clients; ++id) {
    std::vector<int64_t> hist(static_cast<size_t>(num_classes), 0);
    for (int64_t i : partition.indices[id]) {
      if (i < 0 || i >= n) throw Error(fmt::format("client {} holds index {} of {}", id, i, n));
      ++hist.at(static_cast<size_t>(yl[i]));
    }
    std::vector<std::string> row = {std::to_string(id), heldout[id] ? "heldout" : "train",
                                    std::to_string(partition.indices[id].size())};
    for (int64_t c = 0; c < num_classes; ++c) {
      row.push_back(std::to_string(hist[static_cast<size_t>(c)]));
      totals[static_cast<size_t>(c)] += hist[static_cast<size_t>(c)];
    }
    total_examples += static_cast<int64_t>(partition.indices[id].size());
    cells.push_back(std::move(row));
  }
  std::vector<std::string> last = {"total", "", std::to_string(total_examples)};
  for (int64_t t : totals) last.push_back(std::to_string(t));
  cells.push_back(std::move(last));

  std::vector<size_t> width(cells[0].size(), 0);
  for (const auto& row : cells) {
    for (size_t col = 0; col < row.size(); ++col)
      width[col] = std::max(width[col], row[col].size());
  }
  std::string out;
  for (const auto& row : cells) {
    for (size_t col = 0; col < row.size(); ++col) {
      if (col > 0) out += "  ";
      // Names left-aligned, counts right-aligned.
      out += col <= 1 ? fmt::format("{:<{}}", row[col], width[col])
                      : fmt::format("{:>{}}", row[col], width[col]);
    }
    out += '\n';
  }
  return out;
}

}  // namespace desync
