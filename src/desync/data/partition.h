// Federated clients: seeded partitions of a training split, the per-round client sampler and the
// placement of sampled clients on ranks (docs/federated.md; spec federated.md §1).
//
// Every function here is a pure function of its arguments: the randomness comes from
// CounterRng, keyed by (seed, purpose, round, client), whose output is the same on every
// platform (no std:: distributions, whose algorithms differ across standard libraries). So every
// rank computes the same partition and the same sample without communicating, and a resumed run
// draws what an uninterrupted one draws.
//
// Partitions cut the n examples into K + T client index lists (K training clients, T held-out
// test clients; held-out ids are the first T of a seeded permutation of all K + T ids):
//   iid        a seeded permutation cut into K + T parts whose sizes differ by at most 1;
//   dirichlet  label skew, mode per_class (NIID-Bench "labeldir": per class, Dir(alpha) shares
//              over the clients that are not yet full, retried until every client holds at least
//              min_size) or per_client (each client draws class proportions from Dir(alpha) and
//              takes floor(n / (K + T)) examples; the n mod (K + T) leftovers stay unassigned);
//   quantity   sizes from Dir(alpha) (redrawn until each client gets min_size), labels uniform.
// Gamma variates are drawn in log space (Marsaglia-Tsang, log G(a) = log G(a + 1) + log(U) / a
// for a < 1) so that alpha = 1e-3 does not underflow.
//
// Thread-safety: all functions are pure; a CounterRng is used by one thread at a time.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace desync {

// SplitMix64 over a counter: next() = mix64(key + ++counter * golden gamma). Same stream on
// every platform.
class CounterRng {
 public:
  explicit CounterRng(uint64_t key) : key_(key) {}
  uint64_t next();
  double uniform();                    // in the open interval (0, 1), 53 random bits
  double normal();                     // standard normal (Box-Muller, both draws from uniform())
  int64_t below(int64_t n);            // uniform in [0, n), n >= 1, without modulo bias
  void shuffle(std::vector<int64_t>& v);  // Fisher-Yates, from the back
 private:
  uint64_t key_;
  uint64_t counter_ = 0;
};

// The key of a stream: a mix of the run seed, a purpose tag and up to two indices (round,
// client). Different arguments give unrelated streams.
uint64_t rng_key(uint64_t seed, uint64_t purpose, uint64_t a = 0, uint64_t b = 0);

// log of a Gamma(alpha, 1) variate, alpha > 0; finite for alpha as small as 1e-3.
double log_gamma_variate(double alpha, CounterRng& rng);
// A Dirichlet(alpha * 1_n) vector (sums to 1), computed from log-gamma variates with the
// log-sum-exp trick.
std::vector<double> dirichlet(double alpha, int64_t n, CounterRng& rng);

struct PartitionOptions {
  std::string kind = "dirichlet";  // iid | dirichlet | quantity
  std::string mode = "per_class";  // dirichlet: per_class | per_client
  double alpha = 0.1;              // dirichlet: label concentration; quantity: size concentration
  int64_t clients = 100;           // K, training clients
  int64_t heldout = 20;            // T, held-out test clients
  int64_t min_size = 10;           // smallest client (per_class, quantity)
  int64_t max_tries = 1000;        // per_class, quantity: redraws before giving up
};

struct ClientPartition {
  std::vector<std::vector<int64_t>> indices;  // K + T lists of example indices, by client id
  std::vector<int64_t> train_ids;             // the K training client ids, ascending
  std::vector<int64_t> heldout_ids;           // the T held-out client ids, ascending
  int64_t size(int64_t client) const { return static_cast<int64_t>(indices.at(client).size()); }
};

// Partitions the examples with `labels` (int64 [n], values in [0, num_classes)). Throws
// ConfigError for impossible options (K + T > n, min_size * (K + T) > n, ...) and, when
// max_tries draws fail the minimum size, "... raise alpha, lower K or min_size".
ClientPartition make_partition(const torch::Tensor& labels, int64_t num_classes,
                               const PartitionOptions& options, uint64_t seed);

// The clients of round `round`: the first k of a seeded Fisher-Yates shuffle of train_ids.
std::vector<int64_t> sample_clients(const std::vector<int64_t>& train_ids, int64_t k,
                                    uint64_t seed, int64_t round);

// Which rank runs each sampled client (result[j] for sampled[j]):
//   deal    j mod world;
//   lpt     longest processing time first: clients by size descending (ties: lower position
//           first) each to the rank with the least assigned examples (ties: lower rank);
//   static  client id mod world.
// `sizes[id]` is client id's number of examples.
std::vector<int64_t> place_clients(const std::vector<int64_t>& sampled,
                                   const std::vector<int64_t>& sizes, int64_t world,
                                   const std::string& placement);

// The per-client label histogram as a table: one row per client (id, role train/heldout,
// examples, then one column per class), a header, and a last row with the totals.
std::string format_partition(const ClientPartition& partition, const torch::Tensor& labels,
                             int64_t num_classes);

}  // namespace desync
