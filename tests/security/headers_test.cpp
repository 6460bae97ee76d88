// Security tests of the request-header checks (issue 13, item 9, the gateway's part): Origin is
// compared by scheme, host and port (with gateway.public_url when set, else with this gateway's
// scheme and Host), Host is pinned to public_url when it is set (the probes excepted), HSTS is
// sent under TLS, and two Authorization headers are a 400. The real gateway over raw sockets
// (the requests need header lines an HTTP library would not send).
#include <gtest/gtest.h>

#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "tests/security/gateway_limits_support.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

using namespace limits;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

service_options options(const std::string& gateway_extra = "") {
  service_options o;
  o.workers = 0;
  o.gateway_extra = gateway_extra;
  return o;
}

const std::string job_body = R"({"jobtype":"mysleep","config":"1"})";

}  // namespace

TEST(Headers, TwoAuthorizationHeadersAreRefused) {
  service s(options());
  auto r = raw_request("127.0.0.1", s.port(), "GET", "/api/jobs",
                       {"Authorization: Bearer " + s.bob_token, "Authorization: Bearer " + s.alice_token});
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("Authorization"), std::string::npos) << r.body;
  // One is fine.
  EXPECT_EQ(raw_request("127.0.0.1", s.port(), "GET", "/api/jobs", {"Authorization: Bearer " + s.alice_token})
                .status,
            200);
  // Two Host headers too.
  auto h = raw_request("127.0.0.1", s.port(), "GET", "/api/jobs",
                       {"Host: evil.example", "Authorization: Bearer " + s.alice_token});
  EXPECT_EQ(h.status, 400) << h.body;
}

TEST(Headers, OriginIsComparedBySchemeHostAndPort) {
  service s(options());
  std::string self = "http://127.0.0.1:" + std::to_string(s.port());
  auto post = [&](const std::string& origin) {
    return raw_request("127.0.0.1", s.port(), "POST", "/api/jobs",
                       {"Authorization: Bearer " + s.alice_token, "Origin: " + origin}, job_body)
        .status;
  };
  EXPECT_EQ(post(self), 201);
  EXPECT_EQ(post("HTTP://127.0.0.1:" + std::to_string(s.port())), 201) << "case does not matter";
  EXPECT_EQ(post("https://127.0.0.1:" + std::to_string(s.port())), 403) << "another scheme";
  EXPECT_EQ(post("http://127.0.0.1:" + std::to_string(s.port() == 1 ? 2 : s.port() - 1)), 403)
      << "another port";
  EXPECT_EQ(post("http://127.0.0.1"), 403) << "the default port is another port";
  EXPECT_EQ(post("null"), 403);
  // The login form too.
  auto form = raw_request("127.0.0.1", s.port(), "POST", "/login",
                          {"Origin: https://127.0.0.1:" + std::to_string(s.port()),
                           "Content-Type: application/x-www-form-urlencoded"},
                          "username=a&password=b&csrf=c");
  EXPECT_EQ(form.status, 403) << form.body;
}

// No public_url and a loopback listen address (the default): only loopback names reach it, so a
// page on a name rebound to 127.0.0.1 (DNS rebinding) cannot read or change anything.
TEST(Headers, ALoopbackGatewayAnswersOnlyLoopbackNames) {
  service s(options());
  const std::string port = std::to_string(s.port());
  auto get = [&](const std::string& h) {
    return raw_request("127.0.0.1", s.port(), "GET", "/api/jobs", {"Authorization: Bearer " + s.alice_token},
                       "", h);
  };
  for (const std::string& h :
       {"127.0.0.1:" + port, "localhost:" + port, "[::1]:" + port, "127.0.0.2:" + port})
    EXPECT_EQ(get(h).status, 200) << h;
  for (const std::string& h :
       {"rebind.example:" + port, "10.1.2.3:" + port, "127.0.0.1.evil.example:" + port}) {
    auto r = get(h);
    EXPECT_EQ(r.status, 400) << h << " " << r.body;
    EXPECT_NE(r.body.find("Host header does not name this service"), std::string::npos) << r.body;
  }
  auto page = raw_request("127.0.0.1", s.port(), "GET", "/login", {}, "", "rebind.example:" + port);
  EXPECT_EQ(page.status, 400) << "the pages too";
  EXPECT_EQ(raw_request("127.0.0.1", s.port(), "GET", "/healthz", {}, "", "rebind.example").status, 200)
      << "the probes answer on any Host";
}

