#include "desync/algorithms/pipeline/stages.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "desync/algorithms/pipeline/boundary_codec.h"
#include "desync/core/error.h"
#include "desync/core/trace.h"

namespace desync {
namespace {

constexpr int64_t kForwardHeader = 11, kForwardX = 12, kForwardLabels = 13;
constexpr int64_t kBackwardHeader = 21, kBackwardX = 22, kBackwardGrad = 23;
constexpr int64_t kForwardTokens = 14, kForwardPayload = 30;  // payload tensor i: tag 30 + i
constexpr size_t kSendsPerForward = 3;  // a forward message: header, activation, labels

}  // namespace

std::vector<StageRange> place_stages(int64_t num_stages, int64_t ranks,
                                     const std::vector<int64_t>& counts,
                                     const std::vector<double>& costs) {
  if (num_stages < ranks)
    throw ConfigError(fmt::format(
        "the model has {} stages, fewer than the {} pipeline ranks; use fewer workers or a "
        "model with more stages",
        num_stages, ranks));
  std::vector<StageRange> out;
  if (!counts.empty()) {
    int64_t sum = 0;
    for (int64_t c : counts) sum += c;
    if (static_cast<int64_t>(counts.size()) != ranks || sum != num_stages)
      throw ConfigError(fmt::format(
          "algorithm.stages_per_rank must have one entry per worker ({}) adding up to the "
          "model's {} stages",
          ranks, num_stages));
    int64_t begin = 0;
    for (int64_t c : counts) {
      out.push_back({begin, begin + c});
      begin += c;
    }
    return out;
  }
  // best[r][i]: the smallest largest-part cost of splitting stages [0, i) over r ranks.
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> prefix(num_stages + 1, 0.0);
  for (int64_t i = 0; i < num_stages; ++i) prefix[i + 1] = prefix[i] + costs.at(i);
  std::vector<std::vector<double>> best(ranks + 1, std::vector<double>(num_stages + 1, inf));
  std::vector<std::vector<int64_t>> cut(ranks + 1, std::vector<int64_t>(num_stages + 1, 0));
  best[0][0] = 0.0;
  for (int64_t r = 1; r <= ranks; ++r)
    for (int64_t i = r; i <= num_stages; ++i)
      for (int64_t j = r - 1; j < i; ++j) {
        double v = std::max(best[r - 1][j], prefix[i] - prefix[j]);
        if (v < best[r][i]) best[r][i] = v, cut[r][i] = j;
      }
  out.resize(ranks);
  for (int64_t r = ranks, i = num_stages; r >= 1; --r) {
    out[r - 1] = {cut[r][i], i};
    i = cut[r][i];
  }
  return out;
}

PlacementOptions read_placement_options(SectionReader& r) {
  PlacementOptions o;
  o.stages_per_rank = r.get("stages_per_rank", o.stages_per_rank, 1);
  o.balance_measured = r.get_choice("balance", "count", {"count", "measured"}) == "measured";
  return o;
}

std::vector<StageRange> place_pipeline(Context& ctx, const PlacementOptions& o) {
  const int64_t n = ctx.model->num_stages();
  std::vector<double> costs(n, 1.0);
  if (o.balance_measured && o.stages_per_rank.empty()) {
    MicroBatch probe =
        take_range(ctx.batches.dataset(), 0, ctx.batches.batch_size(), ctx.config.data.normalize);
    costs = measure_stage_costs(ctx.model, probe.inputs, ctx.comm);
  }
  std::vector<StageRange> ranges = place_stages(n, ctx.comm.world_size(), o.stages_per_rank, costs);
  // A tied model shares a parameter between its first and last stages (staged_model.h); only
  // one rank would own and update it.
  if (ctx.model->has_tied_stages() && ranges.front().end < n)
    throw ConfigError(
        "model.tie_embeddings ties the first and last stages; pipelines place them on different "
        "ranks: set model.tie_embeddings = false");
  return ranges;
}

AlgorithmTraits pipeline_traits() {
  AlgorithmTraits traits;
  traits.data = AlgorithmTraits::Data::kFirstRank;
  traits.accumulations_per_step = 1;
  return traits;
}

std::vector<std::pair<std::string, torch::Tensor>> named_params_of(const StagedModel& model,
                                                                   const FlatParameters& flat) {
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (auto& [name, p] : model->named_params())
    for (const auto& q : flat.params())
      if (p.is_same(q)) named.emplace_back(name, p);
  return named;
}

std::vector<double> measure_stage_costs(StagedModel& model, const torch::Tensor& inputs,
                                        Communicator& comm) {
  const int64_t n = model->num_stages();
  BufferSnapshot keep(model, {0, n});
  std::vector<double> costs(n, 0.0);
  torch::Tensor x = inputs;
  for (int64_t i = 0; i < n; ++i) {
    torch::Tensor next;
    std::vector<double> times;
    for (int repeat = 0; repeat < 3; ++repeat) {
      int64_t t0 = Tracer::now_us();
      torch::Tensor in = x.is_floating_point() ? x.detach().requires_grad_() : x;
      torch::Tensor out = model->forward_range(in, i, i + 1);
      out.sum().backward();
      times.push_back(static_cast<double>(Tracer::now_us() - t0) * 1e-6);
      next = out.detach();
    }
    std::sort(times.begin(), times.end());
    costs[i] = times[1];
    x = next;
  }
  for (auto& p : model->parameters())
    if (p.grad().defined()) p.mutable_grad().zero_();
  torch::Tensor t = torch::tensor(costs, torch::kFloat64);
  comm.all_reduce(t);
  t.div_(static_cast<double>(comm.world_size()));
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + n);
}

