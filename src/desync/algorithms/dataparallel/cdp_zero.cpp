#include "desync/algorithms/dataparallel/cdp_zero.h"

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

std::unique_ptr<Algorithm> make_cdp_zero(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  CyclicOptions o = read_cyclic_options(r);
  const bool latest = r.get_choice("final_model", "latest", {"average", "latest"}) == "latest";
  r.finish();
  return std::make_unique<CdpZero>(o, latest, cfg.accumulation);
}

namespace {

int64_t gradient_tag(int64_t l) { return 2 * l; }
int64_t parameter_tag(int64_t l) { return 2 * l + 1; }

}  // namespace

// The two relays of one worker (see cdp_zero.h): a gradient relay and a parameter relay, each a
// thread with its own background channel, fed in the order of the worker's backwards. The
// training thread hands over stage gradients (hand) and takes stage versions (take).
class StageRing {
 public:
  StageRing(Context& ctx, CyclicModel& model)
      : model_(model),
        rank_(ctx.comm.rank()),
        world_(ctx.comm.world_size()),
        owner_(rank_ == world_ - 1),
        gradients_(ctx.comm.split("cdp_zero.gradients", Caller::kBackgroundThread)),
        parameters_(ctx.comm.split("cdp_zero.parameters", Caller::kBackgroundThread)) {
    torch::NoGradGuard no_grad;
    const int64_t S = model_.num_stages();
    P_ = model_.flat().params_flat().clone();  // theta_0
    A_ = torch::zeros_like(P_);
    if (owner_)
      for (int64_t l = 0; l < S; ++l)
        optimizers_.push_back(
            ctx.make_optimizer(model_.stage_slots(ctx, l, model_.slice(P_, l), accumulator(l))));
    handed_.assign(S, 0);
    relayed_.assign(S, 0);
    ready_.assign(S, 0);
    sent_.assign(S, 0);
    taken_.assign(S, 0);
    gradient_thread_ = std::thread([this] { gradient_loop(); });
    parameter_thread_ = std::thread([this] { parameter_loop(); });
  }

