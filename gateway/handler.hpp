// The gateway's request handler: one HTTP request in, one HTTP response out. It needs no socket,
// so tests call handle_request directly; the server (server.hpp) only moves bytes.
//
// Thread-safety: none; the context and everything it points to belong to one io_context thread.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/accounts.hpp"
#include "core/config.hpp"
#include "core/redis.hpp"
#include "core/store.hpp"
#include "gateway/api.hpp"
#include "gateway/events.hpp"
#include "gateway/metrics.hpp"

namespace descprod::gateway {

namespace net = boost::asio;
namespace http = boost::beast::http;

class auth_cache;
struct request_guard;
class submit_notices;
class create_batcher;
class creation_summary;
namespace oidc {
class registry;
}

using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

// What a request handler needs. The pointers are owned elsewhere and outlive every request.
struct gateway_context {
  gateway_config config;
  std::string prefix = "descprod:";  // Redis key prefix
  app_registry apps;
  redis_client* redis = nullptr;
  store* jobs = nullptr;
  // Queues a message for the daemon ([command][json] frames); false when it could not be queued.
  // Empty: notices are dropped (the daemon also reconciles from Redis).
  std::function<bool(const std::vector<std::string>&)> send_to_daemon;
  // When set, `submitted` notices go through it (several jobs, and several requests, per ZeroMQ
  // message: one message per event-loop turn); null: one message per chunk via send_to_daemon.
  submit_notices* notices = nullptr;
  // When set, single-job creates without a parent go through it (one script call for the creates
  // of one event-loop turn); null: one script call per request.
  create_batcher* creates = nullptr;
  // Bearer tokens checked recently (auth_cache.hpp); null: every request looks its token up.
  auth_cache* tokens = nullptr;
  // When set, single-job creates are summed up in it (an info line every few seconds, a debug
  // line per job); null: an info line per request.
  creation_summary* created = nullptr;
  // Called after a Redis call failed with a connection error; wakes the reconnect loop.
  std::function<void()> on_redis_failure;
  // Epoch seconds (token expiry). Empty: the system clock.
  std::function<double()> now;
  // The live event feed for Server-Sent Events; null: the stream routes answer 503.
  event_hub* hub = nullptr;
  // Whether the daemon link has been welcomed (GET /readyz). Empty: never ready.
  std::function<bool()> daemon_ready;
  // Whether Redis serves (GET /readyz): connected and answering PING, which it refuses while
  // LOADING, BUSY or unable to persist (MISCONF: it refuses writes). Empty: connected is enough.
  std::function<bool()> redis_ready;
  // Where password hashing (Argon2id, tens of ms and MiB) runs off the io_context thread. Null:
  // on the calling thread (unit tests).
  net::thread_pool* blocking = nullptr;
  // Login and registration throttles and the hashing admission (guard.hpp); null: none (unit
  // tests).
  request_guard* guard = nullptr;
  // The OpenID Connect providers of gateway.oidc and what was fetched from them (oidc.hpp); null:
  // none configured.
  oidc::registry* oidc = nullptr;
  // Whether this gateway serves HTTPS (cookies get the Secure attribute).
  bool tls = false;
  // This process's request metrics (the server observes every answer); null: none kept.
  metrics::http_metrics* http_metrics = nullptr;
  // The process's own state for GET /metrics (connections, links). Empty: not exported.
  std::function<metrics::gateway_snapshot()> gateway_state;
  // Scans of GET /api/jobs running now (a filter, a sort or owner=*: each may read 200,000 jobs),
  // in all and by user: jobs_service admits at most max_scans_per_user and max_scans at once.
  int scans_running = 0;
  // Whether the owners' indexes derived from their jobs (<prefix>user:<name>:active and :find) are
  // complete: set by the state count keeper once a recount has derived them (services.hpp). Until
  // then the Active view (archived=0) and every scan of an owner's jobs read each job's hash.
  bool owner_indexes_ready = false;
  std::map<std::string, int, std::less<>> scans_by_user;
  // Users' quotas as last read (<prefix>user:<name>:quota), each kept quota_cache_ttl; cleared
  // whole when it holds max_throttle_keys users.
  struct cached_quota {
    user_quota quota;
    std::chrono::steady_clock::time_point read;
  };
  std::map<std::string, cached_quota, std::less<>> quotas;
};

// What the handler produced: a response, or the start of a Server-Sent Events stream. With
// `stream` set, `res` is the stream's header (200, text/event-stream, no Content-Length,
// keep-alive off) and its body the first bytes to send (retry line and replayed history); the
// server then sends what the subscription delivers until the client or the server goes.
struct handler_result {
  response res;
  std::shared_ptr<event_subscription> stream;
};

// A JSON response with Content-Type application/json and Cache-Control no-store.
response make_json_response(http::status status, const boost::json::value& body);
// An error response {"error","detail"}: adds WWW-Authenticate on 401, Allow on 405 and
// Retry-After on 503 (and whenever retry_after_s is set).
response make_error_response(const api_error& e);

// Answers one request. Never throws: a Redis connection failure becomes 503 "unavailable" (and
// calls on_redis_failure), anything unexpected 500 "internal" (logged once). The response's
// version and keep-alive follow the request's (a stream's keep-alive is always off). `peer` is
// the client's address (the throttles count by it; empty: unknown).
net::awaitable<handler_result> handle(gateway_context& ctx, request req, std::string peer = {});

// handle() for callers that cannot stream (tests): a stream is dropped at once and its first
// bytes (retry line and history) are answered as a complete text/event-stream body.
net::awaitable<response> handle_request(gateway_context& ctx, request req);

}  // namespace descprod::gateway
