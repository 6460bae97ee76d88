// The JSON API's presenter of the accounts and admin services (docs/api.md, docs/security.md):
// POST /api/register, /api/login, /api/logout, GET /api/session, the API tokens and the admin
// routes; and the account form input the login pages share (handler_detail.hpp). GCC 12
// coroutine rules (docs/building.md#conventions): bodies are built by the plain functions above
// the coroutines; coroutine parameters are values.
#include <algorithm>
#include <map>

#include "core/async_util.hpp"
#include "core/crypto.hpp"
#include "gateway/accounts_service.hpp"
#include "gateway/admin_service.hpp"
#include "gateway/handler_detail.hpp"
#include "gateway/jobs_service.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // see handler.cpp
#endif

namespace descprod::gateway::detail {

namespace json = boost::json;

// A urlencoded form body. `curl -d '{...}'` labels JSON as a form; a real form never starts with
// '{' (the form encoding escapes it), so such a body is read as JSON.
bool is_form(const request& req) {
  std::string_view ct = req[http::field::content_type];
  std::string_view body = req.body();
  while (!body.empty() &&
         (body.front() == ' ' || body.front() == '\n' || body.front() == '\r' || body.front() == '\t'))
    body.remove_prefix(1);
  return ct.substr(0, 33) == "application/x-www-form-urlencoded" && (body.empty() || body.front() != '{');
}

account_input read_account_input(const request& req, const std::vector<std::string>& allowed) {
  account_input in;
  if (is_form(req)) {
    in.form = true;
    auto form = web::parse_form(req.body());
    if (!form) {
      in.error = bad_request("malformed form body");
      return in;
    }
    std::string cookie_csrf = web::cookie_value(req[http::field::cookie], web::login_csrf_cookie);
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

std::string session_cookie_header(const gateway_context& ctx, const std::string& token) {
  return web::set_cookie(web::session_cookie, token, ctx.tls);
}

std::string clear_session_cookie(const gateway_context& ctx) {
  return web::set_cookie(web::session_cookie, "", ctx.tls, 0);
}

namespace {

enum class field_kind { text, integer, number };

// A hash field as JSON: the number it holds for a numeric field (as text when it does not read
// as one).
void put_field(json::object& o, std::string_view k, const std::string& v, field_kind kind) {
  if (kind == field_kind::integer) {
    if (auto n = parse_integer<long long>(v)) {
      o[k] = *n;
      return;
    }
  } else if (kind == field_kind::number) {
    if (auto d = parse_double(v)) {
      o[k] = *d;
      return;
    }
  }
  o[k] = v;
}

json::object user_json(const job_record& u) {
  json::object o;
  for (const char* k :
       {"name", "role", "status", "email", "created", "approved", "oidc_provider", "oidc_iss", "oidc_sub"}) {
    auto v = field_or_empty(u, k);
    if (v.empty()) continue;
    bool time = std::string_view(k) == "created" || std::string_view(k) == "approved";
    put_field(o, k, v, time ? field_kind::number : field_kind::text);
  }
  return o;
}

json::object worker_json(const job_record& w) {
  json::object o;
  for (const auto& [k, v] : w) {
    auto kind = k == "slots" || k == "running" ? field_kind::integer
                : k == "last_heartbeat"        ? field_kind::number
                                               : field_kind::text;
    put_field(o, k, v, kind);
  }
  return o;
}

// A pilot hash (daemon/pilots.cpp) as JSON: counts as integers, times as numbers (left out
// while 0), `workers` as a list of worker ids.
json::object pilot_json(const job_record& p) {
  json::object o;
  for (const auto& [k, v] : p) {
    if (k == "submitted_time" || k == "started_time" || k == "ended_time") {
      if (v.empty() || v == "0") continue;
      put_field(o, k, v, field_kind::number);
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
    } else {
      bool count = k == "nodes" || k == "walltime_minutes" || k == "slots" || k == "connected";
      put_field(o, k, v, count ? field_kind::integer : field_kind::text);
    }
  }
  return o;
}

json::object session_json(const principal& who, const std::string& csrf) {
  json::object o;
  o["user"] = who.name;
  o["role"] = who.admin ? "admin" : "user";
  if (!csrf.empty()) o["csrf_token"] = csrf;
  o["via"] = who.by_session ? "session" : "token";
  return o;
}

json::object login_json(const std::string& user, const accounts_service::session& lr, long long ttl) {
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
    o["id"] = field_or_empty(t, "id");
    o["label"] = field_or_empty(t, "label");
    try {
      o["created"] = std::stod(field_or_empty(t, "created"));
    } catch (...) {
    }
    try {
      o["expires"] = std::stod(field_or_empty(t, "expires"));
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

json::object overview_json(const admin_service::overview& ov) {
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

// The first of the required fields that is absent, as a 400.
std::optional<api_error> missing_field(const std::map<std::string, std::string>& fields, bool registering) {
  static const char* const required[] = {"username", "password", "email"};
  for (std::size_t i = 0; i < (registering ? 3u : 2u); ++i)
    if (!fields.count(required[i])) return bad_request(std::string("missing field '") + required[i] + "'");
  return std::nullopt;
}

// POST /api/register and /api/login: JSON, or a form with the CSRF cookie.
net::awaitable<handler_result> account_form(call& c, bool reg) {
  auto& ctx = c.ctx;
  std::vector<std::string> allowed;
  allowed.push_back("username");
  allowed.push_back("password");
  if (reg) allowed.push_back("email");
  if (is_form(c.req)) allowed.push_back("csrf");
  auto in = read_account_input(c.req, allowed);
  if (in.error) co_return error_answer(*in.error);
  std::string name = in.fields["username"];
  if (auto e = missing_field(in.fields, reg)) co_return error_answer(*e);
  if (reg) {
    auto r = co_await accounts_service::register_user(ctx, name, in.fields["email"], in.fields["password"],
                                                      c.peer);
    if (!r) co_return error_answer(r.error());
    co_return json_answer(http::status::created, registered_json(name));
  }
  auto s = co_await accounts_service::login(
      ctx, name, in.fields["password"], web::cookie_value(c.req[http::field::cookie], web::session_cookie),
      c.peer);
  if (!s) co_return error_answer(s.error());
  auto res = make_json_response(http::status::ok, login_json(name, *s, ctx.config.session_ttl.count()));
  res.insert(http::field::set_cookie, session_cookie_header(ctx, s->token));
  co_return answer(std::move(res));
}

// POST /api/tokens's body: nothing, or {"label": string}.
// The body of POST /api/session/preferences: {"email_on_failure": true|false}.
result<bool> email_on_failure_of(const std::string& body) {
  json::value v;
  if (auto e = parse_json_body(body, v)) return *e;
  if (!v.is_object()) return bad_request("the body must be a JSON object");
  std::optional<bool> on;
  for (const auto& kv : v.as_object()) {
    if (kv.key() != "email_on_failure")
      return bad_request("unknown field '" + std::string(kv.key()).substr(0, 40) +
                         "'; allowed: email_on_failure");
    if (!kv.value().is_bool()) return bad_request("field 'email_on_failure' must be true or false");
    on = kv.value().as_bool();
  }
  if (!on) return bad_request("missing field 'email_on_failure'");
  return *on;
}

void add_preferences(json::object& o, const accounts_service::preferences& p) {
  o["email"] = p.email;
  o["email_on_failure"] = p.email_on_failure;
}

result<std::string> token_label(const std::string& body) {
  std::string label;
  if (body.empty()) return label;
  json::value v;
  if (auto e = parse_json_body(body, v)) return *e;
  if (!v.is_object()) return bad_request("the body must be a JSON object");
  for (const auto& kv : v.as_object()) {
    if (kv.key() != "label")
      return bad_request("unknown field '" + std::string(kv.key()).substr(0, 40) + "'; allowed: label");
    if (!kv.value().is_string()) return bad_request("field 'label' must be a string");
    label = std::string(kv.value().as_string());
  }
  return label;
}

}  // namespace

// ---- the account API (routes.cpp) -------------------------------------------------------------

net::awaitable<handler_result> account_register(call& c) { co_return co_await account_form(c, true); }

net::awaitable<handler_result> account_login(call& c) { co_return co_await account_form(c, false); }

net::awaitable<handler_result> account_logout(call& c) {
  std::string csrf(c.req["X-CSRF-Token"]);
  if (is_form(c.req)) {
    auto form = web::parse_form(c.req.body());
    if (form) csrf = (*form)["csrf"];
  }
  auto r = co_await accounts_service::logout(c.ctx, std::string(c.req[http::field::cookie]), csrf);
  if (!r)
    co_return error_answer(
        forbidden("missing or wrong X-CSRF-Token header (required with a session cookie)"));
  auto res = no_content_response();
  res.insert(http::field::set_cookie, clear_session_cookie(c.ctx));
  co_return answer(std::move(res));
}

namespace {
// The account's quota as GET /api/session shows it: the share, and each limit or null (none).
json::object quota_json(const user_quota& q) {
  json::object o;
  o["share"] = q.share;
  auto limit = [](std::uint32_t v) { return v ? json::value(v) : json::value(nullptr); };
  o["max_running"] = limit(q.max_running);
  o["max_queued"] = limit(q.max_queued);
  o["submit_rate_per_minute"] = limit(q.submit_per_minute);
  return o;
}
}  // namespace

net::awaitable<handler_result> account_session(call& c) {
  auto o = session_json(*c.who, c.who->csrf);
  if (!c.who->only_job) {
    auto p = co_await accounts_service::preferences_of(c.ctx, c.who->name);
    add_preferences(o, p);
    auto q = co_await jobs_service::quota_for(c.ctx, c.who->name);
    o["quota"] = quota_json(q);
  }
  co_return json_answer(http::status::ok, o);
}

net::awaitable<handler_result> account_preferences(call& c) {
  auto on = email_on_failure_of(c.req.body());
  if (!on) co_return error_answer(on.error());
  auto p = co_await accounts_service::set_email_on_failure(c.ctx, c.who->name, *on);
  if (!p) co_return error_answer(p.error());
  json::object o;
  add_preferences(o, *p);
  co_return json_answer(http::status::ok, o);
}

net::awaitable<handler_result> tokens_list(call& c) {
  auto tokens = co_await accounts_service::tokens(c.ctx, c.who->name);
  co_return json_answer(http::status::ok, tokens_json(tokens));
}

net::awaitable<handler_result> tokens_create(call& c) {
  auto label = token_label(c.req.body());
  if (!label) co_return error_answer(label.error());
  auto token = co_await accounts_service::create_token(c.ctx, c.who->name, *label);
  if (!token) co_return error_answer(token.error());
  co_return json_answer(http::status::created, new_token_json(*token, *label));
}

net::awaitable<handler_result> tokens_revoke(call& c) {
  auto r = co_await accounts_service::revoke_token(c.ctx, c.who->name, c.params.name);
  if (!r) co_return error_answer(r.error());
  co_return answer(no_content_response());
}

net::awaitable<handler_result> admin_users(call& c) {
  auto users = co_await admin_service::users(c.ctx);
  co_return json_answer(http::status::ok, users_json(users));
}

net::awaitable<handler_result> admin_overview(call& c) {
  auto ov = co_await admin_service::overview_of(c.ctx);
  co_return json_answer(http::status::ok, overview_json(ov));
}

net::awaitable<handler_result> admin_user_change(call& c) {
  auto r = co_await admin_service::change(c.ctx, *c.who, c.params.name, c.params.action);
  if (!r) co_return error_answer(r.error());
  co_return json_answer(http::status::ok, account_change_json(c.params.name, *r));
}

}  // namespace descprod::gateway::detail
