// The GPT layers (gpt_layers.h).
#include "desync/models/gpt_layers.h"

#include <cmath>
#include <limits>
#include <vector>

namespace desync::models {
namespace {

constexpr double kNormEps = 1e-5;
constexpr double kInitStd = 0.02;
constexpr double kRopeBase = 10000.0;

// A block's linear layer: factorised with the rank spec.low_rank gives it.
LinearLayer linear(const GptSpec& spec, int64_t in, int64_t out, bool bias) {
  return LinearLayer(in, out, bias, resolve_rank(spec.low_rank, in, out));
}

// GPT-2: weight ~ N(0, std), bias 0. μP: weight ~ TruncatedNormal(0, 1/fan_in), bias 0.
void init_linear(const GptSpec& spec, LinearLayer layer, double std) {
  if (spec.mup)
    layer->init_truncated_normal(1.0 / std::sqrt(static_cast<double>(layer->in_features())), 0.0);
  else
    layer->init_normal(std);
}

}  // namespace

GptNormImpl::GptNormImpl(int64_t dim, bool rms) : dim_(dim), rms_(rms) { reset(); }

void GptNormImpl::reset() {
  weight_ = register_parameter("weight", torch::ones({dim_}));
  if (!rms_) bias_ = register_parameter("bias", torch::zeros({dim_}));
}

torch::Tensor GptNormImpl::forward(const torch::Tensor& x) {
  if (!rms_) return torch::layer_norm(x, {dim_}, weight_, bias_, kNormEps);
  return x * torch::rsqrt(x.square().mean(-1, /*keepdim=*/true) + kNormEps) * weight_;
}

void GptNormImpl::init_gpt2() {
  torch::NoGradGuard no_grad;
  weight_.fill_(1.0);
  if (bias_.defined()) bias_.zero_();
}

Rotary::Rotary(int64_t d_head, int64_t context) : half_(d_head / 2) {
  TORCH_CHECK(d_head >= 2 && d_head % 2 == 0, "Rotary: the head width must be even, got ", d_head);
  auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  torch::Tensor i = torch::arange(half_, f64);
  torch::Tensor inv_freq = torch::pow(kRopeBase, -2.0 * i / static_cast<double>(d_head));
  torch::Tensor angles = torch::outer(torch::arange(context, f64), inv_freq);  // [context, half]
  angles = torch::cat({angles, angles}, -1);
  cos64_ = angles.cos();
  sin64_ = angles.sin();
  cos_ = cos64_.to(torch::kFloat);
  sin_ = sin64_.to(torch::kFloat);
}

torch::Tensor Rotary::apply(const torch::Tensor& x, int64_t offset) {
  const int64_t t = x.size(-2);
  TORCH_CHECK(offset >= 0 && offset + t <= cos64_.size(0), "Rotary: positions [", offset, ", ",
              offset + t, ") exceed the context of ", cos64_.size(0));
  if (cos_.scalar_type() != x.scalar_type() || cos_.device() != x.device()) {
    cos_ = cos64_.to(x.device(), x.scalar_type());
    sin_ = sin64_.to(x.device(), x.scalar_type());
  }
  torch::Tensor cos = cos_.narrow(0, offset, t);
  torch::Tensor sin = sin_.narrow(0, offset, t);
  // (x1, x2) -> (-x2, x1): the partner of each coordinate, signed for the rotation.
  torch::Tensor rotated = torch::cat({-x.narrow(-1, half_, half_), x.narrow(-1, 0, half_)}, -1);
  return x * cos + rotated * sin;
}

CausalSelfAttentionImpl::CausalSelfAttentionImpl(const GptSpec& spec) : spec_(spec) {
  reset();
  mask_ = torch::ones({spec_.context, spec_.context}, torch::kBool).triu(1);
  if (spec_.rope) rope_.emplace(spec_.d_head(), spec_.context);
}

void CausalSelfAttentionImpl::reset() {
  qkv_ = register_module("qkv", linear(spec_, spec_.d_model, 3 * spec_.d_model, true));
  proj_ = register_module("proj", linear(spec_, spec_.d_model, spec_.d_model, true));
}

torch::Tensor CausalSelfAttentionImpl::forward(const torch::Tensor& x) {
  const int64_t b = x.size(0), t = x.size(1), c = spec_.d_model;
  const int64_t h = spec_.n_head, d = spec_.d_head();
  TORCH_CHECK(t <= spec_.context, "CausalSelfAttention: sequence of ", t,
              " tokens exceeds the context of ", spec_.context);
  // [B, T, 3C] -> three [B, H, T, d].
  std::vector<torch::Tensor> qkv = qkv_(x).split(c, -1);
  auto heads = [&](const torch::Tensor& y) { return y.view({b, t, h, d}).transpose(1, 2); };
  torch::Tensor q = heads(qkv[0]), k = heads(qkv[1]), v = heads(qkv[2]);
  if (rope_) {
    q = rope_->apply(q);
    k = rope_->apply(k);
  }
  if (mask_.device() != x.device()) mask_ = mask_.to(x.device());
  // μP scales the scores by 1/d_head: q and k become correlated as they learn.
  const double scale =
      spec_.mup ? 1.0 / static_cast<double>(d) : 1.0 / std::sqrt(static_cast<double>(d));
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) * scale;
  scores.masked_fill_(mask_.narrow(0, 0, t).narrow(1, 0, t),
                      -std::numeric_limits<double>::infinity());
  torch::Tensor y = torch::matmul(torch::softmax(scores, -1), v);  // [B, H, T, d]
  return proj_(y.transpose(1, 2).reshape({b, t, c}));
}

