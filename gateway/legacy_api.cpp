// DESCprod's JSON routes (issue #16 item 5): POST /get_job, /update_job and /add_child_job with
// DESCprod's request and answer shapes, so an old client, the old wrapper or a hand-written POST
// keeps working. Unlike DESCprod they need a bearer token (a user's, or a job token within its
// scope), and they go through the same services and state machine as the JSON API.
//
// Answers: DESCprod's {"status": N, ...} with HTTP 200 for the refusals DESCprod had a status for
// (old clients print its message; they read any other HTTP status as "Server returned HTML error
// N"). What DESCprod had no status for keeps the API's HTTP errors: a body that is not JSON (400),
// no valid token (401), Redis unavailable (503), a throttle (429). A transition this service's state
// machine refuses (the job ran elsewhere, or ended) is status 7, which DESCprod did not have: its
// server copied any fields into any job. docs/api.md (DESCprod's routes) has the table.
//
// GCC 12 coroutine rules (docs/building.md#conventions): no braced temporaries, no lambdas in
// coroutine bodies.
#include <cmath>
#include <string>

#include "gateway/handler_detail.hpp"
#include "gateway/jobs_service.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // see handler.cpp
#endif

namespace descprod::gateway::detail {

namespace {

handler_result status_answer(int status, const std::string& message) {
  boost::json::object o;
  o["status"] = status;
  if (!message.empty()) o["message"] = message;
  return json_answer(http::status::ok, o);
}

// An error of the services that DESCprod's statuses cannot say: the HTTP error as the API gives it.
bool http_only(const api_error& e) {
  return e.code == errc::unavailable || e.code == errc::internal || e.code == errc::too_many_requests ||
         e.code == errc::too_many_connections || e.code == errc::unauthorized;
}

// A JSON member as DESCprod read it: absent (1: "missing") or null (2 or 3: "null").
enum class member { ok, missing, null };
member member_of(const boost::json::object& o, const char* name) {
  auto it = o.find(name);
  if (it == o.end()) return member::missing;
  if (it->value().is_null()) return member::null;
  return member::ok;
}

// A job ID as DESCprod's clients send it: a JSON integer, or a string of digits.
std::optional<job_id> id_of(const boost::json::value& v) {
  if (v.is_int64() && v.as_int64() > 0) return v.as_int64();
  if (v.is_uint64() && v.as_uint64() <= static_cast<std::uint64_t>(INT64_MAX) && v.as_uint64() > 0)
    return static_cast<job_id>(v.as_uint64());
  if (v.is_string()) {
    auto n = parse_integer<long long>(std::string_view(v.as_string()));
    if (n && *n > 0) return *n;
  }
  return std::nullopt;
}

std::string text_of(const boost::json::value& v) {
  if (v.is_string()) return std::string(v.as_string());
  return boost::json::serialize(v);
}

// A number (DESCprod's times are integers; a float or a string of one is taken).
std::optional<double> number_of(const boost::json::value& v) {
  double d = 0;
  if (v.is_int64()) d = static_cast<double>(v.as_int64());
  else if (v.is_uint64()) d = static_cast<double>(v.as_uint64());
  else if (v.is_double()) d = v.as_double();
  else if (v.is_string()) {
    auto p = parse_double(std::string_view(v.as_string()));
    if (!p) return std::nullopt;
    d = *p;
  } else {
    return std::nullopt;
  }
  if (!std::isfinite(d) || std::fabs(d) > 9.2e18) return std::nullopt;
  return d;
}

std::string not_found_for(job_id id, const std::string& user) {
  return "Job " + std::to_string(id) + " not found for user " + user + ".";
}

// The progress text of a DESCprod update without its state prefix ("Running. x" -> "x"): this
// service writes the prefix itself.
std::string progress_message(std::string p) {
  for (const char* prefix : {"Running.", "Done.", "Failed.", "Timeout."}) {
    std::string_view pv(prefix);
    if (p.rfind(pv, 0) == 0) {
      p.erase(0, pv.size());
      break;
    }
  }
  if (p.rfind("Process received signal ", 0) == 0) {
    auto dot = p.find('.');
    p.erase(0, dot == std::string::npos ? p.size() : dot + 1);
  }
  while (!p.empty() && p.front() == ' ') p.erase(0, 1);
  return p;
}

// What a DESCprod update asks of the job, read from its `job` map.
struct legacy_update {
  job_id id = 0;
  std::string descname;
  double update_time = 0;
  std::optional<long long> pid;
  bool started = false;  // pid or start_time: the wrapper has started the application
  std::string host, rundir;
  std::optional<std::string> progress;
  std::optional<long long> return_status;  // the final update
};

std::string field_or_empty(const job_record& r, const char* name) {
  auto it = r.find(name);
  return it == r.end() ? std::string() : it->second;
}

// DESCprod's add_child_job checks: each of these present (else 1) and not null (else 2).
std::optional<std::pair<int, std::string>> check_child_members(const boost::json::object& o) {
  for (const char* name : {"jobtype", "config", "parent", "descname"}) {
    auto m = member_of(o, name);
    if (m == member::missing) return std::make_pair(1, std::string("Missing field: ") + name + ".");
    if (m == member::null) return std::make_pair(2, std::string("Null field: ") + name + ".");
  }
  return std::nullopt;
}

}  // namespace

net::awaitable<handler_result> legacy_get_job(call& c) {
  boost::json::value v;
  if (auto e = parse_json_body(c.req.body(), v)) co_return error_answer(*e);
  if (!v.is_object()) co_return status_answer(1, "The request must be a JSON object with id and descname.");
  const auto& o = v.as_object();
  if (member_of(o, "id") != member::ok || member_of(o, "descname") != member::ok)
    co_return status_answer(1, "The request must have id and descname.");
  auto id = id_of(o.at("id"));
  std::string user = text_of(o.at("descname"));
  if (!id) co_return status_answer(2, "Job " + text_of(o.at("id")) + " not found for user " + user + ".");
  auto found = co_await jobs_service::get(c.ctx, std::move(*c.who), *id);
  if (!found) {
    if (http_only(found.error())) co_return error_answer(found.error());
    co_return status_answer(2, not_found_for(*id, user));
  }
  auto owner = found->job.find("descname");
  if (owner == found->job.end() || owner->second != user)
    co_return status_answer(2, not_found_for(*id, user));
  // A held job waits for its owner to start it, which DESCprod called "Ready.": its 0.4.29
  // descprod-start-job runs a job only with that progress.
  auto& rec = found->job;
  if (field_or_empty(rec, "state") == to_string(job_state::held)) rec["progress"] = "Ready.";
  boost::json::object out;
  out["status"] = 0;
  out["message"] = "Success";
  out["job"] = descprod_job_map(rec);
  co_return json_answer(http::status::ok, out);
}

net::awaitable<handler_result> legacy_add_child_job(call& c) {
  boost::json::value v;
  if (auto e = parse_json_body(c.req.body(), v)) co_return error_answer(*e);
  if (!v.is_object()) co_return status_answer(1, "The request must be a JSON object.");
  const auto& o = v.as_object();
  if (auto refused = check_child_members(o)) co_return status_answer(refused->first, refused->second);
  std::string user = text_of(o.at("descname"));
  auto parent = id_of(o.at("parent"));
  std::string parent_text = text_of(o.at("parent"));
  // The parent must be the caller's (DESCprod: of the same descname) and one it may see.
  if (!parent || user != c.who->name)
    co_return status_answer(3, "Parent job " + user + "/" + parent_text + " was not found");
  auto owner = co_await jobs_service::owner_of(c.ctx, *parent);
  if (owner != user) co_return status_answer(3, "Parent job " + user + "/" + parent_text + " was not found");
  // The child as a JSON API request, checked as POST /api/jobs checks one (DESCprod's missing
  // howfig, an HTTP 500 there, is an empty howfig here).
  boost::json::object req;
  req["jobtype"] = o.at("jobtype");
  req["config"] = o.at("config");
  if (auto it = o.find("howfig"); it != o.end() && !it->value().is_null()) req["howfig"] = it->value();
  req["parent"] = *parent;
  job_request jr;
  if (auto e = validate_job(req, c.ctx.apps, jr)) co_return status_answer(4, e->detail);
  std::vector<job_request> reqs;
  reqs.push_back(std::move(jr));
  if (auto e = check_children_only(*c.who, reqs)) co_return status_answer(4, e->detail);
  auto made = co_await jobs_service::create(c.ctx, std::move(*c.who), std::move(reqs), false);
  if (!made) {
    if (http_only(made.error())) co_return error_answer(made.error());
    co_return status_answer(4, made.error().detail);
  }
  auto rec = co_await c.ctx.jobs->async_get(made->ids.front());
  if (!rec) co_return error_answer(internal_error("the new job was not found"));
  boost::json::object out;
  out["status"] = 0;
  out["job"] = descprod_job_map(*rec);
  co_return json_answer(http::status::ok, out);
}

namespace {

// Reads the `job` map of an update; a DESCprod status and message when it is refused.
std::optional<std::pair<int, std::string>> read_update(const boost::json::value& v, legacy_update& u) {
  if (!v.is_object()) return std::make_pair(1, std::string("No job was provided."));
  auto it = v.as_object().find("job");
  if (it == v.as_object().end() || !it->value().is_object())
    return std::make_pair(1, std::string("No job was provided."));
  const auto& j = it->value().as_object();
  for (const char* name : {"id", "descname", "update_time"}) {
    auto m = member_of(j, name);
    if (m == member::missing) return std::make_pair(2, std::string("Job is missing field ") + name + ".");
    if (m == member::null) return std::make_pair(3, std::string("Job has null field ") + name + ".");
  }
  auto t = number_of(j.at("update_time"));
  if (!t) return std::make_pair(4, std::string("Invalid update_time: ") + text_of(j.at("update_time")) + ".");
  u.update_time = *t;
  u.descname = text_of(j.at("descname"));
  auto id = id_of(j.at("id"));
  if (!id) return std::make_pair(5, "Job " + text_of(j.at("id")) + " not found for user " + u.descname + ".");
  u.id = *id;
  auto text = [&](const char* name) -> std::string {
    auto f = j.find(name);
    return f == j.end() || f->value().is_null() ? std::string() : text_of(f->value());
  };
  u.host = text("host");
  u.rundir = text("rundir");
  if (auto f = j.find("pid"); f != j.end() && !f->value().is_null()) {
    auto n = number_of(f->value());
    if (!n || *n < 0 || *n > 4194304) return std::make_pair(4, "Invalid pid: " + text_of(f->value()) + ".");
    u.pid = static_cast<long long>(*n);
  }
  u.started = u.pid.has_value() || (j.find("start_time") != j.end() && !j.at("start_time").is_null());
  if (auto f = j.find("progress"); f != j.end() && !f->value().is_null()) u.progress = text_of(f->value());
  if (auto f = j.find("return_status"); f != j.end() && !f->value().is_null()) {
    auto n = number_of(f->value());
    if (!n || std::fabs(*n) > 1e6)
      return std::make_pair(4, "Invalid return_status: " + text_of(f->value()) + ".");
    u.return_status = static_cast<long long>(*n);
  }
  return std::nullopt;
}

// The update's parts as the JSON API's own requests, checked by the same parsers (the host of a
// claim, the started, progress and finished bodies): what the API refuses is refused here too
// (status 4), before anything changes. The attempts are set once the job's is known.
struct legacy_reports {
  std::string host;
  started_report started;
  progress_report progress;
  finished_report finished;
};
std::optional<std::pair<int, std::string>> prepare_reports(const legacy_update& u, const std::string& message,
                                                           legacy_reports& out) {
  boost::json::object claim;
  claim["host"] = u.host.empty() ? std::string("unknown") : u.host;
  if (auto e = parse_claim_body(claim, out.host)) return std::make_pair(4, e->detail);
  boost::json::object started;
  started["attempt"] = 1;
  started["pid"] = u.pid.value_or(0);
  if (!u.host.empty()) started["host"] = u.host;
  if (!u.rundir.empty()) started["rundir"] = u.rundir;
  if (auto e = parse_started_body(started, out.started)) return std::make_pair(4, e->detail);
  boost::json::object progress;
  progress["attempt"] = 1;
  progress["message"] = message;
  if (auto e = parse_progress_body(progress, out.progress)) return std::make_pair(4, e->detail);
  boost::json::object finished;
  finished["attempt"] = 1;
  finished["message"] = message;
  const long long rs = u.return_status.value_or(0);
  if (rs < 0) finished["signal"] = -rs;
  else finished["rc"] = rs;
  if (auto e = parse_finished_body(finished, out.finished)) return std::make_pair(4, e->detail);
  return std::nullopt;
}

}  // namespace

// One report on the job through the API's service: nullopt when applied (`state`, if given, is the
// job's state after it), else the answer to give (the HTTP error, or status 7 with the reason).
net::awaitable<std::optional<handler_result>> apply_report(call& c, job_id id, jobs_service::client_report r,
                                                           std::string* state) {
  auto applied = co_await jobs_service::report(c.ctx, *c.who, id, std::move(r));
  if (!applied) {
    if (http_only(applied.error())) co_return error_answer(applied.error());
    co_return status_answer(7, applied.error().detail);
  }
  if (state) *state = *applied;
  co_return std::nullopt;
}

// The old wrapper's heartbeat and final update, as transitions: a held or ready job the update
// says has started is claimed for its host and started; progress is a progress report; a
// return_status finishes it (rc < 0: the signal -rc). Each step is the API's claim and reports.
net::awaitable<handler_result> legacy_update_job(call& c) {
  boost::json::value v;
  if (auto e = parse_json_body(c.req.body(), v)) co_return error_answer(*e);
  legacy_update u;
  if (auto refused = read_update(v, u)) co_return status_answer(refused->first, refused->second);
  v = nullptr;
  auto rec = co_await c.ctx.jobs->async_get(u.id);
  // Who may update: the job's own token, or a user who may change the job (its owner, an admin).
  const bool allowed = c.who->only_job ? *c.who->only_job == u.id && may_read(*c.who, u.id, u.descname)
                                       : may_change(*c.who, u.descname);
  if (!rec || field_or_empty(*rec, "descname") != u.descname || !allowed)
    co_return status_answer(5, not_found_for(u.id, u.descname));
  // DESCprod's order check, against the wrapper's own clock: its last update's time.
  if (auto last = parse_double(field_or_empty(*rec, "wrapper_update_time")); last && u.update_time <= *last)
    co_return status_answer(6, "Update is " + std::to_string(static_cast<long long>(*last - u.update_time)) +
                                   " seconds behind current job.");
  std::string state = field_or_empty(*rec, "state");
  long long attempt = parse_integer<long long>(field_or_empty(*rec, "attempt")).value_or(1);
  const bool finishing = u.return_status.has_value();
  legacy_reports reports;
  if (auto refused = prepare_reports(u, progress_message(u.progress.value_or("")), reports))
    co_return status_answer(refused->first, refused->second);
  // Claimed here when the wrapper started it on its own (DESCprod's descprod-start-job claims nothing).
  if ((u.started || finishing) &&
      (state == to_string(job_state::held) || state == to_string(job_state::ready))) {
    auto claimed = co_await jobs_service::claim(c.ctx, *c.who, u.id, reports.host);
    if (!claimed) {
      if (http_only(claimed.error())) co_return error_answer(claimed.error());
      co_return status_answer(7, claimed.error().detail);
    }
    attempt = claimed->attempt;
    state = to_string(job_state::dispatched);
  }
  if (state == to_string(job_state::dispatched) && (u.started || finishing)) {
    reports.started.attempt = attempt;
    auto refused = co_await apply_report(c, u.id, jobs_service::client_report(reports.started), &state);
    if (refused) co_return std::move(*refused);
  }
  if (finishing) {
    reports.finished.attempt = attempt;
    auto refused = co_await apply_report(c, u.id, jobs_service::client_report(reports.finished), nullptr);
    if (refused) co_return std::move(*refused);
  } else if (u.progress && state == to_string(job_state::running)) {
    reports.progress.attempt = attempt;
    auto refused = co_await apply_report(c, u.id, jobs_service::client_report(reports.progress), nullptr);
    if (refused) co_return std::move(*refused);
  } else if (state != to_string(job_state::running) && state != to_string(job_state::dispatched)) {
    co_return status_answer(7, "job " + std::to_string(u.id) + " is " + state + ": nothing to update");
  }
  // The job is still active (not finished), so it cannot have been deleted: the write makes no
  // stray hash.
  if (!finishing)
    co_await c.ctx.redis->async_exec(
        redis_cmd("HSET", keys_of(c.ctx).job(u.id), "wrapper_update_time", std::to_string(u.update_time)));
  co_return status_answer(0, "");
}

}  // namespace descprod::gateway::detail
