// Private to gateway/: what the presenters (jobs_api.cpp, accounts_api.cpp, pages.cpp,
// event_streams.cpp) share, and the route table's handlers (routes.cpp). Not for other
// components.
//
// Thread-safety: as handler.hpp (one io_context thread).
#pragma once

#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <exception>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/keys.hpp"
#include "gateway/handler.hpp"
#include "gateway/router.hpp"
#include "gateway/web.hpp"

namespace descprod::gateway::detail {

// Runs fn on `pool` (inline when null) and completes on the caller's executor; an exception
// thrown by fn is rethrown to the awaiting coroutine.
template <class T, class Token>
auto async_offload(net::thread_pool* pool, std::function<T()> fn, Token&& token) {
  return net::async_initiate<Token, void(std::exception_ptr, T)>(
      [pool](auto handler, std::function<T()> f) {
        auto ex = net::get_associated_executor(handler);
        auto guard = net::make_work_guard(ex);
        auto work = [f = std::move(f), handler = std::move(handler), ex, guard = std::move(guard)]() mutable {
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
        if (pool) net::post(*pool, std::move(work));
        else work();
      },
      token, std::move(fn));
}

double now_s(const gateway_context& ctx);
// The Redis keys of this gateway's prefix (core/keys.hpp).
inline const keys& keys_of(const gateway_context& ctx) { return ctx.jobs->redis_keys(); }
response no_content_response();
// A route handler's plain answer (no stream): a response, a JSON body, an error's JSON.
handler_result answer(response res);
handler_result json_answer(http::status status, const boost::json::value& body);
handler_result error_answer(const api_error& e);

struct auth_result {
  std::optional<principal> who;
  api_error error;
};
// Who is calling: the bearer token of `authorization`, or else the web session of the `cookie`
// header (its expiry pushed out: sliding). Errors are 401.
net::awaitable<auth_result> authenticate(gateway_context& ctx, std::string authorization, std::string cookie);

// POST /api/jobs's 201 answer built from what the create script wrote (the request, the owner and
// the script's time as stored): the same JSON as job_to_json of the new job hash.
response created_job_response(job_id id, const job_request& req, const std::string& owner,
                              const std::string& create_time, const std::string& session = {});

// GET /api/jobs/<id>/events?follow=1 (event_streams.cpp; jobs_events hands it over).
net::awaitable<handler_result> open_job_stream(call& c);

// ---- accounts_api.cpp: the account form input, shared with the login pages ------------------

// A urlencoded form body (`curl -d '{...}'` labels JSON as a form; such a body is read as JSON).
bool is_form(const request& req);
// The fields of a register/login request: a JSON object of strings, or a form whose `csrf`
// matches the descprod_csrf cookie; a field not in `allowed` is an error.
struct account_input {
  std::map<std::string, std::string> fields;
  std::optional<api_error> error;
  bool form = false;
};
account_input read_account_input(const request& req, const std::vector<std::string>& allowed);
// Set-Cookie values that open and end a web session.
std::string session_cookie_header(const gateway_context& ctx, const std::string& token);
std::string clear_session_cookie(const gateway_context& ctx);

// ---- metrics_handler.cpp --------------------------------------------------------------------

// GET /metrics: the service's state read from Redis (one pipeline), this gateway's own state and
// its request metrics, as Prometheus text. Redis being down is not an error: the answer is still
// 200, with descprod_redis_up 0 and only what the gateway knows by itself.
net::awaitable<response> metrics_response(gateway_context& ctx);

// ---- the route table's handlers (routes.cpp) --------------------------------------------------

// handler.cpp: health, readiness, metrics, version; jobs_api.cpp: the job routes;
// event_streams.cpp: the event streams.
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
net::awaitable<handler_result> jobs_resubmit(call& c);
net::awaitable<handler_result> jobs_actions(call& c);
net::awaitable<handler_result> jobs_archive(call& c);
net::awaitable<handler_result> jobs_unarchive(call& c);
net::awaitable<handler_result> jobs_release(call& c);
net::awaitable<handler_result> jobs_claim(call& c);
net::awaitable<handler_result> jobs_started(call& c);
net::awaitable<handler_result> jobs_progress(call& c);
net::awaitable<handler_result> jobs_finished(call& c);
// DESCprod's JSON routes (legacy_api.cpp): POST /get_job, /update_job, /add_child_job.
net::awaitable<handler_result> legacy_get_job(call& c);
net::awaitable<handler_result> legacy_update_job(call& c);
net::awaitable<handler_result> legacy_add_child_job(call& c);

// accounts_api.cpp: accounts, tokens, admin (JSON); pages.cpp: the pages (HTML).
net::awaitable<handler_result> account_register(call& c);
net::awaitable<handler_result> account_login(call& c);
net::awaitable<handler_result> account_logout(call& c);
net::awaitable<handler_result> account_session(call& c);
net::awaitable<handler_result> account_preferences(call& c);
net::awaitable<handler_result> page_preferences(call& c);
net::awaitable<handler_result> tokens_list(call& c);
net::awaitable<handler_result> tokens_create(call& c);
net::awaitable<handler_result> tokens_revoke(call& c);
net::awaitable<handler_result> admin_users(call& c);
net::awaitable<handler_result> admin_user_change(call& c);
net::awaitable<handler_result> admin_overview(call& c);
// status_api.cpp: the service's figures of the last hour.
net::awaitable<handler_result> status_get(call& c);
net::awaitable<handler_result> sites_get(call& c);
net::awaitable<handler_result> page_home(call& c);
net::awaitable<handler_result> page_login_form(call& c);
net::awaitable<handler_result> page_login_post(call& c);
net::awaitable<handler_result> page_register_form(call& c);
net::awaitable<handler_result> page_register_post(call& c);
net::awaitable<handler_result> page_logout(call& c);
// OpenID Connect login (oidc.hpp): to the provider, and back.
net::awaitable<handler_result> page_oidc_login(call& c);
net::awaitable<handler_result> page_oidc_callback(call& c);
net::awaitable<handler_result> page_job_create(call& c);
net::awaitable<handler_result> page_job(call& c);
net::awaitable<handler_result> page_job_row(call& c);
net::awaitable<handler_result> page_job_rows(call& c);
net::awaitable<handler_result> page_job_fields(call& c);
net::awaitable<handler_result> page_job_action(call& c);
net::awaitable<handler_result> page_jobs_actions(call& c);
net::awaitable<handler_result> page_admin(call& c);
net::awaitable<handler_result> page_admin_action(call& c);
net::awaitable<handler_result> page_tokens(call& c);
net::awaitable<handler_result> page_token_create(call& c);
net::awaitable<handler_result> page_token_revoke(call& c);
net::awaitable<handler_result> page_help(call& c);
net::awaitable<handler_result> page_status(call& c);
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
