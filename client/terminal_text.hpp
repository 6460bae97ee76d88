// The CLI's own defence against hostile text (issue #13): everything the command-line tools print
// that came from the server or from Redis (a job's progress and fields, error reasons, usernames,
// labels, versions) goes through terminal_safe() first, so a job cannot move the cursor, rewrite
// earlier lines, change colours, retitle the window or ring the bell in whoever looks at it. The
// gateway and the daemon also clean text on ingest; this does not rely on that.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

namespace descprod::client {

struct terminal_safe_options {
  bool keep_tab = false;      // log lines: a tab stays a tab
  bool keep_newline = false;  // multi-line text printed as such
};

// `s` with every byte or character a terminal would act on made visible as a backslash escape:
// C0 controls (0x00-0x1F, so ESC, CR, BEL, BS, ...) and DEL as \xNN (tab and newline kept only
// when asked), the C1 controls U+0080-U+009F (e.g. U+009B, a one-character CSI) and the Unicode
// bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069, which reorder what is
// shown) as \uNNNN, and every byte that is not part of valid UTF-8 as \xNN. Everything else,
// including printable UTF-8, is kept as it is. With nothing to replace, the result equals `s`.
std::string terminal_safe(std::string_view s, terminal_safe_options opts = {});

// The same for a line of JSON from boost::json::serialize (which already writes C0 controls as
// \uNNNN): DEL, C1 controls, bidi overrides and invalid UTF-8 become JSON escapes (\uNNNN; an
// invalid byte becomes U+FFFD), so the line stays valid JSON that means the same where it was
// valid, and prints harmlessly.
std::string json_terminal_safe(std::string_view json_text);

}  // namespace descprod::client
