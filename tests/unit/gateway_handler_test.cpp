// Unit tests of handle_request on the paths that need no Redis (routing, method checks, missing
// token, Redis down), of the HTTP session's limits on an in-process server over loopback, of the
// pages without Redis, and of the submit path's shortcuts. Tests with Redis and the real
// binaries are in tests/integration (gateway_routes_test) and tests/e2e.
#include <set>
#include <string>
#include <thread>

#include "gateway/api.hpp"
#include "gateway/events.hpp"
#include "gateway/handler.hpp"
#include "gateway/jobs_api.hpp"
#include "gateway/server.hpp"
#include "tests/unit/gateway_test_support.hpp"

// ---- handle_request without Redis ---------------------------------------------------------

namespace {

class GatewayHandler : public ::testing::Test {
 protected:
  GatewayHandler() {
    descprod::redis_endpoint ep;
    ep.unix_path = "/nonexistent/redis.sock";  // never connected
    redis_ = std::make_unique<descprod::redis_client>(ioc_.get_executor(), ep);
    store_ = std::make_unique<descprod::store>(*redis_, "descprod:");
    ctx_.apps = test_apps();
    ctx_.redis = redis_.get();
    ctx_.jobs = store_.get();
    ctx_.on_redis_failure = [this] { ++redis_failures_; };
    ctx_.send_to_daemon = [this](const std::vector<std::string>&) {
      ++daemon_notices_;
      return true;
    };
  }

  dg::response run(http::verb method, const std::string& target, const std::string& auth = "",
                   const std::string& body = "") {
    dg::request req(method, target, 11);
    if (!auth.empty()) req.set(http::field::authorization, auth);
    req.body() = body;
    req.prepare_payload();
    auto fut = net::co_spawn(ioc_, dg::handle_request(ctx_, std::move(req)), net::use_future);
    ioc_.restart();
    ioc_.run();
    return fut.get();
  }

  static json::object body_of(const dg::response& res) { return json::parse(res.body()).as_object(); }

  net::io_context ioc_;
  std::unique_ptr<descprod::redis_client> redis_;
  std::unique_ptr<descprod::store> store_;
  dg::gateway_context ctx_;
  int redis_failures_ = 0;
  int daemon_notices_ = 0;
};

}  // namespace

TEST_F(GatewayHandler, UnknownPathAnswers404Json) {
  auto res = run(http::verb::get, "/nope");
  EXPECT_EQ(res.result_int(), 404u);
  EXPECT_EQ(res[http::field::content_type], "application/json");
  EXPECT_EQ(res[http::field::cache_control], "no-store");
  EXPECT_EQ(body_of(res).at("error").as_string(), "not_found");
}

TEST_F(GatewayHandler, UnknownApiPathAnswers404JsonWithoutAuthentication) {
  auto res = run(http::verb::get, "/api/jobs/abc");
  EXPECT_EQ(res.result_int(), 404u);
  EXPECT_EQ(body_of(res).at("error").as_string(), "not_found");
  EXPECT_EQ(body_of(res).at("detail").as_string(), "no such API route");
}

TEST_F(GatewayHandler, WrongMethodAnswers405WithAllow) {
  auto res = run(http::verb::delete_, "/api/jobs");
  EXPECT_EQ(res.result_int(), 405u);
  EXPECT_EQ(res[http::field::allow], "GET, POST");
  EXPECT_EQ(body_of(res).at("error").as_string(), "method_not_allowed");
  res = run(http::verb::get, "/api/jobs/bulk");
  EXPECT_EQ(res.result_int(), 405u);
  EXPECT_EQ(res[http::field::allow], "POST");
}

TEST_F(GatewayHandler, HealthzAnswers503WhenRedisIsNotConnected) {
  auto res = run(http::verb::get, "/healthz");
  EXPECT_EQ(res.result_int(), 503u);
  EXPECT_EQ(body_of(res).at("status").as_string(), "redis unavailable");
  EXPECT_EQ(res[http::field::content_type], "application/json");
}

