#include "desync/algorithms/dataparallel/cdp.h"

#include <fmt/format.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"
#include "desync/core/error.h"
#include "desync/core/reductions.h"
#include "desync/core/trace.h"

namespace desync {

std::unique_ptr<Algorithm> make_cdp(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  CyclicOptions o = read_cyclic_options(r);
  const bool staggered =
      r.get_choice("runtime", "staggered", {"staggered", "simulator"}) == "staggered";
  const bool latest = r.get_choice("final_model", "average", {"average", "latest"}) == "latest";
  r.finish();
  return std::make_unique<Cdp>(o, staggered, latest, cfg.accumulation);
}

// The reduction thread of the staggered runtime: all-reduces the stage gradients it is handed,
// in order, on a background channel of its own, and records when each one left and completed.
class StageReducer {
 public:
  StageReducer(Communicator& comm, int64_t stages)
      : channel_(comm.split("cdp", Caller::kBackgroundThread)),
        launched_(stages, 0),
        done_(stages, 0),
        thread_([this] { loop(); }) {}

  ~StageReducer() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  // Starts the sum of `grad` (stage l's gradient) over the workers, in place.
  void launch(int64_t l, torch::Tensor grad) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back({l, std::move(grad)});
      ++launched_[l];
    }
    cv_.notify_all();
  }

  // Blocks until every reduction of stage l launched so far has completed.
  void wait(int64_t l) {
    std::unique_lock<std::mutex> lock(mu_);
    auto ready = [&] { return done_[l] == launched_[l] || error_; };
    if (!ready()) {
      TraceSpan span("cdp_wait_reduction", "wait");
      const int64_t t0 = Tracer::now_us();
      cv_.wait(lock, ready);
      channel_->record_join_wait(static_cast<double>(Tracer::now_us() - t0) * 1e-6);
    }
    if (error_) std::rethrow_exception(error_);
  }

 private:
  struct Item {
    int64_t stage;
    torch::Tensor grad;
  };

  void loop() {
    torch::NoGradGuard no_grad;
    for (;;) {
      Item item;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        item = std::move(queue_.front());
        queue_.pop_front();
      }
      try {
        const int64_t issued = Tracer::now_us();
        channel_->all_reduce(item.grad);
        record_reduction(item.stage, issued, Tracer::now_us(),
                         item.grad.numel() * item.grad.element_size());
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        error_ = std::current_exception();
        cv_.notify_all();
        return;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++done_[item.stage];
      }
      cv_.notify_all();
    }
  }

  std::shared_ptr<Communicator> channel_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  std::vector<int64_t> launched_, done_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

Cdp::Cdp(CyclicOptions o, bool staggered, bool final_latest, int64_t accumulation)
    : opts_(std::move(o)),
      staggered_(staggered),
      final_latest_(final_latest),
      accumulation_(accumulation) {}

Cdp::~Cdp() = default;

void Cdp::setup(Context& ctx) {
  if (ctx.config.optimizer.grad_clip > 0)
    throw ConfigError(
        "cdp: optimizer.grad_clip is not supported (the stages are updated at different times); "
        "set it to 0");
  world_ = ctx.comm.world_size();
  model_ = std::make_unique<CyclicModel>(ctx, opts_);
  const int64_t S = model_->num_stages();
  auto stage_optimizer = [&](int64_t l, torch::Tensor params) {
    return ctx.make_optimizer(model_->stage_slots(ctx, l, params, model_->grads(l)));
  };
  if (!staggered_) {  // simulator: the optimizers own theta_k
    theta_ = model_->flat().params_flat().clone();
    prev_ = theta_.clone();
    for (int64_t l = 0; l < S; ++l)
      optimizers_.push_back(stage_optimizer(l, model_->slice(theta_, l)));
    return;
  }
  runtime_ = std::make_unique<CyclicRuntime>(ctx, *model_, opts_, accumulation_);
  sent_.resize(S);
  for (int64_t l = 0; l < S; ++l)
    optimizers_.push_back(stage_optimizer(l, runtime_->version_buffer(l)));
  reducer_ = std::make_unique<StageReducer>(ctx.comm, S);
  runtime_->start(ctx, *this);
}

StepReport Cdp::step(Context& ctx) {
  if (!staggered_) return simulate(ctx);
  return runtime_->step(ctx);
}

void Cdp::send_gradient(Context& ctx, int64_t l, int64_t cycle, torch::Tensor grad,
                        bool in_flight) {
  if (in_flight) {  // a checkpoint after this step needs G_l as sent: the reduction overwrites it
    torch::NoGradGuard no_grad;
    if (!sent_[l].defined()) sent_[l] = torch::empty_like(grad);
    sent_[l].copy_(grad);
  }
  reducer_->launch(l, std::move(grad));
}

