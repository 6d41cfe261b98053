// A flat, named collection of tensors and scalars: the unit of checkpoint state.
//
// Components write their state under a prefix ("model.", "optimizer.", "sampler.") and read it
// back by name. serialize() produces a `torch::pickle_save` zip archive of a dict
// {name: tensor | int | float | str}, which Python reads with `torch.load(path)`.
// Reading a missing entry, or one whose type, shape or dtype differs, throws CheckpointError
// naming the entry.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace desync {

class Archive {
 public:
  Archive();

  void put(const std::string& name, const torch::Tensor& t);
  void put(const std::string& name, int64_t v);
  void put(const std::string& name, double v);
  void put(const std::string& name, const std::string& v);

  bool has(const std::string& name) const;
  torch::Tensor tensor(const std::string& name) const;
  int64_t integer(const std::string& name) const;
  double real(const std::string& name) const;
  std::string string(const std::string& name) const;
  // Copies the named tensor into `dst` in place; shapes and dtypes must agree.
  void copy_into(const std::string& name, torch::Tensor dst) const;

  std::vector<std::string> names() const;

  std::string serialize() const;
  // Throws CheckpointError if `bytes` is not a valid archive.
  static Archive deserialize(const std::string& bytes, const std::string& origin);

 private:
  c10::IValue get(const std::string& name) const;
  c10::impl::GenericDict dict_;  // str -> tensor | int | float | str
};

}  // namespace desync
