// A decoder-only transformer language model (GPT-2 style) as a StagedModel.
//
// Stages: "embed" (token embedding, plus a learned position embedding unless position = rope),
// one stage "block<i>" per layer (pre-norm: x + attn(norm(x)), then x + mlp(norm(x))), and
// "head" (final norm, then a linear map to the vocabulary, bias-free; with tie_embeddings its
// weight is the token embedding's). Input int64 token ids [B, T] with T <= the context length;
// output logits [B, T, vocab].
//
// Attention: one fused QKV projection, causal softmax attention with batched matmuls over heads;
// the causal mask is built once per stage for the context length and sliced, never per step.
// Norms: layernorm (with bias) or rmsnorm (weight only, eps 1e-5 for both). MLP: gelu (tanh
// approximation off: exact erf gelu) with d_ff, or swiglu (silu(x W1) * (x W3)) W2.
// Positions: learned absolute embeddings, or rotary (rope, base 10000, rotating pairs
// (i, i + d_head/2) of each head's queries and keys).
//
// Initialisation (GPT-2): linear and embedding weights ~ N(0, 0.02), biases zero, norm weights
// one; each block's two residual projections (attention output and MLP output) ~ N(0, 0.02 /
// sqrt(2 n_layer)).
#pragma once

#include <cstdint>

#include "desync/core/config.h"

namespace desync {

// The context length a GPT built from `cfg` for sequences of `data_seq_len` tokens has.
int64_t gpt_context(const ModelConfig& cfg, int64_t data_seq_len);

// The hidden width of a block's MLP: cfg.d_ff, or the default for the activation: 4 d_model for
// gelu; for swiglu 8/3 d_model (its three matrices then hold the parameters of gelu's two)
// rounded up to a multiple of 8, i.e. 8 ceil(d_model / 3).
int64_t gpt_ff_width(const ModelConfig& cfg);

// Floating-point operations per token of one training step (forward and backward, 3x the
// forward): 2 per multiply-add of every matrix product (embeddings' lookups excluded), attention
// scores and weighted values included at sequence length `seq_len`.
double gpt_train_flops_per_token(const ModelConfig& cfg, int64_t vocab_size, int64_t seq_len);

}  // namespace desync
