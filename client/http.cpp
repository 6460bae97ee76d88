// Blocking HTTP for the command-line tools (see http.hpp). Each operation is started with a plain
// completion handler and the private io_context is run until it finishes; beast::tcp_stream's
// deadline (expires_after) bounds connect, TLS handshake, write and every read. The resolver has no
// deadline of its own (getaddrinfo cannot be cancelled); it is normally fast and local.
// Caveat: TLS connections are closed without a close_notify (the answer has been read by then).
#include "client/http.hpp"

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <optional>

namespace descprod::client {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string describe(const error_code& ec) {
  if (ec == beast::error::timeout) return "timed out";
  return ec.message();
}

// One connection to the server, plain or TLS, driven synchronously.
struct connection {
  explicit connection(url_parts u) : url(std::move(u)) {}

  url_parts url;
  net::io_context ioc;
  std::optional<ssl::context> tls_context;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  beast::flat_buffer buffer;

  beast::tcp_stream& tcp_layer() { return secure ? beast::get_lowest_layer(*secure) : *plain; }

  template <class F>
  void with_stream(F&& f) {
    if (secure) f(*secure);
    else f(*plain);
  }

  void run() {
    ioc.restart();
    ioc.run();
  }

  void connect(std::chrono::milliseconds timeout) {
    error_code ec;
    tcp::resolver::results_type results;
    tcp::resolver resolver(ioc);
    resolver.async_resolve(url.host, url.port, [&](const error_code& e, tcp::resolver::results_type r) {
      ec = e;
      results = std::move(r);
    });
    run();
    if (ec)
      throw unreachable("Unable to reach server at " + url.text() + ": cannot resolve " + url.host + ": " +
                        describe(ec));
    if (url.tls) {
      tls_context.emplace(ssl::context::tls_client);
      tls_context->set_default_verify_paths();
      tls_context->set_verify_mode(ssl::verify_peer);
      secure.emplace(ioc, *tls_context);
    } else {
      plain.emplace(ioc);
    }
    tcp_layer().expires_after(timeout);
    tcp_layer().async_connect(results, [&](const error_code& e, const tcp::endpoint&) { ec = e; });
    run();
    if (ec) throw unreachable("Unable to reach server at " + url.text() + ": " + describe(ec));
    tcp_layer().socket().set_option(tcp::no_delay(true), ec);
    if (secure) {
      if (!SSL_set_tlsext_host_name(secure->native_handle(), url.host.c_str()))
        throw unreachable("Unable to reach server at " + url.text() + ": cannot set TLS server name");
      secure->set_verify_callback(ssl::host_name_verification(url.host));
      tcp_layer().expires_after(timeout);
      secure->async_handshake(ssl::stream_base::client, [&](const error_code& e) { ec = e; });
      run();
      if (ec) throw unreachable("TLS handshake with " + url.text() + " failed: " + describe(ec));
    }
  }

  void write(http::request<http::string_body>& req, std::chrono::milliseconds timeout) {
    error_code ec;
    tcp_layer().expires_after(timeout);
    with_stream(
        [&](auto& s) { http::async_write(s, req, [&](const error_code& e, std::size_t) { ec = e; }); });
    run();
    if (ec) throw unreachable("Connection to " + url.text() + " failed while sending: " + describe(ec));
  }

  void close() {
    error_code ignored;
    if (!plain && !secure) return;
    tcp_layer().socket().shutdown(tcp::socket::shutdown_both, ignored);
    tcp_layer().close();
  }
};

http::request<http::string_body> make_request(const url_parts& url, std::string_view method,
                                              std::string_view target, std::string_view body,
                                              const header_list& headers, bool keep_alive) {
  http::request<http::string_body> req;
  auto verb = http::string_to_verb(method);
  if (verb == http::verb::unknown) req.method_string(method);
  else req.method(verb);
  req.target(url.base + std::string(target));
  req.version(11);
  bool default_port = (url.tls && url.port == "443") || (!url.tls && url.port == "80");
  req.set(http::field::host, default_port ? url.host : url.host + ":" + url.port);
  req.set(http::field::user_agent, std::string("descprod-client/") + DESCPROD_VERSION);
  bool has_type = false;
  for (const auto& [k, v] : headers) {
    if (lower(k) == "content-type") has_type = true;
    req.set(k, v);
  }
  if (!body.empty() && !has_type) req.set(http::field::content_type, "application/json");
  req.body() = std::string(body);
  req.keep_alive(keep_alive);
  req.prepare_payload();
  return req;
}

template <class Fields>
void copy_headers(const Fields& fields, std::map<std::string, std::string>& out) {
  for (const auto& f : fields) {
    auto& slot = out[lower(f.name_string())];
    if (!slot.empty()) slot += ", ";
    slot += std::string(f.value());
  }
}

}  // namespace

