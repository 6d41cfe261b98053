// Communication graphs for gossip: who mixes with whom in a round, and with what weight.
//
// A Topology answers peers(rank, round): the ranks this rank exchanges with in that round and
// the weight w_ij of each. The self weight is 1 - sum_j w_ij, so the mixing matrix W is
// symmetric and doubly stochastic (every graph here is regular). Random graphs are drawn from a
// seed shared by all ranks and the round number, so every rank computes the same graph without
// exchanging a message.
//
//   ring         i <-> i±1                                       w = 1/3  (N = 2: one peer, 1/2)
//   torus        an r×c grid with wrap-around, r the largest divisor of N with r <= sqrt(N)
//   complete     every other rank                                w = 1/N
//   matching     a random perfect matching, re-drawn each round  w = 1/2  (odd N: one rank rests)
//   random_ring  the ring of a random permutation, re-drawn      w = 1/3
//
// The default weight is 1/(deg+1) (uniform over the closed neighbourhood); `mixing_weight`
// overrides it with one w for every edge, which must keep the self weight >= 0.
//
// Thread-safety: immutable after construction.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace desync {

struct Peer {
  int64_t rank;
  double weight;
};

class Topology {
 public:
  static const std::vector<std::string>& kinds();

  // Throws ConfigError for an unknown kind or a weight that makes the self weight negative.
  Topology(std::string kind, int64_t world, uint64_t seed, double mixing_weight = 0.0);

  const std::string& kind() const { return kind_; }
  int64_t world() const { return world_; }
  // The peers of `rank` in `round`, in increasing rank order.
  std::vector<Peer> peers(int64_t rank, int64_t round) const;
  // The largest degree of any rank in any round (the receive buffers a rank needs).
  int64_t max_degree() const;

 private:
  std::vector<int64_t> neighbours(int64_t rank, int64_t round) const;
  // A permutation of 0..N-1 that depends only on (seed, round).
  std::vector<int64_t> permutation(int64_t round) const;

  std::string kind_;
  int64_t world_;
  uint64_t seed_;
  double mixing_weight_;
};

}  // namespace desync
