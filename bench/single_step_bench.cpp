// Framework overhead: one training step of desync's `single` algorithm (micro-batch source,
// flat parameters, desync's SGD, schedule) against a raw LibTorch loop (pre-built batch tensor,
// torch::optim::SGD) on the same model, batch size and thread count.
//
//   build/bench/single_step_bench [--steps N] [--rounds R] [--model cnn|mlp|resnet18|gpt]
//                                 [--threads T] [--json F]
//
// gpt: the GPT of examples/lm_gcide_ddp.toml (4 layers, d_model 128, 4 heads, 128 tokens,
// vocabulary 4096, batch 16) on random token windows, AdamW on both sides.
//
// Prints a table of the median step time per variant, its spread (min..max over rounds) and
// the framework's overhead relative to the raw loop.
#include <torch/torch.h>

#include <cstring>
#include <thread>

#include "desync/algorithms/algorithm.h"
#include "desync/algorithms/registry.h"
#include "desync/comm/communicator.h"
#include "desync/core/config.h"
#include "desync/data/batch_source.h"
#include "desync/data/dataset.h"
#include "desync/models/staged_model.h"
#include "desync/optim/schedule.h"
#include "harness.h"

using namespace desync;

int main(int argc, char** argv) {
  int steps = 20, rounds = 9;
  std::string model_name = "cnn", json_path = "single_step_bench.json";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--rounds")) rounds = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--model")) model_name = argv[i + 1];
    if (!std::strcmp(argv[i], "--json")) json_path = argv[i + 1];
  }
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  for (int i = 1; i + 1 < argc; i += 2)
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
  at::set_num_threads(std::max(1, threads));
  const bool cifar = model_name == "resnet18", gpt = model_name == "gpt";
  std::string shape = cifar ? "[3, 32, 32]" : "[1, 28, 28]";
  Config cfg =
      gpt ? parse_config("", "bench",
                         {"data.dataset=\"synthetic\"", "data.batch_size=16", "data.seq_len=128",
                          "model.name=\"gpt\"", "model.n_layer=4", "model.n_head=4",
                          "model.d_model=128", "optimizer.name=\"adamw\"", "optimizer.lr=0.001"})
          : parse_config("", "bench",
                         {"data.dataset=\"synthetic\"", "data.synthetic_train=4096",
                          "data.synthetic_shape=" + shape, "data.batch_size=64",
                          "model.name=\"" + model_name + "\"", "optimizer.lr=0.01",
                          "optimizer.momentum=0.9"});
  DatasetSplits data;
  if (gpt) {  // random windows of token ids, stored as the text datasets store them (int16)
    constexpr int64_t kVocab = 4096;
    torch::manual_seed(1);
    data.train.kind = DataKind::kText;
    data.train.inputs =
        torch::randint(kVocab, {2048, cfg.data.seq_len + 1}, torch::kLong).to(torch::kShort);
    data.train.num_classes = kVocab;
  } else {
    data = load_dataset(cfg.data, 0);
  }
  ModelInput input{data.train.example_shape(), data.train.num_classes};

  // desync: the `single` algorithm as the Trainer drives it.
  torch::manual_seed(0);
  StagedModel model = make_model(cfg.model, input);
  MicroBatchSource batches(data.train, cfg.data.batch_size, 0, 1, 0, {true, false});
  Schedule schedule(cfg.schedule, cfg.optimizer.lr, 1 << 30);
  SoloCommunicator comm;
  Context ctx{cfg, comm, model, batches, schedule, 0};
  std::unique_ptr<Algorithm> algorithm = make_algorithm(cfg.algorithm);
  algorithm->setup(ctx);

  // Raw LibTorch: same architecture, one fixed batch, torch::optim::SGD.
  torch::manual_seed(0);
  StagedModel raw = make_model(cfg.model, input);
  std::unique_ptr<torch::optim::Optimizer> raw_optimizer;
  if (gpt)
    raw_optimizer = std::make_unique<torch::optim::AdamW>(
        raw->parameters(), torch::optim::AdamWOptions(0.001).weight_decay(0.0));
  else
    raw_optimizer = std::make_unique<torch::optim::SGD>(
        raw->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  MicroBatch fixed = batches.next();
  torch::Tensor x = fixed.inputs.clone(), y = fixed.targets.clone();

  std::vector<bench::Variant> variants = {
      {"raw libtorch",
       [&] {
         for (int s = 0; s < steps; ++s) {
           raw_optimizer->zero_grad();
           torch::Tensor logits = raw->forward(x);
           torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                y.reshape({-1}))
               .backward();
           raw_optimizer->step();
         }
       },
       {}},
      {"desync single",
       [&] {
         for (int s = 0; s < steps; ++s) {
           algorithm->step(ctx);
           ++ctx.step;
         }
       },
       {}},
  };
  bench::measure(variants, 2, rounds);

  double base = bench::median(variants[0].seconds) / steps;
  fmt::print("single-worker step time · model {} · batch {} · {} threads · {} rounds of {} steps\n",
             model_name, cfg.data.batch_size, at::get_num_threads(), rounds, steps);
  fmt::print("{:<16}{:>14}{:>24}{:>12}\n", "variant", "median ms", "spread ms (min..max)",
             "vs raw");
  nlohmann::json out = {{"model", model_name},
                        {"batch", cfg.data.batch_size},
                        {"threads", at::get_num_threads()},
                        {"steps_per_round", steps},
                        {"rounds", rounds},
                        {"variants", nlohmann::json::array()}};
  for (const bench::Variant& v : variants) {
    double med = bench::median(v.seconds) / steps;
    double lo = *std::min_element(v.seconds.begin(), v.seconds.end()) / steps;
    double hi = *std::max_element(v.seconds.begin(), v.seconds.end()) / steps;
    fmt::print("{:<16}{:>14.3f}{:>24}{:>+11.1f}%\n", v.name, med * 1e3,
               fmt::format("{:.3f}..{:.3f}", lo * 1e3, hi * 1e3), 100.0 * (med / base - 1.0));
    out["variants"].push_back({{"name", v.name},
                               {"median_step_seconds", med},
                               {"min_step_seconds", lo},
                               {"max_step_seconds", hi},
                               {"overhead_vs_raw", med / base - 1.0}});
  }
  bench::write_json(json_path, out);
  fmt::print("wrote {}\n", json_path);
  return 0;
}
