// End-to-end tests of the gateway's job-management API: cancel, archive/unarchive, delete, log
// tail, children roll-up, the answer to a submission, tokens revoked in Redis and /readyz. The real
// descprod-daemon, descprod-gateway and (when a test needs one) descprod-worker binaries run against
// a real redis-server (tests/support/service.hpp); the tests drive them over HTTP. Claims and job
// tokens: api_claim_test.cpp; event streams: api_events_test.cpp.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "core/crypto.hpp"
#include "core/redis.hpp"
#include "tests/e2e/api_support.hpp"

namespace descprod::test {
namespace {

using namespace api;
namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

// ---- cancel -------------------------------------------------------------------------------------

TEST(Api, CancelOfAReadyJobAnswers200AndItNeverRunsAndCancelOfADoneJobIsConflict) {
  service s(api_options(0));
  long long id = s.submit(R"({"jobtype":"marker","config":"c1"})");
  ASSERT_GT(id, 0);
  EXPECT_EQ(s.call("POST", path_of(id, "/cancel"), "", s.bob_token).status, 404);  // not bob's
  auto r = s.call("POST", path_of(id, "/cancel"));
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = r.json().as_object();
  EXPECT_EQ(str(j, "state"), "cancelled");
  EXPECT_EQ(str(j, "progress").rfind("Cancelled.", 0), 0u) << str(j, "progress");
  EXPECT_EQ(num(j, "cancel_requested"), 1);

  // A worker arrives; another job runs to done, the cancelled one never runs.
  s.add_worker();
  long long other = s.submit(R"({"jobtype":"marker","config":"c2"})");
  ASSERT_TRUE(wait_until([&] { return s.state(other) == "done"; }, 30s)) << s.state(other);
  EXPECT_EQ(s.state(id), "cancelled");
  EXPECT_FALSE(fs::exists(s.markers + "/m" + std::to_string(id)));
  EXPECT_TRUE(fs::exists(s.markers + "/m" + std::to_string(other)));

  auto again = s.call("POST", path_of(other, "/cancel"));
  EXPECT_EQ(again.status, 409) << again.body;
  EXPECT_EQ(again.body, R"({"error":"conflict","detail":"job )" + std::to_string(other) +
                            R"( is already done; only a job that has not ended can be cancelled"})"
                            "\n");
  EXPECT_EQ(s.call("POST", path_of(9999, "/cancel")).status, 404);
}

TEST(Api, CancelOfARunningJobAnswers202AndTheJobEndsCancelled) {
  service s(api_options(1));
  long long id = s.submit(R"({"jobtype":"mysleep","config":"30"})");
  ASSERT_TRUE(wait_until([&] { return s.state(id) == "running"; }, 30s)) << s.state(id);
  auto r = s.call("POST", path_of(id, "/cancel"));
  ASSERT_EQ(r.status, 202) << r.body;
  auto j = r.json().as_object();
  EXPECT_EQ(num(j, "cancel_requested"), 1);
  EXPECT_EQ(str(j, "state"), "running");
  ASSERT_TRUE(wait_until([&] { return s.state(id) == "cancelled"; }, 20s)) << s.state(id);
  auto done = s.job(id);
  EXPECT_EQ(str(done, "progress").rfind("Cancelled.", 0), 0u) << str(done, "progress");
  // A report through the gateway for a job a daemon worker runs is refused.
  auto rep = s.call("POST", path_of(id, "/progress"), R"({"attempt":1,"message":"x"})");
  EXPECT_EQ(rep.status, 409) << rep.body;
}

// ---- archive, delete, log -----------------------------------------------------------------------

