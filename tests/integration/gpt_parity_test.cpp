// desync's GPT against an independent PyTorch implementation in Python, the same wheel on both
// sides: a tiny GPT (2 layers, 2 heads, d_model 32, vocabulary 61, context 20) computes the mean
// cross-entropy over B*T tokens of one fixed batch (B 3, T 16: shorter than the context) and its
// gradients. tests/reference/gpt_reference.py, which writes the model layer by layer with
// torch.nn, loads desync's state strictly by desync's names and does the same.
//
// Tolerances (float32): the loss to 1e-5 relative; every gradient tensor to 1e-5 relative to
// its largest entry (max |desync - pytorch| <= 1e-5 * max |pytorch|). Cases: layernorm +
// learned positions + gelu; rmsnorm + rope + swiglu, untied and with tie_embeddings.
// Without PyTorch's Python package the test is skipped and says why.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "desync/algorithms/common.h"
#include "desync/core/config.h"
#include "desync/models/gpt.h"
#include "desync/models/staged_model.h"
#include "test_util.h"

namespace desync {
namespace {

constexpr double kTolerance = 1e-5;
constexpr int64_t kVocab = 61, kContext = 20, kSeq = 16, kBatch = 3;

const std::string kPython = testing::python();
const std::string kSource = testing::source_dir();

// Why PyTorch's Python package cannot run here, or "".
std::string python_unavailable() {
  auto r = testing::run_command(kPython + " -c 'import torch' 2>&1");
  if (r.status != 0)
    return "PyTorch's Python package does not import from " + kPython + " (install it with " +
           "`scripts/install-deps --for test`): " + r.output.substr(0, 300);
  return "";
}

void save_pickle(const std::string& path, const c10::IValue& value) {
  std::vector<char> bytes = torch::pickle_save(value);
  testing::write_file(path, std::string(bytes.begin(), bytes.end()));
}

c10::IValue load_pickle(const std::string& path) {
  std::string bytes = testing::read_file(path);
  return torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
}

struct GptCase {
  const char* name;
  const char* norm;
  const char* position;
  const char* activation;
  bool tie;
};

void PrintTo(const GptCase& c, std::ostream* os) { *os << c.name; }

class GptParity : public ::testing::TestWithParam<GptCase> {};

TEST_P(GptParity, LossAndGradientsMatchAPyTorchImplementation) {
  if (std::string why = python_unavailable(); !why.empty()) GTEST_SKIP() << why;
  const GptCase& c = GetParam();
  ModelConfig cfg;
  cfg.name = "gpt";
  cfg.n_layer = 2;
  cfg.n_head = 2;
  cfg.d_model = 32;
  cfg.seq_len = kContext;
  cfg.norm = c.norm;
  cfg.position = c.position;
  cfg.activation = c.activation;
  cfg.tie_embeddings = c.tie;
  at::set_num_threads(1);
  torch::manual_seed(0);
  StagedModel model = make_model(cfg, {{kSeq}, kVocab});
  torch::Tensor ids = torch::randint(kVocab, {kBatch, kSeq}, torch::kLong);
  torch::Tensor targets = torch::randint(kVocab, {kBatch, kSeq}, torch::kLong);
  torch::Tensor loss = loss_of(model->forward(ids), targets);
  loss.backward();

  testing::TempDir dir;
  c10::Dict<std::string, torch::Tensor> state, grads;
  for (const auto& [name, p] : model->named_params()) {
    state.insert(name, p.detach().clone());
    grads.insert(name, p.grad().clone());
  }
  ASSERT_TRUE(model->named_bufs().empty());
  save_pickle(dir.file("state.pt"), state);
  save_pickle(dir.file("batch.pt"), c10::ivalue::Tuple::create({ids, targets}));
  c10::impl::GenericDict mine(c10::StringType::get(), c10::AnyType::get());
  mine.insert(std::string("loss"), loss.detach());
  mine.insert(std::string("grads"), grads);
  save_pickle(dir.file("desync.pt"), mine);

  nlohmann::json spec = {{"n_layer", cfg.n_layer},
                         {"n_head", cfg.n_head},
                         {"d_model", cfg.d_model},
                         {"d_ff", gpt_ff_width(cfg)},
                         {"context", kContext},
                         {"vocab", kVocab},
                         {"norm", cfg.norm},
                         {"position", cfg.position},
                         {"activation", cfg.activation},
                         {"tie_embeddings", cfg.tie_embeddings},
                         {"state", dir.file("state.pt")},
                         {"batch", dir.file("batch.pt")},
                         {"desync", dir.file("desync.pt")},
                         {"out", dir.file("pytorch.pt")}};
  testing::write_file(dir.file("spec.json"), spec.dump());
  auto r = testing::run_command(kPython + " " + kSource + "/tests/reference/gpt_reference.py " +
                                dir.file("spec.json") + " 2>&1");
  ASSERT_EQ(r.status, 0) << r.output;
  std::cout << "[" << c.name << "] " << r.output;

  c10::Dict<c10::IValue, c10::IValue> theirs = load_pickle(dir.file("pytorch.pt")).toGenericDict();
  const double their_loss = theirs.at("loss").toTensor().item<double>();
  EXPECT_NEAR(loss.item<double>(), their_loss, kTolerance * std::abs(their_loss));
  c10::Dict<c10::IValue, c10::IValue> their_grads = theirs.at("grads").toGenericDict();
  EXPECT_EQ(their_grads.size(), grads.size());
  double worst_abs = 0.0, worst_rel = 0.0;
  for (const auto& [name, p] : model->named_params()) {
    ASSERT_TRUE(their_grads.contains(name)) << name;
    torch::Tensor ref = their_grads.at(name).toTensor();
    ASSERT_EQ(ref.sizes(), p.sizes()) << name;
    const double scale = ref.abs().max().item<double>();
    const double diff = (p.grad() - ref).abs().max().item<double>();
    EXPECT_GT(scale, 0.0) << name << ": a zero gradient would prove nothing";
    EXPECT_LE(diff, kTolerance * scale) << name << " (largest entry " << scale << ")";
    worst_abs = std::max(worst_abs, diff);
    worst_rel = std::max(worst_rel, diff / scale);
  }
  std::cout << "[" << c.name << "] loss " << loss.item<double>() << " vs " << their_loss
            << "; gradients: max abs diff " << worst_abs << ", max diff relative to the tensor's "
            << "largest entry " << worst_rel << "\n";
}

INSTANTIATE_TEST_SUITE_P(
    Variants, GptParity,
    ::testing::Values(GptCase{"LayerNormLearnedGelu", "layernorm", "learned", "gelu", false},
                      GptCase{"RmsNormRopeSwiglu", "rmsnorm", "rope", "swiglu", false},
                      GptCase{"RmsNormRopeSwigluTied", "rmsnorm", "rope", "swiglu", true}),
    [](const ::testing::TestParamInfo<GptCase>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace desync
