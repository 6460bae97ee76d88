// End-to-end tests of accounts, web sessions, CSRF, API tokens, the admin routes and the pages'
// access rules (issue 4) against the real binaries (tests/support/service: redis-server, daemon,
// gateway, a worker). The browser suite (tests/web) covers the same story in Chromium; these
// tests pin the HTTP details: status codes, cookie attributes, what Redis stores.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <thread>

#include "core/accounts.hpp"
#include "core/crypto.hpp"
#include "tests/e2e/api_support.hpp"

namespace descprod::test {
namespace {

using namespace std::chrono_literals;
using api::admin_cli;
using api::approved_login;
using api::register_user;
using api::web_client;

// Fast password hashing and a short session TTL for the tests.
service_options web_options() {
  service_options o;
  o.gateway_extra = "  password_opslimit: 1\n  password_memlimit_kib: 8\n  session_ttl_s: 600\n";
  o.apps =
      "  - name: markup\n"
      "    command: [\"/bin/sh\", \"-c\", \"echo '<script>alert(1)</script>' > current-status.txt\"]\n"
      "    args: []\n";
  return o;
}

std::string detail(const http_response& r) {
  try {
    return std::string(r.json().as_object().at("detail").as_string());
  } catch (...) {
    return r.body;
  }
}

std::string session_key_of(const std::string& cookie) {
  return "descprod:session:" + sha256_hex(cookie.substr(cookie.find('=') + 1));
}

// The headers of a form post.
http_headers form_headers() {
  http_headers form;
  form.emplace_back("Content-Type", "application/x-www-form-urlencoded");
  return form;
}

// GET /jobs/rows: the rows of many jobs in one answer; another user's job is "gone", as is one
// that does not exist; a malformed or oversized list is a 400 with a JSON reason.
TEST(Web, RowsOfManyJobsComeInOneAnswerOnlyForTheCallersJobs) {
  service s(web_options());
  long long alices = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  web_client h{s};
  approved_login(s, h, "hana", "hana-secret");
  if (HasFatalFailure()) return;
  const http_headers form = form_headers();
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(h.call("POST", "/jobs", "jobtype=mysleep&config=1&csrf=" + h.csrf, form).status, 303);
  }
  redis_sync r(s.redis.endpoint());
  auto ids = r.exec({"ZRANGE", "descprod:user:hana:jobs", "0", "-1"});
  ASSERT_EQ(ids.elements.size(), 3u);
  std::string list;
  for (const auto& e : ids.elements) list += e.str + ",";
  list += std::to_string(alices) + ",999999," + ids.elements[0].str;  // a repeat counts once

  auto res = h.call("GET", "/jobs/rows?ids=" + list + "&next=/");
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.header("content-type").rfind("application/json", 0), 0u);
  auto j = boost::json::parse(res.body).as_object();
  const auto& rows = j.at("rows").as_object();
  EXPECT_EQ(rows.size(), 3u);
  for (const auto& e : ids.elements) {
    ASSERT_TRUE(rows.contains(e.str)) << res.body;
    std::string tr(rows.at(e.str).as_string());
    EXPECT_EQ(tr.rfind("<tr data-job=\"" + e.str + "\"", 0), 0u) << tr;
  }
  EXPECT_EQ(boost::json::serialize(j.at("gone")), "[" + std::to_string(alices) + ",999999]");

  for (std::string bad : {"", "abc", "1,,2", "-1", "1;2", "99999999999999999999999"}) {
    auto b = h.call("GET", "/jobs/rows?ids=" + bad);
    EXPECT_EQ(b.status, 400) << bad;
    EXPECT_NE(b.body.find("\"message\":\"ids:"), std::string::npos) << b.body;
  }
  std::string many;
  for (int i = 1; i <= 201; ++i) many += (i > 1 ? "," : "") + std::to_string(i);
  auto big = h.call("GET", "/jobs/rows?ids=" + many);
  EXPECT_EQ(big.status, 400);
  EXPECT_NE(big.body.find("at most 200"), std::string::npos) << big.body;
  web_client nobody{s};
  EXPECT_EQ(nobody.call("GET", "/jobs/rows?ids=" + ids.elements[0].str).status, 401);
}

