#include "desync/algorithms/local/forward_gradient.h"

#include <fmt/format.h>

#include <cmath>

#include "desync/algorithms/common.h"
#include "desync/algorithms/local/jvp.h"
#include "desync/algorithms/registry.h"
#include "desync/core/error.h"
#include "desync/core/system.h"
#include "desync/core/trace.h"
#include "desync/data/batch_source.h"

namespace desync {

std::unique_ptr<Algorithm> make_forward_gradient(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  ForwardGradientOptions o;
  o.blocks = r.get("blocks", o.blocks, int64_t{0});
  o.stages_per_block = r.get("stages_per_block", o.stages_per_block, int64_t{1});
  o.aux.kind = r.get_choice("aux", o.aux.kind, {"mlp", "cnn", "linear"});
  o.aux.hidden = r.get("aux_hidden", o.aux.hidden, int64_t{0});
  o.target = r.get_choice("target", o.target, {"global", "local", "above"});
  o.guess =
      r.get_choice("guess", o.guess, {"random", "local", "ntk", "fixed-ntk", "global", "above"});
  o.noise = r.get_choice("noise", o.noise, {"gaussian", "rademacher"});
  o.space = r.get_choice("space", o.space, {"activation", "weight"});
  o.jvp = r.get_choice("jvp", o.jvp, {"forward_ad", "double_vjp", "simulated"});
  o.scalars = r.get_choice("scalars", o.scalars, {"auto", "sample", "batch"});
  o.random_projection =
      r.get_choice("random_projection", o.random_projection, {"classic", "normalized"});
  o.eps = r.get("eps", o.eps, 0.0, 1.0);
  o.probe_examples = r.get("probe_examples", o.probe_examples, int64_t{0});
  r.finish();
  if (o.space == "weight" && o.scalars == "sample")
    throw ConfigError(
        "forward_gradient: scalars = \"sample\" is for space = \"activation\"; in weight space "
        "the estimate is one scalar per block and batch (set scalars = \"auto\")");
  return std::make_unique<ForwardGradient>(o, cfg.accumulation);
}

namespace {

// Losses of each example: [B] for logits [B, C], the mean over positions for [B, T, C].
torch::Tensor per_example_loss(const torch::Tensor& logits, const torch::Tensor& y) {
  namespace F = torch::nn::functional;
  const auto none = F::CrossEntropyFuncOptions().reduction(torch::kNone);
  if (logits.dim() == 3)
    return F::cross_entropy(logits.reshape({-1, logits.size(-1)}), y.reshape({-1}), none)
        .view({logits.size(0), -1})
        .mean(1);
  return F::cross_entropy(logits, y, none);
}

// The gradient of `out` with respect to `inputs` along `grad_out`, keeping the graph.
std::vector<torch::Tensor> vjp(const torch::Tensor& out, const std::vector<torch::Tensor>& inputs,
                               const torch::Tensor& grad_out) {
  std::vector<torch::Tensor> g =
      torch::autograd::grad({out}, inputs, {grad_out}, /*retain_graph=*/true,
                            /*create_graph=*/false, /*allow_unused=*/true);
  for (size_t i = 0; i < g.size(); ++i)
    if (!g[i].defined()) g[i] = torch::zeros_like(inputs[i]);
  return g;
}

void add_into_grads(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& g,
                    double scale) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) params[i].mutable_grad().add_(g[i], scale);
}

// Sum over each example's coordinates: [B, ...] -> [B].
torch::Tensor per_example_sum(const torch::Tensor& t) { return t.flatten(1).sum(1); }

// Broadcastable [B, 1, ...] from [B].
torch::Tensor as_column(const torch::Tensor& v, int64_t dims) {
  std::vector<int64_t> shape(dims, 1);
  shape[0] = v.size(0);
  return v.view(shape);
}

at::Generator generator(uint64_t seed) { return at::detail::createCPUGenerator(mix64(seed)); }

