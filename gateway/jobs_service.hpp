// The jobs service: what a caller may do with jobs, answered as typed results (errors.hpp). It
// reads and writes Redis through the store and tells the daemon of new and cancelled jobs; it
// knows nothing of HTTP. Two presenters answer over it: the JSON API (jobs_api.cpp) and the web
// pages (pages.cpp).
//
// Visibility: a job the caller may not read is "not found" (never "forbidden"), so IDs do not
// tell whose jobs exist. Parents must be the caller's own, administrators included.
//
// GCC 12 coroutine rules (docs/building.md#conventions): parameters are values.
// Thread-safety: as handler.hpp (one io_context thread).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/job.hpp"
#include "core/store.hpp"
#include "gateway/api.hpp"
#include "gateway/errors.hpp"
#include "gateway/handler.hpp"

namespace descprod::gateway::jobs_service {

// The user's quota (<prefix>user:<name>:quota), read at most every 2 s (docs/api.md, Quotas).
net::awaitable<user_quota> quota_for(gateway_context& ctx, const std::string& user);

// Jobs just created, in the order asked, and the create script's Redis time (epoch seconds as
// text) of the first chunk: also the jobs' update and queued times.
struct created_jobs {
  std::vector<job_id> ids;
  std::vector<job_state> states;  // each job's state at creation: ready, held, waiting or cancelled
  std::string create_time;
  std::string session;  // the first job's session ("" when none)
};
// Creates validated jobs: the parents checked first, then chunks of bulk_chunk_jobs, each one
// atomic script followed by its `submitted` notice. `bulk`: error details name the request's
// index. A Redis failure after some chunks is `unavailable` saying which IDs exist.
net::awaitable<result<created_jobs>> create(gateway_context& ctx, principal who,
                                            std::vector<job_request> reqs, bool bulk);

// A page of the caller's jobs, or of a parent's children, as GET /api/jobs selects them.
struct job_list {
  std::vector<job_record> jobs;        // in the query's order (newest first by default)
  std::optional<long long> total;      // matching jobs (within the scan window when scanned); none
                                       // on a later page of an ID-sorted scan (a cursor)
  std::optional<std::size_t> scanned;  // scanned: how many jobs were looked at
  bool truncated = false;              // scanned: more jobs than the window; children: more than sampled
  std::optional<list_cursor> next;     // where the next page starts (none at the end)
};
net::awaitable<result<job_list>> list(gateway_context& ctx, principal who, list_query q);

// How a parent's children stand: how many in each state.
struct children_rollup {
  std::vector<std::string> states;  // one per child looked at ("" for a child deleted meanwhile)
  bool truncated = false;           // more children than max_children: a sample
};
// A job next to another in the dependency graph: its ID, the edge's kind ("after" or
// "after_any") and its state ("" when it was deleted).
struct graph_neighbour {
  job_id id = 0;
  std::string kind;
  std::string state;
};
// Neighbours shown at most, each way.
inline constexpr std::size_t max_graph_neighbours = 200;
struct job_detail {
  job_record job;
  long long children = 0;                 // SCARD of its children
  std::optional<children_rollup> rollup;  // when it has children
  // Its dependencies (after, then after_any) and the jobs that depend on it (at most
  // max_graph_neighbours each; dependents_total counts them all).
  std::vector<graph_neighbour> dependencies;
  std::vector<graph_neighbour> dependents;
  long long dependents_total = 0;
  // The first job of an array (its ID is the array's): how the array's jobs stand.
  long long array_jobs = 0;
  std::optional<children_rollup> array_rollup;
};
net::awaitable<result<job_detail>> get(gateway_context& ctx, principal who, job_id id);

// One entry of a job's event stream: its stream ID and its fields.
struct job_event {
  std::string stream_id;
  job_record fields;
};
// The job's newest `limit` events, oldest first. A job still queued since its submission has no
// stream yet: its one submit event, from the job hash.
struct job_events {
  std::string owner;
  std::vector<job_event> events;
};
net::awaitable<result<job_events>> events(gateway_context& ctx, principal who, job_id id,
                                          std::size_t limit = max_events);

// A read of the job's log (GET /api/jobs/<id>/log): the last q.lines lines, or every stored line
// (q.all), or the lines that contain q.q with their numbers; oldest first. Reading the whole log
// takes a place among the running scans (429 when none is free).
struct log_match {
  long long number = 0;  // 1-based, in the stored log
  std::string line;
};
struct job_log {
  std::vector<std::string> lines;  // without a search
  std::vector<log_match> matches;  // with one: at most max_log_matches
  long long total_matches = 0;
  long long lines_read = 0;  // lines looked at by a search
  bool capped = false;       // the stored log stops at the cap (daemon.job_log_max_bytes)
  bool truncated = false;    // the read stopped at max_log_read_bytes
};
net::awaitable<result<job_log>> log(gateway_context& ctx, principal who, job_id id, log_query q);

// A job after a change: its record as the change left it and its state.
struct changed_job {
  job_record job;
  std::string state;
};
// Cancel: a ready job is cancelled at once; a dispatched or running one is asked to stop
// (state cancel_requested) and its worker told.
net::awaitable<result<changed_job>> cancel(gateway_context& ctx, principal who, job_id id);
// Release: a held job goes to the workers (ready); a waiting job created held loses its hold
// (state "waiting": it becomes ready when its dependencies are met). 409 for any other state.
net::awaitable<result<changed_job>> release(gateway_context& ctx, principal who, job_id id);
net::awaitable<result<changed_job>> set_archive(gateway_context& ctx, principal who, job_id id,
                                                bool archived);
// Deletes a job that is not active (its hash, streams and index entries).
net::awaitable<status> remove(gateway_context& ctx, principal who, job_id id);
// A new job like an ended one of the caller's: same application, config, howfig, priority and
// parent, checked against today's application registry. 409 while the job is still active.
net::awaitable<result<created_jobs>> resubmit(gateway_context& ctx, principal who, job_id id);

// One action on many jobs (POST /api/jobs/actions): each job on its own, in order.
struct job_failure {
  job_id id = 0;
  api_error error;
};
struct actions_result {
  std::vector<job_id> done;     // the jobs the action was applied to
  std::vector<job_id> created;  // resubmit: the new jobs, one per done job
  std::vector<job_failure> failed;
  bool truncated = false;  // a query matched more jobs than max_action_jobs
};
net::awaitable<result<actions_result>> act(gateway_context& ctx, principal who, std::string action,
                                           std::vector<job_id> ids, std::optional<list_query> query);

// A claim by a client that runs the job itself (descprod-start-job): the attempt, the job token
// (shown once) and how to run the application.
struct claimed_job {
  job_record job;
  long long attempt = 0;
  std::string token;
  const app_def* app = nullptr;
};
net::awaitable<result<claimed_job>> claim(gateway_context& ctx, principal who, job_id id, std::string host);

// started / progress / finished of a claimed job; the worker is the claim's ("cli:<host>"). The
// answer is the job's state after the report.
using client_report = std::variant<started_report, progress_report, finished_report>;
net::awaitable<result<std::string>> report(gateway_context& ctx, principal who, job_id id, client_report r);

// The events of an XRANGE reply, malformed entries skipped (pure; for tests too).
std::vector<job_event> events_of(const redis_reply& xrange);
// The lines of an XREVRANGE of a job's log stream, oldest first (pure): an entry's `text` holds
// lines each ending in a newline (the daemon's pieces), `line` one line (older entries).
std::vector<std::string> log_lines_of(const redis_reply& xrevrange);
// The lines of one stream entry's field list, appended to out.
void append_entry_lines(const redis_reply& fields, std::vector<std::string>& out);

// The owner of a job ("" when there is none).
net::awaitable<std::string> owner_of(gateway_context& ctx, job_id id);
// The owner of a job in the set at `key` (an array whose first job was deleted), "" if none.
net::awaitable<std::string> owner_of_set_member(gateway_context& ctx, std::string key);

}  // namespace descprod::gateway::jobs_service
