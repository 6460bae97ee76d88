// The gateway's pure request logic: routing, query and body validation, token checks and the JSON
// shapes of answers. Nothing here does I/O, so unit tests call it directly; handler.cpp glues it
// to Redis, the daemon link and Beast.
//
// Thread-safety: all functions are pure or read only their arguments.
#pragma once

#include <boost/json.hpp>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.hpp"
#include "core/job.hpp"
#include "core/redis.hpp"

namespace descprod::gateway {

// Longest accepted config/howfig (bytes) and jobtype; DESIGN §8 asks for length limits.
inline constexpr std::size_t max_config_bytes = 512;
inline constexpr std::size_t max_jobtype_bytes = 64;
// Paging of GET /api/jobs.
inline constexpr int default_list_limit = 50;
inline constexpr int max_list_limit = 1000;
inline constexpr long long max_list_offset = 1'000'000'000'000;
// With a state/jobtype filter, GET /api/jobs looks at this many of the user's newest jobs only.
inline constexpr std::size_t filter_scan_window = 10000;
// Jobs per store::async_create call in a bulk submit; each call is one atomic script.
inline constexpr std::size_t bulk_chunk_jobs = 1000;
// Events returned by GET /api/jobs/<id>/events (the stream is capped near 1000 by the store).
inline constexpr std::size_t max_events = 2000;

// An error answer: HTTP status, a short machine-readable name and a human reason. The body is
// {"error": error, "detail": detail}.
struct api_error {
  unsigned status = 400;
  std::string error;
  std::string detail;
  std::string allow;  // 405 only: the value of the Allow header
};

api_error bad_request(std::string detail);
api_error not_found(std::string detail);
api_error unauthorized(std::string detail);
api_error forbidden(std::string detail);
api_error unavailable(std::string detail);
api_error internal_error(std::string detail);

boost::json::object error_json(const api_error& e);

// ---- routing --------------------------------------------------------------------------------

enum class route_kind { healthz, version, jobs, jobs_bulk, job, job_events, not_found };

struct route {
  route_kind kind = route_kind::not_found;
  job_id id = 0;  // job and job_events
};

// Matches a path (without query). A job id is 1–18 decimal digits and positive; anything else in
// its place (e.g. "/api/jobs/abc") is not_found.
route match_route(std::string_view path);
// The methods a route accepts, as an Allow header value ("GET", "POST", "GET, POST").
std::string_view allowed_methods(route_kind k);
bool method_allowed(route_kind k, std::string_view method);

struct target_parts {
  std::string path;
  std::string query;
};
target_parts split_target(std::string_view target);

// Decodes %XX and '+' in a query component; nullopt when a %-escape is malformed.
std::optional<std::string> percent_decode(std::string_view s);

// GET /api/jobs query: limit (1..1000, default 50), offset (0..1e12), state, jobtype.
struct list_query {
  int limit = default_list_limit;
  long long offset = 0;
  std::optional<job_state> state;
  std::string jobtype;
  bool filtered() const { return state.has_value() || !jobtype.empty(); }
};
// Unknown parameters are refused (400) so that a typo never silently lists everything.
std::optional<api_error> parse_list_query(std::string_view query, list_query& out);

// ---- request bodies -------------------------------------------------------------------------

// One job to create, validated against the application registry.
struct job_request {
  std::string jobtype;
  std::string config;
  std::string howfig;
  int priority = 0;
  std::optional<job_id> parent;
  int max_attempts = 3;  // from the application
};

// Parses a request body as JSON; malformed → 400 "bad_json" with the parser's reason and offset.
std::optional<api_error> parse_json_body(std::string_view body, boost::json::value& out);

// Validates one job object: jobtype (string, required, registered), config (string, required,
// check_config == 0, the app's pattern), howfig (string, optional, empty or valid and matching
// the app's howfig_pattern), priority (integer -1000..1000), parent (positive integer). Unknown
// fields are refused. Errors name the field.
std::optional<api_error> validate_job(const boost::json::value& v, const app_registry& apps,
                                      job_request& out);

// Validates {"jobs": [ ... ]} with 1..max_jobs items; an invalid item's error starts "jobs[i]: ".
std::optional<api_error> validate_bulk(const boost::json::value& v, const app_registry& apps,
                                       std::size_t max_jobs, std::vector<job_request>& out);

// ---- authentication -------------------------------------------------------------------------

// The token of an "Authorization: Bearer <token>" header (scheme case-insensitive); nullopt when
// absent or malformed.
std::optional<std::string> bearer_token(std::string_view authorization);

// Who is calling. A job token ("job:<id>" scope) acts as the job's owner for reading that job only.
struct principal {
  std::string name;
  bool admin = false;
  std::optional<job_id> only_job;
};

// Checks a token hash (fields owner, scope, expires; empty map = no such token) at time now_s
// (epoch seconds) and fills who.name / who.only_job. Errors are 401.
std::optional<api_error> check_token(const job_record& token, double now_s, principal& who);
// Checks the owner's account hash (status must be "active"); sets who.admin from role. Errors 401.
std::optional<api_error> check_user(const job_record& user, principal& who);
// Whether who may read job `id` owned by `owner` (admins read all).
bool may_read(const principal& who, job_id id, const std::string& owner);

// ---- answers --------------------------------------------------------------------------------

// A HGETALL reply as a map; an empty map for nil or an empty array.
job_record record_from_reply(const redis_reply& r);
// {"events": [...]} from an XRANGE reply of a job's event stream.
boost::json::object events_json(const redis_reply& xrange);
// The body of a `submitted` notice to the daemon: {"jobs": [[id, priority], ...]}.
boost::json::object submitted_body(const std::vector<job_id>& ids,
                                   const std::vector<job_request>& jobs, std::size_t first);

}  // namespace descprod::gateway