std::string url_parts::text() const {
  std::string out = tls ? "https://" : "http://";
  bool ipv6 = host.find(':') != std::string::npos;
  out += ipv6 ? "[" + host + "]" : host;
  if (!((tls && port == "443") || (!tls && port == "80"))) out += ":" + port;
  return out + base;
}

std::optional<url_parts> parse_url(std::string_view url, std::string* why) {
  auto fail = [&](std::string reason) -> std::optional<url_parts> {
    if (why) *why = std::move(reason);
    return std::nullopt;
  };
  url_parts p;
  std::string_view rest;
  if (url.substr(0, 7) == "http://") {
    rest = url.substr(7);
  } else if (url.substr(0, 8) == "https://") {
    p.tls = true;
    rest = url.substr(8);
  } else {
    return fail("the URL must start with http:// or https://");
  }
  auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  if (authority.find('@') != std::string_view::npos) return fail("user names in the URL are not supported");
  std::string_view host = authority;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return fail("unclosed '[' in the host");
    host = authority.substr(1, close - 1);
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return fail("unexpected text after the host");
      port = after.substr(1);
    }
  } else {
    auto colon = authority.rfind(':');
    if (colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
    }
  }
  if (host.empty()) return fail("the URL has no host");
  if (!port.empty()) {
    if (port.size() > 5) return fail("bad port '" + std::string(port) + "'");
    for (char c : port)
      if (c < '0' || c > '9') return fail("bad port '" + std::string(port) + "'");
    int n = std::stoi(std::string(port));
    if (n < 1 || n > 65535) return fail("bad port '" + std::string(port) + "'");
  }
  p.host = std::string(host);
  p.port = port.empty() ? (p.tls ? "443" : "80") : std::string(port);
  auto q = path.find_first_of("?#");
  if (q != std::string_view::npos) path = path.substr(0, q);
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  p.base = std::string(path);
  return p;
}

std::string http_reply::header(std::string_view name) const {
  auto it = headers.find(lower(name));
  return it == headers.end() ? std::string() : it->second;
}

http_reply http_request(const url_parts& url, std::string_view method, std::string_view target,
                        std::string_view body, const header_list& headers, std::chrono::milliseconds timeout,
                        std::uint64_t max_body) {
  connection c(url);
  c.connect(timeout);
  auto req = make_request(url, method, target, body, headers, false);
  c.write(req, timeout);

  http::response_parser<http::string_body> parser;
  parser.body_limit(max_body);
  error_code ec;
  c.tcp_layer().expires_after(timeout);
  c.with_stream([&](auto& s) {
    http::async_read(s, c.buffer, parser, [&](const error_code& e, std::size_t) { ec = e; });
  });
  c.run();
  c.close();
  if (ec)
    throw unreachable("Connection to " + url.text() + " failed while reading the answer: " + describe(ec));
  auto& res = parser.get();
  http_reply out;
  out.status = static_cast<int>(res.result_int());
  out.body = std::move(res.body());
  copy_headers(res, out.headers);
  return out;
}

// ---- Server-Sent Events ---------------------------------------------------------------------

void sse_parser::feed(std::string_view bytes, std::vector<sse_event>& out) {
  for (char c : bytes) {
    if (c == '\n' && last_was_cr_) {  // the LF of a CRLF already ended the line
      last_was_cr_ = false;
      continue;
    }
    last_was_cr_ = (c == '\r');
    if (c == '\r' || c == '\n') {
      line(partial_, out);
      partial_.clear();
    } else {
      partial_ += c;
    }
  }
}

