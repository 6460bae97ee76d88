// The request handler: routing, authentication against the token and user hashes in Redis, and
// the job routes. Pure checks live in api.cpp; this file does the Redis round trips and builds
// responses. GCC 12 coroutine rules (STYLE.md) apply: no braced temporaries and no lambdas in
// coroutine bodies, so commands and JSON bodies are built by the plain helpers at the top.
#include "gateway/handler.hpp"

#include <algorithm>
#include <chrono>
#include <set>

#include "core/crypto.hpp"
#include "core/log.hpp"
#include "core/protocol.hpp"

// GCC 12 false positive: when a coroutine's ramp is inlined into another coroutine it pairs
// Asio's recycling frame allocator (aligned_new) with the frame's operator delete and warns
// -Wmismatched-new-delete. The pair is correct (awaitable_frame_base defines both).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace descprod::gateway {

namespace {

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

api_error job_token_refused(const principal& who) {
  return forbidden("this token only reads job " + std::to_string(*who.only_job) +
                   "; use an API token of scope user");
}

response method_not_allowed(route_kind k, std::string_view method) {
  api_error e;
  e.status = 405;
  e.error = "method_not_allowed";
  e.detail = "method " + std::string(method.substr(0, 16)) +
             " is not allowed here; allowed: " + std::string(allowed_methods(k));
  e.allow = std::string(allowed_methods(k));
  return make_error_response(e);
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

response created_job_response(job_id id, const std::optional<job_record>& rec) {
  boost::json::object body;
  if (rec) {
    body = job_to_json(*rec);
  } else {
    body["id"] = id;
  }
  auto res = make_json_response(http::status::created, body);
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
  for (const auto& id : ids) cmds.push_back(cmd("HMGET", s.key("job:" + id), "state", "jobtype"));
  return cmds;
}

std::vector<std::string> reply_strings(const redis_reply& r) {
  std::vector<std::string> out;
  out.reserve(r.elements.size());
  for (const auto& e : r.elements) out.push_back(e.as_string());
  return out;
}

bool matches_filter(const redis_reply& hmget, const list_query& q) {
  if (hmget.elements.size() != 2 || hmget.elements[0].is_nil()) return false;
  if (q.state && hmget.elements[0].as_string() != to_string(*q.state)) return false;
  if (!q.jobtype.empty() && hmget.elements[1].as_string() != q.jobtype) return false;
  return true;
}

void notify_daemon(gateway_context& ctx, const std::vector<job_id>& ids,
                   const std::vector<job_request>& reqs, std::size_t first) {
  if (!ctx.send_to_daemon) return;
  auto frames = protocol::encode(protocol::submitted, submitted_body(ids, reqs, first));
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

struct auth_result {
  std::optional<principal> who;
  api_error error;
};

net::awaitable<auth_result> authenticate(gateway_context& ctx, std::string header) {
  auth_result out;
  auto token = bearer_token(header);
  if (!token) {
    out.error =
        unauthorized(header.empty() ? "missing Authorization: Bearer <token> header"
                                    : "malformed Authorization header; expected Bearer <token>");
    co_return out;
  }
  auto tok =
      co_await ctx.redis->async_exec(cmd("HGETALL", ctx.prefix + "token:" + sha256_hex(*token)));
  principal who;
  if (auto e = check_token(record_from_reply(tok), now_s(ctx), who)) {
    out.error = *e;
    co_return out;
  }
  auto user = co_await ctx.redis->async_exec(cmd("HGETALL", ctx.prefix + "user:" + who.name));
  if (auto e = check_user(record_from_reply(user), who)) {
    out.error = *e;
    co_return out;
  }
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
  for (std::size_t first = 0; first < reqs.size(); first += bulk_chunk_jobs) {
    std::size_t n = std::min(bulk_chunk_jobs, reqs.size() - first);
    std::vector<job_id> ids;
    transition_result tr;
    bool redis_failed = false;
    std::string failure;
    try {
      tr = co_await ctx.jobs->async_create(who.name, to_new_jobs(reqs, first, n), ids);
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
      if (created.empty() && tr.reason == "bad_parent" && !parents.empty())
        co_return make_error_response(
            parent_not_found(parents.front().first, bulk, parents.front().second));
      if (created.empty())
        co_return make_error_response(internal_error("the store refused the jobs: " + tr.reason));
      co_return partial_bulk_failure(created, reqs.size(),
                                     "the store refused a chunk (" + tr.reason + ")");
    }
    notify_daemon(ctx, ids, reqs, first);
    created.insert(created.end(), ids.begin(), ids.end());
  }
  log::info("jobs created owner={} count={} first_id={}", who.name, created.size(),
            created.empty() ? 0 : created.front());
  if (bulk) co_return created_bulk_response(created);
  auto rec = co_await ctx.jobs->async_get(created.front());
  co_return created_job_response(created.front(), rec);
}

net::awaitable<response> create_one(gateway_context& ctx, principal who, std::string body) {
  if (who.only_job) co_return make_error_response(job_token_refused(who));
  boost::json::value v;
  if (auto e = parse_json_body(body, v)) co_return make_error_response(*e);
  job_request jr;
  if (auto e = validate_job(v, ctx.apps, jr)) co_return make_error_response(*e);
  std::vector<job_request> reqs;
  reqs.push_back(std::move(jr));
  co_return co_await create_jobs(ctx, std::move(who), std::move(reqs), false);
}

net::awaitable<response> create_bulk(gateway_context& ctx, principal who, std::string body) {
  if (who.only_job) co_return make_error_response(job_token_refused(who));
  boost::json::value v;
  if (auto e = parse_json_body(body, v)) co_return make_error_response(*e);
  std::vector<job_request> reqs;
  if (auto e = validate_bulk(v, ctx.apps, ctx.config.max_bulk_jobs, reqs))
    co_return make_error_response(*e);
  v = nullptr;  // free the parsed body before the (possibly long) creation
  co_return co_await create_jobs(ctx, std::move(who), std::move(reqs), true);
}

net::awaitable<response> list_jobs(gateway_context& ctx, principal who, std::string query) {
  if (who.only_job) co_return make_error_response(job_token_refused(who));
  list_query q;
  if (auto e = parse_list_query(query, q)) co_return make_error_response(*e);
  std::string index = ctx.prefix + "user:" + who.name + ":jobs";
  if (!q.filtered()) {
    std::vector<std::vector<std::string>> cmds;
    cmds.push_back(cmd("ZCARD", index));
    cmds.push_back(
        cmd("ZREVRANGE", index, std::to_string(q.offset), std::to_string(q.offset + q.limit - 1)));
    auto replies = co_await ctx.redis->async_pipeline(std::move(cmds));
    auto ids = reply_strings(replies[1]);
    auto records = co_await ctx.redis->async_pipeline(hgetall_cmds(*ctx.jobs, ids));
    co_return list_response(records, replies[0].as_integer(), q, std::nullopt, false);
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
  std::vector<std::string> page;
  for (auto i = static_cast<std::size_t>(
           std::min<long long>(q.offset, static_cast<long long>(matches.size())));
       i < matches.size() && page.size() < static_cast<std::size_t>(q.limit); ++i)
    page.push_back(matches[i]);
  auto records = co_await ctx.redis->async_pipeline(hgetall_cmds(*ctx.jobs, page));
  co_return list_response(records, static_cast<long long>(matches.size()), q, window,
                          all > static_cast<long long>(window));
}

net::awaitable<response> get_job(gateway_context& ctx, principal who, job_id id) {
  auto rec = co_await ctx.jobs->async_get(id);
  if (!rec || !may_read(who, id, owner_of(*rec))) co_return make_error_response(job_not_found(id));
  co_return make_json_response(http::status::ok, job_to_json(*rec));
}

net::awaitable<response> get_events(gateway_context& ctx, principal who, job_id id) {
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(cmd("HGET", ctx.jobs->job_key(id), "descname"));
  cmds.push_back(cmd("XRANGE", ctx.jobs->job_key(id) + ":events", "-", "+", "COUNT",
                     std::to_string(max_events)));
  auto replies = co_await ctx.redis->async_pipeline(std::move(cmds));
  std::string owner = replies[0].is_nil() ? std::string() : replies[0].as_string();
  if (!may_read(who, id, owner)) co_return make_error_response(job_not_found(id));
  co_return make_json_response(http::status::ok, events_json(replies[1]));
}

net::awaitable<response> dispatch(gateway_context& ctx, request req) {
  auto target = split_target(req.target());
  route r = match_route(target.path);
  if (r.kind == route_kind::not_found) {
    bool api = target.path.rfind("/api/", 0) == 0;
    co_return make_error_response(not_found(api ? "no such API route" : "no such page"));
  }
  if (!method_allowed(r.kind, req.method_string()))
    co_return method_not_allowed(r.kind, req.method_string());
  if (r.kind == route_kind::healthz)
    co_return healthz_response(ctx.redis && ctx.redis->connected());

  auto auth = co_await authenticate(ctx, std::string(req[http::field::authorization]));
  if (!auth.who) co_return make_error_response(auth.error);
  principal who = std::move(*auth.who);

  switch (r.kind) {
    case route_kind::version: co_return version_response();
    case route_kind::jobs:
      if (req.method() == http::verb::post)
        co_return co_await create_one(ctx, std::move(who), std::move(req.body()));
      co_return co_await list_jobs(ctx, std::move(who), std::move(target.query));
    case route_kind::jobs_bulk:
      co_return co_await create_bulk(ctx, std::move(who), std::move(req.body()));
    case route_kind::job: co_return co_await get_job(ctx, std::move(who), r.id);
    case route_kind::job_events: co_return co_await get_events(ctx, std::move(who), r.id);
    default: break;
  }
  co_return make_error_response(not_found("no such API route"));
}

}  // namespace

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
  return res;
}

net::awaitable<response> handle_request(gateway_context& ctx, request req) {
  unsigned version = req.version();
  bool keep_alive = req.keep_alive();
  response res;
  bool redis_down = false;
  try {
    res = co_await dispatch(ctx, std::move(req));
  } catch (const boost::system::system_error& e) {
    // redis_client reports a lost connection (or none at all) as system_error.
    redis_down = true;
    log::warn("request failed: Redis unavailable error={}", e.code().message());
  } catch (const std::exception& e) {
    log::error("request failed unexpectedly error={}", e.what());
    res = make_error_response(internal_error("internal error; see the gateway log"));
  }
  if (redis_down) {
    if (ctx.on_redis_failure) ctx.on_redis_failure();
    res = make_error_response(unavailable("Redis is unavailable; retry shortly"));
  }
  res.version(version);
  res.keep_alive(keep_alive);
  res.prepare_payload();
  co_return res;
}

}  // namespace descprod::gateway
