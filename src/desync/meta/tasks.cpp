#include "desync/meta/tasks.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <algorithm>
#include <mutex>
#include <utility>

#include "desync/core/error.h"
#include "desync/data/batch_source.h"
#include "desync/data/partition.h"
#include "desync/models/mup.h"
#include "desync/models/staged_model.h"
#include "desync/optim/mulo.h"

namespace desync {
namespace {

// Purpose tags of the generators keyed by a task's reset seed (data/partition.h rng_key).
constexpr uint64_t kHorizonDraw = 0x686f72697a6f6e;  // "horizon"
constexpr uint64_t kWidthDraw = 0x7769647468;        // "width"
constexpr uint64_t kInitDraw = 0x696e6974;           // "init"
constexpr uint64_t kBatchDraw = 0x6261746368;        // "batch"

size_t member_index(int sign) {
  if (sign != 1 && sign != -1)
    throw Error(fmt::format("a PES task's member is +1 or -1, not {}", sign));
  return sign > 0 ? 0 : 1;
}

const char* member_prefix(size_t i) { return i == 0 ? "plus." : "minus."; }

// Restores the global torch RNG's state on scope exit.
class KeepGlobalRng {
 public:
  KeepGlobalRng() : gen_(at::detail::getDefaultCPUGenerator()) {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    state_ = gen_.get_state();
  }
  ~KeepGlobalRng() {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_state(state_);
  }

 private:
  at::Generator gen_;
  torch::Tensor state_;
};

void check_theta(const torch::Tensor& theta, int64_t dim) {
  if (theta.dim() != 1 || theta.numel() != dim)
    throw Error(
        fmt::format("meta-parameters of shape {}, expected [{}]", c10::str(theta.sizes()), dim));
}

}  // namespace

int64_t draw_horizon(uint64_t seed, int64_t horizon_min, int64_t horizon_max) {
  if (horizon_min < 1 || horizon_max < horizon_min)
    throw ConfigError(fmt::format("meta: horizons [{}, {}] must satisfy 1 <= min <= max",
                                  horizon_min, horizon_max));
  if (horizon_min == horizon_max) return horizon_min;
  CounterRng rng(rng_key(seed, kHorizonDraw));
  const double lo = std::log(static_cast<double>(horizon_min));
  const double hi = std::log(static_cast<double>(horizon_max));
  const auto h = static_cast<int64_t>(std::llround(std::exp(lo + rng.uniform() * (hi - lo))));
  return std::clamp(h, horizon_min, horizon_max);
}

// ---------------------------------------------------------------------------------------------
// QuadraticTask

QuadraticTask::QuadraticTask(int64_t horizon_min, int64_t horizon_max)
    : horizon_min_(horizon_min), horizon_max_(horizon_max) {}

int64_t QuadraticTask::reset(uint64_t seed) {
  x_ = {kQuadraticX0, kQuadraticX0};
  return draw_horizon(seed, horizon_min_, horizon_max_);
}

double QuadraticTask::unroll(int sign, const torch::Tensor& theta, int64_t steps) {
  check_theta(theta, 1);
  const double lr = std::exp(theta.to(torch::kFloat64).item<double>());
  double& x = x_[member_index(sign)];
  double sum = 0.0;
  for (int64_t k = 0; k < steps; ++k) {
    x -= lr * kQuadraticA * x;
    sum += 0.5 * kQuadraticA * x * x;
  }
  return sum / static_cast<double>(steps);
}

void QuadraticTask::save(Archive& archive, const std::string& prefix) const {
  for (size_t i = 0; i < 2; ++i) archive.put(prefix + member_prefix(i) + "x", x_[i]);
}

void QuadraticTask::load(const Archive& archive, const std::string& prefix) {
  for (size_t i = 0; i < 2; ++i) x_[i] = archive.real(prefix + member_prefix(i) + "x");
}

double QuadraticTask::x(int sign) const { return x_[member_index(sign)]; }

// ---------------------------------------------------------------------------------------------
// MlpTask

struct MlpTask::Member {
  StagedModel model{nullptr};
  std::unique_ptr<FlatParameters> flat;  // binds every parameter's gradient to a flat buffer
  std::unique_ptr<Mulo> optimizer;
  int64_t step = 0;  // inner steps since the reset
};

MlpTask::MlpTask(const Config& cfg, const Dataset& train)
    : model_cfg_(cfg.model),
      optimizer_cfg_(cfg.optimizer),
      data_cfg_(cfg.data),
      meta_cfg_(cfg.meta),
      train_(train) {}

MlpTask::~MlpTask() = default;

void MlpTask::build(uint64_t seed) {
  seed_ = seed;
  CounterRng pick(rng_key(seed, kWidthDraw));
  width_ = meta_cfg_.widths.at(
      static_cast<size_t>(pick.below(static_cast<int64_t>(meta_cfg_.widths.size()))));
  ModelConfig model_cfg = model_cfg_;
  std::fill(model_cfg.hidden.begin(), model_cfg.hidden.end(), width_);
  const ModelInput input{train_.example_shape(), train_.num_classes};
  MuloOptions options;
  options.alpha1 = optimizer_cfg_.lopt_alpha1;
  options.alpha2 = optimizer_cfg_.lopt_alpha2;
  options.clip = optimizer_cfg_.lopt_clip;
  const torch::Tensor no_params = torch::zeros({MuloParams::numel()});  // set_params() per unroll

  const KeepGlobalRng keep;  // the members' seeding does not disturb the global RNG
  for (std::unique_ptr<Member>& m : members_) {
    torch::manual_seed(rng_key(seed, kInitDraw));  // the same initial weights for both members
    m = std::make_unique<Member>();
    m->model = make_model(model_cfg, input);
    m->flat = std::make_unique<FlatParameters>(m->model->parameters_of(0, m->model->num_stages()));
    std::vector<ParamSlot> slots = param_slots(m->model->named_params(), optimizer_cfg_);
    set_mup_lr_scales(model_cfg, slots);
    m->optimizer =
        std::make_unique<Mulo>(std::move(slots), MuloParams::unflatten(no_params), options);
  }
  ready_ = true;
}

int64_t MlpTask::reset(uint64_t seed) {
  build(seed);
  return draw_horizon(seed, meta_cfg_.horizon_min, meta_cfg_.horizon_max);
}

double MlpTask::unroll(int sign, const torch::Tensor& theta, int64_t steps) {
  if (!ready_) throw Error("MlpTask::unroll before reset");
  check_theta(theta, MuloParams::numel());
  torch::AutoGradMode enable_grad(true);  // the caller (PesEstimator) may run under NoGradGuard
  Member& m = *members_[member_index(sign)];
  m.optimizer->set_params(MuloParams::unflatten(theta.to(torch::kFloat32).contiguous()));
  const int64_t batch = data_cfg_.batch_size;
  const int64_t n = train_.size();
  torch::Tensor indices = torch::empty({batch}, torch::kInt64);
  double sum = 0.0;
  for (int64_t k = 0; k < steps; ++k, ++m.step) {
    CounterRng rng(rng_key(seed_, kBatchDraw, static_cast<uint64_t>(m.step)));
    auto idx = indices.accessor<int64_t, 1>();
    for (int64_t b = 0; b < batch; ++b) idx[b] = rng.below(n);
    const MicroBatch mb = take_indices(train_, indices, data_cfg_.normalize);
    m.flat->grads_flat().zero_();
    torch::Tensor loss =
        torch::nn::functional::cross_entropy(m.model->forward(mb.inputs), mb.targets);
    loss.backward();
    m.optimizer->step(0.0);
    const double l = loss.item<double>();
    sum += std::isfinite(l) ? std::min(l, kMetaLossCap) : kMetaLossCap;
  }
  return sum / static_cast<double>(steps);
}

void MlpTask::save(Archive& archive, const std::string& prefix) const {
  archive.put(prefix + "ready", static_cast<int64_t>(ready_));
  if (!ready_) return;
  archive.put(prefix + "seed", static_cast<int64_t>(seed_));
  for (size_t i = 0; i < 2; ++i) {
    Member& m = *members_[i];
    const std::string p = prefix + member_prefix(i);
    archive.put(p + "step", m.step);
    for (const auto& [name, t] : m.model->named_params()) archive.put(p + "param." + name, t);
    for (const auto& [name, t] : m.optimizer->state()) archive.put(p + "opt." + name, t);
  }
}

void MlpTask::load(const Archive& archive, const std::string& prefix) {
  if (archive.integer(prefix + "ready") == 0) {
    ready_ = false;
    return;
  }
  build(static_cast<uint64_t>(archive.integer(prefix + "seed")));
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < 2; ++i) {
    Member& m = *members_[i];
    const std::string p = prefix + member_prefix(i);
    m.step = archive.integer(p + "step");
    for (const auto& [name, t] : m.model->named_params()) archive.copy_into(p + "param." + name, t);
    for (const auto& [name, t] : m.optimizer->state()) archive.copy_into(p + "opt." + name, t);
  }
}