torch::Tensor noise_like(const torch::Tensor& t, const std::string& kind, at::Generator& gen) {
  if (kind == "rademacher") return torch::bernoulli(torch::full_like(t, 0.5), gen).mul_(2).sub_(1);
  torch::Tensor n = torch::empty_like(t);
  n.normal_(0.0, 1.0, gen);
  return n;
}

std::vector<torch::Tensor> snapshot(const std::vector<torch::Tensor>& buffers) {
  std::vector<torch::Tensor> out;
  for (const torch::Tensor& b : buffers) out.push_back(b.detach().clone());
  return out;
}

void restore(const std::vector<torch::Tensor>& buffers, const std::vector<torch::Tensor>& saved) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(saved[i]);
}

void collect_batch_norms(const torch::nn::Module& m, std::vector<torch::nn::Module*>& out) {
  for (const auto& child : m.modules(/*include_self=*/true))
    if (child->name().find("BatchNorm") != std::string::npos) out.push_back(child.get());
}

}  // namespace

ForwardGradient::ForwardGradient(ForwardGradientOptions options, int64_t micro_batches)
    : Algorithm(AlgorithmTraits{}), opts_(std::move(options)), micro_batches_(micro_batches) {}

void ForwardGradient::setup(Context& ctx) {
  model_ = ctx.model;
  seed_ = ctx.config.run.seed;
  const int64_t stages = model_->num_stages(), K = opts_.blocks > 0 ? opts_.blocks : stages;
  if (K > stages)
    throw ConfigError(fmt::format(
        "forward_gradient: algorithm.blocks = {} is more than the model's {} stages (model {}); "
        "a block is one stage or more",
        K, stages, ctx.config.model.name));
  if (model_->has_tied_stages() && K > 1)
    throw ConfigError(
        "forward_gradient: model.tie_embeddings ties the first and last stages, which would sit "
        "in different blocks: set model.tie_embeddings = false");
  blocks_ = place_stages(stages, K, opts_.stages_per_block, std::vector<double>(stages, 1.0));
  make_replicated_flat(ctx);  // the model made alike on every rank (the heads are by seed)
  classes_ = ctx.batches.dataset().num_classes;

  const int64_t probe_n =
      opts_.probe_examples > 0 ? opts_.probe_examples : ctx.config.data.batch_size;
  MicroBatch probe = take_range(ctx.batches.dataset(), 0, probe_n, ctx.config.data.normalize);
  probe_x_ = probe.inputs.to(model_->dtype());
  probe_y_ = probe.targets;
  const std::vector<std::vector<int64_t>> shapes = boundary_shapes(model_, probe_x_);
  auto make_head = [&](int64_t k, uint64_t stream) {
    at::Generator gen = generator(static_cast<uint64_t>(seed_) * 1000003u + stream);
    const std::vector<int64_t>& out = shapes[blocks_[k].end];
    torch::nn::Sequential head =
        make_aux_head(opts_.aux, std::vector<int64_t>(out.begin() + 1, out.end()), classes_, gen);
    head->to(model_->dtype());
    return head;
  };
  for (int64_t k = 0; k + 1 < K; ++k) {
    const std::vector<int64_t>& out = shapes[blocks_[k].end];
    shapes_.emplace_back(out.begin() + 1, out.end());
    heads_.push_back(make_head(k, static_cast<uint64_t>(k)));  // as dgl draws them
    if (opts_.guess == "fixed-ntk") {
      fixed_.push_back(make_head(k, 0x6e746bull * 1000u + static_cast<uint64_t>(k)));
      for (auto& p : fixed_.back()->parameters()) p.requires_grad_(false);
    }
  }
  for (int64_t k = 0; k < K; ++k)
    params_.push_back(model_->parameters_of(blocks_[k].begin, blocks_[k].end));

  // BatchNorms on the way from h_k to block k's target, which couple the examples; and the model
  // stages the JVP passes run (heads not counted).
  coupling_.resize(std::max<int64_t>(K - 1, 0));
  for (int64_t k = 0; k + 1 < K; ++k) {
    if (opts_.space == "weight") {  // block k runs again in the JVP pass
      for (int64_t s = blocks_[k].begin; s < blocks_[k].end; ++s)
        collect_batch_norms(*model_->stage(s), coupling_[k]);
      if (opts_.jvp != "simulated") jvp_block_forwards_ += blocks_[k].end - blocks_[k].begin;
    }
    const TargetMap t = target_map(k);
    for (int64_t s = t.stages.begin; s < t.stages.end; ++s)
      collect_batch_norms(*model_->stage(s), coupling_[k]);
    if (t.head) collect_batch_norms(*t.head, coupling_[k]);
    if (opts_.jvp != "simulated") jvp_block_forwards_ += t.stages.end - t.stages.begin;
  }

  // One flat buffer and one optimizer over the model and the heads: the gradients are averaged
  // over the ranks in one all-reduce.
  std::vector<torch::Tensor> all = model_->parameters_of(0, stages);
  std::vector<std::pair<std::string, torch::Tensor>> named = model_->named_params();
  for (size_t k = 0; k < heads_.size(); ++k)
    for (const auto& item : heads_[k]->named_parameters()) {
      all.push_back(item.value());
      named.emplace_back(fmt::format("aux{}.{}", k + 1, item.key()), item.value());
    }
  flat_ = std::make_unique<FlatParameters>(all);
  optimizer_ = ctx.make_optimizer(param_slots(named, ctx.config.optimizer));
  for (auto& [name, b] : model_->named_bufs()) buffers_.push_back(b);
  for (auto& head : heads_)
    for (auto& b : head->buffers()) buffers_.push_back(b);
}

