// The client's HTTP/1.1 transport: blocking calls over Boost.Beast (plain TCP or TLS), one
// connection per request, every connect/write/read bounded by a deadline; and a Server-Sent Events
// reader for the gateway's live streams. No coroutines: each call runs async operations with plain
// completion handlers on a private io_context until they finish.
//
// Errors: a server that cannot be reached, a connection lost mid-answer and a deadline that passes
// throw `unreachable` (the commands' exit status 3). Any HTTP status is a normal answer.
// Thread-safety: the functions share no state; separate threads may call them at once. One
// sse_stream belongs to one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace descprod::client {

// A server base URL: http[s]://host[:port][/base/path]. `base` has no trailing '/'.
struct url_parts {
  bool tls = false;
  std::string host;
  std::string port;
  std::string base;
  std::string text() const;  // back to a URL, e.g. "http://127.0.0.1:8080"
};

// nullopt (with the reason in *why) for anything but http:// or https:// with a host.
std::optional<url_parts> parse_url(std::string_view url, std::string* why = nullptr);

// The server could not be reached, or the connection failed before a whole answer arrived.
struct unreachable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using header_list = std::vector<std::pair<std::string, std::string>>;

struct http_reply {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // names in lower case
  std::string header(std::string_view name) const;
};

// The largest answer body read by default (a job list of 1000 jobs is well below it).
inline constexpr std::uint64_t default_max_body_bytes = std::uint64_t(64) << 20;

// One request on a new connection (Connection: close). `target` is appended to url.base. A
// non-empty body is sent as application/json. An answer's body larger than `max_body` fails the
// read. Throws `unreachable`.
http_reply http_request(const url_parts& url, std::string_view method, std::string_view target,
                        std::string_view body = {}, const header_list& headers = {},
                        std::chrono::milliseconds timeout = std::chrono::seconds(30),
                        std::uint64_t max_body = default_max_body_bytes);

// One Server-Sent Event: the `id:`, `event:` and (joined) `data:` lines before a blank line.
struct sse_event {
  std::string id;
  std::string event;
  std::string data;
};

// Incremental SSE framing (the WHATWG rules the gateway needs): CR, LF or CRLF line ends, `:`
// comments ignored, one optional space after the colon removed, an event dispatched at a blank
// line when it has data. Pure; unit-tested.
class sse_parser {
 public:
  void feed(std::string_view bytes, std::vector<sse_event>& out);

 private:
  void line(std::string_view l, std::vector<sse_event>& out);
  std::string partial_;
  bool last_was_cr_ = false;
  sse_event current_;
  bool has_data_ = false;
};

// A GET of an event stream. The constructor connects and reads the answer's header (throws
// `unreachable`); when the status is not 200 the (short) body is read into error_body().
class sse_stream {
 public:
  sse_stream(const url_parts& url, std::string_view target, const header_list& headers,
             std::chrono::milliseconds connect_timeout = std::chrono::seconds(10));
  ~sse_stream();
  sse_stream(const sse_stream&) = delete;
  sse_stream& operator=(const sse_stream&) = delete;

  int status() const;
  const std::string& error_body() const;
  // Waits up to `idle` for more bytes and returns the events they complete (possibly none). When
  // the stream ended, failed or stayed silent for `idle`, returns what it has and open() turns
  // false (the connection is closed; reconnect to go on).
  std::vector<sse_event> next(std::chrono::milliseconds idle);
  bool open() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace descprod::client
