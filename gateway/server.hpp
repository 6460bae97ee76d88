// The HTTP/1.1 server: a listener coroutine and one session coroutine per connection, in the
// shape of Boost.Beast's awaitable examples (plain TCP, or TLS when given an SSL context). Sessions read one request at a time (keep-alive),
// hand it to handle_request and write the answer; limits come from gateway_config.
//
// Thread-safety: none; the server belongs to one io_context thread.
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <string>

#include "gateway/handler.hpp"

namespace descprod::gateway {

namespace net = boost::asio;

// Request header limit (bytes) and the most connections served at once; more are closed at accept.
inline constexpr std::size_t max_header_bytes = 16 * 1024;
inline constexpr std::size_t max_connections = 4096;

class server {
 public:
  // With `tls` (owned by the caller, outliving the server) every connection speaks HTTPS.
  server(net::any_io_executor ex, gateway_context& ctx, net::ssl::context* tls = nullptr);

  // Binds and listens on address:port (port 0: any free port) and returns the bound port.
  // Throws std::runtime_error naming the address on failure.
  std::uint16_t bind(const std::string& address, std::uint16_t port);
  // Spawns the listener.
  void start();
  // Stops accepting, closes idle connections at once and busy ones after their current answer;
  // returns when all are gone or after `grace`.
  net::awaitable<void> async_shutdown(std::chrono::milliseconds grace);
  std::size_t connections() const { return sessions_->size(); }

 private:
  struct session_state;
  net::awaitable<void> listen();
  net::awaitable<void> session(net::ip::tcp::socket socket);
  // One connection's request loop on a plain or TLS stream.
  template <class Stream>
  net::awaitable<void> serve(Stream* stream);

  net::any_io_executor ex_;
  gateway_context& ctx_;
  net::ssl::context* tls_ = nullptr;
  net::ip::tcp::acceptor acceptor_;
  std::shared_ptr<std::list<session_state*>> sessions_;
  bool stopping_ = false;
};

}  // namespace descprod::gateway
