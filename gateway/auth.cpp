// Who is calling (handler_detail.hpp's authenticate): a bearer token, or else the web session
// cookie. Tokens checked recently come from the auth cache (auth_cache.hpp); job tokens never do.
// GCC 12 coroutine rules (docs/building.md#conventions) apply.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include "core/crypto.hpp"
#include "core/keys.hpp"
#include "gateway/auth_cache.hpp"
#include "gateway/handler_detail.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // see handler.cpp
#endif

namespace descprod::gateway::detail {

namespace {

std::string field_of(const job_record& r, const char* k) {
  auto it = r.find(k);
  return it == r.end() ? std::string() : it->second;
}

// A token hash's `expires` field as epoch seconds (0: never, or unreadable: check_token has
// refused those already).
double token_expiry(const job_record& token) {
  auto it = token.find("expires");
  if (it == token.end() || it->second.empty()) return 0;
  char* end = nullptr;
  double t = std::strtod(it->second.c_str(), &end);
  return end && *end == '\0' && std::isfinite(t) ? t : 0;
}

// The user account behind a token or a session: must exist and be active.
net::awaitable<std::optional<api_error>> check_account(gateway_context& ctx, principal& who) {
  auto user = co_await ctx.redis->async_exec(redis_cmd("HGETALL", ctx.jobs->redis_keys().user(who.name)));
  if (auto e = check_user(record_from_reply(user), who)) co_return e;
  co_return std::nullopt;
}

std::vector<std::vector<std::string>> session_cmds(const gateway_context& ctx, const std::string& key) {
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(redis_cmd("HGETALL", key));
  // Sliding expiry: every request by the session pushes its end out again.
  cmds.push_back(redis_cmd("EXPIRE", key, std::to_string(ctx.config.session_ttl.count())));
  return cmds;
}
}  // namespace

net::awaitable<auth_result> authenticate(gateway_context& ctx, std::string header, std::string cookie) {
  auth_result out;
  std::string session_token = web::cookie_value(cookie, web::session_cookie);
  if (header.empty() && !session_token.empty()) {
    // A web session: the cookie's token, stored only as its hash.
    std::string hash = sha256_hex(session_token);
    auto replies =
        co_await ctx.redis->async_pipeline(session_cmds(ctx, ctx.jobs->redis_keys().session(hash)));
    auto sess = record_from_reply(replies[0]);
    auto user = sess.find("user");
    if (user == sess.end() || user->second.empty()) {
      out.error = unauthorized("the session has expired or ended; log in again");
      co_return out;
    }
    principal who;
    who.name = user->second;
    who.by_session = true;
    who.session_hash = hash;
    who.csrf = field_of(sess, "csrf");
    who.session_id = field_of(sess, "session_id");
    if (auto e = co_await check_account(ctx, who)) {
      out.error = *e;
      co_return out;
    }
    out.who = std::move(who);
    co_return out;
  }
  auto token = bearer_token(header);
  if (!token) {
    out.error = unauthorized(header.empty() ? "missing Authorization: Bearer <token> header"
                                            : "malformed Authorization header; expected Bearer <token>");
    co_return out;
  }
  std::string hash = sha256_hex(*token);
  auto looked_up = auth_cache::clock::now();
  if (ctx.tokens) {
    if (auto known = ctx.tokens->find(hash, now_s(ctx), looked_up)) {
      out.who = std::move(*known);
      out.who->token_hash = hash;
      co_return out;
    }
  }
  auto tok = co_await ctx.redis->async_exec(redis_cmd("HGETALL", ctx.jobs->redis_keys().token(hash)));
  auto tok_rec = record_from_reply(tok);
  principal who;
  if (auto e = check_token(tok_rec, now_s(ctx), who)) {
    out.error = *e;
    co_return out;
  }
  who.token_hash = hash;  // check_token fills `who` afresh
  if (auto e = co_await check_account(ctx, who)) {
    out.error = *e;
    co_return out;
  }
  // Job tokens are not remembered: one dies with its job's attempt (the store's scripts delete it
  // or make it read-only), and that must hold from the next request on, not up to a ttl later.
  if (ctx.tokens && !who.only_job) ctx.tokens->remember(hash, who, token_expiry(tok_rec), looked_up);
  out.who = std::move(who);
  co_return out;
}

}  // namespace descprod::gateway::detail

