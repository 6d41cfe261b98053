// In-memory datasets and the readers that fill them.
//
// A Dataset holds a split as two tensors whose first dimension indexes examples. Images are
// kept as uint8 [n, C, H, W] and converted to float (and normalised) per micro-batch by the
// Transform, which keeps Fashion-MNIST at 47 MB and CIFAR-10 at 150 MB. Text is kept as windows
// [n, seq_len + 1] of token ids (int16 views of a memory-mapped uint16 token file, ids read back
// as `id & 0xFFFF`); a window's first seq_len tokens are the input, its last seq_len the
// targets. Synthetic data is generated as float directly.
//
// Readers validate what they read (magic numbers, declared sizes against the file size,
// label ranges) and throw DataError with the file name and what is wrong.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "desync/core/config.h"

namespace desync {

enum class DataKind { kImage, kText, kFeatures };

struct Dataset {
  std::string name;  // e.g. "fashion-mnist/train"
  DataKind kind = DataKind::kImage;
  torch::Tensor inputs;     // uint8 [n,C,H,W] (image), int16 [n,seq+1] (text), float [n,...]
  torch::Tensor targets;    // int64 [n] (image, features); undefined for text
  int64_t num_classes = 0;  // classes, or the tokenizer's vocabulary size for text
  // Per-channel mean and std of inputs/255 used by normalisation (image only).
  std::vector<double> mean, stddev;
  // Text: the UTF-8 bytes of the split's documents and the tokens they encode to; bits per byte
  // = nats per token * text_tokens / (text_bytes * ln 2). 0 for other kinds.
  int64_t text_bytes = 0;
  int64_t text_tokens = 0;

  int64_t size() const { return inputs.defined() ? inputs.size(0) : 0; }
  // Shape of one example's model input, e.g. {1, 28, 28}, or {seq_len} for text.
  std::vector<int64_t> example_shape() const;
};

struct DatasetSplits {
  Dataset train;
  Dataset test;
  std::string tokenizer_path;  // text: the tokenizer's file (data/tokenizer.h); "" otherwise
};

// IDX (MNIST / Fashion-MNIST): `dir` holds {train,t10k}-{images-idx3,labels-idx1}-ubyte,
// each either raw or with a .gz suffix.
DatasetSplits load_idx(const std::string& dir, const std::string& name);
// Reads one IDX file (raw or gzip) into a uint8 tensor with the declared dimensions.
torch::Tensor read_idx_file(const std::string& path);

// CIFAR-10 binary: `dir` holds data_batch_{1..5}.bin and test_batch.bin (3073-byte records).
DatasetSplits load_cifar10(const std::string& dir);

// Text corpora ("text", "gcide") are loaded by load_token_dataset() (data/token_cache.h).

// A seeded, learnable classification task: Gaussian inputs of `shape` labelled by a fixed
// random two-layer teacher network. Same seed, same data, on every machine.
DatasetSplits make_synthetic(int64_t train_size, int64_t test_size, int64_t classes,
                             const std::vector<int64_t>& shape, uint64_t seed);

// Loads the dataset named by cfg.dataset (with limits applied). `seed` seeds synthetic data.
// The limits keep the first N examples; mean/stddev stay those of the whole training split.
// Throws ConfigError for an unknown name, DataError for a missing directory or a bad file.
DatasetSplits load_dataset(const DataConfig& cfg, uint64_t seed);

// The default directory of a dataset, e.g. /usr/share/datasets/fashion-mnist, /usr/share/dictd
// for gcide; "" for text (data.path is required) and synthetic.
std::string default_data_path(const std::string& dataset);

}  // namespace desync
