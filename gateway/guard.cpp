// The gateway's limits (see guard.hpp). The shared limits' coroutines send the commands the plain
// functions build and leave every decision to plain functions (GCC 12 coroutine rules,
// docs/building.md#conventions).
#include "gateway/guard.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <cctype>
#include <vector>

#include "core/crypto.hpp"
#include "core/keys.hpp"
#include "core/log.hpp"
#include "gateway/handler.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // see handler.cpp
#endif

namespace descprod::gateway {

namespace {

namespace http = boost::beast::http;

long long ceil_seconds(std::chrono::milliseconds ms) {
  return std::max<long long>(1, (ms.count() + 999) / 1000);
}

std::string lower(std::string_view s) {
  std::string o(s);
  for (auto& c : o) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return o;
}

}  // namespace

std::size_t raise_descriptor_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
  }
  if (rl.rlim_cur == RLIM_INFINITY) return static_cast<std::size_t>(1) << 20;
  return static_cast<std::size_t>(rl.rlim_cur);
}

std::size_t fit_connection_cap(std::size_t wanted, std::size_t descriptors) {
  if (descriptors == 0) return wanted;
  std::size_t room = descriptors > reserved_descriptors + 16 ? descriptors - reserved_descriptors : 16;
  return std::min(wanted, room);
}

api_error too_many_requests(std::string detail, long long retry_after_s) {
  api_error e;
  e.code = errc::too_many_requests;
  e.detail = std::move(detail);
  e.retry_after_s = std::max<long long>(1, retry_after_s);
  return e;
}

// ---- failure_throttle --------------------------------------------------------------------------

std::chrono::milliseconds failure_throttle::wait(const std::string& key, guard_clock::time_point now) const {
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.blocked_until <= now) return std::chrono::milliseconds(0);
  return std::chrono::ceil<std::chrono::milliseconds>(it->second.blocked_until - now);
}

std::chrono::milliseconds failure_throttle::fail(const std::string& key, guard_clock::time_point now) {
  if (entries_.size() >= max_throttle_keys) prune(now);
  auto& e = entries_[key];
  if (e.failures > 0 && now - e.last > p_.window) e.failures = 0;  // an old run: start again
  ++e.failures;
  e.last = now;
  if (e.failures <= p_.free) return std::chrono::milliseconds(0);
  // initial * 2^(failures beyond the free ones - 1), capped.
  auto wait = p_.initial;
  for (std::size_t i = p_.free + 1; i < e.failures && wait < p_.max; ++i) wait *= 2;
  wait = std::min(wait, p_.max);
  e.blocked_until = now + wait;
  return wait;
}

void failure_throttle::prune(guard_clock::time_point now) {
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (now - it->second.last > p_.window && it->second.blocked_until <= now) it = entries_.erase(it);
    else ++it;
  }
  if (entries_.size() < max_throttle_keys) return;
  // Still full of live keys (a flood of names): forget the stalest half.
  std::vector<guard_clock::time_point> lasts;
  lasts.reserve(entries_.size());
  for (const auto& kv : entries_) lasts.push_back(kv.second.last);
  auto mid = lasts.begin() + static_cast<std::ptrdiff_t>(lasts.size() / 2);
  std::nth_element(lasts.begin(), mid, lasts.end());
  auto cut = *mid;
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.last < cut) it = entries_.erase(it);
    else ++it;
  }
  log::warn("login throttle forgot stale keys remaining={}", entries_.size());
}

// ---- window_counter ----------------------------------------------------------------------------

std::chrono::milliseconds window_counter::wait(const std::string& key, guard_clock::time_point now) {
  auto it = events_.find(key);
  if (it == events_.end()) return std::chrono::milliseconds(0);
  auto& q = it->second;
  while (!q.empty() && now - q.front() >= window_) q.pop_front();
  if (q.empty()) {
    events_.erase(it);
    return std::chrono::milliseconds(0);
  }
  if (q.size() < limit_) return std::chrono::milliseconds(0);
  return std::chrono::ceil<std::chrono::milliseconds>(q.front() + window_ - now);
}

