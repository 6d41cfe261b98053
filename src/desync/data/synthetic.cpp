// Synthetic classification data: Gaussian inputs labelled by a fixed random teacher network.
//
// The teacher is logits = tanh(x W1 + b1) W2 + b2 on the flattened input. b2 centres the logits
// on a calibration sample so that the classes come out roughly balanced. Everything is drawn
// in double from CPU generators seeded by mix64(seed ^ tag): one each for the teacher, the
// training inputs and the test inputs, so the test split does not change with train_size.
// Doubles keep the draws on the scalar (portable) path of the normal sampler and make the
// argmax insensitive to the summation order of the matrix products.
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <string>

#include "desync/core/error.h"
#include "desync/data/batch_source.h"
#include "desync/data/dataset.h"

namespace desync {
namespace {

constexpr int64_t kHidden = 64;
constexpr int64_t kCalibration = 4096;
constexpr uint64_t kTeacherStream = 0x7465616368657231ULL;  // "teacher1"
constexpr uint64_t kTrainStream = 0x747261696e696e67ULL;    // "training"
constexpr uint64_t kTestStream = 0x7465737473706c74ULL;     // "testsplt"

at::Generator generator(uint64_t seed, uint64_t stream) {
  return at::detail::createCPUGenerator(mix64(seed ^ stream));
}

torch::Tensor gaussian(std::vector<int64_t> shape, at::Generator& gen) {
  return torch::randn(shape, gen, torch::TensorOptions().dtype(torch::kDouble));
}

struct Teacher {
  torch::Tensor w1, b1, w2, b2;

  torch::Tensor logits(const torch::Tensor& x) const {
    return torch::tanh(x.flatten(1).matmul(w1) + b1).matmul(w2) + b2;
  }
};

Teacher make_teacher(int64_t dim, int64_t classes, uint64_t seed) {
  at::Generator gen = generator(seed, kTeacherStream);
  Teacher t;
  t.w1 = gaussian({dim, kHidden}, gen) / std::sqrt(static_cast<double>(dim));
  t.b1 = gaussian({kHidden}, gen) * 0.5;
  t.w2 = gaussian({kHidden, classes}, gen) / std::sqrt(static_cast<double>(kHidden));
  t.b2 = torch::zeros({classes}, torch::kDouble);
  t.b2 = -t.logits(gaussian({kCalibration, dim}, gen)).mean(0);
  return t;
}

Dataset make_split(const std::string& name, const Teacher& teacher, int64_t n, int64_t classes,
                   const std::vector<int64_t>& shape, at::Generator gen) {
  std::vector<int64_t> full = {n};
  full.insert(full.end(), shape.begin(), shape.end());
  const torch::Tensor x = gaussian(full, gen);
  Dataset d;
  d.name = name;
  d.kind = DataKind::kFeatures;
  d.inputs = x.to(torch::kFloat);
  // Label the float inputs the model will see.
  d.targets = teacher.logits(d.inputs.to(torch::kDouble)).argmax(1).to(torch::kLong);
  d.num_classes = classes;
  return d;
}

}  // namespace

DatasetSplits make_synthetic(int64_t train_size, int64_t test_size, int64_t classes,
                             const std::vector<int64_t>& shape, uint64_t seed) {
  if (train_size < 1 || test_size < 1) {
    throw ConfigError("data.synthetic_train and data.synthetic_test must be at least 1, got " +
                      std::to_string(train_size) + " and " + std::to_string(test_size));
  }
  if (classes < 2) {
    throw ConfigError("data.synthetic_classes must be at least 2, got " + std::to_string(classes));
  }
  if (shape.empty()) throw ConfigError("data.synthetic_shape must have at least one dimension");
  int64_t dim = 1;
  for (int64_t s : shape) {
    if (s < 1) throw ConfigError("data.synthetic_shape dimensions must be positive");
    dim *= s;
  }
  torch::NoGradGuard no_grad;
  const Teacher teacher = make_teacher(dim, classes, seed);
  DatasetSplits s;
  s.train = make_split("synthetic/train", teacher, train_size, classes, shape,
                       generator(seed, kTrainStream));
  s.test = make_split("synthetic/test", teacher, test_size, classes, shape,
                      generator(seed, kTestStream));
  return s;
}

}  // namespace desync
