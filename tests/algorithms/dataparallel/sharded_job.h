// The job that the tests of the sharded data-parallel methods (ZeRO-1, DPU, ACCO and their
// ParameterShard) share: tiny_config() overrides for AdamW with weight decay, and a helper to
// append more overrides.
#pragma once

#include <string>
#include <vector>

namespace desync::testing {

// The tiny MLP has Ψ = 12*32+32 + 32*16+16 + 16*10+10 = 1114 parameters: not divisible by 3 or 4.
inline const std::vector<std::string> kAdamW = {"optimizer.name=\"adamw\"", "optimizer.lr=0.01",
                                                "optimizer.weight_decay=0.05", "data.batch_size=8"};

// a followed by b.
inline std::vector<std::string> with(std::vector<std::string> a,
                                     const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace desync::testing