// The jobs page's selection form: the ticked IDs (repeated "ids" fields) or every match of the
// view; a malformed form changes nothing.
TEST(Web, TheSelectionFormActsOnTheTickedJobsOrOnEveryMatch) {
  service s(web_options());
  web_client h{s};
  approved_login(s, h, "jo", "jo-secret-1");
  if (HasFatalFailure()) return;
  const http_headers form = form_headers();
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(h.call("POST", "/jobs", "jobtype=mysleep&config=30&csrf=" + h.csrf, form).status, 303);
  redis_sync r(s.redis.endpoint());
  auto ids = r.exec({"ZRANGE", "descprod:user:jo:jobs", "0", "-1"});
  ASSERT_EQ(ids.elements.size(), 3u);
  auto a = ids.elements[0].str, b = ids.elements[1].str;
  auto res = h.call("POST", "/jobs/actions",
                    "csrf=" + h.csrf + "&next=%2F&action=cancel&ids=" + a + "&ids=" + b + "&ids=" + a, form);
  EXPECT_EQ(res.status, 303) << res.body;
  // Cancelled at once if still ready, else once its worker has stopped it.
  auto cancelled = [&](const std::string& id) {
    return wait_until(
        [&] {
          return r.exec({"HGET", "descprod:job:" + id, "state"}).str == "cancelled";
        },
        20s);
  };
  EXPECT_TRUE(cancelled(a));
  EXPECT_TRUE(cancelled(b));
  auto page = h.call("GET", "/");
  EXPECT_NE(page.body.find("Cancelled (or asked to stop) 2 jobs."), std::string::npos);
  // Every match of the view: the one left ready.
  res = h.call("POST", "/jobs/actions",
               "csrf=" + h.csrf + "&next=%2F&action=cancel&scope=matching&query=archived%3D0", form);
  EXPECT_EQ(res.status, 303);
  EXPECT_TRUE(cancelled(ids.elements[2].str));
  EXPECT_NE(h.call("GET", "/").body.find("1 job. 2 jobs could not be: job "), std::string::npos);
  // Without a CSRF token: refused; an unknown action, no IDs, a bad query: a message, no change.
  EXPECT_EQ(h.call("POST", "/jobs/actions", "next=%2F&action=delete&ids=" + a, form).status, 403);
  for (std::string body :
       std::vector<std::string>{"action=explode&ids=" + a, "action=delete", "action=delete&ids=x&ids=-1",
                                "action=delete&scope=matching&query=state%3Dnope"}) {
    res = h.call("POST", "/jobs/actions", "csrf=" + h.csrf + "&next=%2F&" + body, form);
    EXPECT_EQ(res.status, 303) << body;
  }
  EXPECT_EQ(r.exec({"EXISTS", "descprod:job:" + a}).integer, 1);
}

