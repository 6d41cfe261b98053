// FlatParameters: parameters and gradients become views of two contiguous, padded buffers, and
// autograd accumulates straight into the flat gradient buffer.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "desync/models/staged_model.h"

namespace desync {
namespace {

StagedModel small_cnn(uint64_t seed) {
  torch::manual_seed(seed);
  ModelConfig cfg;
  cfg.name = "cnn";
  cfg.channels = {4, 8};
  return make_model(cfg, {{1, 12, 12}, 10});
}

torch::Tensor loss_of(StagedModel& model, const torch::Tensor& x, const torch::Tensor& y) {
  return torch::nn::functional::cross_entropy(model->forward(x), y);
}

bool shares_storage(const torch::Tensor& view, const torch::Tensor& flat) {
  const auto* begin = static_cast<const char*>(flat.data_ptr());
  const auto* end = begin + flat.numel() * flat.element_size();
  const auto* p = static_cast<const char*>(view.data_ptr());
  return p >= begin && p < end;
}

TEST(FlatParametersTest, PacksValuesInOrderAndParamsBecomeViews) {
  StagedModel model = small_cnn(0);
  std::vector<torch::Tensor> before;
  for (const auto& p : model->parameters()) before.push_back(p.detach().clone());
  FlatParameters flat(model->parameters(), 1);
  const auto params = model->parameters();
  ASSERT_EQ(flat.params().size(), params.size());
  int64_t offset = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(flat.offset(i), offset);
    EXPECT_TRUE(torch::equal(params[i], before[i]));
    EXPECT_TRUE(torch::equal(flat.params_flat().narrow(0, offset, params[i].numel()),
                             before[i].reshape(-1)));
    EXPECT_TRUE(shares_storage(params[i], flat.params_flat()));
    EXPECT_TRUE(params[i].requires_grad());
    EXPECT_TRUE(params[i].is_leaf());
    offset += params[i].numel();
  }
  EXPECT_EQ(flat.numel(), offset);
  EXPECT_EQ(flat.numel(), model->parameter_count());
  EXPECT_EQ(flat.padded_numel(), flat.numel());
}

TEST(FlatParametersTest, BackwardAccumulatesIntoTheFlatGradientBuffer) {
  StagedModel model = small_cnn(3);
  StagedModel reference = small_cnn(3);  // same initialisation, ordinary gradients
  FlatParameters flat(model->parameters(), 16);
  torch::manual_seed(7);
  torch::Tensor x = torch::randn({5, 1, 12, 12});
  torch::Tensor y = torch::randint(0, 10, {5});

  loss_of(model, x, y).backward();
  loss_of(reference, x, y).backward();

  const auto params = model->parameters();
  const auto ref = reference->parameters();
  EXPECT_GT(flat.grads_flat().abs().sum().item<double>(), 0.0);
  for (size_t i = 0; i < params.size(); ++i) {
    SCOPED_TRACE(i);
    const torch::Tensor slice = flat.grads_flat().narrow(0, flat.offset(i), params[i].numel());
    EXPECT_TRUE(shares_storage(params[i].grad(), flat.grads_flat()));
    EXPECT_TRUE(torch::equal(slice, params[i].grad().reshape(-1)));
    EXPECT_TRUE(torch::allclose(slice, ref[i].grad().reshape(-1), 1e-5, 1e-6));
  }

  // A second backward adds to what is there, still in the flat buffer.
  const torch::Tensor once = flat.grads_flat().clone();
  loss_of(model, x, y).backward();
  EXPECT_TRUE(torch::allclose(flat.grads_flat(), 2 * once, 1e-5, 1e-7));
}

TEST(FlatParametersTest, WritingTheFlatBufferChangesTheModel) {
  StagedModel model = small_cnn(1);
  model->eval();
  FlatParameters flat(model->parameters(), 1);
  torch::Tensor x = torch::randn({2, 1, 12, 12});
  const torch::Tensor before = model->forward(x).detach().clone();
  {
    torch::NoGradGuard no_grad;
    flat.params_flat().mul_(1.5);
  }
  const torch::Tensor after = model->forward(x).detach();
  EXPECT_FALSE(torch::allclose(before, after));
  {
    torch::NoGradGuard no_grad;
    flat.params_flat().zero_();
  }
  // All weights and biases zero: the logits are zero.
  EXPECT_TRUE(torch::equal(model->forward(x).detach(), torch::zeros({2, 10})));
}

TEST(FlatParametersTest, PaddingIsAMultipleOfPadToAndStaysZero) {
  for (int64_t pad_to : {1, 3, 64, 1000, 4096}) {
    SCOPED_TRACE(pad_to);
    StagedModel model = small_cnn(2);
    FlatParameters flat(model->parameters(), pad_to);
    EXPECT_EQ(flat.padded_numel() % pad_to, 0);
    EXPECT_GE(flat.padded_numel(), flat.numel());
    EXPECT_LT(flat.padded_numel(), flat.numel() + pad_to);
    EXPECT_EQ(flat.grads_flat().numel(), flat.padded_numel());
    loss_of(model, torch::randn({3, 1, 12, 12}), torch::randint(0, 10, {3})).backward();
    const int64_t tail = flat.padded_numel() - flat.numel();
    EXPECT_TRUE(
        torch::equal(flat.params_flat().narrow(0, flat.numel(), tail), torch::zeros({tail})));
    EXPECT_TRUE(
        torch::equal(flat.grads_flat().narrow(0, flat.numel(), tail), torch::zeros({tail})));
  }
}

TEST(FlatParametersTest, RebindGradsRestoresGradientsThatWereReset) {
  StagedModel model = small_cnn(4);
  FlatParameters flat(model->parameters(), 8);
  // What LibTorch 2.x's zero_grad() does: drop the gradients.
  for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
  flat.rebind_grads();
  flat.grads_flat().zero_();
  loss_of(model, torch::randn({3, 1, 12, 12}), torch::randint(0, 10, {3})).backward();
  EXPECT_GT(flat.grads_flat().abs().sum().item<double>(), 0.0);
  const auto params = model->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(shares_storage(params[i].grad(), flat.grads_flat()));
  }
}

