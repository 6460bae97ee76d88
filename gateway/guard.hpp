// The gateway's limits against hostile or broken clients (issue 13; docs/security.md): login
// throttling per account and per client address with growing waits, a bounded password-hashing
// admission, registrations and OpenID Connect login starts per address, the event-stream caps,
// and the request-header checks (Host pinned to public_url, Origin compared by scheme, host and
// port, one Authorization header). The connection caps themselves are in server.cpp, which owns
// the sockets.
//
// Every refusal here is a 429 with Retry-After (header checks: 400/403). The login throttles and
// the registration and OpenID Connect counters are shared by every gateway on one Redis (issue 15
// item 3): their counts live under <prefix>limit:* (core/keys.hpp), each key with a TTL, changed
// by small Lua scripts (every key a KEYS, every value an ARGV), so a client cannot multiply its
// allowance by spreading its requests over N gateways. Each gateway also keeps counting in its
// own memory (failure_throttle, window_counter: the throttles of before), and those counts decide
// when Redis cannot answer a limit's command (a lost connection, LOADING, BUSY, MISCONF, an OOM or
// NOPERM error): logins stay throttled per gateway instead of failing closed (everyone locked out)
// or open (guessing free during an outage). The switch is logged once each way; for the longest
// window after a Redis failure a check takes the larger of the two waits. The hashing admission
// and the stream caps protect this process and stay per gateway.
//
// Thread-safety: none; a request_guard belongs to the gateway's io_context thread.
#pragma once

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/config.hpp"
#include "gateway/api.hpp"

namespace descprod::gateway {

struct gateway_context;

using guard_clock = std::chrono::steady_clock;

// Descriptors kept for everything but client connections (Redis, ZeroMQ, log files, TLS files,
// the hashing threads' needs) when the connection cap is fitted under the descriptor limit.
inline constexpr std::size_t reserved_descriptors = 512;
// Keys a throttle or counter remembers at most; beyond, the stalest are forgotten.
inline constexpr std::size_t max_throttle_keys = 100000;
// Retry-After of a refused event stream and of a refused password hash (seconds).
inline constexpr long long stream_retry_after_s = 10;
inline constexpr long long hash_retry_after_s = 1;
// OpenID Connect logins one address may start per minute (each keeps a state in Redis 10 minutes).
inline constexpr std::size_t oidc_starts_per_minute = 30;
// Names and addresses up to this length, of a-z 0-9 . _ : -, are their own subject in a limit's
// Redis key; anything else is hashed (limit_subject).
inline constexpr std::size_t max_plain_subject = 64;

// The part of a <prefix>limit:* key that stands for an account name or a client address: the
// value itself when it is 1 to max_plain_subject characters of a-z 0-9 . _ : - (every valid user
// name, every IPv4 and IPv6 address as the gateway prints it), else "sha256=" and its SHA-256 in
// hex, which no plain subject can equal. A hostile or odd value never makes a long key.
std::string limit_subject(std::string_view value);

// Raises the soft RLIMIT_NOFILE to the hard limit (best effort) and returns the soft limit now
// in effect (0 when unknown).
std::size_t raise_descriptor_limit();
// The connection cap that fits `descriptors` (keeps reserved_descriptors free; at least 16), or
// `wanted` when it fits.
std::size_t fit_connection_cap(std::size_t wanted, std::size_t descriptors);

// A 429 "too_many_requests" with Retry-After.
api_error too_many_requests(std::string detail, long long retry_after_s);

// Failures per key (an account name or a client address). The first `free` failures within
// `window` cost nothing; each later one blocks the key for initial, 2x initial, ... up to max.
// Failures older than `window` (counted from the last one) are forgotten.
class failure_throttle {
 public:
  struct policy {
    std::size_t free = 5;
    std::chrono::milliseconds initial{1000};
    std::chrono::milliseconds max{300000};
    std::chrono::seconds window{900};
  };
  explicit failure_throttle(policy p) : p_(p) {}

  // How long `key` must still wait (zero: it may try now).
  std::chrono::milliseconds wait(const std::string& key, guard_clock::time_point now) const;
  // Records a failure; returns the wait it starts (zero while within the free failures).
  std::chrono::milliseconds fail(const std::string& key, guard_clock::time_point now);
  void forget(const std::string& key) { entries_.erase(key); }
  std::size_t size() const { return entries_.size(); }

 private:
  struct entry {
    std::size_t failures = 0;
    guard_clock::time_point last{};
    guard_clock::time_point blocked_until{};
  };
  void prune(guard_clock::time_point now);
  policy p_;
  std::unordered_map<std::string, entry> entries_;
};

// At most `limit` events per key within a sliding `window` (registrations per address).
class window_counter {
 public:
  window_counter(std::size_t limit, std::chrono::seconds window) : limit_(limit), window_(window) {}
  // How long `key` must wait before its next event is allowed (zero: now).
  std::chrono::milliseconds wait(const std::string& key, guard_clock::time_point now);
  void add(const std::string& key, guard_clock::time_point now);

 private:
  void prune(guard_clock::time_point now);
  std::size_t limit_;
  std::chrono::seconds window_;
  std::unordered_map<std::string, std::deque<guard_clock::time_point>> events_;
};

// Admission to the password-hashing threads: at most `capacity` hashes queued or running, and
// at most `per_address` of them from one client address. A refused login costs no hashing.
class hash_gate {
 public:
  hash_gate(std::size_t capacity, std::size_t per_address) : capacity_(capacity), per_address_(per_address) {}
  bool try_enter(const std::string& address);
  void leave(const std::string& address);
  std::size_t in_flight() const { return in_flight_; }

