// The router: matches a request against the route table (routes.cpp), answers 404 and 405 from
// it, applies the entry's authentication policy and job-token scope, and calls its handler. The
// pure helpers the unit tests know (match_route, allowed_methods, is_public, match_page, ...)
// read the same table. GCC 12 coroutine rules (docs/building.md#conventions) apply: no braced temporaries and no
// lambdas in coroutine bodies.
#include "gateway/router.hpp"

#include "core/accounts.hpp"
#include "core/log.hpp"
#include "gateway/auth_cache.hpp"
#include "gateway/guard.hpp"
#include "gateway/handler_detail.hpp"
#include "gateway/metrics.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace descprod::gateway {

namespace {

std::uint8_t method_bit(std::string_view method) {
  if (method == "GET") return m_get;
  if (method == "POST") return m_post;
  if (method == "DELETE") return m_delete;
  return 0;
}

bool lower_hex_64(std::string_view s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// One placeholder of a pattern against one segment of a path; fills `out` when it fits.
bool match_placeholder(std::string_view name, std::string_view seg, route_params* out) {
  if (name == "{id}") {
    auto id = parse_job_id_text(seg);
    if (!id) return false;
    if (out) out->id = *id;
    return true;
  }
  if (name == "{sha}") {
    if (!lower_hex_64(seg)) return false;
    if (out) out->name = std::string(seg);
    return true;
  }
  if (name == "{user}") {
    if (seg.empty() || !valid_user_name(std::string(seg))) return false;
    if (out) out->name = std::string(seg);
    return true;
  }
  if (name == "{provider}") {
    if (!valid_oidc_provider_name(seg)) return false;  // whether one has the name: the handler's answer
    if (out) out->name = std::string(seg);
    return true;
  }
  if (name == "{account_action}") {
    if (!parse_account_action(seg)) return false;
    if (out) out->action = std::string(seg);
    return true;
  }
  if (name == "{job_action}") {
    if (!is_job_action(seg)) return false;
    if (out) out->action = std::string(seg);
    return true;
  }
  if (name == "{asset}") {
    if (!web::find_asset(seg)) return false;
    if (out) out->name = std::string(seg);
    return true;
  }
  return false;
}

// Whether `path` fits `pattern`, segment by segment ("/" separated; "{...}" placeholders).
bool match_pattern(std::string_view pattern, std::string_view path, route_params* out) {
  for (;;) {
    if (pattern.empty() || path.empty()) return pattern.empty() && path.empty();
    if (pattern.front() != '/' || path.front() != '/') return false;
    pattern.remove_prefix(1);
    path.remove_prefix(1);
    auto pslash = pattern.find('/');
    auto slash = path.find('/');
    auto pseg = pattern.substr(0, pslash);
    auto seg = path.substr(0, slash);
    if (!pseg.empty() && pseg.front() == '{') {
      if (!match_placeholder(pseg, seg, out)) return false;
    } else if (pseg != seg) {
      return false;
    }
    pattern = pslash == std::string_view::npos ? std::string_view() : pattern.substr(pslash);
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash);
  }
}

const route_entry* entry_of(route_kind k, std::string_view method) {
  auto bit = method_bit(method);
  for (const auto& e : route_table())
    if (e.kind == k && (e.methods & bit)) return &e;
  return nullptr;
}

std::uint8_t methods_of(route_kind k) {
  std::uint8_t m = 0;
  for (const auto& e : route_table())
    if (e.kind == k && k != route_kind::not_found) m |= e.methods;
  return m;
}

std::uint8_t methods_of(web::page_kind k) {
  std::uint8_t m = 0;
  for (const auto& e : route_table())
    if (e.page == k && k != web::page_kind::none) m |= e.methods;
  return m;
}

const route_entry* any_entry_of(web::page_kind k) {
  for (const auto& e : route_table())
    if (e.page == k) return &e;
  return nullptr;
}

}  // namespace

bool is_page(const route_entry& e) { return e.page != web::page_kind::none; }

std::string_view allow_header(std::uint8_t methods) {
  static constexpr std::string_view names[8] = {"",       "GET",         "POST",         "GET, POST",
                                                "DELETE", "GET, DELETE", "POST, DELETE", "GET, POST, DELETE"};
  return names[methods & 7];
}

