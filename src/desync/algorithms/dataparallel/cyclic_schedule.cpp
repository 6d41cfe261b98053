#include "desync/algorithms/dataparallel/cyclic_schedule.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>

#include "desync/algorithms/common.h"
#include "desync/core/activation_memory.h"
#include "desync/core/error.h"
#include "desync/core/trace.h"
#include "desync/models/low_rank.h"

namespace desync {

CyclicOptions read_cyclic_options(SectionReader& r, bool with_rule) {
  CyclicOptions o;
  if (with_rule) {
    const std::string rule = r.get_choice("rule", "cdp2", {"dp", "cdp1", "cdp2"});
    o.rule = rule == "dp" ? CdpRule::kDp : rule == "cdp1" ? CdpRule::kCdp1 : CdpRule::kCdp2;
  }
  o.predicate = r.get_choice("fresh_predicate", "code", {"code", "timing"}) == "code"
                    ? FreshPredicate::kCode
                    : FreshPredicate::kTiming;
  o.n_stages = r.get("n_stages", o.n_stages, 1);
  o.stage_cuts = r.get("stage_cuts", o.stage_cuts, 1);
  o.unit_ms = r.get("unit_ms", o.unit_ms, 0.0);
  return o;
}

bool fresh_by_code(int64_t r, int64_t l, int64_t s) { return l >= s - 1 - r; }

bool fresh_by_timing(int64_t r, int64_t l, int64_t n, int64_t s) {
  return l * n >= (n - 1 - r) * s;
}

bool is_fresh(const CyclicOptions& o, int64_t r, int64_t l, int64_t n, int64_t s) {
  switch (o.rule) {
    case CdpRule::kDp:
      return true;
    case CdpRule::kCdp1:
      return false;
    case CdpRule::kCdp2:
      return o.predicate == FreshPredicate::kCode ? fresh_by_code(r, l, s)
                                                  : fresh_by_timing(r, l, n, s);
  }
  return true;
}

int64_t forward_tick(int64_t n, int64_t s, int64_t r, int64_t k, int64_t l) {
  return n * (2 * s * k + l) + 2 * s * r;
}

int64_t backward_tick(int64_t n, int64_t s, int64_t r, int64_t k, int64_t l) {
  return n * (2 * s * k + 2 * s - 1 - l) + 2 * s * r;
}

CyclicOp cyclic_op(int64_t n, int64_t s, int64_t r, int64_t j) {
  CyclicOp op;
  op.worker = r;
  op.cycle = j / (2 * s);
  const int64_t i = j % (2 * s);
  op.backward = i >= s;
  op.stage = op.backward ? 2 * s - 1 - i : i;
  op.tick = n * j + 2 * s * r;
  return op;
}

std::pair<int64_t, int64_t> window_ops(int64_t n, int64_t s, int64_t r, int64_t k) {
  // Operation j is in window w when 2S*N*w <= N*j + 2S*r, i.e. j >= 2S*w - 2S*r/N: the first
  // is ceil(2S*w - 2S*r/N) = 2S*w - floor(2S*r/N).
  const int64_t shift = (2 * s * r) / n;
  return {std::max<int64_t>(0, 2 * s * k - shift), 2 * s * (k + 1) - shift};
}

bool sent_by_all(int64_t n, int64_t s, int64_t l, int64_t cycle, int64_t windows) {
  return backward_tick(n, s, n - 1, cycle, l) < 2 * s * n * windows;
}

std::vector<CyclicOp> cyclic_schedule(int64_t n, int64_t s, int64_t cycles) {
  std::vector<CyclicOp> ops;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < cycles * 2 * s; ++j) ops.push_back(cyclic_op(n, s, r, j));
  std::sort(ops.begin(), ops.end(), [](const CyclicOp& a, const CyclicOp& b) {
    return a.tick != b.tick ? a.tick < b.tick : a.worker < b.worker;
  });
  return ops;
}

