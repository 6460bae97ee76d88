// Accounts, web sessions, API tokens, the admin routes and the web pages (issue 4; docs/api.md, docs/web.md, docs/security.md).
//
// Sessions: a login makes a fresh 256-bit token (new_token), sends it as the HttpOnly,
// SameSite=Strict cookie descprod_session (Secure under TLS) and stores only its sha256 as
// P session:<sha256> (hash: user, csrf, created; flash messages) with a TTL that every request
// pushes out (sliding, gateway.session_ttl_s). Logout deletes the key; logging in again replaces
// the browser's previous session.
//
// CSRF: each session has a random CSRF token. Page forms carry it as the hidden field `csrf`, the
// page's script sends it as X-CSRF-Token; a state-changing request authenticated by the cookie
// without it is refused (403). The login and register forms, which have no session yet, use a
// double-submit cookie (descprod_csrf). Independently, a POST whose Origin header names another
// host is refused before anything else.
//
// Passwords: Argon2id via libsodium, cost from the gateway config, computed on ctx.blocking (a
// small thread pool) so the io_context thread never stalls. An unknown user name costs the same
// hashing time as a wrong password.
//
// GCC 12 coroutine rules (docs/building.md#conventions): commands and bodies are built by the plain functions at the
// top; coroutine parameters are values.
#include <boost/asio/post.hpp>
#include <algorithm>
#include <functional>

#include "core/accounts.hpp"
#include "core/crypto.hpp"
#include "core/log.hpp"
#include "gateway/guard.hpp"
#include "gateway/router.hpp"
#include "gateway/handler_detail.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace descprod::gateway::detail {

namespace {

namespace json = boost::json;

// Jobs per page of the home table; children shown on a job page; events and log lines shown.
constexpr int home_per_page = 50;
constexpr int page_children = 100;
constexpr int page_events = 200;
constexpr int page_log_lines = 200;
// Global-stream entries looked at for the admin page's one-minute throughput.
constexpr int throughput_scan = 20000;
// SCAN rounds for worker hashes (each COUNT 1000).
constexpr int worker_scan_rounds = 100;
// Live pilots shown (the set <prefix>pilots holds at most pilots.max of them in practice).
constexpr std::size_t max_pilots_shown = 1000;
constexpr std::size_t max_label_bytes = 64;

// ---- running blocking work off the io_context ----------------------------------------------

// Runs fn on `pool` (inline when null) and completes on the caller's executor; an exception
// thrown by fn is rethrown to the awaiting coroutine.
template <class T, class Token>
auto async_offload(net::thread_pool* pool, std::function<T()> fn, Token&& token) {
  return net::async_initiate<Token, void(std::exception_ptr, T)>(
      [pool](auto handler, std::function<T()> f) {
        auto ex = net::get_associated_executor(handler);
        auto guard = net::make_work_guard(ex);
        auto work = [f = std::move(f), handler = std::move(handler), ex,
                     guard = std::move(guard)]() mutable {
          std::exception_ptr ep;
          T value{};
          try {
            value = f();
          } catch (...) {
            ep = std::current_exception();
          }
          net::post(ex, [handler = std::move(handler), ep, value = std::move(value)]() mutable {
            std::move(handler)(ep, std::move(value));
          });
          guard.reset();
        };
        if (pool)
          net::post(*pool, std::move(work));
        else
          work();
      },
      token, std::move(fn));
}

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
  return [hash = std::move(hash), password = std::move(password)] {
    return verify_password(hash, password);
  };
}

// ---- small helpers --------------------------------------------------------------------------

std::string field(const job_record& r, const char* k) {
  auto it = r.find(k);
  return it == r.end() ? std::string() : it->second;
}

std::string random_hex() { return new_token().substr(3); }

std::string fmt_time(double t) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6f", t);
  return buf;
}

// A urlencoded form body. `curl -d '{...}'` labels JSON as a form; a real form never starts with
// '{' (the form encoding escapes it), so such a body is read as JSON.
bool is_form(const request& req) {
  std::string_view ct = req[http::field::content_type];
  std::string_view body = req.body();
  while (!body.empty() && (body.front() == ' ' || body.front() == '\n' || body.front() == '\r' ||
                           body.front() == '\t'))
    body.remove_prefix(1);
  return ct.substr(0, 33) == "application/x-www-form-urlencoded" &&
         (body.empty() || body.front() != '{');
}

std::string error_detail(const response& res) {
  try {
    auto v = json::parse(res.body());
    if (v.is_object()) {
      if (auto* d = v.as_object().if_contains("detail"); d && d->is_string())
        return std::string(d->as_string());
    }
  } catch (...) {
  }
  return "request failed (HTTP " + std::to_string(res.result_int()) + ")";
}

web::page_user page_user_of(const principal& who) {
  web::page_user u;
  u.name = who.name;
  u.admin = who.admin;
  u.csrf = who.csrf;
  return u;
}

handler_result result_of(response res) {
  handler_result out;
  out.res = std::move(res);
  return out;
}

// ---- responses ------------------------------------------------------------------------------

void page_headers(response& res) {
  res.set(http::field::server, "descprod-gateway/" DESCPROD_VERSION);
  res.set(http::field::cache_control, "no-store");
  res.set("Content-Security-Policy", web::content_security_policy);
  res.set("X-Content-Type-Options", "nosniff");
  res.set("Referrer-Policy", "same-origin");
  res.set("X-Frame-Options", "DENY");
}

