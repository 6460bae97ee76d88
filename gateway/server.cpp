// The Beast listener and sessions. This is the only translation unit with Beast's parser and
// serializer templates (they are slow to compile). Expected I/O outcomes (peer closed, idle
// timeout, limits) are values via as_tuple; anything else is logged once by the spawn handler.
//
// Caveats: "Expect: 100-continue" is answered by hand so curl does not stall a second before a
// large body; after refusing a request mid-body (413) the rest of the body is drained briefly so
// the client reads the answer instead of a connection reset.
//
// TLS: with an SSL context every connection first completes a handshake (10 s limit; a failed one
// is logged at debug level and closed) and ends with close_notify (bounded by error_linger).
//
// Server-Sent Events: the header is written with an empty_body serializer (no Content-Length, no
// chunking, Connection: close), then the event text is written raw as it arrives; the stream ends
// with the connection. The idle timeout does not apply to a stream: only each write has a deadline
// (the slow-client limit, gateway.idle_timeout), and an idle stream gets a keepalive comment every
// 15 s. A client that went away is noticed at the next write.
//
// Connection caps (issue 13): at most gateway.max_connections at once (fitted under the
// descriptor limit at start; beyond it a new connection is closed at accept), and per client
// address gateway.max_connections_per_address: a connection beyond that is answered 429 with
// Retry-After at once and closed (and beyond twice that, closed at accept), so one address
// cannot take the others' places. With half of max_connections in use, a connection waiting for
// a request header (a fresh one, or an idle keep-alive one) is closed after
// gateway.busy_header_timeout instead of idle_timeout. Event streams are capped in the handler
// (guard.hpp) below max_connections, which keeps the rest for short requests.
#include "gateway/server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <exception>
#include <type_traits>

#include "core/async_util.hpp"
#include "core/log.hpp"
#include "gateway/metrics.hpp"