// The token form carries a one-time key: the same POST again (a reload) creates no second token.
TEST(Web, ATokenFormPostedTwiceCreatesOneToken) {
  service s(web_options());
  web_client v{s};
  approved_login(s, v, "ivan", "ivan-secret");
  if (HasFatalFailure()) return;
  auto page = v.call("GET", "/tokens");
  ASSERT_EQ(page.status, 200);
  const std::string marker = "name=\"form\" value=\"";
  auto at = page.body.find(marker);
  ASSERT_NE(at, std::string::npos);
  std::string nonce = page.body.substr(at + marker.size());
  nonce = nonce.substr(0, nonce.find('"'));
  ASSERT_GE(nonce.size(), 32u) << nonce;
  const http_headers form = form_headers();
  redis_sync r(s.redis.endpoint());
  auto tokens = [&] { return r.exec({"SCARD", "descprod:user:ivan:tokens"}).integer; };
  std::string body = "csrf=" + v.csrf + "&form=" + nonce + "&label=once";
  auto first = v.call("POST", "/tokens", body, form);
  EXPECT_EQ(first.status, 200);
  EXPECT_NE(first.body.find("class=\"newtoken\""), std::string::npos);
  auto again = v.call("POST", "/tokens", body, form);
  EXPECT_EQ(again.status, 303);
  EXPECT_EQ(again.header("location"), "/tokens");
  auto none = v.call("POST", "/tokens", "csrf=" + v.csrf + "&label=nokey", form);
  EXPECT_EQ(none.status, 303);
  EXPECT_NE(v.call("GET", "/tokens").body.find("already used"), std::string::npos);
  EXPECT_EQ(tokens(), 1);
  auto list = v.call("GET", "/api/tokens", "", {{"X-CSRF-Token", v.csrf}});
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_EQ(boost::json::parse(list.body).at("tokens").as_array().size(), 1u) << list.body;
}

}  // namespace

TEST(Web, RegistrationIsPendingUntilApprovedThenSessionsWorkAndLogoutEndsThem) {
  service s(web_options());
  redis_sync r(s.redis.endpoint());
  ASSERT_EQ(register_user(s, "carol", "carol-secret").status, 201);
  // A taken name gets the same answer as a free one (registration does not reveal who has an
  // account) and changes nothing: carol logs in below with her own password.
  EXPECT_EQ(register_user(s, "carol", "other-secret").status, 201) << "the name is taken";
  auto user = r.exec({"HGETALL", "descprod:user:carol"});
  std::string all;
  for (const auto& e : user.elements) all += e.str + " ";
  EXPECT_NE(all.find("status pending"), std::string::npos) << all;
  EXPECT_NE(all.find("$argon2id$"), std::string::npos) << all;
  EXPECT_EQ(all.find("carol-secret"), std::string::npos) << "the password itself is never stored";

  web_client c{s};
  auto pending = c.login("carol", "carol-secret");
  EXPECT_EQ(pending.status, 403);
  EXPECT_NE(detail(pending).find("pending"), std::string::npos) << pending.body;
  ASSERT_EQ(admin_cli(s, {"approve", "carol"}), 0);
  EXPECT_EQ(c.login("carol", "wrong-secret").status, 401);
  EXPECT_EQ(c.login("nobody", "carol-secret").status, 401);

  auto ok = c.login("carol", "carol-secret");
  ASSERT_EQ(ok.status, 200) << ok.body;
  auto set = ok.header("set-cookie");
  EXPECT_EQ(set.rfind("descprod_session=dp_", 0), 0u) << set;
  EXPECT_NE(set.find("; HttpOnly"), std::string::npos) << set;
  EXPECT_NE(set.find("; SameSite=Strict"), std::string::npos) << set;
  EXPECT_NE(set.find("; Path=/"), std::string::npos) << set;
  EXPECT_EQ(set.find("Secure"), std::string::npos) << "plain HTTP";
  // Only the hash is stored, with a TTL.
  auto key = session_key_of(c.cookie);
  EXPECT_EQ(r.exec({"HGET", key, "user"}).str, "carol");
  auto ttl = r.exec({"TTL", key}).integer;
  EXPECT_GT(ttl, 500);
  EXPECT_LE(ttl, 600);
  EXPECT_EQ(r.exec({"KEYS", "*" + c.cookie.substr(c.cookie.find('=') + 1) + "*"}).elements.size(), 0u);

  auto me = c.call("GET", "/api/session");
  ASSERT_EQ(me.status, 200) << me.body;
  EXPECT_EQ(me.json().as_object().at("user").as_string(), "carol");
  EXPECT_EQ(me.json().as_object().at("csrf_token").as_string(), c.csrf);
  EXPECT_EQ(c.call("GET", "/api/jobs").status, 200);

  // State changes by cookie need the CSRF token.
  auto no_csrf = c.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":"1"})");
  EXPECT_EQ(no_csrf.status, 403);
  EXPECT_NE(detail(no_csrf).find("X-CSRF-Token"), std::string::npos);
  http_headers wrong;
  wrong.emplace_back("X-CSRF-Token", std::string(64, '0'));
  EXPECT_EQ(c.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":"1"})", wrong).status, 403);
  EXPECT_EQ(c.post("/api/jobs", R"({"jobtype":"mysleep","config":"1"})").status, 201);
  // Bearer-token clients are unaffected.
  EXPECT_EQ(s.submit(R"({"jobtype":"mysleep","config":"1"})") > 0, true);

  // Sliding expiry: a request pushes the end out again.
  r.exec({"EXPIRE", key, "30"});
  EXPECT_EQ(c.call("GET", "/api/jobs").status, 200);
  EXPECT_GT(r.exec({"TTL", key}).integer, 500);

  // A fresh session on each login; the browser's previous one ends.
  std::string old_cookie = c.cookie;
  ASSERT_EQ(c.login("carol", "carol-secret").status, 200);
  EXPECT_NE(c.cookie, old_cookie);
  EXPECT_EQ(r.exec({"EXISTS", session_key_of(old_cookie)}).integer, 0);

  // Logout needs the CSRF token, ends the session and clears the cookie.
  EXPECT_EQ(c.call("POST", "/api/logout").status, 403);
  auto out = c.post("/api/logout", "");
  EXPECT_EQ(out.status, 204);
  EXPECT_NE(out.header("set-cookie").find("Max-Age=0"), std::string::npos);
  EXPECT_EQ(r.exec({"EXISTS", session_key_of(c.cookie)}).integer, 0);
  EXPECT_EQ(c.call("GET", "/api/jobs").status, 401);
}

