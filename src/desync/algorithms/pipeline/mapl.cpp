// MAPL's boundary codec: learned Stiefel projectors, anchors, streaming residual VQ (mapl.h).
#include "desync/algorithms/pipeline/mapl.h"

#include <ATen/CPUGeneratorImpl.h>

#include <utility>

#include "desync/algorithms/common.h"
#include "desync/core/error.h"

namespace desync {
namespace {

using Role = BoundaryInfo::Role;

// Tags of the per-step messages of one boundary (wire_tag(k)).
constexpr int64_t kReceiverGradient = 0, kSenderGradient = 1, kProjector = 2;
constexpr int64_t kAnchorCount = 3, kAnchorRows = 4, kAnchorValues = 5, kInitialProjector = 6;

// The sender's codebooks with their EMA k-means counts (the sums derive from both).
void save_vq(ResidualVq& vq, Archive& archive, const std::string& prefix) {
  archive.put(prefix + "codebooks", vq.codebooks());
  archive.put(prefix + "ema_counts", vq.ema_counts());
}

void load_vq(ResidualVq& vq, const Archive& archive, const std::string& prefix) {
  archive.copy_into(prefix + "codebooks", vq.codebooks());
  archive.copy_into(prefix + "ema_counts", vq.ema_counts());
}

}  // namespace

MaplCodec::MaplCodec(BoundaryInfo info, const CodecOptions& options, int64_t r,
                     const OptimizerConfig& optimizer)
    : BoundaryCodec(std::move(info)), options_(options), r_(r) {
  anchor_ = options.anchor == "none"       ? Anchor::kNone
            : options.anchor == "receiver" ? Anchor::kReceiver
            : options.anchor == "static"   ? Anchor::kStatic
                                           : Anchor::kShared;
  const BoundaryInfo& b = this->info();
  const auto type = torch::TensorOptions().dtype(b.dtype);
  const uint64_t seed = options.seed + 7919 * static_cast<uint64_t>(b.index + 1);
  a_ = random_stiefel(b.d(), r, seed, b.dtype).contiguous();
  if (trains_anchors()) {
    p_ = random_stiefel(b.d(), r, seed + 1, b.dtype).t().contiguous();
    e_ = torch::zeros({b.vocab, r}, type);
  }
  g_a_ = torch::zeros({b.d(), r}, type);
  const bool owns_step =
      b.role == Role::kSender || (b.role == Role::kReceiver && options.projector_sync_both);
  if (owns_step) spel_.emplace(a_, options.spel);
  if (anchor_ == Anchor::kStatic) {  // SSN's fixed token embedding, never trained
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + 3);
    e_fix_ = torch::randn({b.vocab, b.d()}, gen, type).mul_(0.02);
  }
  if (b.role == Role::kReceiver && trains_anchors()) {
    g_e_ = torch::zeros_like(e_);
    e_optimizer_ = make_optimizer(optimizer, {{"anchor", e_, g_e_, 0.0}});
  }
  if (options.vq) {
    ResidualVqOptions v = options.vq_options;
    v.dim = r;
    v.seed = seed + 2;
    if (b.role == Role::kSender) vq_ = std::make_unique<ResidualVq>(v, b.dtype);
    vq_copy_ = std::make_unique<ResidualVq>(v, b.dtype);
    const int64_t rows = options.vq_stream_rows > 0
                             ? options.vq_stream_rows
                             : (v.codes + b.micro_batches - 1) / b.micro_batches;
    stream_ = std::make_unique<CodebookStream>(v.codes, rows);
  }
}

std::vector<int64_t> MaplCodec::projected_shape() const {
  std::vector<int64_t> shape = info().shape;
  shape.back() = r_;
  return shape;
}

torch::Tensor MaplCodec::anchor_of(const torch::Tensor& tokens) const {
  if (anchor_ == Anchor::kStatic) return e_fix_.index({tokens.reshape({-1})});
  return e_.index({tokens.reshape({-1})}).mm(p_);
}

std::vector<torch::Tensor> MaplCodec::encode(int64_t id, const torch::Tensor& x,
                                             const torch::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  torch::Tensor xa = x.reshape({-1, info().d()});
  if (sender_subtracts()) xa = xa - anchor_of(tokens);
  torch::Tensor z = xa.mm(a_);
  sent_[id] = xa;  // a new tensor, or a view of x, which the pipeline keeps unchanged
  if (!vq_) return {z.reshape(projected_shape())};
  torch::Tensor rows = stream_->next_rows();  // of the codebooks z is encoded with
  torch::Tensor slice = vq_->codebooks().index_select(1, rows);
  torch::Tensor indices = vq_->encode(z);
  vq_->update(z, indices);
  return {pack_indices(indices, index_bits(vq_->options().codes)), slice};
}