void window_counter::add(const std::string& key, guard_clock::time_point now) {
  if (events_.size() >= max_throttle_keys) prune(now);
  auto& q = events_[key];
  q.push_back(now);
  while (q.size() > limit_) q.pop_front();
}

void window_counter::prune(guard_clock::time_point now) {
  for (auto it = events_.begin(); it != events_.end();) {
    if (it->second.empty() || now - it->second.back() >= window_) it = events_.erase(it);
    else ++it;
  }
}

// ---- hash_gate ---------------------------------------------------------------------------------

bool hash_gate::try_enter(const std::string& address) {
  if (in_flight_ >= capacity_) return false;
  if (!address.empty()) {
    auto& n = by_address_[address];
    if (n >= per_address_) return false;
    ++n;
  }
  ++in_flight_;
  return true;
}

void hash_gate::leave(const std::string& address) {
  if (in_flight_ > 0) --in_flight_;
  if (address.empty()) return;
  auto it = by_address_.find(address);
  if (it == by_address_.end()) return;
  if (--it->second == 0) by_address_.erase(it);
}

hash_ticket::hash_ticket(hash_gate* gate, std::string address) : gate_(gate), address_(std::move(address)) {
  if (gate_) admitted_ = gate_->try_enter(address_);
  if (!admitted_) gate_ = nullptr;
}

hash_ticket::~hash_ticket() {
  if (gate_) gate_->leave(address_);
}

// ---- request_guard -----------------------------------------------------------------------------

namespace {
failure_throttle::policy throttle_policy(const gateway_config& c, std::size_t free) {
  failure_throttle::policy p;
  p.free = free;
  p.initial = c.login_backoff_initial;
  p.max = std::max(c.login_backoff_max, c.login_backoff_initial);
  p.window = c.login_failure_window;
  return p;
}

std::chrono::seconds longest_window(const gateway_config& c) {
  return std::max({c.login_failure_window, c.register_window, std::chrono::seconds(60)});
}
}  // namespace

request_guard::request_guard(const gateway_config& c, std::size_t hashing_threads)
    : account_policy(throttle_policy(c, c.login_free_failures)),
      address_policy(throttle_policy(c, c.login_address_free_failures)),
      accounts(account_policy),
      addresses(address_policy),
      register_limit(c.register_per_address),
      register_window(c.register_window),
      registrations(c.register_per_address, c.register_window),
      oidc_starts(oidc_starts_per_minute, std::chrono::seconds(60)),
      hashing(hashing_threads + c.password_hash_queue, c.password_hashes_per_address),
      local_span(longest_window(c)) {}

bool local_counts_matter(const request_guard& g, guard_clock::time_point now) {
  return g.redis_failed_at && now - *g.redis_failed_at < g.local_span;
}

void limits_redis_failed(request_guard& g, guard_clock::time_point now, const std::string& why) {
  if (!g.redis_failed_at)
    log::warn(
        "limits: Redis cannot keep the shared counts; logins, registrations and OpenID Connect starts are "
        "counted in this gateway's memory until it can error={}",
        why);
  g.redis_failed_at = now;
  ++g.redis_failures;
}

void limits_redis_answered(request_guard& g, guard_clock::time_point now) {
  if (!g.redis_failed_at || local_counts_matter(g, now)) return;
  log::info("limits: shared through Redis again failed_commands={}", g.redis_failures);
  g.redis_failed_at.reset();
  g.redis_failures = 0;
}

// ---- the shared limits in Redis ------------------------------------------------------------------

std::string limit_subject(std::string_view value) {
  bool plain = !value.empty() && value.size() <= max_plain_subject;
  for (char c : value) {
    if (!plain) break;
    plain = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-';
  }
  if (plain) return std::string(value);
  return "sha256=" + sha256_hex(value);
}

