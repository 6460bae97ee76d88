// The live event streams (Server-Sent Events, docs/api.md): GET /api/events (the caller's jobs,
// all for administrators) and GET /api/jobs/<id>/events?follow=1 (one job's history, then its
// live events). A stream subscribes to the event hub (events.hpp) before it reads the history, so
// nothing falls between the two; the server then sends what the subscription delivers.
// GCC 12 coroutine rules (docs/building.md#conventions) apply.
#include <algorithm>
#include <set>

#include "core/keys.hpp"
#include "gateway/guard.hpp"
#include "gateway/handler_detail.hpp"
#include "gateway/jobs_service.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // see handler.cpp
#endif

namespace descprod::gateway::detail {

namespace {

api_error not_found_job(job_id id) { return not_found("job " + std::to_string(id) + " not found"); }

// The start of an SSE stream: the header and the first bytes (see handler_result).
response event_stream_response(std::string first_bytes) {
  response res(http::status::ok, 11);
  res.set(http::field::server, "descprod-gateway/" DESCPROD_VERSION);
  res.set(http::field::content_type, "text/event-stream");
  res.set(http::field::cache_control, "no-store");
  res.set("X-Accel-Buffering", "no");  // nginx: do not buffer the stream
  res.body() = std::move(first_bytes);
  return res;
}

// Appends the SSE form of events to out (those matching the filter), returns the newest ID.
std::optional<stream_id> append_events(std::string& out, const std::vector<stream_event>& events,
                                       const event_filter& filter) {
  std::optional<stream_id> newest;
  for (const auto& e : events) {
    if (!newest || *newest < e.order) newest = e.order;
    if (filter.matches(e)) out += format_sse_event(e);
  }
  return newest;
}

std::vector<stream_event> oldest_first(std::vector<stream_event> v) {
  std::reverse(v.begin(), v.end());
  return v;
}

}  // namespace

// GET /api/events: the caller's jobs (admins: all), optionally one job; with Last-Event-ID the
// global stream's newer entries are replayed first.
net::awaitable<handler_result> events_stream(call& c) {
  gateway_context& ctx = c.ctx;
  const principal& who = *c.who;
  const std::string& query = c.query;
  std::string last_event_id(c.req["Last-Event-ID"]);
  std::optional<job_id> job;
  std::optional<stream_id> since;
  if (auto e = parse_events_query(query, job, since)) co_return error_answer(*e);
  std::optional<stream_id> after;
  if (auto e = parse_last_event_id(last_event_id, after)) co_return error_answer(*e);
  if (!after) after = since;
  if (!ctx.hub) co_return error_answer(unavailable("live events are not available"));
  event_filter filter;
  if (!who.admin) filter.owner = who.name;
  if (job) {
    auto owner = co_await jobs_service::owner_of(ctx, *job);
    if (!may_read(who, *job, owner)) co_return error_answer(not_found_job(*job));
    filter.job = job;
  }
  if (auto e = stream_refusal(ctx, who)) co_return error_answer(*e);
  // Subscribe before reading the history, so nothing falls between the two.
  auto sub = ctx.hub->subscribe(filter);
  sub->set_owner(who.name, who.session_hash, who.token_hash);
  std::string first(sse_preamble);
  if (after) {
    auto replay = co_await ctx.redis->async_exec(redis_cmd("XREVRANGE", ctx.jobs->redis_keys().events(), "+",
                                                           "(" + after->str(), "COUNT",
                                                           std::to_string(max_replay_events)));
    auto newest = append_events(first, oldest_first(parse_stream_events(replay)), filter);
    sub->skip_through(newest && *after < *newest ? *newest : *after);
  }
  handler_result out;
  out.res = event_stream_response(std::move(first));
  out.stream = std::move(sub);
  co_return out;
}

// GET /api/jobs/<id>/events?follow=1: the job's stored history (after Last-Event-ID when given),
// then its live events.
net::awaitable<handler_result> open_job_stream(call& c) {
  gateway_context& ctx = c.ctx;
  const principal& who = *c.who;
  job_id id = c.params.id;
  std::string last_event_id(c.req["Last-Event-ID"]);
  std::optional<stream_id> after;
  if (auto e = parse_last_event_id(last_event_id, after)) co_return error_answer(*e);
  if (!ctx.hub) co_return error_answer(unavailable("live events are not available"));
  auto owner = co_await jobs_service::owner_of(ctx, id);
  if (!may_read(who, id, owner)) co_return error_answer(not_found_job(id));
  if (auto e = stream_refusal(ctx, who)) co_return error_answer(*e);
  event_filter filter;
  filter.job = id;
  auto sub = ctx.hub->subscribe(filter);
  sub->set_owner(who.name, who.session_hash, who.token_hash);
  std::string from = after ? "(" + after->str() : std::string("-");
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(redis_cmd("XREVRANGE", ctx.jobs->redis_keys().job_events(id), "+", from, "COUNT",
                           std::to_string(max_events)));
  cmds.push_back(redis_cmd("EXISTS", ctx.jobs->redis_keys().job_events(id)));
  cmds.push_back(redis_cmd("HGET", ctx.jobs->redis_keys().job(id), "create_time"));
  auto replies = co_await ctx.redis->async_pipeline(std::move(cmds));
  auto& history = replies[0];
  // No stream yet (a job still queued since its submission): its one event, from the hash, unless
  // the client has seen it.
  if (replies[1].as_integer() == 0 && !replies[2].is_nil()) {
    if (auto e = submit_event_entry(replies[2].as_string())) {
      auto sid = parse_stream_id(e->elements[0].str);
      if (sid && (!after || *after < *sid)) history.elements.push_back(std::move(*e));
    }
  }
  auto events = oldest_first(parse_stream_events(history, id, owner));
  std::string first(sse_preamble);
  append_events(first, events, filter);
  std::set<std::string> keys;
  double newest_s = 0;
  for (const auto& e : events) {
    keys.insert(e.dedupe_key());
    newest_s = std::max(newest_s, e.time_s());
  }
  sub->skip_seen(std::move(keys), newest_s);
  handler_result out;
  out.res = event_stream_response(std::move(first));
  out.stream = std::move(sub);
  co_return out;
}

}  // namespace descprod::gateway::detail