namespace {

// FLOPs per example of the convolutions and linear layers inside `module`, whose output (for
// one call) is `out`: 2 * weight elements * output positions.
double layer_flops(torch::nn::Module& module, const torch::Tensor& out) {
  double flops = 0.0;
  const double batch = static_cast<double>(std::max<int64_t>(1, out.size(0)));
  // A linear layer's rows per example: a [B, T, D] output has T.
  const double rows = static_cast<double>(out.numel()) / batch / static_cast<double>(out.size(-1));
  for (const auto& m : module.modules(/*include_self=*/true)) {
    if (auto* conv = m->as<torch::nn::Conv2d>()) {
      const double positions = out.dim() == 4 ? static_cast<double>(out.size(2) * out.size(3)) : 1;
      flops += 2.0 * static_cast<double>(conv->weight.numel()) * positions;
    } else if (auto* conv1 = m->as<torch::nn::Conv1d>()) {
      const double positions = out.dim() == 3 ? static_cast<double>(out.size(2)) : 1;
      flops += 2.0 * static_cast<double>(conv1->weight.numel()) * positions;
    } else if (auto* linear = m->as<torch::nn::Linear>()) {
      flops += 2.0 * static_cast<double>(linear->weight.numel()) * rows;
    } else if (auto* layer = m->as<models::LinearLayerImpl>()) {  // the GPT's, maybe factorised
      flops += 2.0 * static_cast<double>(layer->macs()) * rows;
    }
  }
  return flops;
}

}  // namespace

std::vector<double> stage_flops(StagedModel& model, const torch::Tensor& sample) {
  torch::NoGradGuard no_grad;
  BufferSnapshot keep(model, {0, model->num_stages()});
  std::vector<double> flops;
  torch::Tensor x = sample.is_floating_point() ? sample.to(model->dtype()) : sample;
  for (int64_t i = 0; i < model->num_stages(); ++i) {
    double f = 0.0;
    for (auto& layer : *model->stage(i)) {
      x = layer.forward(x);
      f += layer_flops(*layer.ptr(), x);
    }
    flops.push_back(f);
  }
  return flops;
}

std::vector<StageRange> cyclic_stages(StagedModel& model, const torch::Tensor& sample,
                                      const CyclicOptions& o) {
  const int64_t n = model->num_stages();
  std::vector<StageRange> ranges;
  if (!o.stage_cuts.empty()) {
    int64_t begin = 0;
    for (int64_t cut : o.stage_cuts) {
      if (cut <= begin || cut >= n)
        throw ConfigError(fmt::format(
            "algorithm.stage_cuts must increase strictly within (0, {}): the model has {} stages "
            "(cut {} is out of order or range)",
            n, n, cut));
      ranges.push_back({begin, cut});
      begin = cut;
    }
    ranges.push_back({begin, n});
  } else {
    const std::vector<double> flops = stage_flops(model, sample);
    ranges = place_stages(n, std::min(o.n_stages, n), {}, flops);
  }
  if (model->has_tied_stages() && ranges.size() > 1)
    throw ConfigError(
        "model.tie_embeddings ties the first and last stages, which the cyclic schedule updates "
        "at different times: set model.tie_embeddings = false");
  return ranges;
}

void CyclicClock::anchor(int64_t tick) {
  origin_us_ = Tracer::now_us() -
               static_cast<int64_t>(static_cast<double>(tick) * unit_us_ / static_cast<double>(n_));
}

int64_t CyclicClock::due_us(int64_t tick) const {
  return origin_us_ +
         static_cast<int64_t>(static_cast<double>(tick) * unit_us_ / static_cast<double>(n_));
}

void CyclicClock::catch_up(int64_t tick) {
  if (Tracer::now_us() > due_us(tick) + static_cast<int64_t>(unit_us_)) anchor(tick);
}

void CyclicClock::wait_for(int64_t tick) const {
  const int64_t due = due_us(tick);
  const int64_t now = Tracer::now_us();
  if (now >= due) return;
  TraceSpan span("cdp_clock", "phase");
  std::this_thread::sleep_for(std::chrono::microseconds(due - now));
}

MicroBatch probe_batch(Context& ctx) {
  return take_range(ctx.batches.dataset(), 0, ctx.batches.batch_size(), ctx.config.data.normalize);
}