TEST_F(GatewayHandler, ReadyzAnswers503WithTheReason) {
  auto res = run(http::verb::get, "/readyz");
  EXPECT_EQ(res.result_int(), 503u);
  EXPECT_EQ(res[http::field::retry_after], "1");
  auto b = body_of(res);
  EXPECT_EQ(b.at("status").as_string(), "not ready");
  EXPECT_EQ(b.at("detail").as_string(), "the gateway is not connected to Redis");
}

TEST_F(GatewayHandler, NewRoutesNeedATokenAndTheirMethod) {
  EXPECT_EQ(run(http::verb::get, "/api/events").result_int(), 401u);
  EXPECT_EQ(run(http::verb::get, "/api/jobs/1/events?follow=1").result_int(), 401u);
  EXPECT_EQ(run(http::verb::delete_, "/api/jobs/1").result_int(), 401u);
  EXPECT_EQ(run(http::verb::post, "/api/jobs/1/cancel").result_int(), 401u);
  auto res = run(http::verb::get, "/api/jobs/1/cancel");
  EXPECT_EQ(res.result_int(), 405u);
  EXPECT_EQ(res[http::field::allow], "POST");
  res = run(http::verb::put, "/api/jobs/1");
  EXPECT_EQ(res.result_int(), 405u);
  EXPECT_EQ(res[http::field::allow], "GET, DELETE");
}

TEST_F(GatewayHandler, ApiWithoutTokenAnswers401WithWwwAuthenticate) {
  auto res = run(http::verb::get, "/api/jobs");
  EXPECT_EQ(res.result_int(), 401u);
  EXPECT_EQ(res[http::field::www_authenticate], "Bearer");
  auto b = body_of(res);
  EXPECT_EQ(b.at("error").as_string(), "unauthorized");
  EXPECT_TRUE(contains(std::string(b.at("detail").as_string()), "Authorization")) << res.body();
}

TEST_F(GatewayHandler, MalformedAuthorizationAnswers401) {
  auto res = run(http::verb::get, "/api/version", "Basic dXNlcjpwdw==");
  EXPECT_EQ(res.result_int(), 401u);
  EXPECT_EQ(body_of(res).at("error").as_string(), "unauthorized");
}

TEST_F(GatewayHandler, RedisDownDuringRequestAnswers503WithRetryAfter) {
  auto res = run(http::verb::post, "/api/jobs", "Bearer dp_x", R"({"jobtype":"mysleep","config":"1"})");
  EXPECT_EQ(res.result_int(), 503u);
  EXPECT_EQ(res[http::field::retry_after], "1");
  EXPECT_EQ(body_of(res).at("error").as_string(), "unavailable");
  EXPECT_EQ(redis_failures_, 1);
  EXPECT_EQ(daemon_notices_, 0);
}

TEST_F(GatewayHandler, ResponseFollowsRequestVersionAndKeepAlive) {
  dg::request req(http::verb::get, "/nope", 10);
  auto fut = net::co_spawn(ioc_, dg::handle_request(ctx_, std::move(req)), net::use_future);
  ioc_.run();
  auto res = fut.get();
  EXPECT_EQ(res.version(), 10u);
  EXPECT_FALSE(res.keep_alive());
  EXPECT_EQ(res[http::field::content_length], std::to_string(res.body().size()));
}

// ---- the HTTP session over loopback (no Redis) ----------------------------------------------

namespace {

class GatewayServer : public GatewayHandler {
 protected:
  void SetUp() override {
    ctx_.config.max_body_bytes = 1024;
    ctx_.config.idle_timeout = std::chrono::milliseconds(2000);
    server_ = std::make_unique<dg::server>(ioc_.get_executor(), ctx_);
    port_ = server_->bind("127.0.0.1", 0);
    server_->start();
    thread_ = std::thread([this] { ioc_.run(); });
  }
  void TearDown() override {
    auto done = net::co_spawn(ioc_, server_->async_shutdown(std::chrono::milliseconds(500)), net::use_future);
    done.get();
    ioc_.stop();
    thread_.join();
  }