route_match find_route(std::string_view path, std::string_view method) {
  route_match m;
  auto bit = method_bit(method);
  for (const auto& e : route_table()) {
    if (!match_pattern(e.pattern, path, nullptr)) continue;
    if (!m.path_known) m.page = is_page(e);
    m.path_known = true;
    m.allowed |= e.methods;
    // A page's HEAD is its GET.
    std::uint8_t want = bit == 0 && method == "HEAD" && is_page(e) ? std::uint8_t(m_get) : bit;
    if (!m.entry && (e.methods & want)) {
      m.entry = &e;
      match_pattern(e.pattern, path, &m.params);
    }
  }
  return m;
}

std::optional<api_error> job_scope_refusal(const principal& who, job_scope scope, job_id id) {
  if (!who.only_job) return std::nullopt;
  job_id mine = *who.only_job;
  switch (scope) {
    case job_scope::any: return std::nullopt;
    case job_scope::children:
      if (who.read_only)
        return forbidden("job " + std::to_string(mine) +
                         " was cancelled: its token may only read the job and report how its run "
                         "ended");
      return std::nullopt;
    case job_scope::owner_read: return std::nullopt;
    case job_scope::child_claim:
      if (who.read_only)
        return forbidden("job " + std::to_string(mine) +
                         " was cancelled: its token may not start its children");
      return std::nullopt;
    case job_scope::own_job:
    case job_scope::own_job_refused:
      if (id != mine) return not_found("job " + std::to_string(id) + " not found");
      if (scope == job_scope::own_job) return std::nullopt;
      break;
    case job_scope::refused: break;
  }
  return forbidden("a job token (scope job:" + std::to_string(mine) +
                   ") may only read its owner's jobs, create and start its children and report its run");
}

// ---- the pure helpers of api.hpp and web.hpp, read from the table ---------------------------

route match_route(std::string_view path) {
  route r;
  for (const auto& e : route_table()) {
    if (e.kind == route_kind::not_found) continue;
    route_params p;
    if (!match_pattern(e.pattern, path, &p)) continue;
    r.kind = e.kind;
    r.id = p.id;
    r.name = std::move(p.name);
    r.action = std::move(p.action);
    break;
  }
  return r;
}

std::string_view allowed_methods(route_kind k) { return allow_header(methods_of(k)); }

bool method_allowed(route_kind k, std::string_view method) {
  return (methods_of(k) & method_bit(method)) != 0;
}

bool is_public(route_kind k) {
  for (const auto& e : route_table())
    if (e.kind == k && k != route_kind::not_found)
      return e.auth == auth_policy::none || e.auth == auth_policy::account;
  return false;
}

std::optional<api_error> check_job_token_scope(const principal& who, const route& r,
                                               std::string_view method) {
  // A method the route does not answer (the router says 405 first): another job's ID is still
  // 404 under /api/jobs/<id>, anything else 403.
  auto scope = job_scope::refused;
  if (const auto* e = entry_of(r.kind, method)) {
    scope = e->scope;
  } else {
    for (const auto& any : route_table())
      if (any.kind == r.kind && r.kind != route_kind::not_found &&
          (any.scope == job_scope::own_job || any.scope == job_scope::own_job_refused))
        scope = job_scope::own_job_refused;
  }
  return job_scope_refusal(who, scope, r.id);
}

namespace web {

page_route match_page(std::string_view path) {
  page_route r;
  for (const auto& e : route_table()) {
    if (e.page == page_kind::none) continue;
    route_params p;
    if (!match_pattern(e.pattern, path, &p)) continue;
    r.kind = e.page;
    r.id = p.id;
    r.name = std::move(p.name);
    r.action = std::move(p.action);
    break;
  }
  return r;
}

std::string_view page_methods(page_kind k) { return allow_header(methods_of(k)); }

bool page_method_allowed(page_kind k, std::string_view method) {
  if (method == "HEAD") method = "GET";
  return (methods_of(k) & method_bit(method)) != 0;
}

bool page_is_public(page_kind k) {
  const auto* e = any_entry_of(k);
  return e && k != page_kind::none &&
         (e->auth == auth_policy::page_static || e->auth == auth_policy::page_public);
}

}  // namespace web

