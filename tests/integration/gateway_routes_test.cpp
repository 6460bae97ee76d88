// In-process tests of the gateway's handlers against a real redis-server: requests go to
// handle_request (route table, authentication policy, services, presenters, store) without a
// binary or a socket; no daemon (its notices are dropped: gateway_context::send_to_daemon empty).
// A few routes of each resource: jobs, the job-token scope, tokens, admin, pages with their CSRF
// token, and the 404/405 answers read from the table.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "core/accounts.hpp"
#include "core/crypto.hpp"
#include "core/keys.hpp"
#include "core/redis.hpp"
#include "core/store.hpp"
#include "gateway/handler.hpp"
#include "gateway/router.hpp"
#include "tests/support/support.hpp"

namespace {

namespace net = boost::asio;
namespace http = boost::beast::http;
namespace json = boost::json;
namespace dg = descprod::gateway;
namespace test = descprod::test;

const char* apps_yaml = R"(
apps:
  - name: mysleep
    help: "sleeps N seconds"
    pattern: "^[0-9]+$"
)";

constexpr const char* alice_token = "dp_alice_token_for_the_route_tests";
constexpr const char* root_token = "dp_root_token_for_the_route_tests";
constexpr const char* session_token = "alice_session_cookie_value";
constexpr const char* session_csrf = "csrf-of-alice-session";

class GatewayInProcess : public ::testing::Test {
 protected:
  GatewayInProcess() {
    test::run_async(ioc_, redis_.async_connect());
    ctx_.apps = descprod::parse_apps(apps_yaml, "apps.yaml");
    ctx_.redis = &redis_;
    ctx_.jobs = &store_;
    // Accounts, a user token each and a web session, written as the gateway writes them.
    cmd({"HSET", "descprod:user:alice", "status", "active", "role", "user"});
    cmd({"HSET", "descprod:user:root", "status", "active", "role", "admin"});
    cmd({"SADD", "descprod:users", "alice", "root"});
    add_token(alice_token, "alice", "user");
    add_token(root_token, "root", "user");
    cmd({"HSET", "descprod:session:" + descprod::sha256_hex(session_token), "user", "alice", "csrf",
         session_csrf});
  }

  descprod::redis_reply cmd(const std::vector<std::string>& args) { return inspect_.exec(args); }

  // Written by the one code path that writes tokens (core/accounts.hpp).
  void add_token(const std::string& token, const std::string& owner, const std::string& scope) {
    descprod::token_spec t;
    t.owner = owner;
    t.scope = scope;
    t.created = "1";
    for (const auto& c : descprod::token_write_commands(keys_, descprod::sha256_hex(token), t)) cmd(c);
  }

  dg::response run(http::verb method, const std::string& target, const std::string& token,
                   const std::string& body = "", const std::string& cookie = "") {
    dg::request req(method, target, 11);
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    if (!cookie.empty()) req.set(http::field::cookie, cookie);
    req.body() = body;
    req.prepare_payload();
    return test::run_async(ioc_, dg::handle_request(ctx_, std::move(req)));
  }

  static json::object body_of(const dg::response& res) { return json::parse(res.body()).as_object(); }

  descprod::job_id submit(const std::string& token = alice_token) {
    auto res = run(http::verb::post, "/api/jobs", token, R"({"jobtype":"mysleep","config":"5"})");
    EXPECT_EQ(res.result_int(), 201u) << res.body();
    return body_of(res).at("id").as_int64();
  }

  descprod::keys keys_{"descprod:"};
  test::redis_server server_;
  descprod::redis_sync inspect_{server_.endpoint()};
  net::io_context ioc_;
  descprod::redis_client redis_{ioc_.get_executor(), server_.endpoint()};
  descprod::store store_{redis_, "descprod:"};
  dg::gateway_context ctx_;
};

TEST_F(GatewayInProcess, JobsAreCreatedReadListedAndCancelledThroughTheTable) {
  auto id = submit();
  EXPECT_EQ(cmd({"HGET", "descprod:job:" + std::to_string(id), "descname"}).str, "alice");
  auto got = run(http::verb::get, "/api/jobs/" + std::to_string(id), alice_token);
  ASSERT_EQ(got.result_int(), 200u) << got.body();
  EXPECT_EQ(body_of(got).at("state").as_string(), "ready");
  auto list = run(http::verb::get, "/api/jobs?limit=10", alice_token);
  ASSERT_EQ(list.result_int(), 200u) << list.body();
  EXPECT_EQ(body_of(list).at("total").as_int64(), 1);
  // Another user does not see it: 404, not 403.
  EXPECT_EQ(run(http::verb::get, "/api/jobs/" + std::to_string(id), root_token).result_int(),
            200u);  // root is an administrator: reads every job
  add_token("dp_bob_token_for_the_route_tests", "bob", "user");
  cmd({"HSET", "descprod:user:bob", "status", "active", "role", "user"});
  EXPECT_EQ(run(http::verb::get, "/api/jobs/" + std::to_string(id), "dp_bob_token_for_the_route_tests")
                .result_int(),
            404u);
  auto cancel = run(http::verb::post, "/api/jobs/" + std::to_string(id) + "/cancel", alice_token);
  EXPECT_EQ(cancel.result_int(), 200u) << cancel.body();
  EXPECT_EQ(cmd({"HGET", "descprod:job:" + std::to_string(id), "state"}).str, "cancelled");
  auto events = run(http::verb::get, "/api/jobs/" + std::to_string(id) + "/events", alice_token);
  ASSERT_EQ(events.result_int(), 200u) << events.body();
  EXPECT_FALSE(body_of(events).at("events").as_array().empty());
}

