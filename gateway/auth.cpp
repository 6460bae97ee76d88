// Who is calling (handler_detail.hpp's authenticate): a bearer token, or else the web session
// cookie. Tokens checked recently come from the auth cache (auth_cache.hpp); job tokens never do.
// GCC 12 coroutine rules (docs/building.md#conventions) apply.
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

std::vector<std::vector<std::string>> session_cmds(const gateway_context& ctx,
                                                   const std::string& key) {
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(redis_cmd("HGETALL", key));
  // Sliding expiry: every request by the session pushes its end out again.
  cmds.push_back(redis_cmd("EXPIRE", key, std::to_string(ctx.config.session_ttl.count())));
  return cmds;
}
}  // namespace

net::awaitable<auth_result> authenticate(gateway_context& ctx, std::string header,
                                         std::string cookie) {
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
    if (auto e = co_await check_account(ctx, who)) {
      out.error = *e;
      co_return out;
    }
    out.who = std::move(who);
    co_return out;
  }
  auto token = bearer_token(header);
  if (!token) {
    out.error =
        unauthorized(header.empty() ? "missing Authorization: Bearer <token> header"
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
