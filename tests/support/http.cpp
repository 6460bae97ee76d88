// The tests' HTTP/1.1 client (Boost.Beast), kept in this one file for compile time. Each call runs
// its coroutine on a private io_context; tcp_stream deadlines bound every connect, write and read.
#include <boost/asio/as_tuple.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>

#include "tests/support/support.hpp"

namespace descprod::test {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

constexpr auto io_timeout = std::chrono::seconds(30);

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

http::request<http::string_body> make_request(const std::string& host, int port, const std::string& method,
                                              const std::string& target, const std::string& body,
                                              const http_headers& headers, bool keep_alive) {
  http::request<http::string_body> req;
  auto verb = http::string_to_verb(method);
  if (verb == http::verb::unknown) req.method_string(method);
  else req.method(verb);
  req.target(target);
  req.version(11);
  req.set(http::field::host, host + ":" + std::to_string(port));
  req.set(http::field::user_agent, "descprod-tests");
  bool has_type = false;
  for (const auto& [k, v] : headers) {
    if (lower(k) == "content-type") has_type = true;
    req.insert(k, v);
  }
  if (!body.empty() && !has_type) req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.keep_alive(keep_alive);
  req.prepare_payload();
  return req;
}

net::awaitable<void> async_open(beast::tcp_stream& stream, std::string host, int port) {
  tcp::resolver resolver(co_await net::this_coro::executor);
  auto results = co_await resolver.async_resolve(host, std::to_string(port), net::use_awaitable);
  stream.expires_after(io_timeout);
  co_await stream.async_connect(results, net::use_awaitable);
  stream.socket().set_option(tcp::no_delay(true));
}

// Writes the request and reads the response. `*got_bytes` tells the caller whether any part of a
// response arrived (a failure before that on a reused connection may be retried).
net::awaitable<http_response> async_exchange(beast::tcp_stream& stream, beast::flat_buffer& buffer,
                                             http::request<http::string_body> req, bool* got_bytes,
                                             bool* keep_alive) {
  *got_bytes = false;
  stream.expires_after(io_timeout);
  co_await http::async_write(stream, req, net::use_awaitable);
  http::response_parser<http::string_body> parser;
  parser.body_limit(std::uint64_t(1) << 32);
  stream.expires_after(io_timeout);
  auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, net::as_tuple(net::use_awaitable));
  if (ec) throw boost::system::system_error(ec, "http read");
  *got_bytes = true;
  (void)n;
  if (!parser.is_done()) co_await http::async_read(stream, buffer, parser, net::use_awaitable);
  auto& res = parser.get();
  http_response out;
  out.status = static_cast<int>(res.result_int());
  out.body = std::move(res.body());
  for (const auto& f : res) {
    auto name = lower(std::string(f.name_string()));
    auto& slot = out.headers[name];
    if (!slot.empty()) slot += ", ";
    slot += std::string(f.value());
  }
  *keep_alive = res.keep_alive();
  co_return out;
}

// Runs a coroutine to completion on `ioc` (which has no other work) and returns its result.
template <class T>
T run_on(net::io_context& ioc, net::awaitable<T> aw) {
  auto fut = net::co_spawn(ioc, std::move(aw), net::use_future);
  ioc.restart();
  ioc.run();
  return fut.get();
}

}  // namespace

boost::json::value http_response::json() const { return boost::json::parse(body); }

std::string http_response::header(const std::string& name) const {
  auto it = headers.find(lower(name));
  return it == headers.end() ? std::string() : it->second;
}

http_response http_request(const std::string& host, int port, const std::string& method,
                           const std::string& target, const std::string& body, http_headers headers) {
  net::io_context ioc;
  beast::tcp_stream stream(ioc);
  beast::flat_buffer buffer;
  run_on(ioc, async_open(stream, host, port));
  bool got = false;
  bool keep = false;
  auto res = run_on(
      ioc, async_exchange(stream, buffer, make_request(host, port, method, target, body, headers, false),
                          &got, &keep));
  boost::system::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  stream.close();
  return res;
}

struct http_client::impl {
  impl(std::string h, int p) : host(std::move(h)), port(p) {}
  std::string host;
  int port;
  net::io_context ioc;
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
  bool open = false;
  int connections = 0;

  void connect() {
    close();
    stream.emplace(ioc);
    buffer.clear();
    run_on(ioc, async_open(*stream, host, port));
    open = true;
    ++connections;
  }
  void close() {
    if (!open) return;
    boost::system::error_code ignored;
    stream->socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream->close();
    open = false;
  }
};

http_client::http_client(std::string host, int port) : impl_(std::make_unique<impl>(std::move(host), port)) {}

http_client::~http_client() { impl_->close(); }

int http_client::connections() const { return impl_->connections; }

http_response http_client::request(const std::string& method, const std::string& target,
                                   const std::string& body, http_headers headers) {
  auto& d = *impl_;
  for (int attempt = 0;; ++attempt) {
    bool reused = d.open;
    if (!d.open) d.connect();
    bool got = false;
    bool keep = false;
    try {
      auto res =
          run_on(d.ioc, async_exchange(*d.stream, d.buffer,
                                       make_request(d.host, d.port, method, target, body, headers, true),
                                       &got, &keep));
      if (!keep) d.close();
      return res;
    } catch (const boost::system::system_error&) {
      d.close();
      // The server may close an idle keep-alive connection: retry once on a new one.
      if (reused && !got && attempt == 0) continue;
      throw;
    }
  }
}

}  // namespace descprod::test