// Behind a TLS proxy: public_url https://descprod.example. Host must name it (DNS rebinding),
// except on the probes; Origin must be exactly https://descprod.example.
TEST(Headers, HostIsPinnedAndOriginComparedWithPublicUrl) {
  service s(options("  public_url: https://descprod.example\n"));
  const std::string host = "descprod.example";
  auto post = [&](const std::string& h, const std::string& origin) {
    return raw_request("127.0.0.1", s.port(), "POST", "/api/jobs",
                       {"Authorization: Bearer " + s.alice_token, "Origin: " + origin}, job_body, h);
  };
  EXPECT_EQ(post(host, "https://descprod.example").status, 201);
  EXPECT_EQ(post("DESCPROD.example:443", "https://descprod.example:443").status, 201);
  EXPECT_EQ(post(host, "http://descprod.example").status, 403) << "plain http is another origin";
  EXPECT_EQ(post(host, "https://descprod.example:8443").status, 403);
  EXPECT_EQ(post(host, "https://evil.example").status, 403);
  // Host pinned: a rebinding name, another address of this machine and another port are
  // refused, with the reason.
  const std::string port = std::to_string(s.port());
  auto evil = raw_request("127.0.0.1", s.port(), "GET", "/", {}, "", "evil.example");
  EXPECT_EQ(evil.status, 400) << evil.body;
  EXPECT_NE(evil.body.find("Host"), std::string::npos) << evil.body;
  EXPECT_EQ(raw_request("127.0.0.1", s.port(), "GET", "/api/jobs", {"Authorization: Bearer " + s.alice_token},
                        "", "10.1.2.3:" + port)
                .status,
            400);
  EXPECT_EQ(raw_request("127.0.0.1", s.port(), "GET", "/api/jobs", {"Authorization: Bearer " + s.alice_token},
                        "", "evil.example:" + port)
                .status,
            400);
  EXPECT_EQ(raw_request("127.0.0.1", s.port(), "GET", "/api/jobs", {"Authorization: Bearer " + s.alice_token},
                        "", "localhost:" + std::to_string(s.port() == 1 ? 2 : s.port() - 1))
                .status,
            400)
      << "a loopback name on another port";
  // A loopback name on the listen port is this service (a browser sends it only for a page it
  // loaded from this machine, so it cannot come from DNS rebinding): how workers and people on the
  // gateway's host reach it.
  for (const std::string& h : {"127.0.0.1:" + port, "localhost:" + port, "[::1]:" + port})
    EXPECT_EQ(raw_request("127.0.0.1", s.port(), "GET", "/api/jobs",
                          {"Authorization: Bearer " + s.alice_token}, "", h)
                  .status,
              200)
        << h;
  EXPECT_EQ(post(host, "https://localhost:" + port).status, 201) << "loopback origin on the listen port";
  EXPECT_EQ(post(host, "http://localhost:" + port).status, 403) << "loopback origin of another scheme";
  EXPECT_EQ(raw_request("127.0.0.1", s.port(), "GET", "/api/jobs", {"Authorization: Bearer " + s.alice_token},
                        "", host)
                .status,
            200);
  // The probes answer on any Host.
  EXPECT_EQ(raw_request("127.0.0.1", s.port(), "GET", "/healthz").status, 200);
}

namespace {

struct tls_answer {
  int status = 0;
  std::string hsts;
};

net::awaitable<tls_answer> async_tls_get(std::string ca_file, int port, std::string target) {
  ssl::context ctx(ssl::context::tls_client);
  ctx.load_verify_file(ca_file);
  ctx.set_verify_mode(ssl::verify_peer);
  beast::ssl_stream<beast::tcp_stream> stream(co_await net::this_coro::executor, ctx);
  auto& lowest = beast::get_lowest_layer(stream);
  lowest.expires_after(10s);
  tcp::endpoint ep(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port));
  co_await lowest.async_connect(ep, net::use_awaitable);
  co_await stream.async_handshake(ssl::stream_base::client, net::use_awaitable);
  http::request<http::string_body> req(http::verb::get, target, 11);
  req.set(http::field::host, "127.0.0.1:" + std::to_string(port));
  req.keep_alive(false);
  co_await http::async_write(stream, req, net::use_awaitable);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  co_await http::async_read(stream, buffer, res, net::use_awaitable);
  tls_answer out;
  out.status = static_cast<int>(res.result_int());
  out.hsts = std::string(res[http::field::strict_transport_security]);
  co_return out;
}

}  // namespace

TEST(Headers, HstsUnderTlsOnly) {
  temp_dir certs;
  {
    process p({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
               "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", certs.file("key.pem"),
               "-out", certs.file("cert.pem")},
              {}, certs.file("openssl.log"));
    auto rc = p.wait_exit(60s);
    ASSERT_TRUE(rc && *rc == 0) << read_file(certs.file("openssl.log"));
  }
  {
    service s(
        options("  tls_cert: " + certs.file("cert.pem") + "\n  tls_key: " + certs.file("key.pem") + "\n"));
    for (std::string target : {"/healthz", "/login", "/api/jobs"}) {
      auto r = run_async(async_tls_get(certs.file("cert.pem"), s.port(), target), 20s);
      EXPECT_GT(r.status, 0) << target;
      EXPECT_NE(r.hsts.find("max-age="), std::string::npos) << target << ": " << r.hsts;
    }
  }
  service plain(options());
  auto r = raw_request("127.0.0.1", plain.port(), "GET", "/healthz");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.header("strict-transport-security").empty()) << "HSTS over plain HTTP means nothing";
}

}  // namespace descprod::test
