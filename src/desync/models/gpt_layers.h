// The layers of the GPT model (gpt.h): normalisation, rotary positions, causal self-attention,
// the MLP, the pre-norm block, the embedding stage and the output head.
//
// Every module is Cloneable, so StagedModelImpl::clone_model() copies a GPT. Tensors derived
// from the shape rather than learned (the causal mask, the rotary cos/sin tables) are plain
// members, not buffers: they stay out of named_bufs(), checkpoints and broadcasts. They are
// built once in the constructor for the context length and sliced to the sequence length per
// call; a copy shares them. The mask is boolean and applied with masked_fill(-inf), so it serves
// every dtype; the rotary tables are kept in float64 and cast once to the dtype and device of
// the first input that differs (so float32 and float64 models both use exact tables).
//
// Weight layouts (what a state dict by these names means to another implementation): a Linear
// maps y = x W^T + b with W [out, in]; attn.qkv.weight is [3 d_model, d_model] with rows
// [q; k; v], and within each of the three, head h owns rows [h d_head, (h + 1) d_head).
//
// Initialisation: constructors and reset() leave LibTorch's defaults; init_gpt2() draws GPT-2's
// (gpt.h), or μP's when spec.mup, from the global torch RNG, in a fixed order.
//
// The blocks' linear layers are LinearLayers (low_rank.h): dense, or factorised W = A Bᵀ when
// spec.low_rank > 0 (parameters "A", "B" in place of "weight").
//
// Thread-safety: as any module; forward may update the lazy rotary cache.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>

#include "desync/models/low_rank.h"

namespace desync::models {

// A GPT's shape, resolved from ModelConfig and the data (gpt.cpp validates it).
struct GptSpec {
  int64_t vocab = 0;
  int64_t context = 0;  // the longest sequence the model takes
  int64_t n_layer = 0, n_head = 0, d_model = 0, d_ff = 0;
  bool rms_norm = false;        // rmsnorm, else layernorm
  bool rope = false;            // rotary positions, else learned absolute ones
  bool swiglu = false;          // swiglu MLP, else gelu
  bool tie_embeddings = false;  // the head uses the token embedding's weight
  double low_rank = 0.0;        // model.low_rank: the blocks' linear layers factorised (low_rank.h)
  // μP (mup.h): the blocks' matrices ~ TruncatedNormal(0, 1/fan_in), attention scores scaled by
  // 1/d_head instead of 1/sqrt(d_head), the embedding's output times input_mult, the head's
  // logits times output_mult / d_model with its weight zero (or N(0, 1) when !output_zero).
  bool mup = false;
  double mup_input_mult = 1.0, mup_output_mult = 1.0;
  bool mup_output_zero = true;
  int64_t d_head() const { return d_model / n_head; }
};

// LayerNorm (weight and bias) or RMSNorm (weight only) over the last dimension, eps 1e-5:
// layernorm (x - mean) / sqrt(var + eps) * w + b, rmsnorm x / sqrt(mean(x^2) + eps) * w.
class GptNormImpl : public torch::nn::Cloneable<GptNormImpl> {
 public:
  GptNormImpl(int64_t dim, bool rms);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  void init_gpt2();  // weight 1, bias 0

 private:
  int64_t dim_;
  bool rms_;
  torch::Tensor weight_, bias_;
};
TORCH_MODULE(GptNorm);

// Rotary position embedding (RoFormer, Su et al., arXiv 2104.09864), base 10000: position t
// rotates each pair (x_i, x_{i + d_head/2}), i < d_head/2, by the angle t * 10000^(-2i/d_head):
//     x_i' = x_i cos - x_{i+d/2} sin,   x_{i+d/2}' = x_{i+d/2} cos + x_i sin.
// Rotating queries and keys so makes q.k depend on positions only through their difference.
class Rotary {
 public:
  Rotary(int64_t d_head, int64_t context);
  // x [..., T, d_head] at positions offset, ..., offset + T - 1 (offset + T <= context).
  torch::Tensor apply(const torch::Tensor& x, int64_t offset = 0);

