#include "desync/meta/meta_train.h"

#include <fmt/format.h>

#include <algorithm>
#include <deque>
#include <optional>

#include "desync/core/archive.h"
#include "desync/core/checkpoint.h"
#include "desync/core/error.h"
#include "desync/core/fault.h"
#include "desync/core/fs.h"
#include "desync/core/progress.h"
#include "desync/core/system.h"
#include "desync/data/dataset.h"
#include "desync/meta/pes.h"
#include "desync/meta/tasks.h"
#include "desync/optim/mulo.h"
#include "desync/optim/optimizer.h"
#include "desync/report/metrics.h"
#include "desync/train/trainer.h"
#include "desync/train/trainer_state.h"

namespace desync {
namespace {

constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8;  // the meta-optimizer's AdamW
constexpr size_t kRecentLosses = 10;                         // summary's mean_loss_last10

PesOptions pes_options(const Config& cfg) {
  PesOptions o;
  o.tasks = cfg.meta.tasks;
  o.unroll = cfg.meta.unroll;
  o.sigma = cfg.meta.sigma;
  o.persistent = cfg.meta.persistent;
  o.seed = static_cast<uint64_t>(cfg.run.seed);
  return o;
}

// One worker's meta-training: the estimator, theta and its AdamW, checkpoints and outputs.
class MetaRun {
 public:
  MetaRun(const Config& cfg, Communicator& comm, const MetaTrainOptions& opts)
      : cfg_(cfg),
        meta_(cfg.meta),
        comm_(comm),
        opts_(opts),
        dir_(run_dir_of(cfg)),
        leader_(comm.rank() == 0),
        data_(meta_.task == "mlp" ? load_dataset(cfg.data, static_cast<uint64_t>(cfg.run.seed))
                                  : DatasetSplits{}),
        pes_(pes_options(cfg), meta_dim(cfg), comm.rank(), comm.world_size(),
             [this](int64_t) { return make_meta_task(cfg_, &data_.train); }),
        theta_(initial_theta(cfg)),
        grad_(torch::zeros_like(theta_)),
        adamw_(make_adamw({ParamSlot{"theta", theta_, grad_}}, kBeta1, kBeta2, kEps)),
        store_(dir_ + "/checkpoints", comm.rank(), comm.world_size()),
        progress_(meta_.outer_steps, std::max<int64_t>(1, cfg.run.log_every), stderr_is_tty()) {}

  void resume();
  void train();
  nlohmann::json summary() const;

 private:
  void say(const std::string& line) {
    if (leader_ && opts_.show_progress) progress_.note(line);
  }
  bool agree_to_stop();
  void checkpoint();
  void write_lopt() const;
  double seconds() const { return wall_before_ + wall_.seconds(); }
  // Inner examples (mlp) or inner steps (quadratic) that one outer step processes, all ranks.
  double inner_samples_per_step() const {
    const double steps = 2.0 * static_cast<double>(meta_.tasks * meta_.unroll);
    return meta_.task == "mlp" ? steps * static_cast<double>(cfg_.data.batch_size) : steps;
  }

