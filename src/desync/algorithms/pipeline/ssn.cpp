// Subspace Networks' boundary codec and weight projection (ssn.h).
#include "desync/algorithms/pipeline/ssn.h"

#include <ATen/CPUGeneratorImpl.h>

#include <utility>

#include "desync/core/error.h"

namespace desync {

std::shared_ptr<const SsnBasis> SsnBasis::make(int64_t d, int64_t k, int64_t vocab, uint64_t seed,
                                               torch::ScalarType dtype) {
  auto basis = std::make_shared<SsnBasis>();
  basis->u = random_stiefel(d, k, seed, dtype);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + 1);
  basis->e_fix = torch::randn({vocab, d}, gen, torch::TensorOptions().dtype(dtype)).mul_(0.02);
  return basis;
}

namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

std::vector<SsnConstrained> ssn_constrained_tensors(const StagedModel& model, int64_t begin,
                                                    int64_t end) {
  using Side = SsnConstrained::Side;
  std::vector<SsnConstrained> out;
  for (int64_t i = begin; i < end; ++i) {
    const std::string stage = model->stage_name(i) + ".";
    for (auto& [name, p] : model->named_params()) {
      if (name.rfind(stage, 0) != 0) continue;
      if (ends_with(name, "attn.proj.weight") || ends_with(name, "mlp.proj.weight") ||
          ends_with(name, "attn.proj.bias") || ends_with(name, "mlp.proj.bias"))
        out.push_back({p, Side::kOutputs, name});
      else if (ends_with(name, "pos.weight"))
        out.push_back({p, Side::kRows, name});
      else if (ends_with(name, "tok.weight"))
        out.push_back({p, Side::kEmbedding, name});
    }
  }
  return out;
}

void ssn_project(const std::vector<SsnConstrained>& constrained, const SsnBasis& basis) {
  torch::NoGradGuard no_grad;
  const torch::Tensor& u = basis.u;
  for (const auto& c : constrained) {
    torch::Tensor t = c.tensor;
    switch (c.side) {
      case SsnConstrained::Side::kOutputs:  // W [d, in] or b [d]: U U^T W
        t.copy_(t.dim() == 1 ? u.mv(u.t().mv(t)) : u.mm(u.t().mm(t)));
        break;
      case SsnConstrained::Side::kRows:  // P [n, d]: P U U^T
        t.copy_(t.mm(u).mm(u.t()));
        break;
      case SsnConstrained::Side::kEmbedding:  // E_fix + (E - E_fix) U U^T
        t.copy_(basis.e_fix + (t - basis.e_fix).mm(u).mm(u.t()));
        break;
    }
  }
}

SsnCodec::SsnCodec(BoundaryInfo info, std::shared_ptr<const SsnBasis> basis,
                   std::vector<SsnConstrained> constrained)
    : BoundaryCodec(std::move(info)),
      basis_(std::move(basis)),
      constrained_(std::move(constrained)) {
  ssn_project(constrained_, *basis_);
}

std::vector<torch::Tensor> SsnCodec::encode(int64_t, const torch::Tensor& x,
                                            const torch::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  return {torch::matmul(x - basis_->e_fix.index({tokens}), basis_->u)};
}

std::vector<torch::Tensor> SsnCodec::payload_buffers() const {
  std::vector<int64_t> shape = info().shape;
  shape.back() = basis_->u.size(1);
  return {torch::empty(shape, torch::TensorOptions().dtype(info().dtype))};
}

torch::Tensor SsnCodec::decode(int64_t, const std::vector<torch::Tensor>& payload,
                               const torch::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  return torch::matmul(payload.at(0), basis_->u.t()) + basis_->e_fix.index({tokens});
}

torch::Tensor SsnCodec::encode_grad(int64_t, const torch::Tensor& grad) {
  torch::NoGradGuard no_grad;
  return torch::matmul(grad, basis_->u);
}

torch::Tensor SsnCodec::grad_buffer() const { return payload_buffers().at(0); }

torch::Tensor SsnCodec::decode_grad(int64_t, const torch::Tensor& payload) {
  torch::NoGradGuard no_grad;
  return torch::matmul(payload, basis_->u.t());
}

void SsnCodec::after_optimizer_step() { ssn_project(constrained_, *basis_); }

torch::Tensor SsnCodec::roundtrip(const torch::Tensor& x, const torch::Tensor& tokens) const {
  torch::NoGradGuard no_grad;
  torch::Tensor e = basis_->e_fix.index({tokens});
  return torch::matmul(torch::matmul(x - e, basis_->u), basis_->u.t()) + e;
}

MemoryReport SsnCodec::memory() const {
  // Every rank holds one copy of U and E_fix, shared by its codecs: counted on boundary 0's.
  if (info().index > 0) return {};
  return {{"ssn_constants", (basis_->u.numel() + basis_->e_fix.numel()) *
                                static_cast<int64_t>(basis_->u.element_size())}};
}

}  // namespace desync