TEST(Api, ArchiveUnarchiveAndDeleteOnlyWhenTerminal) {
  service s(api_options(0));
  long long parent = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1","parent":)" + std::to_string(parent) + "}");
  ASSERT_GT(id, 0);

  auto a = s.call("POST", path_of(id, "/archive"));
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(num(a.json().as_object(), "archive"), 1);
  EXPECT_EQ(s.call("POST", path_of(id, "/archive"), "", s.bob_token).status, 404);
  auto listed = s.call("GET", "/api/jobs?archived=1");
  ASSERT_EQ(listed.status, 200) << listed.body;
  EXPECT_EQ(num(listed.json().as_object(), "total"), 1);
  auto u = s.call("POST", path_of(id, "/unarchive"));
  ASSERT_EQ(u.status, 200) << u.body;
  EXPECT_EQ(num(u.json().as_object(), "archive"), 0);
  auto ev = s.call("GET", path_of(id, "/events"));
  EXPECT_NE(ev.body.find(R"("type":"archive")"), std::string::npos) << ev.body;
  EXPECT_NE(ev.body.find(R"("type":"unarchive")"), std::string::npos) << ev.body;

  // Running (claimed and started): delete refused.
  auto c = s.claim(id);
  std::string token(c.at("token").as_string());
  ASSERT_EQ(s.call("POST", path_of(id, "/started"), R"({"attempt":1,"pid":4242})", token).status, 200);
  auto d = s.call("DELETE", path_of(id));
  EXPECT_EQ(d.status, 409) << d.body;
  EXPECT_EQ(d.json().as_object().at("detail").as_string(),
            "job " + std::to_string(id) + " is running; cancel it first");
  ASSERT_EQ(s.call("POST", path_of(id, "/finished"), R"({"attempt":1,"rc":0})", token).status, 200);
  EXPECT_EQ(s.call("DELETE", path_of(id), "", s.bob_token).status, 404);
  // A job token may not delete; and once its job has finished it is revoked altogether (issue 13).
  EXPECT_EQ(s.call("DELETE", path_of(id), "", token).status, 401);

  auto del = s.call("DELETE", path_of(id));
  EXPECT_EQ(del.status, 204) << del.body;
  EXPECT_EQ(del.body, "");
  EXPECT_EQ(s.call("GET", path_of(id)).status, 404);
  EXPECT_EQ(s.call("DELETE", path_of(id)).status, 404);
  redis_sync r(s.redis.endpoint());
  std::string key = "descprod:job:" + std::to_string(id);
  EXPECT_EQ(r.exec({"EXISTS", key, key + ":events", key + ":log", key + ":children"}).integer, 0);
  EXPECT_TRUE(r.exec({"ZSCORE", "descprod:user:alice:jobs", std::to_string(id)}).is_nil());
  EXPECT_EQ(r.exec({"SISMEMBER", "descprod:job:" + std::to_string(parent) + ":children", std::to_string(id)})
                .integer,
            0);
  EXPECT_EQ(s.job(parent).count("children"), 0u);  // no children left: no roll-up
}

TEST(Api, LogTailIsNewestLastAndLimitedByLines) {
  service s(api_options(0));
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  auto empty = s.call("GET", path_of(id, "/log"));
  ASSERT_EQ(empty.status, 200) << empty.body;
  EXPECT_EQ(empty.body, "{\"lines\":[]}\n");
  redis_sync r(s.redis.endpoint());
  for (int i = 1; i <= 5; ++i)
    r.exec({"XADD", "descprod:job:" + std::to_string(id) + ":log", "*", "line", "line " + std::to_string(i)});
  auto all = s.call("GET", path_of(id, "/log"));
  ASSERT_EQ(all.status, 200);
  EXPECT_EQ(all.body, R"({"lines":["line 1","line 2","line 3","line 4","line 5"]})"
                      "\n");
  auto last = s.call("GET", path_of(id, "/log?lines=2"));
  EXPECT_EQ(last.body, R"({"lines":["line 4","line 5"]})"
                       "\n");
  EXPECT_EQ(s.call("GET", path_of(id, "/log?lines=0")).status, 400);
  EXPECT_EQ(s.call("GET", path_of(id, "/log?lines=10001")).status, 400);
  EXPECT_EQ(s.call("GET", path_of(id, "/log"), "", s.bob_token).status, 404);
}

// ---- children -----------------------------------------------------------------------------------

