// The gateway's request handler: one HTTP request in, one HTTP response out. It needs no socket,
// so tests call handle_request directly; the server (server.hpp) only moves bytes.
//
// Thread-safety: none; the context and everything it points to belong to one io_context thread.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <functional>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/redis.hpp"
#include "core/store.hpp"
#include "gateway/api.hpp"

namespace descprod::gateway {

namespace net = boost::asio;
namespace http = boost::beast::http;

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
  // Called after a Redis call failed with a connection error; wakes the reconnect loop.
  std::function<void()> on_redis_failure;
  // Epoch seconds (token expiry). Empty: the system clock.
  std::function<double()> now;
};

// A JSON response with Content-Type application/json and Cache-Control no-store.
response make_json_response(http::status status, const boost::json::value& body);
// An error response {"error","detail"}: adds WWW-Authenticate on 401, Allow on 405 and
// Retry-After on 503.
response make_error_response(const api_error& e);

// Answers one request. Never throws: a Redis connection failure becomes 503 "unavailable" (and
// calls on_redis_failure), anything unexpected 500 "internal" (logged once). The response's
// version and keep-alive follow the request's.
net::awaitable<response> handle_request(gateway_context& ctx, request req);

}  // namespace descprod::gateway
