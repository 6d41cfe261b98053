// The codec options, the factory and the evaluation model (boundary_codec.h).
#include "desync/algorithms/pipeline/boundary_codec.h"

#include <fmt/format.h>

#include <utility>

#include "desync/algorithms/pipeline/mapl.h"
#include "desync/algorithms/pipeline/ssn.h"
#include "desync/algorithms/pipeline/stages.h"
#include "desync/core/error.h"

namespace desync {

CodecOptions read_codec_options(SectionReader& r) {
  CodecOptions o;
  o.kind = r.get_choice("compression", "none", {"none", "ssn", "mapl"});
  o.rank = r.get("compression_rank", o.rank, 0);
  o.ratio = r.get("compression_ratio", o.ratio, 1);
  o.projector_lr = r.get("projector_lr", o.projector_lr, 0.0);
  o.spel.beta = r.get("spel_beta", o.spel.beta, 0.0, 0.999);
  o.spel.ns_steps = r.get("ns_steps", o.spel.ns_steps, 1, 100);
  o.spel.exact_polar = r.get_choice("retraction", "polar", {"polar", "newton_schulz"}) == "polar";
  o.projector_pca = r.get_choice("projector_init", "random", {"random", "pca"}) == "pca";
  o.projector_sync_both = r.get_choice("projector_sync", "sender", {"sender", "both"}) == "both";
  o.anchor = r.get_choice("anchor", "shared", {"shared", "receiver", "static", "none"});
  o.backward_bf16 = r.get_choice("backward_dtype", "model", {"model", "bfloat16"}) == "bfloat16";
  o.vq = r.get("vq", false);
  o.vq_options.groups = r.get("vq_groups", int64_t{4}, 1);
  o.vq_options.levels = r.get("vq_levels", int64_t{2}, 1, 16);
  o.vq_options.codes = r.get("vq_codes", int64_t{256}, 2, 65536);
  o.vq_options.decay = r.get("vq_decay", o.vq_options.decay, 0.0, 0.999);
  o.vq_stream_rows = r.get("vq_stream_rows", o.vq_stream_rows, 0);
  if (o.vq && o.kind != "mapl")
    throw ConfigError(
        "algorithm.vq = true quantises MAPL's projections: set compression = \"mapl\"");
  return o;
}

int64_t BoundaryInfo::tokens() const {
  int64_t n = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) n *= shape[i];
  return n;
}

void BoundaryCodec::send_sync(Communicator& comm, const torch::Tensor& t, int64_t dst,
                              int64_t tag) {
  torch::Tensor c = t.detach().contiguous().clone();
  sync_bytes_ += c.numel() * static_cast<int64_t>(c.element_size());
  sync_sends_.emplace_back(comm.send_async(c, dst, tag), c);
}

void BoundaryCodec::wait_sync_sends() {
  for (auto& [work, t] : sync_sends_) work->wait();
  sync_sends_.clear();
}

namespace {

// The vocabulary of a GPT (its token embedding's rows); ConfigError for another model.
int64_t gpt_vocab(const StagedModel& model, const std::string& kind) {
  for (auto& [name, p] : model->named_params())
    if (name == "embed.0.tok.weight") return p.size(0);
  throw ConfigError(fmt::format(
      "algorithm.compression = \"{}\" compresses a GPT's residual stream: set model.name = "
      "\"gpt\" (or compression = \"none\")",
      kind));
}

class CompressedForwardImpl : public torch::nn::Module {
 public:
  CompressedForwardImpl(StagedModel model, std::vector<StageRange> ranges,
                        std::vector<const BoundaryCodec*> codecs)
      : model_(register_module("model", std::move(model))),
        ranges_(std::move(ranges)),
        codecs_(std::move(codecs)) {}

  torch::Tensor forward(const torch::Tensor& ids) {
    torch::Tensor x = ids;
    for (size_t p = 0; p < ranges_.size(); ++p) {
      x = model_->forward_range(x, ranges_[p].begin, ranges_[p].end);
      if (p < codecs_.size()) x = codecs_[p]->roundtrip(x, ids);
    }
    return x;
  }

 private:
  StagedModel model_;
  std::vector<StageRange> ranges_;
  std::vector<const BoundaryCodec*> codecs_;
};
TORCH_MODULE(CompressedForward);

}  // namespace

std::vector<std::unique_ptr<BoundaryCodec>> make_boundary_codecs(
    const CodecOptions& options, StagedModel& model, const std::vector<StageRange>& ranges,
    const std::vector<std::vector<int64_t>>& shapes, int64_t rank, int64_t micro_batches,
    const OptimizerConfig& optimizer) {
  std::vector<std::unique_ptr<BoundaryCodec>> codecs;
  const int64_t vocab = gpt_vocab(model, options.kind);
  std::shared_ptr<const SsnBasis> basis;
  for (int64_t p = 0; p + 1 < static_cast<int64_t>(ranges.size()); ++p) {
    BoundaryInfo info;
    info.index = p;
    info.shape = shapes.at(ranges[p].end);
    info.dtype = model->dtype();
    info.vocab = vocab;
    info.micro_batches = micro_batches;
    info.role = rank == p       ? BoundaryInfo::Role::kSender
                : rank == p + 1 ? BoundaryInfo::Role::kReceiver
                                : BoundaryInfo::Role::kObserver;
    const int64_t d = info.d();
    const int64_t r = options.rank > 0 ? options.rank : d / options.ratio;
    if (r < 1 || r > d)
      throw ConfigError(fmt::format(
          "algorithm.compression_rank/compression_ratio give rank {} at a boundary of width {}; "
          "it must be in [1, {}]",
          r, d, d));
    if (options.kind == "ssn") {
      if (!basis) basis = SsnBasis::make(d, r, vocab, options.seed, info.dtype);
      std::vector<SsnConstrained> constrained;
      if (info.role == BoundaryInfo::Role::kSender)
        constrained = ssn_constrained_tensors(model, ranges[p].begin, ranges[p].end);
      codecs.push_back(std::make_unique<SsnCodec>(info, basis, std::move(constrained)));
    } else {
      if (options.vq && r % options.vq_options.groups != 0)
        throw ConfigError(
            fmt::format("algorithm.vq_groups ({}) must divide the projection rank ({})",
                        options.vq_options.groups, r));
      codecs.push_back(std::make_unique<MaplCodec>(info, options, r, optimizer));
    }
  }
  return codecs;
}

StagedModel compressed_model(StagedModel model, const std::vector<StageRange>& ranges,
                             const std::vector<std::unique_ptr<BoundaryCodec>>& codecs) {
  std::vector<const BoundaryCodec*> views;
  for (const auto& c : codecs) views.push_back(c.get());
  const torch::ScalarType dtype = model->dtype();
  StagedModel wrapper;
  wrapper->add_stage("pipeline", torch::nn::Sequential(CompressedForward(model, ranges, views)));
  wrapper->set_dtype(dtype);
  return wrapper;
}

}  // namespace desync