namespace {

// KEYS[1] the failures of a subject, KEYS[2] its block; ARGV: free failures, initial wait, longest
// wait, window (ms). The wait doubles per failure beyond the free ones (failure_throttle::fail);
// a block that is already longer (a failure counted meanwhile by another gateway) is kept.
constexpr const char* fail_script = R"lua(
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local free = tonumber(ARGV[1])
local wait = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
if n <= free or wait <= 0 then return 0 end
local i = free + 1
while i < n and wait < max do
  wait = wait * 2
  i = i + 1
end
if wait > max then wait = max end
if redis.call('PTTL', KEYS[2]) < wait then
  redis.call('SET', KEYS[2], '1', 'PX', wait)
end
return wait
)lua";

// KEYS[1] a subject's events (sorted set, score = Redis's time in ms); ARGV: limit, window (ms), a
// unique member. Redis's clock, so gateways on hosts whose clocks differ still agree.
constexpr const char* take_script = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local wait = 1
  if oldest[2] then wait = tonumber(oldest[2]) + window - now end
  if wait < 1 then wait = 1 end
  return wait
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
)lua";

using command_list = std::vector<std::vector<std::string>>;

// What Redis answered to a limit's commands: each reply as a number (a PTTL's -1 and -2 as 0), or
// why there is no answer (an error reply or a thrown failure; empty `why` with !ok: no Redis).
struct shared_answer {
  bool ok = false;
  std::vector<long long> values;
  std::string why;
};

shared_answer read_answer(const std::vector<redis_reply>& replies) {
  shared_answer out;
  for (const auto& r : replies) {
    if (r.is_error()) {
      out.why = r.str;
      return out;
    }
    out.values.push_back(std::max<long long>(0, r.as_integer()));
  }
  out.ok = true;
  return out;
}

net::awaitable<shared_answer> ask_redis(gateway_context& ctx, command_list cmds) {
  shared_answer out;
  if (!ctx.redis) co_return out;
  try {
    auto replies = co_await ctx.redis->async_pipeline(std::move(cmds));
    out = read_answer(replies);
  } catch (const boost::system::system_error& e) {
    out.why = e.what();
    if (ctx.on_redis_failure) ctx.on_redis_failure();
  }
  co_return out;
}

// Notes Redis's answer in the guard: whether its values decide (else the local ones do).
bool shared_decides(request_guard& g, const shared_answer& a, guard_clock::time_point now) {
  if (a.ok) {
    limits_redis_answered(g, now);
    return true;
  }
  if (!a.why.empty()) limits_redis_failed(g, now, a.why);
  return false;
}

struct login_waits {
  std::chrono::milliseconds account{0};
  std::chrono::milliseconds address{0};
};

// The waits of Redis's answer (`n` 1 or 2 values: account, address) when it decides, the larger of
// it and the local ones while the local counts matter, else the local ones.
login_waits settle(request_guard& g, const shared_answer& a, const login_waits& local,
                   guard_clock::time_point now) {
  if (!shared_decides(g, a, now)) return local;
  login_waits out;
  if (!a.values.empty()) out.account = std::chrono::milliseconds(a.values[0]);
  if (a.values.size() > 1) out.address = std::chrono::milliseconds(a.values[1]);
  if (local_counts_matter(g, now)) {
    out.account = std::max(out.account, local.account);
    out.address = std::max(out.address, local.address);
  }
  return out;
}

command_list login_wait_cmds(const gateway_context& ctx, const std::string& name, const std::string& peer) {
  const keys k(ctx.prefix);
  command_list c;
  c.push_back(redis_cmd("PTTL", k.limit_block_account(limit_subject(name))));
  if (!peer.empty()) c.push_back(redis_cmd("PTTL", k.limit_block_address(limit_subject(peer))));
  return c;
}

command_list login_fail_cmds(const gateway_context& ctx, const std::string& name, const std::string& peer) {
  const keys k(ctx.prefix);
  const auto& g = *ctx.guard;
  command_list c;
  std::string who = limit_subject(name);
  c.push_back(limit_fail_command(k.limit_fail_account(who), k.limit_block_account(who), g.account_policy));
  if (!peer.empty()) {
    std::string where = limit_subject(peer);
    c.push_back(
        limit_fail_command(k.limit_fail_address(where), k.limit_block_address(where), g.address_policy));
  }
  return c;
}

