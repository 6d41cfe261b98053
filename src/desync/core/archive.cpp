#include "desync/core/archive.h"

#include <caffe2/serialize/inline_container.h>
#include <fmt/format.h>
#include <torch/csrc/jit/serialization/import_read.h>
#include <torch/serialize.h>

#include <algorithm>
#include <cstring>

#include "desync/core/error.h"

namespace desync {

Archive::Archive() : dict_(c10::StringType::get(), c10::AnyType::get()) {}

void Archive::put(const std::string& name, const torch::Tensor& t) {
  dict_.insert_or_assign(name, t.detach().clone());
}
void Archive::put(const std::string& name, int64_t v) { dict_.insert_or_assign(name, v); }
void Archive::put(const std::string& name, double v) { dict_.insert_or_assign(name, v); }
void Archive::put(const std::string& name, const std::string& v) {
  dict_.insert_or_assign(name, v);
}

bool Archive::has(const std::string& name) const { return dict_.contains(name); }

c10::IValue Archive::get(const std::string& name) const {
  auto it = dict_.find(name);
  if (it == dict_.end()) throw CheckpointError(fmt::format("checkpoint has no entry '{}'", name));
  return it->value();
}

torch::Tensor Archive::tensor(const std::string& name) const {
  c10::IValue v = get(name);
  if (!v.isTensor())
    throw CheckpointError(fmt::format("checkpoint entry '{}' is not a tensor", name));
  return v.toTensor();
}

int64_t Archive::integer(const std::string& name) const {
  c10::IValue v = get(name);
  if (!v.isInt())
    throw CheckpointError(fmt::format("checkpoint entry '{}' is not an integer", name));
  return v.toInt();
}

double Archive::real(const std::string& name) const {
  c10::IValue v = get(name);
  if (!v.isDouble())
    throw CheckpointError(fmt::format("checkpoint entry '{}' is not a number", name));
  return v.toDouble();
}

std::string Archive::string(const std::string& name) const {
  c10::IValue v = get(name);
  if (!v.isString())
    throw CheckpointError(fmt::format("checkpoint entry '{}' is not a string", name));
  return v.toStringRef();
}

void Archive::copy_into(const std::string& name, torch::Tensor dst) const {
  torch::Tensor src = tensor(name);
  if (src.sizes() != dst.sizes() || src.scalar_type() != dst.scalar_type())
    throw CheckpointError(fmt::format(
        "checkpoint entry '{}' has shape {} {}, expected {} {} (was it written by another model "
        "or world size?)",
        name, c10::str(src.sizes()), c10::toString(src.scalar_type()), c10::str(dst.sizes()),
        c10::toString(dst.scalar_type())));
  torch::NoGradGuard no_grad;
  dst.copy_(src);
}

std::vector<std::string> Archive::names() const {
  std::vector<std::string> out;
  for (const auto& e : dict_) out.push_back(e.key().toStringRef());
  return out;
}

std::string Archive::serialize() const {
  std::vector<char> bytes = torch::pickle_save(c10::IValue(dict_));
  return std::string(bytes.begin(), bytes.end());
}

namespace {

// The bytes of an archive for LibTorch's zip reader, every read clamped to them. torch's own
// adapter (torch::pickle_load's VectorReader) copies whatever range the reader asks for, and a
// zip whose directory points past its end made it read past the buffer (found by
// fuzz/checkpoint_fuzz.cpp); a short read here makes the zip reader fail instead.
class BoundedReader : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit BoundedReader(const std::string& bytes) : bytes_(bytes) {}
  size_t size() const override { return bytes_.size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= bytes_.size()) return 0;
    n = std::min<uint64_t>(n, bytes_.size() - pos);
    std::memcpy(buf, bytes_.data() + pos, n);
    return n;
  }

 private:
  const std::string& bytes_;
};

// torch::pickle_load, over BoundedReader.
c10::IValue pickle_load(const std::string& bytes) {
  caffe2::serialize::PyTorchStreamReader reader(std::make_shared<BoundedReader>(bytes));
  return torch::jit::readArchiveAndTensors("data", /*pickle_prefix=*/"", /*tensor_prefix=*/"",
                                           /*type_resolver=*/std::nullopt,
                                           /*obj_loader=*/std::nullopt, /*device=*/std::nullopt,
                                           reader);
}

}  // namespace

Archive Archive::deserialize(const std::string& bytes, const std::string& origin) {
  Archive a;
  try {
    c10::IValue v = pickle_load(bytes);
    if (!v.isGenericDict()) throw CheckpointError(fmt::format("{}: not a desync archive", origin));
    for (const auto& e : v.toGenericDict()) {
      if (!e.key().isString())
        throw CheckpointError(fmt::format("{}: not a desync archive", origin));
      // Only what put() writes: a crafted file could hold other values, e.g. a quantized tensor
      // with no quantizer, which LibTorch cannot even write back (found by fuzzing).
      const c10::IValue& value = e.value();
      bool plain = value.isInt() || value.isDouble() || value.isString();
      if (value.isTensor()) {
        const torch::Tensor& t = value.toTensor();
        plain = !t.is_quantized() && t.layout() == torch::kStrided && t.device().is_cpu();
      }
      if (!plain) {
        throw CheckpointError(
            fmt::format("{}: entry '{}' is not a dense CPU tensor, an integer, a float or a string",
                        origin, e.key().toStringRef()));
      }
      a.dict_.insert(e.key(), value);
    }
  } catch (const CheckpointError&) {
    throw;
  } catch (const std::exception& e) {
    throw CheckpointError(fmt::format("{}: unreadable archive", origin));
  }
  return a;
}

}  // namespace desync