void Cdp::next_version(Context& ctx, int64_t l, int64_t cycle, torch::Tensor params) {
  reducer_->wait(l);
  TraceSpan span("optimizer", "optimizer");
  torch::Tensor g = model_->grads(l);
  g.div_(static_cast<double>(world_));
  optimizers_[l]->step(ctx.schedule.lr(cycle));  // on `params`, the stage's version buffer
  g.zero_();
}

void Cdp::save_pending(Archive& archive, const std::string& prefix, int64_t l, int64_t cycle,
                       bool complete) const {
  if (complete) {  // G_l becomes the sum of the workers' gradients
    reducer_->wait(l);
    archive.put(prefix + "sum", model_->grads(l));
  } else {
    archive.put(prefix + "sent", sent_[l]);
  }
}

void Cdp::load_pending(const Archive& archive, const std::string& prefix, int64_t l, int64_t cycle,
                       bool complete) {
  archive.copy_into(prefix + (complete ? "sum" : "sent"), model_->grads(l));
}

void Cdp::resend(Context& ctx, int64_t l, int64_t cycle) { reducer_->launch(l, model_->grads(l)); }

StepReport Cdp::simulate(Context& ctx) {
  torch::NoGradGuard no_grad;
  for (int64_t l = 0; l < model_->num_stages(); ++l)
    model_->params(l).copy_(model_->fresh(l) ? model_->slice(theta_, l) : model_->slice(prev_, l));
  model_->flat().grads_flat().zero_();
  StepReport report;
  {
    torch::AutoGradMode grad(true);
    report = accumulate_gradients(ctx, accumulation_);
  }
  ctx.comm.all_reduce(model_->flat().grads_flat());
  model_->flat().grads_flat().div_(static_cast<double>(world_));
  prev_.copy_(theta_);
  TraceSpan span("optimizer", "optimizer");
  for (auto& optimizer : optimizers_) optimizer->step(ctx.schedule.lr(ctx.step));
  return report;
}

StagedModel Cdp::model_for_eval(Context& ctx) {
  if (world_ == 1 || finished_) return ctx.model;
  StagedModel copy(ctx.model->clone_model());
  average_copies(copy, ctx.eval_channel());
  return copy;
}

void Cdp::finish(Context& ctx) {
  if (finished_) return;
  finished_ = true;
  torch::NoGradGuard no_grad;
  if (staggered_) {
    runtime_->drain(ctx, final_latest_);
    reducer_.reset();
  } else {
    for (int64_t l = 0; l < model_->num_stages(); ++l)
      model_->params(l).copy_(model_->fresh(l) || final_latest_ ? model_->slice(theta_, l)
                                                                : model_->slice(prev_, l));
  }
  average_copies(ctx.model, ctx.comm);
}

void Cdp::save(Archive& archive) const {
  if (staggered_) {
    // After finish() (the run's final checkpoint) the model is all there is.
    archive.put("cdp.finished", static_cast<int64_t>(finished_));
    if (finished_) return;
    runtime_->save(archive);
  } else {
    archive.put("cdp.theta", theta_);
    archive.put("cdp.prev", prev_);
  }
  for (size_t l = 0; l < optimizers_.size(); ++l)
    save_optimizer(*optimizers_[l], archive, fmt::format("optimizer{}.", l));
}

void Cdp::load(const Archive& archive) {
  if (staggered_) {
    finished_ = archive.integer("cdp.finished") != 0;
    if (finished_) return;
    runtime_->load(archive);
  } else {
    archive.copy_into("cdp.theta", theta_);
    archive.copy_into("cdp.prev", prev_);
  }
  for (size_t l = 0; l < optimizers_.size(); ++l)
    load_optimizer(*optimizers_[l], archive, fmt::format("optimizer{}.", l));
}

AlgorithmReport Cdp::report() const {
  const int64_t elem = model_->flat().params_flat().element_size();
  int64_t state = 0;
  for (const auto& optimizer : optimizers_) state += optimizer->state_numel() * elem;
  // Staggered: the copies M_l of stale stages; simulator: theta_k and theta_{k-1}.
  const int64_t previous = staggered_ ? runtime_->retained_bytes() : 2 * theta_.numel() * elem;
  int64_t resend = 0;
  for (const torch::Tensor& t : sent_)
    if (t.defined()) resend += t.numel() * elem;
  AlgorithmReport r;
  r.memory = {{"parameters", model_->flat().padded_numel() * elem},
              {"gradients", model_->flat().padded_numel() * elem},
              {"optimizer_state", state},
              {"previous_versions", previous},
              {"resend_copies", resend}};
  r.counts = {{"cyclic_stages", model_->num_stages()},
              {"stale_stages", model_->stale_stages()},
              {"unit_us", static_cast<int64_t>(staggered_ ? runtime_->unit_seconds() * 1e6 : 0)}};
  return r;
}

}  // namespace desync