 private:
  std::size_t capacity_;
  std::size_t per_address_;
  std::size_t in_flight_ = 0;
  std::unordered_map<std::string, std::size_t> by_address_;
};

// Holds one hash_gate place for a scope (a coroutine frame); empty when the gate refused.
class hash_ticket {
 public:
  hash_ticket() = default;
  hash_ticket(hash_gate* gate, std::string address);
  ~hash_ticket();
  hash_ticket(const hash_ticket&) = delete;
  hash_ticket& operator=(const hash_ticket&) = delete;
  // Whether a place is held (or no gate is in use).
  bool admitted() const { return admitted_; }

 private:
  hash_gate* gate_ = nullptr;
  std::string address_;
  bool admitted_ = true;
};

// This gateway's throttles (gateway_context::guard): the policies of the shared counts, and this
// gateway's own counts, which decide while Redis cannot.
struct request_guard {
  // `hashing_threads`: the threads hashes run on (the queue bound counts beyond them).
  request_guard(const gateway_config& c, std::size_t hashing_threads);
  failure_throttle::policy account_policy;
  failure_throttle::policy address_policy;
  failure_throttle accounts;
  failure_throttle addresses;
  std::size_t register_limit;
  std::chrono::seconds register_window;
  window_counter registrations;
  window_counter oidc_starts;  // OpenID Connect logins started per address (oidc_starts_per_minute)
  hash_gate hashing;
  // How long after a failed limit command the local counts still weigh in (the longest window).
  std::chrono::seconds local_span;
  // When a limit's Redis command last failed; unset while Redis has kept every count.
  std::optional<guard_clock::time_point> redis_failed_at;
  std::size_t redis_failures = 0;  // limit commands that failed (each fell back to the local counts)
};

// Whether the local counts weigh in at `now`: a limit's Redis command failed within local_span.
bool local_counts_matter(const request_guard& g, guard_clock::time_point now);
// Records that a limit's Redis command failed (`why`): the first failure of a run logs a warning.
void limits_redis_failed(request_guard& g, guard_clock::time_point now, const std::string& why);
// Records that one succeeded: after local_span without failures, logs once that the limits are
// shared again.
void limits_redis_answered(request_guard& g, guard_clock::time_point now);

// The Redis commands of the shared limits (plain functions: the coroutines below send them).
// A failure of `subject`: counts it (TTL: the policy's window, from this failure) and, beyond the
// free ones, sets the block key to the policy's wait with PX unless it holds a longer one. The
// reply is the wait started in ms (0: within the free failures).
std::vector<std::string> limit_fail_command(const std::string& count_key, const std::string& block_key,
                                            const failure_throttle::policy& p);
// One event of a sliding window of `window` holding at most `limit`, timed by Redis's clock: the
// reply is 0 when the event was taken (member `unique` added, the set's TTL the window), else the
// ms until the oldest event leaves the window (nothing added).
std::vector<std::string> limit_take_command(const std::string& key, std::size_t limit,
                                            std::chrono::milliseconds window, const std::string& unique);

// Login (API and form) before any hashing: 429 while the account or the client address waits
// out a throttle (the block keys' PTTL in Redis). `peer` may be empty (no address known: only
// the account counts).
net::awaitable<std::optional<api_error>> login_refusal(gateway_context& ctx, std::string name,
                                                       std::string peer);
// After the password check: a failure feeds both throttles; a success clears the account's.
net::awaitable<void> login_failed(gateway_context& ctx, std::string name, std::string peer);
net::awaitable<void> login_succeeded(gateway_context& ctx, std::string name);
// Registration: counts one for the address, or 429 when it has used up its registrations (then
// nothing is counted). An empty `peer` is not limited.
net::awaitable<std::optional<api_error>> register_take(gateway_context& ctx, std::string peer);
// An OpenID Connect login start: as register_take, oidc_starts_per_minute per address.
net::awaitable<std::optional<api_error>> oidc_start_take(gateway_context& ctx, std::string peer);
// A 429 for a full hashing queue.
api_error hashing_busy();

// Opening an event stream for `who`: 429 beyond gateway.max_event_streams in all or
// gateway.max_event_streams_per_user for the account.
std::optional<api_error> stream_refusal(gateway_context& ctx, const principal& who);

// The scheme, lower-case host and port of an origin or URL ("https://Host:8443/x" →
// {"https","host",8443}); the port defaults from the scheme. nullopt: not http(s) or malformed.
struct web_origin {
  std::string scheme;
  std::string host;
  unsigned port = 0;
  bool operator==(const web_origin&) const = default;
};
std::optional<web_origin> parse_origin(std::string_view url);
// host[:port] of a Host header with the scheme's default port filled in.
std::optional<web_origin> origin_of_host(std::string_view scheme, std::string_view host);

// is_loopback_name: core/config.hpp.
// Whether a browser's Origin header may change state here: absent (not a browser), or equal in
// scheme, host and port to gateway.public_url when set (or a loopback name on its port or the
// listen port), else to this gateway's own scheme and the Host header. The Host header is held to
// the same rule when public_url is set (check_request_header).
bool origin_matches(const gateway_context& ctx, std::string_view origin, std::string_view host);

// Checks of the request header before routing: two Authorization or two Host headers → 400; with
// gateway.public_url set, a Host other than its host[:port] → 400 (DNS rebinding), except on the
// probes /healthz and /readyz.
std::optional<api_error> check_request_header(
    const gateway_context& ctx, const boost::beast::http::request<boost::beast::http::string_body>& req);

}  // namespace descprod::gateway
