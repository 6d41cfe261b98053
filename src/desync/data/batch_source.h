// An endless, seeded stream of micro-batches, sharded across ranks.
//
// Every rank computes the same permutation of the training set for each epoch (from the seed
// and the epoch number, with a generator that gives the same sequence on every platform). The
// permutation is cut into global batches of batch_size * world examples; rank r takes slice
// [r * batch_size, (r + 1) * batch_size) of each global batch. So the ranks' shards are
// disjoint, and N ranks with batch B see exactly the examples one rank with batch N*B sees.
// The examples that do not fill a last global batch are dropped for that epoch.
//
// The position (epoch, batch index) is all the state there is: seek() to a saved position
// reproduces the stream exactly, augmentation included (its randomness is derived from the
// seed, epoch and example position, not from a running generator).
//
// Thread-safety: a source is used by one thread at a time.
// REQUIRES: `data` outlives the source, which holds it by reference.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "desync/data/dataset.h"

namespace desync {

struct MicroBatch {
  torch::Tensor inputs;   // float [B, ...] for images and features; int64 [B, seq] for text
  torch::Tensor targets;  // int64 [B] or [B, seq]
  int64_t epoch = 0;
  int64_t index = 0;  // batch index within the epoch
};

struct StreamPosition {
  int64_t epoch = 0;
  int64_t batch = 0;  // next batch index within the epoch
  bool operator==(const StreamPosition& o) const { return epoch == o.epoch && batch == o.batch; }
};

// Converts stored examples to model inputs: uint8 images to float in [0,1], normalised with
// the dataset's mean/std if `normalize`; random crop (pad 4) + horizontal flip if `augment`.
struct TransformOptions {
  bool normalize = true;
  bool augment = false;
};

class MicroBatchSource {
 public:
  MicroBatchSource(const Dataset& data, int64_t batch_size, int64_t rank, int64_t world,
                   uint64_t seed, TransformOptions transform);

  MicroBatch next();

  StreamPosition position() const { return pos_; }
  void seek(StreamPosition pos);

  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  int64_t batch_size() const { return batch_size_; }
  const Dataset& dataset() const { return data_; }

 private:
  void build_permutation(int64_t epoch);

  const Dataset& data_;
  int64_t batch_size_, rank_, world_;
  uint64_t seed_;
  TransformOptions transform_;
  int64_t batches_per_epoch_;
  StreamPosition pos_;
  int64_t perm_epoch_ = -1;
  torch::Tensor perm_;           // int64 permutation of the current epoch
  torch::Tensor scale_, shift_;  // image normalisation x * scale + shift, [1, C, 1, 1] float
};

// Converts a contiguous range of a dataset (evaluation; no shuffling, no augmentation).
MicroBatch take_range(const Dataset& data, int64_t begin, int64_t end, bool normalize);
// Converts the examples at `indices` (int64 [B]) the same way, in that order.
MicroBatch take_indices(const Dataset& data, const torch::Tensor& indices, bool normalize);

// The element of the counter-based generator used for shuffling and augmentation:
// a pure function of its inputs (SplitMix64), identical on every platform.
uint64_t mix64(uint64_t x);

}  // namespace desync