response html_response(http::status status, std::string body) {
  response res(status, 11);
  page_headers(res);
  res.set(http::field::content_type, "text/html; charset=utf-8");
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

response redirect_response(const std::string& location) {
  response res(http::status::see_other, 11);
  page_headers(res);
  res.set(http::field::location, location);
  res.prepare_payload();
  return res;
}

response error_page_response(unsigned status, const std::string& detail,
                             const std::optional<principal>& who) {
  web::page_user u;
  if (who) u = page_user_of(*who);
  return html_response(static_cast<http::status>(status),
                       web::error_page(status, detail, who ? &u : nullptr));
}

response asset_response(const std::string& name) {
  auto a = web::find_asset(name);
  response res(http::status::ok, 11);
  res.set(http::field::server, "descprod-gateway/" DESCPROD_VERSION);
  res.set(http::field::content_type, a->content_type);
  res.set(http::field::cache_control, "no-cache");
  res.set("X-Content-Type-Options", "nosniff");
  res.body() = std::string(a->body);
  res.prepare_payload();
  return res;
}

std::string session_cookie_header(const gateway_context& ctx, const std::string& token) {
  return web::set_cookie(web::session_cookie, token, ctx.tls);
}
std::string clear_session_cookie(const gateway_context& ctx) {
  return web::set_cookie(web::session_cookie, "", ctx.tls, 0);
}

// ---- Redis commands -------------------------------------------------------------------------

std::vector<std::vector<std::string>> new_session_cmds(const gateway_context& ctx,
                                                       const std::string& key,
                                                       const std::string& user,
                                                       const std::string& csrf, double now,
                                                       const std::string& old_cookie_token) {
  std::vector<std::vector<std::string>> cmds;
  if (!old_cookie_token.empty())
    cmds.push_back(redis_cmd("DEL", ctx.prefix + "session:" + sha256_hex(old_cookie_token)));
  cmds.push_back(redis_cmd("HSET", key, "user", user, "csrf", csrf, "created", fmt_time(now)));
  cmds.push_back(redis_cmd("EXPIRE", key, std::to_string(ctx.config.session_ttl.count())));
  return cmds;
}

std::vector<std::vector<std::string>> take_flash_cmds(const std::string& key) {
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(redis_cmd("HMGET", key, "flash", "flash_error"));
  cmds.push_back(redis_cmd("HDEL", key, "flash", "flash_error"));
  return cmds;
}

// Sets the flash only while the session exists (never recreates an expired one without a TTL).
std::vector<std::string> set_flash_cmd(const std::string& key, const std::string& text,
                                       bool error) {
  return redis_cmd("EVAL",
                   "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], "
                   "'flash', ARGV[1], 'flash_error', ARGV[2]) end return 0",
                   "1", key, text, error ? "1" : "0");
}

std::vector<std::vector<std::string>> hgetall_keys(const std::vector<std::string>& keys) {
  std::vector<std::vector<std::string>> cmds;
  cmds.reserve(keys.size());
  for (const auto& k : keys) cmds.push_back(redis_cmd("HGETALL", k));
  return cmds;
}

std::vector<std::vector<std::string>> job_page_cmds(const gateway_context& ctx, job_id id) {
  std::string key = ctx.jobs->job_key(id);
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(redis_cmd("HGETALL", key));
  cmds.push_back(redis_cmd("SCARD", key + ":children"));
  cmds.push_back(redis_cmd("XREVRANGE", key + ":events", "+", "-", "COUNT",
                           std::to_string(page_events)));
  cmds.push_back(redis_cmd("XREVRANGE", key + ":log", "+", "-", "COUNT",
                           std::to_string(page_log_lines)));
  return cmds;
}

std::vector<std::vector<std::string>> new_token_cmds(const gateway_context& ctx,
                                                     const std::string& owner,
                                                     const std::string& hash,
                                                     const std::string& label, double now) {
  token_spec t;
  t.owner = owner;
  t.scope = "user";
  t.created = fmt_time(now);
  t.label = label;
  return token_write_commands(descprod::keys(ctx.prefix), hash, t);
}

std::vector<std::vector<std::string>> revoke_token_cmds(const gateway_context& ctx,
                                                        const std::string& owner,
                                                        const std::string& hash) {
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(redis_cmd("DEL", ctx.prefix + "token:" + hash));
  cmds.push_back(redis_cmd("SREM", ctx.prefix + "user:" + owner + ":tokens", hash));
  return cmds;
}

std::vector<std::string> reply_list(const redis_reply& r) {
  std::vector<std::string> out;
  for (const auto& e : r.elements) out.push_back(e.as_string());
  return out;
}

// ---- input ----------------------------------------------------------------------------------

// The fields of a register/login request: a JSON object of strings, or a form whose `csrf`
// matches the descprod_csrf cookie.
struct account_input {
  std::map<std::string, std::string> fields;
  std::optional<api_error> error;
  bool form = false;
};

account_input read_account_input(const request& req, const std::vector<std::string>& allowed) {
  account_input in;
  if (is_form(req)) {
    in.form = true;
    auto form = web::parse_form(req.body());
    if (!form) {
      in.error = bad_request("malformed form body");
      return in;
    }
    std::string cookie_csrf =
        web::cookie_value(req[http::field::cookie], web::login_csrf_cookie);
    auto it = form->find("csrf");
    if (it == form->end() || !web::tokens_equal(it->second, cookie_csrf)) {
      in.error = forbidden("the form has expired (missing or wrong CSRF token); reload the page");
      return in;
    }
    for (const auto& k : allowed) {
      auto f = form->find(k);
      if (f != form->end()) in.fields[k] = f->second;
    }
    return in;
  }
  json::value v;
  if (auto e = parse_json_body(req.body(), v)) {
    in.error = *e;
    return in;
  }
  if (!v.is_object()) {
    in.error = bad_request("the body must be a JSON object");
    return in;
  }
  for (const auto& kv : v.as_object()) {
    std::string key(kv.key());
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      in.error = bad_request("unknown field '" + key.substr(0, 40) + "'; allowed: " + list);
      return in;
    }
    if (!kv.value().is_string()) {
      in.error = bad_request("field '" + key + "' must be a string");
      return in;
    }
    in.fields[key] = std::string(kv.value().as_string());
  }
  return in;
}

