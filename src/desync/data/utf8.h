// UTF-8 decoding and encoding of single characters, for the tokenizer's reversible image of
// bytes and the GCIDE reader.
//
// utf8_char() says whether the bytes at s[i] form one valid UTF-8 character: the shortest
// encoding of a code point up to U+10FFFF that is not a UTF-16 surrogate (what SentencePiece
// accepts). It returns the character's length in bytes (1-4) and its code point, or 0 when the
// bytes there are not a valid character (then *cp is unchanged). REQUIRES: i < s.size().
// Pure functions, safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace desync {

size_t utf8_char(std::string_view s, size_t i, uint32_t* cp);

// Appends the UTF-8 encoding of `cp`. REQUIRES: cp <= 0x10FFFF.
void append_utf8(std::string& out, uint32_t cp);

}  // namespace desync
