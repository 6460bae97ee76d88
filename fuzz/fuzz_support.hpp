// Shared helpers of the fuzz targets: an invariant check that crashes (so libFuzzer records the
// input), a strict UTF-8 validator written independently of core/job.cpp, the application registry
// the gateway targets validate against, and the checks every gateway error answer must pass.
#pragma once

#include <spdlog/spdlog.h>

#include <boost/json.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/config.hpp"
#include "gateway/api.hpp"

// Aborts with the failed condition when an invariant does not hold; libFuzzer then writes the
// input to crash-<sha1>.
#define FUZZ_CHECK(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

namespace descprod::fuzz {

// Well-formed UTF-8 per RFC 3629 / Unicode Table 3-7: no overlong forms, no surrogates, nothing
// past U+10FFFF, no truncated sequences.
inline bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  auto cont = [&](std::size_t k, unsigned char lo, unsigned char hi) {
    if (i + k >= s.size()) return false;
    auto c = static_cast<unsigned char>(s[i + k]);
    return c >= lo && c <= hi;
  };
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
    } else if (c >= 0xC2 && c <= 0xDF) {
      if (!cont(1, 0x80, 0xBF)) return false;
      i += 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
      if (!cont(1, lo, hi) || !cont(2, 0x80, 0xBF)) return false;
      i += 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
      unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
      if (!cont(1, lo, hi) || !cont(2, 0x80, 0xBF) || !cont(3, 0x80, 0xBF)) return false;
      i += 4;
    } else {
      return false;
    }
  }
  return true;
}

// Length of the well-formed UTF-8 sequence starting at s[i], 0 when none starts there.
inline std::size_t utf8_sequence_at(std::string_view s, std::size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  std::size_t len = c < 0x80                 ? 1
                    : c >= 0xC2 && c <= 0xDF ? 2
                    : c >= 0xE0 && c <= 0xEF ? 3
                    : c >= 0xF0 && c <= 0xF4 ? 4
                                             : 0;
  if (len == 0 || i + len > s.size()) return 0;
  return valid_utf8(s.substr(i, len)) ? len : 0;
}

// JSON text that Boost.JSON parses (it also checks that strings are valid UTF-8).
inline bool parses_as_json(std::string_view text, boost::json::value* out = nullptr) {
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec) return false;
  if (out) *out = std::move(v);
  return true;
}

// Every gateway error answer: a 4xx/5xx status, a short machine-readable error name, a detail that
// is valid UTF-8 and bounded (it never grows with the request), and a body that is valid JSON.
inline void check_api_error(const gateway::api_error& e, std::size_t max_detail = 2048) {
  FUZZ_CHECK(e.status() >= 400 && e.status() <= 599);
  FUZZ_CHECK(!e.name().empty() && e.name().size() <= 32);
  for (char c : e.name()) FUZZ_CHECK((c >= 'a' && c <= 'z') || c == '_');
  FUZZ_CHECK(!e.detail.empty());
  FUZZ_CHECK(e.detail.size() <= max_detail);
  FUZZ_CHECK(valid_utf8(e.detail));
  boost::json::value back;
  FUZZ_CHECK(parses_as_json(boost::json::serialize(gateway::error_json(e)), &back));
  FUZZ_CHECK(back.as_object().at("detail").as_string() == e.detail);
}

// The registry the gateway targets validate against: patterns as in config/apps.yaml, one app
// without a pattern and one with a howfig pattern.
inline const app_registry& test_apps() {
  static const app_registry apps = parse_apps(R"(
apps:
  - name: mysleep
    pattern: "^[0-9]{1,6}$"
    max_attempts: 2
  - name: parsltest
    pattern: "^[a-z0-9:-]+$"
  - name: anything
  - name: howapp
    howfig_pattern: "^(fast|slow)$"
)",
                                              "fuzz-apps.yaml");
  return apps;
}

inline void silence_logs() { spdlog::set_level(spdlog::level::off); }

}  // namespace descprod::fuzz
