// Tensors of any shapes sent as one message: pack() concatenates them, flattened, into one new
// vector; unpack() copies such a vector back into them, in the same order.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace desync {

inline torch::Tensor pack(const std::vector<torch::Tensor>& tensors) {
  std::vector<torch::Tensor> flat;
  for (const torch::Tensor& t : tensors) flat.push_back(t.reshape({-1}));
  return torch::cat(flat);
}

inline void unpack(const torch::Tensor& packed, const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  int64_t at = 0;
  for (const torch::Tensor& t : tensors) {
    torch::Tensor(t).copy_(packed.narrow(0, at, t.numel()).view_as(t));
    at += t.numel();
  }
}

}  // namespace desync
