// The e-mails of descprod-notifier, built as text (docs/operators.md#e-mail-on-failure): pure
// functions, no I/O, so the unit tests check every byte. Every value that comes from a user or an
// application (a job's type, config, progress; an account's e-mail address) goes through
// one_line() before it is put into a header or a body line, so no CR or LF from it can start a
// header or a line of its own.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <ctime>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/redis.hpp"

namespace descprod::notify {

// `s` as one line: CR, LF and every other control character (C0, DEL) become one space each,
// leading and trailing spaces are dropped, and the result is cut to at most `max_bytes` (never
// inside a UTF-8 sequence).
std::string one_line(std::string_view s, std::size_t max_bytes = 200);

// The SMTP DATA payload of `message` (RFC 5321 4.5.2): every line ending (CRLF, bare LF, bare CR)
// becomes CRLF, a line starting with "." gets another "." in front, and the payload ends with
// CRLF; the terminating "." line is not included.
std::string dot_stuff(std::string_view message);

// A job as a mail names it.
struct failed_job {
  std::string id, jobtype, config, state, progress;
};

struct mail {
  std::string from, to, subject;
  std::string body;  // lines separated by "\n"
};

// The mail telling `user` about `total` failed jobs, of which `listed` are named (at most
// `max_listed` of them: the others are "and N more"). Links are <base_url>/jobs/<id>.
mail failure_mail(std::string_view from, std::string_view to, std::string_view user,
                  const std::vector<failed_job>& listed, long long total, std::string_view base_url,
                  std::size_t max_listed);

// The whole message (headers, a blank line, the body) with CRLF line endings, before dot-stuffing:
// From, To, Subject, Date (`now`, RFC 5322, UTC), Message-ID (`message_id`, without <>),
// MIME-Version and a text/plain UTF-8 body. Header values pass through one_line().
std::string render_message(const mail& m, std::time_t now, std::string_view message_id);

// The failures in a batch of entries of the events stream (an XRANGE/XREAD-shaped list of
// [id, [field, value, ...]]): transitions into failed, timeout, killed or lost, grouped by owner,
// job IDs in stream order. `last_id` receives the last entry's ID (unchanged when there is none).
std::map<std::string, std::vector<std::string>> failures_by_owner(const redis_reply& entries,
                                                                  std::string& last_id);
// Whether a terminal state counts as a failure for e-mail (failed, timeout, killed, lost; not
// done, not cancelled: the owner or an admin did that).
bool is_failure_state(std::string_view state);

}  // namespace descprod::notify
