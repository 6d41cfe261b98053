// The pieces of the GCIDE reader (read_gcide() in token_cache.h) that tests exercise alone, and
// its gzip reader, which the word corpus (embeddings/gcide_corpus.h) shares.
//
// gcide_plain_text() turns one entry of Debian's gcide.dict.dz, as raw bytes, into the plain
// UTF-8 text of a document; gcide.cpp's header comment lists every rule. dictd_number() decodes
// an offset or length of a dictd index (base 64, digits A-Z a-z 0-9 + /, most significant
// first) and returns -1 for an empty string or a byte outside the alphabet.
// Both are pure functions, safe to call from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace desync {

std::string gcide_plain_text(std::string_view entry);

int64_t dictd_number(std::string_view digits);

// The whole decompressed content of a gzip (or dictzip, or plain) file. Throws DataError for a
// file that cannot be opened or is corrupt or truncated.
std::string read_gzip(const std::string& path);

}  // namespace desync
