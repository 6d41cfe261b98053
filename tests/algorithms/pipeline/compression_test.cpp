// Boundary compression on the GPT pipeline (spec compression-mapl.md): SSN's lossless boundary,
// its constraint and its gradients against a single process; MAPL's lossless full-rank case, its
// hand-derived gradients against autograd, and both ends kept in step.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "algorithms/fake_run.h"
#include "desync/algorithms/pipeline/mapl.h"
#include "desync/algorithms/pipeline/pipeline.h"
#include "desync/algorithms/pipeline/ssn.h"
#include "desync/algorithms/pipeline/stages.h"

namespace desync {
namespace {

using testing::flat_params;
using testing::max_diff;
using testing::RankState;
using testing::run_on_fake_world;
using testing::tiny_config;

constexpr int64_t kVocab = 40, kSeq = 8, kWidth = 16;

// Random token windows: [n, seq + 1] int16, as the text readers keep them.
Dataset token_split(int64_t n, uint64_t seed) {
  Dataset d;
  d.name = "tokens";
  d.kind = DataKind::kText;
  auto gen = at::detail::createCPUGenerator(seed);
  d.inputs = torch::randint(0, kVocab, {n, kSeq + 1}, gen, torch::kInt16);
  d.num_classes = kVocab;
  return d;
}

DatasetSplits token_data() { return {token_split(256, 1), token_split(32, 2), ""}; }

// A two-layer GPT (stages embed, block0, block1, head); on two pipeline ranks the boundary sits
// after block0. Two micro-batches of 4 windows per step.
Config gpt_config(std::vector<std::string> extra) {
  std::vector<std::string> base = {"model.name=\"gpt\"",
                                   "model.n_layer=2",
                                   "model.n_head=2",
                                   "model.d_model=16",
                                   "data.seq_len=8",
                                   "data.batch_size=4",
                                   "algorithm.name=\"pipeline\"",
                                   "algorithm.accumulation=2",
                                   "optimizer.lr=0.01"};
  base.insert(base.end(), extra.begin(), extra.end());
  return tiny_config(base);
}

constexpr int64_t kSplit = 2;  // rank 0 owns stages [0, 2)

std::shared_ptr<const SsnBasis> ssn_basis(int64_t k, torch::ScalarType dtype = torch::kFloat) {
  return SsnBasis::make(kWidth, k, kVocab, 0, dtype);  // run.seed = 0
}

// ||(I - U U^T) W|| / ||W|| over the output side, rows or embedding offset of `c`.
double off_subspace(const SsnConstrained& c, const SsnBasis& b) {
  torch::Tensor t = c.tensor.detach();
  torch::Tensor off;
  switch (c.side) {
    case SsnConstrained::Side::kOutputs:
      off = t.dim() == 1 ? t - b.u.mv(b.u.t().mv(t)) : t - b.u.mm(b.u.t().mm(t));
      break;
    case SsnConstrained::Side::kRows:
      off = t - t.mm(b.u).mm(b.u.t());
      break;
    case SsnConstrained::Side::kEmbedding:
      t = t - b.e_fix;
      off = t - t.mm(b.u).mm(b.u.t());
      break;
  }
  return (off.norm() / t.norm()).item<double>();
}

// Spec §1 test 2: after optimizer steps (AdamW with weight decay) and the projection, every
// residual-writing tensor of the sender lies in the subspace; the last rank's do not.
TEST(Ssn, ResidualWritingTensorsStayInTheSubspaceAfterEveryStep) {
  Config cfg = gpt_config({"algorithm.compression=\"ssn\"", "algorithm.compression_ratio=4",
                           "optimizer.name=\"adamw\"", "optimizer.weight_decay=0.1"});
  auto ranks = run_on_fake_world(cfg, 2, 3, token_data());
  auto basis = ssn_basis(4);
  auto sender = ssn_constrained_tensors(ranks[0].model, 0, kSplit);
  std::vector<std::string> names;
  for (auto& c : sender) {
    names.push_back(c.name);
    EXPECT_LT(off_subspace(c, *basis), 1e-6) << c.name;
  }
  EXPECT_EQ(names,
            (std::vector<std::string>{"embed.0.tok.weight", "embed.0.pos.weight",
                                      "block0.0.attn.proj.weight", "block0.0.attn.proj.bias",
                                      "block0.0.mlp.proj.weight", "block0.0.mlp.proj.bias"}));
  for (auto& c : ssn_constrained_tensors(ranks[1].model, kSplit, 4))  // unconstrained
    EXPECT_GT(off_subspace(c, *basis), 0.5) << c.name;
}

// Spec §1 test 1: on the trained, constrained model, decode(encode(h)) = h at the boundary.
TEST(Ssn, BoundaryIsLosslessOnTheConstrainedModel) {
  Config cfg = gpt_config({"algorithm.compression=\"ssn\"", "algorithm.compression_ratio=4"});
  DatasetSplits data = token_data();
  auto ranks = run_on_fake_world(cfg, 2, 3, data);
  StagedModel model = ranks[0].model;
  torch::Tensor ids = data.test.inputs.slice(1, 0, kSeq).to(torch::kInt64);
  torch::Tensor h = model->forward_range(ids, 0, kSplit).detach();
  BoundaryInfo info{0, h.sizes().vec(), torch::kFloat, kVocab, 2, BoundaryInfo::Role::kObserver};
  SsnCodec codec(info, ssn_basis(4), {});
  auto payload = codec.encode(0, h, ids);
  ASSERT_EQ(payload.at(0).size(-1), 4);
  EXPECT_LT(max_diff(codec.decode(0, payload, ids), h), 1e-5);
  EXPECT_LT(max_diff(codec.roundtrip(h, ids), h), 1e-5);
  // The same codec on an unconstrained model's activation loses most of it.
  StagedModel fresh = testing::run_on_fake_world(gpt_config({}), 1, 0, data)[0].model;
  torch::Tensor raw = fresh->forward_range(ids, 0, kSplit).detach();
  EXPECT_GT(max_diff(codec.roundtrip(raw, ids), raw), 1e-2);
}

// Spec §1 test 3, in the projection form: the pipeline's backward sends U-projected gradients,
// which are exact for every parameter whose effect on the residual stream lies in span(U), and
// the tangent-space gradient for the constrained ones. So with plain SGD, the SSN pipeline
// equals one process that takes the full gradient step and then projects.
TEST(Ssn, PipelineEqualsOneProcessThatProjectsAfterEachSgdStep) {
  DatasetSplits data = token_data();
  for (const auto& precision : {testing::kFloat32, testing::kFloat64})
    for (int64_t world : {2, 3}) {  // on 3 ranks the middle one relays the token ids
      std::vector<std::string> extra = precision.overrides;
      extra.push_back("algorithm.compression_ratio=4");
      extra.push_back("algorithm.compression=\"ssn\"");
      Config pipe = gpt_config(extra);
      extra.resize(precision.overrides.size());
      extra.push_back("algorithm.name=\"single\"");
      Config single = gpt_config(extra);
      auto basis = ssn_basis(4, pipe.model.dtype == "float64" ? torch::kDouble : torch::kFloat);
      // Every rank but the last sends, and constrains its stages.
      auto ranges = place_stages(4, world, {}, std::vector<double>(4, 1.0));
      const int64_t constrained_end = ranges.back().begin;
      auto project = [&](StagedModel& m) {
        ssn_project(ssn_constrained_tensors(m, 0, constrained_end), *basis);
      };
      testing::FakeRunOptions options;
      options.before_setup = [&](int64_t, StagedModel& m) { project(m); };
      options.after_step = [&](int64_t, int64_t, RankState& s) { project(s.model); };
      auto ref = run_on_fake_world(single, 1, 3, data, options);
      auto ranks = run_on_fake_world(pipe, world, 3, data);
      std::vector<torch::Tensor> parts;
      for (int64_t r = 0; r < world; ++r)
        for (int64_t i = ranges[r].begin; i < ranges[r].end; ++i)
          for (auto& p : ranks[r].model->stage(i)->parameters())
            parts.push_back(p.detach().reshape({-1}));
      EXPECT_LT(max_diff(torch::cat(parts), flat_params(ref[0].model)), precision.tolerance)
          << precision.name << ", " << world << " ranks";
      for (size_t t = 0; t < 3; ++t)
        EXPECT_NEAR(ranks[world - 1].losses[t], ref[0].losses[t], precision.tolerance)
            << precision.name << ", " << world << " ranks";
    }
}

// Spec §2 test 2: with r = d and a shared anchor the boundary is lossless, so the MAPL pipeline
// trains exactly as the uncompressed one (its projector and anchors move, to no effect).
TEST(Mapl, FullRankWithASharedAnchorTrainsAsTheUncompressedPipeline) {
  DatasetSplits data = token_data();
  std::vector<std::string> adamw = {"optimizer.name=\"adamw\"", "optimizer.lr=0.003"};
  auto plain = run_on_fake_world(gpt_config(adamw), 2, 4, data);
  for (std::string anchor : {"shared", "static"}) {  // a trained and a fixed shared anchor
    std::vector<std::string> mapl = adamw;
    mapl.insert(mapl.end(),
                {"algorithm.compression=\"mapl\"", "algorithm.anchor=\"" + anchor + "\"",
                 "algorithm.compression_ratio=1"});
    auto full = run_on_fake_world(gpt_config(mapl), 2, 4, data);
    for (int r = 0; r < 2; ++r)
      EXPECT_LT(max_diff(flat_params(plain[r].model), flat_params(full[r].model)), 1e-5) << anchor;
    for (size_t t = 0; t < 4; ++t)
      EXPECT_NEAR(plain[1].losses[t], full[1].losses[t], 1e-5) << anchor;
    // Not a vacuous pass: at half rank the same run differs.
    mapl.back() = "algorithm.compression_ratio=2";
    auto half = run_on_fake_world(gpt_config(mapl), 2, 4, data);
    EXPECT_GT(std::abs(half[1].losses[3] - plain[1].losses[3]), 1e-4) << anchor;
  }
}

// The hand-derived boundary gradients (mapl.h) against autograd through the same boundary
// written as one differentiable expression, X^ = (X - a) A A^T + a with a = E[tok] P (shared
// anchor), or X^ = X A A^T + a (receiver's anchor): the sender's dL/dX, the two ends' parts of
// dL/dA summed, and the receiver's dL/dE.
TEST(Mapl, BoundaryGradientsMatchAutograd) {
  for (std::string anchor : {"shared", "receiver"}) {
    CodecOptions o;
    o.kind = "mapl";
    o.anchor = anchor;
    OptimizerConfig sgd;
    BoundaryInfo info{0, {2, kSeq, kWidth}, torch::kDouble, kVocab, 1, BoundaryInfo::Role::kSender};
    MaplCodec sender(info, o, 4, sgd);
    info.role = BoundaryInfo::Role::kReceiver;
    MaplCodec receiver(info, o, 4, sgd);
    auto gen = at::detail::createCPUGenerator(7);
    auto f64 = torch::TensorOptions().dtype(torch::kDouble);
    torch::Tensor e = torch::randn({kVocab, 4}, gen, f64);
    sender.anchors().copy_(e);
    receiver.anchors().copy_(e);
    torch::Tensor x = torch::randn({2, kSeq, kWidth}, gen, f64);
    torch::Tensor w = torch::randn({2, kSeq, kWidth}, gen, f64);  // dL/dX^
    torch::Tensor tok = torch::randint(0, kVocab, {2, kSeq}, gen, torch::kInt64);

    torch::Tensor xr = x.clone().requires_grad_();
    torch::Tensor ar = sender.projector().clone().requires_grad_();
    torch::Tensor er = e.clone().requires_grad_();
    torch::Tensor an = er.index({tok.reshape({-1})}).mm(sender.anchor_basis()).reshape(x.sizes());
    torch::Tensor sent = anchor == "shared" ? xr - an : xr;
    torch::Tensor xhat = torch::matmul(torch::matmul(sent, ar), ar.t()) + an;
    (xhat * w).sum().backward();

    std::vector<torch::Tensor> payload = sender.encode(0, x, tok);
    EXPECT_LT(max_diff(receiver.decode(0, payload, tok), xhat.detach()), 1e-12) << anchor;
    torch::Tensor dx = sender.decode_grad(0, receiver.encode_grad(0, w));
    EXPECT_LT(max_diff(dx, xr.grad()), 1e-12) << anchor;
    EXPECT_LT(max_diff(sender.projector_gradient() + receiver.projector_gradient(), ar.grad()),
              1e-12)
        << anchor;
    EXPECT_LT(max_diff(receiver.anchor_gradient(), er.grad()), 1e-12) << anchor;
    // Each end's part matters: either alone is off.
    EXPECT_GT(max_diff(receiver.projector_gradient(), ar.grad()), 1e-3) << anchor;
    EXPECT_GT(max_diff(sender.projector_gradient(), ar.grad()), 1e-3) << anchor;
  }
}

// anchor = "static": a fixed, full-width token embedding rides across the boundary, so two
// tokens with the same activation arrive different (by their anchors outside span(A)); without
// an anchor they arrive the same.
TEST(Mapl, StaticAnchorCarriesTokenIdentityOutsideTheProjection) {
  BoundaryInfo info{0, {1, kSeq, kWidth}, torch::kDouble, kVocab, 1, BoundaryInfo::Role::kReceiver};
  torch::Tensor x = torch::randn({1, kSeq, kWidth}, torch::kDouble);
  torch::Tensor one = torch::zeros({1, kSeq}, torch::kInt64),
                two = torch::ones({1, kSeq}, torch::kInt64);
  for (std::string anchor : {"static", "none"}) {
    CodecOptions o;
    o.kind = "mapl";
    o.anchor = anchor;
    MaplCodec codec(info, o, 4, OptimizerConfig{});
    const double apart = max_diff(codec.roundtrip(x, one), codec.roundtrip(x, two));
    if (anchor == "static")
      EXPECT_GT(apart, 1e-3);
    else
      EXPECT_EQ(apart, 0.0);
  }
}

// The per-step messages keep both ends of a boundary on one projector and one anchor table,
// whichever end takes the SPEL step; the projector stays on the manifold and moves.
TEST(Mapl, BothEndsHoldTheSameProjectorAndAnchorsAfterEachStep) {
  DatasetSplits data = token_data();
  for (std::string sync : {"sender", "both"}) {
    Config cfg = gpt_config({"optimizer.name=\"adamw\"", "optimizer.lr=0.003",
                             "algorithm.compression=\"mapl\"", "algorithm.compression_ratio=4",
                             "algorithm.projector_sync=\"" + sync + "\""});
    auto ranks = run_on_fake_world(cfg, 2, 3, data);
    Archive a0, a1;
    ranks[0].algorithm->save(a0);
    ranks[1].algorithm->save(a1);
    torch::Tensor p0 = a0.tensor("codec0.projector"), p1 = a1.tensor("codec0.projector");
    EXPECT_EQ(max_diff(p0, p1), 0.0) << sync;
    EXPECT_EQ(max_diff(a0.tensor("codec0.anchors"), a1.tensor("codec0.anchors")), 0.0) << sync;
    EXPECT_GT(a1.tensor("codec0.anchors").abs().max().item<double>(), 0.0) << sync;
    EXPECT_LT(max_diff(p0.t().mm(p0), torch::eye(4)), 1e-5) << sync;
    EXPECT_GT(max_diff(p0, random_stiefel(kWidth, 4, 7919, torch::kFloat)), 1e-4) << sync;
  }
}

// The receiver decodes VQ indices with its own copy of the codebooks, which the sender streams
// a slice at a time: streaming every row with every message keeps the copy one EMA update
// behind the sender's codebooks; one row per message leaves most of it where it started.
TEST(Mapl, StreamedCodebooksKeepTheReceiversCopyNearTheSenders) {
  DatasetSplits data = token_data();
  auto gap = [&](int64_t rows) {
    Config cfg = gpt_config({"algorithm.compression=\"mapl\"", "algorithm.compression_ratio=4",
                             "algorithm.vq=true", "algorithm.vq_groups=2", "algorithm.vq_codes=16",
                             "algorithm.vq_stream_rows=" + std::to_string(rows)});
    auto ranks = run_on_fake_world(cfg, 2, 3, data);
    Archive a0, a1;
    ranks[0].algorithm->save(a0);
    ranks[1].algorithm->save(a1);
    return max_diff(a0.tensor("codec0.vq.codebooks"), a1.tensor("codec0.vq_copy"));
  };
  const double full = gap(16), slow = gap(1);
  EXPECT_LT(full, 0.2 * slow) << "every row streamed: " << full << ", one row: " << slow;
}

// projector_init = "pca": the sender starts from the best rank-r subspace of a probe
// micro-batch's boundary activation (its reconstruction error is the SVD's tail) and sends it to
// the receiver, so both ends start from the same A.
TEST(Mapl, PcaInitialisationStartsBothEndsFromTheActivationsTopSubspace) {
  DatasetSplits data = token_data();
  Config cfg = gpt_config({"algorithm.compression=\"mapl\"", "algorithm.compression_ratio=4",
                           "algorithm.projector_init=\"pca\""});
  auto ranks = run_on_fake_world(cfg, 2, 0, data);
  Archive a0, a1;
  ranks[0].algorithm->save(a0);
  ranks[1].algorithm->save(a1);
  torch::Tensor a = a0.tensor("codec0.projector");
  EXPECT_EQ(max_diff(a, a1.tensor("codec0.projector")), 0.0);
  EXPECT_LT(max_diff(a.t().mm(a), torch::eye(4)), 1e-5);
  MicroBatch probe = take_range(data.train, 0, 4, false);
  torch::Tensor x =
      ranks[0].model->forward_range(probe.inputs, 0, kSplit).detach().reshape({-1, kWidth});
  auto error = [&](const torch::Tensor& p) {
    return (x - x.mm(p).mm(p.t())).norm().item<double>();
  };
  torch::Tensor sv = torch::linalg_svdvals(x);
  const double tail = sv.slice(0, 4).pow(2).sum().sqrt().item<double>();
  EXPECT_NEAR(error(a), tail, 1e-4 * tail);
  EXPECT_GT(error(random_stiefel(kWidth, 4, 7919, torch::kFloat)), 1.2 * tail);
}

}  // namespace
}  // namespace desync
