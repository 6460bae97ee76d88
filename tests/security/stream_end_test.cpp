// Security tests of item 7 (issue 13): a logout, an administrator disabling the account, and a
// revoked API token end the live event streams that session, account or token opened, at once
// and server side (today events keep flowing to a logged-out session). The real service; the
// time from the ending request to the stream's close is measured.
#include <gtest/gtest.h>

#include <iostream>

#include "core/accounts.hpp"
#include "tests/security/gateway_limits_support.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

using namespace limits;
using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

service_options options() {
  service_options o;
  o.workers = 0;
  o.gateway_extra = "  password_opslimit: 1\n  password_memlimit_kib: 8\n";
  return o;
}

struct session_login {
  std::string cookie;  // "descprod_session=..."
  std::string csrf;
};

session_login log_in(service& s, const std::string& user, const std::string& password) {
  session_login out;
  auto r = raw_request("127.0.0.1", s.port(), "POST", "/api/login", {},
                       R"({"username":")" + user + R"(","password":")" + password + R"("})");
  EXPECT_EQ(r.status, 200) << r.body;
  if (r.status != 200) return out;
  auto sc = r.header("set-cookie");
  out.cookie = sc.substr(0, sc.find(';'));
  out.csrf = std::string(boost::json::parse(r.body).as_object().at("csrf_token").as_string());
  return out;
}

// Waits until the stream is closed by the server; returns the milliseconds it took from `t0`,
// or -1 when it stayed open for 5 s.
double closed_after(sse_stream& st, clock_type::time_point t0) {
  bool closed = wait_until([&] { return !st.pump(20ms); }, 5s, 1ms);
  return closed ? ms_since(t0) : -1;
}

// Whether an event of job `id` reaches the stream within 10 s (the stream is alive).
bool sees_job(sse_stream& st, long long id) {
  std::string needle = "\"id\":" + std::to_string(id) + ",";
  return wait_until(
      [&] {
        st.pump(20ms);
        return st.received.find(needle) != std::string::npos;
      },
      10s);
}

}  // namespace

TEST(StreamEnd, LogoutEndsThatSessionsStreams) {
  service s(options());
  {
    redis_sync r(s.redis.endpoint());
    ASSERT_TRUE(set_password(r, "descprod:", "alice", "alice-secret", password_cost{1, 8 * 1024}));
  }
  auto one = log_in(s, "alice", "alice-secret");
  auto two = log_in(s, "alice", "alice-secret");  // another browser: its own session
  ASSERT_FALSE(one.cookie.empty());
  ASSERT_FALSE(two.cookie.empty());
  sse_stream a, b, job_stream;
  ASSERT_EQ(a.open("127.0.0.1", s.port(), "/api/events", {"Cookie: " + one.cookie}), 200);
  ASSERT_EQ(b.open("127.0.0.1", s.port(), "/api/events", {"Cookie: " + two.cookie}), 200);
  auto id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  ASSERT_TRUE(sees_job(a, id));
  ASSERT_EQ(job_stream.open("127.0.0.1", s.port(), "/api/jobs/" + std::to_string(id) + "/events?follow=1",
                            {"Cookie: " + one.cookie}),
            200);

  auto t0 = clock_type::now();
  auto out = raw_request("127.0.0.1", s.port(), "POST", "/api/logout",
                         {"Cookie: " + one.cookie, "X-CSRF-Token: " + one.csrf});
  ASSERT_EQ(out.status, 204) << out.body;
  double ms = closed_after(a, t0);
  double job_ms = closed_after(job_stream, t0);
  std::cout << "[figure] logout → the session's streams closed after " << ms << " ms and " << job_ms
            << " ms\n";
  EXPECT_GE(ms, 0) << "the logged-out session's stream is still open";
  EXPECT_LT(ms, 1000);
  EXPECT_GE(job_ms, 0) << "the logged-out session's job stream is still open";
  // The other session's stream lives on.
  auto id2 = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  EXPECT_TRUE(sees_job(b, id2));
  // And a reconnect with the ended session is refused.
  sse_stream again;
  EXPECT_EQ(again.open("127.0.0.1", s.port(), "/api/events", {"Cookie: " + one.cookie}), 401);
}

TEST(StreamEnd, AdminDisableEndsTheAccountsStreams) {
  service s(options());
  std::string admin_token;
  {
    redis_sync r(s.redis.endpoint());
    admin_token = issue_token(r, "descprod:", "ops");
    ASSERT_TRUE(set_password(r, "descprod:", "alice", "alice-secret", password_cost{1, 8 * 1024}));
  }
  auto web = log_in(s, "alice", "alice-secret");
  sse_stream by_token, by_session, bobs;
  ASSERT_EQ(by_token.open("127.0.0.1", s.port(), "/api/events", {"Authorization: Bearer " + s.alice_token}),
            200);
  ASSERT_EQ(by_session.open("127.0.0.1", s.port(), "/api/events", {"Cookie: " + web.cookie}), 200);
  ASSERT_EQ(bobs.open("127.0.0.1", s.port(), "/api/events", {"Authorization: Bearer " + s.bob_token}), 200);

  auto t0 = clock_type::now();
  auto r = s.call("POST", "/api/admin/users/alice/disable", "", admin_token);
  ASSERT_EQ(r.status, 200) << r.body;
  double token_ms = closed_after(by_token, t0);
  double session_ms = closed_after(by_session, t0);
  std::cout << "[figure] disable → the account's streams closed after " << token_ms << " ms (token) and "
            << session_ms << " ms (session)\n";
  EXPECT_GE(token_ms, 0);
  EXPECT_LT(token_ms, 1000);
  EXPECT_GE(session_ms, 0);
  EXPECT_LT(session_ms, 1000);
  auto id = s.submit(R"({"jobtype":"mysleep","config":"1"})", s.bob_token);
  EXPECT_TRUE(sees_job(bobs, id)) << "another account's stream lives on";
  sse_stream again;
  EXPECT_EQ(again.open("127.0.0.1", s.port(), "/api/events", {"Authorization: Bearer " + s.alice_token}),
            401);
}

TEST(StreamEnd, TokenRevokeEndsItsStreams) {
  service s(options());
  auto made = s.call("POST", "/api/tokens", R"({"label":"laptop"})");
  ASSERT_EQ(made.status, 201) << made.body;
  auto mj = made.json().as_object();
  std::string second(mj.at("token").as_string());
  std::string second_id(mj.at("id").as_string());
  sse_stream revoked, kept;
  ASSERT_EQ(revoked.open("127.0.0.1", s.port(), "/api/events", {"Authorization: Bearer " + second}), 200);
  ASSERT_EQ(kept.open("127.0.0.1", s.port(), "/api/events", {"Authorization: Bearer " + s.alice_token}), 200);

  auto t0 = clock_type::now();
  auto r = s.call("DELETE", "/api/tokens/" + second_id);
  ASSERT_EQ(r.status, 204) << r.body;
  double ms = closed_after(revoked, t0);
  std::cout << "[figure] token revoke → its stream closed after " << ms << " ms\n";
  EXPECT_GE(ms, 0) << "the revoked token's stream is still open";
  EXPECT_LT(ms, 1000);
  auto id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  EXPECT_TRUE(sees_job(kept, id)) << "the other token's stream lives on";
  sse_stream again;
  EXPECT_EQ(again.open("127.0.0.1", s.port(), "/api/events", {"Authorization: Bearer " + second}), 401);
}

}  // namespace descprod::test
