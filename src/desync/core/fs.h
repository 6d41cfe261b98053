// Small file-system helpers with the durability the run directory needs.
//
// write_file_atomic() writes to a temporary file beside the target, fsyncs it, renames it over
// the target and fsyncs the directory, so a reader sees either the old or the new content,
// never a torn one, even across a crash. Throws Error with the path on failure.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace desync {

void write_file_atomic(const std::string& path, std::string_view bytes);
// Reads a whole file; throws Error naming the path if it cannot be read.
std::string read_file(const std::string& path);
// Creates a directory and its parents; throws Error naming it on failure.
void make_dirs(const std::string& path);
// CRC-32 (zlib) of a byte string.
uint32_t crc32_of(std::string_view bytes);

}  // namespace desync