TEST(FlatParametersTest, ExistingGradientsAreCarriedOver) {
  torch::Tensor a = torch::randn({3, 2}, torch::requires_grad());
  torch::Tensor b = torch::randn({4}, torch::requires_grad());
  a.mutable_grad() = torch::full({3, 2}, 2.0);
  FlatParameters flat({a, b}, 5);
  EXPECT_EQ(flat.padded_numel(), 10);
  EXPECT_TRUE(torch::equal(flat.grads_flat().narrow(0, 0, 6), torch::full({6}, 2.0)));
  EXPECT_TRUE(torch::equal(flat.grads_flat().narrow(0, 6, 4), torch::zeros({4})));
}

TEST(FlatParametersTest, WorksInDoublePrecision) {
  torch::Tensor a = torch::randn({3, 2}, torch::dtype(torch::kFloat64).requires_grad(true));
  FlatParameters flat({a}, 4);
  EXPECT_EQ(flat.params_flat().scalar_type(), torch::kFloat64);
  (a * a).sum().backward();
  EXPECT_TRUE(torch::allclose(flat.grads_flat().narrow(0, 0, 6), 2 * a.detach().reshape(-1)));
}

TEST(FlatParametersTest, RejectsMixedDtypesAndBadPadding) {
  torch::Tensor a = torch::randn({2}, torch::requires_grad());
  torch::Tensor b = torch::randn({2}, torch::dtype(torch::kFloat64).requires_grad(true));
  EXPECT_THROW(FlatParameters({a, b}), std::invalid_argument);
  EXPECT_THROW(FlatParameters({torch::randn({2})}, 0), std::invalid_argument);
  EXPECT_THROW(FlatParameters({torch::ones({2}, torch::kInt64)}), std::invalid_argument);
}

}  // namespace
}  // namespace desync
