#include "desync/data/reader_util.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <vector>

#include "desync/core/error.h"

namespace desync::data_internal {

std::string read_binary_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw DataError("cannot open " + path + ": " + std::strerror(errno));
  const std::streamoff size = in.tellg();
  if (size < 0) throw DataError("cannot read the size of " + path);
  std::string bytes(static_cast<size_t>(size), '\0');
  in.seekg(0);
  if (!in.read(bytes.data(), size)) throw DataError("cannot read " + path);
  return bytes;
}

void set_channel_stats(const torch::Tensor& images, Dataset& data) {
  TORCH_CHECK(images.scalar_type() == torch::kUInt8 && images.dim() == 4 && images.size(0) > 0,
              "set_channel_stats needs non-empty uint8 images [n,C,H,W]");
  const torch::Tensor x = images.contiguous();
  const int64_t n = x.size(0), channels = x.size(1), plane = x.size(2) * x.size(3);
  std::vector<std::array<uint64_t, 256>> counts(channels);
  for (auto& c : counts) c.fill(0);
  const uint8_t* p = x.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t c = 0; c < channels; ++c) {
      auto& count = counts[c];
      for (int64_t k = 0; k < plane; ++k) ++count[*p++];
    }
  }
  data.mean.assign(channels, 0.0);
  data.stddev.assign(channels, 1.0);
  const double total = static_cast<double>(n) * static_cast<double>(plane);
  for (int64_t c = 0; c < channels; ++c) {
    double sum = 0, sum_sq = 0;  // exact: integers below 2^53 for any realistic dataset
    for (int v = 0; v < 256; ++v) {
      sum += static_cast<double>(counts[c][v]) * v;
      sum_sq += static_cast<double>(counts[c][v]) * v * v;
    }
    const double mean = sum / total;
    const double var = std::max(0.0, sum_sq / total - mean * mean);
    data.mean[c] = mean / 255.0;
    const double stddev = std::sqrt(var) / 255.0;
    data.stddev[c] = stddev > 1e-12 ? stddev : 1.0;
  }
}

}  // namespace desync::data_internal