namespace descprod::gateway {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

// ---- authentication -------------------------------------------------------------------------

std::optional<std::string> bearer_token(std::string_view h) {
  auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
  };
  h = trim(h);
  constexpr std::string_view scheme = "bearer";
  if (h.size() <= scheme.size() || !iequals(h.substr(0, scheme.size()), scheme)) return std::nullopt;
  if (h[scheme.size()] != ' ' && h[scheme.size()] != '\t') return std::nullopt;
  auto token = trim(h.substr(scheme.size()));
  // Tokens are "dp_" + 64 hex digits; allow some slack but never whitespace or huge values.
  if (token.empty() || token.size() > 256) return std::nullopt;
  for (char c : token) {
    if (c <= ' ' || c == 0x7f) return std::nullopt;
  }
  return std::string(token);
}

std::optional<api_error> check_token(const job_record& token, double now_s, principal& who) {
  auto field = [&](const char* k) -> std::string {
    auto it = token.find(k);
    return it == token.end() ? std::string() : it->second;
  };
  if (token.empty()) return unauthorized("unknown or revoked token");
  std::string owner = field("owner");
  if (owner.empty()) return unauthorized("token has no owner");
  std::string expires = field("expires");
  if (!expires.empty()) {
    auto t = parse_double(expires);
    if (!t) return unauthorized("token has an unreadable expiry");
    if (*t > 0 && now_s >= *t) return unauthorized("token expired");
  }
  std::string scope = field("scope");
  principal p;
  p.name = owner;
  if (scope == "user") {
    // full access as the owner
    p.session_id = field("session_id");
  } else if (scope.rfind("job:", 0) == 0) {
    auto id = parse_integer<job_id>(std::string_view(scope).substr(4));
    if (!id || *id <= 0) return unauthorized("token has an unreadable scope");
    p.only_job = *id;
    p.read_only = field("read_only") == "1";
  } else {
    return unauthorized("token scope " + quoted(scope) + " is not accepted here");
  }
  who = std::move(p);
  return std::nullopt;
}

std::optional<api_error> check_user(const job_record& user, principal& who) {
  if (user.empty()) return unauthorized("the token's account no longer exists");
  auto status = user.find("status");
  if (status == user.end() || status->second != "active")
    return unauthorized("account " + who.name + " is " +
                        (status == user.end() ? std::string("not active") : status->second));
  auto role = user.find("role");
  // A job token never carries admin rights, whoever owns it.
  who.admin = role != user.end() && role->second == "admin" && !who.only_job;
  return std::nullopt;
}

bool may_read(const principal& who, job_id, const std::string& owner) {
  // A job token reads every job of its owner (a child its parent, a continuation the job before);
  // the routes' job scope (router.hpp) keeps it from writing anything but its own run and children.
  if (who.admin) return true;
  return !owner.empty() && owner == who.name;
}

bool may_change(const principal& who, const std::string& owner) {
  if (who.only_job || owner.empty()) return false;
  return who.admin || owner == who.name;
}

std::optional<api_error> check_children_only(const principal& who, const std::vector<job_request>& jobs) {
  if (!who.only_job) return std::nullopt;
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    if (!jobs[i].parent || *jobs[i].parent != *who.only_job) {
      std::string where = jobs.size() > 1 ? "jobs[" + std::to_string(i) + "]: " : "";
      return forbidden(where + "a job token may only create children of job " +
                       std::to_string(*who.only_job) + " (\"parent\": " + std::to_string(*who.only_job) +
                       ")");
    }
  }
  return std::nullopt;
}

}  // namespace descprod::gateway
