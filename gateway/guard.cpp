// The gateway's limits (see guard.hpp).
#include "gateway/guard.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <cctype>
#include <vector>

#include "core/log.hpp"
#include "gateway/handler.hpp"

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
}  // namespace

request_guard::request_guard(const gateway_config& c, std::size_t hashing_threads)
    : accounts(throttle_policy(c, c.login_free_failures)),
      addresses(throttle_policy(c, c.login_address_free_failures)),
      registrations(c.register_per_address, c.register_window),
      oidc_starts(oidc_starts_per_minute, std::chrono::seconds(60)),
      hashing(hashing_threads + c.password_hash_queue, c.password_hashes_per_address) {}

std::optional<api_error> login_refusal(const gateway_context& ctx, const std::string& name,
                                       const std::string& peer) {
  if (!ctx.guard) return std::nullopt;
  auto now = guard_clock::now();
  auto by_account = ctx.guard->accounts.wait(name, now);
  auto by_address = peer.empty() ? std::chrono::milliseconds(0) : ctx.guard->addresses.wait(peer, now);
  auto wait = std::max(by_account, by_address);
  if (wait.count() <= 0) return std::nullopt;
  // The same words for every account name, existing or not.
  return too_many_requests(by_address > by_account
                               ? "too many failed logins from this address; try again later"
                               : "too many failed logins for this account; try again later",
                           ceil_seconds(wait));
}

void login_failed(gateway_context& ctx, const std::string& name, const std::string& peer) {
  if (!ctx.guard) return;
  auto now = guard_clock::now();
  auto a = ctx.guard->accounts.fail(name, now);
  auto b = peer.empty() ? std::chrono::milliseconds(0) : ctx.guard->addresses.fail(peer, now);
  if (a.count() > 0 || b.count() > 0)
    log::warn("login throttled user={} address={} account_wait_ms={} address_wait_ms={}", name, peer,
              a.count(), b.count());
}

void login_succeeded(gateway_context& ctx, const std::string& name) {
  if (ctx.guard) ctx.guard->accounts.forget(name);
}

std::optional<api_error> register_refusal(gateway_context& ctx, const std::string& peer) {
  if (!ctx.guard || peer.empty()) return std::nullopt;
  auto wait = ctx.guard->registrations.wait(peer, guard_clock::now());
  if (wait.count() <= 0) return std::nullopt;
  log::warn("registration throttled address={}", peer);
  return too_many_requests("too many registrations from this address; try again later", ceil_seconds(wait));
}

void register_attempted(gateway_context& ctx, const std::string& peer) {
  if (ctx.guard && !peer.empty()) ctx.guard->registrations.add(peer, guard_clock::now());
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
