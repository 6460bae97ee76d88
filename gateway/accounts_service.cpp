// The accounts service (accounts_service.hpp). GCC 12 coroutine rules
// (docs/building.md#conventions): commands are built by the plain functions at the top;
// coroutine parameters are values.
#include "gateway/accounts_service.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <functional>

#include "core/accounts.hpp"
#include "core/async_util.hpp"
#include "core/crypto.hpp"
#include "core/keys.hpp"
#include "core/log.hpp"
#include "gateway/guard.hpp"
#include "gateway/handler_detail.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // see handler.cpp
#endif

namespace descprod::gateway::accounts_service {

using detail::keys_of;
using detail::now_s;

namespace {

password_cost cost_of(const gateway_context& ctx) {
  password_cost c;
  c.opslimit = ctx.config.password_opslimit;
  c.memlimit_bytes = ctx.config.password_memlimit_kib * 1024;
  return c;
}

std::function<std::string()> hash_job(std::string password, password_cost cost) {
  return [password = std::move(password), cost] { return hash_password(password, cost); };
}

std::function<bool()> verify_job(std::string hash, std::string password) {
  return [hash = std::move(hash), password = std::move(password)] { return verify_password(hash, password); };
}

std::string fmt_time(double t) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6f", t);
  return buf;
}

std::vector<std::vector<std::string>> new_session_cmds(const gateway_context& ctx, const std::string& key,
                                                       const std::string& user, const std::string& csrf,
                                                       double now, const std::string& old_cookie_token,
                                                       const std::string& session_id) {
  std::vector<std::vector<std::string>> cmds;
  if (!old_cookie_token.empty())
    cmds.push_back(redis_cmd("DEL", keys_of(ctx).session(sha256_hex(old_cookie_token))));
  cmds.push_back(
      redis_cmd("HSET", key, "user", user, "csrf", csrf, "created", fmt_time(now), "session_id", session_id));
  cmds.push_back(redis_cmd("EXPIRE", key, std::to_string(ctx.config.session_ttl.count())));
  return cmds;
}

std::vector<std::vector<std::string>> new_token_cmds(const gateway_context& ctx, const std::string& owner,
                                                     const std::string& hash, const std::string& label,
                                                     double now, const std::string& session_id) {
  token_spec t;
  t.owner = owner;
  t.scope = "user";
  t.created = fmt_time(now);
  t.label = label;
  t.session_id = session_id;
  return token_write_commands(keys_of(ctx), hash, t);
}

std::vector<std::vector<std::string>> revoke_token_cmds(const gateway_context& ctx, const std::string& owner,
                                                        const std::string& hash) {
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(redis_cmd("DEL", keys_of(ctx).token(hash)));
  cmds.push_back(redis_cmd("SREM", keys_of(ctx).user_tokens(owner), hash));
  return cmds;
}

}  // namespace

std::string random_hex() { return new_token().substr(3); }

std::optional<api_error> check_registration(const std::string& name, const std::string& email,
                                            const std::string& password) {
  if (!valid_user_name(name))
    return bad_request("user name must be 1-64 of a-z 0-9 _ . - starting with a lower-case letter or digit");
  if (!valid_email(email)) return bad_request("e-mail address is not valid");
  if (password.size() < min_password_bytes)
    return bad_request("password must be at least " + std::to_string(min_password_bytes) + " characters");
  if (password.size() > max_password_bytes)
    return bad_request("password is longer than " + std::to_string(max_password_bytes) + " bytes");
  return std::nullopt;
}

std::optional<api_error> check_label(const std::string& label) {
  if (label.size() > max_label_bytes)
    return bad_request("label is longer than " + std::to_string(max_label_bytes) + " bytes");
  for (unsigned char c : label)
    if (c < 0x20 || c == 0x7f) return bad_request("label contains control characters");
  return std::nullopt;
}

net::awaitable<std::optional<principal>> session_user(gateway_context& ctx, std::string cookie) {
  if (web::cookie_value(cookie, web::session_cookie).empty()) co_return std::nullopt;
  auto auth = co_await detail::authenticate(ctx, std::string(), std::move(cookie));
  co_return auth.who;
}

