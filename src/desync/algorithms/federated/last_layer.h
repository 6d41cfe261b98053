// The last layer of a model and the features it reads, for the last-layer methods of federated
// learning (FedLP, FedNCM; spec federated.md §4), and the nearest-class-mean head.
//
// The head is the last torch::nn::Linear of the model's last stage, which must end with it (the
// cnn, mlp, resnet18 and revnet heads do); f(x) is everything before it. FedNCM sets the head
// from the class means of f over the clients' data:
//   rule cosine (default, as the paper's code):  W[c] <- mu_c / ||mu_c||,  bias <- 0
//   rule euclidean:                              W[c] <- mu_c,  bias[c] <- -||mu_c||^2 / 2
// (argmax of the euclidean head = the nearest mean). A class with no example gets a zero row.
// ncm_bias = keep leaves the layer's bias as it was (the paper's code keeps its random bias).
//
// Thread-safety: none; the split shares the model's modules.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "desync/models/staged_model.h"

namespace desync {

class LastLayer {
 public:
  // Throws ConfigError when the model's last stage does not end with a Linear layer.
  explicit LastLayer(StagedModel model);

  torch::nn::Linear& head() { return head_; }
  int64_t feature_width() const { return head_->options.in_features(); }
  int64_t classes() const { return head_->options.out_features(); }
  // f(x): the stages before the last, then the last stage without its final Linear.
  torch::Tensor features(const torch::Tensor& x);
  // Puts f in eval (frozen) or train mode; the head keeps its own mode.
  void set_features_training(bool on);

  // A fresh head drawn as torch::nn::Linear's default initialisation (U(-1/sqrt(d), 1/sqrt(d))
  // for weight and bias) from a CounterRng keyed by `key`: the same on every rank.
  void reset_head(uint64_t key);

 private:
  StagedModel model_;
  torch::nn::Sequential tail_;  // the last stage without its final Linear
  torch::nn::Linear head_{nullptr};
};

struct NcmOptions {
  bool euclidean = false;  // rule = euclidean
  bool keep_bias = false;  // ncm_bias = keep
};

// Sets `head` from per-class feature sums [C, d] and counts [C] (any float type; fp64
// advised). Returns the classes that had no example.
std::vector<int64_t> set_ncm_head(torch::nn::Linear& head, const torch::Tensor& sums,
                                  const torch::Tensor& counts, const NcmOptions& options);

}  // namespace desync