TEST(Web, AdminsApproveRejectDisableAndPromoteAccounts) {
  service s(web_options());
  redis_sync r(s.redis.endpoint());
  add_user(r, "descprod:", "root", true);
  std::string root = issue_token(r, "descprod:", "root");
  ASSERT_EQ(register_user(s, "dave", "dave-secret").status, 201);
  ASSERT_EQ(register_user(s, "erin", "erin-secret").status, 201);

  auto users = s.call("GET", "/api/admin/users", "", root);
  ASSERT_EQ(users.status, 200) << users.body;
  EXPECT_NE(users.body.find(R"("name":"dave","role":"user","status":"pending")"), std::string::npos)
      << users.body;
  EXPECT_EQ(users.body.find("argon2"), std::string::npos) << "no password hashes in the list";
  EXPECT_EQ(s.call("GET", "/api/admin/users").status, 403) << "alice is no admin";

  EXPECT_EQ(s.call("POST", "/api/admin/users/dave/reject", "", root).status, 200);
  web_client d{s};
  auto rejected = d.login("dave", "dave-secret");
  EXPECT_EQ(rejected.status, 403);
  EXPECT_NE(detail(rejected).find("rejected"), std::string::npos);
  EXPECT_EQ(s.call("POST", "/api/admin/users/dave/reject", "", root).status, 409) << "already rejected";
  EXPECT_EQ(s.call("POST", "/api/admin/users/nobody/approve", "", root).status, 404);

  ASSERT_EQ(admin_cli(s, {"approve", "erin"}), 0);
  EXPECT_NE(admin_cli(s, {"approve", "erin"}), 0) << "approving an active account is refused";
  EXPECT_NE(admin_cli(s, {"approve", "nobody"}), 0);
  web_client e{s};
  ASSERT_EQ(e.login("erin", "erin-secret").status, 200);
  std::string erin_token = issue_token(r, "descprod:", "erin");
  EXPECT_EQ(s.call("GET", "/api/jobs", "", erin_token).status, 200);

  // Disabled by descprod-admin (straight in Redis): the session stops working at once, the API
  // token once the gateway's token memory has lapsed (at most 1 s; docs/api.md).
  ASSERT_EQ(admin_cli(s, {"disable", "erin"}), 0);
  EXPECT_EQ(e.call("GET", "/api/jobs").status, 401);
  std::this_thread::sleep_for(1100ms);
  EXPECT_EQ(s.call("GET", "/api/jobs", "", erin_token).status, 401);
  EXPECT_EQ(e.login("erin", "erin-secret").status, 403);
  // Changed through the gateway: at once.
  EXPECT_EQ(s.call("POST", "/api/admin/users/erin/enable", "", root).status, 200);
  EXPECT_EQ(s.call("GET", "/api/jobs", "", erin_token).status, 200);

  ASSERT_EQ(admin_cli(s, {"make-admin", "erin"}), 0);
  std::this_thread::sleep_for(1100ms);  // the token memory's bound, as above
  EXPECT_EQ(s.call("GET", "/api/admin/users", "", erin_token).status, 200);
  EXPECT_EQ(s.call("POST", "/api/admin/users/root/disable", "", root).status, 409) << "not yourself";

  ASSERT_TRUE(wait_until([&] { return !r.exec({"KEYS", "descprod:worker:*"}).elements.empty(); }, 10s));
  auto ov = s.call("GET", "/api/admin/overview", "", root);
  ASSERT_EQ(ov.status, 200) << ov.body;
  auto o = ov.json().as_object();
  EXPECT_EQ(o.at("workers").as_array().size(), 1u) << ov.body;
  EXPECT_TRUE(o.at("queue_depth").is_int64());
  EXPECT_TRUE(o.at("finished_last_minute").is_int64());
}