net::awaitable<result<session>> login(gateway_context& ctx, std::string name, std::string password,
                                      std::string old_cookie_token, std::string peer) {
  session out;
  if (!valid_user_name(name) || password.empty() || password.size() > max_password_bytes)
    co_return unauthorized("wrong user name or password");
  // Throttled accounts and addresses, and a full hashing queue, are refused before any hashing.
  auto refused = co_await login_refusal(ctx, name, peer);
  if (refused) co_return *refused;
  hash_ticket ticket(ctx.guard ? &ctx.guard->hashing : nullptr, peer);
  if (!ticket.admitted()) {
    log::warn("login refused user={} address={} reason=hashing queue full", name, peer);
    co_return hashing_busy();
  }
  auto reply = co_await ctx.redis->async_exec(redis_cmd("HGETALL", keys_of(ctx).user(name)));
  auto user = record_from_reply(reply);
  std::string hash = field_or_empty(user, "password_hash");
  bool ok = false;
  if (hash.empty()) {
    // No such user (or no password): spend the same time as a real check.
    co_await detail::async_offload<std::string>(ctx.blocking, hash_job(password, cost_of(ctx)),
                                                net::use_awaitable);
  } else {
    ok = co_await detail::async_offload<bool>(ctx.blocking, verify_job(hash, password), net::use_awaitable);
  }
  if (!ok) {
    log::info("login refused user={} address={} reason=credentials", name, peer);
    co_await login_failed(ctx, name, peer);
    co_return unauthorized("wrong user name or password");
  }
  co_await login_succeeded(ctx, name);
  std::string account = field_or_empty(user, "status");
  if (account != "active") {
    std::string why = account == "pending"
                          ? "account " + name + " is pending: an administrator has not approved it yet"
                      : account == "rejected" ? "the registration of " + name + " was rejected"
                      : account == "disabled" ? "account " + name + " is disabled"
                                              : "account " + name + " is not active";
    log::info("login refused user={} reason={}", name, account);
    co_return forbidden(why);
  }
  std::string role = field_or_empty(user, "role");
  if (role.empty()) role = "user";
  out = co_await open_session(ctx, name, role, old_cookie_token);
  log::info("login user={} role={}", name, out.role);
  co_return out;
}

net::awaitable<session> open_session(gateway_context& ctx, std::string name, std::string role,
                                     std::string old_cookie_token) {
  session out;
  out.token = new_token();
  out.csrf = random_hex();
  out.role = std::move(role);
  std::string key = keys_of(ctx).session(sha256_hex(out.token));
  // Each login is a session of DESCprod's kind: its jobs carry its number.
  auto sid = co_await ctx.redis->async_exec(redis_cmd("INCR", keys_of(ctx).next_session_id()));
  co_await ctx.redis->async_pipeline(
      new_session_cmds(ctx, key, name, out.csrf, now_s(ctx), old_cookie_token, std::to_string(sid.integer)));
  co_return out;
}

// Registers a pending account. A name that exists already gets the same answer, after the same
// hashing time, and changes nothing: registration does not tell who has an account. A request
// refused before the hashing (malformed, the hashing queue full) does not count against the
// address's registrations; the count is taken, in Redis, as one step with its check.
net::awaitable<status> register_user(gateway_context& ctx, std::string name, std::string email,
                                     std::string password, std::string peer) {
  if (auto e = check_registration(name, email, password)) co_return *e;
  hash_ticket ticket(ctx.guard ? &ctx.guard->hashing : nullptr, peer);
  if (!ticket.admitted()) co_return hashing_busy();
  auto refused = co_await register_take(ctx, peer);
  if (refused) co_return *refused;
  std::string hash = co_await detail::async_offload<std::string>(
      ctx.blocking, hash_job(password, cost_of(ctx)), net::use_awaitable);
  auto reply = co_await ctx.redis->async_exec(register_user_cmd(ctx.prefix, name, email, hash, now_s(ctx)));
  if (reply.is_error()) co_return internal_error("registration failed: " + reply.str);
  if (reply.as_integer() == 0) {
    log::info("registration of an existing name ignored name={} address={}", name, peer);
    co_return done();
  }
  log::info("user registered name={} status=pending address={}", name, peer);
  co_return done();
}

