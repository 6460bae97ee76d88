// The web pages' pure parts (docs/web.md, issue 4): page routing, form and cookie parsing, the
// session cookie, CSRF comparison and the HTML of every page. Nothing here does I/O; the page
// handlers (pages.cpp) fetch the data and call these. Every dynamic value goes through
// html_escape (or attr) exactly once, here; callers pass raw values.
//
// The pages use no inline script or style (the Content-Security-Policy forbids both): behaviour
// lives in /static/app.js, which reads data-* attributes and the csrf-token meta tag.
//
// Thread-safety: all functions are pure.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/accounts.hpp"
#include "core/config.hpp"
#include "core/job.hpp"
#include "gateway/api.hpp"

namespace descprod::gateway::web {

// ---- routing --------------------------------------------------------------------------------

enum class page_kind {
  none,
  home,           // GET /
  login,          // GET, POST /login
  register_,      // GET, POST /register
  logout,         // POST /logout
  oidc_login,     // GET /login/oidc[/<provider>]  (to the OpenID Connect provider)
  oidc_callback,  // GET /login/oidc/callback      (back from it)
  job,            // GET /jobs/<id>
  job_row,        // GET /jobs/<id>/row      (the job's table row, for live updates)
  job_rows,       // GET /jobs/rows?ids=...  (several jobs' rows at once, as JSON)
  job_fields,     // GET /jobs/<id>/fields   (the job page's field table, for live updates)
  job_create,     // POST /jobs
  job_action,     // POST /jobs/<id>/{cancel,release,archive,unarchive,resubmit,delete}
  admin,          // GET /admin
  admin_action,   // POST /admin/users/<name>/<action>
  tokens,         // GET, POST /tokens (POST creates one)
  token_revoke,   // POST /tokens/<sha256>/revoke
  preferences,    // POST /tokens/preferences (e-mail on failure)
  help,           // GET /help
  status,         // GET /status (the plots of the last hour; /api/status)
  asset,          // GET /static/app.css, /static/app.js
  favicon         // GET /favicon.ico (204)
};

struct page_route {
  page_kind kind = page_kind::none;
  job_id id = 0;
  std::string name;    // admin_action: the user; token_revoke: the token id; asset: the file
  std::string action;  // job_action / admin_action
};

page_route match_page(std::string_view path);
std::string_view page_methods(page_kind k);  // "GET", "POST" or "GET, POST"
bool page_method_allowed(page_kind k, std::string_view method);
// Pages answered without a session (the rest redirect to /login).
bool page_is_public(page_kind k);

// ---- forms, cookies, CSRF -------------------------------------------------------------------

// application/x-www-form-urlencoded → name → value (the last of repeated names wins); nullopt
// on a malformed %-escape.
std::optional<std::map<std::string, std::string>> parse_form(std::string_view body);
// The value of cookie `name` in a Cookie header ("" when absent).
std::string cookie_value(std::string_view cookie_header, std::string_view name);

inline constexpr std::string_view session_cookie = "descprod_session";
// The pre-login CSRF cookie of the login and register forms (double submit).
inline constexpr std::string_view login_csrf_cookie = "descprod_csrf";
// Max-Age of the login CSRF cookie (s).
inline constexpr int login_csrf_max_age_s = 3600;

// "<name>=<value>; Path=/; HttpOnly; SameSite=Strict" (+ "; Secure"), with "; Max-Age=<n>"
// when max_age_s >= 0 (0 deletes the cookie).
std::string set_cookie(std::string_view name, std::string_view value, bool secure, int max_age_s = -1);
// Constant-time comparison of two tokens; false when either is empty.
bool tokens_equal(std::string_view a, std::string_view b);

// Whether a request's Origin header is acceptable for a state-changing request: absent, or the
// same host[:port] as the Host header. "null" and other hosts are refused.
bool origin_allowed(std::string_view origin, std::string_view host);

// A redirect target from a form's `next` field: a local path ("/..." but not "//..." or
// "/\\..."), else `fallback`.
std::string safe_next(std::string_view next, std::string_view fallback);

// ---- formatting -----------------------------------------------------------------------------

// & < > " ' escaped; invalid UTF-8 replaced.
std::string html_escape(std::string_view s);
// Epoch seconds (text) as "YYYY-MM-DD HH:MM:SS" UTC; "" when empty or unreadable.
std::string format_time(std::string_view epoch_s);
// Epoch seconds (text) as <time datetime="YYYY-MM-DDTHH:MM:SSZ">YYYY-MM-DD HH:MM:SS UTC</time>;
// "" when empty or unreadable. app.js rewrites the text to the viewer's time zone and puts the UTC
// text in its title.
std::string time_html(std::string_view epoch_s);
// Seconds as "H:MM:SS" (an hour or more) or "M:SS".
std::string format_duration(double seconds);
// A job's duration: (stop_time, or now_s while it runs) − start_time; "" before it started.
std::string job_duration(const job_record& job, double now_s);

// ---- pages ----------------------------------------------------------------------------------

// The signed-in user as a page shows them.
struct page_user {
  std::string name;
  bool admin = false;
  std::string csrf;
};

// A one-shot message shown at the top of a page. With `link` (a local path) the first
// occurrence of `link_text` in the text becomes a link to it ("Submitted job 12 (mysleep 5)."
// links "Submitted job 12" to /jobs/12); when `link_text` is not in the text, the link follows it.
struct flash {
  std::string text;
  bool error = false;
  std::string link;
  std::string link_text;
};

// The shared frame: head (CSP-friendly: theme.js, app.css, app.js), a skip link to <main id=main>,
// navigation for `user` (none when null) with the theme toggle, the flash and `body`. `page` goes
// to <body data-page> for app.js.
std::string layout(std::string_view title, std::string_view page, const page_user* user, const flash& f,
                   std::string_view body, std::string_view body_attrs = "");

// A login button of an OpenID Connect provider (gateway.oidc): a link to /login/oidc/<name>.
struct login_button {
  std::string name, label;
};
std::string login_page(std::string_view csrf, const flash& f, std::string_view username,
                       const std::vector<login_button>& providers = {});
std::string register_page(std::string_view csrf, const flash& f, std::string_view username,
                          std::string_view email);

// What the create form starts with ("copy" fills it from a job: application, config, howfig and
// priority; Hold and After start empty). After a refused submission, what was sent.
struct job_form {
  std::string jobtype, config, howfig;
  int priority = 0;
  bool hold = false;  // "Hold": the job waits for a release (or descprod-start-job)
  std::string after;  // "After": job IDs, comma-separated, as typed
};

// The job IDs of the form's "After" field: separated by commas and/or spaces ("12, 15" or
// "12 15"); an empty field is no IDs. nullopt, with `error` set (a sentence that names the bad
// item), when an item is not a job ID.
std::optional<std::vector<job_id>> parse_after_field(std::string_view text, std::string& error);

struct home_view {
  page_user user;
  flash message;
  const app_registry* apps = nullptr;
  job_form form;
  std::vector<job_record> jobs;  // this page of the table
  long long total = 0;           // jobs matching the filter
  bool all = false;              // "all" view (else active: not archived)
  std::string state;             // state filter ("" = any)
  std::string jobtype;           // type filter ("" = any)
  std::string text;              // search text (q: config, howfig, progress; "" = none)
  std::string sort;              // "-id" (default, also ""), "state", "-duration", ... (GET /api/jobs)
  std::string owner;             // an admin's view of others: a user's name or "*" ("" = one's own)
  job_id array = 0;              // the jobs of this array only (?array=ID, its first job's ID; 0 = any)
  int page = 1;                  // 1-based
  int per_page = 50;
  double now_s = 0;
  std::string since;  // the event stream's last id when the data was read (live updates resume there)
  // The last job ID handed out when `since` was read (with it, atomically): app.js takes an event of
  // a higher ID, seen for the first time, as a new job (whatever its first state: ready, waiting,
  // held, ...). "" when unknown (the script then takes a first transition to ready).
  std::string max_id;
};
std::string home_page(const home_view& v);
// The message after an action on many jobs: "Archived 3 jobs.", and what failed (the first reason).
std::string actions_message(const std::string& action, std::size_t done, const std::string& first_failure,
                            std::size_t failed, bool truncated);

// One row of the job table. `next` is where its action forms return to.
std::string job_row(const job_record& job, const page_user& user, double now_s, std::string_view next);

// A search of the job's whole log (the job page's ?logq=), as the page shows it.
struct log_search_view {
  std::string q;
  std::vector<std::pair<long long, std::string>> matches;  // line number, line (at most a page)
  long long total_matches = 0;
  long long lines_searched = 0;
  bool truncated = false;
  std::string error;  // why it did not run (too long, too many searches running)
};

// A job next to the page's job in the dependency graph (jobs_service::graph_neighbour): its ID,
// the edge's kind ("after" or "after_any") and its state ("" when it was deleted).
struct graph_node {
  job_id id = 0;
  std::string kind;
  std::string state;
};

struct job_view {
  page_user user;
  flash message;
  job_record job;
  std::vector<stream_event> events;    // oldest first
  std::vector<std::string> log_lines;  // oldest first
  bool log_capped = false;             // the stored log stops at its cap
  std::optional<log_search_view> log_search;
  std::vector<job_record> children;  // newest first, at most a page
  long long children_total = 0;
  int children_limit = 100;                 // the most children the page shows (newest first)
  std::map<std::string, long long> rollup;  // state → count (children_json's counts)
  // The dependency graph around the job: the jobs it waits for (its after and after_any, at most
  // a page of them; the job's own fields count them all) and the jobs that wait for it (at most a
  // page; dependents_total counts them all). The page shows the section only when there are any.
  std::vector<graph_node> dependencies;
  std::vector<graph_node> dependents;
  long long dependents_total = 0;
  // The first job of an array (its ID is the array's): how many jobs the array has (0: the job is
  // not an array's first job, no section) and how they stand, state → count (children_json's).
  long long array_jobs = 0;
  std::map<std::string, long long> array_rollup;
  // A job of an array (its "array" field) whose first job was deleted: the page names the array
  // without a link to a page that would answer 404.
  bool array_gone = false;
  double now_s = 0;
  std::string since;   // as home_view::since
  std::string max_id;  // as home_view::max_id
};
std::string job_page(const job_view& v);
// The job page's "Dependencies" section (empty when the job has neither dependencies nor
// dependents): dependencies on the left, the job in the middle, dependents on the right, each a
// link with its state badge and the edge's kind, joined by lines (CSS); lists underneath for
// keyboards and screen readers.
std::string dependency_graph(const job_view& v);
// The job page's "Array" section (empty unless v.array_jobs > 0): the array's total and its jobs
// per state, and a link to the jobs table filtered to the array (/?view=all&array=ID).
std::string array_section(const job_view& v);
// The job page's live part (id="jobdetail"): actions (Release for a held job), state and progress,
// the field table.
std::string job_detail(const job_record& job, const page_user& user, double now_s);

struct admin_view {
  page_user user;
  flash message;
  std::vector<job_record> users;    // each with "name", "role", "status", "email", "created"
  std::vector<job_record> workers;  // each worker hash (id, host, owner, pool, site, slots,
                                    // running, last_heartbeat)
  std::vector<job_record> pilots;   // each live pilot hash (id, state, slurm_state, reason,
                                    // submitted_time, started_time, nodes, slots,
                                    // walltime_minutes, workers, connected, output)
  long long queue_depth = 0;
  long long finished_last_minute = 0;
  long long events_last_minute = 0;
  double now_s = 0;
};
std::string admin_page(const admin_view& v);

// The status plots (status_page.cpp): the panel (a card headed `heading`, filled by
// /static/status.js from GET /api/status), shown on /status and /admin; the /status page; the
// script.
std::string status_panel(std::string_view heading);
std::string status_page(const page_user& user);
std::string_view status_js();

struct tokens_view {
  page_user user;
  flash message;
  std::vector<job_record> tokens;  // each with "id" (sha256), "label", "created", "expires"
  std::string new_token;           // shown once, right after creation
  std::string new_label;
  std::string form_nonce;  // the create form's one-time key: a reloaded POST creates nothing
  std::string email;       // the account's e-mail address and its e-mail-on-failure preference
  bool email_on_failure = false;
  user_quota quota;  // the account's quota (descprod-admin quota), shown to its user
};
std::string tokens_page(const tokens_view& v);

std::string help_page(const page_user* user, const app_registry& apps);

// An error page (404, 403, ...) in the frame.
std::string error_page(unsigned status, std::string_view detail, const page_user* user);

// ---- static assets --------------------------------------------------------------------------

// The text of /static/<name> ("app.css", "app.js", "theme.js", "status.js": status_js()) and its
// Content-Type; nullopt when unknown. theme.js is the one script loaded without defer, in <head>:
// it applies the theme stored in localStorage before the body is painted (no flash of the other
// theme).
struct asset {
  std::string_view body;
  std::string_view content_type;
};
std::optional<asset> find_asset(std::string_view name);

// The Content-Security-Policy of every page.
inline constexpr std::string_view content_security_policy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

}  // namespace descprod::gateway::web
