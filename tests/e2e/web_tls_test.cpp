// End-to-end test of HTTPS (issue 4): the test makes a self-signed certificate with the openssl
// command, configures gateway.tls_cert / tls_key, and talks to the real gateway with a verifying
// TLS client (Boost.Beast over OpenSSL): probes, the JSON API, login cookies with Secure, the
// pages, and a plain-HTTP client that gets nowhere.
#include <gtest/gtest.h>

#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <filesystem>

#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

struct tls_response {
  int status = 0;
  std::string body;
  std::string set_cookie;
  std::string content_type;
};

net::awaitable<tls_response> async_https(std::string ca_file, int port, std::string method,
                                         std::string target, std::string body, std::string cookie) {
  ssl::context ctx(ssl::context::tls_client);
  ctx.load_verify_file(ca_file);
  ctx.set_verify_mode(ssl::verify_peer);
  beast::ssl_stream<beast::tcp_stream> stream(co_await net::this_coro::executor, ctx);
  auto& lowest = beast::get_lowest_layer(stream);
  lowest.expires_after(10s);
  tcp::endpoint ep(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port));
  co_await lowest.async_connect(ep, net::use_awaitable);
  co_await stream.async_handshake(ssl::stream_base::client, net::use_awaitable);
  http::request<http::string_body> req(http::string_to_verb(method), target, 11);
  req.set(http::field::host, "127.0.0.1:" + std::to_string(port));
  if (!cookie.empty()) req.set(http::field::cookie, cookie);
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.keep_alive(false);
  req.prepare_payload();
  co_await http::async_write(stream, req, net::use_awaitable);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  co_await http::async_read(stream, buffer, res, net::use_awaitable);
  tls_response out;
  out.status = static_cast<int>(res.result_int());
  out.body = res.body();
  out.set_cookie = std::string(res[http::field::set_cookie]);
  out.content_type = std::string(res[http::field::content_type]);
  co_return out;
}

// A key and a self-signed certificate for 127.0.0.1 in `dir`.
void make_certificate(const temp_dir& dir) {
  process p({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", dir.file("key.pem"),
             "-out", dir.file("cert.pem")},
            {}, dir.file("openssl.log"));
  auto rc = p.wait_exit(60s);
  ASSERT_TRUE(rc && *rc == 0) << read_file(dir.file("openssl.log"));
}

}  // namespace

TEST(WebTls, GatewayServesHttpsWithASelfSignedCertificateAndSecureCookies) {
  temp_dir certs;
  make_certificate(certs);
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  service_options o;
  o.gateway_extra = "  tls_cert: " + certs.file("cert.pem") + "\n  tls_key: " + certs.file("key.pem") +
                    "\n  password_opslimit: 1\n  password_memlimit_kib: 8\n";
  service s(o);
  std::string ca = certs.file("cert.pem");
  auto https = [&](const std::string& method, const std::string& target, const std::string& body = "",
                   const std::string& cookie = "") {
    return run_async(async_https(ca, s.port(), method, target, body, cookie), 20s);
  };

  auto health = https("GET", "/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_NE(health.body.find("\"ok\""), std::string::npos);

  auto reg = https("POST", "/api/register",
                   R"({"username":"hank","password":"hank-secret","email":"hank@example.org"})");
  ASSERT_EQ(reg.status, 201) << reg.body;
  process admin({s.bin("descprod-admin"), "--config", s.config_file, "approve", "hank"}, {},
                s.dir.file("admin.log"));
  ASSERT_EQ(admin.wait_exit(10s), 0);
  auto login = https("POST", "/api/login", R"({"username":"hank","password":"hank-secret"})");
  ASSERT_EQ(login.status, 200) << login.body;
  EXPECT_NE(login.set_cookie.find("; Secure"), std::string::npos) << login.set_cookie;
  EXPECT_NE(login.set_cookie.find("; HttpOnly"), std::string::npos) << login.set_cookie;
  std::string cookie = login.set_cookie.substr(0, login.set_cookie.find(';'));

  auto home = https("GET", "/", "", cookie);
  EXPECT_EQ(home.status, 200);
  EXPECT_EQ(home.content_type, "text/html; charset=utf-8");
  EXPECT_NE(home.body.find("data-user=\"hank\""), std::string::npos);
  auto login_page = https("GET", "/login");
  EXPECT_NE(login_page.set_cookie.find("; Secure"), std::string::npos) << "the form cookie too";

  // Plain HTTP on the TLS port gets no answer.
  bool plain_failed = false;
  try {
    auto r = http_request("127.0.0.1", s.port(), "GET", "/healthz");
    plain_failed = r.status != 200;
  } catch (const std::exception&) {
    plain_failed = true;
  }
  EXPECT_TRUE(plain_failed);
  // The gateway is still fine afterwards.
  EXPECT_EQ(https("GET", "/healthz").status, 200);
}

TEST(WebTls, MissingCertificateStopsTheGatewayWithAClearError) {
  temp_dir dir;
  write_file(dir.file("c.yaml"), "apps: " + dir.file("apps.yaml") +
                                     "\nredis:\n  path: " + dir.file("none.sock") +
                                     "\ngateway:\n  port: 0\n  tls_cert: " + dir.file("nope.pem") +
                                     "\n  tls_key: " + dir.file("nope.key") + "\n");
  write_file(dir.file("apps.yaml"), "apps: []\n");
  process gw({std::string(DESCPROD_BIN_DIR) + "/descprod-gateway", "--config", dir.file("c.yaml")}, {},
             dir.file("gw.log"));
  auto rc = gw.wait_exit(20s);
  ASSERT_TRUE(rc);
  EXPECT_NE(*rc, 0);
  EXPECT_NE(read_file(dir.file("gw.log")).find("tls_cert"), std::string::npos)
      << read_file(dir.file("gw.log"));
  // Only one of the two keys: a configuration error naming the line.
  write_file(dir.file("d.yaml"), "gateway:\n  tls_cert: /x.pem\n");
  process check(
      {std::string(DESCPROD_BIN_DIR) + "/descprod-gateway", "--config", dir.file("d.yaml"), "--check-config"},
      {}, dir.file("check.log"));
  EXPECT_EQ(check.wait_exit(10s), 2);
  EXPECT_NE(read_file(dir.file("check.log")).find("gateway.tls_cert: tls_cert and tls_key go together"),
            std::string::npos)
      << read_file(dir.file("check.log"));
}

}  // namespace descprod::test