TEST_F(GatewayInProcess, AJobTokenStaysInsideItsScope) {
  auto mine = submit();
  auto other = submit();
  add_token("dp_job_token_for_the_route_tests", "alice", "job:" + std::to_string(mine));
  const std::string jt = "dp_job_token_for_the_route_tests";
  EXPECT_EQ(run(http::verb::get, "/api/jobs/" + std::to_string(mine), jt).result_int(), 200u);
  // Another job of the same owner is read (issue #16 item 2), and listed; not written; the event
  // stream and the token routes stay 403.
  EXPECT_EQ(run(http::verb::get, "/api/jobs/" + std::to_string(other), jt).result_int(), 200u);
  auto list = run(http::verb::get, "/api/jobs", jt);
  EXPECT_EQ(list.result_int(), 200u);
  EXPECT_EQ(body_of(list).at("total").as_int64(), 2);
  EXPECT_EQ(run(http::verb::get, "/api/events", jt).result_int(), 403u);
  EXPECT_EQ(run(http::verb::post, "/api/jobs/" + std::to_string(other) + "/cancel", jt).result_int(), 404u);
  EXPECT_EQ(run(http::verb::post, "/api/jobs/" + std::to_string(mine) + "/cancel", jt).result_int(), 403u);
  EXPECT_EQ(run(http::verb::get, "/api/tokens", jt).result_int(), 403u);
  // A child of its own job is allowed, a job without parent is not.
  auto child = run(http::verb::post, "/api/jobs", jt,
                   R"({"jobtype":"mysleep","config":"1","parent":)" + std::to_string(mine) + "}");
  EXPECT_EQ(child.result_int(), 201u) << child.body();
  EXPECT_EQ(run(http::verb::post, "/api/jobs", jt, R"({"jobtype":"mysleep","config":"1"})").result_int(),
            403u);
}

TEST_F(GatewayInProcess, TokensAreCreatedListedAndRevoked) {
  auto made = run(http::verb::post, "/api/tokens", alice_token, R"({"label":"laptop"})");
  ASSERT_EQ(made.result_int(), 201u) << made.body();
  std::string token(body_of(made).at("token").as_string());
  auto sha = descprod::sha256_hex(token);
  EXPECT_EQ(cmd({"HGET", "descprod:token:" + sha, "owner"}).str, "alice");
  auto list = run(http::verb::get, "/api/tokens", token);
  ASSERT_EQ(list.result_int(), 200u) << list.body();
  EXPECT_NE(list.body().find(sha), std::string::npos);
  EXPECT_EQ(run(http::verb::delete_, "/api/tokens/" + sha, alice_token).result_int(), 204u);
  auto after = run(http::verb::get, "/api/tokens", token);
  EXPECT_EQ(after.result_int(), 401u);
  EXPECT_EQ(after[http::field::www_authenticate], "Bearer");
  EXPECT_EQ(run(http::verb::delete_, "/api/tokens/" + sha, alice_token).result_int(), 404u);
}

TEST_F(GatewayInProcess, AdminRoutesAreForAdministratorsOnly) {
  auto refused = run(http::verb::get, "/api/admin/users", alice_token);
  EXPECT_EQ(refused.result_int(), 403u);
  EXPECT_EQ(body_of(refused).at("detail").as_string(), "administrators only");
  auto users = run(http::verb::get, "/api/admin/users", root_token);
  ASSERT_EQ(users.result_int(), 200u) << users.body();
  EXPECT_NE(users.body().find("alice"), std::string::npos);
  auto disable = run(http::verb::post, "/api/admin/users/alice/disable", root_token);
  ASSERT_EQ(disable.result_int(), 200u) << disable.body();
  EXPECT_EQ(cmd({"HGET", "descprod:user:alice", "status"}).str, "disabled");
  EXPECT_EQ(run(http::verb::get, "/api/jobs", alice_token).result_int(), 401u);
}

