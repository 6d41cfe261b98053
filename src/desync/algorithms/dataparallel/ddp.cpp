#include "desync/algorithms/dataparallel/ddp.h"

#include <fmt/format.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>

#include "desync/algorithms/common.h"
#include "desync/algorithms/registry.h"
#include "desync/core/error.h"
#include "desync/core/reductions.h"
#include "desync/core/trace.h"

namespace desync {

std::unique_ptr<Algorithm> make_ddp(const AlgorithmConfig& cfg) {
  SectionReader r = algorithm_options(cfg);
  DdpOptions o;
  o.bucket_cap_mb = r.get("bucket_cap_mb", o.bucket_cap_mb, 0.0, 1e6, true);
  o.first_bucket_mb = r.get("first_bucket_mb", o.first_bucket_mb, 0.0, 1e6, true);
  o.broadcast_buffers = r.get("broadcast_buffers", o.broadcast_buffers);
  o.find_unused_parameters = r.get("find_unused_parameters", o.find_unused_parameters);
  o.comm_dtype = comm_dtype_option(r, "comm_dtype");
  o.overlap = r.get("overlap", o.overlap);
  r.finish();
  return std::make_unique<Ddp>(o);
}

GradReducer::GradReducer(FlatParameters& flat, Communicator& comm, const DdpOptions& opts)
    : flat_(flat), comm_(comm), opts_(opts) {
  const auto& params = flat_.params();
  const int64_t elem = flat_.grads_flat().element_size();
  bucket_of_.assign(params.size(), -1);
  // Reverse registration order: the last layers' gradients are ready first.
  double cap = opts_.first_bucket_mb * 1024 * 1024;
  for (size_t k = params.size(); k-- > 0;) {
    if (buckets_.empty() ||
        static_cast<double>((buckets_.back().end - buckets_.back().begin) * elem) >= cap) {
      if (!buckets_.empty()) cap = opts_.bucket_cap_mb * 1024 * 1024;
      int64_t end = static_cast<int64_t>(flat_.offset(k)) + params[k].numel();
      if (buckets_.empty()) end = flat_.padded_numel();  // the padding travels with bucket 0
      buckets_.push_back(Bucket{end, end, 0, 0, nullptr, 0, 0});
    }
    Bucket& b = buckets_.back();
    b.begin = flat_.offset(k);
    ++b.params;
    bucket_of_[k] = static_cast<int64_t>(buckets_.size()) - 1;
  }
  seen_.assign(params.size(), false);
  self_ = std::make_shared<GradReducer*>(this);
  for (size_t k = 0; k < params.size(); ++k) {
    auto acc = torch::autograd::impl::grad_accumulator(params[k]);
    acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [self = self_, k](const torch::autograd::variable_list& outputs,
                          const torch::autograd::variable_list&) {
          if (*self) (*self)->mark_ready(k);
          return outputs;
        }));
    accumulators_.push_back(std::move(acc));
  }
}

GradReducer::~GradReducer() { *self_ = nullptr; }

void GradReducer::prepare() {
  for (Bucket& b : buckets_) {
    b.ready = 0;
    b.work.reset();
  }
  std::fill(seen_.begin(), seen_.end(), false);
  next_launch_ = 0;
  armed_ = true;
}

void GradReducer::mark_ready(size_t k) {
  if (!armed_ || seen_[k]) return;
  seen_[k] = true;
  ++buckets_[bucket_of_[k]].ready;
  if (opts_.overlap) launch_ready_in_order();
}

void GradReducer::launch_ready_in_order() {
  while (next_launch_ < num_buckets() &&
         buckets_[next_launch_].ready == buckets_[next_launch_].params) {
    Bucket& b = buckets_[next_launch_];
    torch::Tensor grads = flat_.grads_flat().narrow(0, b.begin, b.end - b.begin);
    const torch::ScalarType wire = opts_.comm_dtype.value_or(grads.scalar_type());
    b.issue_us = Tracer::now_us();
    b.work = comm_.all_reduce_async(grads, wire);
    b.bytes = grads.numel() * static_cast<int64_t>(c10::elementSize(wire));
    ++next_launch_;
  }
}

void GradReducer::finish() {
  launched_in_backward_ = next_launch_;
  for (int64_t b = next_launch_; b < num_buckets(); ++b) {
    if (buckets_[b].ready != buckets_[b].params && !opts_.find_unused_parameters) {
      for (size_t k = 0; k < seen_.size(); ++k)
        if (bucket_of_[k] == b && !seen_[k])
          throw Error(fmt::format(
              "ddp: parameter #{} received no gradient in backward; set "
              "algorithm.find_unused_parameters = true if the model has unused parameters",
              k));
    }
    buckets_[b].ready = buckets_[b].params;  // unused parameters contribute a zero gradient
  }
  launch_ready_in_order();
  for (int64_t b = 0; b < num_buckets(); ++b) {  // each bucket is a group of the timeline
    buckets_[b].work->wait();
    record_reduction(b, buckets_[b].issue_us, Tracer::now_us(), buckets_[b].bytes);
  }
  flat_.grads_flat().div_(static_cast<double>(comm_.world_size()));
  armed_ = false;
}

void Ddp::setup(Context& ctx) {
  accumulation_ = ctx.config.algorithm.accumulation;
  flat_ = make_replicated_flat(ctx);
  for (auto& [name, buf] : ctx.model->named_bufs()) buffers_.push_back(buf);
  reducer_ = std::make_unique<GradReducer>(*flat_, ctx.comm, opts_);
  optimizer_ = ctx.make_optimizer(param_slots(ctx.model->named_params(), ctx.config.optimizer));
}

StepReport Ddp::step(Context& ctx) {
  if (opts_.broadcast_buffers)
    for (torch::Tensor& b : buffers_) ctx.comm.broadcast(b, 0);
  flat_->grads_flat().zero_();
  StepReport report;
  double loss_sum = 0.0;
  for (int64_t k = 0; k < accumulation_; ++k) {
    if (k == accumulation_ - 1) reducer_->prepare();  // communication only during the last backward
    StepReport mb = accumulate_gradients(ctx, 1, accumulation_);
    loss_sum += mb.loss;
    report.samples += mb.samples;
  }
  reducer_->finish();
  apply_update(ctx, *flat_, *optimizer_);
  report.micro_batches = accumulation_;
  report.loss = loss_sum / static_cast<double>(accumulation_);
  return report;
}

void Ddp::save(Archive& archive) const { save_optimizer(*optimizer_, archive); }

void Ddp::load(const Archive& archive) { load_optimizer(*optimizer_, archive); }

void Ddp::load_resharded(const std::vector<Archive>& old_ranks, int64_t /*step*/) {
  load_optimizer(*optimizer_, old_ranks.front());
}

AlgorithmReport Ddp::report() const {
  MemoryReport memory = model_state_memory(*flat_, *optimizer_);
  int64_t comm_buffers = 0;
  if (opts_.comm_dtype && *opts_.comm_dtype != flat_->grads_flat().scalar_type())
    // the narrower copy and the received chunks
    comm_buffers = 2 * flat_->padded_numel() * c10::elementSize(*opts_.comm_dtype);
  memory.emplace_back("comm_buffers", comm_buffers);
  return {.memory = memory, .counts = {{"buckets", reducer_->num_buckets()}}};
}

}  // namespace desync