  const Config& cfg_;
  const MetaConfig& meta_;
  Communicator& comm_;
  const MetaTrainOptions& opts_;
  const std::string dir_;
  const bool leader_;
  Stopwatch wall_;
  DatasetSplits data_;
  PesEstimator pes_;
  torch::Tensor theta_, grad_;  // float64 [D]; AdamW's slot
  std::unique_ptr<Optimizer> adamw_;
  CheckpointStore store_;
  Progress progress_;
  std::unique_ptr<MetricsWriter> metrics_;
  int64_t step_ = 0;           // outer steps done
  double wall_before_ = 0.0;   // wall seconds of the runs before a resume
  std::deque<double> recent_;  // the last kRecentLosses mean losses
  bool stopped_ = false;
};

void MetaRun::resume() {
  // Every rank continues from the same step: the newest one that all ranks have intact.
  const CheckpointStore::Loaded loaded = load_common_checkpoint(
      store_, comm_, dir_, [&](const std::string& w) { say("warning: " + w); });
  const int64_t agreed = loaded.step;
  const Archive& a = loaded.archive;
  if (a.string("outer.task") != meta_.task || a.integer("outer.world_size") != comm_.world_size())
    throw CheckpointError(fmt::format(
        "--resume: the checkpoint in {}/checkpoints is of meta.task \"{}\" on {} workers; this "
        "run is \"{}\" on {}",
        dir_, a.string("outer.task"), a.integer("outer.world_size"), meta_.task,
        comm_.world_size()));
  pes_.load(a);
  step_ = agreed;
  // Rank 0 holds theta, AdamW's state and the log; the others receive theta and AdamW's state.
  std::vector<std::pair<std::string, torch::Tensor>> adam = adamw_->state();
  std::vector<torch::Tensor> shared = {theta_};
  for (auto& [name, t] : adam) shared.push_back(t.reshape({-1}));
  if (leader_) {
    a.copy_into("outer.theta", theta_);
    for (auto& [name, t] : adam) a.copy_into("outer.adamw." + name, t);
    const torch::Tensor recent = a.tensor("outer.recent_losses").contiguous();
    recent_.assign(recent.data_ptr<double>(), recent.data_ptr<double>() + recent.numel());
    wall_before_ = a.real("outer.wall_seconds");
  }
  if (comm_.world_size() > 1) {
    std::vector<torch::Tensor> as_double;
    for (const torch::Tensor& t : shared) as_double.push_back(t.to(torch::kFloat64));
    torch::Tensor packed = torch::cat(as_double);  // int64 step counts are exact in float64
    comm_.broadcast(packed, 0);
    int64_t offset = 0;
    for (torch::Tensor& t : shared) {
      t.copy_(packed.narrow(0, offset, t.numel()));
      offset += t.numel();
    }
  }
  say(fmt::format("resumed from outer step {} of {}", step_, meta_.outer_steps));
}

bool MetaRun::agree_to_stop() {
  if (comm_.world_size() == 1) return interrupted();
  torch::Tensor flag = torch::full({1}, interrupted() ? 1.0 : 0.0, torch::kFloat64);
  comm_.all_reduce(flag);
  return flag.item<double>() > 0.0;
}

void MetaRun::checkpoint() {
  Archive a;
  a.put("outer.step", step_);
  a.put("outer.world_size", comm_.world_size());
  a.put("outer.task", meta_.task);
  pes_.save(a);
  if (leader_) {
    a.put("outer.theta", theta_);
    for (const auto& [name, t] : adamw_->state()) a.put("outer.adamw." + name, t);
    a.put("outer.recent_losses",
          torch::tensor(std::vector<double>(recent_.begin(), recent_.end()), torch::kFloat64));
    a.put("outer.wall_seconds", seconds());
  }
  store_.write(step_, a, cfg_.checkpoint.keep);
  write_lopt();
}

void MetaRun::write_lopt() const {
  if (!leader_) return;
  const std::string path = dir_ + "/lopt.pt";
  if (meta_.task == "mlp") {
    MuloParams::unflatten(theta_.to(torch::kFloat32)).save(path);
  } else {
    Archive a;
    a.put("theta", theta_);
    write_file_atomic(path, a.serialize());
  }
}

void MetaRun::train() {
  if (leader_)
    metrics_ = std::make_unique<MetricsWriter>(dir_ + "/metrics.jsonl", opts_.resume ? step_ : -1);
  if (step_ == 0)
    say(fmt::format("meta-training {} · PES over {} tasks on {} worker{} · {} outer steps → {}",
                    meta_.task, meta_.tasks, comm_.world_size(), comm_.world_size() == 1 ? "" : "s",
                    meta_.outer_steps, dir_));
  const std::optional<Fault> fault = fault_from_env();
  while (step_ < meta_.outer_steps) {
    Stopwatch clock;
    const double lr = meta_lr(meta_, step_ + 1);
    PesStepReport report;
    grad_.copy_(pes_.gradient(theta_, step_, comm_, &report));
    const double norm = meta_.grad_clip > 0.0 ? clip_grad_norm({grad_}, meta_.grad_clip)
                                              : grad_.norm().item<double>();
    adamw_->step(lr);
    ++step_;
    recent_.push_back(report.mean_loss);
    if (recent_.size() > kRecentLosses) recent_.pop_front();
    if (leader_)
      metrics_->write({{"type", "meta"},
                       {"step", step_},
                       {"mean_loss", report.mean_loss},
                       {"grad_norm", norm},
                       {"lr", lr},
                       {"resets", report.resets},
                       {"seconds", seconds()}});
    if (leader_ && opts_.show_progress)
      progress_.update(step_, report.mean_loss, lr,
                       inner_samples_per_step() / std::max(1e-9, clock.seconds()));
    maybe_inject_fault(fault, comm_.rank(), step_);
    stopped_ = agree_to_stop();
    const bool last = step_ == meta_.outer_steps;
    if (stopped_ || last || (meta_.checkpoint_every > 0 && step_ % meta_.checkpoint_every == 0))
      checkpoint();
    if (stopped_) break;
  }
  if (leader_ && opts_.show_progress) progress_.finish();
  if (stopped_)
    say(fmt::format("interrupted: checkpoint written at outer step {}; continue with --resume",
                    step_));
}

nlohmann::json MetaRun::summary() const {
  double mean = 0.0;
  for (double l : recent_) mean += l / static_cast<double>(recent_.size());
  nlohmann::json s = {
      {"task", meta_.task},
      {"workers", comm_.world_size()},
      {"outer_steps", meta_.outer_steps},
      {"steps", step_},
      {"dim", theta_.numel()},
      {"wall_seconds", seconds()},
      {"mean_loss_last10", recent_.empty() ? nlohmann::json() : nlohmann::json(mean)},
      {"seed", cfg_.run.seed},
      {"interrupted", stopped_},
      {"run_dir", dir_},
      {"lopt", dir_ + "/lopt.pt"}};
  if (meta_.task == "quadratic") {
    const torch::Tensor t = theta_.contiguous();
    s["theta"] = std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
    s["theta_optimum"] = kQuadraticOptimum;
  }
  return s;
}

}  // namespace

double meta_lr(const MetaConfig& meta, int64_t step) {
  const auto u = static_cast<double>(step - 1);  // steps before this one
  const auto warmup = static_cast<double>(meta.warmup_steps);
  if (u < warmup) return meta.lr_start + (meta.lr_peak - meta.lr_start) * u / warmup;
  const double decay = static_cast<double>(meta.outer_steps - 1) - warmup;
  if (decay <= 0.0) return meta.lr_peak;
  return meta.lr_peak + (meta.lr_final - meta.lr_peak) * std::min(1.0, (u - warmup) / decay);
}

torch::Tensor initial_theta(const Config& cfg) {
  if (cfg.meta.task == "quadratic") return torch::zeros({1}, torch::kFloat64);
  const OptimizerConfig& o = cfg.optimizer;
  const MuloParams params = o.lopt_weights.empty()
                                ? MuloParams::init(static_cast<uint64_t>(o.lopt_seed))
                                : MuloParams::load(o.lopt_weights);
  return params.flatten().to(torch::kFloat64);
}

nlohmann::json meta_train(const Config& cfg, Communicator& comm, const MetaTrainOptions& options) {
  validate_meta_task(cfg);
  at::set_num_threads(static_cast<int>(intra_op_threads(cfg, options.local_workers)));
  const std::string dir = run_dir_of(cfg);
  if (comm.rank() == 0) {
    make_dirs(dir);
    write_file_atomic(dir + "/config.toml", cfg.resolved_toml());
  }
  MetaRun run(cfg, comm, options);
  if (options.resume) run.resume();
  run.train();
  nlohmann::json s = run.summary();
  if (comm.rank() == 0) write_file_atomic(dir + "/summary.json", s.dump(2) + "\n");
  return s;
}

}  // namespace desync
