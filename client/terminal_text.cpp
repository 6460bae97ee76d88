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

}  // namespace

std::string terminal_safe(std::string_view s, terminal_safe_options opts) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F) {
      if ((c == '\t' && opts.keep_tab) || (c == '\n' && opts.keep_newline)) out += static_cast<char>(c);
      else out += hex_byte(c);
      ++i;
      continue;
    }
    std::uint32_t cp = 0;
    std::size_t n = utf8_at(s, i, cp);
    if (n == 0) {
      out += hex_byte(c);
      ++i;
    } else if (unsafe_code_point(cp)) {
      out += u_escape(cp);
      i += n;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string json_terminal_safe(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    std::uint32_t cp = 0;
    std::size_t n = c < 0x80 ? 1 : utf8_at(s, i, cp);
    if (c < 0x80) cp = c;
    if (n == 0) {
      out += "\\ufffd";
      ++i;
    } else if (cp == 0x7F || unsafe_code_point(cp) || cp < 0x20) {
      // Raw C0 controls cannot occur inside a JSON string; outside one they are not meant.
      out += u_escape(cp);
      i += n;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

}  // namespace descprod::client