std::vector<torch::Tensor> MaplCodec::payload_buffers() const {
  const auto type = torch::TensorOptions().dtype(info().dtype);
  if (!vq_copy_) {
    return {torch::empty(projected_shape(), type)};
  }
  const ResidualVqOptions& v = vq_copy_->options();
  const int64_t indices = info().tokens() * v.groups * v.levels;
  const int64_t bytes = (indices * index_bits(v.codes) + 7) / 8;
  return {torch::empty({bytes}, torch::kUInt8),
          torch::empty({v.groups * v.levels, stream_->rows(), r_ / v.groups}, type)};
}

torch::Tensor MaplCodec::decode(int64_t id, const std::vector<torch::Tensor>& payload,
                                const torch::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  torch::Tensor z;
  if (vq_copy_) {
    const ResidualVqOptions& v = vq_copy_->options();
    apply_codebook_slice(vq_copy_->codebooks(), stream_->next_rows(), payload.at(1));
    torch::Tensor indices =
        unpack_indices(payload.at(0), info().tokens() * v.groups * v.levels, index_bits(v.codes));
    z = vq_copy_->decode(indices.reshape({info().tokens(), v.groups, v.levels}));
  } else {
    z = payload.at(0).reshape({-1, r_});
  }
  torch::Tensor x = z.mm(a_.t());
  if (anchor_ != Anchor::kNone) x = x + anchor_of(tokens);
  received_[id] = {z, tokens};
  return x.reshape(info().shape);
}

torch::Tensor MaplCodec::encode_grad(int64_t id, const torch::Tensor& grad) {
  torch::NoGradGuard no_grad;
  auto [z, tokens] = std::move(received_.at(id));
  received_.erase(id);
  torch::Tensor g = grad.reshape({-1, info().d()});
  torch::Tensor dz = g.mm(a_);
  g_a_.add_(g.t().mm(z));  // the receiver's part of dL/dA: (dL/dX^)^T Z
  if (trains_anchors()) {
    // dL/da: through X^ = Z A^T + a, and (shared anchor) through Z = (X - a) A.
    torch::Tensor da = anchor_ == Anchor::kShared ? g - dz.mm(a_.t()) : g;
    g_e_.index_add_(0, tokens.reshape({-1}), da.mm(p_.t()));
  }
  dz = dz.reshape(projected_shape());
  return options_.backward_bf16 ? dz.to(torch::kBFloat16) : dz;
}

torch::Tensor MaplCodec::grad_buffer() const {
  return torch::empty(projected_shape(), options_.backward_bf16 ? torch::kBFloat16 : info().dtype);
}

torch::Tensor MaplCodec::decode_grad(int64_t id, const torch::Tensor& payload) {
  torch::NoGradGuard no_grad;
  torch::Tensor xa = std::move(sent_.at(id));
  sent_.erase(id);
  torch::Tensor dz = payload.to(info().dtype).reshape({-1, r_});
  g_a_.add_(xa.t().mm(dz));  // the sender's part of dL/dA: (X - a)^T dZ
  return dz.mm(a_.t()).reshape(info().shape);
}

void MaplCodec::setup(Communicator& comm, const torch::Tensor& activation,
                      const torch::Tensor& tokens) {
  if (!options_.projector_pca) return;
  torch::NoGradGuard no_grad;
  if (info().role == Role::kSender) {
    torch::Tensor x = activation.reshape({-1, info().d()});
    if (sender_subtracts()) x = x - anchor_of(tokens);
    // X = U S V^T: the top r rows of V^T span the best rank-r subspace of X's rows.
    auto [u, s, vh] = torch::linalg_svd(x, /*full_matrices=*/false);
    a_.copy_(vh.slice(0, 0, r_).t());
    send_sync(comm, a_, info().index + 1, wire_tag(kInitialProjector));
    wait_sync_sends();
  } else if (info().role == Role::kReceiver) {
    comm.recv(a_, info().index, wire_tag(kInitialProjector));
  }
}

void MaplCodec::end_step(Communicator& comm, double lr) {
  if (info().role == Role::kReceiver) receiver_end_step(comm, lr);
  if (info().role == Role::kSender) sender_end_step(comm, lr);
}

// Receiver: return its part of dL/dA; step and publish the anchors; take (or receive) the new A.
void MaplCodec::receiver_end_step(Communicator& comm, double lr) {
  const double alpha = options_.projector_lr * lr;
  const int64_t sender = info().index;
  send_sync(comm, g_a_, sender, wire_tag(kReceiverGradient));
  if (e_optimizer_) {
    torch::Tensor before = e_.clone();
    e_optimizer_->step(lr);
    g_e_.zero_();
    if (anchor_ == Anchor::kShared) {
      torch::Tensor rows = (e_ != before).any(1).nonzero().reshape({-1});
      send_sync(comm, torch::tensor({rows.numel()}, torch::kInt64), sender, wire_tag(kAnchorCount));
      if (rows.numel() > 0) {
        send_sync(comm, rows, sender, wire_tag(kAnchorRows));
        send_sync(comm, e_.index_select(0, rows), sender, wire_tag(kAnchorValues));
      }
    }
  }
  if (options_.projector_sync_both) {
    torch::Tensor theirs = torch::empty_like(g_a_);
    comm.recv(theirs, sender, wire_tag(kSenderGradient));
    spel_->step(theirs + g_a_, alpha);  // the sender's sum, in its order
  } else {
    comm.recv(a_, sender, wire_tag(kProjector));
  }
  g_a_.zero_();
  wait_sync_sends();
}