namespace descprod::gateway {

namespace beast = boost::beast;
using tcp = net::ip::tcp;

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
// Time allowed to write an error answer and drain an unread body before closing (ms).
constexpr std::chrono::milliseconds error_linger{1000};
// Unread body bytes discarded at most after a refusal.
constexpr std::size_t max_drain_bytes = 4 * 1024 * 1024;
// Pause after a failed accept (e.g. out of descriptors) so the loop does not spin.
constexpr std::chrono::milliseconds accept_retry_delay{100};
// Retry-After of a connection refused for its address's cap (s).
constexpr long long connection_retry_after_s = 5;
// Least time between two sweeps of idle connections, and between two refusal log lines.
constexpr std::chrono::milliseconds sweep_interval{250};
constexpr std::chrono::milliseconds refusal_log_interval{5000};

bool peer_gone(const boost::system::error_code& ec) {
  return ec == http::error::end_of_stream || ec == http::error::partial_message || ec == net::error::eof ||
         ec == net::error::connection_reset || ec == net::error::broken_pipe ||
         ec == net::error::operation_aborted || ec == net::error::bad_descriptor ||
         ec == beast::error::timeout;
}

// The answer to a request that could not be read, or nullopt when the connection just closes.
std::optional<api_error> read_failure(const boost::system::error_code& ec, std::size_t max_body) {
  if (peer_gone(ec)) return std::nullopt;
  if (ec == http::error::body_limit) {
    api_error e;
    e.code = errc::payload_too_large;
    e.detail = "request body is larger than " + std::to_string(max_body) + " bytes";
    return e;
  }
  if (ec == http::error::header_limit) {
    api_error e;
    e.code = errc::header_too_large;
    e.detail = "request header is larger than " + std::to_string(max_header_bytes) + " bytes";
    return e;
  }
  if (ec.category() == http::make_error_code(http::error::bad_target).category())
    return bad_request("malformed HTTP request: " + ec.message());
  return std::nullopt;
}

bool expects_continue(const request& req) {
  auto v = req[http::field::expect];
  return beast::iequals(v, "100-continue");
}

// Time a client has to complete the TLS handshake.
constexpr std::chrono::milliseconds tls_handshake_timeout{10000};

// Bytes of queued events sent in one write.
constexpr std::size_t sse_write_batch = 256 * 1024;

http::response<http::empty_body> stream_header(const response& res) {
  http::response<http::empty_body> head;
  head.base() = res.base();
  head.erase(http::field::content_length);
  head.erase(http::field::transfer_encoding);
  return head;
}

// Serves one event stream on `stream` until the client goes, the subscription closes (slow
// client, shutdown) or *stopping becomes true.
template <class Stream>
net::awaitable<void> serve_event_stream(Stream* stream, handler_result result,
                                        std::chrono::milliseconds write_timeout, const bool* stopping) {
  auto sub = result.stream;
  auto& lowest = beast::get_lowest_layer(*stream);
  boost::system::error_code ignored;
  lowest.socket().set_option(tcp::no_delay(true), ignored);  // events are small; send at once
  auto head = stream_header(result.res);
  http::response_serializer<http::empty_body> sr(head);
  lowest.expires_after(write_timeout);
  auto [hec, hn] = co_await http::async_write_header(*stream, sr, use_tuple);
  if (hec) co_return;
  // An SSE client sends nothing after its request, so the socket turning readable means it closed
  // (or misbehaves): end the stream at once rather than at the next failed write. The handler
  // holds no reference to the stream, so it may run after the session is gone.
  auto watching = std::make_shared<bool>(true);
  lowest.socket().async_wait(tcp::socket::wait_read, [sub, watching](const boost::system::error_code& ec) {
    if (*watching && !ec) sub->close("the client closed the stream");
  });
  std::string out = std::move(result.res.body());
  auto keepalive_at = std::chrono::steady_clock::now() + sse_keepalive_interval;
  while (!*stopping && !sub->closed()) {
    if (out.empty()) sub->take(out, sse_write_batch);
    if (out.empty()) {
      if (std::chrono::steady_clock::now() < keepalive_at) {
        lowest.expires_never();
        co_await sub->async_wait(keepalive_at);
        continue;
      }
      out = sse_keepalive;
    }
    lowest.expires_after(write_timeout);
    auto [ec, n] = co_await net::async_write(*stream, net::buffer(out), use_tuple);
    if (ec) {
      if (!peer_gone(ec)) log::warn("event stream write failed error={}", ec.message());
      break;
    }
    out.clear();
    keepalive_at = std::chrono::steady_clock::now() + sse_keepalive_interval;
  }
  *watching = false;
  lowest.socket().cancel(ignored);
  if (sub->closed() && !*stopping && sub->close_reason() != "the client closed the stream")
    log::warn("event stream closed reason={}", sub->close_reason());
}

// Records one answered request in `m` (when kept), timed from `started`.
void observe(metrics::http_metrics* m, const std::string& method, std::string_view route, unsigned status,
             std::chrono::steady_clock::time_point started) {
  if (!m) return;
  m->observe(method, route, status,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

}  // namespace

struct server::session_state {
  beast::tcp_stream* stream = nullptr;
  bool busy = false;
  std::shared_ptr<event_subscription> events;  // set while serving an event stream
  std::chrono::steady_clock::time_point idle_since = std::chrono::steady_clock::now();
};

server::server(net::any_io_executor ex, gateway_context& ctx, net::ssl::context* tls)
    : ex_(ex),
      ctx_(ctx),
      tls_(tls),
      acceptor_(ex),
      sessions_(std::make_shared<std::list<session_state*>>()),
      loads_(std::make_shared<std::map<net::ip::address, address_load>>()) {}

bool server::under_pressure() const { return sessions_->size() * 2 >= ctx_.config.max_connections; }

void server::close_idle(std::chrono::steady_clock::time_point now) {
  if (now - last_sweep_ < sweep_interval / 2) return;
  last_sweep_ = now;
  std::size_t closed = 0;
  for (auto* s : *sessions_) {
    if (s->busy || s->events || now - s->idle_since < ctx_.config.busy_header_timeout) continue;
    s->stream->cancel();  // its header read ends with operation_aborted: the session closes
    ++closed;
  }
  if (closed > 0)
    log::warn("idle connections closed under pressure count={} connections={}", closed, sessions_->size());
}

void server::note_refusal(const char* why, const net::ip::address& peer) {
  ++refused_total_;
  ++refused_since_log_;
  auto now = std::chrono::steady_clock::now();
  if (now - last_refusal_log_ < refusal_log_interval) return;
  log::warn("connections refused reason={} last_address={} count={} connections={}", why, peer.to_string(),
            refused_since_log_, sessions_->size());
  refused_since_log_ = 0;
  last_refusal_log_ = now;
}

std::uint16_t server::bind(const std::string& address, std::uint16_t port) {
  boost::system::error_code ec;
  tcp::resolver resolver(ex_);
  auto results = resolver.resolve(address, std::to_string(port), tcp::resolver::passive, ec);
  if (ec || results.empty())
    throw std::runtime_error("cannot resolve gateway address " + address + ": " + ec.message());
  tcp::endpoint ep = results.begin()->endpoint();
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::runtime_error("cannot listen on " + address + ":" + std::to_string(port) + ": " +
                             ec.message());
  return acceptor_.local_endpoint().port();
}

net::awaitable<void> server::sweep() {
  net::steady_timer timer(ex_);
  while (!stopping_) {
    timer.expires_after(sweep_interval);
    co_await timer.async_wait(use_tuple);
    if (!stopping_ && under_pressure()) close_idle(std::chrono::steady_clock::now());
  }
}

void server::start() {
  spawn_logged(ex_, sweep(), "idle connection sweep", [this] { return stopping_; });
  spawn_logged(ex_, listen(), "listener", [this] { return stopping_; });
}

net::awaitable<void> server::listen() {
  net::steady_timer pause(ex_);
  while (!stopping_) {
    auto [ec, socket] = co_await acceptor_.async_accept(use_tuple);
    if (stopping_ || ec == net::error::operation_aborted) co_return;
    if (ec) {
      log::warn("accept failed error={}", ec.message());
      pause.expires_after(accept_retry_delay);
      co_await pause.async_wait(use_tuple);
      continue;
    }
    boost::system::error_code pec;
    auto peer = socket.remote_endpoint(pec).address();
    if (pec) {  // already gone
      boost::system::error_code ignored;
      socket.close(ignored);
      continue;
    }
    auto now = std::chrono::steady_clock::now();
    if (under_pressure()) close_idle(now);
    auto& load = (*loads_)[peer];
    std::size_t per_address = ctx_.config.max_connections_per_address;
    bool refuse = load.served >= per_address;
    if (sessions_->size() >= ctx_.config.max_connections || (refuse && load.refused >= per_address)) {
      note_refusal(sessions_->size() >= ctx_.config.max_connections ? "connection limit" : "address limit",
                   peer);
      if (load.served == 0 && load.refused == 0) loads_->erase(peer);
      boost::system::error_code ignored;
      socket.close(ignored);
      continue;
    }
    if (refuse) {
      note_refusal("address limit (429)", peer);
      ++load.refused;
    } else {
      ++load.served;
    }
    net::co_spawn(ex_, session(std::move(socket), peer, refuse), [](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log::error("session failed error={}", ex.what());
      }
    });
  }
}

net::awaitable<void> server::session(tcp::socket socket, net::ip::address peer, bool refuse) {
  if (tls_) {
    beast::ssl_stream<beast::tcp_stream> stream(std::move(socket), *tls_);
    co_await serve(&stream, peer, refuse);
  } else {
    beast::tcp_stream stream(std::move(socket));
    co_await serve(&stream, peer, refuse);
  }
}

template <class Stream>
net::awaitable<void> server::serve(Stream* stream_ptr, net::ip::address peer, bool refuse) {
  constexpr bool is_tls = !std::is_same_v<Stream, beast::tcp_stream>;
  Stream& stream = *stream_ptr;
  beast::tcp_stream& lowest = beast::get_lowest_layer(stream);
  session_state state;
  state.stream = &lowest;
  auto self = sessions_->insert(sessions_->end(), &state);
  // Removes this session from the registry however the coroutine ends (the registry is shared so
  // that a frame destroyed after the server, at io_context teardown, still finds it).
  struct unregister {
    unregister(std::shared_ptr<std::list<session_state*>> l, std::list<session_state*>::iterator i,
               std::shared_ptr<std::map<net::ip::address, address_load>> m, net::ip::address a, bool r)
        : list(std::move(l)), it(i), loads(std::move(m)), addr(a), refused(r) {}
    ~unregister() {
      list->erase(it);
      auto found = loads->find(addr);
      if (found == loads->end()) return;
      auto& n = refused ? found->second.refused : found->second.served;
      if (n > 0) --n;
      if (found->second.served == 0 && found->second.refused == 0) loads->erase(found);
    }
    std::shared_ptr<std::list<session_state*>> list;
    std::list<session_state*>::iterator it;
    std::shared_ptr<std::map<net::ip::address, address_load>> loads;
    net::ip::address addr;
    bool refused;
  };
  unregister guard(sessions_, self, loads_, peer, refuse);
  std::string peer_text = peer.to_string();

  if constexpr (is_tls) {
    lowest.expires_after(refuse ? std::min(tls_handshake_timeout, ctx_.config.busy_header_timeout)
                                : tls_handshake_timeout);
    auto [hec] = co_await stream.async_handshake(net::ssl::stream_base::server, use_tuple);
    if (hec) {
      // Plain HTTP on the TLS port, scanners, clients that distrust the certificate.
      log::debug("tls handshake failed error={}", hec.message());
      boost::system::error_code ignored;
      lowest.socket().close(ignored);
      co_return;
    }
  }

  beast::flat_buffer buffer;
  std::optional<api_error> refusal;
  // The request being answered, for the request metrics (ctx_.http_metrics).
  std::string method = "OTHER";
  std::string_view route = "other";
  auto started = std::chrono::steady_clock::now();
  if (refuse) {
    api_error e;
    e.code = errc::too_many_connections;
    e.detail = "this address has " + std::to_string(ctx_.config.max_connections_per_address) +
               " connections open already; close some or retry later";
    e.retry_after_s = connection_retry_after_s;
    refusal = e;
  }
  while (!stopping_ && !refusal) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(max_header_bytes);
    parser.body_limit(ctx_.config.max_body_bytes);
    state.idle_since = std::chrono::steady_clock::now();
    lowest.expires_after(under_pressure()
                             ? std::min(ctx_.config.idle_timeout, ctx_.config.busy_header_timeout)
                             : ctx_.config.idle_timeout);
    auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, use_tuple);
    if (ec) {
      refusal = read_failure(ec, ctx_.config.max_body_bytes);
      if (!refusal && !peer_gone(ec)) log::warn("http read failed error={}", ec.message());
      break;
    }
    state.busy = true;
    started = std::chrono::steady_clock::now();
    method = std::string(parser.get().method_string().substr(0, 16));
    {
      auto t = parser.get().target();
      route = metrics::route_class(t.substr(0, t.find('?')));
    }
    if (expects_continue(parser.get())) {
      http::response<http::empty_body> cont(http::status::continue_, parser.get().version());
      auto [cec, cn] = co_await http::async_write(stream, cont, use_tuple);
      if (cec) break;
    }
    if (!parser.is_done()) {
      auto [bec, bn] = co_await http::async_read(stream, buffer, parser, use_tuple);
      if (bec) {
        refusal = read_failure(bec, ctx_.config.max_body_bytes);
        if (!refusal && !peer_gone(bec)) log::warn("http read failed error={}", bec.message());
        break;
      }
    }
    auto req = parser.release();
    // Only the debug lines below show the target: no copy per request otherwise.
    std::string target;
    if (spdlog::should_log(spdlog::level::debug)) target = req.target().substr(0, 200);
    auto result = co_await handle(ctx_, std::move(req), peer_text);
    if constexpr (is_tls) result.res.set(http::field::strict_transport_security, strict_transport_security);
    if (result.stream) {
      observe(ctx_.http_metrics, method, route, result.res.result_int(), started);
      log::debug("event stream opened target={}", target);
      state.events = result.stream;
      co_await serve_event_stream(&stream, std::move(result), ctx_.config.idle_timeout, &stopping_);
      state.events.reset();
      log::debug("event stream ended target={}", target);
      break;
    }
    auto& res = result.res;
    log::debug("request method={} target={} status={}", method, target, res.result_int());
    if (stopping_) res.keep_alive(false);
    lowest.expires_after(ctx_.config.idle_timeout);
    auto [wec, wn] = co_await http::async_write(stream, res, use_tuple);
    state.busy = false;
    if (!wec) observe(ctx_.http_metrics, method, route, res.result_int(), started);
    if (wec) {
      if (!peer_gone(wec)) log::warn("http write failed error={}", wec.message());
      break;
    }
    if (!res.keep_alive()) break;
  }

  if (refusal) {
    auto res = make_error_response(*refusal);
    if constexpr (is_tls) res.set(http::field::strict_transport_security, strict_transport_security);
    res.keep_alive(false);
    res.prepare_payload();
    lowest.expires_after(error_linger);
    if (!state.busy) {
      // Refused while reading the header (431, malformed): no method or route is known.
      method = "OTHER";
      route = "other";
      started = std::chrono::steady_clock::now();
    }
    auto [wec, wn] = co_await http::async_write(stream, res, use_tuple);
    if (!wec) observe(ctx_.http_metrics, method, route, res.result_int(), started);
    if (!wec && !is_tls) {
      // Half-close, then discard what the client is still sending so it reads our answer.
      boost::system::error_code ignored;
      lowest.socket().shutdown(tcp::socket::shutdown_send, ignored);
      std::vector<char> sink(64 * 1024);
      std::size_t drained = 0;
      while (drained < max_drain_bytes) {
        auto [rec, rn] = co_await stream.async_read_some(net::buffer(sink), use_tuple);
        if (rec) break;
        drained += rn;
      }
    }
  }
  if constexpr (is_tls) {
    // close_notify, briefly: a client that is gone must not hold the session.
    lowest.expires_after(error_linger);
    auto [sec] = co_await stream.async_shutdown(use_tuple);
    (void)sec;
  } else {
    boost::system::error_code ignored;
    lowest.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }
  lowest.close();
}

net::awaitable<void> server::async_shutdown(std::chrono::milliseconds grace) {
  stopping_ = true;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  for (auto* s : *sessions_) {
    // Idle sessions wait in a read that would otherwise last up to the idle timeout; event
    // streams wait for events.
    if (s->events) s->events->close("the gateway is stopping");
    else if (!s->busy) s->stream->cancel();
  }
  net::steady_timer timer(ex_);
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (!sessions_->empty() && std::chrono::steady_clock::now() < deadline) {
    timer.expires_after(std::chrono::milliseconds(20));
    co_await timer.async_wait(use_tuple);
  }
  for (auto* s : *sessions_) s->stream->cancel();
  if (!sessions_->empty()) log::warn("shutdown: closing busy connections count={}", sessions_->size());
}

}  // namespace descprod::gateway