void CausalSelfAttentionImpl::init_gpt2(double residual_std) {
  torch::NoGradGuard no_grad;
  init_linear(spec_, qkv_, kInitStd);
  init_linear(spec_, proj_, residual_std);
}

GptMlpImpl::GptMlpImpl(const GptSpec& spec) : spec_(spec) { reset(); }

void GptMlpImpl::reset() {
  const int64_t d = spec_.d_model, f = spec_.d_ff;
  if (spec_.swiglu) {
    gate_ = register_module("gate", linear(spec_, d, f, false));
    up_ = register_module("up", linear(spec_, d, f, false));
    proj_ = register_module("proj", linear(spec_, f, d, false));
  } else {
    fc_ = register_module("fc", linear(spec_, d, f, true));
    proj_ = register_module("proj", linear(spec_, f, d, true));
  }
}

torch::Tensor GptMlpImpl::forward(const torch::Tensor& x) {
  if (spec_.swiglu) return proj_(torch::silu(gate_(x)) * up_(x));
  return proj_(torch::gelu(fc_(x)));
}

void GptMlpImpl::init_gpt2(double residual_std) {
  torch::NoGradGuard no_grad;
  if (spec_.swiglu) {
    init_linear(spec_, gate_, kInitStd);
    init_linear(spec_, up_, kInitStd);
  } else {
    init_linear(spec_, fc_, kInitStd);
  }
  init_linear(spec_, proj_, residual_std);
}

GptBlockImpl::GptBlockImpl(const GptSpec& spec) : spec_(spec) { reset(); }

void GptBlockImpl::reset() {
  norm1_ = register_module("norm1", GptNorm(spec_.d_model, spec_.rms_norm));
  attn_ = register_module("attn", CausalSelfAttention(spec_));
  norm2_ = register_module("norm2", GptNorm(spec_.d_model, spec_.rms_norm));
  mlp_ = register_module("mlp", GptMlp(spec_));
}

torch::Tensor GptBlockImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = x + attn_(norm1_(x));
  return y + mlp_(norm2_(y));
}

void GptBlockImpl::init_gpt2() {
  const double residual_std = kInitStd / std::sqrt(2.0 * static_cast<double>(spec_.n_layer));
  norm1_->init_gpt2();
  attn_->init_gpt2(residual_std);
  norm2_->init_gpt2();
  mlp_->init_gpt2(residual_std);
}

GptEmbeddingImpl::GptEmbeddingImpl(const GptSpec& spec) : spec_(spec) { reset(); }

void GptEmbeddingImpl::reset() {
  tok_ = register_module("tok", torch::nn::Embedding(spec_.vocab, spec_.d_model));
  if (!spec_.rope)
    pos_ = register_module("pos", torch::nn::Embedding(spec_.context, spec_.d_model));
}

torch::Tensor GptEmbeddingImpl::forward(const torch::Tensor& ids) {
  TORCH_CHECK(ids.dim() == 2 && !ids.is_floating_point(),
              "GptEmbedding: expected integer token ids [B, T], got ", ids.scalar_type(), " ",
              ids.sizes());
  const int64_t t = ids.size(1);
  TORCH_CHECK(t <= spec_.context, "GptEmbedding: sequence of ", t,
              " tokens exceeds the context of ", spec_.context);
  torch::Tensor x = tok_(ids);
  // Position p's embedding is row p: the first T rows, broadcast over the batch.
  if (pos_) x = x + pos_->weight.narrow(0, 0, t);
  return spec_.mup && spec_.mup_input_mult != 1.0 ? x * spec_.mup_input_mult : x;
}

void GptEmbeddingImpl::init_gpt2() {
  torch::NoGradGuard no_grad;
  torch::nn::init::normal_(tok_->weight, 0.0, kInitStd);
  if (pos_) torch::nn::init::normal_(pos_->weight, 0.0, kInitStd);
}

GptHeadImpl::GptHeadImpl(const GptSpec& spec) : spec_(spec) { reset(); }

void GptHeadImpl::reset() {
  norm_ = register_module("norm", GptNorm(spec_.d_model, spec_.rms_norm));
  // The head stays dense; μP multiplies its logits by output_mult / d_model.
  const double mult = spec_.mup ? spec_.mup_output_mult / static_cast<double>(spec_.d_model) : 1.0;
  if (!spec_.tie_embeddings)
    out_ = register_module("out", LinearLayer(spec_.d_model, spec_.vocab, false, 0, mult));
}

torch::Tensor GptHeadImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = norm_(x);
  if (out_) return out_(h);
  TORCH_CHECK(tied_.defined(), "GptHead: tied to the token embedding, but tie() was not called");
  return torch::linear(h, tied_);
}

void GptHeadImpl::init_gpt2() {
  torch::NoGradGuard no_grad;
  norm_->init_gpt2();
  if (!out_) return;
  if (!spec_.mup)
    out_->init_normal(kInitStd);
  else if (spec_.mup_output_zero)
    out_->init_zero();
  else
    out_->init_normal(1.0);
}

void GptHeadImpl::tie(const torch::Tensor& weight) {
  TORCH_CHECK(spec_.tie_embeddings, "GptHead: tie() on a head with its own output weight");
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == spec_.vocab && weight.size(1) == spec_.d_model,
              "GptHead: tied weight must be [", spec_.vocab, ", ", spec_.d_model, "], got ",
              weight.sizes());
  tied_ = weight;
}

}  // namespace desync::models
