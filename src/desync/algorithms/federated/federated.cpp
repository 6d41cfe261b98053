#include "desync/algorithms/federated/federated.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "desync/algorithms/common.h"
#include "desync/core/error.h"
#include "desync/core/trace.h"

namespace desync {
namespace {

constexpr uint64_t kShufflePurpose = 0x5348;  // a client's batch order in a round
constexpr uint64_t kHeadPurpose = 0x4844;     // the seeded fresh head

// Where each part sits in an aggregation vector: [A | buffers | G | W]. A client's message to
// the server is [p Delta | p buffers | p] (no G: the server takes the signs itself).
struct PackLayout {
  int64_t buf = 0, g = 0, w = 0, total = 0;  // A starts at 0
  PackLayout(int64_t seg, int64_t bufs, bool with_g)
      : buf(seg), g(seg + bufs), w(seg + bufs + (with_g ? seg : 0)), total(w + 1) {}
};

// Copies `tensors`, one after another, into the flat `out`.
void flatten_into(const std::vector<torch::Tensor>& tensors, torch::Tensor out) {
  int64_t at = 0;
  for (const torch::Tensor& t : tensors) {
    out.narrow(0, at, t.numel()).copy_(t.reshape(-1));
    at += t.numel();
  }
}

// The inverse: fills `tensors` from the flat `in`.
void unflatten_from(const torch::Tensor& in, const std::vector<torch::Tensor>& tensors) {
  int64_t at = 0;
  for (const torch::Tensor& t : tensors) {
    t.copy_(in.narrow(0, at, t.numel()).view(t.sizes()));
    at += t.numel();
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

FederatedOptions read_federated_options(SectionReader& r) {
  FederatedOptions o;
  PartitionOptions& p = o.partition;
  p.kind = r.get_choice("partition", p.kind, {"iid", "dirichlet", "quantity"});
  p.mode = r.get_choice("dirichlet_mode", p.mode, {"per_class", "per_client"});
  p.alpha = r.get("alpha", p.alpha, 0.0, 1e12, /*exclusive_min=*/true);
  p.clients = r.get("clients", p.clients, 1, 1 << 24);
  p.heldout = r.get("heldout_clients", p.heldout, 0, 1 << 24);
  p.min_size = r.get("min_client_size", p.min_size, 1, 1 << 30);
  o.clients_per_round = r.get("clients_per_round", o.clients_per_round, 1, 1 << 24);
  o.client_fraction = r.get("client_fraction", o.client_fraction, 0.0, 1.0);
  o.min_clients_per_round = r.get("min_clients_per_round", o.min_clients_per_round, 1, 1 << 24);
  o.placement = r.get_choice("placement", o.placement, {"deal", "lpt", "static"});
  o.local_epochs = r.get("local_epochs", o.local_epochs, 1, 1 << 20);
  o.local_steps = r.get("local_steps", o.local_steps, 0, 1 << 30);
  o.weighting = r.get_choice("weighting", o.weighting, {"samples", "uniform", "steps"});
  o.prox_mu = r.get("prox_mu", o.prox_mu, 0.0, 1e6);
  o.server = read_server_optimizer_options(r);
  o.gma = r.get_choice("aggregation", "mean", {"mean", "gma"}) == "gma";
  o.gma_options = read_gma_options(r);
  o.server_transport = r.get_choice("transport", "allreduce", {"allreduce", "server"}) == "server";
  o.checksum_every = r.get("checksum_every", o.checksum_every, 0, 1 << 30);
  o.heldout_eval = r.get("heldout_eval", o.heldout_eval);
  return o;
}

NcmOptions read_ncm_options(SectionReader& r) {
  NcmOptions o;
  o.euclidean = r.get_choice("ncm_rule", "cosine", {"cosine", "euclidean"}) == "euclidean";
  o.keep_bias = r.get_choice("ncm_bias", "zero", {"zero", "keep"}) == "keep";
  return o;
}

void Federated::setup(Context& ctx) {
  const std::string& name = ctx.config.algorithm.name;
  if (ctx.micro_batches_left >= 0)
    throw ConfigError(
        fmt::format("algorithm {} counts rounds: set run.steps to the number of "
                    "rounds (a data budget in epochs, samples or tokens does not "
                    "apply)",
                    name));
  const Dataset& data = ctx.batches.dataset();
  if (data.kind == DataKind::kText || !data.targets.defined())
    throw ConfigError(
        fmt::format("algorithm {} needs a labelled dataset (images or features); "
                    "'{}' is text",
                    name, ctx.config.data.dataset));
  seed_ = static_cast<uint64_t>(ctx.config.run.seed);
  labels_ = data.targets;
  classes_ = data.num_classes;
  partition_ = make_partition(data.targets, data.num_classes, opts_.partition, seed_);
  sizes_.clear();
  for (const auto& client : partition_.indices)
    sizes_.push_back(static_cast<int64_t>(client.size()));
  const int64_t clients = opts_.partition.clients;
  k_ = opts_.client_fraction > 0
           ? std::max(opts_.min_clients_per_round,
                      static_cast<int64_t>(
                          std::floor(opts_.client_fraction * static_cast<double>(clients))))
           : opts_.clients_per_round;
  if (k_ > clients)
    throw ConfigError(
        fmt::format("algorithm.clients_per_round = {} is more than the {} training "
                    "clients; lower it or raise algorithm.clients",
                    k_, clients));

  flat_ = make_replicated_flat(ctx);
  int64_t buffer_numel = 0;
  for (const auto& [bname, b] : ctx.model->named_bufs()) {
    if (!b.is_floating_point()) continue;
    buffers_.push_back(b);
    buffer_numel += b.numel();
  }
  global_buffers_ = torch::empty({buffer_numel}, flat_->params_flat().options());
  flatten_into(buffers_, global_buffers_);
  const bool needs_head = opts_.head_init != "keep" || opts_.head_rounds != 0;
  if (needs_head) {
    last_ = std::make_unique<LastLayer>(ctx.model);
    const torch::Tensor& w = last_->head()->weight;
    const torch::Tensor& b = last_->head()->bias;
    const auto& params = flat_->params();
    int64_t begin = -1, end = -1;
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].is_same(w) || (b.defined() && params[i].is_same(b))) {
        if (begin < 0) begin = flat_->offset(i);
        end = flat_->offset(i) + params[i].numel();
      }
    }
    if (end != flat_->numel())
      throw ConfigError("the last-layer methods need the head to be the model's last parameters");
    head_ = {begin, end - begin};
    if (opts_.head_init == "random") last_->reset_head(rng_key(seed_, kHeadPurpose));
  }
  global_ = flat_->params_flat().clone();
  const bool serves = !opts_.server_transport || ctx.comm.rank() == 0;
  if (serves) {
    const bool trains_all = opts_.head_rounds >= 0;
    if (trains_all)
      server_all_ = make_server_optimizer(opts_.server, global_.narrow(0, 0, flat_->numel()));
    if (needs_head && opts_.head_rounds != 0)
      server_head_ =
          make_server_optimizer(opts_.server, global_.narrow(0, head_.begin, head_.size));
  }
  has_backbone_.assign(partition_.indices.size(), 0);
}

StepReport Federated::step(Context& ctx) {
  const bool ncm = opts_.head_init == "ncm";
  if (ncm && ctx.step == 0) return ncm_round(ctx);
  const int64_t first = ncm ? 1 : 0;
  const bool head_only = opts_.head_rounds < 0 || ctx.step < first + opts_.head_rounds;
  StepReport report = train_round(ctx, head_only);
  if (opts_.checksum_every > 0 && (ctx.step + 1) % opts_.checksum_every == 0) check_replicas(ctx);
  return report;
}

StepReport Federated::train_round(Context& ctx, bool head_only) {
  const Segment seg = head_only ? head_ : Segment{0, flat_->numel()};
  const int64_t bufs = head_only ? 0 : global_buffers_.numel();
  const int64_t me = ctx.comm.rank();
  sampled_ = sample_clients(partition_.train_ids, k_, seed_, ctx.step);
  const std::vector<int64_t> ranks =
      place_clients(sampled_, sizes_, ctx.comm.world_size(), opts_.placement);
  const PackLayout pack_at(seg.size, bufs, opts_.gma);
  const PackLayout msg_at(seg.size, bufs, false);
  const auto dtype = global_.scalar_type();
  torch::Tensor pack = torch::zeros({pack_at.total}, dtype);
  torch::Tensor msg = torch::empty({msg_at.total}, dtype);
  pack_numel_ = pack_at.total;

  // Adds a client's message [p Delta | p buffers | p] into the aggregate (and its signs to G).
  auto absorb = [&](const torch::Tensor& m) {
    torch::NoGradGuard no_grad;
    pack.narrow(0, 0, seg.size + bufs).add_(m.narrow(0, 0, seg.size + bufs));
    const double p = m[msg_at.w].item<double>();
    pack[pack_at.w].add_(p);
    if (opts_.gma) {
      const double q = opts_.gma_options.uniform_sign_weights ? 1.0 : p;
      pack.narrow(0, pack_at.g, seg.size).add_(m.narrow(0, 0, seg.size).sign(), q);
    }
  };

  StepReport report;
  for (size_t j = 0; j < sampled_.size(); ++j) {
    if (ranks[j] != me) continue;
    const int64_t client = sampled_[j];
    int64_t steps = 0;
    report += train_client(ctx, client, head_only, &steps);
    const double p = opts_.weighting == "samples" ? static_cast<double>(sizes_[client])
                     : opts_.weighting == "steps" ? static_cast<double>(steps)
                                                  : 1.0;
    {
      torch::NoGradGuard no_grad;
      torch::Tensor delta = msg.narrow(0, 0, seg.size);  // p (theta - theta_w)
      torch::sub_out(delta, global_.narrow(0, seg.begin, seg.size),
                     flat_->params_flat().narrow(0, seg.begin, seg.size));
      delta.mul_(p);
      if (bufs > 0) {  // p buffers
        flatten_into(buffers_, msg.narrow(0, msg_at.buf, bufs));
        msg.narrow(0, msg_at.buf, bufs).mul_(p);
      }
      msg[msg_at.w] = p;
    }
    if (opts_.server_transport && me != 0) {
      TraceSpan span("client_update_send", "comm");
      ctx.comm.send(msg, 0, client);
    } else {
      absorb(msg);
    }
  }

  if (!opts_.server_transport) {
    TraceSpan span("aggregate_all_reduce", "comm");
    ctx.comm.all_reduce(pack);
  } else if (me == 0) {
    TraceSpan span("aggregate_receive", "comm");
    for (size_t j = 0; j < sampled_.size(); ++j) {
      if (ranks[j] == 0) continue;
      ctx.comm.recv(msg, ranks[j], sampled_[j]);
      absorb(msg);
    }
  }
  if (!opts_.server_transport || me == 0) {
    TraceSpan span("server_step", "optimizer");
    torch::NoGradGuard no_grad;
    const double w = pack[pack_at.w].item<double>();
    torch::Tensor delta = pack.narrow(0, 0, seg.size).div_(w);
    if (bufs > 0) torch::div_out(global_buffers_, pack.narrow(0, pack_at.buf, bufs), w);
    torch::Tensor mask;
    if (opts_.gma) {
      const double q =
          opts_.gma_options.uniform_sign_weights ? static_cast<double>(sampled_.size()) : w;
      mask = gma_mask(pack.narrow(0, pack_at.g, seg.size), q, opts_.gma_options);
      if (!opts_.gma_options.post_opt) {
        delta.mul_(mask);
        mask = torch::Tensor();
      }
    }
    torch::Tensor theta = global_.narrow(0, seg.begin, seg.size);
    (head_only ? *server_head_ : *server_all_).step(theta, delta, mask);
  }
  if (opts_.server_transport) {
    TraceSpan span("model_broadcast", "comm");
    torch::Tensor theta = global_.narrow(0, seg.begin, seg.size);
    if (bufs == 0) {
      ctx.comm.broadcast(theta, 0);
    } else {  // one message: theta and the buffers
      torch::Tensor all = torch::cat({theta, global_buffers_});
      ctx.comm.broadcast(all, 0);
      theta.copy_(all.narrow(0, 0, seg.size));
      global_buffers_.copy_(all.narrow(0, seg.size, bufs));
    }
  }
  load_global(seg, bufs > 0);
  count_traffic(sampled_, head_only);
  return report;
}

void Federated::load_global(const Segment& seg, bool with_buffers) {
  torch::NoGradGuard no_grad;
  flat_->params_flat().narrow(0, seg.begin, seg.size).copy_(global_.narrow(0, seg.begin, seg.size));
  if (with_buffers) unflatten_from(global_buffers_, buffers_);
}

StepReport Federated::train_client(Context& ctx, int64_t client, bool head_only, int64_t* steps) {
  const Segment seg = head_only ? head_ : Segment{0, flat_->numel()};
  load_global(seg, !head_only);
  std::vector<ParamSlot> slots;
  for (ParamSlot& s : param_slots(ctx.model->named_params(), ctx.config.optimizer)) {
    const bool in_head = head_only && (s.param.is_same(last_->head()->weight) ||
                                       s.param.is_same(last_->head()->bias));
    if (!head_only || in_head) slots.push_back(std::move(s));
  }
  std::unique_ptr<Optimizer> opt = ctx.make_optimizer(std::move(slots));
  if (head_only) {
    last_->set_features_training(false);
    last_->head()->train();
  } else {
    ctx.model->train();
  }
  const Dataset& data = ctx.batches.dataset();
  const std::vector<int64_t>& idx = partition_.indices[client];
  const int64_t n = static_cast<int64_t>(idx.size());
  const int64_t batch = ctx.config.data.batch_size;
  const int64_t total =
      opts_.local_steps > 0 ? opts_.local_steps : opts_.local_epochs * ceil_div(n, batch);
  torch::Tensor features =
      head_only && opts_.cache_features ? client_features(ctx, client) : torch::Tensor();
  const torch::Tensor all_idx = torch::tensor(idx, torch::kLong);
  CounterRng rng(rng_key(seed_, kShufflePurpose, static_cast<uint64_t>(ctx.step),
                         static_cast<uint64_t>(client)));
  std::vector<int64_t> order(static_cast<size_t>(n));
  StepReport report;
  int64_t taken = 0, pos = n;
  torch::Tensor grad_seg = flat_->grads_flat().narrow(0, seg.begin, seg.size);
  torch::Tensor param_seg = flat_->params_flat().narrow(0, seg.begin, seg.size);
  torch::Tensor theta_seg = global_.narrow(0, seg.begin, seg.size);
  while (taken < total) {
    if (pos >= n) {  // a new epoch over the client's examples
      for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
      rng.shuffle(order);
      pos = 0;
    }
    const int64_t b = std::min(batch, n - pos);
    const torch::Tensor local = torch::tensor(
        std::vector<int64_t>(order.begin() + pos, order.begin() + pos + b), torch::kLong);
    pos += b;
    flat_->grads_flat().zero_();
    torch::Tensor logits, targets;
    if (head_only) {
      targets = data.targets.index_select(0, all_idx.index_select(0, local));
      torch::Tensor f;
      if (features.defined()) {
        f = features.index_select(0, local);
      } else {
        torch::NoGradGuard no_grad;
        f = last_->features(
            take_indices(data, all_idx.index_select(0, local), ctx.config.data.normalize).inputs);
      }
      logits = last_->head()->forward(f);
    } else {
      MicroBatch mb = take_indices(data, all_idx.index_select(0, local), ctx.config.data.normalize);
      targets = mb.targets;
      logits = ctx.model->forward(mb.inputs);
    }
    torch::Tensor loss = loss_of(logits, targets);
    loss.backward();
    if (opts_.prox_mu > 0) {  // FedProx: the gradient of (mu / 2) ||w - theta||^2
      torch::NoGradGuard no_grad;
      grad_seg.add_(param_seg - theta_seg, opts_.prox_mu);
    }
    apply_update(ctx, *flat_, *opt);
    report += StepReport{loss.item<double>(), b, 1};
    ++taken;
  }
  *steps = taken;
  return report;
}

torch::Tensor Federated::client_features(Context& ctx, int64_t client) {
  const Dataset& data = ctx.batches.dataset();
  if (!feature_cache_.defined()) {
    feature_cache_ = torch::empty({data.size(), last_->feature_width()}, global_.scalar_type());
    feature_ready_ = torch::zeros({static_cast<int64_t>(partition_.indices.size())}, torch::kBool);
  }
  const torch::Tensor idx = torch::tensor(partition_.indices[client], torch::kLong);
  if (!feature_ready_[client].item<bool>()) {
    torch::NoGradGuard no_grad;
    last_->set_features_training(false);
    const int64_t chunk = ctx.config.data.eval_batch_size;
    for (int64_t s = 0; s < idx.numel(); s += chunk) {
      const torch::Tensor part = idx.narrow(0, s, std::min(chunk, idx.numel() - s));
      feature_cache_.index_copy_(
          0, part, last_->features(take_indices(data, part, ctx.config.data.normalize).inputs));
    }
    feature_ready_[client] = true;
  }
  return feature_cache_.index_select(0, idx);
}

StepReport Federated::ncm_round(Context& ctx) {
  torch::NoGradGuard no_grad;
  const Dataset& data = ctx.batches.dataset();
  const int64_t classes = last_->classes(), width = last_->feature_width();
  torch::Tensor sums = torch::zeros({classes, width + 1}, torch::kFloat64);
  const std::vector<int64_t>& ids = partition_.train_ids;
  const std::vector<int64_t> ranks =
      place_clients(ids, sizes_, ctx.comm.world_size(), opts_.placement);
  ctx.model->eval();
  StepReport report;
  const int64_t chunk = ctx.config.data.eval_batch_size;
  for (size_t j = 0; j < ids.size(); ++j) {
    if (ranks[j] != ctx.comm.rank()) continue;
    const torch::Tensor idx = torch::tensor(partition_.indices[ids[j]], torch::kLong);
    for (int64_t s = 0; s < idx.numel(); s += chunk) {
      const int64_t b = std::min(chunk, idx.numel() - s);
      MicroBatch mb = take_indices(data, idx.narrow(0, s, b), ctx.config.data.normalize);
      const torch::Tensor f = last_->features(mb.inputs).to(torch::kFloat64);
      sums.narrow(1, 0, width).index_add_(0, mb.targets, f);
      sums.narrow(1, width, 1).index_add_(0, mb.targets, torch::ones({b, 1}, torch::kFloat64));
      report.samples += b;
    }
  }
  {
    TraceSpan span("class_sums_all_reduce", "comm");
    ctx.comm.all_reduce(sums);
  }
  missing_classes_ = static_cast<int64_t>(
      set_ncm_head(last_->head(), sums.narrow(1, 0, width), sums.select(1, width), opts_.ncm)
          .size());
  global_.narrow(0, head_.begin, head_.size)
      .copy_(flat_->params_flat().narrow(0, head_.begin, head_.size));
  ctx.model->train();
  // FL traffic: every training client receives f and sends its sums and counts once.
  const int64_t elem = global_.element_size();
  for (int64_t id : ids) {
    fl_down_ += (flat_->numel() - head_.size + global_buffers_.numel()) * elem;
    fl_up_ += sums.numel() * sums.element_size();
    has_backbone_[static_cast<size_t>(id)] = 1;
  }
  return report;
}

void Federated::count_traffic(const std::vector<int64_t>& clients, bool head_only) {
  const int64_t elem = global_.element_size();
  const int64_t all = flat_->numel() + global_buffers_.numel();
  for (int64_t id : clients) {
    auto& has = has_backbone_[static_cast<size_t>(id)];
    if (head_only) {
      fl_down_ += (has ? 0 : all - head_.size) * elem + head_.size * elem;
      fl_up_ += (head_.size + 1) * elem;
    } else {
      fl_down_ += all * elem;
      fl_up_ += (all + 1) * elem;
    }
    has = 1;
  }
}

void Federated::check_replicas(Context& ctx) {
  const int64_t world = ctx.comm.world_size();
  if (world == 1) return;
  torch::Tensor sum = global_.to(torch::kFloat64).sum().reshape({1});
  std::vector<torch::Tensor> all;
  for (int64_t r = 0; r < world; ++r) all.push_back(torch::empty({1}, torch::kFloat64));
  ctx.comm.all_gather(all, sum);
  for (int64_t r = 1; r < world; ++r)
    if (!torch::equal(all[r], all[0]))
      throw Error(
          fmt::format("federated: the global model of rank {} differs from rank 0's after "
                      "round {} (checksums {} and {})",
                      r, ctx.step, all[r].item<double>(), all[0].item<double>()));
}

std::vector<std::pair<std::string, double>> Federated::probe(Context& ctx, bool last) {
  std::vector<std::pair<std::string, double>> figures = {
      {"fl_down_bytes", static_cast<double>(fl_down_)},
      {"fl_up_bytes", static_cast<double>(fl_up_)}};
  const int64_t heldout = static_cast<int64_t>(partition_.heldout_ids.size());
  if (!opts_.heldout_eval || heldout == 0) return figures;
  torch::NoGradGuard no_grad;
  const bool was_training = ctx.model->is_training();
  ctx.model->eval();
  const Dataset& data = ctx.batches.dataset();
  torch::Tensor stats = torch::zeros({heldout, 3}, torch::kFloat64);  // correct, loss sum, n
  const int64_t chunk = ctx.config.data.eval_batch_size;
  for (int64_t j = ctx.comm.rank(); j < heldout; j += ctx.comm.world_size()) {
    const torch::Tensor idx =
        torch::tensor(partition_.indices[partition_.heldout_ids[j]], torch::kLong);
    for (int64_t s = 0; s < idx.numel(); s += chunk) {
      const int64_t b = std::min(chunk, idx.numel() - s);
      MicroBatch mb = take_indices(data, idx.narrow(0, s, b), ctx.config.data.normalize);
      const torch::Tensor logits = ctx.model->forward(mb.inputs);
      const double loss =
          torch::nn::functional::cross_entropy(
              logits.to(torch::kFloat64), mb.targets,
              torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
              .item<double>();
      stats[j][0].add_(logits.argmax(1).eq(mb.targets).sum().item<double>());
      stats[j][1].add_(loss);
      stats[j][2].add_(static_cast<double>(b));
    }
  }
  ctx.eval_channel().all_reduce(stats);
  ctx.model->train(was_training);
  const torch::Tensor n = stats.select(1, 2);
  const double examples = n.sum().item<double>();
  figures.push_back({"heldout_accuracy", stats.select(1, 0).sum().item<double>() / examples});
  figures.push_back(
      {"heldout_worst_accuracy", (stats.select(1, 0) / n.clamp_min(1)).min().item<double>()});
  figures.push_back({"heldout_loss", stats.select(1, 1).sum().item<double>() / examples});
  return figures;
}

ClientHistogram Federated::client_histogram() const {
  ClientHistogram h;
  const int64_t* y = labels_.data_ptr<int64_t>();
  for (size_t id = 0; id < partition_.indices.size(); ++id) {
    h.ids.push_back(static_cast<int64_t>(id));
    h.heldout.push_back(std::binary_search(partition_.heldout_ids.begin(),
                                           partition_.heldout_ids.end(), static_cast<int64_t>(id)));
    std::vector<int64_t> counts(static_cast<size_t>(classes_), 0);
    for (int64_t i : partition_.indices[id]) ++counts[static_cast<size_t>(y[i])];
    h.counts.push_back(std::move(counts));
  }
  return h;
}

std::vector<std::pair<std::string, ServerOptimizer*>> Federated::server_optimizers() const {
  std::vector<std::pair<std::string, ServerOptimizer*>> all;
  if (server_all_) all.emplace_back("fed.server_all.", server_all_.get());
  if (server_head_) all.emplace_back("fed.server_head.", server_head_.get());
  return all;
}

void Federated::save(Archive& archive) const {
  archive.put("fed.global", global_);
  archive.put("fed.buffers", global_buffers_);
  for (const auto& [prefix, opt] : server_optimizers())
    for (const auto& [name, t] : opt->state()) archive.put(prefix + name, t);
  archive.put("fed.fl_down_bytes", fl_down_);
  archive.put("fed.fl_up_bytes", fl_up_);
  archive.put("fed.has_backbone",
              torch::tensor(std::vector<int64_t>(has_backbone_.begin(), has_backbone_.end()),
                            torch::kLong));
}

void Federated::load(const Archive& archive) {
  archive.copy_into("fed.global", global_);
  archive.copy_into("fed.buffers", global_buffers_);
  for (const auto& [prefix, opt] : server_optimizers())
    for (auto& [name, t] : opt->state()) archive.copy_into(prefix + name, t);
  fl_down_ = archive.integer("fed.fl_down_bytes");
  fl_up_ = archive.integer("fed.fl_up_bytes");
  const torch::Tensor has = archive.tensor("fed.has_backbone");
  if (has.numel() != static_cast<int64_t>(has_backbone_.size()))
    throw CheckpointError("--resume: the checkpoint has another number of clients");
  for (int64_t i = 0; i < has.numel(); ++i)
    has_backbone_[static_cast<size_t>(i)] = has[i].item<int64_t>() != 0;
}

AlgorithmReport Federated::report() const {
  AlgorithmReport r;
  const int64_t elem = global_.element_size();
  const int64_t params = flat_->padded_numel() * elem;
  r.memory = {{"parameters", params},
              {"gradients", params},
              {"global_model", (global_.numel() + global_buffers_.numel()) * elem},
              {"aggregate", pack_numel_ * elem * 2},
              {"server_state", ((server_all_ ? server_all_->state_numel() : 0) +
                                (server_head_ ? server_head_->state_numel() : 0)) *
                                   elem},
              {"feature_cache", feature_cache_.defined() ? feature_cache_.nbytes() : 0}};
  r.counts = {{"fl_down_bytes", fl_down_},
              {"fl_up_bytes", fl_up_},
              {"clients", static_cast<int64_t>(partition_.train_ids.size())},
              {"heldout_clients", static_cast<int64_t>(partition_.heldout_ids.size())},
              {"ncm_missing_classes", missing_classes_}};
  return r;
}

}  // namespace desync
