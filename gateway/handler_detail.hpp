// Private to gateway/: the parts of the request handler (handler.cpp) that the web pages and the
// account routes (web_handler.cpp) reuse, and the entry points of web_handler.cpp. Not for other
// components.
//
// Thread-safety: as handler.hpp (one io_context thread).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "gateway/handler.hpp"
#include "gateway/web.hpp"

namespace descprod::gateway::detail {

double now_s(const gateway_context& ctx);
response no_content_response();

struct auth_result {
  std::optional<principal> who;
  api_error error;
};
// Who is calling: the bearer token of `authorization`, or else the web session of the `cookie`
// header (its expiry pushed out: sliding). Errors are 401.
net::awaitable<auth_result> authenticate(gateway_context& ctx, std::string authorization,
                                         std::string cookie);

// POST /api/jobs's 201 answer built from what the create script wrote (the request, the owner and
// the script's time as stored): the same JSON as job_to_json of the new job hash.
response created_job_response(job_id id, const job_request& req, const std::string& owner,
                              const std::string& create_time);

// The job routes' work, answering as the JSON API does.
net::awaitable<response> create_jobs(gateway_context& ctx, principal who,
                                     std::vector<job_request> reqs, bool bulk);
net::awaitable<std::string> job_owner(gateway_context& ctx, job_id id);
net::awaitable<response> cancel_job(gateway_context& ctx, principal who, job_id id);
net::awaitable<response> archive_job(gateway_context& ctx, principal who, job_id id,
                                     bool archived);
net::awaitable<response> delete_job(gateway_context& ctx, principal who, job_id id);
net::awaitable<std::optional<boost::json::object>> children_rollup(gateway_context& ctx, job_id id,
                                                                   long long card);

// A page of the caller's jobs (or of a parent's children) as GET /api/jobs selects them.
struct job_query_result {
  std::optional<api_error> error;    // the parent is not visible
  std::vector<redis_reply> records;  // HGETALL replies (an empty one: deleted meanwhile)
  long long total = 0;
  std::optional<std::size_t> scanned;  // filtered listing: jobs looked at
  bool truncated = false;
};
net::awaitable<job_query_result> query_jobs(gateway_context& ctx, principal who, list_query q);

// ---- metrics_handler.cpp --------------------------------------------------------------------

// GET /metrics: the service's state read from Redis (one pipeline), this gateway's own state and
// its request metrics, as Prometheus text. Redis being down is not an error: the answer is still
// 200, with descprod_redis_up 0 and only what the gateway knows by itself.
net::awaitable<response> metrics_response(gateway_context& ctx);

// ---- web_handler.cpp ------------------------------------------------------------------------

// A web page or a page's form post (cookie session; forms carry the CSRF token).
// `peer`: the client's address (login and registration throttles; empty: unknown).
net::awaitable<handler_result> handle_page(gateway_context& ctx, request req,
                                           web::page_route page, std::string peer);
// POST /api/register, /api/login, /api/logout (JSON, or a form with the CSRF cookie).
net::awaitable<response> handle_public_account(gateway_context& ctx, request req, route r,
                                               std::string peer);
// GET /api/session, the token routes and the admin routes, for an authenticated caller.
net::awaitable<response> handle_account_api(gateway_context& ctx, principal who, route r,
                                            request req);

}  // namespace descprod::gateway::detail