std::optional<api_error> check_registration(const std::string& name, const std::string& email,
                                            const std::string& password) {
  if (!valid_user_name(name))
    return bad_request(
        "user name must be 1-64 of a-z 0-9 _ . - starting with a lower-case letter or digit");
  if (!valid_email(email)) return bad_request("e-mail address is not valid");
  if (password.size() < min_password_bytes)
    return bad_request("password must be at least " + std::to_string(min_password_bytes) +
                       " characters");
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

// A job object for validate_job from the create form's fields.
std::optional<api_error> job_object_from_form(const std::map<std::string, std::string>& form,
                                              json::value& out) {
  json::object o;
  auto get = [&](const char* k) {
    auto it = form.find(k);
    return it == form.end() ? std::string() : it->second;
  };
  o["jobtype"] = get("jobtype");
  o["config"] = get("config");
  if (!get("howfig").empty()) o["howfig"] = get("howfig");
  std::string prio = get("priority");
  if (!prio.empty()) {
    try {
      std::size_t used = 0;
      long long p = std::stoll(prio, &used);
      if (used != prio.size()) throw std::invalid_argument("trailing");
      o["priority"] = p;
    } catch (...) {
      return bad_request("priority must be an integer between -1000 and 1000");
    }
  }
  out = std::move(o);
  return std::nullopt;
}

web::job_form form_of(const std::map<std::string, std::string>& form) {
  web::job_form f;
  auto get = [&](const char* k) {
    auto it = form.find(k);
    return it == form.end() ? std::string() : it->second;
  };
  f.jobtype = get("jobtype");
  f.config = get("config");
  f.howfig = get("howfig");
  try {
    f.priority = std::stoi(get("priority"));
  } catch (...) {
    f.priority = 0;
  }
  return f;
}

web::job_form form_of_job(const job_record& r) {
  web::job_form f;
  f.jobtype = field(r, "jobtype");
  f.config = field(r, "config");
  f.howfig = field(r, "howfig");
  try {
    f.priority = std::stoi(field(r, "priority"));
  } catch (...) {
    f.priority = 0;
  }
  return f;
}

struct home_query {
  bool all = false;
  std::string state;
  int page = 1;
  job_id copy = 0;
};

// The home page's query, leniently: anything unreadable falls back to the default.
home_query parse_home_query(std::string_view query) {
  home_query h;
  auto form = web::parse_form(query);
  if (!form) return h;
  auto get = [&](const char* k) {
    auto it = form->find(k);
    return it == form->end() ? std::string() : it->second;
  };
  h.all = get("view") == "all";
  if (parse_job_state(get("state"))) h.state = get("state");
  try {
    int p = std::stoi(get("page"));
    if (p >= 1 && p <= 1000000) h.page = p;
  } catch (...) {
  }
  try {
    long long c = std::stoll(get("copy"));
    if (c > 0) h.copy = c;
  } catch (...) {
  }
  return h;
}

std::string query_value(std::string_view query, const char* key) {
  auto form = web::parse_form(query);
  if (!form) return {};
  auto it = form->find(key);
  return it == form->end() ? std::string() : it->second;
}

std::vector<job_record> records_of(const std::vector<redis_reply>& replies) {
  std::vector<job_record> out;
  for (const auto& r : replies) {
    auto rec = record_from_reply(r);
    if (!rec.empty()) out.push_back(std::move(rec));
  }
  return out;
}

json::object user_json(const job_record& u) {
  json::object o;
  for (const char* k : {"name", "role", "status", "email", "created", "approved"}) {
    auto v = field(u, k);
    if (v.empty()) continue;
    if (std::string_view(k) == "created" || std::string_view(k) == "approved") {
      try {
        o[k] = std::stod(v);
        continue;
      } catch (...) {
      }
    }
    o[k] = v;
  }
  return o;
}

json::object worker_json(const job_record& w) {
  json::object o;
  for (const auto& [k, v] : w) {
    if (k == "slots" || k == "running") {
      try {
        o[k] = std::stoll(v);
        continue;
      } catch (...) {
      }
    } else if (k == "last_heartbeat") {
      try {
        o[k] = std::stod(v);
        continue;
      } catch (...) {
      }
    }
    o[k] = v;
  }
  return o;
}

// A pilot hash (daemon/pilots.cpp) as JSON: counts as integers, times as numbers, `workers` as a
// list of worker ids.
json::object pilot_json(const job_record& p) {
  json::object o;
  for (const auto& [k, v] : p) {
    if (k == "nodes" || k == "walltime_minutes" || k == "slots" || k == "connected") {
      try {
        o[k] = std::stoll(v);
        continue;
      } catch (...) {
      }
    } else if (k == "submitted_time" || k == "started_time" || k == "ended_time") {
      if (v.empty() || v == "0") continue;
      try {
        o[k] = std::stod(v);
        continue;
      } catch (...) {
      }
    } else if (k == "workers") {
      json::array list;
      std::string_view rest = v;
      while (!rest.empty()) {
        auto comma = rest.find(',');
        auto w = rest.substr(0, comma);
        if (!w.empty()) list.emplace_back(w);
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
      }
      o[k] = std::move(list);
      continue;
    }
    o[k] = v;
  }
  return o;
}

// Pilots by Slurm job ID (numerically; running before submitted is not wanted: the table is by
// age).
void sort_pilots(std::vector<job_record>& pilots) {
  std::sort(pilots.begin(), pilots.end(), [](const job_record& a, const job_record& b) {
    auto ia = field(a, "id"), ib = field(b, "id");
    if (ia.size() != ib.size()) return ia.size() < ib.size();
    return ia < ib;
  });
}

std::vector<std::vector<std::string>> pilot_keys(const std::string& prefix, const redis_reply& ids) {
  std::vector<std::vector<std::string>> cmds;
  for (const auto& e : ids.elements) {
    if (cmds.size() >= max_pilots_shown) break;
    cmds.push_back(redis_cmd("HGETALL", prefix + "pilot:" + e.as_string()));
  }
  return cmds;
}

// Pending users first, then by name.
void sort_users(std::vector<job_record>& users) {
  std::sort(users.begin(), users.end(), [](const job_record& a, const job_record& b) {
    bool pa = field(a, "status") == "pending", pb = field(b, "status") == "pending";
    if (pa != pb) return pa;
    return field(a, "name") < field(b, "name");
  });
}

// ---- shared coroutines ----------------------------------------------------------------------

// The global event stream's newest id ("0-0" when empty): a page reads it before its data, and
// its script subscribes from there (GET /api/events?since=...).
net::awaitable<std::string> stream_position(gateway_context& ctx) {
  auto last = co_await ctx.redis->async_exec(
      redis_cmd("XREVRANGE", ctx.prefix + "events", "+", "-", "COUNT", "1"));
  if (last.type == redis_reply::kind::array && !last.elements.empty() &&
      !last.elements[0].elements.empty())
    co_return last.elements[0].elements[0].as_string();
  co_return std::string("0-0");
}

net::awaitable<std::optional<principal>> page_session(gateway_context& ctx, std::string cookie) {
  if (web::cookie_value(cookie, web::session_cookie).empty()) co_return std::nullopt;
  auto auth = co_await authenticate(ctx, std::string(), std::move(cookie));
  co_return auth.who;
}

net::awaitable<web::flash> take_flash(gateway_context& ctx, principal who) {
  web::flash f;
  auto replies = co_await ctx.redis->async_pipeline(
      take_flash_cmds(ctx.prefix + "session:" + who.session_hash));
  if (!replies.empty() && replies[0].elements.size() == 2 && !replies[0].elements[0].is_nil()) {
    f.text = replies[0].elements[0].as_string();
    f.error = replies[0].elements[1].as_string() == "1";
  }
  co_return f;
}

net::awaitable<void> set_flash(gateway_context& ctx, principal who, std::string text, bool error) {
  co_await ctx.redis->async_exec(
      set_flash_cmd(ctx.prefix + "session:" + who.session_hash, text, error));
}

struct login_result {
  std::optional<api_error> error;
  std::string token, csrf, role;
};

net::awaitable<login_result> do_login(gateway_context& ctx, std::string name, std::string password,
                                      std::string old_cookie_token, std::string peer) {
  login_result out;
  if (!valid_user_name(name) || password.empty() || password.size() > max_password_bytes) {
    out.error = unauthorized("wrong user name or password");
    co_return out;
  }
  // Throttled accounts and addresses, and a full hashing queue, are refused before any hashing.
  if (auto e = login_refusal(ctx, name, peer)) {
    out.error = *e;
    co_return out;
  }
  hash_ticket ticket(ctx.guard ? &ctx.guard->hashing : nullptr, peer);
  if (!ticket.admitted()) {
    log::warn("login refused user={} address={} reason=hashing queue full", name, peer);
    out.error = hashing_busy();
    co_return out;
  }
  auto reply = co_await ctx.redis->async_exec(redis_cmd("HGETALL", ctx.prefix + "user:" + name));
  auto user = record_from_reply(reply);
  std::string hash = field(user, "password_hash");
  bool ok = false;
  if (hash.empty()) {
    // No such user (or no password): spend the same time as a real check.
    co_await async_offload<std::string>(ctx.blocking, hash_job(password, cost_of(ctx)),
                                        net::use_awaitable);
  } else {
    ok = co_await async_offload<bool>(ctx.blocking, verify_job(hash, password),
                                      net::use_awaitable);
  }
  if (!ok) {
    log::info("login refused user={} address={} reason=credentials", name, peer);
    login_failed(ctx, name, peer);
    out.error = unauthorized("wrong user name or password");
    co_return out;
  }
  login_succeeded(ctx, name);
  std::string status = field(user, "status");
  if (status != "active") {
    std::string why = status == "pending"    ? "account " + name +
                                                 " is pending: an administrator has not approved it yet"
                      : status == "rejected" ? "the registration of " + name + " was rejected"
                      : status == "disabled" ? "account " + name + " is disabled"
                                             : "account " + name + " is not active";
    log::info("login refused user={} reason={}", name, status);
    out.error = forbidden(why);
    co_return out;
  }
  out.token = new_token();
  out.csrf = random_hex();
  out.role = field(user, "role").empty() ? "user" : field(user, "role");
  std::string key = ctx.prefix + "session:" + sha256_hex(out.token);
  co_await ctx.redis->async_pipeline(
      new_session_cmds(ctx, key, name, out.csrf, now_s(ctx), old_cookie_token));
  log::info("login user={} role={}", name, out.role);
  co_return out;
}

// Registers a pending account. A name that exists already gets the same answer, after the same
// hashing time, and changes nothing: registration does not tell who has an account.
net::awaitable<std::optional<api_error>> do_register(gateway_context& ctx, std::string name,
                                                     std::string email, std::string password,
                                                     std::string peer) {
  if (auto e = register_refusal(ctx, peer)) co_return e;
  if (auto e = check_registration(name, email, password)) co_return e;
  hash_ticket ticket(ctx.guard ? &ctx.guard->hashing : nullptr, peer);
  if (!ticket.admitted()) co_return hashing_busy();
  register_attempted(ctx, peer);
  std::string hash = co_await async_offload<std::string>(
      ctx.blocking, hash_job(password, cost_of(ctx)), net::use_awaitable);
  auto reply =
      co_await ctx.redis->async_exec(register_user_cmd(ctx.prefix, name, email, hash, now_s(ctx)));
  if (reply.is_error()) co_return internal_error("registration failed: " + reply.str);
  if (reply.as_integer() == 0) {
    log::info("registration of an existing name ignored name={} address={}", name, peer);
    co_return std::nullopt;
  }
  log::info("user registered name={} status=pending address={}", name, peer);
  co_return std::nullopt;
}

// Ends the session of the cookie, if any. Returns false when the session exists but the CSRF
// token given does not match it.
net::awaitable<bool> do_logout(gateway_context& ctx, std::string cookie, std::string csrf) {
  std::string token = web::cookie_value(cookie, web::session_cookie);
  if (token.empty()) co_return true;
  std::string key = ctx.prefix + "session:" + sha256_hex(token);
  auto reply = co_await ctx.redis->async_exec(redis_cmd("HMGET", key, "user", "csrf"));
  if (reply.elements.size() != 2 || reply.elements[0].is_nil()) co_return true;
  if (!web::tokens_equal(csrf, reply.elements[1].as_string())) co_return false;
  co_await ctx.redis->async_exec(redis_cmd("DEL", key));
  // The session's live event streams end now, not at their next failed request.
  std::size_t ended = ctx.hub ? ctx.hub->close_streams(stream_owner::session, sha256_hex(token),
                                                       "the session was logged out")
                              : 0;
  log::info("logout user={} streams_ended={}", reply.elements[0].as_string(), ended);
  co_return true;
}

net::awaitable<std::vector<job_record>> list_tokens(gateway_context& ctx, std::string owner) {
  std::string set = ctx.prefix + "user:" + owner + ":tokens";
  auto members = reply_list(co_await ctx.redis->async_exec(redis_cmd("SMEMBERS", set)));
  std::vector<std::string> keys;
  for (const auto& m : members) keys.push_back(ctx.prefix + "token:" + m);
  auto replies = co_await ctx.redis->async_pipeline(hgetall_keys(keys));
  std::vector<job_record> out;
  for (std::size_t i = 0; i < members.size() && i < replies.size(); ++i) {
    auto rec = record_from_reply(replies[i]);
    if (rec.empty() || field(rec, "owner") != owner) {
      // Expired or deleted meanwhile: forget it.
      co_await ctx.redis->async_exec(redis_cmd("SREM", set, members[i]));
      continue;
    }
    rec["id"] = members[i];
    out.push_back(std::move(rec));
  }
  std::sort(out.begin(), out.end(), [](const job_record& a, const job_record& b) {
    return field(a, "created") > field(b, "created");
  });
  co_return out;
}

net::awaitable<std::string> create_token(gateway_context& ctx, std::string owner,
                                         std::string label) {
  std::string token = new_token();
  std::string hash = sha256_hex(token);
  co_await ctx.redis->async_pipeline(new_token_cmds(ctx, owner, hash, label, now_s(ctx)));
  log::info("api token created owner={} id={}", owner, hash.substr(0, 12));
  co_return token;
}

net::awaitable<bool> revoke_token(gateway_context& ctx, std::string owner, std::string hash) {
  auto member = co_await ctx.redis->async_exec(
      redis_cmd("SISMEMBER", ctx.prefix + "user:" + owner + ":tokens", hash));
  if (member.as_integer() != 1) co_return false;
  co_await ctx.redis->async_pipeline(revoke_token_cmds(ctx, owner, hash));
  std::size_t ended =
      ctx.hub ? ctx.hub->close_streams(stream_owner::token, hash, "the API token was revoked") : 0;
  log::info("api token revoked owner={} id={} streams_ended={}", owner, hash.substr(0, 12), ended);
  co_return true;
}

net::awaitable<std::vector<job_record>> load_users(gateway_context& ctx) {
  auto names = reply_list(co_await ctx.redis->async_exec(redis_cmd("SMEMBERS", ctx.prefix + "users")));
  std::vector<std::string> keys;
  for (const auto& n : names) keys.push_back(ctx.prefix + "user:" + n);
  auto replies = co_await ctx.redis->async_pipeline(hgetall_keys(keys));
  std::vector<job_record> out;
  for (std::size_t i = 0; i < names.size() && i < replies.size(); ++i) {
    auto rec = record_from_reply(replies[i]);
    if (rec.empty()) continue;
    rec.erase("password_hash");
    rec["name"] = names[i];
    out.push_back(std::move(rec));
  }
  sort_users(out);
  co_return out;
}

struct overview {
  std::vector<job_record> workers;
  std::vector<job_record> pilots;  // the live ones (<prefix>pilots), by Slurm job ID
  long long queue_depth = 0;
  long long finished_last_minute = 0;
  long long events_last_minute = 0;
};

net::awaitable<overview> load_overview(gateway_context& ctx) {
  overview o;
  std::string cursor = "0";
  std::vector<std::string> keys;
  for (int round = 0; round < worker_scan_rounds; ++round) {
    auto reply = co_await ctx.redis->async_exec(
        redis_cmd("SCAN", cursor, "MATCH", ctx.prefix + "worker:*", "COUNT", "1000"));
    if (reply.elements.size() != 2) break;
    cursor = reply.elements[0].as_string();
    for (const auto& k : reply.elements[1].elements) keys.push_back(k.as_string());
    if (cursor == "0") break;
  }
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  o.workers = records_of(co_await ctx.redis->async_pipeline(hgetall_keys(keys)));
  auto pilot_ids = co_await ctx.redis->async_exec(redis_cmd("SMEMBERS", ctx.prefix + "pilots"));
  o.pilots = records_of(co_await ctx.redis->async_pipeline(pilot_keys(ctx.prefix, pilot_ids)));
  sort_pilots(o.pilots);
  auto depth = co_await ctx.redis->async_exec(redis_cmd("ZCARD", ctx.prefix + "queue"));
  o.queue_depth = depth.as_integer();
  long long since_ms = static_cast<long long>((now_s(ctx) - 60.0) * 1000.0);
  auto recent = co_await ctx.redis->async_exec(
      redis_cmd("XREVRANGE", ctx.prefix + "events", "+", std::to_string(since_ms), "COUNT",
                std::to_string(throughput_scan)));
  for (const auto& e : parse_stream_events(recent)) {
    ++o.events_last_minute;
    auto st = parse_job_state(e.state);
    if (e.type == "transition" && st && is_terminal(*st)) ++o.finished_last_minute;
  }
  co_return o;
}

// ---- the JSON routes ------------------------------------------------------------------------

json::object session_json(const principal& who, const std::string& csrf) {
  json::object o;
  o["user"] = who.name;
  o["role"] = who.admin ? "admin" : "user";
  if (!csrf.empty()) o["csrf_token"] = csrf;
  o["via"] = who.by_session ? "session" : "token";
  return o;
}

json::object login_json(const std::string& user, const login_result& lr, long long ttl) {
  json::object o;
  o["user"] = user;
  o["role"] = lr.role;
  o["csrf_token"] = lr.csrf;
  o["session_ttl_s"] = ttl;
  return o;
}

json::object registered_json(const std::string& user) {
  json::object o;
  o["username"] = user;
  o["status"] = "pending";
  o["detail"] = "an administrator must approve the account before it can log in";
  return o;
}

json::object tokens_json(const std::vector<job_record>& tokens) {
  json::array list;
  for (const auto& t : tokens) {
    json::object o;
    o["id"] = field(t, "id");
    o["label"] = field(t, "label");
    try {
      o["created"] = std::stod(field(t, "created"));
    } catch (...) {
    }
    try {
      o["expires"] = std::stod(field(t, "expires"));
    } catch (...) {
    }
    list.push_back(std::move(o));
  }
  json::object o;
  o["tokens"] = std::move(list);
  return o;
}

json::object new_token_json(const std::string& token, const std::string& label) {
  json::object o;
  o["token"] = token;
  o["id"] = sha256_hex(token);
  o["label"] = label;
  return o;
}

json::object users_json(const std::vector<job_record>& users) {
  json::array list;
  for (const auto& u : users) list.push_back(user_json(u));
  json::object o;
  o["users"] = std::move(list);
  return o;
}

json::object overview_json(const overview& ov) {
  json::array workers;
  for (const auto& w : ov.workers) workers.push_back(worker_json(w));
  json::object o;
  o["queue_depth"] = ov.queue_depth;
  o["finished_last_minute"] = ov.finished_last_minute;
  o["events_last_minute"] = ov.events_last_minute;
  o["workers"] = std::move(workers);
  json::array pilots;
  for (const auto& p : ov.pilots) pilots.push_back(pilot_json(p));
  o["pilots"] = std::move(pilots);
  return o;
}

json::object account_change_json(const std::string& name, const account_change& c) {
  json::object o;
  o["name"] = name;
  o["status"] = c.status;
  o["role"] = c.role;
  return o;
}

api_error refused_change(const std::string& name, const std::string& action,
                         const account_change& c) {
  if (c.reason == "missing") return not_found("no such user: " + name);
  return conflict("cannot " + action + " " + name + ": the account is " + c.status);
}

net::awaitable<account_change> change_account_async(gateway_context& ctx, std::string name,
                                                    account_action a) {
  auto reply =
      co_await ctx.redis->async_exec(account_action_cmd(ctx.prefix, name, a, now_s(ctx)));
  co_return parse_account_change(reply);
}

// An admin's change of an account (page or API); nullopt when done.
net::awaitable<std::optional<api_error>> admin_change(gateway_context& ctx, principal who,
                                                      std::string name, std::string action) {
  if (!who.admin) co_return forbidden("administrators only");
  auto a = parse_account_action(action);
  if (!a) co_return bad_request("unknown action " + action.substr(0, 20));
  if (name == who.name && (*a == account_action::disable || *a == account_action::remove_admin ||
                           *a == account_action::reject))
    co_return conflict("you cannot " + action + " your own account");
  auto c = co_await change_account_async(ctx, name, *a);
  if (!c.ok) co_return refused_change(name, action, c);
  // An account that may no longer read (disabled, rejected) or no longer reads everything (no
  // longer an admin) loses its live streams at once; a reconnect is checked afresh.
  if (ctx.hub && (*a == account_action::disable || *a == account_action::reject ||
                  *a == account_action::remove_admin))
    ctx.hub->close_streams(stream_owner::user, name, "the account was changed: " + action);
  log::info("account changed by={} user={} action={} status={} role={}", who.name, name, action,
            c.status, c.role);
  co_return std::nullopt;
}

// ---- pages ----------------------------------------------------------------------------------

net::awaitable<response> render_home(gateway_context& ctx, principal who, home_query hq,
                                     std::optional<web::job_form> form, web::flash message,
                                     http::status status) {
  std::string since = co_await stream_position(ctx);
  list_query q;
  q.limit = home_per_page;
  q.offset = static_cast<long long>(hq.page - 1) * home_per_page;
  if (!hq.all) q.archived = false;
  if (!hq.state.empty()) q.state = parse_job_state(hq.state);
  auto found = co_await query_jobs(ctx, who, q);
  web::home_view v;
  v.user = page_user_of(who);
  v.message = std::move(message);
  v.apps = &ctx.apps;
  v.jobs = records_of(found.records);
  v.total = found.total;
  v.all = hq.all;
  v.state = hq.state;
  v.page = hq.page;
  v.per_page = home_per_page;
  v.now_s = now_s(ctx);
  v.since = std::move(since);
  if (form) {
    v.form = std::move(*form);
  } else if (hq.copy > 0) {
    auto rec = co_await ctx.jobs->async_get(hq.copy);
    if (rec && may_read(who, hq.copy, field(*rec, "descname"))) v.form = form_of_job(*rec);
  } else if (!v.jobs.empty()) {
    // As DESCprod did: the form starts from the newest job.
    v.form = form_of_job(v.jobs.front());
  }
  if (v.form.jobtype.empty() && !ctx.apps.apps.empty()) v.form.jobtype = ctx.apps.apps.begin()->first;
  co_return html_response(status, web::home_page(v));
}

net::awaitable<response> render_job(gateway_context& ctx, principal who, job_id id,
                                    web::flash message) {
  std::string since = co_await stream_position(ctx);
  auto replies = co_await ctx.redis->async_pipeline(job_page_cmds(ctx, id));
  auto rec = record_from_reply(replies[0]);
  std::optional<principal> viewer = who;
  if (rec.empty() || !may_read(who, id, field(rec, "descname")))
    co_return error_page_response(404, "Job " + std::to_string(id) + " was not found.", viewer);
  web::job_view v;
  v.user = page_user_of(who);
  v.message = std::move(message);
  v.now_s = now_s(ctx);
  v.since = std::move(since);
  // No stream yet (a job still queued since its submission): its one event, from the hash.
  if (replies[2].elements.empty())
    if (auto e = submit_event_entry(field(rec, "create_time"))) replies[2].elements.push_back(std::move(*e));
  v.events = parse_stream_events(replies[2], id, field(rec, "descname"));
  std::reverse(v.events.begin(), v.events.end());
  auto log = log_json(replies[3]);
  for (const auto& l : log["lines"].as_array())
    if (l.is_string()) v.log_lines.emplace_back(l.as_string());
  long long card = replies[1].as_integer();
  v.children_total = card;
  if (card > 0) {
    list_query q;
    q.parent = id;
    q.limit = page_children;
    auto found = co_await query_jobs(ctx, who, q);
    v.children = records_of(found.records);
    v.children_total = std::max<long long>(found.total, static_cast<long long>(v.children.size()));
    auto roll = co_await children_rollup(ctx, id, card);
    if (roll) {
      for (const auto& kv : *roll)
        if (kv.value().is_int64()) v.rollup[std::string(kv.key())] = kv.value().as_int64();
      if (auto it = v.rollup.find("total"); it != v.rollup.end()) v.children_total = it->second;
    }
  }
  v.job = std::move(rec);
  co_return html_response(http::status::ok, web::job_page(v));
}

net::awaitable<response> render_admin(gateway_context& ctx, principal who, web::flash message) {
  web::admin_view v;
  v.user = page_user_of(who);
  v.message = std::move(message);
  v.users = co_await load_users(ctx);
  auto ov = co_await load_overview(ctx);
  v.workers = std::move(ov.workers);
  v.pilots = std::move(ov.pilots);
  v.queue_depth = ov.queue_depth;
  v.finished_last_minute = ov.finished_last_minute;
  v.events_last_minute = ov.events_last_minute;
  v.now_s = now_s(ctx);
  co_return html_response(http::status::ok, web::admin_page(v));
}

net::awaitable<response> render_tokens(gateway_context& ctx, principal who, web::flash message,
                                       std::string new_token, std::string new_label,
                                       http::status status) {
  web::tokens_view v;
  v.user = page_user_of(who);
  v.message = std::move(message);
  v.tokens = co_await list_tokens(ctx, who.name);
  v.new_token = std::move(new_token);
  v.new_label = std::move(new_label);
  co_return html_response(status, web::tokens_page(v));
}

// The login form (GET, or after a failed POST): a fresh double-submit CSRF cookie when the
// browser has none.
response login_form_response(const gateway_context& ctx, const request& req, bool register_form,
                             const web::flash& f, http::status status,
                             const std::map<std::string, std::string>& fields) {
  std::string csrf = web::cookie_value(req[http::field::cookie], web::login_csrf_cookie);
  bool fresh = csrf.size() != 64 || csrf.find_first_not_of("0123456789abcdef") != std::string::npos;
  if (fresh) csrf = random_hex();
  auto get = [&](const char* k) {
    auto it = fields.find(k);
    return it == fields.end() ? std::string() : it->second;
  };
  auto res = html_response(status, register_form
                                       ? web::register_page(csrf, f, get("username"), get("email"))
                                       : web::login_page(csrf, f, get("username")));
  if (fresh)
    res.insert(http::field::set_cookie, web::set_cookie(web::login_csrf_cookie, csrf, ctx.tls,
                                                        web::login_csrf_max_age_s));
  return res;
}

web::flash no_flash() { return web::flash(); }
home_query default_home() { return home_query(); }

// The first of the required fields that is absent, as a 400.
std::optional<api_error> missing_field(const std::map<std::string, std::string>& fields,
                                       bool registering) {
  static const char* const required[] = {"username", "password", "email"};
  for (std::size_t i = 0; i < (registering ? 3u : 2u); ++i)
    if (!fields.count(required[i]))
      return bad_request(std::string("missing field '") + required[i] + "'");
  return std::nullopt;
}

web::flash flash_of(const api_error& e) {
  web::flash f;
  f.text = e.detail;
  f.error = true;
  return f;
}

web::flash ok_flash(std::string text) {
  web::flash f;
  f.text = std::move(text);
  return f;
}

std::string job_action_message(const std::string& action, job_id id, unsigned status) {
  std::string n = std::to_string(id);
  if (action == "cancel")
    return status == 202 ? "Cancel requested for job " + n + "; it stops shortly."
                         : "Cancelled job " + n + ".";
  if (action == "archive") return "Archived job " + n + ".";
  if (action == "unarchive") return "Unarchived job " + n + ".";
  return "Deleted job " + n + ".";
}

std::string created_message(const response& res) {
  try {
    auto v = json::parse(res.body());
    const auto& o = v.as_object();
    return "Submitted job " + std::to_string(o.at("id").as_int64()) + " (" +
           std::string(o.at("jobtype").as_string()) + " " + std::string(o.at("config").as_string()) +
           ").";
  } catch (...) {
    return "Submitted the job.";
  }
}

// The form's answer to a refusal: the form again with the reason (and Retry-After on a 429).
response refused_form(const gateway_context& ctx, const request& req, bool register_form,
                      const api_error& e, const std::map<std::string, std::string>& fields) {
  auto res = login_form_response(ctx, req, register_form, flash_of(e),
                                 static_cast<http::status>(e.status), fields);
  if (e.retry_after_s > 0) res.set(http::field::retry_after, std::to_string(e.retry_after_s));
  return res;
}

net::awaitable<response> login_post(gateway_context& ctx, request req, bool register_form,
                                    std::string peer) {
  std::vector<std::string> allowed;
  allowed.push_back("username");
  allowed.push_back("password");
  if (register_form) allowed.push_back("email");
  allowed.push_back("csrf");
  auto in = read_account_input(req, allowed);
  if (in.error)
    co_return login_form_response(ctx, req, register_form, flash_of(*in.error),
                                  static_cast<http::status>(in.error->status), in.fields);
  std::string name = in.fields["username"];
  if (register_form) {
    auto e = co_await do_register(ctx, name, in.fields["email"], in.fields["password"], peer);
    if (e) co_return refused_form(ctx, req, true, *e, in.fields);
    std::map<std::string, std::string> keep;
    keep["username"] = name;
    co_return login_form_response(
        ctx, req, false,
        ok_flash("Registered " + name +
                 ". An administrator will approve the account; then you can log in."),
        http::status::ok, keep);
  }
  std::string old = web::cookie_value(req[http::field::cookie], web::session_cookie);
  auto lr = co_await do_login(ctx, name, in.fields["password"], old, peer);
  if (lr.error) co_return refused_form(ctx, req, false, *lr.error, in.fields);
  auto res = redirect_response("/");
  res.insert(http::field::set_cookie, session_cookie_header(ctx, lr.token));
  co_return res;
}

}  // namespace