double cyclic_unit_seconds(Context& ctx, const std::vector<StageRange>& stages,
                           const CyclicOptions& o) {
  if (o.unit_ms > 0) return o.unit_ms * 1e-3;
  const std::vector<double> costs =
      measure_stage_costs(ctx.model, probe_batch(ctx).inputs, ctx.comm);
  double largest = 0.0;
  for (const StageRange& range : stages) {
    double c = 0.0;
    for (int64_t i = range.begin; i < range.end; ++i) c += costs[i];
    largest = std::max(largest, c);
  }
  return 0.6 * largest;
}

RerunBuffers::RerunBuffers(StagedModel& model, StageRange range) {
  for (int64_t i = range.begin; i < range.end; ++i)
    for (const torch::Tensor& b : model->stage(i)->buffers()) {
      live_.push_back(b.variable_data());  // shares the storage, not the version counter
      saved_.push_back(b.detach().clone());
    }
}

RerunBuffers::~RerunBuffers() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < live_.size(); ++i) live_[i].copy_(saved_[i]);
}

void StagedPass::begin(MicroBatch mb) {
  mb_ = std::move(mb);
  samples_ = mb_.inputs.size(0);
  inputs_.assign(stages_.size(), torch::Tensor());
  outputs_.assign(stages_.size(), torch::Tensor());
  rng_ = at::detail::getDefaultCPUGenerator().get_state();
  forwards_ = backwards_ = 0;
  active_ = true;
}

void StagedPass::forward(int64_t l) {
  TraceSpan span("forward", "compute");
  ActivationScope activations;
  const StageRange range = stages_.at(l);
  torch::Tensor x = l == 0 ? mb_.inputs : outputs_[l - 1].detach().requires_grad_();
  inputs_[l] = x;
  torch::Tensor y = model_->forward_range(x, range.begin, range.end);
  if (l + 1 == static_cast<int64_t>(stages_.size())) {
    loss_ = loss_of(y, mb_.targets);
    loss_value_ = loss_.item<double>();
  } else {
    outputs_[l] = y;
  }
  ++forwards_;
}

void StagedPass::backward(int64_t l) {
  TraceSpan span("backward", "compute");
  if (l + 1 == static_cast<int64_t>(stages_.size())) {
    loss_.backward();
    loss_ = torch::Tensor();
  } else {
    outputs_[l].backward(upstream_);
    outputs_[l] = torch::Tensor();
  }
  upstream_ = l > 0 ? inputs_[l].grad() : torch::Tensor();
  inputs_[l] = torch::Tensor();
  ++backwards_;
  if (l == 0) {
    mb_ = MicroBatch();
    active_ = false;
  }
}

void StagedPass::save(Archive& archive, const std::string& prefix) const {
  archive.put(prefix + "active", static_cast<int64_t>(active_));
  if (!active_) return;
  archive.put(prefix + "inputs", mb_.inputs);
  archive.put(prefix + "targets", mb_.targets);
  archive.put(prefix + "rng", rng_);
  archive.put(prefix + "forwards", forwards_);
  archive.put(prefix + "backwards", backwards_);
  if (upstream_.defined()) archive.put(prefix + "upstream", upstream_);
}

void StagedPass::load(const Archive& archive, const std::string& prefix) {
  active_ = false;
  if (archive.integer(prefix + "active") == 0) return;
  MicroBatch mb;
  mb.inputs = archive.tensor(prefix + "inputs");
  mb.targets = archive.tensor(prefix + "targets");
  const int64_t forwards = archive.integer(prefix + "forwards");
  const int64_t backwards = archive.integer(prefix + "backwards");
  auto generator = at::detail::getDefaultCPUGenerator();
  const torch::Tensor now = generator.get_state();
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(archive.tensor(prefix + "rng"));
  }
  {
    RerunBuffers keep(model_, {0, model_->num_stages()});
    torch::AutoGradMode grad(true);
    begin(std::move(mb));
    // The stages whose graphs the pass still holds: those not yet through their backward.
    const int64_t live = static_cast<int64_t>(stages_.size()) - backwards;
    for (int64_t l = 0; l < std::min(forwards, live); ++l) forward(l);
  }
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(now);
  }
  forwards_ = forwards;
  backwards_ = backwards;
  if (archive.has(prefix + "upstream")) upstream_ = archive.tensor(prefix + "upstream");
}

}  // namespace desync