net::awaitable<status> logout(gateway_context& ctx, std::string cookie, std::string csrf) {
  std::string token = web::cookie_value(cookie, web::session_cookie);
  if (token.empty()) co_return done();
  std::string key = keys_of(ctx).session(sha256_hex(token));
  auto reply = co_await ctx.redis->async_exec(redis_cmd("HMGET", key, "user", "csrf"));
  if (reply.elements.size() != 2 || reply.elements[0].is_nil()) co_return done();
  if (!web::tokens_equal(csrf, reply.elements[1].as_string()))
    co_return forbidden("the CSRF token does not match the session");
  co_await ctx.redis->async_exec(redis_cmd("DEL", key));
  // The session's live event streams end now, not at their next failed request.
  std::size_t ended =
      ctx.hub ? ctx.hub->close_streams(stream_owner::session, sha256_hex(token), "the session was logged out")
              : 0;
  log::info("logout user={} streams_ended={}", reply.elements[0].as_string(), ended);
  co_return done();
}

net::awaitable<std::vector<job_record>> tokens(gateway_context& ctx, std::string owner) {
  std::string set = keys_of(ctx).user_tokens(owner);
  auto members = reply_strings(co_await ctx.redis->async_exec(redis_cmd("SMEMBERS", set)));
  std::vector<std::string> keys;
  for (const auto& m : members) keys.push_back(keys_of(ctx).token(m));
  auto replies = co_await ctx.redis->async_pipeline(hgetall_each(keys));
  std::vector<job_record> out;
  for (std::size_t i = 0; i < members.size() && i < replies.size(); ++i) {
    auto rec = record_from_reply(replies[i]);
    if (rec.empty() || field_or_empty(rec, "owner") != owner) {
      // Expired or deleted meanwhile: forget it.
      co_await ctx.redis->async_exec(redis_cmd("SREM", set, members[i]));
      continue;
    }
    rec["id"] = members[i];
    out.push_back(std::move(rec));
  }
  std::sort(out.begin(), out.end(), [](const job_record& a, const job_record& b) {
    return field_or_empty(a, "created") > field_or_empty(b, "created");
  });
  co_return out;
}

net::awaitable<result<std::string>> create_token(gateway_context& ctx, std::string owner, std::string label) {
  if (auto e = check_label(label)) co_return *e;
  std::string token = new_token();
  std::string hash = sha256_hex(token);
  auto sid = co_await ctx.redis->async_exec(redis_cmd("INCR", keys_of(ctx).next_session_id()));
  co_await ctx.redis->async_pipeline(
      new_token_cmds(ctx, owner, hash, label, now_s(ctx), std::to_string(sid.integer)));
  log::info("api token created owner={} id={}", owner, hash.substr(0, 12));
  co_return token;
}

net::awaitable<status> revoke_token(gateway_context& ctx, std::string owner, std::string hash) {
  auto member = co_await ctx.redis->async_exec(redis_cmd("SISMEMBER", keys_of(ctx).user_tokens(owner), hash));
  if (member.as_integer() != 1) co_return not_found("no such token");
  co_await ctx.redis->async_pipeline(revoke_token_cmds(ctx, owner, hash));
  std::size_t ended =
      ctx.hub ? ctx.hub->close_streams(stream_owner::token, hash, "the API token was revoked") : 0;
  log::info("api token revoked owner={} id={} streams_ended={}", owner, hash.substr(0, 12), ended);
  co_return done();
}

net::awaitable<preferences> preferences_of(gateway_context& ctx, std::string user) {
  auto reply = co_await ctx.redis->async_exec(
      redis_cmd("HMGET", keys_of(ctx).user(user), "email", std::string(user_notify_failed_field)));
  preferences p;
  if (reply.elements.size() == 2) {
    p.email = reply.elements[0].as_string();
    p.email_on_failure = reply.elements[1].as_string() == "1";
  }
  co_return p;
}

net::awaitable<result<preferences>> set_email_on_failure(gateway_context& ctx, std::string user, bool on) {
  // Only an existing account gets the field (an HSET alone would create a hash for a name).
  std::string flag = "0";
  if (on) flag = "1";
  auto reply = co_await ctx.redis->async_exec(
      redis_cmd("EVAL",
                "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end "
                "if ARGV[2] == '1' then redis.call('HSET', KEYS[1], ARGV[1], '1') "
                "else redis.call('HDEL', KEYS[1], ARGV[1]) end return 1",
                "1", keys_of(ctx).user(user), std::string(user_notify_failed_field), flag));
  if (reply.is_error()) co_return internal_error("preferences: " + reply.str);
  if (reply.as_integer() != 1) co_return not_found("no such account");
  log::info("preferences changed user={} email_on_failure={}", user, on ? 1 : 0);
  co_return co_await preferences_of(ctx, user);
}

}  // namespace descprod::gateway::accounts_service