// ---- the pages' policy (router.cpp) ----------------------------------------------------------

response page_method_not_allowed(std::string_view allow, const std::string& method) {
  auto res = html_response(
      http::status::method_not_allowed,
      web::error_page(405, "method " + method.substr(0, 16) + " is not allowed here", nullptr));
  res.set(http::field::allow, allow);
  return res;
}

net::awaitable<std::optional<response>> admit_page_caller(call& c, const route_entry& e) {
  bool post = c.req.method() == http::verb::post;
  if (post && !origin_matches(c.ctx, c.req[http::field::origin], c.req[http::field::host]))
    co_return error_page_response(
        403, "Cross-site form post refused: this form did not come from this site.",
        std::nullopt);
  c.who = co_await page_session(c.ctx, std::string(c.req[http::field::cookie]));
  if (e.auth == auth_policy::page_public) co_return std::nullopt;
  if (!c.who) {
    if (e.auth == auth_policy::page_fragment)
      co_return html_response(http::status::unauthorized, "");
    if (post)
      co_return error_page_response(
          403, "Your session has ended; log in again and repeat the action.", std::nullopt);
    co_return redirect_response("/login");
  }
  if (post) {
    auto form = web::parse_form(c.req.body());
    if (!form) co_return error_page_response(400, "Malformed form.", c.who);
    auto csrf = form->find("csrf");
    if (csrf == form->end() || !web::tokens_equal(csrf->second, c.who->csrf)) {
      log::warn("form refused: csrf mismatch user={} path={}", c.who->name, c.path);
      co_return error_page_response(
          403, "The form has expired or did not come from this site (missing or wrong CSRF token).",
          c.who);
    }
    c.form = std::move(*form);
  }
  if (e.auth == auth_policy::page_admin && !c.who->admin)
    co_return error_page_response(403, "This page is for administrators.", c.who);
  co_return std::nullopt;
}