// Sender: collect the receiver's part of dL/dA, take the SPEL step, publish A; take E's rows.
void MaplCodec::sender_end_step(Communicator& comm, double lr) {
  const double alpha = options_.projector_lr * lr;
  const int64_t receiver = info().index + 1;
  if (options_.projector_sync_both) send_sync(comm, g_a_, receiver, wire_tag(kSenderGradient));
  torch::Tensor theirs = torch::empty_like(g_a_);
  comm.recv(theirs, receiver, wire_tag(kReceiverGradient));
  spel_->step(g_a_ + theirs, alpha);
  if (!options_.projector_sync_both) send_sync(comm, a_, receiver, wire_tag(kProjector));
  if (anchor_ == Anchor::kShared) {
    torch::Tensor count = torch::empty({1}, torch::kInt64);
    comm.recv(count, receiver, wire_tag(kAnchorCount));
    if (const int64_t n = count.item<int64_t>(); n > 0) {
      torch::Tensor rows = torch::empty({n}, torch::kInt64);
      torch::Tensor values = torch::empty({n, r_}, e_.options());
      comm.recv(rows, receiver, wire_tag(kAnchorRows));
      comm.recv(values, receiver, wire_tag(kAnchorValues));
      torch::NoGradGuard no_grad;
      e_.index_copy_(0, rows, values);
    }
  }
  g_a_.zero_();
  wait_sync_sends();
}

torch::Tensor MaplCodec::roundtrip(const torch::Tensor& x, const torch::Tensor& tokens) const {
  torch::NoGradGuard no_grad;
  torch::Tensor xa = x.reshape({-1, info().d()});
  if (sender_subtracts()) xa = xa - anchor_of(tokens);
  torch::Tensor z = xa.mm(a_);
  if (vq_copy_) z = vq_copy_->decode(vq_copy_->encode(z));
  torch::Tensor out = z.mm(a_.t());
  if (anchor_ != Anchor::kNone) out = out + anchor_of(tokens);
  return out.reshape(x.sizes());
}

void MaplCodec::share(Communicator& comm) {
  torch::NoGradGuard no_grad;
  const int64_t owner = info().index + 1;  // the receiver decodes: its state is the boundary's
  comm.broadcast(a_, owner);
  if (trains_anchors()) comm.broadcast(e_, owner);
  if (vq_copy_) comm.broadcast(vq_copy_->codebooks(), owner);
}

void MaplCodec::save(Archive& archive, const std::string& prefix) const {
  archive.put(prefix + "projector", a_);
  if (trains_anchors()) archive.put(prefix + "anchors", e_);
  if (spel_) archive.put(prefix + "projector_momentum", spel_->momentum());
  if (e_optimizer_) save_optimizer(*e_optimizer_, archive, prefix + "anchor_optimizer.");
  if (vq_) save_vq(*vq_, archive, prefix + "vq.");
  if (vq_copy_) archive.put(prefix + "vq_copy", vq_copy_->codebooks());
  if (stream_) archive.put(prefix + "vq_stream", stream_->position());
}

void MaplCodec::load(const Archive& archive, const std::string& prefix) {
  torch::NoGradGuard no_grad;
  archive.copy_into(prefix + "projector", a_);
  if (trains_anchors()) archive.copy_into(prefix + "anchors", e_);
  if (spel_) archive.copy_into(prefix + "projector_momentum", spel_->momentum());
  if (e_optimizer_) load_optimizer(*e_optimizer_, archive, prefix + "anchor_optimizer.");
  if (vq_) load_vq(*vq_, archive, prefix + "vq.");
  if (vq_copy_) archive.copy_into(prefix + "vq_copy", vq_copy_->codebooks());
  if (stream_) stream_->set_position(archive.integer(prefix + "vq_stream"));
}

MemoryReport MaplCodec::memory() const {  // an observer's copies serve evaluation
  auto bytes = [](const torch::Tensor& t) {
    return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : int64_t{0};
  };
  int64_t projector = bytes(a_) + bytes(g_a_) + (spel_ ? bytes(spel_->momentum()) : 0);
  int64_t anchors = bytes(e_) + bytes(p_) + bytes(g_e_) + bytes(e_fix_);  // those in use
  int64_t codebooks =
      (vq_ ? bytes(vq_->codebooks()) : 0) + (vq_copy_ ? bytes(vq_copy_->codebooks()) : 0);
  return {{"mapl_projectors", projector}, {"mapl_anchors", anchors}, {"mapl_codebooks", codebooks}};
}

}  // namespace desync
