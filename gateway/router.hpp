// The gateway's one route table (docs/architecture.md, "Gateway"): every API route and every web
// page is one entry saying which method it answers, its path pattern, who may call it (the
// authentication policy, and what a job token may do there), its metrics class and the function
// that answers it. Routing, 405 with its Allow header, authentication, the job-token scope, the
// metrics class of a request and the dispatch all read this table; adding a route is adding an
// entry (routes.cpp) and its handler function.
//
// Matching walks the pattern and the path segment by segment over string_views: no regex, no
// allocation except a captured user name (the single-job submit is the hot path).
//
// Thread-safety: the table is immutable; call belongs to one request on one io_context thread.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "gateway/api.hpp"
#include "gateway/handler.hpp"
#include "gateway/web.hpp"

namespace descprod::gateway {

// The methods an entry answers (a bit set). A page's HEAD is answered as its GET; the API has no
// HEAD.
enum method_bits : std::uint8_t { m_get = 1, m_post = 2, m_delete = 4 };

// Who may call a route (docs/architecture.md, "Security model").
enum class auth_policy : std::uint8_t {
  none,           // answered before any other check: health, readiness, metrics
  account,        // POST /api/register, /login, /logout: no caller needed; cross-origin refused
  user,           // a user token, a job token (see job_scope) or a session cookie, which must echo
                  // its CSRF token in X-CSRF-Token on a state-changing request
  admin,          // as user, then administrators only (403)
  page_static,    // a static file: nothing looked up
  page_public,    // a page anyone may see; the session is looked up when there is one; a form
                  // post must come from this site (the handler checks its own CSRF token)
  page_session,   // a logged-in user's page: without a session, /login; a form post must come
                  // from this site and carry the session's CSRF token
  page_fragment,  // as page_session, but a 401 without a body when there is no session (the
                  // live updates of a page fetch these)
  page_admin,     // as page_session, then administrators only (a 403 page)
};

// What a job token (scope job:<J>) may do on an entry; user tokens and sessions ignore it.
enum class job_scope : std::uint8_t {
  refused,          // 403
  any,              // allowed (GET /api/version)
  children,         // create jobs, each a child of J (checked by check_children_only); 403 once J was
                    // cancelled (read-only token)
  own_job,          // allowed for job J only; another job's ID is 404
  own_job_refused,  // another job's ID is 404, J itself 403
  owner_read,       // reads any job of J's owner (the handler checks the owner)
  child_claim,      // claims a child of J (the handler checks the parent); 403 once J was cancelled
};

// What a pattern's placeholders captured: {id}, {sha} and {user} / {action} (see routes.cpp).
struct route_params {
  job_id id = 0;
  std::string name;    // {sha}, {user} or {asset}
  std::string action;  // {account_action} or {job_action}
};

// One request on its way through an entry: filled by the router, read by the handler.
struct call {
  gateway_context& ctx;
  request req;
  std::string peer;  // the client's address (throttles; empty: unknown)
  std::string path, query;
  route_params params;
  // The caller: set for user/admin/page_session/page_fragment/page_admin; for page_public when
  // a session is there.
  std::optional<principal> who;
  // page_session form posts: the parsed form (its CSRF token already checked).
  std::map<std::string, std::string> form;
};

using route_handler = net::awaitable<handler_result> (*)(call&);

struct route_entry {
  std::uint8_t methods;  // method_bits
  std::string_view pattern;
  auth_policy auth;
  job_scope scope;
  std::string_view metrics_class;  // the `route` label of the request metrics
  route_handler handler;
  // The route's name for the API's pure helpers and tests (match_route, check_job_token_scope);
  // route_kind::not_found for a page. Pages name theirs by page_kind (none for the API).
  route_kind kind = route_kind::not_found;
  web::page_kind page = web::page_kind::none;
  // The route may revoke a token or change an account: the auth cache is emptied after a
  // state-changing request to it, so the change holds on this gateway at once.
  bool forgets_tokens = false;
};

// The table (routes.cpp).
std::span<const route_entry> route_table();

bool is_page(const route_entry& e);

// The result of routing a path and a method.
struct route_match {
  const route_entry* entry = nullptr;  // null: no entry (see path_known)
  bool path_known = false;             // some entry has this path (then a null entry is a 405)
  bool page = false;                   // the path is a page's (HTML answers)
  std::uint8_t allowed = 0;            // the methods of the entries of this path
  route_params params;
};
route_match find_route(std::string_view path, std::string_view method);

// "GET", "POST", "GET, POST", ... for an Allow header.
std::string_view allow_header(std::uint8_t methods);

// What a job token may do at `e` for job `id` (nullopt: allowed; user tokens always are).
std::optional<api_error> job_scope_refusal(const principal& who, job_scope scope, job_id id);

// Routes one request through the table: the whole of handle() but its error catching.
net::awaitable<handler_result> route_request(gateway_context& ctx, request req, std::string peer);

}  // namespace descprod::gateway
