#include "desync/algorithms/population/papa.h"

#include <ATen/CPUGeneratorImpl.h>

#include "desync/algorithms/packing.h"
#include "desync/algorithms/registry.h"
#include "desync/core/trace.h"
#include "desync/data/batch_source.h"

namespace desync {

std::unique_ptr<Algorithm> make_papa(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  Population::Options options = population_options(r, "shared");
  const std::string v = r.get_choice("variant", "gradual", {"gradual", "all", "pair"});
  const int64_t ema_every = r.get("ema_every", int64_t{10}, int64_t{1});
  const double alpha = r.get("alpha", 0.99, 0.0, 1.0);
  const int64_t every_epochs = r.get("every_epochs", int64_t{5}, int64_t{1});
  const int64_t every_steps = r.get("every_steps", int64_t{0}, int64_t{0});
  r.finish();
  const Papa::Variant variant = v == "gradual" ? Papa::Variant::kGradual
                                : v == "all"   ? Papa::Variant::kAll
                                               : Papa::Variant::kPair;
  return std::make_unique<Papa>(options, variant, ema_every, alpha, every_epochs, every_steps);
}

std::vector<std::pair<int64_t, int64_t>> papa_pairs(uint64_t seed, int64_t round, int64_t world) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(
      mix64(mix64(seed ^ 0x50415041ULL) + static_cast<uint64_t>(round)));
  torch::Tensor sigma = torch::randperm(world, gen, torch::kInt64);
  auto s = sigma.accessor<int64_t, 1>();
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (int64_t k = 0; k < world; ++k) pairs.push_back({s[k], s[(k + 1) % world]});
  return pairs;
}

void Papa::setup(Context& ctx) {
  member_ = std::make_unique<Member>(ctx, population());
  next_epoch_ = every_epochs_;
}

StepReport Papa::step(Context& ctx) {
  StepReport report = member_->local_step(ctx);
  if (!due(ctx)) return report;
  TraceSpan span("papa_average", "comm");
  switch (variant_) {
    case Variant::kGradual:
      member_->mix_towards_average(ctx, ctx.comm, alpha_);
      break;
    case Variant::kAll:
      member_->mix_towards_average(ctx, ctx.comm, 0.0);
      break;
    case Variant::kPair:
      average_pair(ctx);
      break;
  }
  ++rounds_;
  return report;
}

bool Papa::due(Context& ctx) {
  if (variant_ == Variant::kGradual) return (ctx.step + 1) % ema_every_ == 0;
  if (every_steps_ > 0) return (ctx.step + 1) % every_steps_ == 0;
  // Every rank reads its shard of the same global batches: their epochs agree.
  if (ctx.batches.position().epoch < next_epoch_) return false;
  next_epoch_ += every_epochs_;
  return true;
}

void Papa::average_pair(Context& ctx) {
  torch::NoGradGuard no_grad;
  const int64_t me = ctx.comm.rank(), world = ctx.comm.world_size();
  const auto pairs = papa_pairs(static_cast<uint64_t>(ctx.config.run.seed), rounds_, world);
  // The member as one message: its parameters, then its float buffers.
  std::vector<torch::Tensor> parts = Member::float_buffers(ctx.model);
  parts.insert(parts.begin(), member_->params());
  torch::Tensor mine = pack(parts);
  // Slot 0 holds member pairs[me].first, slot 1 pairs[me].second (tags 0 and 1).
  std::vector<torch::Tensor> slot(2);
  std::vector<std::shared_ptr<Work>> pending;
  const std::pair<int64_t, int64_t>& want = pairs[me];
  for (int64_t s = 0; s < 2; ++s) {
    const int64_t from = s == 0 ? want.first : want.second;
    if (from == me) {
      slot[s] = mine;
    } else {
      slot[s] = torch::empty_like(mine);
      pending.push_back(ctx.comm.recv_async(slot[s], from, s));
    }
  }
  for (int64_t k = 0; k < world; ++k) {
    if (k == me) continue;
    if (pairs[k].first == me) pending.push_back(ctx.comm.send_async(mine, k, 0));
    if (pairs[k].second == me) pending.push_back(ctx.comm.send_async(mine, k, 1));
  }
  for (auto& w : pending) w->wait();
  unpack((slot[0] + slot[1]).div_(2.0), parts);
}

void Papa::save(Archive& archive) const {
  member_->save(archive);
  archive.put("papa.next_epoch", next_epoch_);
  archive.put("papa.rounds", rounds_);
}

void Papa::load(const Archive& archive) {
  member_->load(archive);
  next_epoch_ = archive.integer("papa.next_epoch");
  rounds_ = archive.integer("papa.rounds");
}

AlgorithmReport Papa::report() const {
  return {.memory = member_->memory(),
          .counts = {{"averagings", rounds_}},
          .eval_metrics = {{"consensus_distance", member_->spread()}}};
}

}  // namespace desync