command_list login_forget_cmds(const gateway_context& ctx, const std::string& name) {
  const keys k(ctx.prefix);
  std::string who = limit_subject(name);
  command_list c;
  c.push_back(redis_cmd("DEL", k.limit_fail_account(who), k.limit_block_account(who)));
  return c;
}

login_waits local_login_waits(const request_guard& g, const std::string& name, const std::string& peer,
                              guard_clock::time_point now) {
  login_waits w;
  w.account = g.accounts.wait(name, now);
  if (!peer.empty()) w.address = g.addresses.wait(peer, now);
  return w;
}

login_waits local_login_failure(request_guard& g, const std::string& name, const std::string& peer,
                                guard_clock::time_point now) {
  login_waits w;
  w.account = g.accounts.fail(name, now);
  if (!peer.empty()) w.address = g.addresses.fail(peer, now);
  return w;
}

std::optional<api_error> login_refusal_of(const login_waits& w) {
  auto wait = std::max(w.account, w.address);
  if (wait.count() <= 0) return std::nullopt;
  // The same words for every account name, existing or not.
  return too_many_requests(w.address > w.account ? "too many failed logins from this address; try again later"
                                                 : "too many failed logins for this account; try again later",
                           ceil_seconds(wait));
}

// A sliding window's event (registration or OpenID Connect start) for `peer`.
struct window_kind {
  window_counter* local = nullptr;
  std::string key;
  std::size_t limit = 0;
  std::chrono::milliseconds window{0};
};

window_kind window_of(gateway_context& ctx, bool oidc, const std::string& peer) {
  const keys k(ctx.prefix);
  auto& g = *ctx.guard;
  window_kind w;
  if (oidc) {
    w.local = &g.oidc_starts;
    w.key = k.limit_oidc(limit_subject(peer));
    w.limit = oidc_starts_per_minute;
    w.window = std::chrono::seconds(60);
  } else {
    w.local = &g.registrations;
    w.key = k.limit_register(limit_subject(peer));
    w.limit = g.register_limit;
    w.window = g.register_window;
  }
  return w;
}

command_list take_cmds(const window_kind& w) {
  command_list c;
  c.push_back(limit_take_command(w.key, w.limit, w.window, new_token().substr(3, 16)));
  return c;
}

// The wait before the event may happen (zero: it was counted, in Redis and here).
std::chrono::milliseconds settle_take(request_guard& g, const window_kind& w, const std::string& peer,
                                      const shared_answer& a, guard_clock::time_point now) {
  std::chrono::milliseconds wait(0);
  if (shared_decides(g, a, now)) {
    if (!a.values.empty()) wait = std::chrono::milliseconds(a.values[0]);
  } else {
    wait = w.local->wait(peer, now);
  }
  if (wait.count() <= 0) w.local->add(peer, now);
  return wait;
}

// Counts one event of the window for `peer` in Redis (and here), or returns the wait.
net::awaitable<std::chrono::milliseconds> take_event(gateway_context& ctx, bool oidc, std::string peer) {
  auto w = window_of(ctx, oidc, peer);
  auto now = guard_clock::now();
  // While the local counts matter, a window full here is full (Redis may have missed events).
  if (local_counts_matter(*ctx.guard, now)) {
    auto local = w.local->wait(peer, now);
    if (local.count() > 0) co_return local;
  }
  auto answer = co_await ask_redis(ctx, take_cmds(w));
  co_return settle_take(*ctx.guard, w, peer, answer, guard_clock::now());
}

}  // namespace

std::vector<std::string> limit_fail_command(const std::string& count_key, const std::string& block_key,
                                            const failure_throttle::policy& p) {
  auto window = std::chrono::duration_cast<std::chrono::milliseconds>(p.window);
  return redis_cmd("EVAL", fail_script, "2", count_key, block_key, std::to_string(p.free),
                   std::to_string(p.initial.count()), std::to_string(p.max.count()),
                   std::to_string(window.count()));
}

