// `desync generate`: text from a language-model run's newest checkpoint.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>

#include "desync/cli/commands.h"
#include "desync/core/checkpoint.h"
#include "desync/core/config.h"
#include "desync/core/error.h"
#include "desync/data/tokenizer.h"
#include "desync/models/gpt.h"
#include "desync/models/sampling.h"
#include "desync/models/staged_model.h"

namespace desync {
namespace {

// The model of `dir`'s config with rank 0's weights from its newest intact checkpoint. For
// pipelines the final checkpoint holds every stage (they are shared for the final evaluation);
// for methods that keep several models (DiLoCo, gossip) it is rank 0's.
StagedModel load_model(const std::string& dir, const Config& cfg, int64_t vocab) {
  StagedModel model = make_model(cfg.model, ModelInput{{cfg.data.seq_len}, vocab});
  CheckpointStore store(dir + "/checkpoints", 0, cfg.run.workers);
  auto warn = [](const std::string& w) { std::fprintf(stderr, "warning: %s\n", w.c_str()); };
  auto loaded = store.load_latest(warn);
  if (!loaded)
    throw CheckpointError(fmt::format(
        "{}/checkpoints holds no intact checkpoint; train with checkpoint.enabled = true", dir));
  for (auto& [name, t] : model->named_params()) loaded->archive.copy_into("model.param." + name, t);
  for (auto& [name, t] : model->named_bufs()) loaded->archive.copy_into("model.buffer." + name, t);
  std::fprintf(stderr, "sampling from %s, step %lld\n", store.step_dir(loaded->step).c_str(),
               static_cast<long long>(loaded->step));
  return model;
}

}  // namespace

int run_generate(const GenerateArgs& args) {
  const std::string& dir = args.run_dir;
  if (!std::filesystem::is_regular_file(dir + "/config.toml"))
    throw ConfigError(fmt::format("{} is not a run directory (it has no config.toml)", dir));
  const Config cfg = load_config(dir + "/config.toml");
  if (cfg.model.name != "gpt")
    throw ConfigError(fmt::format(
        "{} trained model '{}'; desync generate samples from language models (model.name = gpt)",
        dir, cfg.model.name));
  if (!std::filesystem::is_regular_file(dir + "/tokenizer.model"))
    throw ConfigError(
        fmt::format("{} has no tokenizer.model (written when a text run starts)", dir));
  const auto tokenizer = load_tokenizer(dir + "/tokenizer.model");
  torch::manual_seed(0);   // the initial weights are overwritten; their draw only needs a seed
  at::set_num_threads(1);  // the same draws on every machine
  StagedModel model = load_model(dir, cfg, tokenizer->vocab_size());
  std::vector<int> prompt = tokenizer->encode(args.prompt);
  const size_t prompt_size = prompt.size();
  // An empty prompt starts where every document starts: after an end of document.
  if (prompt.empty()) prompt.push_back(tokenizer->eos_id());
  SamplingOptions options{args.tokens, args.temperature, args.top_k, args.seed};
  std::vector<int> ids =
      sample_tokens(model, std::move(prompt), gpt_context(cfg.model, cfg.data.seq_len), options);
  // The continuation, with each end of document shown as a blank line.
  std::string text = args.prompt;
  std::vector<int> piece;
  for (size_t i = std::max<size_t>(prompt_size, 1); i < ids.size(); ++i) {
    if (ids[i] == tokenizer->eos_id()) {
      text += tokenizer->decode(piece) + "\n\n";
      piece.clear();
    } else {
      piece.push_back(ids[i]);
    }
  }
  text += tokenizer->decode(piece);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  return 0;
}

}  // namespace desync