  ~StageRing() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    gradient_thread_.join();
    parameter_thread_.join();
  }

  // P_l: the newest version of stage l this worker has received (made, on the owner).
  torch::Tensor version(int64_t l) const { return model_.slice(P_, l); }
  torch::Tensor accumulator(int64_t l) const { return model_.slice(A_, l); }

  // G_l holds this worker's gradient of stage l: sends it on; `lr` for the owner's step.
  void hand(int64_t l, double lr) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      const int64_t now = Tracer::now_us();
      gradient_queue_.push_back({l, lr, now});
      parameter_queue_.push_back({l, lr, now});
      ++handed_[l];
    }
    cv_.notify_all();
  }

  // Blocks until the exchange of stage l's last handed gradient has finished here: G_l is no
  // longer read and P_l holds the version made from it.
  void wait_exchanged(int64_t l) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock,
             [&] { return (relayed_[l] == handed_[l] && ready_[l] == handed_[l]) || error_; });
    if (error_) std::rethrow_exception(error_);
  }

  // On --resume: P_l holds the version of a gradient handed and exchanged before the checkpoint,
  // not yet taken (the owner had sent it on).
  void restore_exchanged(int64_t l) {
    std::lock_guard<std::mutex> lock(mu_);
    handed_[l] = relayed_[l] = ready_[l] = 1;
    sent_[l] = owner_ ? 1 : 0;
    taken_[l] = 0;
  }

  // The owner's optimizers (the others have none).
  void save(Archive& archive) const {
    for (size_t l = 0; l < optimizers_.size(); ++l)
      save_optimizer(*optimizers_[l], archive, fmt::format("cdp_zero.optimizer{}.", l));
  }
  void load(const Archive& archive) {
    for (size_t l = 0; l < optimizers_.size(); ++l)
      load_optimizer(*optimizers_[l], archive, fmt::format("cdp_zero.optimizer{}.", l));
  }

  // Blocks until P_l holds the version made from the oldest handed gradient of stage l not yet
  // taken, and G_l is no longer read; `into` <- P_l.
  void take(int64_t l, torch::Tensor into) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto ready = [&] { return (ready_[l] > taken_[l] && relayed_[l] > taken_[l]) || error_; };
      if (!ready()) {
        TraceSpan span("cdp_zero_wait_parameters", "wait");
        const int64_t t0 = Tracer::now_us();
        cv_.wait(lock, ready);
        parameters_->record_join_wait(static_cast<double>(Tracer::now_us() - t0) * 1e-6);
      }
      if (error_) std::rethrow_exception(error_);
      ++taken_[l];
    }
    torch::Tensor p = version(l);
    if (into.data_ptr() != p.data_ptr()) into.copy_(p);
  }

  int64_t buffer_bytes() const { return (P_.numel() + A_.numel()) * P_.element_size(); }
  int64_t optimizer_state_bytes() {
    int64_t state = 0;
    for (auto& optimizer : optimizers_) state += optimizer->state_numel() * P_.element_size();
    return state;
  }

 private:
  struct Item {
    int64_t stage;
    double lr;
    int64_t handed_us;  // when the training thread handed the stage's gradient
  };

  // Pops the next item of `queue`; false once stopped with nothing left.
  bool next(std::deque<Item>& queue, Item& item) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return stop_ || !queue.empty() || error_; });
    if (error_ || queue.empty()) return false;
    item = queue.front();
    queue.pop_front();
    return true;
  }

  void fail() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_) error_ = std::current_exception();
    cv_.notify_all();
  }

  // Counts one more for stage l in `counter`, under the lock.
  void count(std::vector<int64_t>& counter, int64_t l) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++counter[l];
    }
    cv_.notify_all();
  }

  void gradient_loop() {
    torch::NoGradGuard no_grad;
    Item item;
    while (next(gradient_queue_, item)) {
      const int64_t l = item.stage;
      torch::Tensor g = model_.grads(l), a = accumulator(l);
      try {
        if (rank_ == 0 && !owner_) {
          gradients_->send(g, 1, gradient_tag(l));
        } else {
          if (rank_ > 0) {
            gradients_->recv(a, rank_ - 1, gradient_tag(l));
            a.add_(g);
          } else {
            a.copy_(g);  // a world of one
          }
          if (!owner_) {
            gradients_->send(a, rank_ + 1, gradient_tag(l));
          } else {
            {  // P_l still goes out to worker 0 as the previous version: wait for it
              std::unique_lock<std::mutex> lock(mu_);
              cv_.wait(lock, [&] { return sent_[l] == ready_[l] || error_; });
              if (error_) return;
            }
            TraceSpan span("optimizer", "optimizer");
            a.div_(static_cast<double>(world_));
            optimizers_[l]->step(item.lr);
            count(ready_, l);
          }
        }
      } catch (...) {
        fail();
        return;
      }
      // The ring's sum of stage l, as far as this worker takes part: from its hand-over to its
      // relay (to the owner's step, on the owner).
      record_reduction(l, item.handed_us, Tracer::now_us(), g.numel() * g.element_size());
      count(relayed_, l);
    }
  }

  void parameter_loop() {
    torch::NoGradGuard no_grad;
    Item item;
    while (next(parameter_queue_, item)) {
      const int64_t l = item.stage;
      torch::Tensor p = version(l);
      try {
        if (owner_) {
          {
            std::unique_lock<std::mutex> lock(mu_);
            cv_.wait(lock, [&] { return ready_[l] > sent_[l] || error_; });
            if (error_) return;
          }
          if (world_ > 1) parameters_->send(p, 0, parameter_tag(l));
          count(sent_, l);
        } else {
          parameters_->recv(p, rank_ == 0 ? world_ - 1 : rank_ - 1, parameter_tag(l));
          count(ready_, l);
          if (rank_ < world_ - 2) parameters_->send(p, rank_ + 1, parameter_tag(l));
        }
      } catch (...) {
        fail();
        return;
      }
    }
  }

  CyclicModel& model_;
  const int64_t rank_, world_;
  const bool owner_;  // worker N-1: the owner of every stage's optimizer
  std::shared_ptr<Communicator> gradients_, parameters_;
  torch::Tensor P_, A_;  // flat: the newest versions, the accumulators
  std::vector<std::unique_ptr<Optimizer>> optimizers_;  // the owner's, one per stage, on P and A

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> gradient_queue_, parameter_queue_;
  // Per stage: gradients handed; gradients relayed (G_l no longer read); versions ready in P_l;
  // versions sent on to worker 0 (owner); versions taken by the training thread.
  std::vector<int64_t> handed_, relayed_, ready_, sent_, taken_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread gradient_thread_, parameter_thread_;  // last: start once the members above exist
};

CdpZero::CdpZero(CyclicOptions o, bool final_latest, int64_t accumulation)
    : opts_(std::move(o)), final_latest_(final_latest), accumulation_(accumulation) {}

CdpZero::~CdpZero() = default;