// ---- pages (routes.cpp) -----------------------------------------------------------------------

net::awaitable<handler_result> page_home(call& c) {
  auto f = co_await take_flash(c.ctx, *c.who);
  co_return result_of(co_await render_home(c.ctx, *c.who, parse_home_query(c.query), std::nullopt,
                                           f, http::status::ok));
}

net::awaitable<handler_result> page_job(call& c) {
  auto f = co_await take_flash(c.ctx, *c.who);
  co_return result_of(co_await render_job(c.ctx, *c.who, c.params.id, f));
}

// The live-update fragments: the job's table row, or its field table.
net::awaitable<response> job_fragment(call& c, bool row) {
  auto rec = co_await c.ctx.jobs->async_get(c.params.id);
  if (!rec || !may_read(*c.who, c.params.id, field(*rec, "descname")))
    co_return html_response(http::status::not_found, "");
  auto user = page_user_of(*c.who);
  if (row)
    co_return html_response(http::status::ok,
                            web::job_row(*rec, user, now_s(c.ctx),
                                         web::safe_next(query_value(c.query, "next"), "/")));
  co_return html_response(http::status::ok, web::job_detail(*rec, user, now_s(c.ctx)));
}
net::awaitable<handler_result> page_job_row(call& c) {
  co_return result_of(co_await job_fragment(c, true));
}
net::awaitable<handler_result> page_job_fields(call& c) {
  co_return result_of(co_await job_fragment(c, false));
}