bool ForwardGradient::per_example(int64_t k) const {
  if (opts_.space == "weight" || opts_.scalars == "batch") return false;
  if (opts_.scalars == "sample" || opts_.jvp == "simulated") return true;
  for (torch::nn::Module* m : coupling_[k])
    if (m->is_training()) return false;
  return true;
}

ForwardGradient::TargetMap ForwardGradient::target_map(int64_t k) const {
  const int64_t K = static_cast<int64_t>(blocks_.size());
  if (opts_.target == "local") return {{blocks_[k].end, blocks_[k].end}, heads_[k]};
  if (opts_.target == "above" && k + 2 < K) return {blocks_[k + 1], heads_[k + 1]};
  return {{blocks_[k + 1].begin, model_->num_stages()}, nullptr};  // the model's loss
}

torch::Tensor ForwardGradient::target_losses(int64_t k, const torch::Tensor& a,
                                             const torch::Tensor& y) {
  TargetMap t = target_map(k);
  torch::Tensor out = model_->forward_range(a, t.stages.begin, t.stages.end);
  return per_example_loss(t.head ? t.head->forward(out) : out, y);
}

double ForwardGradient::accumulate(const torch::Tensor& x, const torch::Tensor& y, double scale,
                                   uint64_t draw) {
  const int64_t K = static_cast<int64_t>(blocks_.size());
  std::vector<torch::Tensor> in(K), h(K);
  {
    TraceSpan span("forward", "compute");
    for (int64_t k = 0; k < K; ++k) {
      in[k] = k == 0 ? x : h[k - 1].detach().requires_grad_(true);
      h[k] = model_->forward_range(in[k], blocks_[k].begin, blocks_[k].end);
    }
  }
  const std::vector<torch::Tensor> saved = snapshot(buffers_);  // after the one primal pass

  TraceSpan span("estimate", "compute");
  // The last block: the true gradient of the model's loss; and dL/dh_{K-1} below it.
  const torch::Tensor loss = per_example_loss(h[K - 1], y).mean();
  std::vector<torch::Tensor> wrt = params_[K - 1];
  if (K > 1) wrt.push_back(in[K - 1]);
  std::vector<torch::Tensor> g = vjp(loss, wrt, torch::ones_like(loss));
  add_into_grads(params_[K - 1], g, scale);
  if (K == 1) return loss.item<double>();

  // The heads: their own gradients, and the local gradients dl_k/dh_k.
  std::vector<torch::Tensor> local(K - 1);
  for (int64_t k = 0; k + 1 < K; ++k) {
    torch::Tensor z = h[k].detach().requires_grad_(true);
    torch::Tensor l = per_example_loss(heads_[k]->forward(z), y).mean();
    std::vector<torch::Tensor> head_params = heads_[k]->parameters();
    std::vector<torch::Tensor> w = head_params;
    w.push_back(z);
    std::vector<torch::Tensor> gh = vjp(l, w, torch::ones_like(l));
    local[k] = gh.back();
    gh.pop_back();
    add_into_grads(head_params, gh, scale);
  }
  // Backprop's activation gradients, only where the target or the guess needs them: a real
  // JVP stands in for them as a target.
  const bool exact = opts_.jvp == "simulated";
  const bool need_global = (exact && opts_.target == "global") || opts_.guess == "global";
  const bool need_above = (exact && opts_.target == "above") || opts_.guess == "above";
  std::vector<torch::Tensor> global(K - 1), above(K - 1);
  global[K - 2] = g.back();
  for (int64_t k = K - 3; k >= 0 && need_global; --k)
    global[k] = vjp(h[k + 1], {in[k + 1]}, global[k + 1])[0];
  for (int64_t k = 0; k + 1 < K && need_above; ++k)
    above[k] = k + 2 == K ? global[k] : vjp(h[k + 1], {in[k + 1]}, local[k + 1])[0];
  auto activation_gradient = [&](const std::string& what, int64_t k) {
    return what == "global" ? global[k] : what == "above" ? above[k] : local[k];
  };

  const bool classic = opts_.guess == "random" && opts_.random_projection == "classic";
  Stopwatch jvp_clock;
  double jvp_seconds = 0.0;
  for (int64_t k = 0; k + 1 < K; ++k) {
    at::Generator gen = generator(draw * 1000003u + static_cast<uint64_t>(k));
    // The guess in activation space (for weight space, pulled back below unless random).
    torch::Tensor u;
    if (opts_.guess == "random") {
      if (opts_.space == "activation") u = noise_like(h[k], opts_.noise, gen);
    } else if (opts_.guess == "ntk" || opts_.guess == "fixed-ntk") {
      torch::nn::Sequential head;
      if (opts_.guess == "fixed-ntk") {
        head = fixed_[k];
      } else {
        head = make_aux_head(opts_.aux, shapes_[k], classes_, gen);
        head->to(model_->dtype());
      }
      torch::Tensor z = h[k].detach().requires_grad_(true);
      torch::Tensor l = per_example_loss(head->forward(z), y).mean();
      u = torch::autograd::grad({l}, {z})[0];
    } else {
      u = activation_gradient(opts_.guess, k);
    }

    const double B = static_cast<double>(x.size(0));
    const StageRange s = blocks_[k];
    if (opts_.space == "activation") {
      torch::Tensor sigma;  // <t, u>: [B] per example, or a scalar
      if (exact) {
        sigma = per_example_sum(activation_gradient(opts_.target, k) * u);
      } else {
        jvp_clock.reset();
        auto f = [&](const torch::Tensor& a) { return target_losses(k, a, y); };
        sigma =
            (opts_.jvp == "forward_ad" ? jvp_forward_ad(f, h[k], u) : jvp_double_vjp(f, h[k], u))
                .div(B);
        jvp_seconds += jvp_clock.seconds();
      }
      torch::Tensor estimate;
      if (per_example(k))
        estimate =
            as_column(classic ? sigma : sigma / (per_example_sum(u * u) + opts_.eps), u.dim()) * u;
      else
        estimate = (classic ? sigma.sum() : sigma.sum() / ((u * u).sum() + opts_.eps)) * u;
      add_into_grads(params_[k], vjp(h[k], params_[k], estimate), scale);
    } else {
      std::vector<torch::Tensor> U;
      if (opts_.guess == "random")
        for (const torch::Tensor& p : params_[k]) U.push_back(noise_like(p, opts_.noise, gen));
      else
        U = vjp(h[k], params_[k], u);
      torch::Tensor sigma = torch::zeros({}, h[k].options());
      if (exact) {
        std::vector<torch::Tensor> T = vjp(h[k], params_[k], activation_gradient(opts_.target, k));
        for (size_t i = 0; i < U.size(); ++i) sigma += (T[i] * U[i]).sum();
      } else {
        jvp_clock.reset();
        torch::Tensor input = in[k].detach();
        auto f = [&] { return target_losses(k, model_->forward_range(input, s.begin, s.end), y); };
        sigma = (opts_.jvp == "forward_ad" ? jvp_forward_ad(f, params_[k], U)
                                           : jvp_double_vjp(f, params_[k], U))
                    .sum()
                    .div(B);
        jvp_seconds += jvp_clock.seconds();
      }
      torch::Tensor norm = torch::zeros({}, h[k].options());
      for (const torch::Tensor& t : U) norm += (t * t).sum();
      const torch::Tensor coef = classic ? sigma : sigma / (norm + opts_.eps);
      std::vector<torch::Tensor> estimate;
      for (const torch::Tensor& t : U) estimate.push_back(coef * t);
      add_into_grads(params_[k], estimate, scale);
    }
  }
  restore(buffers_, saved);  // the JVP passes ran the blocks again
  jvp_seconds_ += jvp_seconds;
  return loss.item<double>();
}