std::vector<std::vector<int64_t>> boundary_shapes(StagedModel& model, const torch::Tensor& inputs) {
  torch::NoGradGuard no_grad;
  bool was_training = model->is_training();
  model->eval();
  std::vector<std::vector<int64_t>> shapes = {inputs.sizes().vec()};
  torch::Tensor x = inputs;
  for (int64_t i = 0; i < model->num_stages(); ++i) {
    x = model->forward_range(x, i, i + 1);
    shapes.push_back(x.sizes().vec());
  }
  if (was_training) model->train();
  return shapes;
}

void share_stages(StagedModel& model, const std::vector<StageRange>& ranges, Communicator& comm) {
  torch::NoGradGuard no_grad;
  for (int64_t owner = 0; owner < static_cast<int64_t>(ranges.size()); ++owner)
    for (int64_t i = ranges[owner].begin; i < ranges[owner].end; ++i) {
      for (auto& p : model->stage(i)->parameters()) comm.broadcast(p.detach(), owner);
      for (auto& b : model->stage(i)->buffers()) comm.broadcast(b.detach(), owner);
    }
}

BufferSnapshot::BufferSnapshot(StagedModel& model, StageRange range) {
  for (int64_t i = range.begin; i < range.end; ++i)
    for (auto& b : model->stage(i)->buffers()) {
      live_.push_back(b);
      saved_.push_back(b.clone());
    }
}

BufferSnapshot::~BufferSnapshot() {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < live_.size(); ++i) live_[i].copy_(saved_[i]);
}

void save_message(Archive& archive, const std::string& prefix, const PipeMessage& m) {
  archive.put(prefix + "id", m.id);
  for (const auto& [name, t] : {std::pair<const char*, const torch::Tensor&>{"x", m.x},
                                {"labels", m.labels},
                                {"grad", m.grad},
                                {"tokens", m.tokens}})
    if (t.defined()) archive.put(prefix + name, t);
}

PipeMessage load_message(const Archive& archive, const std::string& prefix) {
  PipeMessage m;
  m.id = archive.integer(prefix + "id");
  for (const auto& [name, t] : {std::pair<const char*, torch::Tensor&>{"x", m.x},
                                {"labels", m.labels},
                                {"grad", m.grad},
                                {"tokens", m.tokens}})
    if (archive.has(prefix + name)) t = archive.tensor(prefix + name);
  return m;
}

PipeLink::PipeLink(Communicator& comm, std::vector<int64_t> in_shape,
                   std::vector<int64_t> out_shape, std::vector<int64_t> label_shape,
                   bool backward_carries_x, torch::ScalarType dtype, BoundaryCodec* in_codec,
                   BoundaryCodec* out_codec)
    : comm_(comm),
      in_shape_(std::move(in_shape)),
      out_shape_(std::move(out_shape)),
      label_shape_(std::move(label_shape)),
      backward_carries_x_(backward_carries_x),
      dtype_(torch::TensorOptions().dtype(dtype)),
      in_codec_(in_codec),
      out_codec_(out_codec) {
  if (backward_carries_x_ && (in_codec_ || out_codec_))
    throw ConfigError("boundary compression does not apply to pipelines that rebuild inputs");
}

void PipeLink::send(const torch::Tensor& t, int64_t dst, int64_t tag) {
  torch::Tensor c = t.detach().contiguous();
  (dst > comm_.rank() ? forward_bytes_ : backward_bytes_) +=
      c.numel() * static_cast<int64_t>(c.element_size());
  pending_.emplace_back(comm_.send_async(c, dst, tag), c);
}

// Token ids take one slot of the activation's element size: int32 next to float32 (b = 4).
torch::ScalarType PipeLink::token_wire_type() const {
  return c10::elementSize(c10::typeMetaToScalarType(dtype_.dtype())) >= 8 ? torch::kInt64
                                                                          : torch::kInt32;
}