 private:
  int64_t half_;
  torch::Tensor cos64_, sin64_;  // [context, d_head]: each angle twice (i and i + d_head/2)
  torch::Tensor cos_, sin_;      // the tables in the dtype and on the device last used
};

// Causal multi-head self-attention: qkv = x W_qkv^T + b (one fused Linear), per head
// softmax(q k^T / sqrt(d_head) masked to keys <= the query's position) v, heads concatenated,
// then the output projection `proj` (a residual projection). Input and output [B, T, d_model].
class CausalSelfAttentionImpl : public torch::nn::Cloneable<CausalSelfAttentionImpl> {
 public:
  explicit CausalSelfAttentionImpl(const GptSpec& spec);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  void init_gpt2(double residual_std);

 private:
  GptSpec spec_;
  LinearLayer qkv_{nullptr}, proj_{nullptr};
  torch::Tensor mask_;          // bool [context, context], true above the diagonal (the future)
  std::optional<Rotary> rope_;  // with position = rope
};
TORCH_MODULE(CausalSelfAttention);

// gelu: proj(gelu(fc(x))) with biases (exact erf GELU); swiglu: proj(silu(gate(x)) * up(x)),
// bias-free. `proj` is the residual projection.
class GptMlpImpl : public torch::nn::Cloneable<GptMlpImpl> {
 public:
  explicit GptMlpImpl(const GptSpec& spec);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  void init_gpt2(double residual_std);

 private:
  GptSpec spec_;
  LinearLayer fc_{nullptr}, gate_{nullptr}, up_{nullptr}, proj_{nullptr};
};
TORCH_MODULE(GptMlp);

// Pre-norm transformer block: x + attn(norm1(x)), then + mlp(norm2(...)).
class GptBlockImpl : public torch::nn::Cloneable<GptBlockImpl> {
 public:
  explicit GptBlockImpl(const GptSpec& spec);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  // Residual projections ~ N(0, 0.02 / sqrt(2 n_layer)), the rest as GPT-2.
  void init_gpt2();

 private:
  GptSpec spec_;
  GptNorm norm1_{nullptr}, norm2_{nullptr};
  CausalSelfAttention attn_{nullptr};
  GptMlp mlp_{nullptr};
};
TORCH_MODULE(GptBlock);

// Token embedding `tok` [vocab, d_model], plus learned positions `pos` [context, d_model]
// unless rope: ids [B, T] (integers, T <= context) -> [B, T, d_model].
class GptEmbeddingImpl : public torch::nn::Cloneable<GptEmbeddingImpl> {
 public:
  explicit GptEmbeddingImpl(const GptSpec& spec);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& ids);
  void init_gpt2();
  const torch::Tensor& token_weight() const { return tok_->weight; }

 private:
  GptSpec spec_;
  torch::nn::Embedding tok_{nullptr}, pos_{nullptr};
};
TORCH_MODULE(GptEmbedding);

// Final norm, then logits = h W^T (bias-free) with W [vocab, d_model]: its own `out` Linear,
// or with tie_embeddings the token embedding's weight, held unregistered (tie() sets it; the
// embedding stage owns, counts and updates it).
class GptHeadImpl : public torch::nn::Cloneable<GptHeadImpl> {
 public:
  explicit GptHeadImpl(const GptSpec& spec);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  void init_gpt2();
  // REQUIRES: spec.tie_embeddings; `weight` [vocab, d_model].
  void tie(const torch::Tensor& weight);
  const torch::Tensor& tied_weight() const { return tied_; }

 private:
  GptSpec spec_;
  GptNorm norm_{nullptr};
  LinearLayer out_{nullptr};
  torch::Tensor tied_;
};
TORCH_MODULE(GptHead);

}  // namespace desync::models
