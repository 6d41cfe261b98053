// MicroBatchSource: counter-based shuffling, rank sharding and the batch transforms.
#include "desync/data/batch_source.h"

#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

#include "desync/core/error.h"

namespace desync {
namespace {

constexpr uint64_t kShuffleStream = 0x73687566666c6531ULL;  // "shuffle1"
constexpr uint64_t kAugmentStream = 0x6175676d656e7431ULL;  // "augment1"
constexpr int64_t kPad = 4;                                 // random-crop padding, pixels

// The key of one epoch's stream; element i of the stream is mix64(key + i).
uint64_t epoch_key(uint64_t seed, uint64_t stream, int64_t epoch) {
  return mix64(mix64(seed ^ stream) + static_cast<uint64_t>(epoch));
}

// A uniform integer in [0, bound) from r (Lemire's multiply-shift: no modulo bias to speak of).
uint64_t below(uint64_t r, uint64_t bound) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(r) * bound) >> 64);
}

// Random crop of the image zero-padded by kPad, then a horizontal flip with probability 1/2.
// `first` is the position in the epoch's permutation of the batch's first example; each
// example's draw depends only on (seed, epoch, position), so seeking reproduces it.
torch::Tensor augment(const torch::Tensor& images, uint64_t key, int64_t first) {
  const torch::Tensor src = images.contiguous();
  const int64_t n = src.size(0), channels = src.size(1), h = src.size(2), w = src.size(3);
  torch::Tensor dst = torch::zeros_like(src);
  const uint8_t* in = src.data_ptr<uint8_t>();
  uint8_t* out = dst.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t r1 = mix64(key + static_cast<uint64_t>(first + i));
    const uint64_t r2 = mix64(r1);
    const int64_t dy = static_cast<int64_t>(below(r1, 2 * kPad + 1)) - kPad;
    const int64_t dx = static_cast<int64_t>(below(r2, 2 * kPad + 1)) - kPad;
    const bool flip = (mix64(r2) >> 63) != 0;
    for (int64_t c = 0; c < channels; ++c) {
      const uint8_t* plane_in = in + (i * channels + c) * h * w;
      uint8_t* plane_out = out + (i * channels + c) * h * w;
      for (int64_t y = 0; y < h; ++y) {
        const int64_t sy = y + dy;
        if (sy < 0 || sy >= h) continue;  // padding rows stay zero
        const uint8_t* row_in = plane_in + sy * w;
        uint8_t* row_out = plane_out + y * w;
        for (int64_t x = 0; x < w; ++x) {
          const int64_t sx = (flip ? w - 1 - x : x) + dx;
          if (sx >= 0 && sx < w) row_out[x] = row_in[sx];
        }
      }
    }
  }
  return dst;
}

// Per-channel x * scale + shift that maps bytes to (x / 255 - mean) / stddev, [1, C, 1, 1].
std::pair<torch::Tensor, torch::Tensor> normalisation(const Dataset& data) {
  const int64_t channels = static_cast<int64_t>(data.mean.size());
  if (channels == 0 || data.stddev.size() != data.mean.size()) {
    throw DataError(data.name + ": normalisation needs one mean and stddev per channel");
  }
  torch::Tensor scale = torch::empty({1, channels, 1, 1}, torch::kFloat);
  torch::Tensor shift = torch::empty({1, channels, 1, 1}, torch::kFloat);
  for (int64_t c = 0; c < channels; ++c) {
    scale.data_ptr<float>()[c] = static_cast<float>(1.0 / (255.0 * data.stddev[c]));
    shift.data_ptr<float>()[c] = static_cast<float>(-data.mean[c] / data.stddev[c]);
  }
  return {scale, shift};
}

// Stored image bytes [B, C, H, W] to float model inputs.
torch::Tensor image_inputs(const torch::Tensor& bytes, const torch::Tensor& scale,
                           const torch::Tensor& shift) {
  torch::Tensor x = bytes.to(torch::kFloat);
  if (scale.defined()) return x.mul_(scale).add_(shift);
  return x.div_(255.0);
}

// Converts the stored examples `rows` of `data` (already selected, uint8 for images) into a
// batch. scale/shift are undefined when images are not normalised.
MicroBatch convert(const Dataset& data, torch::Tensor rows, const torch::Tensor& targets,
                   const torch::Tensor& scale, const torch::Tensor& shift) {
  MicroBatch b;
  switch (data.kind) {
    case DataKind::kImage:
      b.inputs = image_inputs(rows, scale, shift);
      b.targets = targets;
      break;
    case DataKind::kText: {
      // Token ids are stored as uint16 in int16 tensors: ids above 32767 read back negative.
      const torch::Tensor windows = rows.to(torch::kLong).bitwise_and_(0xFFFF);
      const int64_t seq = windows.size(1) - 1;
      b.inputs = windows.narrow(1, 0, seq).contiguous();
      b.targets = windows.narrow(1, 1, seq).contiguous();
      break;
    }
    case DataKind::kFeatures:
      b.inputs = std::move(rows);
      b.targets = targets;
      break;
  }
  return b;
}

}  // namespace

