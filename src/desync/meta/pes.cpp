#include "desync/meta/pes.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <cmath>
#include <utility>

#include "desync/core/error.h"

namespace desync {

namespace {

// splitmix64's finaliser: a bijective 64-bit mix.
uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The seed of task `task`'s draws at outer step `step`.
uint64_t draw_key(uint64_t seed, int64_t task, int64_t step) {
  return mix(mix(mix(seed) ^ static_cast<uint64_t>(task)) ^ static_cast<uint64_t>(step));
}

std::string slot_prefix(int64_t task) { return fmt::format("pes.task{}.", task); }

}  // namespace

struct PesEstimator::Slot {
  int64_t task = 0;  // i
  std::unique_ptr<PesTask> problem;
  torch::Tensor xi;  // [D] float64
  int64_t t = 0;
  int64_t horizon = 0;
  bool started = false;  // reset at least once
};

PesEstimator::PesEstimator(const PesOptions& options, int64_t dim, int64_t rank, int64_t world,
                           const std::function<std::unique_ptr<PesTask>(int64_t task)>& make_task)
    : options_(options), dim_(dim), rank_(rank), world_(world) {
  if (options.tasks < 1) throw ConfigError(fmt::format("pes tasks = {}; use >= 1", options.tasks));
  if (options.unroll < 1)
    throw ConfigError(fmt::format("pes unroll = {}; use >= 1 inner steps", options.unroll));
  if (!(options.sigma > 0.0) || !std::isfinite(options.sigma))
    throw ConfigError(fmt::format("pes sigma = {}; use a finite value > 0", options.sigma));
  if (dim < 1) throw ConfigError(fmt::format("pes dim = {}; use >= 1", dim));
  if (world < 1 || rank < 0 || rank >= world)
    throw ConfigError(fmt::format("pes rank {} of world {} is out of range", rank, world));
  for (int64_t i = rank; i < options.tasks; i += world) {
    Slot slot;
    slot.task = i;
    slot.problem = make_task(i);
    if (!slot.problem) throw ConfigError(fmt::format("pes make_task({}) returned no task", i));
    slot.xi = torch::zeros({dim}, torch::kFloat64);
    slots_.push_back(std::move(slot));
  }
}

PesEstimator::~PesEstimator() = default;
PesEstimator::PesEstimator(PesEstimator&&) noexcept = default;
PesEstimator& PesEstimator::operator=(PesEstimator&&) noexcept = default;

torch::Tensor PesEstimator::gradient(const torch::Tensor& theta, int64_t step, Communicator& comm,
                                     PesStepReport* report) {
  if (theta.dim() != 1 || theta.numel() != dim_)
    throw Error(
        fmt::format("pes theta has shape {}; expected [{}]", c10::str(theta.sizes()), dim_));
  if (comm.world_size() != world_ || comm.rank() != rank_)
    throw Error(fmt::format("pes estimator for rank {} of {} given a communicator of rank {} of {}",
                            rank_, world_, comm.rank(), comm.world_size()));
  torch::NoGradGuard no_grad;
  const torch::Tensor theta64 = theta.to(torch::kCPU, torch::kFloat64);
  const int64_t n = options_.tasks;

  // Row i = [xi_i (L_i^+ - L_i^-) | (L_i^+ + L_i^-) / 2 | reset_i]; other ranks' rows stay 0.
  torch::Tensor rows = torch::zeros({n, dim_ + 2}, torch::kFloat64);
  auto cells = rows.accessor<double, 2>();
  for (Slot& s : slots_) {
    at::Generator gen =
        at::make_generator<at::CPUGeneratorImpl>(draw_key(options_.seed, s.task, step));
    const uint64_t problem_seed = gen.get<at::CPUGeneratorImpl>()->random64();
    const bool reset = !s.started || s.t >= s.horizon;
    if (reset) {
      s.horizon = s.problem->reset(problem_seed);
      if (s.horizon < 1)
        throw Error(fmt::format("pes task {} returned horizon {}; a horizon is >= 1 inner step",
                                s.task, s.horizon));
      s.xi.zero_();
      s.t = 0;
      s.started = true;
    }
    const torch::Tensor eps = torch::randn({dim_}, gen, torch::kFloat64).mul_(options_.sigma);
    const double plus =
        s.problem->unroll(+1, (theta64 + eps).to(theta.scalar_type()), options_.unroll);
    const double minus =
        s.problem->unroll(-1, (theta64 - eps).to(theta.scalar_type()), options_.unroll);
    if (options_.persistent)
      s.xi.add_(eps);
    else
      s.xi.copy_(eps);
    s.t += options_.unroll;
    rows[s.task].narrow(0, 0, dim_).copy_(s.xi).mul_(plus - minus);
    cells[s.task][dim_] = 0.5 * (plus + minus);
    cells[s.task][dim_ + 1] = reset ? 1.0 : 0.0;
  }
  comm.all_reduce(rows);

  // Summed in task order, so the result does not depend on which rank held which task.
  torch::Tensor g = rows[0].narrow(0, 0, dim_).clone();
  for (int64_t i = 1; i < n; ++i) g.add_(rows[i].narrow(0, 0, dim_));
  g.mul_(1.0 / (2.0 * static_cast<double>(n) * options_.sigma * options_.sigma));
  if (report != nullptr) {
    double loss = 0.0, resets = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      loss += cells[i][dim_];
      resets += cells[i][dim_ + 1];
    }
    report->mean_loss = loss / static_cast<double>(n);
    report->resets = std::llround(resets);
  }
  return g;
}

void PesEstimator::save(Archive& archive) const {
  archive.put("pes.tasks", options_.tasks);
  archive.put("pes.dim", dim_);
  for (const Slot& s : slots_) {
    const std::string prefix = slot_prefix(s.task);
    archive.put(prefix + "xi", s.xi);
    archive.put(prefix + "t", s.t);
    archive.put(prefix + "horizon", s.horizon);
    archive.put(prefix + "started", static_cast<int64_t>(s.started));
    s.problem->save(archive, prefix + "inner.");
  }
}

void PesEstimator::load(const Archive& archive) {
  if (archive.integer("pes.tasks") != options_.tasks || archive.integer("pes.dim") != dim_)
    throw CheckpointError(fmt::format(
        "checkpoint holds PES state for {} tasks of dimension {}, expected {} of dimension {}",
        archive.integer("pes.tasks"), archive.integer("pes.dim"), options_.tasks, dim_));
  for (Slot& s : slots_) {
    const std::string prefix = slot_prefix(s.task);
    archive.copy_into(prefix + "xi", s.xi);
    s.t = archive.integer(prefix + "t");
    s.horizon = archive.integer(prefix + "horizon");
    s.started = archive.integer(prefix + "started") != 0;
    s.problem->load(archive, prefix + "inner.");
  }
}

}  // namespace desync