net::awaitable<handler_result> page_admin(call& c) {
  auto f = co_await take_flash(c.ctx, *c.who);
  co_return result_of(co_await render_admin(c.ctx, *c.who, f));
}

net::awaitable<handler_result> page_tokens(call& c) {
  auto f = co_await take_flash(c.ctx, *c.who);
  co_return result_of(co_await render_tokens(c.ctx, *c.who, f, std::string(), std::string(),
                                             http::status::ok));
}

net::awaitable<response> login_form(call& c, bool reg) {
  if (c.who) co_return redirect_response("/");
  std::map<std::string, std::string> none;
  co_return login_form_response(c.ctx, c.req, reg, no_flash(), http::status::ok, none);
}
net::awaitable<handler_result> page_login_form(call& c) {
  co_return result_of(co_await login_form(c, false));
}
net::awaitable<handler_result> page_register_form(call& c) {
  co_return result_of(co_await login_form(c, true));
}
net::awaitable<handler_result> page_login_post(call& c) {
  co_return result_of(co_await login_post(c.ctx, std::move(c.req), false, std::move(c.peer)));
}
net::awaitable<handler_result> page_register_post(call& c) {
  co_return result_of(co_await login_post(c.ctx, std::move(c.req), true, std::move(c.peer)));
}

net::awaitable<handler_result> page_logout(call& c) {
  auto form = web::parse_form(c.req.body());
  std::string csrf = form ? (*form)["csrf"] : std::string();
  bool done = co_await do_logout(c.ctx, std::string(c.req[http::field::cookie]), csrf);
  if (!done)
    co_return result_of(error_page_response(
        403, "The form has expired (missing or wrong CSRF token); reload the page.", c.who));
  auto res = redirect_response("/login");
  res.insert(http::field::set_cookie, clear_session_cookie(c.ctx));
  co_return result_of(std::move(res));
}