StepReport ForwardGradient::step(Context& ctx) {
  const int64_t world = ctx.comm.world_size();
  if (world > 1)  // every replica normalises with rank 0's statistics, as DDP does
    for (auto& [name, b] : model_->named_bufs()) ctx.comm.broadcast(b, 0);
  flat_->grads_flat().zero_();
  StepReport report;
  double loss_sum = 0.0;
  for (int64_t b = 0; b < micro_batches_; ++b) {
    MicroBatch mb = ctx.batches.next();
    const uint64_t draw =
        static_cast<uint64_t>(seed_) * 0x9e3779b97f4a7c15ull +
        static_cast<uint64_t>((ctx.step * micro_batches_ + b) * world + ctx.comm.rank());
    loss_sum += accumulate(mb.inputs, mb.targets, 1.0 / static_cast<double>(micro_batches_), draw);
    report.samples += mb.inputs.size(0);
  }
  if (world > 1) {
    TraceSpan span("all_reduce", "comm");
    ctx.comm.all_reduce(flat_->grads_flat());
    flat_->grads_flat().div_(static_cast<double>(world));
  }
  apply_update(ctx, *flat_, *optimizer_);
  report.micro_batches = micro_batches_;
  report.loss = loss_sum / static_cast<double>(micro_batches_);
  return report;
}