std::vector<std::string> limit_take_command(const std::string& key, std::size_t limit,
                                            std::chrono::milliseconds window, const std::string& unique) {
  return redis_cmd("EVAL", take_script, "1", key, std::to_string(limit), std::to_string(window.count()),
                   unique);
}

net::awaitable<std::optional<api_error>> login_refusal(gateway_context& ctx, std::string name,
                                                       std::string peer) {
  if (!ctx.guard) co_return std::nullopt;
  auto answer = co_await ask_redis(ctx, login_wait_cmds(ctx, name, peer));
  auto now = guard_clock::now();
  auto local = local_login_waits(*ctx.guard, name, peer, now);
  auto waits = settle(*ctx.guard, answer, local, now);
  co_return login_refusal_of(waits);
}

net::awaitable<void> login_failed(gateway_context& ctx, std::string name, std::string peer) {
  if (!ctx.guard) co_return;
  auto local = local_login_failure(*ctx.guard, name, peer, guard_clock::now());
  auto answer = co_await ask_redis(ctx, login_fail_cmds(ctx, name, peer));
  auto waits = settle(*ctx.guard, answer, local, guard_clock::now());
  if (waits.account.count() > 0 || waits.address.count() > 0)
    log::warn("login throttled user={} address={} account_wait_ms={} address_wait_ms={}", name, peer,
              waits.account.count(), waits.address.count());
}

net::awaitable<void> login_succeeded(gateway_context& ctx, std::string name) {
  if (!ctx.guard) co_return;
  ctx.guard->accounts.forget(name);
  auto answer = co_await ask_redis(ctx, login_forget_cmds(ctx, name));
  shared_decides(*ctx.guard, answer, guard_clock::now());
}

net::awaitable<std::optional<api_error>> register_take(gateway_context& ctx, std::string peer) {
  if (!ctx.guard || peer.empty()) co_return std::nullopt;
  auto wait = co_await take_event(ctx, false, peer);
  if (wait.count() <= 0) co_return std::nullopt;
  log::warn("registration throttled address={}", peer);
  co_return too_many_requests("too many registrations from this address; try again later",
                              ceil_seconds(wait));
}

net::awaitable<std::optional<api_error>> oidc_start_take(gateway_context& ctx, std::string peer) {
  if (!ctx.guard || peer.empty()) co_return std::nullopt;
  auto wait = co_await take_event(ctx, true, peer);
  if (wait.count() <= 0) co_return std::nullopt;
  log::warn("oidc login throttled address={}", peer);
  co_return too_many_requests("too many logins from this address; try again later", ceil_seconds(wait));
}

api_error hashing_busy() {
  return too_many_requests("the gateway is busy checking passwords; try again shortly", hash_retry_after_s);
}

std::optional<api_error> stream_refusal(gateway_context& ctx, const principal& who) {
  if (!ctx.hub) return std::nullopt;
  if (ctx.hub->subscribers() >= ctx.config.max_event_streams) {
    log::warn("event stream refused user={} reason=global limit={}", who.name, ctx.config.max_event_streams);
    return too_many_requests("the gateway serves as many live event streams as it can; retry later",
                             stream_retry_after_s);
  }
  if (ctx.hub->streams_of(who.name) >= ctx.config.max_event_streams_per_user) {
    log::warn("event stream refused user={} reason=per-user limit={}", who.name,
              ctx.config.max_event_streams_per_user);
    return too_many_requests("this account has " + std::to_string(ctx.config.max_event_streams_per_user) +
                                 " live event streams open already; close one first",
                             stream_retry_after_s);
  }
  return std::nullopt;
}

// ---- origins and hosts ---------------------------------------------------------------------

