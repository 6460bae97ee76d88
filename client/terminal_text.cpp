// terminal_safe (see terminal_text.hpp): a single pass over the bytes that decodes UTF-8 by hand,
// so that an invalid or truncated sequence is never passed on for the terminal to guess at.
#include "client/terminal_text.hpp"

#include <cstdint>
#include <cstdio>

namespace descprod::client {

namespace {

std::string hex_byte(unsigned char c) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "\\x%02x", c);
  return buf;
}

std::string u_escape(std::uint32_t cp) {
  char buf[12];
  std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(cp));
  return buf;
}

// A code point the terminal would act on rather than show.
bool unsafe_code_point(std::uint32_t cp) {
  return (cp >= 0x80 && cp <= 0x9F) || (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069);
}

// Length of the valid UTF-8 sequence at s[i] and its code point; 0 when it is not valid
// (overlong forms, surrogates and values above U+10FFFF are invalid).
std::size_t utf8_at(std::string_view s, std::size_t i, std::uint32_t& cp) {
  auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  std::size_t n;
  std::uint32_t min;
  if (c < 0x80) {
    cp = c;
    return 1;
  } else if ((c & 0xE0) == 0xC0) {
    n = 2, cp = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, cp = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, cp = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

// The one walk both functions make: each valid UTF-8 character is kept, or replaced by
// `escape(cp)` when `unsafe(cp)`; each byte that is not part of valid UTF-8 becomes `invalid(c)`.
template <class Unsafe, class Escape, class Invalid>
std::string rewrite_utf8(std::string_view s, Unsafe unsafe, Escape escape, Invalid invalid) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    std::uint32_t cp = 0;
    std::size_t n = utf8_at(s, i, cp);
    if (n == 0) {
      out += invalid(static_cast<unsigned char>(s[i]));
      ++i;
      continue;
    }
    if (unsafe(cp)) out += escape(cp);
    else out.append(s.substr(i, n));
    i += n;
  }
  return out;
}

}  // namespace

std::string terminal_safe(std::string_view s, terminal_safe_options opts) {
  auto unsafe = [&](std::uint32_t cp) {
    if (cp == '\t') return !opts.keep_tab;
    if (cp == '\n') return !opts.keep_newline;
    return cp < 0x20 || cp == 0x7F || unsafe_code_point(cp);
  };
  // C0 controls and DEL as \xNN, like the invalid bytes; C1 and bidi characters as \uNNNN.
  auto escape = [](std::uint32_t cp) {
    return cp < 0x80 ? hex_byte(static_cast<unsigned char>(cp)) : u_escape(cp);
  };
  return rewrite_utf8(s, unsafe, escape, hex_byte);
}

std::string json_terminal_safe(std::string_view s) {
  // Raw C0 controls cannot occur inside a JSON string; outside one they are not meant.
  auto unsafe = [](std::uint32_t cp) { return cp < 0x20 || cp == 0x7F || unsafe_code_point(cp); };
  return rewrite_utf8(s, unsafe, u_escape, [](unsigned char) { return std::string("\\ufffd"); });
}

}  // namespace descprod::client
