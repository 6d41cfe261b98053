#include "desync/core/checkpoint.h"

#include <gtest/gtest.h>
#include <torch/serialize.h>

#include <filesystem>

#include "desync/core/error.h"
#include "desync/core/fs.h"
#include "test_util.h"

namespace desync {
namespace {

Archive sample_archive(double fill) {
  Archive a;
  a.put("w", torch::full({3, 2}, fill));
  a.put("step", int64_t{42});
  a.put("lr", 0.5);
  a.put("name", std::string("single"));
  return a;
}

TEST(Archive, RoundTripsTensorsAndScalars) {
  Archive a = sample_archive(1.5);
  Archive b = Archive::deserialize(a.serialize(), "mem");
  EXPECT_TRUE(torch::equal(b.tensor("w"), torch::full({3, 2}, 1.5)));
  EXPECT_EQ(b.integer("step"), 42);
  EXPECT_DOUBLE_EQ(b.real("lr"), 0.5);
  EXPECT_EQ(b.string("name"), "single");
}

TEST(Archive, MissingOrMismatchedEntriesAreNamed) {
  Archive a = sample_archive(1.0);
  try {
    a.tensor("nope");
    FAIL() << "no throw";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("'nope'"), std::string::npos);
  }
  torch::Tensor wrong = torch::zeros({2, 3});
  EXPECT_THROW(a.copy_into("w", wrong), CheckpointError);
  EXPECT_THROW(a.integer("w"), CheckpointError);
}

TEST(Archive, GarbageIsRejected) {
  EXPECT_THROW(Archive::deserialize("not a zip file", "x"), CheckpointError);
}

// Found by fuzz/checkpoint_fuzz.cpp: LibTorch's own reader adapter read past the buffer of a
// truncated zip (AddressSanitizer reports it; without it the over-read is silent). Every cut of an
// archive must be a CheckpointError.
TEST(Archive, TruncatedZipIsRejectedAtEveryCut) {
  const std::string bytes = sample_archive(3.0).serialize();
  for (size_t cut : {size_t{0}, size_t{22}, size_t{100}, bytes.size() / 2, bytes.size() - 22,
                     bytes.size() - 1}) {
    EXPECT_THROW(Archive::deserialize(bytes.substr(0, cut), "cut"), CheckpointError) << cut;
  }
}

// Found by fuzz/checkpoint_fuzz.cpp: an archive may hold values put() never writes, e.g. a
// quantized tensor LibTorch cannot write back; they are refused on reading, naming the entry.
TEST(Archive, ValuesPutNeverWritesAreRejected) {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("ok", torch::ones({2}));
  dict.insert("q", torch::quantize_per_tensor(torch::ones({2}), 0.1, 0, torch::kQUInt8));
  const std::vector<char> bytes = torch::pickle_save(dict);
  try {
    Archive::deserialize(std::string(bytes.begin(), bytes.end()), "crafted");
    FAIL() << "no throw";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("entry 'q' is not a dense CPU tensor"), std::string::npos)
        << e.what();
  }
  c10::impl::GenericDict listed(c10::StringType::get(), c10::AnyType::get());
  listed.insert("l", c10::List<int64_t>({1, 2}));
  const std::vector<char> list_bytes = torch::pickle_save(listed);
  EXPECT_THROW(Archive::deserialize(std::string(list_bytes.begin(), list_bytes.end()), "list"),
               CheckpointError);
}

TEST(Archive, IsATorchZipWithPickledDict) {
  // torch.load reads this format: a zip archive whose data.pkl pickles the dict and whose
  // tensor storages sit beside it. Check the structure without Python.
  std::string bytes = sample_archive(2.0).serialize();
  ASSERT_GE(bytes.size(), 4u);
  EXPECT_EQ(bytes.substr(0, 4), std::string("PK\x03\x04", 4));
  EXPECT_NE(bytes.find("data.pkl"), std::string::npos);
  EXPECT_NE(bytes.find("_rebuild_tensor_v2"), std::string::npos);
}

TEST(CheckpointStore, WritesAndLoadsNewest) {
  testing::TempDir dir;
  CheckpointStore store(dir.path(), 0, 1);
  store.write(10, sample_archive(1.0), 5);
  store.write(20, sample_archive(2.0), 5);
  auto loaded = store.load_latest(nullptr);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->step, 20);
  EXPECT_TRUE(torch::equal(loaded->archive.tensor("w"), torch::full({3, 2}, 2.0)));
}

TEST(CheckpointStore, KeepsOnlyNewestK) {
  testing::TempDir dir;
  CheckpointStore store(dir.path(), 0, 1);
  for (int64_t s : {1, 2, 3, 4}) store.write(s, sample_archive(s), 2);
  EXPECT_EQ(store.steps_on_disk(), (std::vector<int64_t>{3, 4}));
}

TEST(CheckpointStore, TruncatedArchiveFallsBackToPreviousGood) {
  testing::TempDir dir;
  CheckpointStore store(dir.path(), 0, 1);
  store.write(10, sample_archive(1.0), 5);
  store.write(20, sample_archive(2.0), 5);
  std::string bytes = read_file(store.archive_path(20));
  testing::write_file(store.archive_path(20), bytes.substr(0, bytes.size() / 2));
  std::vector<std::string> warnings;
  auto loaded = store.load_latest([&](const std::string& w) { warnings.push_back(w); });
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->step, 10);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("truncated"), std::string::npos) << warnings[0];
}

TEST(CheckpointStore, CorruptedByteFallsBackToPreviousGood) {
  testing::TempDir dir;
  CheckpointStore store(dir.path(), 0, 1);
  store.write(10, sample_archive(1.0), 5);
  store.write(20, sample_archive(2.0), 5);
  std::string bytes = read_file(store.archive_path(20));
  bytes[bytes.size() / 2] ^= 0x5a;
  testing::write_file(store.archive_path(20), bytes);
  std::vector<std::string> warnings;
  auto loaded = store.load_latest([&](const std::string& w) { warnings.push_back(w); });
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->step, 10);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("checksum"), std::string::npos) << warnings[0];
}

TEST(CheckpointStore, MissingManifestMeansIncomplete) {
  testing::TempDir dir;
  CheckpointStore store(dir.path(), 0, 1);
  store.write(10, sample_archive(1.0), 5);
  store.write(20, sample_archive(2.0), 5);
  std::filesystem::remove(store.manifest_path(20));
  auto loaded = store.load_latest(nullptr);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->step, 10);
}

TEST(CheckpointStore, OtherWorldSizeIsNotLoaded) {
  testing::TempDir dir;
  CheckpointStore(dir.path(), 0, 2).write(10, sample_archive(1.0), 5);
  EXPECT_FALSE(CheckpointStore(dir.path(), 0, 1).load_latest(nullptr).has_value());
}

TEST(CheckpointStore, NothingOnDiskLoadsNothing) {
  testing::TempDir dir;
  EXPECT_FALSE(CheckpointStore(dir.file("none"), 0, 1).load_latest(nullptr).has_value());
}

TEST(Fs, AtomicWriteReplacesWholeFile) {
  testing::TempDir dir;
  write_file_atomic(dir.file("a"), "first version, long");
  write_file_atomic(dir.file("a"), "second");
  EXPECT_EQ(read_file(dir.file("a")), "second");
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename(), "a");  // no temp files left behind
}

TEST(Fs, Crc32OfKnownString) {
  EXPECT_EQ(crc32_of("123456789"), 0xCBF43926u);  // the CRC-32 check value
}

}  // namespace
}  // namespace desync
