// The GPT layout (gpt.h): validation, the stages, GPT-2 initialisation, the tied head, and the
// FLOP count. The layers are in gpt_layers.h.
#include "desync/models/gpt.h"

#include <fmt/format.h>

#include <string>
#include <vector>

#include "desync/core/error.h"
#include "desync/models/builders.h"
#include "desync/models/gpt_layers.h"
#include "desync/models/low_rank.h"

namespace desync {

int64_t gpt_context(const ModelConfig& cfg, int64_t data_seq_len) {
  if (cfg.seq_len <= 0) return data_seq_len;
  if (cfg.seq_len < data_seq_len)
    throw ConfigError(fmt::format(
        "model.seq_len ({}) is shorter than the data's sequences (data.seq_len = {}); set "
        "model.seq_len >= {}, or 0 to use data.seq_len",
        cfg.seq_len, data_seq_len, data_seq_len));
  return cfg.seq_len;
}

// gelu: 4 d_model (GPT-2). swiglu: 8/3 d_model, which keeps the three matrices' parameters at
// the two of a 4 d_model gelu MLP, rounded up to a multiple of 8: 8 ceil(d_model / 3).
int64_t gpt_ff_width(const ModelConfig& cfg) {
  if (cfg.d_ff > 0) return cfg.d_ff;
  if (cfg.activation == "swiglu") return 8 * ((cfg.d_model + 2) / 3);
  return 4 * cfg.d_model;
}

// Forward FLOPs per token, at 2 per multiply-add (d = d_model, f = gpt_ff_width, T = seq_len,
// V = vocab_size), from the matrix products a token takes part in:
// A factorised layer (model.low_rank) counts (in + out) r multiply-adds instead of in * out.
//   per block:  QKV projection        2 d (3d)
//               scores q k^T          2 T d   (the token's query against T keys, all heads)
//               weighted values a v   2 T d   (T weights per head times d_head, all heads)
//               output projection     2 d d
//               MLP                   gelu: 2 (d f + f d); swiglu: 2 (d f + d f + f d)
//   head:       2 d V                 (tied or not, the product is computed)
// T counts every key of the T x T score matrix that is computed, the causal mask being applied
// after the product. Training adds the backward, which computes two products per forward one
// (the gradients with respect to both operands): 3x the forward. Not counted: embedding lookups,
// norms, softmax, activations, biases and residual additions (O(d) per token, not O(d^2)).
double gpt_train_flops_per_token(const ModelConfig& cfg, int64_t vocab_size, int64_t seq_len) {
  const int64_t dm = cfg.d_model, ff = gpt_ff_width(cfg);
  // Multiply-adds of one row through a block's linear layer: in * out dense, (in + out) * r
  // factorised (model.low_rank).
  auto macs = [&](int64_t in, int64_t out) {
    const int64_t r = models::resolve_rank(cfg.low_rank, in, out);
    return static_cast<double>(r > 0 ? (in + out) * r : in * out);
  };
  const double d = static_cast<double>(dm);
  const double t = static_cast<double>(seq_len);
  const double mlp =
      cfg.activation == "swiglu" ? 2.0 * macs(dm, ff) + macs(ff, dm) : macs(dm, ff) + macs(ff, dm);
  const double block =
      2.0 * macs(dm, 3 * dm) + 2.0 * t * d + 2.0 * t * d + 2.0 * macs(dm, dm) + 2.0 * mlp;
  const double forward =
      static_cast<double>(cfg.n_layer) * block + 2.0 * d * static_cast<double>(vocab_size);
  return 3.0 * forward;
}

namespace models {
namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out;
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return "[" + out + "]";
}

GptSpec gpt_spec(const ModelConfig& cfg, const ModelInput& input) {
  if (input.example_shape.size() != 1)
    throw ConfigError(fmt::format(
        "model.name = \"gpt\" needs token sequences (examples of shape [seq_len]), but the data's "
        "examples have shape {}; use a text dataset (data.dataset = \"text\" or \"gcide\")",
        shape_text(input.example_shape)));
  if (cfg.n_layer < 1) throw ConfigError("model.n_layer: must be >= 1");
  if (cfg.n_head < 1) throw ConfigError("model.n_head: must be >= 1");
  if (cfg.d_model < 1) throw ConfigError("model.d_model: must be >= 1");
  if (cfg.d_ff < 0) throw ConfigError("model.d_ff: must be >= 0 (0 = the activation's default)");
  if (cfg.d_model % cfg.n_head != 0)
    throw ConfigError(fmt::format("model.d_model ({}) must be a multiple of model.n_head ({})",
                                  cfg.d_model, cfg.n_head));
  if (cfg.norm != "layernorm" && cfg.norm != "rmsnorm")
    throw ConfigError("model.norm: unknown norm '" + cfg.norm + "'; valid: layernorm, rmsnorm");
  if (cfg.position != "learned" && cfg.position != "rope")
    throw ConfigError("model.position: unknown '" + cfg.position + "'; valid: learned, rope");
  if (cfg.activation != "gelu" && cfg.activation != "swiglu")
    throw ConfigError("model.activation: unknown '" + cfg.activation + "'; valid: gelu, swiglu");
  if (cfg.position == "rope" && (cfg.d_model / cfg.n_head) % 2 != 0)
    throw ConfigError(fmt::format(
        "model.position = \"rope\" needs an even head width (d_model / n_head = {}); change "
        "model.d_model or model.n_head",
        cfg.d_model / cfg.n_head));
  GptSpec spec;
  spec.vocab = input.num_classes;
  spec.context = gpt_context(cfg, input.example_shape[0]);
  spec.n_layer = cfg.n_layer;
  spec.n_head = cfg.n_head;
  spec.d_model = cfg.d_model;
  spec.d_ff = gpt_ff_width(cfg);
  spec.rms_norm = cfg.norm == "rmsnorm";
  spec.rope = cfg.position == "rope";
  spec.swiglu = cfg.activation == "swiglu";
  spec.tie_embeddings = cfg.tie_embeddings;
  spec.low_rank = cfg.low_rank;
  spec.mup = cfg.parametrization == "mup";
  spec.mup_input_mult = cfg.mup_input_mult;
  spec.mup_output_mult = cfg.mup_output_mult;
  spec.mup_output_zero = cfg.mup_output_init == "zero";
  if (spec.mup && spec.tie_embeddings)
    throw ConfigError(
        "model.parametrization = \"mup\" gives the head its own zero-initialised weight; set "
        "model.tie_embeddings = false");
  return spec;
}

// Points the head of `model` (a tied GPT) at the token embedding weight of its own embed stage.
void tie_head(StagedModelImpl& model) {
  auto embed = model.stage(0)->ptr<GptEmbeddingImpl>(0);
  auto head = model.stage(model.num_stages() - 1)->ptr<GptHeadImpl>(0);
  head->tie(embed->token_weight());
}

}  // namespace

void build_gpt(StagedModelImpl& model, const ModelConfig& cfg, const ModelInput& input) {
  const GptSpec spec = gpt_spec(cfg, input);
  GptEmbedding embed(spec);
  embed->init_gpt2();
  model.add_stage("embed", torch::nn::Sequential(embed));
  for (int64_t i = 0; i < spec.n_layer; ++i) {
    GptBlock block(spec);
    block->init_gpt2();
    model.add_stage("block" + std::to_string(i), torch::nn::Sequential(block));
  }
  GptHead head(spec);
  head->init_gpt2();
  model.add_stage("head", torch::nn::Sequential(head));
  if (spec.tie_embeddings) {
    tie_head(model);
    model.set_relink(tie_head);
  }
}

}  // namespace models
}  // namespace desync