  // Sends raw bytes on a fresh connection and returns everything the server sends back before it
  // closes the connection.
  std::string exchange(const std::string& raw) {
    net::io_context io;
    net::ip::tcp::socket s(io);
    s.connect(net::ip::tcp::endpoint(net::ip::address_v4::loopback(), port_));
    boost::system::error_code ec;
    net::write(s, net::buffer(raw), ec);
    std::string out;
    char buf[4096];
    while (true) {
      auto n = s.read_some(net::buffer(buf), ec);
      if (ec) break;
      out.append(buf, n);
    }
    return out;
  }

  std::unique_ptr<dg::server> server_;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

}  // namespace

TEST_F(GatewayServer, OversizedBodyAnswers413AndCloses) {
  auto out = exchange("POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 65536\r\n\r\n" +
                      std::string(65536, 'x'));
  EXPECT_EQ(out.rfind("HTTP/1.1 413 ", 0), 0u) << out;
  EXPECT_TRUE(contains(out, "Connection: close")) << out;
  EXPECT_TRUE(
      contains(out, R"({"error":"payload_too_large","detail":"request body is larger than 1024 bytes"})"))
      << out;
}

TEST_F(GatewayServer, OversizedHeaderAnswers431) {
  auto out =
      exchange("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + std::string(20000, 'y') + "\r\n\r\n");
  EXPECT_EQ(out.rfind("HTTP/1.1 431 ", 0), 0u) << out.substr(0, 200);
  EXPECT_TRUE(contains(out, "header_too_large")) << out.substr(0, 400);
}

TEST_F(GatewayServer, MalformedRequestAnswers400Json) {
  auto out = exchange("BLAH\x01 / HTTP/9\r\n\r\n");
  EXPECT_EQ(out.rfind("HTTP/1.1 400 ", 0), 0u) << out;
  EXPECT_TRUE(contains(out, "Content-Type: application/json")) << out;
  EXPECT_TRUE(contains(out, "malformed HTTP request")) << out;
}

TEST_F(GatewayServer, KeepAliveServesSeveralRequestsOnOneConnection) {
  auto out = exchange(
      "GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
      "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(out.rfind("HTTP/1.1 404 ", 0), 0u) << out;
  EXPECT_TRUE(contains(out, "HTTP/1.1 503 ")) << out;
  EXPECT_TRUE(contains(out, R"("status":"redis unavailable")")) << out;
}

// ---- accounts, sessions and pages without Redis (issue 4) ------------------------------------

TEST(GatewayRoutes, AccountTokenAndAdminRoutes) {
  EXPECT_EQ(dg::match_route("/api/register").kind, dg::route_kind::register_);
  EXPECT_EQ(dg::match_route("/api/login").kind, dg::route_kind::login);
  EXPECT_EQ(dg::match_route("/api/logout").kind, dg::route_kind::logout);
  EXPECT_EQ(dg::match_route("/api/session").kind, dg::route_kind::session);
  EXPECT_EQ(dg::match_route("/api/tokens").kind, dg::route_kind::tokens);
  std::string hash(64, 'a');
  auto t = dg::match_route("/api/tokens/" + hash);
  EXPECT_EQ(t.kind, dg::route_kind::token);
  EXPECT_EQ(t.name, hash);
  EXPECT_EQ(dg::match_route("/api/tokens/xyz").kind, dg::route_kind::not_found);
  EXPECT_EQ(dg::match_route("/api/tokens/" + std::string(64, 'A')).kind, dg::route_kind::not_found);
  auto u = dg::match_route("/api/admin/users/carol/approve");
  EXPECT_EQ(u.kind, dg::route_kind::admin_user);
  EXPECT_EQ(u.name, "carol");
  EXPECT_EQ(u.action, "approve");
  EXPECT_EQ(dg::match_route("/api/admin/users/carol/make-admin").kind, dg::route_kind::admin_user);
  EXPECT_EQ(dg::match_route("/api/admin/users/carol/explode").kind, dg::route_kind::not_found);
  EXPECT_EQ(dg::match_route("/api/admin/users/Carol/approve").kind, dg::route_kind::not_found);
  EXPECT_EQ(dg::match_route("/api/admin/users").kind, dg::route_kind::admin_users);
  EXPECT_EQ(dg::match_route("/api/admin/overview").kind, dg::route_kind::admin_overview);
  EXPECT_EQ(dg::allowed_methods(dg::route_kind::tokens), "GET, POST");
  EXPECT_EQ(dg::allowed_methods(dg::route_kind::token), "DELETE");
  EXPECT_EQ(dg::allowed_methods(dg::route_kind::login), "POST");
  EXPECT_TRUE(dg::is_public(dg::route_kind::register_));
  EXPECT_TRUE(dg::is_public(dg::route_kind::login));
  EXPECT_FALSE(dg::is_public(dg::route_kind::tokens));
  EXPECT_FALSE(dg::is_public(dg::route_kind::admin_users));
}

TEST(GatewayJobToken, AccountRoutesAreForbidden) {
  dg::principal who;
  who.name = "alice";
  who.only_job = 5;
  for (auto path : {"/api/tokens", "/api/session", "/api/admin/users", "/api/admin/overview"}) {
    auto e = dg::check_job_token_scope(who, dg::match_route(path), "GET");
    ASSERT_TRUE(e) << path;
    EXPECT_EQ(e->status(), 403u) << path;
  }
}

TEST(GatewayQueries, EventsSinceIsAnEventId) {
  std::optional<descprod::job_id> job;
  std::optional<dg::stream_id> since;
  ASSERT_FALSE(dg::parse_events_query("since=1795625968202-3&job=4", job, since));
  ASSERT_TRUE(since);
  EXPECT_EQ(since->ms, 1795625968202u);
  EXPECT_EQ(since->seq, 3u);
  EXPECT_EQ(*job, 4);
  EXPECT_TRUE(dg::parse_events_query("since=yesterday", job, since));
  EXPECT_TRUE(dg::parse_events_query("since=1-1", job)) << "the two-argument form refuses since";
}

TEST_F(GatewayHandler, CrossOriginPostIsRefusedBeforeAuthentication) {
  dg::request req(http::verb::post, "/api/jobs", 11);
  req.set(http::field::host, "127.0.0.1:8080");
  req.set(http::field::origin, "http://127.0.0.1:9999");
  req.body() = R"({"jobtype":"mysleep","config":"1"})";
  req.prepare_payload();
  auto fut = net::co_spawn(ioc_, dg::handle_request(ctx_, std::move(req)), net::use_future);
  ioc_.run();
  auto res = fut.get();
  EXPECT_EQ(res.result_int(), 403u);
  EXPECT_TRUE(contains(res.body(), "cross-origin")) << res.body();
  EXPECT_EQ(redis_failures_, 0) << "refused before any Redis call";
}

TEST_F(GatewayHandler, PagesWithoutASessionRedirectToLogin) {
  auto res = run(http::verb::get, "/");
  EXPECT_EQ(res.result_int(), 303u);
  EXPECT_EQ(res[http::field::location], "/login");
  res = run(http::verb::get, "/jobs/12");
  EXPECT_EQ(res.result_int(), 303u);
  res = run(http::verb::get, "/admin");
  EXPECT_EQ(res.result_int(), 303u);
}

TEST_F(GatewayHandler, LoginPageSetsTheFormCsrfCookieAndSecurityHeaders) {
  auto res = run(http::verb::get, "/login");
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(res[http::field::content_type], "text/html; charset=utf-8");
  std::string cookie(res[http::field::set_cookie]);
  EXPECT_EQ(cookie.rfind("descprod_csrf=", 0), 0u) << cookie;
  EXPECT_TRUE(contains(cookie, "HttpOnly")) << cookie;
  EXPECT_TRUE(contains(cookie, "SameSite=Strict")) << cookie;
  EXPECT_FALSE(contains(cookie, "Secure")) << "plain HTTP: no Secure";
  auto value = cookie.substr(14, 64);
  EXPECT_TRUE(contains(res.body(), "name=\"csrf\" value=\"" + value + "\"")) << res.body();
  EXPECT_TRUE(contains(std::string(res["Content-Security-Policy"]), "script-src 'self'"));
  EXPECT_EQ(res["X-Frame-Options"], "DENY");
  ctx_.tls = true;
  res = run(http::verb::get, "/register");
  EXPECT_TRUE(contains(std::string(res[http::field::set_cookie]), "; Secure")) << "TLS: Secure";
}

TEST_F(GatewayHandler, LoginFormWithoutTheCsrfCookieIsRefused) {
  dg::request req(http::verb::post, "/login", 11);
  req.set(http::field::content_type, "application/x-www-form-urlencoded");
  req.body() = "username=alice&password=secret123&csrf=abc";
  req.prepare_payload();
  auto fut = net::co_spawn(ioc_, dg::handle_request(ctx_, std::move(req)), net::use_future);
  ioc_.run();
  auto res = fut.get();
  EXPECT_EQ(res.result_int(), 403u);
  EXPECT_TRUE(contains(res.body(), "CSRF")) << res.body();
  EXPECT_EQ(redis_failures_, 0);
}

TEST_F(GatewayHandler, RegistrationIsValidatedBeforeRedis) {
  auto res = run(http::verb::post, "/api/register", "",
                 R"({"username":"Bad Name","password":"secret123","email":"a@b.c"})");
  EXPECT_EQ(res.result_int(), 400u);
  res = run(http::verb::post, "/api/register", "",
            R"({"username":"carol","password":"short","email":"a@b.c"})");
  EXPECT_EQ(res.result_int(), 400u);
  EXPECT_TRUE(contains(body_of(res).at("detail").as_string().c_str(), "at least 8"));
  res = run(http::verb::post, "/api/register", "",
            R"({"username":"carol","password":"secret123","email":"nope"})");
  EXPECT_EQ(res.result_int(), 400u);
  res = run(http::verb::post, "/api/register", "", R"({"username":"carol","password":"secret123"})");
  EXPECT_EQ(res.result_int(), 400u);
  EXPECT_TRUE(contains(body_of(res).at("detail").as_string().c_str(), "email"));
  res = run(http::verb::post, "/api/login", "", R"({"username":"carol","password":"x","extra":1})");
  EXPECT_EQ(res.result_int(), 400u);
  EXPECT_EQ(redis_failures_, 0);
}

TEST_F(GatewayHandler, StaticAssetsAreServedWithoutASession) {
  auto res = run(http::verb::get, "/static/app.js");
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(res[http::field::content_type], "text/javascript; charset=utf-8");
  EXPECT_TRUE(contains(res.body(), "EventSource"));
  res = run(http::verb::get, "/static/app.css");
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(run(http::verb::get, "/static/nope.js").result_int(), 404u);
  EXPECT_EQ(run(http::verb::post, "/static/app.js").result_int(), 405u);
}

// ---- the submit path's shortcuts (docs/performance.md) ---------------------------------------

#include "core/job.hpp"
#include "gateway/auth_cache.hpp"
#include "gateway/handler_detail.hpp"
#include "gateway/notices.hpp"
#include "gateway/services.hpp"

namespace {
// The job hash exactly as core/store.cpp's create script writes it.
descprod::job_record as_created(descprod::job_id id, const dg::job_request& r, const std::string& owner,
                                const std::string& t) {
  descprod::job_record rec;
  rec["id"] = std::to_string(id);
  rec["descname"] = owner;
  rec["jobtype"] = r.jobtype;
  rec["config"] = r.config;
  rec["howfig"] = r.howfig;
  rec["priority"] = std::to_string(r.priority);
  rec["max_attempts"] = std::to_string(r.max_attempts);
  rec["archive"] = "0";
  rec["attempt"] = "1";
  rec["state"] = "ready";
  rec["progress"] = "Ready.";
  rec["create_time"] = t;
  rec["update_time"] = t;
  rec["queued_time"] = t;
  if (r.parent) rec["parent"] = std::to_string(*r.parent);
  return rec;
}
}  // namespace

TEST(GatewayAnswers, CreatedJobAnswerEqualsTheRenderedJobHash) {
  dg::job_request a;
  a.jobtype = "mysleep";
  a.config = "30";
  a.priority = 5;
  a.max_attempts = 3;
  dg::job_request b = a;
  b.howfig = "fast-2:x";
  b.parent = 7;
  b.priority = -1000;
  b.max_attempts = 1;
  for (const auto& r : {a, b}) {
    for (std::string t : {"1795625968.202900", "1795625968.000000", "1700000000.999999"}) {
      auto res = dg::detail::created_job_response(41, r, "alice", t);
      auto expected = descprod::job_to_json(as_created(41, r, "alice", t));
      EXPECT_EQ(res.result_int(), 201u);
      EXPECT_EQ(res[http::field::location], "/api/jobs/41");
      EXPECT_EQ(res[http::field::content_type], "application/json");
      EXPECT_EQ(res.body(), json::serialize(expected) + "\n") << t;
    }
  }
}

TEST(AuthCache, RemembersForTheTtlOnlyAndHonoursExpiryAndClear) {
  using clock = dg::auth_cache::clock;
  dg::auth_cache c(std::chrono::milliseconds(1000), 2);
  dg::principal p;
  p.name = "alice";
  p.only_job = 9;
  auto t0 = clock::now();
  EXPECT_FALSE(c.find("h1", 100.0, t0));
  c.remember("h1", p, 0, t0);
  auto hit = c.find("h1", 100.0, t0 + std::chrono::milliseconds(999));
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->name, "alice");
  EXPECT_EQ(hit->only_job, std::optional<descprod::job_id>(9));
  EXPECT_FALSE(c.find("h1", 100.0, t0 + std::chrono::milliseconds(1000))) << "stale after the ttl";
  EXPECT_EQ(c.size(), 0u);
  // The token's own expiry counts on every use.
  c.remember("h2", p, 150.0, t0);
  EXPECT_TRUE(c.find("h2", 149.9, t0));
  EXPECT_FALSE(c.find("h2", 150.0, t0));
  // clear() forgets everything; the size stays bounded.
  c.remember("a", p, 0, t0);
  c.remember("b", p, 0, t0);
  c.remember("c", p, 0, t0);
  EXPECT_LE(c.size(), 2u);
  EXPECT_TRUE(c.find("c", 100.0, t0));
  c.clear();
  EXPECT_FALSE(c.find("c", 100.0, t0));
  // A ttl of 0 turns it off.
  dg::auth_cache off(std::chrono::milliseconds(0));
  off.remember("h", p, 0, t0);
  EXPECT_FALSE(off.find("h", 100.0, t0));
}

TEST(SubmitNotices, OneMessagePerEventLoopTurnAndAtMostMaxJobsEach) {
  net::io_context ioc;
  std::vector<std::vector<std::string>> sent;
  dg::submit_notices n(ioc.get_executor(), [&](const std::vector<std::string>& frames) {
    sent.push_back(frames);
    return true;
  });
  n.add(1, 5, "alice");
  n.add(2, 0, "bob");
  EXPECT_TRUE(sent.empty()) << "nothing before the turn ends";
  ioc.run();
  ASSERT_EQ(sent.size(), 1u);
  ASSERT_EQ(sent[0].size(), 2u);
  EXPECT_EQ(sent[0][0], "submitted");
  EXPECT_EQ(sent[0][1], R"({"jobs":[[1,5,"alice"],[2,0,"bob"]]})");
  sent.clear();
  for (descprod::job_id id = 1; id <= 2500; ++id) n.add(id, 0, "alice");
  EXPECT_EQ(sent.size(), 2u) << "a full batch goes at once";
  ioc.restart();
  ioc.run();
  ASSERT_EQ(sent.size(), 3u);
  std::size_t jobs = 0;
  for (const auto& m : sent) {
    auto a = json::parse(m[1]).at("jobs").as_array();
    EXPECT_LE(a.size(), dg::submit_notices::max_jobs);
    jobs += a.size();
  }
  EXPECT_EQ(jobs, 2500u);
  EXPECT_EQ(n.jobs_sent(), 2502u);
  // A refused send is logged, not retried (the daemon reconciles from Redis), and flush() sends
  // what is pending at once.
  dg::submit_notices refused(ioc.get_executor(), [](const std::vector<std::string>&) { return false; });
  refused.add(1, 0, "alice");
  refused.flush();
  EXPECT_EQ(refused.pending(), 0u);
  EXPECT_EQ(refused.messages_sent(), 0u);
}
