// desync against PyTorch in Python, the same wheel on both sides: desync's `single` algorithm
// (its model, micro-batch source, flat parameters and SGD) takes a few steps; PyTorch takes
// the same steps from the same weights on the same batches with torch.optim.SGD and the model
// of bench/pytorch_reference.py, loaded strictly by desync's parameter and buffer names
// (tests/reference/pytorch_sgd_steps.py). The losses and the final parameters must agree.
// Without PyTorch's Python package (scripts/install-deps --for test puts it in .deps/venv)
// the test is skipped and says why.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/registry.h"
#include "desync/comm/communicator.h"
#include "desync/core/config.h"
#include "desync/data/batch_source.h"
#include "desync/data/dataset.h"
#include "desync/models/staged_model.h"
#include "desync/optim/schedule.h"
#include "test_util.h"

namespace desync {
namespace {

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

c10::Dict<std::string, torch::Tensor> state_of(const StagedModel& model) {
  c10::Dict<std::string, torch::Tensor> state;
  for (const auto& [name, t] : model->named_params()) state.insert(name, t.detach().clone());
  for (const auto& [name, t] : model->named_bufs()) state.insert(name, t.detach().clone());
  return state;
}

struct Parity {
  std::vector<double> desync_losses, pytorch_losses;
  double max_param_diff = 0.0;  // between desync's and PyTorch's final parameters
  double max_param_move = 0.0;  // between desync's initial and final parameters
};

// `steps` SGD steps of model `name` on synthetic data shaped `shape`, in desync and PyTorch.
Parity run_both(const std::string& name, const std::string& shape, bool batch_norm, int steps) {
  testing::TempDir dir;
  Config cfg = parse_config(
      "", "parity",
      {"data.dataset=\"synthetic\"", "data.synthetic_train=512", "data.synthetic_shape=" + shape,
       "data.batch_size=32", "model.name=\"" + name + "\"",
       std::string("model.batch_norm=") + (batch_norm ? "true" : "false"), "optimizer.lr=0.05",
       "optimizer.momentum=0.9", "optimizer.nesterov=true", "optimizer.weight_decay=5e-4",
       "schedule.name=\"constant\""});
  at::set_num_threads(1);
  DatasetSplits data = load_dataset(cfg.data, 0);
  ModelInput input{data.train.example_shape(), data.train.num_classes};
  torch::manual_seed(0);
  StagedModel model = make_model(cfg.model, input);
  c10::Dict<std::string, torch::Tensor> initial = state_of(model);
  save_pickle(dir.file("weights.pt"), initial);

  // The batches desync will draw: a second source with the same seed yields the same stream.
  MicroBatchSource preview(data.train, cfg.data.batch_size, 0, 1, 0, {true, false});
  c10::impl::GenericList batches(c10::AnyType::get());
  for (int s = 0; s < steps; ++s) {
    MicroBatch b = preview.next();
    batches.push_back(c10::ivalue::Tuple::create({b.inputs, b.targets}));
  }
  save_pickle(dir.file("batches.pt"), batches);

  Parity out;
  MicroBatchSource source(data.train, cfg.data.batch_size, 0, 1, 0, {true, false});
  Schedule schedule(cfg.schedule, cfg.optimizer.lr, steps);
  SoloCommunicator comm;
  Context ctx{cfg, comm, model, source, schedule, 0};
  std::unique_ptr<Algorithm> single = make_algorithm(cfg.algorithm);
  single->setup(ctx);
  for (; ctx.step < steps; ++ctx.step) out.desync_losses.push_back(single->step(ctx).loss);

  nlohmann::json spec = {{"model", name},
                         {"batch_norm", batch_norm},
                         {"weights", dir.file("weights.pt")},
                         {"batches", dir.file("batches.pt")},
                         {"sgd",
                          {{"lr", cfg.optimizer.lr},
                           {"momentum", cfg.optimizer.momentum},
                           {"nesterov", cfg.optimizer.nesterov},
                           {"weight_decay", cfg.optimizer.weight_decay}}},
                         {"final", dir.file("final.pt")},
                         {"losses", dir.file("losses.json")}};
  testing::write_file(dir.file("spec.json"), spec.dump());
  auto r = testing::run_command(kPython + " " + kSource + "/tests/reference/pytorch_sgd_steps.py " +
                                dir.file("spec.json") + " 2>&1");
  EXPECT_EQ(r.status, 0) << r.output;
  if (r.status != 0) return out;
  out.pytorch_losses =
      nlohmann::json::parse(testing::read_file(dir.file("losses.json"))).get<std::vector<double>>();

  std::string bytes = testing::read_file(dir.file("final.pt"));
  c10::Dict<c10::IValue, c10::IValue> theirs =
      torch::pickle_load(std::vector<char>(bytes.begin(), bytes.end())).toGenericDict();
  for (const auto& [pname, t] : model->named_params()) {
    EXPECT_TRUE(theirs.contains(pname)) << pname;
    if (!theirs.contains(pname)) continue;
    torch::Tensor diff = (theirs.at(pname).toTensor() - t.detach()).abs().max();
    out.max_param_diff = std::max(out.max_param_diff, diff.item<double>());
    torch::Tensor move = (initial.at(pname) - t.detach()).abs().max();
    out.max_param_move = std::max(out.max_param_move, move.item<double>());
  }
  return out;
}

void expect_same_steps(const Parity& p, int steps) {
  ASSERT_EQ(p.desync_losses.size(), static_cast<size_t>(steps));
  ASSERT_EQ(p.pytorch_losses.size(), static_cast<size_t>(steps));
  for (int s = 0; s < steps; ++s)
    EXPECT_NEAR(p.desync_losses[s], p.pytorch_losses[s], 1e-5 * std::abs(p.pytorch_losses[s]))
        << "step " << s;
  EXPECT_LT(p.max_param_diff, 1e-5);
  // The steps moved the model far beyond the tolerance: agreeing on unchanged parameters
  // would prove nothing.
  EXPECT_GT(p.max_param_move, 1e-2);
}

TEST(PyTorchParity, SingleCnnWithBatchNormMatchesTorchOptimSgd) {
  if (std::string why = python_unavailable(); !why.empty()) GTEST_SKIP() << why;
  const int kSteps = 8;
  expect_same_steps(run_both("cnn", "[1, 28, 28]", true, kSteps), kSteps);
}

TEST(PyTorchParity, SingleMlpMatchesTorchOptimSgd) {
  if (std::string why = python_unavailable(); !why.empty()) GTEST_SKIP() << why;
  const int kSteps = 8;
  expect_same_steps(run_both("mlp", "[1, 28, 28]", false, kSteps), kSteps);
}

}  // namespace
}  // namespace desync
