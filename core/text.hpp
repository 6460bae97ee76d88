// Text that applications write (their status line, their log, their finished message) travels to
// the API, the web pages and the CLI, where a terminal would obey any escape sequence in it. It is
// made safe once, where it enters the service (the daemon's worker reports, the gateway's report
// routes), so every reader can print it as it is.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace descprod {

// `s` with every control character replaced by U+FFFD (the replacement character), so it is
// safe to print:
//  - C0 controls U+0000..U+001F except tab (ESC starts terminal escape sequences; CR, BS and
//    BEL rewrite or disturb what was printed; LF would split a line the service treats as one),
//  - DEL U+007F and the C1 controls U+0080..U+009F (U+009B is CSI on some terminals);
//  - every byte that does not belong to a well-formed UTF-8 sequence (overlong forms, surrogates,
//    values past U+10FFFF) also becomes U+FFFD, one for each such byte.
// The result is well-formed UTF-8 of at most `max_bytes` bytes, cut at a character boundary.
// Idempotent: sanitize_app_text(sanitize_app_text(s)) == sanitize_app_text(s).
// A query-string or form value percent-encoded: every byte but A-Z a-z 0-9 - _ . ~ as %XX.
std::string url_encode(std::string_view s);
std::string sanitize_app_text(std::string_view s, std::size_t max_bytes = std::string_view::npos);

// The parts of `s` between the separators, empty ones kept ("" is one empty part, "a,,b" three):
// the lists the service stores as text ("12,13", "nersc,slac").
std::vector<std::string> split(std::string_view s, char sep);

}  // namespace descprod
