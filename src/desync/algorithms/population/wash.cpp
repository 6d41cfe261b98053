#include "desync/algorithms/population/wash.h"

#include <ATen/CPUGeneratorImpl.h>

#include <map>

#include "desync/algorithms/registry.h"
#include "desync/core/error.h"
#include "desync/core/trace.h"
#include "desync/data/batch_source.h"

namespace desync {

std::unique_ptr<Algorithm> make_wash(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  Population::Options options = population_options(r, "shared");
  const double p = r.get("p", 0.01, 0.0, 1.0);
  const int64_t every = r.get("shuffle_every", int64_t{1}, int64_t{1});
  const bool by_layer = r.get_choice("depth", "tensor", {"tensor", "layer"}) == "layer";
  const bool linear = r.get_choice("decay", "linear", {"linear", "none"}) == "linear";
  const bool state = r.get("shuffle_optimizer_state", false);
  r.finish();
  return std::make_unique<Wash>(options, p, every, by_layer, linear, state);
}

std::vector<double> wash_probabilities(const std::vector<int64_t>& depth, double p, bool linear) {
  int64_t deepest = 0;
  for (int64_t d : depth) deepest = std::max(deepest, d);
  std::vector<double> out;
  for (int64_t d : depth)
    out.push_back(!linear || deepest == 0
                      ? p
                      : p * (1.0 - static_cast<double>(d) / static_cast<double>(deepest)));
  return out;
}

ShufflePlan wash_plan(uint64_t seed, int64_t round, const std::vector<int64_t>& sizes,
                      const std::vector<double>& probabilities, int64_t world, int64_t rank) {
  torch::NoGradGuard no_grad;
  ShufflePlan plan;
  std::vector<torch::Tensor> sources, destinations;
  for (size_t l = 0; l < sizes.size(); ++l) {
    if (probabilities[l] <= 0.0 || sizes[l] == 0) {
      plan.index.push_back(torch::empty({0}, torch::kInt64));
      continue;
    }
    // RNG(seed, round, l): the same stream on every rank.
    const uint64_t key =
        mix64(mix64(seed) ^ mix64(static_cast<uint64_t>(round) * 0x9E3779B97F4A7C15ULL + l));
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(key);
    torch::Tensor mask =
        torch::empty({sizes[l]}, torch::kFloat32).bernoulli_(probabilities[l], gen);
    torch::Tensor index = mask.nonzero().reshape({-1});
    // pi_c = argsort of N uniforms: perm[c][k] = pi_c(k), the member that k takes c from.
    torch::Tensor perm =
        torch::rand({index.numel(), world}, gen, torch::kFloat64).argsort(int64_t{1});
    plan.index.push_back(index);
    sources.push_back(perm.select(1, rank).contiguous());
    destinations.push_back(perm.eq(rank).to(torch::kInt64).argmax(1));
  }
  plan.source = sources.empty() ? torch::empty({0}, torch::kInt64) : torch::cat(sources);
  plan.destination =
      destinations.empty() ? torch::empty({0}, torch::kInt64) : torch::cat(destinations);
  return plan;
}

namespace {

constexpr int64_t kWashTag = 0x57;  // the shuffle's messages

// Positions (in selected-coordinate order) whose rank in `ranks` is not `me`, ordered by that
// rank (stably: coordinate order within a rank), and the count per rank (0 for `me`).
std::pair<torch::Tensor, std::vector<int64_t>> grouped_by_rank(const torch::Tensor& ranks,
                                                               int64_t me, int64_t world) {
  torch::Tensor away = ranks.ne(me).nonzero().reshape({-1});
  torch::Tensor keys = ranks.index_select(0, away);
  auto [sorted, order] = keys.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
  torch::Tensor counts = torch::bincount(keys, {}, world);
  std::vector<int64_t> splits(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + world);
  return {away.index_select(0, order), splits};
}

}  // namespace

void apply_shuffle(const ShufflePlan& plan, const std::vector<torch::Tensor>& tensors,
                   Communicator& comm) {
  if (plan.selected() == 0 || comm.world_size() == 1) return;
  torch::NoGradGuard no_grad;
  const int64_t me = comm.rank(), world = comm.world_size();
  std::vector<torch::Tensor> picked;
  for (size_t l = 0; l < tensors.size(); ++l)
    picked.push_back(tensors[l].view({-1}).index_select(0, plan.index[l]));
  torch::Tensor values = torch::cat(picked);
  auto [send_at, send_splits] = grouped_by_rank(plan.destination, me, world);
  auto [recv_at, recv_splits] = grouped_by_rank(plan.source, me, world);
  torch::Tensor send = values.index_select(0, send_at);
  torch::Tensor received = torch::empty({recv_at.numel()}, values.options());
  // To each other worker, one message with the values it takes from this one (none when there
  // are none: both sides know the counts from the plan).
  std::vector<std::shared_ptr<Work>> pending;
  int64_t sent = 0, got = 0;
  for (int64_t k = 0; k < world; ++k) {
    if (recv_splits[k] > 0)
      pending.push_back(comm.recv_async(received.narrow(0, got, recv_splits[k]), k, kWashTag));
    if (send_splits[k] > 0)
      pending.push_back(comm.send_async(send.narrow(0, sent, send_splits[k]), k, kWashTag));
    got += recv_splits[k];
    sent += send_splits[k];
  }
  for (auto& w : pending) w->wait();
  values.index_copy_(0, recv_at, received);
  int64_t at = 0;
  for (size_t l = 0; l < tensors.size(); ++l) {
    const int64_t n = plan.index[l].numel();
    tensors[l].view({-1}).index_copy_(0, plan.index[l], values.narrow(0, at, n));
    at += n;
  }
}

void Wash::setup(Context& ctx) {
  member_ = std::make_unique<Member>(ctx, population());
  std::vector<int64_t> depth;
  std::map<std::string, int64_t> slot_of;
  std::string last_layer;
  for (auto& [name, t] : ctx.model->named_params()) {
    slot_of[name] = static_cast<int64_t>(params_.size());
    const std::string layer = name.substr(0, name.rfind('.'));
    const int64_t d = by_layer_ ? (params_.empty() ? 0 : depth.back() + (layer != last_layer))
                                : static_cast<int64_t>(params_.size());
    last_layer = layer;
    depth.push_back(d);
    params_.push_back(t);
    sizes_.push_back(t.numel());
  }
  probabilities_ = wash_probabilities(depth, p_, linear_);
  if (!shuffle_state_) return;
  // Per state kind ("momentum_buffer", "exp_avg", ...): each parameter's tensor of that kind.
  std::map<std::string, std::vector<torch::Tensor>> kinds;
  for (auto& [name, t] : member_->optimizer().state()) {
    const size_t dot = name.rfind('.');
    if (dot == std::string::npos) continue;  // "step"
    auto slot = slot_of.find(name.substr(0, dot));
    if (slot == slot_of.end() || t.numel() != sizes_[slot->second]) continue;
    auto& list = kinds[name.substr(dot + 1)];
    list.resize(params_.size());
    list[slot->second] = t;
  }
  for (auto& [kind, list] : kinds) {
    for (const torch::Tensor& t : list)
      if (!t.defined())
        throw ConfigError(
            "wash: shuffle_optimizer_state needs per-coordinate state for every "
            "parameter; the optimizer's '" +
            kind + "' is not");
    states_.push_back(list);
  }
}

StepReport Wash::step(Context& ctx) {
  StepReport report = member_->local_step(ctx);
  if ((ctx.step + 1) % every_ == 0) shuffle(ctx);
  return report;
}

void Wash::shuffle(Context& ctx) {
  TraceSpan span("wash_shuffle", "comm");
  const ShufflePlan plan = wash_plan(static_cast<uint64_t>(ctx.config.run.seed), ctx.step, sizes_,
                                     probabilities_, ctx.comm.world_size(), ctx.comm.rank());
  apply_shuffle(plan, params_, ctx.comm);
  for (const auto& state : states_) apply_shuffle(plan, state, ctx.comm);
  moved_ += plan.destination.ne(ctx.comm.rank()).sum().item<int64_t>();
  ++shuffles_;
}

AlgorithmReport Wash::report() const {
  return {.memory = member_->memory(),
          .counts = {{"shuffles", shuffles_}, {"shuffled_values_sent", moved_}},
          .eval_metrics = {{"consensus_distance", member_->spread()}}};
}

}  // namespace desync
