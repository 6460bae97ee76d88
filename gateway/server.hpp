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
#include <map>
#include <memory>
#include <string>

#include "gateway/handler.hpp"

namespace descprod::gateway {

namespace net = boost::asio;

// Request header limit (bytes).
inline constexpr std::size_t max_header_bytes = 16 * 1024;
// HSTS under TLS: browsers keep to HTTPS for a year.
inline constexpr const char* strict_transport_security = "max-age=31536000";

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
  // Connections refused at accept (global cap) and answered 429 (per-address cap) so far.
  std::size_t refused_connections() const { return refused_total_; }

 private:
  struct session_state;
  // Connections of one client address: served, and being answered 429.
  struct address_load {
    std::size_t served = 0;
    std::size_t refused = 0;
  };
  net::awaitable<void> listen();
  // Every sweep_interval while under pressure: close_idle.
  net::awaitable<void> sweep();
  net::awaitable<void> session(net::ip::tcp::socket socket, net::ip::address peer, bool refuse);
  // One connection's request loop on a plain or TLS stream; `refuse`: answer 429 at once (the
  // address is over its cap) and close.
  template <class Stream>
  net::awaitable<void> serve(Stream* stream, net::ip::address peer, bool refuse);
  // With half of max_connections in use, idle connections wait for a request header only
  // busy_header_timeout; close those already idle longer.
  bool under_pressure() const;
  void close_idle(std::chrono::steady_clock::time_point now);
  void note_refusal(const char* why, const net::ip::address& peer);

  net::any_io_executor ex_;
  gateway_context& ctx_;
  net::ssl::context* tls_ = nullptr;
  net::ip::tcp::acceptor acceptor_;
  std::shared_ptr<std::list<session_state*>> sessions_;
  std::shared_ptr<std::map<net::ip::address, address_load>> loads_;
  std::chrono::steady_clock::time_point last_sweep_{};
  std::chrono::steady_clock::time_point last_refusal_log_{};
  std::size_t refused_since_log_ = 0;
  std::size_t refused_total_ = 0;
  bool stopping_ = false;
};

}  // namespace descprod::gateway