std::vector<StagedModel> ForwardGradient::head_models(Context& ctx) {
  std::vector<StagedModel> out;
  for (size_t k = 0; k < heads_.size(); ++k)
    out.push_back(model_with_head(model_, blocks_[k].end, fmt::format("aux{}", k + 1), heads_[k]));
  return out;
}

std::vector<std::pair<std::string, double>> ForwardGradient::probe(Context& ctx, bool last) {
  const int64_t K = static_cast<int64_t>(blocks_.size());
  if (K < 2) return {};
  const std::vector<torch::Tensor> saved_buffers = snapshot(buffers_);
  const torch::Tensor saved_grads = flat_->grads_flat().clone();
  const bool was_training = model_->is_training();
  model_->train();

  // The estimate, as a step computes it (the guesses drawn from a stream of the probe's own).
  flat_->grads_flat().zero_();
  jvp_seconds_ = 0.0;
  Stopwatch clock;
  accumulate(probe_x_, probe_y_, 1.0, static_cast<uint64_t>(seed_) ^ 0x70726f6265ull);
  const double estimate_seconds = clock.seconds();
  const double jvp_seconds = jvp_seconds_;
  std::vector<std::vector<torch::Tensor>> estimate(K - 1);
  for (int64_t k = 0; k + 1 < K; ++k)
    for (const torch::Tensor& p : params_[k]) estimate[k].push_back(p.grad().clone());
  restore(buffers_, saved_buffers);

  // The true gradient: end-to-end backprop of the same batch.
  clock.reset();
  std::vector<torch::Tensor> wrt;
  for (int64_t k = 0; k + 1 < K; ++k) wrt.insert(wrt.end(), params_[k].begin(), params_[k].end());
  const torch::Tensor loss = loss_of(model_->forward(probe_x_), probe_y_);
  const std::vector<torch::Tensor> truth = torch::autograd::grad({loss}, wrt);
  const double backprop_seconds = clock.seconds();
  restore(buffers_, saved_buffers);
  flat_->grads_flat().copy_(saved_grads);
  if (!was_training) model_->eval();

  std::vector<std::pair<std::string, double>> out;
  torch::Tensor dot = torch::zeros({}, torch::kFloat64), ne = dot.clone(), nt = dot.clone();
  std::vector<double> per_block;
  size_t i = 0;
  for (int64_t k = 0; k + 1 < K; ++k) {
    torch::Tensor d = torch::zeros({}, torch::kFloat64), a = d.clone(), b = d.clone();
    for (const torch::Tensor& e : estimate[k]) {
      const torch::Tensor t = truth[i++].to(torch::kFloat64), e64 = e.to(torch::kFloat64);
      d += (e64 * t).sum();
      a += (e64 * e64).sum();
      b += (t * t).sum();
    }
    dot += d, ne += a, nt += b;
    per_block.push_back((d / (a.sqrt() * b.sqrt() + 1e-300)).item<double>());
  }
  out.emplace_back("grad_cosine", (dot / (ne.sqrt() * nt.sqrt() + 1e-300)).item<double>());
  for (size_t k = 0; k < per_block.size(); ++k)
    out.emplace_back(fmt::format("grad_cosine_{}", k + 1), per_block[k]);
  out.emplace_back("probe_estimate_seconds", estimate_seconds);
  out.emplace_back("probe_jvp_seconds", jvp_seconds);
  out.emplace_back("probe_backprop_seconds", backprop_seconds);
  return out;
}

void ForwardGradient::save(Archive& archive) const {
  save_optimizer(*optimizer_, archive);
  for (size_t k = 0; k < heads_.size(); ++k)  // the heads are not part of the model
    save_head(archive, fmt::format("aux{}", k + 1), *heads_[k]);
}

void ForwardGradient::load(const Archive& archive) {
  load_optimizer(*optimizer_, archive);
  for (size_t k = 0; k < heads_.size(); ++k)
    load_head(archive, fmt::format("aux{}", k + 1), *heads_[k]);
}

AlgorithmReport ForwardGradient::report() const {
  AlgorithmReport r;
  r.memory = model_state_memory(*flat_, *optimizer_);
  int64_t aux = 0;
  for (const auto& head : heads_)
    for (const torch::Tensor& p : head->parameters()) aux += p.numel();
  r.counts = {{"blocks", static_cast<int64_t>(blocks_.size())},
              {"aux_parameters", aux},
              {"jvp_block_forwards_per_micro_batch", jvp_block_forwards_}};
  return r;
}

}  // namespace desync