net::awaitable<handler_result> page_help(call& c) {
  web::page_user u;
  if (c.who) u = page_user_of(*c.who);
  co_return result_of(
      html_response(http::status::ok, web::help_page(c.who ? &u : nullptr, c.ctx.apps)));
}

net::awaitable<handler_result> page_asset(call& c) {
  co_return result_of(asset_response(c.params.name));
}
net::awaitable<handler_result> page_favicon(call&) { co_return result_of(no_content_response()); }

net::awaitable<response> job_create_form(call& c) {
  auto& ctx = c.ctx;
  auto& who = *c.who;
  auto& form = c.form;
  json::value v;
  job_request jr;
  std::optional<api_error> e = job_object_from_form(form, v);
  if (!e) e = validate_job(v, ctx.apps, jr);
  if (e)
    co_return co_await render_home(ctx, who, default_home(), form_of(form), flash_of(*e),
                                   http::status::bad_request);
  std::vector<job_request> reqs;
  reqs.push_back(std::move(jr));
  auto res = co_await create_jobs(ctx, who, std::move(reqs), false);
  if (res.result_int() != 201)
    co_return co_await render_home(ctx, who, default_home(), form_of(form),
                                   flash_of(bad_request(error_detail(res))),
                                   static_cast<http::status>(res.result_int()));
  co_await set_flash(ctx, who, created_message(res), false);
  co_return redirect_response("/");
}
net::awaitable<handler_result> page_job_create(call& c) {
  co_return result_of(co_await job_create_form(c));
}

net::awaitable<response> job_action_form(call& c) {
  auto& ctx = c.ctx;
  auto& who = *c.who;
  const auto& action = c.params.action;
  job_id id = c.params.id;
  std::string next = web::safe_next(c.form["next"], "/");
  response res;
  if (action == "cancel")
    res = co_await cancel_job(ctx, who, id);
  else if (action == "archive")
    res = co_await archive_job(ctx, who, id, true);
  else if (action == "unarchive")
    res = co_await archive_job(ctx, who, id, false);
  else
    res = co_await delete_job(ctx, who, id);
  bool ok = res.result_int() < 300;
  if (ok)
    co_await set_flash(ctx, who, job_action_message(action, id, res.result_int()), false);
  else
    co_await set_flash(ctx, who, error_detail(res), true);
  if (action == "delete" && ok && next == "/jobs/" + std::to_string(id)) next = "/";
  co_return redirect_response(next);
}
net::awaitable<handler_result> page_job_action(call& c) {
  co_return result_of(co_await job_action_form(c));
}

