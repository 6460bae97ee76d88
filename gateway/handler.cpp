// The request handler: routing, authentication (bearer tokens, or the web session cookie with its
// CSRF token for state changes; cross-origin posts refused first), and the job routes. Web pages,
// accounts, API tokens and the admin routes are in web_handler.cpp. Pure checks live in api.cpp; this file does the Redis round trips and builds
// responses. GCC 12 coroutine rules (docs/building.md#conventions) apply: no braced temporaries and no lambdas in
// coroutine bodies, so commands and JSON bodies are built by the plain helpers at the top.
#include "gateway/handler.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <set>

#include "core/crypto.hpp"
#include "core/job.hpp"
#include "core/log.hpp"
#include "core/protocol.hpp"
#include "gateway/auth_cache.hpp"
#include "gateway/guard.hpp"
#include "gateway/handler_detail.hpp"
#include "gateway/notices.hpp"
#include "gateway/router.hpp"
#include "gateway/services.hpp"
#include "gateway/web.hpp"

// GCC 12 false positive: when a coroutine's ramp is inlined into another coroutine it pairs
// Asio's recycling frame allocator (aligned_new) with the frame's operator delete and warns
// -Wmismatched-new-delete. The pair is correct (awaitable_frame_base defines both).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace descprod::gateway {