void CdpZero::setup(Context& ctx) {
  if (ctx.config.optimizer.grad_clip > 0)
    throw ConfigError(
        "cdp_zero: optimizer.grad_clip is not supported (the stages are updated at different "
        "times); set it to 0");
  rank_ = ctx.comm.rank();
  world_ = ctx.comm.world_size();
  model_ = std::make_unique<CyclicModel>(ctx, opts_);
  ring_ = std::make_unique<StageRing>(ctx, *model_);
  optimizer_state_bytes_ = ring_->optimizer_state_bytes();
  ring_bytes_ = ring_->buffer_bytes();
  // A stale stage's second copy M_l is P_l: it holds theta_{k,l} from next_version until this
  // worker's next gradient of the stage, before which no newer version can arrive.
  std::vector<torch::Tensor> retained;
  for (int64_t l = 0; l < model_->num_stages(); ++l) retained.push_back(ring_->version(l));
  runtime_ = std::make_unique<CyclicRuntime>(ctx, *model_, opts_, accumulation_, retained);
  runtime_->start(ctx, *this);
}

StepReport CdpZero::step(Context& ctx) { return runtime_->step(ctx); }

void CdpZero::send_gradient(Context& ctx, int64_t l, int64_t cycle, torch::Tensor grad,
                            bool in_flight) {
  ring_->hand(l, ctx.schedule.lr(cycle));  // the relays only read G_l: no copy needed
}

void CdpZero::next_version(Context& ctx, int64_t l, int64_t cycle, torch::Tensor params) {
  ring_->take(l, params);
  model_->grads(l).zero_();
}

StagedModel CdpZero::model_for_eval(Context& ctx) {
  if (world_ == 1 || finished_) return ctx.model;
  StagedModel copy(ctx.model->clone_model());
  average_copies(copy, ctx.eval_channel());
  return copy;
}

void CdpZero::finish(Context& ctx) {
  if (finished_) return;
  finished_ = true;
  runtime_->drain(ctx, final_latest_);
  ring_.reset();
  // latest: the parameters agree already; only BatchNorm's running statistics differ.
  average_copies(ctx.model, ctx.comm, /*with_params=*/!final_latest_);
}

void CdpZero::save_pending(Archive& archive, const std::string& prefix, int64_t l, int64_t cycle,
                           bool complete) const {
  if (complete)
    ring_->wait_exchanged(l);  // then P_l, saved with the others, holds theta_{cycle+1,l}
  else
    archive.put(prefix + "sent", model_->grads(l));  // as handed: the relays only read it
}

void CdpZero::load_pending(const Archive& archive, const std::string& prefix, int64_t l,
                           int64_t cycle, bool complete) {
  if (complete)
    ring_->restore_exchanged(l);
  else
    archive.copy_into(prefix + "sent", model_->grads(l));
}

void CdpZero::resend(Context& ctx, int64_t l, int64_t cycle) {
  ring_->hand(l, ctx.schedule.lr(cycle));  // every worker that handed it hands it again
}

void CdpZero::save(Archive& archive) const {
  // After finish() (the run's final checkpoint) the model is all there is.
  archive.put("cdp_zero.finished", static_cast<int64_t>(finished_));
  if (finished_) return;
  runtime_->save(archive);  // waits for the exchanges that need no further operation
  // P_l, but where a version is still on its way into it (it is not needed then).
  for (int64_t l = 0; l < model_->num_stages(); ++l)
    if (!runtime_->in_flight(l))
      archive.put(fmt::format("cdp_zero.stage{}.version", l), ring_->version(l));
  ring_->save(archive);
}

void CdpZero::load(const Archive& archive) {
  finished_ = archive.integer("cdp_zero.finished") != 0;
  if (finished_) return;
  runtime_->load(archive);
  torch::NoGradGuard no_grad;
  for (int64_t l = 0; l < model_->num_stages(); ++l)
    if (!runtime_->in_flight(l))
      archive.copy_into(fmt::format("cdp_zero.stage{}.version", l), ring_->version(l));
  ring_->load(archive);
}

AlgorithmReport CdpZero::report() const {
  const int64_t elem = model_->flat().params_flat().element_size();
  AlgorithmReport r;
  r.memory = {{"parameters", model_->flat().padded_numel() * elem},
              {"gradients", model_->flat().padded_numel() * elem},
              {"optimizer_state", optimizer_state_bytes_},
              {"previous_versions", runtime_->retained_bytes()},
              {"ring_buffers", ring_bytes_}};
  r.counts = {{"cyclic_stages", model_->num_stages()},
              {"stale_stages", model_->stale_stages()},
              {"owned_stages", rank_ == world_ - 1 ? model_->num_stages() : 0},
              {"unit_us", static_cast<int64_t>(runtime_->unit_seconds() * 1e6)}};
  return r;
}

}  // namespace desync