TEST(Web, ApiTokensAreShownOnceListedAndRevoked) {
  service s(web_options());
  ASSERT_EQ(register_user(s, "frank", "frank-secret").status, 201);
  ASSERT_EQ(admin_cli(s, {"approve", "frank"}), 0);
  web_client f{s};
  ASSERT_EQ(f.login("frank", "frank-secret").status, 200);
  EXPECT_EQ(f.call("POST", "/api/tokens", R"({"label":"laptop"})").status, 403) << "CSRF needed";
  auto made = f.post("/api/tokens", R"({"label":"laptop"})");
  ASSERT_EQ(made.status, 201) << made.body;
  std::string token(made.json().as_object().at("token").as_string());
  std::string id(made.json().as_object().at("id").as_string());
  EXPECT_EQ(id, sha256_hex(token));
  EXPECT_EQ(s.call("GET", "/api/jobs", "", token).status, 200);

  auto list = f.call("GET", "/api/tokens");
  ASSERT_EQ(list.status, 200);
  EXPECT_NE(list.body.find(id), std::string::npos);
  EXPECT_NE(list.body.find("laptop"), std::string::npos);
  EXPECT_EQ(list.body.find(token), std::string::npos) << "a token is shown only when made";
  // The same routes with the token itself.
  EXPECT_EQ(s.call("GET", "/api/tokens", "", token).status, 200);

  EXPECT_EQ(s.call("DELETE", "/api/tokens/" + id).status, 404) << "alice cannot revoke frank's token";
  http_headers h;
  h.emplace_back("X-CSRF-Token", f.csrf);
  EXPECT_EQ(f.call("DELETE", "/api/tokens/" + id, "", h).status, 204);
  EXPECT_EQ(s.call("GET", "/api/jobs", "", token).status, 401);
  EXPECT_EQ(f.call("DELETE", "/api/tokens/" + id, "", h).status, 404);
}

