// The request handler's entry (handler.hpp): one request through the route table (router.cpp),
// Redis failures turned into 503 and anything unexpected into 500; the JSON answers every route
// shares (make_json_response, make_error_response); and the service routes (health, readiness,
// version, metrics). The routes themselves live by resource: jobs_api.cpp, event_streams.cpp,
// accounts_api.cpp, pages.cpp; authentication in auth.cpp.
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

double now_s(const gateway_context& ctx) {
  if (ctx.now) return ctx.now();
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

handler_result answer(response res) {
  handler_result out;
  out.res = std::move(res);
  return out;
}

handler_result json_answer(http::status status, const boost::json::value& body) {
  return answer(make_json_response(status, body));
}

handler_result error_answer(const api_error& e) { return answer(make_error_response(e)); }

response readyz_response(const gateway_context& ctx) {
  std::string why;
  if (!ctx.redis || !ctx.redis->connected()) why = "the gateway is not connected to Redis";
  else if (ctx.redis_ready && !ctx.redis_ready())
    why = "Redis is not serving (loading its data, busy, or refusing writes)";
  else if (!ctx.daemon_ready) why = "the gateway has no daemon link";
  else if (!ctx.daemon_ready()) why = "the daemon has not welcomed the gateway yet";
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

response no_content_response() {
  response res(http::status::no_content, 11);
  res.set(http::field::server, "descprod-gateway/" DESCPROD_VERSION);
  res.set(http::field::cache_control, "no-store");
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

// ---- the handlers of the route table (routes.cpp) ---------------------------------------------

net::awaitable<handler_result> healthz_get(call& c) {
  co_return answer(healthz_response(c.ctx.redis && c.ctx.redis->connected()));
}
net::awaitable<handler_result> readyz_get(call& c) { co_return answer(readyz_response(c.ctx)); }
net::awaitable<handler_result> metrics_get(call& c) { co_return answer(co_await metrics_response(c.ctx)); }
net::awaitable<handler_result> version_get(call&) { co_return answer(version_response()); }

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
  auto res = make_json_response(static_cast<http::status>(e.status()), error_json(e));
  if (e.code == errc::unauthorized) res.set(http::field::www_authenticate, "Bearer");
  if (e.code == errc::method_not_allowed && !e.allow.empty()) res.set(http::field::allow, e.allow);
  if (e.code == errc::unavailable) res.set(http::field::retry_after, "1");
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
    out = error_answer(internal_error("internal error; see the gateway log"));
  }
  if (redis_down) {
    if (ctx.on_redis_failure) ctx.on_redis_failure();
    out = error_answer(unavailable("Redis is unavailable; retry shortly"));
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

// ---- answers from Redis replies (api.hpp) --------------------------------------------------------------------------------

job_record record_from_reply(const redis_reply& r) {
  job_record out;
  if (r.type != redis_reply::kind::array) return out;
  for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2)
    out[r.elements[i].as_string()] = r.elements[i + 1].as_string();
  return out;
}

std::vector<job_record> records_from_replies(const std::vector<redis_reply>& replies) {
  std::vector<job_record> out;
  out.reserve(replies.size());
  for (const auto& r : replies) {
    auto rec = record_from_reply(r);
    if (!rec.empty()) out.push_back(std::move(rec));
  }
  return out;
}

std::vector<std::string> reply_strings(const redis_reply& r) {
  std::vector<std::string> out;
  out.reserve(r.elements.size());
  for (const auto& e : r.elements) out.push_back(e.as_string());
  return out;
}

std::vector<std::vector<std::string>> hgetall_each(const std::vector<std::string>& keys) {
  std::vector<std::vector<std::string>> cmds;
  cmds.reserve(keys.size());
  for (const auto& k : keys) cmds.push_back(redis_cmd("HGETALL", k));
  return cmds;
}

boost::json::object submitted_body(const std::vector<job_id>& ids, const std::vector<job_request>& jobs,
                                   std::size_t first, const std::string& owner) {
  boost::json::array list;
  list.reserve(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    boost::json::array pair;
    pair.push_back(ids[i]);
    pair.push_back(first + i < jobs.size() ? jobs[first + i].priority : 0);
    pair.push_back(boost::json::string(owner));
    if (first + i < jobs.size() && !jobs[first + i].sites.empty())
      pair.push_back(boost::json::string(jobs[first + i].sites));
    list.push_back(std::move(pair));
  }
  boost::json::object o;
  o["jobs"] = std::move(list);
  return o;
}

}  // namespace descprod::gateway
