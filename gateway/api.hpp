// The gateway's pure request logic: routing, query and body validation, token checks and the JSON
// shapes of answers. Nothing here does I/O, so unit tests call it directly; handler.cpp glues it
// to Redis, the daemon link and Beast.
//
// Thread-safety: all functions are pure or read only their arguments.
#pragma once

#include <boost/json.hpp>
#include <charconv>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.hpp"
#include "core/job.hpp"
#include "core/redis.hpp"
#include "gateway/errors.hpp"

namespace descprod::gateway {

// Longest accepted config/howfig (bytes) and jobtype; docs/security.md asks for length limits.
inline constexpr std::size_t max_config_bytes = 512;
inline constexpr std::size_t max_jobtype_bytes = 64;
// Paging of GET /api/jobs.
inline constexpr int default_list_limit = 50;
inline constexpr int max_list_limit = 1000;
inline constexpr long long max_list_offset = 1'000'000'000'000;
// With a filter or a sort other than by ID, GET /api/jobs looks at this many of the newest jobs only.
inline constexpr std::size_t filter_scan_window = 200000;
// Jobs per store::async_create call in a bulk submit; each call is one atomic script.
inline constexpr std::size_t bulk_chunk_jobs = 1000;
// Scans of GET /api/jobs at once: by one user, and in the whole gateway (more: 429, Retry-After 1).
inline constexpr int max_scans_per_user = 2;
inline constexpr int max_scans = 8;
// POST /api/jobs/actions: at most this many IDs in a request, and jobs selected by a query.
inline constexpr std::size_t max_action_ids = 1000;
inline constexpr std::size_t max_action_jobs = 10000;
// Events returned by GET /api/jobs/<id>/events (the stream is capped near 1000 by the store).
inline constexpr std::size_t max_events = 2000;
// GET /api/jobs/<id>/log: lines returned by default and at most (of the tail); a search's matches
// listed at most; its text at most; bytes one request reads at most (above any job_log_max_bytes
// in use: past it the answer says "truncated").
inline constexpr int default_log_lines = 100;
inline constexpr int max_log_lines = 10000;
inline constexpr std::size_t max_log_matches = 1000;
inline constexpr std::size_t max_log_search_bytes = 200;
inline constexpr std::size_t max_log_read_bytes = 64 * 1024 * 1024;
// Children looked at for a parent's roll-up and for GET /api/jobs?parent=<id>.
inline constexpr std::size_t max_children = 100000;
// Entries of the global event stream replayed after a Last-Event-ID on GET /api/events.
inline constexpr std::size_t max_replay_events = 10000;
// A claim's lease lasts 10 years (s): the daemon never expires it; the claiming client reports.
inline constexpr double claim_lease_s = 10.0 * 365 * 24 * 3600;
// Lifetime of the job token a claim issues (s): 7 days.
inline constexpr long long claim_token_ttl_s = 7LL * 24 * 3600;
// The worker name a claim records: claim_worker_prefix + host.
inline constexpr std::string_view claim_worker_prefix = "cli:";
// Longest accepted claim host (an FQDN) and run directory; reported messages are cut to
// max_message_bytes (as the daemon does for workers).
inline constexpr std::size_t max_host_bytes = 255;
inline constexpr std::size_t max_rundir_bytes = 4096;
inline constexpr std::size_t max_message_bytes = 1000;

// ---- routing --------------------------------------------------------------------------------

enum class route_kind {
  healthz,               // GET /healthz (no auth)
  readyz,                // GET /readyz (no auth)
  version,               // GET /api/version
  events,                // GET /api/events (Server-Sent Events)
  jobs,                  // GET, POST /api/jobs
  jobs_bulk,             // POST /api/jobs/bulk
  job,                   // GET, DELETE /api/jobs/<id>
  job_events,            // GET /api/jobs/<id>/events[?follow=1]
  job_log,               // GET /api/jobs/<id>/log
  job_cancel,            // POST /api/jobs/<id>/cancel
  jobs_actions,          // POST /api/jobs/actions (one action on many jobs)
  job_resubmit,          // POST /api/jobs/<id>/resubmit
  job_archive,           // POST /api/jobs/<id>/archive
  job_unarchive,         // POST /api/jobs/<id>/unarchive
  job_release,           // POST /api/jobs/<id>/release (a held job to the workers)
  job_claim,             // POST /api/jobs/<id>/claim
  job_started,           // POST /api/jobs/<id>/started
  job_progress,          // POST /api/jobs/<id>/progress
  job_finished,          // POST /api/jobs/<id>/finished
  register_,             // POST /api/register (no auth)
  login,                 // POST /api/login (no auth)
  logout,                // POST /api/logout (ends the cookie's session, if any)
  session,               // GET /api/session (who is calling; the CSRF token of a cookie session)
  preferences,           // POST /api/session/preferences (e-mail on failure)
  tokens,                // GET, POST /api/tokens
  token,                 // DELETE /api/tokens/<sha256>
  admin_users,           // GET /api/admin/users
  admin_user,            // POST /api/admin/users/<name>/<action>
  admin_overview,        // GET /api/admin/overview (workers, pilots, queue depth, throughput)
  status,                // GET /api/status (the daemon's samples of the last hour; aggregate numbers)
  sites,                 // GET /api/sites (the sites' status, as the daemon last polled it)
  metrics,               // GET /metrics (Prometheus text; no auth, aggregate numbers only)
  legacy_get_job,        // POST /get_job (DESCprod's route)
  legacy_update_job,     // POST /update_job (DESCprod's wrapper updates)
  legacy_add_child_job,  // POST /add_child_job (DESCprod's descprod-add-job)
  not_found
};

struct route {
  route_kind kind = route_kind::not_found;
  job_id id = 0;       // the routes under /api/jobs/<id>
  std::string name;    // admin_user: the user name; token: the token's sha256
  std::string action;  // admin_user: approve, reject, disable, enable, make-admin, remove-admin
};

// A job ID in a path or a query: 1–18 decimal digits, positive; nullopt otherwise.
std::optional<job_id> parse_job_id_text(std::string_view s);
// Matches a path (without query). A job id is 1–18 decimal digits and positive; anything else in
// its place (e.g. "/api/jobs/abc") is not_found.
route match_route(std::string_view path);
// The methods a route accepts, as an Allow header value ("GET", "POST", "GET, POST").
std::string_view allowed_methods(route_kind k);
bool method_allowed(route_kind k, std::string_view method);
// Whether `method` is one of a comma-separated list such as "GET, POST" (an Allow header value).
bool method_in_list(std::string_view allowed, std::string_view method);
// Routes answered without a token.
bool is_public(route_kind k);

struct target_parts {
  std::string path;
  std::string query;
};
target_parts split_target(std::string_view target);

// User input as an error detail quotes it: in single quotes, cut at 80 bytes on a character
// boundary, invalid UTF-8 replaced (an error answer never grows with the request and stays JSON).
std::string quoted(std::string_view s);

// Decodes %XX and '+' in a query component; nullopt when a %-escape is malformed.
std::optional<std::string> percent_decode(std::string_view s);
// An application/x-www-form-urlencoded text (a query string, a form body) as decoded (key,
// value) pairs in order; empty parts are skipped. bad_request naming the part when a %-escape
// is malformed. The one parser of the gateway: queries (split_query) and forms (web::parse_form).
using urlencoded_pairs = std::vector<std::pair<std::string, std::string>>;
result<urlencoded_pairs> parse_urlencoded(std::string_view text);

// GET /api/jobs query (docs/api.md#get-apijobs--find-jobs): limit (1..1000, default 50), offset
// (0..1e12), cursor (a previous answer's "next"), state, jobtype, archived (0|1), parent (a job id:
// that job's children), owner (an admin: a user's name or "*" for everyone), q (text in config,
// howfig or progress), {created,started,ended}_{after,before} (epoch seconds or
// YYYY-MM-DDTHH:MM:SSZ), sort (id|created|started|duration|state, "-" first for descending;
// default -id).
enum class list_sort { id, created, started, duration, state };
struct time_range {
  std::optional<double> after;   // inclusive
  std::optional<double> before;  // exclusive
  bool active() const { return after.has_value() || before.has_value(); }
};
// Where a page starts: after the job with this sort value (none: the job has no value) and ID.
struct list_cursor {
  std::optional<double> value;
  job_id id = 0;
};
struct list_query {
  int limit = default_list_limit;
  long long offset = 0;
  std::optional<job_state> state;
  std::string jobtype;
  std::optional<bool> archived;
  std::optional<job_id> parent;
  std::optional<job_id> array;  // the jobs of the array with this ID (its first job's)
  std::string owner;            // "": the caller's own jobs; else a user's name or "*" (admins only)
  std::string text;             // q: a substring of config, howfig or progress (ASCII case ignored)
  time_range created, started, ended;
  list_sort sort = list_sort::id;
  bool descending = true;
  std::optional<list_cursor> cursor;
  bool filtered() const {
    return state.has_value() || !jobtype.empty() || archived.has_value() || !text.empty() ||
           created.active() || started.active() || ended.active();
  }
};
// The sort as the query spells it ("-id", "started", ...) and a cursor as text ("<sort>~<value>~<id>").
std::string sort_text(const list_query& q);
std::string cursor_text(const list_query& q, const list_cursor& c);
// Longest q accepted (bytes).
inline constexpr std::size_t max_text_query_bytes = 200;
// Unknown parameters are refused (400) so that a typo never silently lists everything.
std::optional<api_error> parse_list_query(std::string_view query, list_query& out);
// The actions on a job of POST /api/jobs/actions, of the page's selection form and of the page
// route /jobs/<id>/<action>: cancel, release, archive, unarchive, delete, resubmit.
bool is_job_action(std::string_view action);
// POST /api/jobs/actions body: {"action": cancel|archive|unarchive|delete|resubmit, "ids": [1..1000
// job IDs]} or {"action", "query": "<a GET /api/jobs query without paging>"}.
std::optional<api_error> parse_actions_body(const boost::json::value& v, std::string& action,
                                            std::vector<job_id>& ids, std::optional<list_query>& query);

// GET /api/jobs/<id>/log query: lines (1..10000 or `all`, default 100), q (search: lines that
// contain it, ASCII case-insensitive, 1..200 bytes; reads the whole log), format (json | text;
// text only without q).
struct log_query {
  int lines = default_log_lines;  // the last N lines, unless `all`
  bool all = false;
  std::string q;
  bool text = false;
  bool whole() const { return all || !q.empty(); }
};
std::optional<api_error> parse_log_query(std::string_view query, log_query& out);
// GET /api/jobs/<id>/events query: follow (1|0|true|false, default false).
std::optional<api_error> parse_job_events_query(std::string_view query, bool& follow);
// GET /api/events query: job (a job id, optional). `since` is refused by this form.
std::optional<api_error> parse_events_query(std::string_view query, std::optional<job_id>& job);
// Whether a request is answered with a Server-Sent Events stream: GET /api/events, or GET
// /api/jobs/<id>/events with follow=1 (a malformed query is not: it gets its 400 as JSON).
bool is_event_stream(const route& r, std::string_view method, std::string_view query);

// ---- request bodies -------------------------------------------------------------------------

// One job to create, validated against the application registry.
// A dependency named in a request: a job ID, or (bulk) "#k", the request's jobs[k].
struct dependency_ref {
  job_id id = 0;
  std::optional<std::size_t> entry;
  bool any = false;  // after_any
};
// Most dependencies (after + after_any) one job may name.
inline constexpr std::size_t max_dependencies = 10000;
// Most dependencies one request may name in all (every job's, an array's counted once per job).
inline constexpr std::size_t max_request_dependencies = 100000;
// An array's indexes: from..to (inclusive) by step; at most max_array_jobs of them.
struct array_range {
  long long from = 0, to = 0, step = 1;
  long long count() const { return (to - from) / step + 1; }
};
inline constexpr long long max_array_jobs = 100000;
// Most sites one job may name.
inline constexpr std::size_t max_job_sites = 16;

struct job_request {
  std::string jobtype;
  std::string config;
  std::string howfig;
  int priority = 0;
  std::optional<job_id> parent;
  int max_attempts = 3;                  // from the application
  bool hold = false;                     // asked for, or the application's dispatch: manual
  std::vector<dependency_ref> after;     // after, then after_any; each job once
  std::string sites;                     // the sites it may run at, sorted, comma-separated ("": any)
  std::optional<array_range> array;      // POST /api/jobs: a template, expanded by expand_array
  std::optional<long long> array_index;  // a job of an array (expanded)
};

// Parses a request body as JSON; malformed → 400 "bad_json" with the parser's reason and offset.
std::optional<api_error> parse_json_body(std::string_view body, boost::json::value& out);

// Validates one job object: jobtype (string, required, registered), config (string, required,
// check_config == 0, the app's pattern), howfig (string, optional, empty or valid and matching
// the app's howfig_pattern), priority (integer -1000..1000), parent (positive integer). Unknown
// fields are refused. Errors name the field.
// hold (boolean), after and after_any (arrays of job IDs; in a bulk request, also "#k" for the
// request's earlier jobs[k]: `entry` is the job's own index there, none outside a bulk).
std::optional<api_error> validate_job(const boost::json::value& v, const app_registry& apps, job_request& out,
                                      std::optional<std::size_t> entry = std::nullopt);

// The jobs of an array request: one per index, "{index}" in config and howfig replaced by the
// index, each then checked as validate_job checks a job (errors say "array index N: ...").
std::optional<api_error> expand_array(const job_request& tmpl, const app_registry& apps,
                                      std::vector<job_request>& out);

// Validates {"jobs": [ ... ]} with 1..max_jobs items; an invalid item's error starts "jobs[i]: ".
std::optional<api_error> validate_bulk(const boost::json::value& v, const app_registry& apps,
                                       std::size_t max_jobs, std::vector<job_request>& out);

// POST /api/jobs/<id>/claim: {"host": "<fqdn>"}; host 1..255 bytes of letters, digits, '.',
// '-', '_'.
std::optional<api_error> parse_claim_body(const boost::json::value& v, std::string& host);

// The reports of a claimed job's runner (descprod-start-job), with the job token.
struct started_report {
  long long attempt = 0;
  long long pid = 0;
  std::string host;  // empty: the claim's host
  std::string rundir;
};
struct progress_report {
  long long attempt = 0;
  std::string message;  // cut to max_message_bytes
  std::optional<long long> done, total;
};
struct finished_report {
  long long attempt = 0;
  int rc = 0;
  int signal = 0;
  bool timed_out = false;
  std::string message;  // cut to max_message_bytes
};
// {"attempt" (required, >= 1), "pid"?, "host"?, "rundir"?}
std::optional<api_error> parse_started_body(const boost::json::value& v, started_report& out);
// {"attempt", "message"?, "done"?, "total"?} — done and total go together.
std::optional<api_error> parse_progress_body(const boost::json::value& v, progress_report& out);
// {"attempt", "rc"?, "signal"?, "timed_out"?, "message"?}
std::optional<api_error> parse_finished_body(const boost::json::value& v, finished_report& out);

// ---- authentication -------------------------------------------------------------------------

// The token of an "Authorization: Bearer <token>" header (scheme case-insensitive); nullopt when
// absent or malformed.
std::optional<std::string> bearer_token(std::string_view authorization);

// Who is calling. A job token ("job:<id>" scope) acts as the job's owner for reading that job only.
// A web session (cookie) carries its CSRF token, which every state-changing request must echo.
struct principal {
  std::string name;
  bool admin = false;
  std::optional<job_id> only_job;
  // A job token whose job was cancelled (its token hash says read_only=1): it may read its job and
  // report how the run ended, nothing more (no children).
  bool read_only = false;
  bool by_session = false;
  std::string session_hash;  // sha256 of the session token (the Redis key's suffix)
  // DESCprod's session ID of the login or API token ("" for a job token, or a token made before
  // sessions were numbered): the jobs it creates get it (children get their parent's).
  std::string session_id;
  std::string token_hash;  // sha256 of the bearer token, when authenticated by one
  std::string csrf;
};

// Checks a token hash (fields owner, scope, expires; empty map = no such token) at time now_s
// (epoch seconds) and fills who.name / who.only_job. Errors are 401.
std::optional<api_error> check_token(const job_record& token, double now_s, principal& who);
// Checks the owner's account hash (status must be "active"); sets who.admin from role. Errors 401.
std::optional<api_error> check_user(const job_record& user, principal& who);
// Whether who may read job `id` owned by `owner` (admins read all).
bool may_read(const principal& who, job_id id, const std::string& owner);
// Whether who may change job `id` (cancel, archive, delete, claim): its owner or an admin, with a
// user token.
bool may_change(const principal& who, const std::string& owner);

// The job-token rules (docs/security.md#job-tokens). A token of scope job:<J> may GET job J, its events and log;
// POST /api/jobs and /api/jobs/bulk (each job with "parent": J, checked by check_children_only);
// the runner's reports (started, progress, finished) of job J; and GET /api/version. Another job's
// ID under /api/jobs/<id> is 404; anything else 403. nullopt for a user token.
std::optional<api_error> check_job_token_scope(const principal& who, const route& r, std::string_view method);
// With a job token, every job to create must name its job as parent; else 403.
std::optional<api_error> check_children_only(const principal& who, const std::vector<job_request>& jobs);

// ---- answers --------------------------------------------------------------------------------

// A HGETALL reply as a map; an empty map for nil or an empty array.
job_record record_from_reply(const redis_reply& r);
// The records of HGETALL replies, leaving out the empty ones (keys deleted between an index read
// and the fetch).
std::vector<job_record> records_from_replies(const std::vector<redis_reply>& replies);
// The elements of an array reply as strings (SMEMBERS, ZRANGE, ...).
std::vector<std::string> reply_strings(const redis_reply& r);
// One HGETALL per key, for a pipeline.
std::vector<std::vector<std::string>> hgetall_each(const std::vector<std::string>& keys);
// The body of a `submitted` notice to the daemon: {"jobs": [[id, priority, owner], ...]}.
boost::json::object submitted_body(const std::vector<job_id>& ids, const std::vector<job_request>& jobs,
                                   std::size_t first, const std::string& owner);

// A whole decimal integer of type T (no sign for unsigned, no spaces); nullopt otherwise.
template <class T>
std::optional<T> parse_integer(std::string_view s) {
  T v{};
  if (s.empty()) return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}
// A whole number as strtod reads it; nullopt otherwise.
std::optional<double> parse_double(std::string_view s);

// ---- Server-Sent Events ---------------------------------------------------------------------

// A Redis stream entry ID "<ms>-<seq>", ordered as Redis orders them.
struct stream_id {
  std::uint64_t ms = 0;
  std::uint64_t seq = 0;
  auto operator<=>(const stream_id&) const = default;
  std::string str() const;
};
// "<ms>-<seq>" or "<ms>" (seq 0); nullopt when malformed.
std::optional<stream_id> parse_stream_id(std::string_view s);
// GET /api/events with since (an event id: replay the global stream after it, as Last-Event-ID does;
// a Last-Event-ID header wins). Web pages pass the stream's position when they were rendered, so
// nothing that happens between rendering and subscribing is missed.
std::optional<api_error> parse_events_query(std::string_view query, std::optional<job_id>& job,
                                            std::optional<stream_id>& since);
// The Last-Event-ID request header: empty → no error, out unset; a stream ID → out; anything
// else → 400.
std::optional<api_error> parse_last_event_id(std::string_view header, std::optional<stream_id>& out);

// One job event from the global stream (fields id, owner, type, state, progress, attempt, time)
// or from a job's own stream (no id/owner: the caller supplies them).
struct stream_event {
  std::string sid;  // the stream entry ID as Redis gave it
  stream_id order;  // the same, parsed
  job_id id = 0;
  std::string owner;
  std::string type, state, progress;
  long long attempt = 0;
  std::string time;  // epoch seconds as stored (text, so copies compare equal)
  // The same change seen in the job stream and the global stream has the same key.
  std::string dedupe_key() const;
  double time_s() const;  // 0 when absent or unreadable
};
// Parses one stream entry [id, [field, value, ...]]; nullopt when malformed or without a job id.
std::optional<stream_event> parse_stream_event(const redis_reply& entry, job_id default_id = 0,
                                               const std::string& default_owner = "");
// The same from an entry's ID and fields already read.
std::optional<stream_event> stream_event_of(std::string sid, const job_record& fields, job_id default_id = 0,
                                            const std::string& default_owner = "");
// The events of an XRANGE reply (or one stream's entry list of an XREAD reply), malformed
// entries skipped.
std::vector<stream_event> parse_stream_events(const redis_reply& entries, job_id default_id = 0,
                                              const std::string& default_owner = "");

// "id: <sid>\nevent: job\ndata: {"id","state","progress","attempt","time","type"}\n\n".
std::string format_sse_event(const stream_event& e);
// Sent first on every stream: the client's reconnect delay (ms).
inline constexpr std::string_view sse_preamble = "retry: 1000\n\n";
// Sent when a stream has been idle for sse_keepalive_interval.
inline constexpr std::string_view sse_keepalive = ": keepalive\n\n";

// Which events a stream carries: owner (empty: everyone's, for admins) and optionally one job.
struct event_filter {
  std::string owner;
  std::optional<job_id> job;
  bool matches(const stream_event& e) const;
};

}  // namespace descprod::gateway
