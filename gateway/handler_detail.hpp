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
#include "gateway/router.hpp"
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

// ---- the route table's handlers (routes.cpp) --------------------------------------------------

// handler.cpp: health, readiness, metrics, version, the job routes and the event stream.
net::awaitable<handler_result> healthz_get(call& c);
net::awaitable<handler_result> readyz_get(call& c);
net::awaitable<handler_result> metrics_get(call& c);
net::awaitable<handler_result> version_get(call& c);
net::awaitable<handler_result> events_stream(call& c);
net::awaitable<handler_result> jobs_create(call& c);
net::awaitable<handler_result> jobs_list(call& c);
net::awaitable<handler_result> jobs_create_bulk(call& c);
net::awaitable<handler_result> jobs_get(call& c);
net::awaitable<handler_result> jobs_delete(call& c);
net::awaitable<handler_result> jobs_events(call& c);
net::awaitable<handler_result> jobs_log(call& c);
net::awaitable<handler_result> jobs_cancel(call& c);
net::awaitable<handler_result> jobs_archive(call& c);
net::awaitable<handler_result> jobs_unarchive(call& c);
net::awaitable<handler_result> jobs_claim(call& c);
net::awaitable<handler_result> jobs_started(call& c);
net::awaitable<handler_result> jobs_progress(call& c);
net::awaitable<handler_result> jobs_finished(call& c);

// web_handler.cpp: accounts, tokens, admin (JSON) and the pages (HTML).
net::awaitable<handler_result> account_register(call& c);
net::awaitable<handler_result> account_login(call& c);
net::awaitable<handler_result> account_logout(call& c);
net::awaitable<handler_result> account_session(call& c);
net::awaitable<handler_result> tokens_list(call& c);
net::awaitable<handler_result> tokens_create(call& c);
net::awaitable<handler_result> tokens_revoke(call& c);
net::awaitable<handler_result> admin_users(call& c);
net::awaitable<handler_result> admin_user_change(call& c);
net::awaitable<handler_result> admin_overview(call& c);
net::awaitable<handler_result> page_home(call& c);
net::awaitable<handler_result> page_login_form(call& c);
net::awaitable<handler_result> page_login_post(call& c);
net::awaitable<handler_result> page_register_form(call& c);
net::awaitable<handler_result> page_register_post(call& c);
net::awaitable<handler_result> page_logout(call& c);
net::awaitable<handler_result> page_job_create(call& c);
net::awaitable<handler_result> page_job(call& c);
net::awaitable<handler_result> page_job_row(call& c);
net::awaitable<handler_result> page_job_fields(call& c);
net::awaitable<handler_result> page_job_action(call& c);
net::awaitable<handler_result> page_admin(call& c);
net::awaitable<handler_result> page_admin_action(call& c);
net::awaitable<handler_result> page_tokens(call& c);
net::awaitable<handler_result> page_token_create(call& c);
net::awaitable<handler_result> page_token_revoke(call& c);
net::awaitable<handler_result> page_help(call& c);
net::awaitable<handler_result> page_asset(call& c);
net::awaitable<handler_result> page_favicon(call& c);

// The pages' authentication policies (page_public, page_session, page_fragment, page_admin):
// nullopt when the handler may answer, else the answer (a redirect to /login, a 401 fragment, a
// 403 page: cross-site post, no session, wrong CSRF token, not an administrator). Sets c.who and,
// for a form post, c.form.
net::awaitable<std::optional<response>> admit_page_caller(call& c, const route_entry& e);
// A page's 405 (HTML, with Allow).
response page_method_not_allowed(std::string_view allow, const std::string& method);

}  // namespace descprod::gateway::detail
