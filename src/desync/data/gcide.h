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
#include <vector>

namespace desync {

std::string gcide_plain_text(std::string_view entry);

int64_t dictd_number(std::string_view digits);

// One line of a dictd index (gcide.index): where an entry lies in the dictionary, and whether
// its headword starts with "00-" (the database's metadata rather than an entry).
struct DictdIndexLine {
  int64_t offset = 0, length = 0;
  bool metadata = false;
};
// Every non-empty line of the dictd index at `path`, in file order (a trailing CR ignored).
// Throws DataError for a file that cannot be opened, a line that is not "headword TAB offset TAB
// length", or an index without lines.
std::vector<DictdIndexLine> read_dictd_index(const std::string& path);

// The whole decompressed content of a gzip (or dictzip, or plain) file. Throws DataError for a
// file that cannot be opened or is corrupt or truncated.
std::string read_gzip(const std::string& path);

}  // namespace desync