void PipeLink::recv_header(int64_t src, int64_t tag, int64_t expected, const char* what) {
  torch::Tensor header = torch::empty({1}, torch::kInt64);
  comm_.recv(header, src, tag);
  int64_t got = header.item<int64_t>();
  if (got != expected)
    throw Error(
        fmt::format("pipeline: rank {} expected the {} of micro-batch {} from rank {}, "
                    "got micro-batch {}",
                    comm_.rank(), what, expected, src, got));
}

void PipeLink::send_forward(const PipeMessage& m) {  // kSendsPerForward sends
  const int64_t dst = comm_.rank() + 1;
  send(torch::tensor({m.id}, torch::kInt64), dst, kForwardHeader);
  if (out_codec_) {
    std::vector<torch::Tensor> payload = out_codec_->encode(m.id, m.x, m.tokens);
    for (size_t i = 0; i < payload.size(); ++i)
      send(payload[i], dst, kForwardPayload + static_cast<int64_t>(i));
    if (out_codec_->needs_tokens()) send(m.tokens.to(token_wire_type()), dst, kForwardTokens);
  } else {
    send(m.x, dst, kForwardX);
  }
  send(m.labels, dst, kForwardLabels);
}

PipeMessage PipeLink::recv_forward(int64_t id) {
  const int64_t src = comm_.rank() - 1;
  recv_header(src, kForwardHeader, id, "activation");
  PipeMessage m;
  m.id = id;
  if (in_codec_) {
    std::vector<torch::Tensor> payload = in_codec_->payload_buffers();
    for (size_t i = 0; i < payload.size(); ++i)
      comm_.recv(payload[i], src, kForwardPayload + static_cast<int64_t>(i));
    if (in_codec_->needs_tokens()) {
      torch::Tensor tokens = torch::empty(label_shape_, token_wire_type());
      comm_.recv(tokens, src, kForwardTokens);
      m.tokens = tokens.to(torch::kInt64);
    }
    m.x = in_codec_->decode(id, payload, m.tokens);
  } else {
    m.x = torch::empty(in_shape_, dtype_);
    comm_.recv(m.x, src, kForwardX);
  }
  m.labels = torch::empty(label_shape_, torch::kInt64);
  comm_.recv(m.labels, src, kForwardLabels);
  return m;
}

void PipeLink::send_backward(const PipeMessage& m) {
  const int64_t dst = comm_.rank() - 1;
  send(torch::tensor({m.id}, torch::kInt64), dst, kBackwardHeader);
  if (backward_carries_x_) send(m.x, dst, kBackwardX);
  send(in_codec_ ? in_codec_->encode_grad(m.id, m.grad) : m.grad, dst, kBackwardGrad);
}

PipeMessage PipeLink::recv_backward(int64_t id) {
  const int64_t src = comm_.rank() + 1;
  recv_header(src, kBackwardHeader, id, "gradient");
  PipeMessage m;
  m.id = id;
  if (backward_carries_x_) {
    m.x = torch::empty(out_shape_, dtype_);
    comm_.recv(m.x, src, kBackwardX);
  }
  if (out_codec_) {
    torch::Tensor payload = out_codec_->grad_buffer();
    comm_.recv(payload, src, kBackwardGrad);
    m.grad = out_codec_->decode_grad(id, payload);
  } else {
    m.grad = torch::empty(out_shape_, dtype_);
    comm_.recv(m.grad, src, kBackwardGrad);
  }
  return m;
}

void PipeLink::wait_older_sends() {
  for (; older_ > 0; --older_) {
    pending_.front().first->wait();
    pending_.pop_front();
  }
  older_ = pending_.size();
}

void PipeLink::wait_until_in_flight(int64_t messages) {
  const size_t keep = static_cast<size_t>(std::max<int64_t>(0, messages)) * kSendsPerForward;
  while (pending_.size() > keep) {
    pending_.front().first->wait();
    pending_.pop_front();
  }
  older_ = std::min(older_, pending_.size());
}

void PipeLink::wait_sends() {
  for (auto& [work, tensor] : pending_) work->wait();
  pending_.clear();
  older_ = 0;
}

std::unique_ptr<PipeLink> make_pipe_link(Context& ctx, StageRange mine, bool backward_carries_x,
                                         BoundaryCodec* in_codec, BoundaryCodec* out_codec) {
  MicroBatch probe =
      take_range(ctx.batches.dataset(), 0, ctx.batches.batch_size(), ctx.config.data.normalize);
  auto shapes = boundary_shapes(ctx.model, probe.inputs);
  return std::make_unique<PipeLink>(ctx.comm, shapes[mine.begin], shapes[mine.end],
                                    probe.targets.sizes().vec(), backward_carries_x,
                                    ctx.model->dtype(), in_codec, out_codec);
}

}  // namespace desync