namespace detail {

template <class... A>
std::vector<std::string> cmd(A&&... a) {
  std::vector<std::string> v;
  v.reserve(sizeof...(a));
  (v.emplace_back(std::forward<A>(a)), ...);
  return v;
}

double now_s(const gateway_context& ctx) {
  if (ctx.now) return ctx.now();
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string owner_of(const job_record& r) {
  auto it = r.find("descname");
  return it == r.end() ? std::string() : it->second;
}

api_error job_not_found(job_id id) { return not_found("job " + std::to_string(id) + " not found"); }

handler_result as_result(response res) {
  handler_result out;
  out.res = std::move(res);
  return out;
}

response error_response(const api_error& e) { return make_error_response(e); }

response readyz_response(const gateway_context& ctx) {
  std::string why;
  if (!ctx.redis || !ctx.redis->connected())
    why = "the gateway is not connected to Redis";
  else if (ctx.redis_ready && !ctx.redis_ready())
    why = "Redis is not serving (loading its data, busy, or refusing writes)";
  else if (!ctx.daemon_ready)
    why = "the gateway has no daemon link";
  else if (!ctx.daemon_ready())
    why = "the daemon has not welcomed the gateway yet";
  boost::json::object o;
  if (why.empty()) {
    o["status"] = "ready";
    return make_json_response(http::status::ok, o);
  }
  o["status"] = "not ready";
  o["error"] = "unavailable";
  o["detail"] = why;
  auto res = make_json_response(http::status::service_unavailable, o);
  res.set(http::field::retry_after, "1");
  return res;
}

response job_response(http::status status, const job_record& rec) {
  return make_json_response(status, job_to_json(rec));
}

response state_response(const std::string& state) {
  boost::json::object o;
  o["state"] = state;
  return make_json_response(http::status::ok, o);
}

response no_content_response() {
  response res(http::status::no_content, 11);
  res.set(http::field::server, "descprod-gateway/" DESCPROD_VERSION);
  res.set(http::field::cache_control, "no-store");
  return res;
}

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

response healthz_response(bool redis_up) {
  boost::json::object o;
  if (redis_up) {
    o["status"] = "ok";
    return make_json_response(http::status::ok, o);
  }
  o["status"] = "redis unavailable";
  o["error"] = "unavailable";
  o["detail"] = "the gateway is not connected to Redis";
  auto res = make_json_response(http::status::service_unavailable, o);
  res.set(http::field::retry_after, "1");
  return res;
}

response version_response() {
  boost::json::object o;
  o["version"] = DESCPROD_VERSION;
  o["protocol"] = protocol::version;
  return make_json_response(http::status::ok, o);
}

// The 201 answer to POST /api/jobs from the fields the create script has just written (see its
// field list in core/store.cpp): the same JSON as job_to_json of the new job hash, in the same
// order, without reading the hash back. `create_time` is the script's Redis time (also the
// update and queued times at creation).
response created_job_response(job_id id, const job_request& req, const std::string& owner,
                              const std::string& create_time) {
  char* end = nullptr;
  double t = std::strtod(create_time.c_str(), &end);
  bool time_ok = end && *end == '\0' && !create_time.empty() && std::isfinite(t) &&
                 std::fabs(t) < 9.2e18;
  boost::json::object o;
  o.reserve(16);
  o["id"] = id;
  if (req.parent) o["parent"] = *req.parent;
  if (!owner.empty()) o["descname"] = owner;
  if (!req.jobtype.empty()) o["jobtype"] = req.jobtype;
  if (!req.config.empty()) o["config"] = req.config;
  if (!req.howfig.empty()) o["howfig"] = req.howfig;
  o["archive"] = 0;
  if (time_ok) o["create_time"] = t;
  if (time_ok) o["update_time"] = t;
  o["progress"] = "Ready.";
  o["state"] = "ready";
  o["priority"] = req.priority;
  o["attempt"] = 1;
  o["max_attempts"] = req.max_attempts;
  if (time_ok) o["queued_time"] = t;
  auto res = make_json_response(http::status::created, o);
  res.set(http::field::location, "/api/jobs/" + std::to_string(id));
  return res;
}

response created_bulk_response(const std::vector<job_id>& ids) {
  boost::json::array list;
  list.reserve(ids.size());
  for (auto id : ids) list.push_back(id);
  boost::json::object o;
  o["ids"] = std::move(list);
  o["count"] = ids.size();
  return make_json_response(http::status::created, o);
}

response list_response(const std::vector<redis_reply>& records, long long total,
                       const list_query& q, std::optional<std::size_t> scanned, bool truncated) {
  boost::json::array jobs;
  for (const auto& r : records) {
    auto rec = record_from_reply(r);
    if (rec.empty()) continue;  // removed between the index read and the fetch
    jobs.push_back(job_to_json(rec));
  }
  boost::json::object o;
  o["jobs"] = std::move(jobs);
  o["total"] = total;
  o["offset"] = q.offset;
  o["limit"] = q.limit;
  if (scanned) {
    o["scanned"] = *scanned;
    o["truncated"] = truncated;
  }
  return make_json_response(http::status::ok, o);
}

std::vector<new_job> to_new_jobs(const std::vector<job_request>& reqs, std::size_t first,
                                 std::size_t n) {
  std::vector<new_job> out;
  out.reserve(n);
  for (std::size_t i = first; i < first + n; ++i) {
    new_job j;
    j.jobtype = reqs[i].jobtype;
    j.config = reqs[i].config;
    j.howfig = reqs[i].howfig;
    j.priority = reqs[i].priority;
    j.parent = reqs[i].parent;
    j.max_attempts = reqs[i].max_attempts;
    out.push_back(std::move(j));
  }
  return out;
}

// The distinct parents named by the requests, each with the index of its first use.
std::vector<std::pair<job_id, std::size_t>> distinct_parents(const std::vector<job_request>& reqs) {
  std::vector<std::pair<job_id, std::size_t>> out;
  std::set<job_id> seen;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    if (reqs[i].parent && seen.insert(*reqs[i].parent).second) out.emplace_back(*reqs[i].parent, i);
  }
  return out;
}

std::vector<std::vector<std::string>> parent_owner_cmds(
    const store& s, const std::vector<std::pair<job_id, std::size_t>>& ps) {
  std::vector<std::vector<std::string>> cmds;
  cmds.reserve(ps.size());
  for (const auto& p : ps) cmds.push_back(cmd("HGET", s.job_key(p.first), "descname"));
  return cmds;
}

api_error parent_not_found(job_id parent, bool bulk, std::size_t index) {
  auto e = not_found("parent job " + std::to_string(parent) + " not found");
  if (bulk) e.detail = "jobs[" + std::to_string(index) + "]: " + e.detail;
  return e;
}

std::vector<std::vector<std::string>> hgetall_cmds(const store& s,
                                                   const std::vector<std::string>& ids) {
  std::vector<std::vector<std::string>> cmds;
  cmds.reserve(ids.size());
  for (const auto& id : ids) cmds.push_back(cmd("HGETALL", s.key("job:" + id)));
  return cmds;
}

std::vector<std::vector<std::string>> filter_cmds(const store& s,
                                                  const std::vector<std::string>& ids) {
  std::vector<std::vector<std::string>> cmds;
  cmds.reserve(ids.size());
  for (const auto& id : ids)
    cmds.push_back(cmd("HMGET", s.key("job:" + id), "state", "jobtype", "archive"));
  return cmds;
}

std::vector<std::vector<std::string>> state_cmds(const store& s,
                                                 const std::vector<std::string>& ids,
                                                 std::size_t first, std::size_t n) {
  std::vector<std::vector<std::string>> cmds;
  cmds.reserve(n);
  for (std::size_t i = first; i < first + n && i < ids.size(); ++i)
    cmds.push_back(cmd("HGET", s.key("job:" + ids[i]), "state"));
  return cmds;
}

// Children IDs, newest (highest) first.
std::vector<std::string> sorted_ids(const redis_reply& members) {
  std::vector<std::pair<long long, std::string>> v;
  v.reserve(members.elements.size());
  for (const auto& m : members.elements) v.emplace_back(m.as_integer(), m.as_string());
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  out.reserve(v.size());
  for (auto& p : v) out.push_back(std::move(p.second));
  return out;
}

// SMEMBERS, or a sample of max_children distinct members when the set is larger.
std::vector<std::string> children_cmd(const std::string& key, long long card) {
  if (card > static_cast<long long>(max_children))
    return cmd("SRANDMEMBER", key, std::to_string(max_children));
  return cmd("SMEMBERS", key);
}

std::vector<std::string> page_of(const std::vector<std::string>& ids, const list_query& q) {
  std::vector<std::string> page;
  for (auto i = static_cast<std::size_t>(
           std::min<long long>(q.offset, static_cast<long long>(ids.size())));
       i < ids.size() && page.size() < static_cast<std::size_t>(q.limit); ++i)
    page.push_back(ids[i]);
  return page;
}

std::string field_of(const job_record& r, const char* k) {
  auto it = r.find(k);
  return it == r.end() ? std::string() : it->second;
}

api_error refused_report(job_id id, const transition_result& tr, std::string_view what) {
  if (tr.reason == refusal::stale)
    return conflict("stale: the " + std::string(what) +
                    " report does not match the job's current attempt or claim; job " +
                    std::to_string(id) + " is " + tr.state);
  if (tr.reason == refusal::illegal)
    return conflict("illegal: job " + std::to_string(id) + " is " + tr.state + "; a " +
                    std::string(what) + " report is not accepted in that state");
  return conflict(std::string(to_string(tr.reason)) + ": job " + std::to_string(id) + " is " + tr.state);
}

boost::json::object claim_json(const transition_result& tr, const std::string& token,
                               const app_def& app, job_id id) {
  boost::json::object o;
  o["job"] = job_to_json(tr.record);
  o["attempt"] = tr.attempt;
  o["token"] = token;
  o["app"] = claim_app_json(app, tr.record, id);
  return o;
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

void send_cancel(gateway_context& ctx, job_id id) {
  if (!ctx.send_to_daemon) return;
  boost::json::object body;
  body["job"] = id;
  if (!ctx.send_to_daemon(protocol::encode(protocol::cancel, body)))
    log::warn("daemon cancel notice not queued job_id={}", id);
}

std::vector<std::string> reply_strings(const redis_reply& r) {
  std::vector<std::string> out;
  out.reserve(r.elements.size());
  for (const auto& e : r.elements) out.push_back(e.as_string());
  return out;
}

bool matches_filter(const redis_reply& hmget, const list_query& q) {
  if (hmget.elements.size() != 3 || hmget.elements[0].is_nil()) return false;
  if (q.state && hmget.elements[0].as_string() != to_string(*q.state)) return false;
  if (!q.jobtype.empty() && hmget.elements[1].as_string() != q.jobtype) return false;
  if (q.archived && (hmget.elements[2].as_string() == "1") != *q.archived) return false;
  return true;
}

void notify_daemon(gateway_context& ctx, const std::vector<job_id>& ids,
                   const std::vector<job_request>& reqs, std::size_t first, const std::string& owner) {
  if (ctx.notices) {
    for (std::size_t i = 0; i < ids.size(); ++i)
      ctx.notices->add(ids[i], first + i < reqs.size() ? reqs[first + i].priority : 0, owner);
    return;
  }
  if (!ctx.send_to_daemon) return;
  auto frames = protocol::encode(protocol::submitted, submitted_body(ids, reqs, first, owner));
  if (!ctx.send_to_daemon(frames))
    log::warn("daemon notice not queued (the daemon finds the jobs in Redis) first_id={} count={}",
              ids.empty() ? 0 : ids.front(), ids.size());
}

response partial_bulk_failure(const std::vector<job_id>& created, std::size_t requested,
                              const std::string& why) {
  auto e = unavailable("created " + std::to_string(created.size()) + " of " +
                       std::to_string(requested) + " jobs (ids " + std::to_string(created.front()) +
                       ".." + std::to_string(created.back()) + ") before " + why +
                       "; submit the remaining jobs again");
  auto res = make_error_response(e);
  return res;
}

// A token hash's `expires` field as epoch seconds (0: never, or unreadable: check_token has
// refused those already).
double token_expiry(const job_record& token) {
  auto it = token.find("expires");
  if (it == token.end() || it->second.empty()) return 0;
  char* end = nullptr;
  double t = std::strtod(it->second.c_str(), &end);
  return end && *end == '\0' && std::isfinite(t) ? t : 0;
}

namespace {
// The user account behind a token or a session: must exist and be active.
net::awaitable<std::optional<api_error>> check_account(gateway_context& ctx, principal& who) {
  auto user = co_await ctx.redis->async_exec(cmd("HGETALL", ctx.prefix + "user:" + who.name));
  if (auto e = check_user(record_from_reply(user), who)) co_return e;
  co_return std::nullopt;
}

std::vector<std::vector<std::string>> session_cmds(const gateway_context& ctx,
                                                   const std::string& key) {
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(cmd("HGETALL", key));
  // Sliding expiry: every request by the session pushes its end out again.
  cmds.push_back(cmd("EXPIRE", key, std::to_string(ctx.config.session_ttl.count())));
  return cmds;
}
}  // namespace

net::awaitable<auth_result> authenticate(gateway_context& ctx, std::string header,
                                         std::string cookie) {
  auth_result out;
  std::string session_token = web::cookie_value(cookie, web::session_cookie);
  if (header.empty() && !session_token.empty()) {
    // A web session: the cookie's token, stored only as its hash.
    std::string hash = sha256_hex(session_token);
    auto replies =
        co_await ctx.redis->async_pipeline(session_cmds(ctx, ctx.prefix + "session:" + hash));
    auto sess = record_from_reply(replies[0]);
    auto user = sess.find("user");
    if (user == sess.end() || user->second.empty()) {
      out.error = unauthorized("the session has expired or ended; log in again");
      co_return out;
    }
    principal who;
    who.name = user->second;
    who.by_session = true;
    who.session_hash = hash;
    who.csrf = field_of(sess, "csrf");
    if (auto e = co_await check_account(ctx, who)) {
      out.error = *e;
      co_return out;
    }
    out.who = std::move(who);
    co_return out;
  }
  auto token = bearer_token(header);
  if (!token) {
    out.error =
        unauthorized(header.empty() ? "missing Authorization: Bearer <token> header"
                                    : "malformed Authorization header; expected Bearer <token>");
    co_return out;
  }
  std::string hash = sha256_hex(*token);
  auto looked_up = auth_cache::clock::now();
  if (ctx.tokens) {
    if (auto known = ctx.tokens->find(hash, now_s(ctx), looked_up)) {
      out.who = std::move(*known);
      out.who->token_hash = hash;
      co_return out;
    }
  }
  auto tok = co_await ctx.redis->async_exec(cmd("HGETALL", ctx.prefix + "token:" + hash));
  auto tok_rec = record_from_reply(tok);
  principal who;
  if (auto e = check_token(tok_rec, now_s(ctx), who)) {
    out.error = *e;
    co_return out;
  }
  who.token_hash = hash;  // check_token fills `who` afresh
  if (auto e = co_await check_account(ctx, who)) {
    out.error = *e;
    co_return out;
  }
  // Job tokens are not remembered: one dies with its job's attempt (the store's scripts delete it
  // or make it read-only), and that must hold from the next request on, not up to a ttl later.
  if (ctx.tokens && !who.only_job) ctx.tokens->remember(hash, who, token_expiry(tok_rec), looked_up);
  out.who = std::move(who);
  co_return out;
}

// Creates validated jobs: parents checked first, then chunks of bulk_chunk_jobs, each one atomic
// script and followed by its `submitted` notice.
net::awaitable<response> create_jobs(gateway_context& ctx, principal who,
                                     std::vector<job_request> reqs, bool bulk) {
  auto parents = distinct_parents(reqs);
  if (!parents.empty()) {
    auto owners = co_await ctx.redis->async_pipeline(parent_owner_cmds(*ctx.jobs, parents));
    for (std::size_t i = 0; i < parents.size(); ++i) {
      // Parents must belong to the caller, admins included: the store refuses any other parent.
      if (owners[i].is_nil() || owners[i].as_string() != who.name)
        co_return make_error_response(parent_not_found(parents[i].first, bulk, parents[i].second));
    }
  }
  std::vector<job_id> created;
  created.reserve(reqs.size());
  std::string create_time;  // of the first chunk: the single-job answer needs it
  if (!bulk && ctx.creates && reqs.size() == 1 && !reqs.front().parent) {
    // One job: group commit with the other single creates of this event-loop turn.
    auto r = co_await ctx.creates->create(who.name, std::move(to_new_jobs(reqs, 0, 1).front()));
    if (r.error) std::rethrow_exception(r.error);  // Redis unreachable: nothing created, the 503
    if (!r.ok) {
      log::warn("job create refused owner={} reason={}", who.name, r.reason);
      co_return make_error_response(internal_error("the store refused the job: " + r.reason));
    }
    created.push_back(r.id);
    create_time = r.time;
    notify_daemon(ctx, created, reqs, 0, who.name);
  }
  // The rest (all of it unless grouped above) in chunks, each one script.
  for (std::size_t first = created.size(); first < reqs.size(); first += bulk_chunk_jobs) {
    std::size_t n = std::min(bulk_chunk_jobs, reqs.size() - first);
    create_result tr;
    bool redis_failed = false;
    std::string failure;
    try {
      tr = co_await ctx.jobs->async_create(who.name, to_new_jobs(reqs, first, n));
    } catch (const boost::system::system_error& e) {
      redis_failed = true;
      failure = e.code().message();
    }
    if (redis_failed) {
      // Nothing created yet: the generic 503. Otherwise say exactly what exists.
      if (created.empty()) throw boost::system::system_error(net::error::not_connected, failure);
      if (ctx.on_redis_failure) ctx.on_redis_failure();
      log::warn("bulk create interrupted owner={} created={} requested={} error={}", who.name,
                created.size(), reqs.size(), failure);
      co_return partial_bulk_failure(created, reqs.size(), "Redis failed");
    }
    if (!tr.ok) {
      log::warn("job create refused owner={} reason={}", who.name, tr.reason);
      if (created.empty() && tr.reason == refusal::bad_parent && !parents.empty())
        co_return make_error_response(
            parent_not_found(parents.front().first, bulk, parents.front().second));
      if (created.empty())
        co_return make_error_response(internal_error("the store refused the jobs: " +
                                                     std::string(to_string(tr.reason))));
      co_return partial_bulk_failure(created, reqs.size(),
                                     "the store refused a chunk (" + std::string(to_string(tr.reason)) + ")");
    }
    notify_daemon(ctx, tr.ids, reqs, first, who.name);
    if (created.empty()) create_time = tr.time;
    created.insert(created.end(), tr.ids.begin(), tr.ids.end());
  }
  if (bulk || !ctx.created) {
    log::info("jobs created owner={} count={} first_id={}", who.name, created.size(),
              created.empty() ? 0 : created.front());
  } else {
    ctx.created->add(who.name, created.front());
  }
  if (bulk) co_return created_bulk_response(created);
  // The answer is what was just written, with the create script's time.
  co_return created_job_response(created.front(), reqs.front(), who.name, create_time);
}

net::awaitable<response> create_one(gateway_context& ctx, principal who, std::string body) {
  boost::json::value v;
  if (auto e = parse_json_body(body, v)) co_return make_error_response(*e);
  job_request jr;
  if (auto e = validate_job(v, ctx.apps, jr)) co_return make_error_response(*e);
  std::vector<job_request> reqs;
  reqs.push_back(std::move(jr));
  if (auto e = check_children_only(who, reqs)) co_return make_error_response(*e);
  co_return co_await create_jobs(ctx, std::move(who), std::move(reqs), false);
}

net::awaitable<response> create_bulk(gateway_context& ctx, principal who, std::string body) {
  boost::json::value v;
  if (auto e = parse_json_body(body, v)) co_return make_error_response(*e);
  std::vector<job_request> reqs;
  if (auto e = validate_bulk(v, ctx.apps, ctx.config.max_bulk_jobs, reqs))
    co_return make_error_response(*e);
  v = nullptr;  // free the parsed body before the (possibly long) creation
  if (auto e = check_children_only(who, reqs)) co_return make_error_response(*e);
  co_return co_await create_jobs(ctx, std::move(who), std::move(reqs), true);
}

net::awaitable<std::string> job_owner(gateway_context& ctx, job_id id) {
  auto r = co_await ctx.redis->async_exec(cmd("HGET", ctx.jobs->job_key(id), "descname"));
  co_return r.is_nil() ? std::string() : r.as_string();
}

// GET /api/jobs?parent=<id>: the parent's children (visible when the parent is), newest first.
net::awaitable<job_query_result> query_children(gateway_context& ctx, principal who, list_query q) {
  job_query_result out;
  job_id parent = *q.parent;
  auto owner = co_await job_owner(ctx, parent);
  if (!may_read(who, parent, owner)) {
    out.error = job_not_found(parent);
    co_return out;
  }
  std::string key = ctx.jobs->job_key(parent) + ":children";
  auto card = co_await ctx.redis->async_exec(cmd("SCARD", key));
  out.truncated = card.as_integer() > static_cast<long long>(max_children);
  auto members = co_await ctx.redis->async_exec(children_cmd(key, card.as_integer()));
  auto ids = sorted_ids(members);
  std::vector<std::string> matches;
  if (!q.filtered()) {
    matches = std::move(ids);
  } else {
    for (std::size_t start = 0; start < ids.size(); start += bulk_chunk_jobs) {
      std::size_t n = std::min(bulk_chunk_jobs, ids.size() - start);
      std::vector<std::string> chunk(ids.begin() + static_cast<std::ptrdiff_t>(start),
                                     ids.begin() + static_cast<std::ptrdiff_t>(start + n));
      auto fields = co_await ctx.redis->async_pipeline(filter_cmds(*ctx.jobs, chunk));
      for (std::size_t i = 0; i < chunk.size() && i < fields.size(); ++i) {
        if (matches_filter(fields[i], q)) matches.push_back(chunk[i]);
      }
    }
  }
  out.records = co_await ctx.redis->async_pipeline(hgetall_cmds(*ctx.jobs, page_of(matches, q)));
  out.total = static_cast<long long>(matches.size());
  co_return out;
}

net::awaitable<job_query_result> query_jobs(gateway_context& ctx, principal who, list_query q) {
  if (q.parent) co_return co_await query_children(ctx, std::move(who), std::move(q));
  job_query_result out;
  std::string index = ctx.prefix + "user:" + who.name + ":jobs";
  if (!q.filtered()) {
    std::vector<std::vector<std::string>> cmds;
    cmds.push_back(cmd("ZCARD", index));
    cmds.push_back(
        cmd("ZREVRANGE", index, std::to_string(q.offset), std::to_string(q.offset + q.limit - 1)));
    auto replies = co_await ctx.redis->async_pipeline(std::move(cmds));
    auto ids = reply_strings(replies[1]);
    out.records = co_await ctx.redis->async_pipeline(hgetall_cmds(*ctx.jobs, ids));
    out.total = replies[0].as_integer();
    co_return out;
  }
  // Filtered: look at the newest filter_scan_window jobs only (documented in docs/api.md).
  auto card = co_await ctx.redis->async_exec(cmd("ZCARD", index));
  long long all = card.as_integer();
  std::size_t window =
      std::min<std::size_t>(static_cast<std::size_t>(std::max(0LL, all)), filter_scan_window);
  std::vector<std::string> matches;
  for (std::size_t start = 0; start < window; start += bulk_chunk_jobs) {
    std::size_t stop = std::min(window, start + bulk_chunk_jobs) - 1;
    auto range = co_await ctx.redis->async_exec(
        cmd("ZREVRANGE", index, std::to_string(start), std::to_string(stop)));
    auto ids = reply_strings(range);
    if (ids.empty()) break;
    auto fields = co_await ctx.redis->async_pipeline(filter_cmds(*ctx.jobs, ids));
    for (std::size_t i = 0; i < ids.size() && i < fields.size(); ++i) {
      if (matches_filter(fields[i], q)) matches.push_back(ids[i]);
    }
  }
  out.records = co_await ctx.redis->async_pipeline(hgetall_cmds(*ctx.jobs, page_of(matches, q)));
  out.total = static_cast<long long>(matches.size());
  out.scanned = window;
  out.truncated = all > static_cast<long long>(window);
  co_return out;
}

net::awaitable<response> list_jobs(gateway_context& ctx, principal who, std::string query) {
  list_query q;
  if (auto e = parse_list_query(query, q)) co_return make_error_response(*e);
  auto found = co_await query_jobs(ctx, std::move(who), q);
  if (found.error) co_return make_error_response(*found.error);
  auto res = list_response(found.records, found.total, q, found.scanned,
                           found.scanned ? found.truncated : false);
  if (q.parent && found.truncated) {
    auto o = boost::json::parse(res.body()).as_object();
    o["truncated"] = true;
    res = make_json_response(http::status::ok, o);
  }
  co_return res;
}

// The roll-up of a job's children: SMEMBERS (at most max_children) and their states, pipelined
// bulk_chunk_jobs at a time.
net::awaitable<std::optional<boost::json::object>> children_rollup(gateway_context& ctx, job_id id,
                                                                   long long card) {
  if (card <= 0) co_return std::nullopt;
  std::string key = ctx.jobs->job_key(id) + ":children";
  auto members = co_await ctx.redis->async_exec(children_cmd(key, card));
  auto ids = sorted_ids(members);
  std::vector<std::string> states;
  states.reserve(ids.size());
  for (std::size_t start = 0; start < ids.size(); start += bulk_chunk_jobs) {
    auto replies = co_await ctx.redis->async_pipeline(
        state_cmds(*ctx.jobs, ids, start, std::min(bulk_chunk_jobs, ids.size() - start)));
    for (const auto& r : replies) states.push_back(r.is_nil() ? std::string() : r.as_string());
  }
  co_return children_json(states, card > static_cast<long long>(max_children));
}

net::awaitable<response> get_job(gateway_context& ctx, principal who, job_id id) {
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(cmd("HGETALL", ctx.jobs->job_key(id)));
  cmds.push_back(cmd("SCARD", ctx.jobs->job_key(id) + ":children"));
  auto replies = co_await ctx.redis->async_pipeline(std::move(cmds));
  auto rec = record_from_reply(replies[0]);
  if (rec.empty() || !may_read(who, id, owner_of(rec)))
    co_return make_error_response(job_not_found(id));
  auto body = job_to_json(rec);
  auto children = co_await children_rollup(ctx, id, replies[1].as_integer());
  if (children) body["children"] = std::move(*children);
  co_return make_json_response(http::status::ok, body);
}

net::awaitable<response> get_events(gateway_context& ctx, principal who, job_id id,
                                    std::string query) {
  bool follow = false;
  if (auto e = parse_job_events_query(query, follow)) co_return make_error_response(*e);
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(cmd("HMGET", ctx.jobs->job_key(id), "descname", "create_time"));
  cmds.push_back(cmd("XRANGE", ctx.jobs->job_key(id) + ":events", "-", "+", "COUNT",
                     std::to_string(max_events)));
  auto replies = co_await ctx.redis->async_pipeline(std::move(cmds));
  const auto& fields = replies[0].elements;
  std::string owner = fields.size() == 2 && !fields[0].is_nil() ? fields[0].as_string() : std::string();
  if (!may_read(who, id, owner)) co_return make_error_response(job_not_found(id));
  // No stream yet (a job still queued since its submission): its one event, from the hash.
  if (replies[1].elements.empty())
    if (auto e = submit_event_entry(fields[1].as_string())) replies[1].elements.push_back(std::move(*e));
  co_return make_json_response(http::status::ok, events_json(replies[1]));
}

net::awaitable<response> get_log(gateway_context& ctx, principal who, job_id id,
                                 std::string query) {
  int lines = default_log_lines;
  if (auto e = parse_log_query(query, lines)) co_return make_error_response(*e);
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(cmd("HGET", ctx.jobs->job_key(id), "descname"));
  cmds.push_back(
      cmd("XREVRANGE", ctx.jobs->job_key(id) + ":log", "+", "-", "COUNT", std::to_string(lines)));
  auto replies = co_await ctx.redis->async_pipeline(std::move(cmds));
  std::string owner = replies[0].is_nil() ? std::string() : replies[0].as_string();
  if (!may_read(who, id, owner)) co_return make_error_response(job_not_found(id));
  co_return make_json_response(http::status::ok, log_json(replies[1]));
}

net::awaitable<response> cancel_job(gateway_context& ctx, principal who, job_id id) {
  auto owner = co_await job_owner(ctx, id);
  if (!may_change(who, owner)) co_return make_error_response(job_not_found(id));
  auto tr = co_await ctx.jobs->async_cancel(id, who.name);
  if (!tr.ok) {
    if (tr.reason == refusal::terminal)
      co_return make_error_response(
          conflict("job " + std::to_string(id) + " is already " + tr.state +
                   "; only ready, dispatched or running jobs can be cancelled"));
    co_return make_error_response(job_not_found(id));
  }
  // The answer is the job as the cancel left it, read before the daemon hears of the cancel: a
  // worker can stop the job and report it within a millisecond of the notice, and a 202 that
  // already says "cancelled" would contradict its own status code.
  auto rec = co_await ctx.jobs->async_get(id);
  // Also for a ready job: the daemon then drops it from its in-memory queue at once.
  send_cancel(ctx, id);
  log::info("job cancel by={} job_id={} result={}", who.name, id, tr.state);
  if (!rec) co_return make_error_response(job_not_found(id));
  co_return job_response(tr.state == "cancelled" ? http::status::ok : http::status::accepted, *rec);
}

net::awaitable<response> archive_job(gateway_context& ctx, principal who, job_id id,
                                     bool archived) {
  auto owner = co_await job_owner(ctx, id);
  if (!may_change(who, owner)) co_return make_error_response(job_not_found(id));
  auto tr = co_await ctx.jobs->async_set_archive(id, archived);
  if (!tr.ok) co_return make_error_response(job_not_found(id));
  auto rec = co_await ctx.jobs->async_get(id);
  if (!rec) co_return make_error_response(job_not_found(id));
  co_return job_response(http::status::ok, *rec);
}

net::awaitable<response> delete_job(gateway_context& ctx, principal who, job_id id) {
  auto owner = co_await job_owner(ctx, id);
  if (!may_change(who, owner)) co_return make_error_response(job_not_found(id));
  auto tr = co_await ctx.jobs->async_delete(id);
  if (!tr.ok) {
    if (tr.reason == refusal::active)
      co_return make_error_response(
          conflict("job " + std::to_string(id) + " is " + tr.state + "; cancel it first"));
    co_return make_error_response(job_not_found(id));
  }
  log::info("job deleted by={} job_id={} state={}", who.name, id, tr.state);
  co_return no_content_response();
}

net::awaitable<response> claim_job(gateway_context& ctx, principal who, job_id id,
                                   std::string body) {
  boost::json::value v;
  if (auto e = parse_json_body(body, v)) co_return make_error_response(*e);
  std::string host;
  if (auto e = parse_claim_body(v, host)) co_return make_error_response(*e);
  auto rec = co_await ctx.jobs->async_get(id);
  if (!rec || !may_change(who, owner_of(*rec))) co_return make_error_response(job_not_found(id));
  std::string jobtype = field_of(*rec, "jobtype");
  const app_def* app = ctx.apps.find(jobtype);
  if (!app)
    co_return make_error_response(conflict("job " + std::to_string(id) + " has application '" +
                                           jobtype + "', which this gateway does not know"));
  std::string token = new_token();
  std::string worker = std::string(claim_worker_prefix) + host;
  auto tr = co_await ctx.jobs->async_claim(id, worker, claim_lease_s, sha256_hex(token),
                                           claim_token_ttl_s);
  if (!tr.ok) {
    if (tr.reason == refusal::illegal)
      co_return make_error_response(
          conflict("job " + std::to_string(id) + " is " + tr.state + ", not ready"));
    co_return make_error_response(job_not_found(id));
  }
  log::info("job claimed job_id={} worker={} attempt={} by={}", id, worker, tr.attempt, who.name);
  co_return make_json_response(http::status::ok, claim_json(tr, token, *app, id));
}

enum class report_kind { started, progress, finished };

// started / progress / finished of a claimed job. The worker is the claim's ("cli:<host>"): a
// job run by a daemon worker is never reported on through the gateway.
net::awaitable<response> report(gateway_context& ctx, principal who, job_id id, report_kind kind,
                                std::string body) {
  boost::json::value v;
  if (auto e = parse_json_body(body, v)) co_return make_error_response(*e);
  started_report started;
  progress_report progress;
  finished_report finished;
  std::string_view what = "started";
  if (kind == report_kind::started) {
    if (auto e = parse_started_body(v, started)) co_return make_error_response(*e);
  } else if (kind == report_kind::progress) {
    what = "progress";
    if (auto e = parse_progress_body(v, progress)) co_return make_error_response(*e);
  } else {
    what = "finished";
    if (auto e = parse_finished_body(v, finished)) co_return make_error_response(*e);
  }
  auto fields = co_await ctx.redis->async_exec(
      cmd("HMGET", ctx.jobs->job_key(id), "descname", "worker", "state"));
  std::string owner = fields.elements.size() == 3 ? fields.elements[0].as_string() : "";
  bool allowed = who.only_job ? may_read(who, id, owner) : may_change(who, owner);
  if (owner.empty() || !allowed) co_return make_error_response(job_not_found(id));
  std::string worker = fields.elements[1].as_string();
  if (worker.rfind(claim_worker_prefix, 0) != 0) {
    std::string by = worker.empty() ? std::string("nobody") : "worker " + worker;
    co_return make_error_response(
        conflict("job " + std::to_string(id) + " is " + fields.elements[2].as_string() +
                 " and not claimed (held by " + by + "); only a claimed job takes reports here"));
  }
  transition_result tr;
  if (kind == report_kind::started) {
    std::string host =
        started.host.empty() ? worker.substr(claim_worker_prefix.size()) : started.host;
    tr = co_await ctx.jobs->async_start(id, started.attempt, worker, host, started.rundir,
                                        started.pid);
  } else if (kind == report_kind::progress) {
    tr = co_await ctx.jobs->async_progress(id, progress.attempt, worker, progress.message,
                                           progress.done, progress.total);
  } else {
    auto out = classify_exit(finished.rc, finished.signal, finished.timed_out);
    tr = co_await ctx.jobs->async_finish(id, finished.attempt, worker, out.state, out.return_status,
                                         out.prefix, finished.message);
  }
  if (!tr.ok) {
    log::warn("report refused job_id={} report={} reason={} state={}", id, what, tr.reason,
              tr.state);
    if (tr.reason == refusal::missing) co_return make_error_response(job_not_found(id));
    co_return make_error_response(refused_report(id, tr, what));
  }
  co_return state_response(tr.state);
}

// GET /api/events: the caller's jobs (admins: all), optionally one job; with Last-Event-ID the
// global stream's newer entries are replayed first.
net::awaitable<handler_result> open_events_stream(gateway_context& ctx, principal who,
                                                  std::string query, std::string last_event_id) {
  std::optional<job_id> job;
  std::optional<stream_id> since;
  if (auto e = parse_events_query(query, job, since)) co_return as_result(error_response(*e));
  std::optional<stream_id> after;
  if (auto e = parse_last_event_id(last_event_id, after)) co_return as_result(error_response(*e));
  if (!after) after = since;
  if (!ctx.hub) co_return as_result(error_response(unavailable("live events are not available")));
  event_filter filter;
  if (!who.admin) filter.owner = who.name;
  if (job) {
    auto owner = co_await job_owner(ctx, *job);
    if (!may_read(who, *job, owner)) co_return as_result(error_response(job_not_found(*job)));
    filter.job = job;
  }
  if (auto e = stream_refusal(ctx, who)) co_return as_result(error_response(*e));
  // Subscribe before reading the history, so nothing falls between the two.
  auto sub = ctx.hub->subscribe(filter);
  sub->set_owner(who.name, who.session_hash, who.token_hash);
  std::string first(sse_preamble);
  if (after) {
    auto replay = co_await ctx.redis->async_exec(cmd("XREVRANGE", ctx.prefix + "events", "+",
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
net::awaitable<handler_result> open_job_stream(gateway_context& ctx, principal who, job_id id,
                                               std::string last_event_id) {
  std::optional<stream_id> after;
  if (auto e = parse_last_event_id(last_event_id, after)) co_return as_result(error_response(*e));
  if (!ctx.hub) co_return as_result(error_response(unavailable("live events are not available")));
  auto owner = co_await job_owner(ctx, id);
  if (!may_read(who, id, owner)) co_return as_result(error_response(job_not_found(id)));
  if (auto e = stream_refusal(ctx, who)) co_return as_result(error_response(*e));
  event_filter filter;
  filter.job = id;
  auto sub = ctx.hub->subscribe(filter);
  sub->set_owner(who.name, who.session_hash, who.token_hash);
  std::string from = after ? "(" + after->str() : std::string("-");
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(cmd("XREVRANGE", ctx.jobs->job_key(id) + ":events", "+", from, "COUNT",
                     std::to_string(max_events)));
  cmds.push_back(cmd("EXISTS", ctx.jobs->job_key(id) + ":events"));
  cmds.push_back(cmd("HGET", ctx.jobs->job_key(id), "create_time"));
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

// ---- the handlers of the route table (routes.cpp) ---------------------------------------------

net::awaitable<handler_result> healthz_get(call& c) {
  co_return as_result(healthz_response(c.ctx.redis && c.ctx.redis->connected()));
}
net::awaitable<handler_result> readyz_get(call& c) { co_return as_result(readyz_response(c.ctx)); }
net::awaitable<handler_result> metrics_get(call& c) {
  co_return as_result(co_await metrics_response(c.ctx));
}
net::awaitable<handler_result> version_get(call&) { co_return as_result(version_response()); }

net::awaitable<handler_result> events_stream(call& c) {
  co_return co_await open_events_stream(c.ctx, std::move(*c.who), std::move(c.query),
                                        std::string(c.req["Last-Event-ID"]));
}

net::awaitable<handler_result> jobs_create(call& c) {
  co_return as_result(co_await create_one(c.ctx, std::move(*c.who), std::move(c.req.body())));
}
net::awaitable<handler_result> jobs_list(call& c) {
  co_return as_result(co_await list_jobs(c.ctx, std::move(*c.who), std::move(c.query)));
}
net::awaitable<handler_result> jobs_create_bulk(call& c) {
  co_return as_result(co_await create_bulk(c.ctx, std::move(*c.who), std::move(c.req.body())));
}
net::awaitable<handler_result> jobs_get(call& c) {
  co_return as_result(co_await get_job(c.ctx, std::move(*c.who), c.params.id));
}
net::awaitable<handler_result> jobs_delete(call& c) {
  co_return as_result(co_await delete_job(c.ctx, std::move(*c.who), c.params.id));
}
net::awaitable<handler_result> jobs_events(call& c) {
  // ?follow=1 makes it a stream; a malformed query gets its 400 as JSON from get_events.
  bool follow = false;
  if (!parse_job_events_query(c.query, follow) && follow)
    co_return co_await open_job_stream(c.ctx, std::move(*c.who), c.params.id,
                                       std::string(c.req["Last-Event-ID"]));
  co_return as_result(co_await get_events(c.ctx, std::move(*c.who), c.params.id, std::move(c.query)));
}
net::awaitable<handler_result> jobs_log(call& c) {
  co_return as_result(co_await get_log(c.ctx, std::move(*c.who), c.params.id, std::move(c.query)));
}
net::awaitable<handler_result> jobs_cancel(call& c) {
  co_return as_result(co_await cancel_job(c.ctx, std::move(*c.who), c.params.id));
}
net::awaitable<handler_result> jobs_archive(call& c) {
  co_return as_result(co_await archive_job(c.ctx, std::move(*c.who), c.params.id, true));
}
net::awaitable<handler_result> jobs_unarchive(call& c) {
  co_return as_result(co_await archive_job(c.ctx, std::move(*c.who), c.params.id, false));
}
net::awaitable<handler_result> jobs_claim(call& c) {
  co_return as_result(co_await claim_job(c.ctx, std::move(*c.who), c.params.id, std::move(c.req.body())));
}
net::awaitable<handler_result> jobs_started(call& c) {
  co_return as_result(co_await report(c.ctx, std::move(*c.who), c.params.id, report_kind::started,
                                      std::move(c.req.body())));
}
net::awaitable<handler_result> jobs_progress(call& c) {
  co_return as_result(co_await report(c.ctx, std::move(*c.who), c.params.id, report_kind::progress,
                                      std::move(c.req.body())));
}
net::awaitable<handler_result> jobs_finished(call& c) {
  co_return as_result(co_await report(c.ctx, std::move(*c.who), c.params.id, report_kind::finished,
                                      std::move(c.req.body())));
}

}  // namespace detail

using namespace detail;

response make_json_response(http::status status, const boost::json::value& body) {
  response res(status, 11);
  res.set(http::field::server, "descprod-gateway/" DESCPROD_VERSION);
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  res.body() = boost::json::serialize(body);
  res.body() += '\n';
  res.prepare_payload();
  return res;
}

response make_error_response(const api_error& e) {
  auto res = make_json_response(static_cast<http::status>(e.status), error_json(e));
  if (e.status == 401) res.set(http::field::www_authenticate, "Bearer");
  if (e.status == 405 && !e.allow.empty()) res.set(http::field::allow, e.allow);
  if (e.status == 503) res.set(http::field::retry_after, "1");
  if (e.retry_after_s > 0) res.set(http::field::retry_after, std::to_string(e.retry_after_s));
  return res;
}

net::awaitable<handler_result> handle(gateway_context& ctx, request req, std::string peer) {
  unsigned version = req.version();
  bool keep_alive = req.keep_alive();
  handler_result out;
  bool redis_down = false;
  try {
    out = co_await route_request(ctx, std::move(req), std::move(peer));
  } catch (const boost::system::system_error& e) {
    // redis_client reports a lost connection (or none at all) as system_error.
    redis_down = true;
    log::warn("request failed: Redis unavailable error={}", e.code().message());
  } catch (const std::exception& e) {
    log::error("request failed unexpectedly error={}", e.what());
    out = as_result(make_error_response(internal_error("internal error; see the gateway log")));
  }
  if (redis_down) {
    if (ctx.on_redis_failure) ctx.on_redis_failure();
    out = as_result(make_error_response(unavailable("Redis is unavailable; retry shortly")));
  }
  out.res.version(version);
  if (out.stream) {
    // The stream ends with the connection: no Content-Length, no chunking, keep-alive off.
    out.res.keep_alive(false);
  } else {
    out.res.keep_alive(keep_alive);
    out.res.prepare_payload();
  }
  co_return out;
}

net::awaitable<response> handle_request(gateway_context& ctx, request req) {
  auto out = co_await handle(ctx, std::move(req));
  if (out.stream) {
    out.stream.reset();
    out.res.prepare_payload();
  }
  co_return std::move(out.res);
}

}  // namespace descprod::gateway