net::awaitable<response> admin_action_form(call& c) {
  auto& who = *c.who;
  auto e = co_await admin_change(c.ctx, who, c.params.name, c.params.action);
  if (e && e->status == 403) co_return error_page_response(403, e->detail, who);
  if (e)
    co_await set_flash(c.ctx, who, e->detail, true);
  else
    co_await set_flash(c.ctx, who, "Done: " + c.params.action + " " + c.params.name + ".", false);
  co_return redirect_response("/admin");
}
net::awaitable<handler_result> page_admin_action(call& c) {
  co_return result_of(co_await admin_action_form(c));
}

net::awaitable<response> token_create_form(call& c) {
  std::string label = c.form["label"];
  if (auto e = check_label(label))
    co_return co_await render_tokens(c.ctx, *c.who, flash_of(*e), std::string(), std::string(),
                                     http::status::bad_request);
  std::string token = co_await create_token(c.ctx, c.who->name, label);
  co_return co_await render_tokens(c.ctx, *c.who, no_flash(), token, label, http::status::ok);
}
net::awaitable<handler_result> page_token_create(call& c) {
  co_return result_of(co_await token_create_form(c));
}

net::awaitable<handler_result> page_token_revoke(call& c) {
  bool done = co_await revoke_token(c.ctx, c.who->name, c.params.name);
  if (done)
    co_await set_flash(c.ctx, *c.who, "Revoked the token.", false);
  else
    co_await set_flash(c.ctx, *c.who, "No such token (already revoked?).", true);
  co_return result_of(redirect_response("/tokens"));
}

// ---- the account API (routes.cpp) -------------------------------------------------------------

net::awaitable<handler_result> account_logout(call& c) {
  std::string csrf(c.req["X-CSRF-Token"]);
  if (is_form(c.req)) {
    auto form = web::parse_form(c.req.body());
    if (form) csrf = (*form)["csrf"];
  }
  bool done = co_await do_logout(c.ctx, std::string(c.req[http::field::cookie]), csrf);
  if (!done)
    co_return result_of(make_error_response(
        forbidden("missing or wrong X-CSRF-Token header (required with a session cookie)")));
  auto res = no_content_response();
  res.insert(http::field::set_cookie, clear_session_cookie(c.ctx));
  co_return result_of(std::move(res));
}

// POST /api/register and /api/login: JSON, or a form with the CSRF cookie.
net::awaitable<response> account_form(call& c, bool reg) {
  auto& ctx = c.ctx;
  std::vector<std::string> allowed;
  allowed.push_back("username");
  allowed.push_back("password");
  if (reg) allowed.push_back("email");
  if (is_form(c.req)) allowed.push_back("csrf");
  auto in = read_account_input(c.req, allowed);
  if (in.error) co_return make_error_response(*in.error);
  std::string name = in.fields["username"];
  if (auto e = missing_field(in.fields, reg)) co_return make_error_response(*e);
  if (reg) {
    auto e = co_await do_register(ctx, name, in.fields["email"], in.fields["password"], c.peer);
    if (e) co_return make_error_response(*e);
    co_return make_json_response(http::status::created, registered_json(name));
  }
  auto lr = co_await do_login(
      ctx, name, in.fields["password"],
      web::cookie_value(c.req[http::field::cookie], web::session_cookie), c.peer);
  if (lr.error) co_return make_error_response(*lr.error);
  auto res = make_json_response(http::status::ok,
                                login_json(name, lr, ctx.config.session_ttl.count()));
  res.insert(http::field::set_cookie, session_cookie_header(ctx, lr.token));
  co_return res;
}
net::awaitable<handler_result> account_register(call& c) {
  co_return result_of(co_await account_form(c, true));
}
net::awaitable<handler_result> account_login(call& c) {
  co_return result_of(co_await account_form(c, false));
}

net::awaitable<handler_result> account_session(call& c) {
  co_return result_of(make_json_response(http::status::ok, session_json(*c.who, c.who->csrf)));
}

net::awaitable<handler_result> tokens_list(call& c) {
  auto tokens = co_await list_tokens(c.ctx, c.who->name);
  co_return result_of(make_json_response(http::status::ok, tokens_json(tokens)));
}

net::awaitable<response> token_create_json(call& c) {
  std::string label;
  const auto& body = c.req.body();
  if (!body.empty()) {
    json::value v;
    if (auto e = parse_json_body(body, v)) co_return make_error_response(*e);
    if (!v.is_object()) co_return make_error_response(bad_request("the body must be a JSON object"));
    for (const auto& kv : v.as_object()) {
      if (kv.key() != "label")
        co_return make_error_response(bad_request(
            "unknown field '" + std::string(kv.key()).substr(0, 40) + "'; allowed: label"));
      if (!kv.value().is_string())
        co_return make_error_response(bad_request("field 'label' must be a string"));
      label = std::string(kv.value().as_string());
    }
  }
  if (auto e = check_label(label)) co_return make_error_response(*e);
  std::string token = co_await create_token(c.ctx, c.who->name, label);
  co_return make_json_response(http::status::created, new_token_json(token, label));
}
net::awaitable<handler_result> tokens_create(call& c) {
  co_return result_of(co_await token_create_json(c));
}

net::awaitable<handler_result> tokens_revoke(call& c) {
  bool done = co_await revoke_token(c.ctx, c.who->name, c.params.name);
  if (!done) co_return result_of(make_error_response(not_found("no such token")));
  co_return result_of(no_content_response());
}

net::awaitable<handler_result> admin_users(call& c) {
  auto users = co_await load_users(c.ctx);
  co_return result_of(make_json_response(http::status::ok, users_json(users)));
}

net::awaitable<handler_result> admin_overview(call& c) {
  auto ov = co_await load_overview(c.ctx);
  co_return result_of(make_json_response(http::status::ok, overview_json(ov)));
}

net::awaitable<response> admin_user_json(call& c) {
  const auto& name = c.params.name;
  auto e = co_await admin_change(c.ctx, *c.who, name, c.params.action);
  if (e) co_return make_error_response(*e);
  auto reply = co_await c.ctx.redis->async_exec(
      redis_cmd("HMGET", c.ctx.prefix + "user:" + name, "status", "role"));
  account_change ch;
  ch.ok = true;
  if (reply.elements.size() == 2) {
    ch.status = reply.elements[0].as_string();
    ch.role = reply.elements[1].as_string();
  }
  co_return make_json_response(http::status::ok, account_change_json(name, ch));
}
net::awaitable<handler_result> admin_user_change(call& c) {
  co_return result_of(co_await admin_user_json(c));
}

}  // namespace descprod::gateway::detail
