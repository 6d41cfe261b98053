#include "desync/algorithms/decentralized/topology.h"

#include <gtest/gtest.h>

#include <set>

#include "desync/core/error.h"

namespace desync {
namespace {

double weight_of(const std::vector<Peer>& peers, int64_t rank) {
  for (const Peer& p : peers)
    if (p.rank == rank) return p.weight;
  return 0.0;
}

TEST(Topology, EveryGraphIsSymmetricAndDoublyStochastic) {
  for (const std::string& kind : Topology::kinds()) {
    for (int64_t n = 1; n <= 9; ++n) {
      Topology t(kind, n, /*seed=*/7);
      for (int64_t round = 0; round < 6; ++round) {
        for (int64_t i = 0; i < n; ++i) {
          std::vector<Peer> peers = t.peers(i, round);
          EXPECT_LE(static_cast<int64_t>(peers.size()), t.max_degree()) << kind << " N=" << n;
          double self = 1.0;
          for (const Peer& p : peers) {
            EXPECT_NE(p.rank, i);
            EXPECT_DOUBLE_EQ(weight_of(t.peers(p.rank, round), i), p.weight)
                << kind << " N=" << n << " edge " << i << "-" << p.rank;
            self -= p.weight;
          }
          EXPECT_GE(self, -1e-12) << kind << " N=" << n;
        }
      }
    }
  }
}

TEST(Topology, WeightsFollowTheSpec) {
  EXPECT_DOUBLE_EQ(Topology("ring", 8, 0).peers(0, 0)[0].weight, 1.0 / 3);
  EXPECT_EQ(Topology("ring", 8, 0).peers(0, 0).size(), 2u);
  EXPECT_EQ(Topology("ring", 2, 0).peers(0, 0).size(), 1u);  // i+1 and i-1 are the same rank
  EXPECT_DOUBLE_EQ(Topology("complete", 5, 0).peers(2, 0)[0].weight, 1.0 / 5);
  EXPECT_DOUBLE_EQ(Topology("matching", 6, 0).peers(3, 4)[0].weight, 0.5);
  EXPECT_EQ(Topology("torus", 9, 0).peers(4, 0).size(), 4u);  // 3x3
  EXPECT_DOUBLE_EQ(Topology("torus", 9, 0).peers(4, 0)[0].weight, 0.2);
  EXPECT_DOUBLE_EQ(Topology("matching", 4, 0, 0.3).peers(0, 0)[0].weight, 0.3);
}

TEST(Topology, MatchingIsPerfectForEvenWorldsAndRestsOneRankForOdd) {
  for (int64_t n : {2, 4, 5, 8, 9}) {
    Topology t("matching", n, 3);
    for (int64_t round = 0; round < 10; ++round) {
      int64_t resting = 0;
      for (int64_t i = 0; i < n; ++i) {
        auto peers = t.peers(i, round);
        if (peers.empty())
          ++resting;
        else
          EXPECT_EQ(peers.size(), 1u);
      }
      EXPECT_EQ(resting, n % 2) << "N=" << n << " round " << round;
    }
  }
}

TEST(Topology, RandomGraphsAreRedrawnEachRoundAndAgreedBySeed) {
  for (const char* kind : {"matching", "random_ring"}) {
    Topology a(kind, 8, 11), b(kind, 8, 11), c(kind, 8, 12);
    std::set<int64_t> partners_of_0;
    bool seeds_differ = false;
    for (int64_t round = 0; round < 20; ++round) {
      auto pa = a.peers(0, round), pb = b.peers(0, round), pc = c.peers(0, round);
      ASSERT_EQ(pa.size(), pb.size());
      for (size_t k = 0; k < pa.size(); ++k) EXPECT_EQ(pa[k].rank, pb[k].rank);
      for (const Peer& p : pa) partners_of_0.insert(p.rank);
      if (pa.size() != pc.size() || pa[0].rank != pc[0].rank) seeds_differ = true;
    }
    EXPECT_GE(partners_of_0.size(), 4u) << kind;
    EXPECT_TRUE(seeds_differ) << kind;
  }
}

TEST(Topology, BadKindOrWeightFailsWithConfigError) {
  EXPECT_THROW(Topology("star", 4, 0), ConfigError);
  EXPECT_THROW(Topology("ring", 8, 0, 0.6), ConfigError);  // self weight 1 - 2*0.6 < 0
  EXPECT_NO_THROW(Topology("ring", 8, 0, 0.5));
}

}  // namespace
}  // namespace desync
