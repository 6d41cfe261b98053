// Helpers shared by the dataset readers (internal to src/desync/data/).
//
// read_binary_file() returns a whole file's bytes or throws DataError naming the file.
// set_channel_stats() fills a Dataset's per-channel mean and standard deviation of inputs/255
// from uint8 images [n, C, H, W]; it counts byte values per channel, so the figures are exact
// (up to double rounding) and cost one pass over the data. A channel with zero spread gets
// stddev 1 so that normalisation never divides by zero.
#pragma once

#include <torch/torch.h>

#include <string>

#include "desync/data/dataset.h"

namespace desync::data_internal {

std::string read_binary_file(const std::string& path);

// REQUIRES: images is a uint8 tensor [n, C, H, W] with n > 0.
void set_channel_stats(const torch::Tensor& images, Dataset& data);

}  // namespace desync::data_internal