TEST(Api, ChildrenRollUpAndParentListing) {
  service s(api_options(0));
  long long parent = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  EXPECT_EQ(s.job(parent).count("children"), 0u);
  std::string p = std::to_string(parent);
  auto bulk = s.call("POST", "/api/jobs/bulk",
                     R"({"jobs":[{"jobtype":"mysleep","config":"1","parent":)" + p +
                         R"(},{"jobtype":"mysleep","config":"2","parent":)" + p +
                         R"(},{"jobtype":"mysleep","config":"3","parent":)" + p +
                         R"(},{"jobtype":"mysleep","config":"4","parent":)" + p + "}]}");
  ASSERT_EQ(bulk.status, 201) << bulk.body;
  std::vector<long long> kids;
  auto bj = bulk.json();
  for (const auto& v : bj.as_object().at("ids").as_array()) kids.push_back(v.as_int64());
  ASSERT_EQ(kids.size(), 4u);
  ASSERT_EQ(s.call("POST", path_of(kids[0], "/cancel")).status, 200);
  s.claim(kids[1]);

  auto pj = s.job(parent);
  ASSERT_TRUE(pj.contains("children")) << json::serialize(pj);
  EXPECT_EQ(json::serialize(pj.at("children")), R"({"total":4,"ready":2,"dispatched":1,"cancelled":1})");

  auto list = s.call("GET", "/api/jobs?parent=" + p);
  ASSERT_EQ(list.status, 200) << list.body;
  auto lj = list.json().as_object();
  EXPECT_EQ(num(lj, "total"), 4);
  std::vector<long long> listed;
  for (const auto& v : lj.at("jobs").as_array()) listed.push_back(v.as_object().at("id").as_int64());
  EXPECT_EQ(listed, (std::vector<long long>{kids[3], kids[2], kids[1], kids[0]}));  // newest first
  auto ready = s.call("GET", "/api/jobs?parent=" + p + "&state=ready&limit=1");
  ASSERT_EQ(ready.status, 200);
  auto rj = ready.json().as_object();
  EXPECT_EQ(num(rj, "total"), 2);
  EXPECT_EQ(rj.at("jobs").as_array().size(), 1u);
  EXPECT_EQ(s.call("GET", "/api/jobs?parent=" + p, "", s.bob_token).status, 404);
  EXPECT_EQ(s.call("GET", "/api/jobs?parent=" + p, "", s.admin_token()).status, 200);  // admin
  EXPECT_EQ(s.call("GET", "/api/jobs?parent=99999").status, 404);
}

// ---- readiness ----------------------------------------------------------------------------------

// The gateway remembers a checked token for at most 1 s (docs/api.md, Authentication): a token
// deleted, or an account disabled, straight in Redis (descprod-admin, another gateway) is refused
// once that bound has passed, without any call to this gateway in between.
TEST(Api, TokenRevokedOrAccountDisabledInRedisIsRefusedWithinTheBound) {
  service s(api_options(0));
  redis_sync r(s.redis.endpoint());
  ASSERT_EQ(s.call("GET", "/api/jobs", "", s.bob_token).status, 200);  // remembered from here
  ASSERT_EQ(s.call("GET", "/api/jobs", "", s.alice_token).status, 200);
  r.exec({"DEL", "descprod:token:" + sha256_hex(s.bob_token)});
  r.exec({"HSET", "descprod:user:alice", "status", "disabled"});
  std::this_thread::sleep_for(1100ms);
  auto bob = s.call("GET", "/api/jobs", "", s.bob_token);
  EXPECT_EQ(bob.status, 401) << bob.body;
  EXPECT_EQ(str(bob.json().as_object(), "detail"), "unknown or revoked token");
  auto alice = s.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":"1"})", s.alice_token);
  EXPECT_EQ(alice.status, 401) << alice.body;
  EXPECT_EQ(str(alice.json().as_object(), "detail"), "account alice is disabled");
}

// The 201 answer is built from what was written (no read-back): it must equal the stored job.
TEST(Api, CreatedAnswerIsTheStoredJobAsCreated) {
  service s(api_options(0));
  long long parent = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  ASSERT_GT(parent, 0);
  auto res = s.call("POST", "/api/jobs",
                    R"({"jobtype":"mysleep","config":"30","howfig":"fast","priority":-7,"parent":)" +
                        std::to_string(parent) + "}");
  ASSERT_EQ(res.status, 201) << res.body;
  auto created = res.json().as_object();
  long long id = created.at("id").as_int64();
  EXPECT_EQ(res.header("location"), "/api/jobs/" + std::to_string(id));
  auto stored = s.job(id);
  stored.erase("children");
  // Nothing dispatches (no worker), so the stored job is still as created.
  EXPECT_EQ(json::serialize(created), json::serialize(stored));
  EXPECT_EQ(str(created, "state"), "ready");
  EXPECT_EQ(created.at("parent").as_int64(), parent);
}

TEST(Api, ReadyzFollowsTheDaemonLink) {
  service s(api_options(0));  // the constructor waited for 200
  auto ok = s.readyz();
  EXPECT_EQ(ok.body, "{\"status\":\"ready\"}\n");
  s.daemon->stop();
  ASSERT_TRUE(wait_until([&] { return s.readyz().status == 503; }, 15s)) << s.readyz().body;
  auto down = s.readyz().json().as_object();
  EXPECT_EQ(str(down, "detail"), "the daemon has not welcomed the gateway yet");
  EXPECT_EQ(http_request("127.0.0.1", s.port(), "GET", "/healthz").status, 200);  // alive, not ready
  s.start_daemon();
  EXPECT_TRUE(wait_until([&] { return s.readyz().status == 200; }, 20s)) << s.readyz().body;
}

}  // namespace
}  // namespace descprod::test
