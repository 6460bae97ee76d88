// The JSON API's presenter of the jobs service (docs/api.md): the answers' JSON shapes. The route
// handlers (jobs_* in handler_detail.hpp) read the request, call jobs_service and answer with
// these. Pure functions; unit tests call them directly.
//
// Thread-safety: pure.
#pragma once

#include <boost/json.hpp>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/job.hpp"
#include "gateway/api.hpp"
#include "gateway/jobs_service.hpp"

namespace descprod::gateway {

// POST /api/jobs's answer from what the create script has just written (the request, the owner
// and the script's time as stored): the same JSON as job_to_json of the new job hash, in the same
// order, without reading the hash back.
boost::json::object created_job_json(job_id id, const job_request& req, const std::string& owner,
                                     const std::string& create_time, const std::string& session = {});
// POST /api/jobs/actions: {"done": [ids], "created"?: [ids], "failed": [{"id", "error", "detail"}],
// "truncated"?}.
boost::json::object actions_json(const jobs_service::actions_result& r);
// GET /api/jobs: {"jobs", "total"?, "offset", "limit", "sort", "next"?, "scanned"?, "truncated"?}
boost::json::object job_list_json(const jobs_service::job_list& list, const list_query& q);
// {"events": [{"stream_id", field: value...}]}: attempt as an integer, time as a number.
boost::json::object events_json(const std::vector<jobs_service::job_event>& events);
// {"lines": [...]}
boost::json::object log_json(const std::vector<std::string>& lines);
// GET /api/jobs/<id>/log: {"lines": [...]} or, for a search, {"q", "matches": [{"line_number",
// "line"}...], "total_matches", "lines_searched"}; with "capped": true when the stored log stops at
// its cap and "truncated": true when the read stopped at max_log_read_bytes.
boost::json::object log_json(const jobs_service::job_log& log, const log_query& q);
// The log as a text/plain download (format=text): its lines, each ending in a newline.
response log_text_response(job_id id, const jobs_service::job_log& log);
// A parent's roll-up: {"total", <state>: count..., "truncated"?}; empty states (children deleted
// meanwhile) are not counted.
boost::json::object children_json(const std::vector<std::string>& states, bool truncated);
// A job's neighbours in the dependency graph: [{"id", "kind", "state"}...] (state "" when deleted).
boost::json::array neighbours_json(const std::vector<jobs_service::graph_neighbour>& list);
// A claim's "app": {"argv", "env", "time_limit_s", "login_shell"}.
boost::json::object claim_app_json(const app_def& app, const job_record& job, job_id id,
                                   bool batch_howfigs = false);

}  // namespace descprod::gateway
