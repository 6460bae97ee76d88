// The JSON API's presenter of the jobs service (jobs_api.hpp): the jobs routes of the route table
// read their request (api.hpp's validation), call jobs_service and answer in JSON. GCC 12
// coroutine rules (docs/building.md#conventions): no braced temporaries, no lambdas in coroutine
// bodies.
#include "gateway/jobs_api.hpp"

#include <cmath>
#include <cstdlib>
#include <map>

#include "gateway/handler_detail.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // see handler.cpp
#endif

namespace descprod::gateway {

boost::json::object created_job_json(job_id id, const job_request& req, const std::string& owner,
                                     const std::string& create_time, const std::string& session) {
  char* end = nullptr;
  double t = std::strtod(create_time.c_str(), &end);
  bool time_ok = end && *end == '\0' && !create_time.empty() && std::isfinite(t) && std::fabs(t) < 9.2e18;
  boost::json::object o;
  o.reserve(16);
  o["id"] = id;
  if (req.parent) o["parent"] = *req.parent;
  if (!owner.empty()) o["descname"] = owner;
  if (!req.jobtype.empty()) o["jobtype"] = req.jobtype;
  if (!req.config.empty()) o["config"] = req.config;
  if (!req.howfig.empty()) o["howfig"] = req.howfig;
  if (auto s = parse_integer<long long>(session)) o["session"] = *s;
  o["archive"] = 0;
  if (time_ok) o["create_time"] = t;
  if (time_ok) o["update_time"] = t;
  o["progress"] = "Ready.";
  o["state"] = "ready";
  o["priority"] = req.priority;
  o["attempt"] = 1;
  o["max_attempts"] = req.max_attempts;
  if (time_ok) o["queued_time"] = t;
  return o;
}

boost::json::object job_list_json(const jobs_service::job_list& list, const list_query& q) {
  boost::json::array jobs;
  jobs.reserve(list.jobs.size());
  for (const auto& rec : list.jobs) jobs.push_back(job_to_json(rec));
  boost::json::object o;
  o["jobs"] = std::move(jobs);
  if (list.total) o["total"] = *list.total;
  o["offset"] = q.offset;
  o["limit"] = q.limit;
  o["sort"] = sort_text(q);
  if (list.next) o["next"] = cursor_text(q, *list.next);
  if (list.scanned) {
    o["scanned"] = *list.scanned;
    o["truncated"] = list.truncated;
  } else if ((q.parent || q.array) && list.truncated) {
    o["truncated"] = true;
  }
  return o;
}

boost::json::object actions_json(const jobs_service::actions_result& r) {
  boost::json::object o;
  o["done"] = boost::json::array(r.done.begin(), r.done.end());
  if (!r.created.empty()) o["created"] = boost::json::array(r.created.begin(), r.created.end());
  boost::json::array failed;
  for (const auto& f : r.failed) {
    auto e = error_json(f.error);
    e["id"] = f.id;
    failed.push_back(std::move(e));
  }
  o["failed"] = std::move(failed);
  if (r.truncated) o["truncated"] = true;
  return o;
}

boost::json::object events_json(const std::vector<jobs_service::job_event>& events) {
  boost::json::array list;
  list.reserve(events.size());
  for (const auto& ev : events) {
    boost::json::object e;
    e["stream_id"] = ev.stream_id;
    for (const auto& [k, v] : ev.fields) {
      if (k == "attempt") {
        if (auto n = parse_integer<long long>(v)) {
          e[k] = *n;
          continue;
        }
      } else if (k == "time") {
        if (auto d = parse_double(v)) {
          e[k] = *d;
          continue;
        }
      }
      e[k] = v;
    }
    list.push_back(std::move(e));
  }
  boost::json::object o;
  o["events"] = std::move(list);
  return o;
}

boost::json::object log_json(const std::vector<std::string>& lines) {
  boost::json::array list;
  list.reserve(lines.size());
  for (const auto& l : lines) list.emplace_back(l);
  boost::json::object o;
  o["lines"] = std::move(list);
  return o;
}

boost::json::object log_json(const jobs_service::job_log& log, const log_query& q) {
  boost::json::object o;
  if (q.q.empty()) {
    o = log_json(log.lines);
  } else {
    boost::json::array list;
    list.reserve(log.matches.size());
    for (const auto& m : log.matches) {
      boost::json::object e;
      e["line_number"] = m.number;
      e["line"] = m.line;
      list.push_back(std::move(e));
    }
    o["q"] = q.q;
    o["matches"] = std::move(list);
    o["total_matches"] = log.total_matches;
    o["lines_searched"] = log.lines_read;
  }
  if (log.capped) o["capped"] = true;
  if (log.truncated) o["truncated"] = true;
  return o;
}

response log_text_response(job_id id, const jobs_service::job_log& log) {
  std::size_t size = 0;
  for (const auto& l : log.lines) size += l.size() + 1;
  std::string body;
  body.reserve(size + 128);
  for (const auto& l : log.lines) {
    body += l;
    body += '\n';
  }
  if (log.truncated)
    body += "descprod: this download stops at " + std::to_string(max_log_read_bytes) + " bytes\n";
  response res(http::status::ok, 11);
  res.set(http::field::server, "descprod-gateway/" DESCPROD_VERSION);
  res.set(http::field::content_type, "text/plain; charset=utf-8");
  res.set(http::field::content_disposition, "attachment; filename=\"job-" + std::to_string(id) + ".log\"");
  res.set(http::field::cache_control, "no-store");
  res.set("X-Content-Type-Options", "nosniff");
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

boost::json::object children_json(const std::vector<std::string>& states, bool truncated) {
  std::vector<long long> counts(all_job_states().size(), 0);
  std::map<std::string, long long> other;
  long long total = 0;
  for (const auto& st : states) {
    if (st.empty()) continue;
    ++total;
    if (auto s = parse_job_state(st)) ++counts[static_cast<std::size_t>(*s)];
    else ++other[st];
  }
  boost::json::object o;
  o["total"] = total;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] > 0) o[to_string(all_job_states()[i])] = counts[i];
  }
  for (const auto& [name, n] : other) o[name] = n;
  if (truncated) o["truncated"] = true;
  return o;
}