namespace metrics {

std::string_view route_class(std::string_view path) {
  for (const auto& e : route_table())
    if (match_pattern(e.pattern, path, nullptr)) return e.metrics_class;
  if (path.rfind("/api/", 0) == 0) return "api_other";
  return "other";
}

}  // namespace metrics

// ---- dispatch ---------------------------------------------------------------------------------

namespace {

using namespace detail;

response method_not_allowed(const route_match& m, std::string_view method) {
  std::string_view allow = allow_header(m.allowed);
  if (m.page) return page_method_not_allowed(allow, std::string(method));
  api_error e;
  e.code = errc::method_not_allowed;
  e.detail =
      "method " + std::string(method.substr(0, 16)) + " is not allowed here; allowed: " + std::string(allow);
  e.allow = std::string(allow);
  return make_error_response(e);
}

call make_call(gateway_context& ctx, request req, std::string peer, target_parts target,
               route_params params) {
  return call{ctx,
              std::move(req),
              std::move(peer),
              std::move(target.path),
              std::move(target.query),
              std::move(params),
              std::nullopt,
              {}};
}

void forget_tokens(gateway_context& ctx) {
  if (ctx.tokens) ctx.tokens->clear();
}

// The API's policies: user and admin (none and account are answered before).
net::awaitable<std::optional<api_error>> admit_api_caller(call& c, const route_entry& e, bool safe_method) {
  auto auth = co_await authenticate(c.ctx, std::string(c.req[http::field::authorization]),
                                    std::string(c.req[http::field::cookie]));
  if (!auth.who) co_return auth.error;
  c.who = std::move(auth.who);
  // A session cookie rides along with any request the browser makes, so a state-changing request
  // authenticated by one must prove it comes from our page: the session's CSRF token.
  if (c.who->by_session && !safe_method && !web::tokens_equal(c.req["X-CSRF-Token"], c.who->csrf))
    co_return forbidden(
        "missing or wrong X-CSRF-Token header (required with a session cookie; see "
        "GET /api/session)");
  if (auto r = job_scope_refusal(*c.who, e.scope, c.params.id)) co_return r;
  if (e.auth == auth_policy::admin && !c.who->admin) co_return forbidden("administrators only");
  co_return std::nullopt;
}

}  // namespace

net::awaitable<handler_result> route_request(gateway_context& ctx, request req, std::string peer) {
  if (auto e = check_request_header(ctx, req)) co_return error_answer(*e);
  auto target = split_target(req.target());
  std::string method(req.method_string());
  auto m = find_route(target.path, method);
  if (!m.path_known) {
    bool api = target.path.rfind("/api/", 0) == 0;
    co_return error_answer(not_found(api ? "no such API route" : "no such page"));
  }
  if (!m.entry) co_return answer(method_not_allowed(m, method));
  const route_entry& e = *m.entry;
  call c = make_call(ctx, std::move(req), std::move(peer), std::move(target), std::move(m.params));
  bool safe_method = c.req.method() == http::verb::get || c.req.method() == http::verb::head;
  switch (e.auth) {
    case auth_policy::none:
    case auth_policy::page_static: co_return co_await e.handler(c);
    case auth_policy::account:
    case auth_policy::user:
    case auth_policy::admin: {
      // A browser's cross-site request (another page posting here) is refused outright.
      if (!safe_method && !origin_matches(ctx, c.req[http::field::origin], c.req[http::field::host]))
        co_return error_answer(
            forbidden("cross-origin request refused (Origin does not match this service's "
                      "scheme, host and port)"));
      if (e.auth != auth_policy::account) {
        if (auto refusal = co_await admit_api_caller(c, e, safe_method)) co_return error_answer(*refusal);
      }
      auto out = co_await e.handler(c);
      if (e.forgets_tokens && !safe_method) forget_tokens(ctx);
      co_return out;
    }
    default: {
      auto refusal = co_await admit_page_caller(c, e);
      handler_result out;
      if (refusal) out = answer(std::move(*refusal));
      else out = co_await e.handler(c);
      // A form post may revoke a token or change an account: forget remembered tokens.
      if (!safe_method) forget_tokens(ctx);
      co_return out;
    }
  }
}

}  // namespace descprod::gateway