TEST_F(GatewayInProcess, SessionsNeedTheirCsrfTokenOnTheApiAndOnPageForms) {
  const std::string cookie = std::string("descprod_session=") + session_token;
  // The API: a session without X-CSRF-Token may read but not change.
  EXPECT_EQ(run(http::verb::get, "/api/session", "", "", cookie).result_int(), 200u);
  auto api = run(http::verb::post, "/api/jobs", "", R"({"jobtype":"mysleep","config":"5"})", cookie);
  EXPECT_EQ(api.result_int(), 403u);
  // A page form with a wrong CSRF token: a 403 page, nothing created.
  auto bad = run(http::verb::post, "/jobs", "", "jobtype=mysleep&config=5&csrf=wrong", cookie);
  EXPECT_EQ(bad.result_int(), 403u);
  EXPECT_NE(bad[http::field::content_type].find("text/html"), std::string::npos);
  EXPECT_TRUE(cmd({"GET", "descprod:next_job_id"}).is_nil());
  // With the session's token: created, and redirected home.
  auto good = run(http::verb::post, "/jobs", "", std::string("jobtype=mysleep&config=5&csrf=") + session_csrf,
                  cookie);
  EXPECT_EQ(good.result_int(), 303u) << good.body();
  EXPECT_EQ(good[http::field::location], "/");
  EXPECT_EQ(cmd({"GET", "descprod:next_job_id"}).str, "1");
  // Pages: home with the session, /login without.
  auto home = run(http::verb::get, "/", "", "", cookie);
  EXPECT_EQ(home.result_int(), 200u);
  EXPECT_NE(home.body().find("mysleep"), std::string::npos);
  auto anon = run(http::verb::get, "/", "");
  EXPECT_EQ(anon.result_int(), 303u);
  EXPECT_EQ(anon[http::field::location], "/login");
  EXPECT_EQ(run(http::verb::get, "/jobs/1/row", "").result_int(), 401u);
}

// The accounts service through the JSON presenter: register (pending), an administrator
// approves, login opens a session whose cookie reads and whose CSRF token logs it out.
TEST_F(GatewayInProcess, RegisterApproveLoginAndLogoutThroughTheAccountRoutes) {
  const std::string creds = R"({"username":"carol","password":"a long password","email":"c@x.org"})";
  auto reg = run(http::verb::post, "/api/register", "", creds);
  ASSERT_EQ(reg.result_int(), 201u) << reg.body();
  EXPECT_EQ(body_of(reg).at("status").as_string(), "pending");
  EXPECT_EQ(cmd({"HGET", "descprod:user:carol", "status"}).str, "pending");
  const std::string login_body = R"({"username":"carol","password":"a long password"})";
  auto early = run(http::verb::post, "/api/login", "", login_body);
  EXPECT_EQ(early.result_int(), 403u) << early.body();
  auto approve = run(http::verb::post, "/api/admin/users/carol/approve", root_token);
  ASSERT_EQ(approve.result_int(), 200u) << approve.body();
  EXPECT_EQ(body_of(approve).at("status").as_string(), "active");
  auto wrong =
      run(http::verb::post, "/api/login", "", R"({"username":"carol","password":"not the password"})");
  EXPECT_EQ(wrong.result_int(), 401u);
  auto login = run(http::verb::post, "/api/login", "", login_body);
  ASSERT_EQ(login.result_int(), 200u) << login.body();
  std::string set_cookie(login[http::field::set_cookie]);
  ASSERT_EQ(set_cookie.rfind("descprod_session=", 0), 0u) << set_cookie;
  std::string cookie = set_cookie.substr(0, set_cookie.find(';'));
  std::string csrf(body_of(login).at("csrf_token").as_string());
  auto session = run(http::verb::get, "/api/session", "", "", cookie);
  ASSERT_EQ(session.result_int(), 200u) << session.body();
  EXPECT_EQ(body_of(session).at("user").as_string(), "carol");
  // Logout without the CSRF token is refused; with it the session ends.
  EXPECT_EQ(run(http::verb::post, "/api/logout", "", "", cookie).result_int(), 403u);
  dg::request out(http::verb::post, "/api/logout", 11);
  out.set(http::field::cookie, cookie);
  out.set("X-CSRF-Token", csrf);
  out.prepare_payload();
  auto bye = test::run_async(ioc_, dg::handle_request(ctx_, std::move(out)));
  EXPECT_EQ(bye.result_int(), 204u) << bye.body();
  EXPECT_EQ(run(http::verb::get, "/api/session", "", "", cookie).result_int(), 401u);
}

TEST_F(GatewayInProcess, NotFoundAndMethodNotAllowedComeFromTheTable) {
  auto api = run(http::verb::put, "/api/jobs", alice_token);
  EXPECT_EQ(api.result_int(), 405u);
  EXPECT_EQ(api[http::field::allow], "GET, POST");
  auto page = run(http::verb::put, "/login", "");
  EXPECT_EQ(page.result_int(), 405u);
  EXPECT_EQ(page[http::field::allow], "GET, POST");
  EXPECT_NE(page[http::field::content_type].find("text/html"), std::string::npos);
  EXPECT_EQ(run(http::verb::get, "/api/nothing", alice_token).result_int(), 404u);
  EXPECT_EQ(run(http::verb::get, "/jobs/0", "").result_int(), 404u);
  // Every entry's handler is set and no two entries share a method and a pattern.
  auto table = dg::route_table();
  for (std::size_t i = 0; i < table.size(); ++i) {
    EXPECT_NE(table[i].handler, nullptr) << table[i].pattern;
    for (std::size_t j = i + 1; j < table.size(); ++j)
      EXPECT_FALSE(table[i].pattern == table[j].pattern && (table[i].methods & table[j].methods))
          << table[i].pattern;
  }
}

}  // namespace