namespace descprod::gateway {

// ---- Server-Sent Events ---------------------------------------------------------------------

std::string stream_id::str() const { return std::to_string(ms) + "-" + std::to_string(seq); }

std::optional<stream_id> parse_stream_id(std::string_view s) {
  auto dash = s.find('-');
  auto ms_text = s.substr(0, dash);
  auto all_digits = [](std::string_view t) {
    return !t.empty() && t.size() <= 20 && t.find_first_not_of("0123456789") == std::string_view::npos;
  };
  if (!all_digits(ms_text)) return std::nullopt;
  stream_id id;
  auto ms = parse_integer<std::uint64_t>(ms_text);
  if (!ms) return std::nullopt;
  id.ms = *ms;
  if (dash != std::string_view::npos) {
    auto seq_text = s.substr(dash + 1);
    if (!all_digits(seq_text)) return std::nullopt;
    auto seq = parse_integer<std::uint64_t>(seq_text);
    if (!seq) return std::nullopt;
    id.seq = *seq;
  }
  return id;
}

std::optional<api_error> parse_last_event_id(std::string_view header, std::optional<stream_id>& out) {
  while (!header.empty() && (header.front() == ' ' || header.front() == '\t')) header.remove_prefix(1);
  while (!header.empty() && (header.back() == ' ' || header.back() == '\t')) header.remove_suffix(1);
  out.reset();
  if (header.empty()) return std::nullopt;
  auto id = parse_stream_id(header);
  if (!id)
    return bad_request("malformed Last-Event-ID " + quoted(header) +
                       "; expected an event id this server sent (<ms>-<seq>)");
  out = id;
  return std::nullopt;
}

std::string stream_event::dedupe_key() const {
  std::string k = time;
  for (const std::string* f : {&type, &state, &progress}) {
    k += '\x1f';
    k += *f;
  }
  k += '\x1f';
  k += std::to_string(attempt);
  return k;
}

double stream_event::time_s() const { return parse_double(time).value_or(0.0); }

namespace {
// One field of a stream entry into e; false when the entry cannot be an event (a bad job id).
bool set_event_field(stream_event& e, std::string_view k, std::string v) {
  if (k == "id") {
    auto id = parse_integer<job_id>(v);
    if (!id) return false;
    e.id = *id;
  } else if (k == "owner") {
    e.owner = std::move(v);
  } else if (k == "type") {
    e.type = std::move(v);
  } else if (k == "state") {
    e.state = std::move(v);
  } else if (k == "progress") {
    e.progress = std::move(v);
  } else if (k == "attempt") {
    e.attempt = parse_integer<long long>(v).value_or(0);
  } else if (k == "time") {
    e.time = std::move(v);
  }
  return true;
}

std::optional<stream_event> new_stream_event(std::string sid, job_id default_id,
                                             const std::string& default_owner) {
  stream_event e;
  auto order = parse_stream_id(sid);
  if (!order) return std::nullopt;
  e.sid = std::move(sid);
  e.order = *order;
  e.id = default_id;
  e.owner = default_owner;
  return e;
}
}  // namespace

std::optional<stream_event> parse_stream_event(const redis_reply& entry, job_id default_id,
                                               const std::string& default_owner) {
  if (entry.type != redis_reply::kind::array || entry.elements.size() != 2) return std::nullopt;
  const auto& fields = entry.elements[1];
  if (fields.type != redis_reply::kind::array) return std::nullopt;
  auto e = new_stream_event(entry.elements[0].as_string(), default_id, default_owner);
  if (!e) return std::nullopt;
  for (std::size_t i = 0; i + 1 < fields.elements.size(); i += 2)
    if (!set_event_field(*e, fields.elements[i].as_string(), fields.elements[i + 1].as_string()))
      return std::nullopt;
  if (e->id <= 0) return std::nullopt;
  return e;
}

std::optional<stream_event> stream_event_of(std::string sid, const job_record& fields, job_id default_id,
                                            const std::string& default_owner) {
  auto e = new_stream_event(std::move(sid), default_id, default_owner);
  if (!e) return std::nullopt;
  for (const auto& [k, v] : fields)
    if (!set_event_field(*e, k, v)) return std::nullopt;
  if (e->id <= 0) return std::nullopt;
  return e;
}

std::vector<stream_event> parse_stream_events(const redis_reply& entries, job_id default_id,
                                              const std::string& default_owner) {
  std::vector<stream_event> out;
  if (entries.type != redis_reply::kind::array) return out;
  out.reserve(entries.elements.size());
  for (const auto& entry : entries.elements) {
    if (auto e = parse_stream_event(entry, default_id, default_owner)) out.push_back(std::move(*e));
  }
  return out;
}

std::string format_sse_event(const stream_event& e) {
  boost::json::object data;
  data["id"] = e.id;
  data["state"] = e.state;
  data["progress"] = e.progress;
  data["attempt"] = e.attempt;
  if (auto t = parse_double(e.time)) data["time"] = *t;
  data["type"] = e.type;
  if (!e.owner.empty()) data["owner"] = e.owner;  // an admin's stream carries every user's jobs
  std::string out;
  out.reserve(64 + e.progress.size());
  out += "id: ";
  out += e.sid;
  out += "\nevent: job\ndata: ";
  out += boost::json::serialize(data);  // one line: JSON escapes every control character
  out += "\n\n";
  return out;
}

bool event_filter::matches(const stream_event& e) const {
  if (!owner.empty() && e.owner != owner) return false;
  if (job && e.id != *job) return false;
  return true;
}

}  // namespace descprod::gateway