boost::json::array neighbours_json(const std::vector<jobs_service::graph_neighbour>& list) {
  boost::json::array out;
  out.reserve(list.size());
  for (const auto& n : list) {
    boost::json::object o;
    o["id"] = n.id;
    o["kind"] = n.kind;
    o["state"] = n.state;
    out.push_back(std::move(o));
  }
  return out;
}

boost::json::object claim_app_json(const app_def& app, const job_record& job, job_id id, bool batch_howfigs) {
  auto get = [&](const char* k) {
    auto it = job.find(k);
    return it == job.end() ? std::string() : it->second;
  };
  boost::json::array argv;
  for (auto& a : app.job_argv(get("config"), get("howfig"), id, batch_howfigs)) argv.emplace_back(a);
  boost::json::object env;
  for (const auto& [k, v] : app.env) env[k] = v;
  boost::json::object o;
  o["argv"] = std::move(argv);
  o["env"] = std::move(env);
  o["time_limit_s"] = app.time_limit_s;
  o["login_shell"] = app.login_shell;
  return o;
}

namespace detail {

namespace {

handler_result job_answer(http::status status, const job_record& rec) {
  return json_answer(status, job_to_json(rec));
}

boost::json::object state_json(const std::string& state) {
  boost::json::object o;
  o["state"] = state;
  return o;
}

boost::json::object claim_json(const jobs_service::claimed_job& c, job_id id, bool batch_howfigs) {
  boost::json::object o;
  o["job"] = job_to_json(c.job);
  o["attempt"] = c.attempt;
  o["token"] = c.token;
  o["app"] = claim_app_json(*c.app, c.job, id, batch_howfigs);
  return o;
}

boost::json::object bulk_json(const std::vector<job_id>& ids, const std::vector<job_state>& states) {
  boost::json::array list;
  list.reserve(ids.size());
  for (auto id : ids) list.push_back(id);
  boost::json::object o;
  o["ids"] = std::move(list);
  o["count"] = ids.size();
  // How many jobs went in each state (ready, held, waiting, cancelled: a dependency had failed).
  boost::json::object by_state;
  for (auto st : states) {
    auto& n = by_state[to_string(st)];
    n = n.is_null() ? 1 : n.as_int64() + 1;
  }
  o["states"] = std::move(by_state);
  return o;
}

// POST /api/jobs/<id>/{started,progress,finished}: the body read by `parse` into its report,
// handed to the jobs service; the answer is the job's state.
template <class Report>
using report_parser = std::optional<api_error> (*)(const boost::json::value&, Report&);

template <class Report>
net::awaitable<handler_result> report_route(call& c, report_parser<Report> parse) {
  boost::json::value v;
  if (auto e = parse_json_body(c.req.body(), v)) co_return error_answer(*e);
  Report r;
  if (auto e = parse(v, r)) co_return error_answer(*e);
  auto state = co_await jobs_service::report(c.ctx, std::move(*c.who), c.params.id,
                                             jobs_service::client_report(std::move(r)));
  if (!state) co_return error_answer(state.error());
  co_return json_answer(http::status::ok, state_json(*state));
}

}  // namespace

response created_job_response(job_id id, const job_request& req, const std::string& owner,
                              const std::string& create_time, const std::string& session) {
  auto res =
      make_json_response(http::status::created, created_job_json(id, req, owner, create_time, session));
  res.set(http::field::location, "/api/jobs/" + std::to_string(id));
  return res;
}

net::awaitable<handler_result> jobs_create(call& c) {
  boost::json::value v;
  if (auto e = parse_json_body(c.req.body(), v)) co_return error_answer(*e);
  job_request jr;
  if (auto e = validate_job(v, c.ctx.apps, jr)) co_return error_answer(*e);
  std::vector<job_request> reqs;
  const bool array = jr.array.has_value();
  if (array) {
    // One job per index, created as a bulk request is; the answer names the array.
    if (auto e = expand_array(jr, c.ctx.apps, reqs)) co_return error_answer(*e);
  } else {
    reqs.push_back(std::move(jr));
  }
  if (auto e = check_children_only(*c.who, reqs)) co_return error_answer(*e);
  std::string owner = c.who->name;
  auto made = co_await jobs_service::create(c.ctx, std::move(*c.who), reqs, false);
  if (!made) co_return error_answer(made.error());
  if (array) {
    auto body = bulk_json(made->ids, made->states);
    body["array"] = made->ids.front();
    auto res = make_json_response(http::status::created, body);
    res.set(http::field::location, "/api/jobs?array=" + std::to_string(made->ids.front()));
    handler_result arr;
    arr.res = std::move(res);
    co_return arr;
  }
  if (!made->states.empty() && made->states.front() != job_state::ready) {
    // Held, waiting or cancelled at creation: the answer is the job as stored (its progress says
    // what it waits for).
    auto rec = co_await c.ctx.jobs->async_get(made->ids.front());
    if (!rec) co_return error_answer(internal_error("the new job was not found"));
    auto res = make_json_response(http::status::created, job_to_json(*rec));
    res.set(http::field::location, "/api/jobs/" + std::to_string(made->ids.front()));
    handler_result held;
    held.res = std::move(res);
    co_return held;
  }
  // The answer is what was just written, with the create script's time.
  handler_result out;
  out.res = created_job_response(made->ids.front(), reqs.front(), owner, made->create_time, made->session);
  co_return out;
}

net::awaitable<handler_result> jobs_create_bulk(call& c) {
  boost::json::value v;
  if (auto e = parse_json_body(c.req.body(), v)) co_return error_answer(*e);
  std::vector<job_request> reqs;
  if (auto e = validate_bulk(v, c.ctx.apps, c.ctx.config.max_bulk_jobs, reqs)) co_return error_answer(*e);
  v = nullptr;  // free the parsed body before the (possibly long) creation
  if (auto e = check_children_only(*c.who, reqs)) co_return error_answer(*e);
  auto made = co_await jobs_service::create(c.ctx, std::move(*c.who), std::move(reqs), true);
  if (!made) co_return error_answer(made.error());
  co_return json_answer(http::status::created, bulk_json(made->ids, made->states));
}

net::awaitable<handler_result> jobs_list(call& c) {
  list_query q;
  if (auto e = parse_list_query(c.query, q)) co_return error_answer(*e);
  auto found = co_await jobs_service::list(c.ctx, std::move(*c.who), q);
  if (!found) co_return error_answer(found.error());
  co_return json_answer(http::status::ok, job_list_json(*found, q));
}

net::awaitable<handler_result> jobs_get(call& c) {
  auto found = co_await jobs_service::get(c.ctx, std::move(*c.who), c.params.id);
  if (!found) co_return error_answer(found.error());
  auto body = job_to_json(found->job);
  if (found->rollup) body["children"] = children_json(found->rollup->states, found->rollup->truncated);
  if (found->array_rollup)
    body["array_jobs"] = children_json(found->array_rollup->states, found->array_rollup->truncated);
  if (!found->dependencies.empty()) body["dependencies"] = neighbours_json(found->dependencies);
  if (found->dependents_total > 0) {
    boost::json::object d;
    d["total"] = found->dependents_total;
    d["jobs"] = neighbours_json(found->dependents);
    body["dependents"] = std::move(d);
  }
  co_return json_answer(http::status::ok, body);
}

net::awaitable<handler_result> jobs_events(call& c) {
  // ?follow=1 makes it a stream (event_streams.cpp).
  bool follow = false;
  if (auto e = parse_job_events_query(c.query, follow)) co_return error_answer(*e);
  if (follow) co_return co_await open_job_stream(c);
  auto found = co_await jobs_service::events(c.ctx, std::move(*c.who), c.params.id);
  if (!found) co_return error_answer(found.error());
  co_return json_answer(http::status::ok, events_json(found->events));
}

net::awaitable<handler_result> jobs_log(call& c) {
  log_query q;
  if (auto e = parse_log_query(c.query, q)) co_return error_answer(*e);
  auto found = co_await jobs_service::log(c.ctx, std::move(*c.who), c.params.id, q);
  if (!found) co_return error_answer(found.error());
  if (q.text) co_return answer(log_text_response(c.params.id, *found));
  co_return json_answer(http::status::ok, log_json(*found, q));
}

net::awaitable<handler_result> jobs_cancel(call& c) {
  auto changed = co_await jobs_service::cancel(c.ctx, std::move(*c.who), c.params.id);
  if (!changed) co_return error_answer(changed.error());
  // 200 when the job is cancelled already, 202 while its worker is stopping it.
  co_return job_answer(changed->state == "cancelled" ? http::status::ok : http::status::accepted,
                       changed->job);
}

net::awaitable<handler_result> jobs_release(call& c) {
  auto changed = co_await jobs_service::release(c.ctx, std::move(*c.who), c.params.id);
  if (!changed) co_return error_answer(changed.error());
  co_return job_answer(http::status::ok, changed->job);
}

net::awaitable<handler_result> jobs_resubmit(call& c) {
  auto made = co_await jobs_service::resubmit(c.ctx, *c.who, c.params.id);
  if (!made) co_return error_answer(made.error());
  auto rec = co_await c.ctx.jobs->async_get(made->ids.front());
  if (!rec) co_return error_answer(internal_error("the new job was not found"));
  auto body = job_to_json(*rec);
  body["resubmitted_from"] = c.params.id;
  co_return json_answer(http::status::created, body);
}

net::awaitable<handler_result> jobs_actions(call& c) {
  boost::json::value v;
  if (auto e = parse_json_body(c.req.body(), v)) co_return error_answer(*e);
  std::string action;
  std::vector<job_id> ids;
  std::optional<list_query> query;
  if (auto e = parse_actions_body(v, action, ids, query)) co_return error_answer(*e);
  auto r = co_await jobs_service::act(c.ctx, *c.who, std::move(action), std::move(ids), std::move(query));
  if (!r) co_return error_answer(r.error());
  co_return json_answer(http::status::ok, actions_json(*r));
}

net::awaitable<handler_result> jobs_archive(call& c) {
  auto changed = co_await jobs_service::set_archive(c.ctx, std::move(*c.who), c.params.id, true);
  if (!changed) co_return error_answer(changed.error());
  co_return job_answer(http::status::ok, changed->job);
}

net::awaitable<handler_result> jobs_unarchive(call& c) {
  auto changed = co_await jobs_service::set_archive(c.ctx, std::move(*c.who), c.params.id, false);
  if (!changed) co_return error_answer(changed.error());
  co_return job_answer(http::status::ok, changed->job);
}

net::awaitable<handler_result> jobs_delete(call& c) {
  auto gone = co_await jobs_service::remove(c.ctx, std::move(*c.who), c.params.id);
  if (!gone) co_return error_answer(gone.error());
  handler_result out;
  out.res = no_content_response();
  co_return out;
}

net::awaitable<handler_result> jobs_claim(call& c) {
  boost::json::value v;
  if (auto e = parse_json_body(c.req.body(), v)) co_return error_answer(*e);
  std::string host;
  if (auto e = parse_claim_body(v, host)) co_return error_answer(*e);
  auto claimed = co_await jobs_service::claim(c.ctx, std::move(*c.who), c.params.id, std::move(host));
  if (!claimed) co_return error_answer(claimed.error());
  co_return json_answer(http::status::ok, claim_json(*claimed, c.params.id, c.ctx.config.batch_howfigs));
}

net::awaitable<handler_result> jobs_started(call& c) {
  return report_route<started_report>(c, parse_started_body);
}

net::awaitable<handler_result> jobs_progress(call& c) {
  return report_route<progress_report>(c, parse_progress_body);
}

net::awaitable<handler_result> jobs_finished(call& c) {
  return report_route<finished_report>(c, parse_finished_body);
}

}  // namespace detail

}  // namespace descprod::gateway