uint64_t mix64(uint64_t x) {
  uint64_t z = x + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

MicroBatchSource::MicroBatchSource(const Dataset& data, int64_t batch_size, int64_t rank,
                                   int64_t world, uint64_t seed, TransformOptions transform)
    : data_(data),
      batch_size_(batch_size),
      rank_(rank),
      world_(world),
      seed_(seed),
      transform_(transform) {
  if (batch_size < 1) {
    throw ConfigError("data.batch_size must be at least 1, got " + std::to_string(batch_size));
  }
  if (world < 1 || rank < 0 || rank >= world) {
    throw ConfigError("rank " + std::to_string(rank) + " is outside a world of " +
                      std::to_string(world) + " workers");
  }
  const int64_t global = batch_size * world;
  batches_per_epoch_ = data.size() / global;
  if (batches_per_epoch_ == 0) {
    throw ConfigError("batch_size*workers = " + std::to_string(global) + " exceeds the " +
                      std::to_string(data.size()) + " training examples of " + data.name);
  }
  if (data.kind == DataKind::kImage && transform.normalize) {
    std::tie(scale_, shift_) = normalisation(data);
  }
}

void MicroBatchSource::build_permutation(int64_t epoch) {
  // Fisher-Yates driven by the counter-based stream of (seed, epoch): the same on every platform.
  const int64_t n = data_.size();
  perm_ = torch::arange(n, torch::kLong);
  int64_t* p = perm_.data_ptr<int64_t>();
  const uint64_t key = epoch_key(seed_, kShuffleStream, epoch);
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(
        below(mix64(key + static_cast<uint64_t>(i)), static_cast<uint64_t>(i + 1)));
    std::swap(p[i], p[j]);
  }
  perm_epoch_ = epoch;
}

void MicroBatchSource::seek(StreamPosition pos) {
  if (pos.epoch < 0 || pos.batch < 0 || pos.batch > batches_per_epoch_) {
    throw ConfigError("cannot resume the data stream at epoch " + std::to_string(pos.epoch) +
                      ", batch " + std::to_string(pos.batch) + ": an epoch has " +
                      std::to_string(batches_per_epoch_) +
                      " batches (did batch_size or the number of workers change?)");
  }
  pos_ = pos;
  if (pos_.batch == batches_per_epoch_) pos_ = {pos_.epoch + 1, 0};
}

MicroBatch MicroBatchSource::next() {
  if (perm_epoch_ != pos_.epoch) build_permutation(pos_.epoch);
  // Position in the epoch's permutation of this rank's first example.
  const int64_t first = (pos_.batch * world_ + rank_) * batch_size_;
  const torch::Tensor index = perm_.narrow(0, first, batch_size_);
  torch::Tensor rows = data_.inputs.index_select(0, index);
  if (transform_.augment && data_.kind == DataKind::kImage) {
    rows = augment(rows, epoch_key(seed_, kAugmentStream, pos_.epoch), first);
  }
  const torch::Tensor targets =
      data_.targets.defined() ? data_.targets.index_select(0, index) : torch::Tensor();
  MicroBatch b = convert(data_, std::move(rows), targets, scale_, shift_);
  b.epoch = pos_.epoch;
  b.index = pos_.batch;
  if (++pos_.batch == batches_per_epoch_) pos_ = {pos_.epoch + 1, 0};
  return b;
}

MicroBatch take_range(const Dataset& data, int64_t begin, int64_t end, bool normalize) {
  if (begin < 0 || begin > end || end > data.size()) {
    throw std::out_of_range("take_range [" + std::to_string(begin) + ", " + std::to_string(end) +
                            ") outside " + data.name + " of size " + std::to_string(data.size()));
  }
  torch::Tensor scale, shift;
  if (data.kind == DataKind::kImage && normalize) std::tie(scale, shift) = normalisation(data);
  const torch::Tensor targets =
      data.targets.defined() ? data.targets.narrow(0, begin, end - begin) : torch::Tensor();
  return convert(data, data.inputs.narrow(0, begin, end - begin), targets, scale, shift);
}

MicroBatch take_indices(const Dataset& data, const torch::Tensor& indices, bool normalize) {
  torch::Tensor scale, shift;
  if (data.kind == DataKind::kImage && normalize) std::tie(scale, shift) = normalisation(data);
  const torch::Tensor targets =
      data.targets.defined() ? data.targets.index_select(0, indices) : torch::Tensor();
  return convert(data, data.inputs.index_select(0, indices), targets, scale, shift);
}

}  // namespace desync