TEST(Web, PagesKeepUsersApartAndRefuseCrossSiteForms) {
  service s(web_options());
  redis_sync r(s.redis.endpoint());
  long long alices = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  ASSERT_EQ(register_user(s, "gina", "gina-secret").status, 201);
  ASSERT_EQ(admin_cli(s, {"approve", "gina"}), 0);
  web_client g{s};
  ASSERT_EQ(g.login("gina", "gina-secret").status, 200);

  auto other = g.call("GET", "/jobs/" + std::to_string(alices));
  EXPECT_EQ(other.status, 404);
  EXPECT_EQ(other.header("content-type"), "text/html; charset=utf-8");
  EXPECT_EQ(g.call("GET", "/jobs/" + std::to_string(alices) + "/row").status, 404);
  EXPECT_EQ(g.call("GET", "/jobs/" + std::to_string(alices) + "/fields").status, 404);
  EXPECT_EQ(g.call("POST", "/jobs/" + std::to_string(alices) + "/cancel", "csrf=" + g.csrf,
                   {{"Content-Type", "application/x-www-form-urlencoded"}})
                .status,
            303);
  EXPECT_FALSE(s.job(alices).contains("cancel_requested")) << "gina's cancel did nothing";
  EXPECT_NE(s.state(alices), "cancelled");

  auto count = [&] { return r.exec({"ZCARD", "descprod:user:gina:jobs"}).integer; };
  http_headers form;
  form.emplace_back("Content-Type", "application/x-www-form-urlencoded");
  auto cross = form;
  cross.emplace_back("Origin", "http://127.0.0.1:1");
  EXPECT_EQ(g.call("POST", "/jobs", "jobtype=mysleep&config=1&csrf=" + g.csrf, cross).status, 403);
  EXPECT_EQ(g.call("POST", "/jobs", "jobtype=mysleep&config=1", form).status, 403) << "no CSRF token";
  EXPECT_EQ(g.call("POST", "/jobs", "jobtype=mysleep&config=1&csrf=x", form).status, 403);
  EXPECT_EQ(count(), 0);
  auto made = g.call("POST", "/jobs", "jobtype=mysleep&config=1&csrf=" + g.csrf, form);
  EXPECT_EQ(made.status, 303);
  EXPECT_EQ(made.header("location"), "/");
  EXPECT_EQ(count(), 1);
  auto home = g.call("GET", "/");
  EXPECT_EQ(home.status, 200);
  EXPECT_NE(home.body.find("Submitted job"), std::string::npos) << "the flash survives the redirect";
  EXPECT_EQ(g.call("GET", "/").body.find("Submitted job"), std::string::npos) << "and shows once";
  EXPECT_EQ(g.call("GET", "/admin").status, 403) << "admin page for admins only";
}

TEST(Web, StatusMessagesWithMarkupAreEscapedOnThePages) {
  service s(web_options());
  long long id = s.submit(R"({"jobtype":"markup","config":"a"})");
  ASSERT_TRUE(wait_until([&] { return s.state(id) == "done"; }, 20s)) << s.state(id);
  redis_sync r(s.redis.endpoint());
  // alice has no password (made by the fixture); give her one to use the pages.
  password_cost cost;
  cost.opslimit = 1;
  cost.memlimit_bytes = 8192;
  ASSERT_TRUE(set_password(r, "descprod:", "alice", "alice-secret", cost));
  web_client a{s};
  ASSERT_EQ(a.login("alice", "alice-secret").status, 200);
  std::vector<std::string> targets = {"/", "/jobs/" + std::to_string(id),
                                      "/jobs/" + std::to_string(id) + "/row"};
  for (const auto& target : targets) {
    auto page = a.call("GET", target);
    ASSERT_EQ(page.status, 200) << target;
    EXPECT_EQ(page.body.find("<script>alert"), std::string::npos) << target;
    EXPECT_NE(page.body.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos) << target;
  }
  auto page = a.call("GET", "/");
  EXPECT_NE(page.header("content-security-policy").find("script-src 'self'"), std::string::npos);
}

}  // namespace descprod::test