void sse_parser::line(std::string_view l, std::vector<sse_event>& out) {
  if (l.empty()) {
    if (has_data_) {
      if (!current_.data.empty() && current_.data.back() == '\n') current_.data.pop_back();
      out.push_back(std::move(current_));
    }
    current_ = sse_event();
    has_data_ = false;
    return;
  }
  if (l.front() == ':') return;  // a comment (keep-alive)
  auto colon = l.find(':');
  std::string_view name = l.substr(0, colon);
  std::string_view value;
  if (colon != std::string_view::npos) {
    value = l.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (name == "data") {
    current_.data.append(value);
    current_.data += '\n';
    has_data_ = true;
  } else if (name == "id") {
    current_.id = std::string(value);
  } else if (name == "event") {
    current_.event = std::string(value);
  }
}

struct sse_stream::impl {
  explicit impl(const url_parts& u) : conn(u) {}
  connection conn;
  http::response_parser<http::buffer_body> parser;
  sse_parser framing;
  int status = 0;
  std::string error_body;
  bool open = false;

  // Reads one more piece of the body into `buf`; returns the bytes and whether the stream goes on.
  std::size_t read_some(char* buf, std::size_t size, std::chrono::milliseconds idle, bool& more) {
    parser.get().body().data = buf;
    parser.get().body().size = size;
    error_code ec;
    conn.tcp_layer().expires_after(idle);
    conn.with_stream([&](auto& s) {
      http::async_read_some(s, conn.buffer, parser, [&](const error_code& e, std::size_t) { ec = e; });
    });
    conn.run();
    if (ec == http::error::need_buffer) ec = {};
    std::size_t got = size - parser.get().body().size;
    more = !ec && !parser.is_done();
    return got;
  }
};

sse_stream::sse_stream(const url_parts& url, std::string_view target, const header_list& headers,
                       std::chrono::milliseconds connect_timeout)
    : impl_(std::make_unique<impl>(url)) {
  auto& c = impl_->conn;
  c.connect(connect_timeout);
  header_list h = headers;
  h.emplace_back("Accept", "text/event-stream");
  h.emplace_back("Cache-Control", "no-cache");
  auto req = make_request(url, "GET", target, {}, h, true);
  c.write(req, connect_timeout);

  impl_->parser.body_limit(boost::none);
  error_code ec;
  c.tcp_layer().expires_after(connect_timeout);
  c.with_stream([&](auto& s) {
    http::async_read_header(s, c.buffer, impl_->parser, [&](const error_code& e, std::size_t) { ec = e; });
  });
  c.run();
  if (ec) {
    c.close();
    throw unreachable("Connection to " + url.text() + " failed while reading the answer: " + describe(ec));
  }
  impl_->status = static_cast<int>(impl_->parser.get().result_int());
  if (impl_->status == 200) {
    impl_->open = !impl_->parser.is_done();
    if (!impl_->open) c.close();
    return;
  }
  // An error answer: read its (short) body for the message, then close.
  char buf[4096];
  bool more = !impl_->parser.is_done();
  while (more && impl_->error_body.size() < 65536) {
    std::size_t got = impl_->read_some(buf, sizeof buf, connect_timeout, more);
    impl_->error_body.append(buf, got);
  }
  c.close();
}

sse_stream::~sse_stream() {
  if (impl_) impl_->conn.close();
}

int sse_stream::status() const { return impl_->status; }
const std::string& sse_stream::error_body() const { return impl_->error_body; }
bool sse_stream::open() const { return impl_->open; }

std::vector<sse_event> sse_stream::next(std::chrono::milliseconds idle) {
  std::vector<sse_event> out;
  if (!impl_->open) return out;
  char buf[16384];
  bool more = false;
  std::size_t got = impl_->read_some(buf, sizeof buf, idle, more);
  impl_->framing.feed(std::string_view(buf, got), out);
  if (!more) {
    impl_->open = false;
    impl_->conn.close();
  }
  return out;
}

}  // namespace descprod::client