int64_t MlpTask::width() const { return ready_ ? width_ : 0; }

std::vector<std::pair<std::string, torch::Tensor>> MlpTask::named_params(int sign) const {
  if (!ready_) return {};
  return members_[member_index(sign)]->model->named_params();
}

// ---------------------------------------------------------------------------------------------

int64_t meta_dim(const Config& cfg) {
  return cfg.meta.task == "quadratic" ? 1 : MuloParams::numel();
}

void validate_meta_task(const Config& cfg) {
  if (cfg.meta.task != "mlp") return;
  if (cfg.model.name != "mlp")
    throw ConfigError(fmt::format(
        "meta.task = \"mlp\" meta-trains on MLPs: set model.name = \"mlp\" (not \"{}\")",
        cfg.model.name));
  const std::string& d = cfg.data.dataset;
  if (d == "text" || d == "gcide" || d == "words")
    throw ConfigError(fmt::format(
        "meta.task = \"mlp\" needs a labelled image or feature dataset, not data.dataset = "
        "\"{}\"",
        d));
}

std::unique_ptr<PesTask> make_meta_task(const Config& cfg, const Dataset* train) {
  if (cfg.meta.task == "quadratic")
    return std::make_unique<QuadraticTask>(cfg.meta.horizon_min, cfg.meta.horizon_max);
  validate_meta_task(cfg);
  if (train == nullptr) throw Error("make_meta_task: an mlp task needs the training split");
  return std::make_unique<MlpTask>(cfg, *train);
}

}  // namespace desync