std::optional<web_origin> origin_of_host(std::string_view scheme, std::string_view host) {
  web_origin o;
  o.scheme = lower(scheme);
  if (o.scheme != "http" && o.scheme != "https") return std::nullopt;
  if (host.empty() || host.size() > 255) return std::nullopt;
  std::string h = lower(host);
  std::string port;
  if (h.front() == '[') {  // [v6]:port
    auto close = h.find(']');
    if (close == std::string::npos) return std::nullopt;
    o.host = h.substr(0, close + 1);
    auto rest = h.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return std::nullopt;
      port = rest.substr(1);
    }
  } else {
    auto colon = h.find(':');
    o.host = h.substr(0, colon);
    if (colon != std::string::npos) port = h.substr(colon + 1);
  }
  if (o.host.empty()) return std::nullopt;
  for (char c : o.host)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' || c == '[' ||
          c == ']' || c == ':'))
      return std::nullopt;
  if (port.empty()) {
    o.port = o.scheme == "https" ? 443 : 80;
  } else {
    if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    o.port = static_cast<unsigned>(std::stoul(port));
    if (o.port == 0 || o.port > 65535) return std::nullopt;
  }
  return o;
}

std::optional<web_origin> parse_origin(std::string_view url) {
  auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::nullopt;  // "null" and garbage
  auto rest = url.substr(scheme_end + 3);
  auto slash = rest.find('/');
  if (slash != std::string_view::npos) rest = rest.substr(0, slash);
  if (rest.find('@') != std::string_view::npos) return std::nullopt;  // user info
  return origin_of_host(url.substr(0, scheme_end), rest);
}

namespace {
// `got` names this service: it is public_url's origin, or a loopback name on public_url's port or
// on the port the gateway listens on. A loopback name cannot be the target of DNS rebinding (a
// browser sends it only to a page it loaded from this machine's own address), and it is how
// workers and people on the gateway's host reach it when public_url names the outside address.
bool names_this_service(const gateway_context& ctx, const web_origin& got, const web_origin& want) {
  if (got == want) return true;
  return got.scheme == want.scheme && is_loopback_name(got.host) &&
         (got.port == want.port || got.port == static_cast<unsigned>(ctx.config.port));
}
}  // namespace

bool origin_matches(const gateway_context& ctx, std::string_view origin, std::string_view host) {
  if (origin.empty()) return true;
  auto got = parse_origin(origin);
  // An Origin with a path is not an origin (browsers never send one).
  if (!got) return false;
  {
    auto rest = origin.substr(origin.find("://") + 3);
    if (rest.find('/') != std::string_view::npos) return false;
  }
  if (!ctx.config.public_url.empty()) {
    auto want = parse_origin(ctx.config.public_url);
    return want && names_this_service(ctx, *got, *want);
  }
  auto want = origin_of_host(ctx.tls ? "https" : "http", host);
  return want && *got == *want;
}

std::optional<api_error> check_request_header(const gateway_context& ctx,
                                              const http::request<http::string_body>& req) {
  if (req.count(http::field::authorization) > 1) return bad_request("more than one Authorization header");
  if (req.count(http::field::host) > 1) return bad_request("more than one Host header");
  auto target = req.target();
  auto path = target.substr(0, target.find('?'));
  if (path == "/healthz" || path == "/readyz") return std::nullopt;
  if (ctx.config.public_url.empty()) {
    // A gateway that listens on loopback only is reached by loopback names only: any other Host
    // is a page of another site whose name was rebound to 127.0.0.1 (DNS rebinding). A request
    // without Host is not from a browser.
    const auto& a = ctx.config.address;
    bool loopback_listener = is_loopback_name(a);
    auto host = req[http::field::host];
    if (!loopback_listener || host.empty()) return std::nullopt;
    auto got = origin_of_host(ctx.tls ? "https" : "http", host);
    if (!got || !is_loopback_name(got->host))
      return bad_request("Host header does not name this service (it listens on " + a +
                         " only; set gateway.public_url to serve another name)");
    return std::nullopt;
  }
  auto want = parse_origin(ctx.config.public_url);
  if (!want) return std::nullopt;  // config_test-level problem; the config check reports it
  auto got = origin_of_host(want->scheme, req[http::field::host]);
  if (!got || !names_this_service(ctx, *got, *want))
    return bad_request("Host header does not name this service (" + want->host + ":" +
                       std::to_string(want->port) + ")");
  return std::nullopt;
}

}  // namespace descprod::gateway
