// The route table (router.hpp): every API route and every page, one entry each. Adding a route is
// adding a line here and writing its handler (declared in handler_detail.hpp).
//
// Placeholders: {id} a job ID (1–18 digits, positive), {sha} a token's sha256 (64 lowercase hex),
// {user} a valid user name, {provider} a gateway.oidc provider's name (1-32 of a-z 0-9 _ -),
// {account_action} approve|reject|disable|enable|make-admin|remove-admin, {job_action}
// cancel|release|archive|unarchive|delete|resubmit, {asset} a file of /static.
//
// Order matters only for speed: the first entry whose pattern and method fit wins, and no two
// entries share a method and a path; the single-job submit comes first.
#include "gateway/handler_detail.hpp"
#include "gateway/router.hpp"

namespace descprod::gateway {

namespace {

using namespace detail;
using ap = auth_policy;
using js = job_scope;
using rk = route_kind;
using pk = web::page_kind;
constexpr std::uint8_t get = m_get, post = m_post, del = m_delete;

// clang-format off
const route_entry table[] = {
  // methods  pattern                          auth             job token        metrics        handler
  {post, "/api/jobs",                         ap::user,  js::children,        "api_jobs",    jobs_create,     rk::jobs},
  {get,  "/api/jobs",                         ap::user,  js::owner_read,      "api_jobs",    jobs_list,       rk::jobs},
  {post, "/api/jobs/bulk",                    ap::user,  js::children,        "api_bulk",    jobs_create_bulk, rk::jobs_bulk},
  {post, "/api/jobs/actions",                 ap::user,  js::refused,         "api_bulk",    jobs_actions,    rk::jobs_actions},
  {get,  "/api/jobs/{id}",                    ap::user,  js::owner_read,      "api_job",     jobs_get,        rk::job},
  {del,  "/api/jobs/{id}",                    ap::user,  js::own_job_refused, "api_job",     jobs_delete,     rk::job},
  {get,  "/api/jobs/{id}/events",             ap::user,  js::owner_read,      "api_job",     jobs_events,     rk::job_events},
  {get,  "/api/jobs/{id}/log",                ap::user,  js::owner_read,      "api_job",     jobs_log,        rk::job_log},
  {post, "/api/jobs/{id}/cancel",             ap::user,  js::own_job_refused, "api_job",     jobs_cancel,     rk::job_cancel},
  {post, "/api/jobs/{id}/resubmit",          ap::user,  js::own_job_refused, "api_job",     jobs_resubmit,   rk::job_resubmit},
  {post, "/api/jobs/{id}/archive",            ap::user,  js::own_job_refused, "api_job",     jobs_archive,    rk::job_archive},
  {post, "/api/jobs/{id}/unarchive",          ap::user,  js::own_job_refused, "api_job",     jobs_unarchive,  rk::job_unarchive},
  {post, "/api/jobs/{id}/release",            ap::user,  js::own_job_refused, "api_job",     jobs_release,    rk::job_release},
  {post, "/api/jobs/{id}/claim",              ap::user,  js::child_claim,     "api_job",     jobs_claim,      rk::job_claim},
  {post, "/api/jobs/{id}/started",            ap::user,  js::own_job,         "api_job",     jobs_started,    rk::job_started},
  {post, "/api/jobs/{id}/progress",           ap::user,  js::own_job,         "api_job",     jobs_progress,   rk::job_progress},
  {post, "/api/jobs/{id}/finished",           ap::user,  js::own_job,         "api_job",     jobs_finished,   rk::job_finished},
  {get,  "/api/events",                       ap::user,  js::refused,         "events",      events_stream,   rk::events},
  {get,  "/api/version",                      ap::user,  js::any,             "api_other",   version_get,     rk::version},
  {get,  "/healthz",                          ap::none,  js::refused,         "health",      healthz_get,     rk::healthz},
  {get,  "/readyz",                           ap::none,  js::refused,         "health",      readyz_get,      rk::readyz},
  {get,  "/metrics",                          ap::none,  js::refused,         "metrics",     metrics_get,     rk::metrics},
  {post, "/api/register",                     ap::account, js::refused,       "api_account", account_register, rk::register_},
  {post, "/api/login",                        ap::account, js::refused,       "api_account", account_login,   rk::login},
  {post, "/api/logout",                       ap::account, js::refused,       "api_account", account_logout,  rk::logout},
  {get,  "/api/session",                      ap::user,  js::refused,         "api_account", account_session, rk::session, pk::none, true},
  {post, "/api/session/preferences",          ap::user,  js::refused,         "api_account", account_preferences, rk::preferences},
  {get,  "/api/tokens",                       ap::user,  js::refused,         "api_account", tokens_list,     rk::tokens, pk::none, true},
  {post, "/api/tokens",                       ap::user,  js::refused,         "api_account", tokens_create,   rk::tokens, pk::none, true},
  {del,  "/api/tokens/{sha}",                 ap::user,  js::refused,         "api_account", tokens_revoke,   rk::token, pk::none, true},
  {get,  "/api/admin/users",                  ap::admin, js::refused,         "api_admin",   admin_users,     rk::admin_users, pk::none, true},
  {post, "/api/admin/users/{user}/{account_action}", ap::admin, js::refused, "api_admin",   admin_user_change, rk::admin_user, pk::none, true},
  {get,  "/api/admin/overview",               ap::admin, js::refused,         "api_admin",   admin_overview,  rk::admin_overview, pk::none, true},
  {get,  "/api/status",                       ap::user,  js::refused,         "api_other",   status_get,      rk::status},
  {get,  "/api/sites",                        ap::user,  js::refused,         "api_other",   sites_get,       rk::sites},
  // DESCprod's JSON routes (legacy_api.cpp); the job ID is in the body, so a job token's scope
  // is checked there.
  {post, "/get_job",                          ap::user,  js::owner_read,      "api_legacy",  legacy_get_job,  rk::legacy_get_job},
  {post, "/update_job",                       ap::user,  js::any,             "api_legacy",  legacy_update_job, rk::legacy_update_job},
  {post, "/add_child_job",                    ap::user,  js::children,        "api_legacy",  legacy_add_child_job, rk::legacy_add_child_job},
  // Pages (HTML; a HEAD is answered as the GET).
  {get,  "/",                                 ap::page_session,  js::refused, "pages",  page_home,         rk::not_found, pk::home},
  {get,  "/home",                             ap::page_session,  js::refused, "pages",  page_home,         rk::not_found, pk::home},
  {get,  "/login",                            ap::page_public,   js::refused, "pages",  page_login_form,   rk::not_found, pk::login},
  {post, "/login",                            ap::page_public,   js::refused, "pages",  page_login_post,   rk::not_found, pk::login},
  {get,  "/login/oidc/callback",              ap::page_public,   js::refused, "pages",  page_oidc_callback, rk::not_found, pk::oidc_callback},
  {get,  "/login/oidc",                       ap::page_public,   js::refused, "pages",  page_oidc_login,   rk::not_found, pk::oidc_login},
  {get,  "/login/oidc/{provider}",            ap::page_public,   js::refused, "pages",  page_oidc_login,   rk::not_found, pk::oidc_login},
  {get,  "/register",                         ap::page_public,   js::refused, "pages",  page_register_form, rk::not_found, pk::register_},
  {post, "/register",                         ap::page_public,   js::refused, "pages",  page_register_post, rk::not_found, pk::register_},
  {post, "/logout",                           ap::page_public,   js::refused, "pages",  page_logout,       rk::not_found, pk::logout},
  {post, "/jobs",                             ap::page_session,  js::refused, "pages",  page_job_create,   rk::not_found, pk::job_create},
  {get,  "/jobs/rows",                        ap::page_fragment, js::refused, "pages",  page_job_rows,     rk::not_found, pk::job_rows},
  {get,  "/jobs/{id}",                        ap::page_session,  js::refused, "pages",  page_job,          rk::not_found, pk::job},
  {get,  "/jobs/{id}/row",                    ap::page_fragment, js::refused, "pages",  page_job_row,      rk::not_found, pk::job_row},
  {get,  "/jobs/{id}/fields",                 ap::page_fragment, js::refused, "pages",  page_job_fields,   rk::not_found, pk::job_fields},
  {post, "/jobs/actions",                     ap::page_session,  js::refused, "pages",  page_jobs_actions, rk::not_found, pk::job_action},
  {post, "/jobs/{id}/{job_action}",           ap::page_session,  js::refused, "pages",  page_job_action,   rk::not_found, pk::job_action},
  {get,  "/admin",                            ap::page_admin,    js::refused, "pages",  page_admin,        rk::not_found, pk::admin},
  {post, "/admin/users/{user}/{account_action}", ap::page_session, js::refused, "pages", page_admin_action, rk::not_found, pk::admin_action},
  {get,  "/tokens",                           ap::page_session,  js::refused, "pages",  page_tokens,       rk::not_found, pk::tokens},
  {post, "/tokens",                           ap::page_session,  js::refused, "pages",  page_token_create, rk::not_found, pk::tokens},
  {post, "/tokens/{sha}/revoke",              ap::page_session,  js::refused, "pages",  page_token_revoke, rk::not_found, pk::token_revoke},
  {post, "/tokens/preferences",               ap::page_session,  js::refused, "pages",  page_preferences,  rk::not_found, pk::preferences},
  {get,  "/help",                             ap::page_public,   js::refused, "pages",  page_help,         rk::not_found, pk::help},
  {get,  "/status",                           ap::page_session,  js::refused, "pages",  page_status,       rk::not_found, pk::status},
  {get,  "/static/{asset}",                   ap::page_static,   js::refused, "static", page_asset,        rk::not_found, pk::asset},
  {get,  "/favicon.ico",                      ap::page_static,   js::refused, "static", page_favicon,      rk::not_found, pk::favicon},
};
// clang-format on

}  // namespace

std::span<const route_entry> route_table() { return table; }

}  // namespace descprod::gateway
