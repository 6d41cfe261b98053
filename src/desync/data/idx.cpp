// IDX reader (MNIST, Fashion-MNIST): raw or gzip files, validated against their headers.
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "desync/core/error.h"
#include "desync/data/dataset.h"
#include "desync/data/reader_util.h"

namespace desync {
namespace {

constexpr uint32_t kLabelsMagic = 0x00000801;  // unsigned bytes, 1 dimension
constexpr uint32_t kImagesMagic = 0x00000803;  // unsigned bytes, 3 dimensions
constexpr uint8_t kUnsignedByteType = 0x08;
constexpr int kMaxDims = 4;
constexpr uint64_t kMaxPayload = uint64_t{1} << 40;  // guards the size arithmetic
constexpr unsigned kChunk = 1u << 20;
constexpr int64_t kClasses = 10;

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// Owns a zlib file handle; gzread reads gzip and plain files alike.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    if (file_ == nullptr) throw DataError("cannot open " + path + ": " + std::strerror(errno));
    gzbuffer(file_, 1u << 17);
  }
  ~GzReader() { gzclose(file_); }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  // Reads up to `len` bytes into `out`; returns how many were read (fewer only at the end).
  size_t read(void* out, size_t len) {
    size_t done = 0;
    while (done < len) {
      const unsigned want = static_cast<unsigned>(std::min<size_t>(len - done, kChunk));
      const int got = gzread(file_, static_cast<char*>(out) + done, want);
      if (got < 0) {
        int code = 0;
        const char* msg = gzerror(file_, &code);
        throw DataError(path_ + ": cannot decompress: " + (msg ? msg : "unknown zlib error"));
      }
      if (got == 0) break;
      done += static_cast<size_t>(got);
    }
    return done;
  }

 private:
  std::string path_;
  gzFile file_;
};

uint32_t big_endian32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// `dir/name`, or `dir/name.gz` when only that exists.
std::string find_idx_file(const std::string& dir, const std::string& name) {
  const std::string raw = dir + "/" + name;
  if (std::filesystem::exists(raw)) return raw;
  if (std::filesystem::exists(raw + ".gz")) return raw + ".gz";
  throw DataError("missing IDX file: neither " + raw + " nor " + raw + ".gz exists");
}

Dataset load_split(const std::string& dir, const std::string& prefix, const std::string& name) {
  const std::string images_path = find_idx_file(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = find_idx_file(dir, prefix + "-labels-idx1-ubyte");
  torch::Tensor images = read_idx_file(images_path);
  torch::Tensor labels = read_idx_file(labels_path);
  if (images.dim() != 3) {
    throw DataError(images_path + ": expected an IDX image file (magic " + hex32(kImagesMagic) +
                    "), found " + std::to_string(images.dim()) + " dimensions");
  }
  if (labels.dim() != 1) {
    throw DataError(labels_path + ": expected an IDX label file (magic " + hex32(kLabelsMagic) +
                    "), found " + std::to_string(labels.dim()) + " dimensions");
  }
  if (images.size(0) == 0) throw DataError(images_path + ": holds no images");
  if (labels.size(0) != images.size(0)) {
    throw DataError(labels_path + " holds " + std::to_string(labels.size(0)) + " labels but " +
                    images_path + " holds " + std::to_string(images.size(0)) + " images");
  }
  const int64_t max_label = labels.max().item<int64_t>();
  if (max_label >= kClasses) {
    throw DataError(labels_path + ": label " + std::to_string(max_label) + " out of range [0, " +
                    std::to_string(kClasses) + ")");
  }
  Dataset d;
  d.name = name + "/" + (prefix == "train" ? "train" : "test");
  d.kind = DataKind::kImage;
  d.inputs = images.unsqueeze(1);  // [n, 1, H, W]
  d.targets = labels.to(torch::kLong);
  d.num_classes = kClasses;
  return d;
}

}  // namespace

torch::Tensor read_idx_file(const std::string& path) {
  GzReader in(path);
  uint8_t magic[4];
  const size_t got_magic = in.read(magic, 4);
  if (got_magic < 4) {
    throw DataError(path + ": truncated IDX header: expected at least 4 bytes, found " +
                    std::to_string(got_magic));
  }
  const uint32_t magic_value = big_endian32(magic);
  const int dims = magic[3];
  if (magic[0] != 0 || magic[1] != 0 || magic[2] != kUnsignedByteType || dims < 1 ||
      dims > kMaxDims) {
    throw DataError(path + ": not an IDX file of unsigned bytes: magic " + hex32(magic_value) +
                    " (expected " + hex32(kLabelsMagic) + " for labels or " + hex32(kImagesMagic) +
                    " for images)");
  }
  const uint64_t header_bytes = 4 + 4 * static_cast<uint64_t>(dims);
  uint8_t dim_bytes[4 * kMaxDims];
  const size_t got_dims = in.read(dim_bytes, 4 * dims);
  if (got_dims < 4u * dims) {
    throw DataError(path + ": truncated IDX header: expected at least " +
                    std::to_string(header_bytes) + " bytes, found " + std::to_string(4 + got_dims));
  }
  std::vector<int64_t> shape(dims);
  uint64_t payload = 1;
  uint64_t extent = 1;  // the product of the non-zero dims: a zero dim must not hide the others
  for (int i = 0; i < dims; ++i) {
    const uint32_t d = big_endian32(dim_bytes + 4 * i);
    shape[i] = d;
    // Checked before multiplying, so that neither product can overflow.
    if (d > 0 && extent > kMaxPayload / d) {
      throw DataError(path + ": IDX header declares an implausible size (dimension " +
                      std::to_string(i) + " = " + std::to_string(d) + ")");
    }
    extent *= std::max<uint32_t>(d, 1);
    payload *= d;
  }
  const uint64_t expected = header_bytes + payload;

  // Read into a growing buffer rather than allocating what a corrupt header claims.
  std::string buffer;
  std::vector<char> chunk(kChunk);
  uint64_t found = header_bytes;
  for (;;) {
    const size_t got = in.read(chunk.data(), chunk.size());
    if (got == 0) break;
    found += got;
    if (buffer.size() < payload) {
      buffer.append(chunk.data(), std::min<uint64_t>(got, payload - buffer.size()));
    }
  }
  if (found != expected) {
    throw DataError(path + (found < expected ? ": truncated IDX file" : ": trailing data") +
                    ": expected " + std::to_string(expected) + " bytes, found " +
                    std::to_string(found));
  }
  torch::Tensor out = torch::empty(shape, torch::kUInt8);
  if (payload > 0) std::memcpy(out.data_ptr<uint8_t>(), buffer.data(), payload);
  return out;
}

DatasetSplits load_idx(const std::string& dir, const std::string& name) {
  DatasetSplits s;
  s.train = load_split(dir, "train", name);
  s.test = load_split(dir, "t10k", name);
  if (s.test.inputs.sizes().slice(1) != s.train.inputs.sizes().slice(1)) {
    throw DataError(dir + ": test images are " + std::to_string(s.test.inputs.size(2)) + "x" +
                    std::to_string(s.test.inputs.size(3)) + " but training images are " +
                    std::to_string(s.train.inputs.size(2)) + "x" +
                    std::to_string(s.train.inputs.size(3)));
  }
  // Normalise both splits with the training statistics.
  data_internal::set_channel_stats(s.train.inputs, s.train);
  s.test.mean = s.train.mean;
  s.test.stddev = s.train.stddev;
  return s;
}

}  // namespace desync
