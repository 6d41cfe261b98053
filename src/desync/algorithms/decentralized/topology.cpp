#include "desync/algorithms/decentralized/topology.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

#include "desync/core/error.h"

namespace desync {
namespace {

// SplitMix64: a small, portable generator, so every rank (and every platform) draws the same
// permutation from the same seed.
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::vector<int64_t> sorted_unique_without(std::vector<int64_t> v, int64_t self) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  v.erase(std::remove(v.begin(), v.end(), self), v.end());
  return v;
}

}  // namespace

const std::vector<std::string>& Topology::kinds() {
  static const std::vector<std::string> kKinds = {"ring", "torus", "complete", "matching",
                                                  "random_ring"};
  return kKinds;
}

Topology::Topology(std::string kind, int64_t world, uint64_t seed, double mixing_weight)
    : kind_(std::move(kind)), world_(world), seed_(seed), mixing_weight_(mixing_weight) {
  if (std::find(kinds().begin(), kinds().end(), kind_) == kinds().end())
    throw ConfigError(
        fmt::format("topology \"{}\" is not one of: {}", kind_, fmt::join(kinds(), ", ")));
  if (mixing_weight_ < 0 || mixing_weight_ * static_cast<double>(max_degree()) > 1.0)
    throw ConfigError(fmt::format(
        "mixing_weight = {} leaves a negative self weight on the {} topology of {} workers "
        "(degree {}); use at most {:.4g}, or 0 for the default 1/(degree+1)",
        mixing_weight_, kind_, world_, max_degree(), 1.0 / std::max<int64_t>(1, max_degree())));
}

std::vector<int64_t> Topology::permutation(int64_t round) const {
  uint64_t state = seed_ * 0x100000001B3ULL + static_cast<uint64_t>(round);
  std::vector<int64_t> p(world_);
  for (int64_t i = 0; i < world_; ++i) p[i] = i;
  for (int64_t i = world_ - 1; i > 0; --i) {  // Fisher-Yates
    auto j = static_cast<int64_t>(splitmix64(state) % static_cast<uint64_t>(i + 1));
    std::swap(p[i], p[j]);
  }
  return p;
}

std::vector<int64_t> Topology::neighbours(int64_t rank, int64_t round) const {
  const int64_t n = world_;
  std::vector<int64_t> out;
  if (kind_ == "ring") {
    out = {(rank + 1) % n, (rank + n - 1) % n};
  } else if (kind_ == "torus") {
    auto rows = static_cast<int64_t>(std::sqrt(static_cast<double>(n)));
    while (n % rows != 0) --rows;
    int64_t cols = n / rows, r = rank / cols, c = rank % cols;
    out = {((r + 1) % rows) * cols + c, ((r + rows - 1) % rows) * cols + c,
           r * cols + (c + 1) % cols, r * cols + (c + cols - 1) % cols};
  } else if (kind_ == "complete") {
    for (int64_t j = 0; j < n; ++j) out.push_back(j);
  } else {
    std::vector<int64_t> p = permutation(round);
    int64_t pos = std::find(p.begin(), p.end(), rank) - p.begin();
    if (kind_ == "matching") {
      int64_t mate = pos ^ 1;  // pairs (p0,p1), (p2,p3), ...; odd N: the last one rests
      if (mate < n) out = {p[mate]};
    } else {  // random_ring
      out = {p[(pos + 1) % n], p[(pos + n - 1) % n]};
    }
  }
  return sorted_unique_without(std::move(out), rank);
}

std::vector<Peer> Topology::peers(int64_t rank, int64_t round) const {
  std::vector<int64_t> ns = neighbours(rank, round);
  std::vector<Peer> out;
  for (int64_t j : ns) {
    double w = mixing_weight_ > 0 ? mixing_weight_ : 1.0 / static_cast<double>(ns.size() + 1);
    out.push_back({j, w});
  }
  return out;
}

int64_t Topology::max_degree() const {
  if (kind_ == "matching") return world_ > 1 ? 1 : 0;
  if (kind_ == "random_ring") return std::min<int64_t>(2, world_ - 1);
  size_t d = 0;
  for (int64_t r = 0; r < world_; ++r) d = std::max(d, neighbours(r, 0).size());
  return static_cast<int64_t>(d);
}

}  // namespace desync
