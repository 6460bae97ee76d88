// End-to-end tests of job tokens and of claiming a job outside the daemon (what
// descprod-start-job does): a job token's reach, two claims racing, and the claimed job's started,
// progress and finished reports. The real binaries against a real redis-server
// (tests/support/service.hpp), driven over HTTP.
#include <gtest/gtest.h>

#include <chrono>
#include <latch>
#include <thread>
#include <vector>

#include "core/redis.hpp"
#include "tests/e2e/api_support.hpp"

namespace descprod::test {
namespace {

using namespace api;
namespace json = boost::json;
using namespace std::chrono_literals;

// ---- job tokens, claim, reports -----------------------------------------------------------------

// A job token (DESCPROD_TOKEN) reads every job of its owner — a child reads its parent, a
// continuation reads the job it continues (issue #16 item 2) — and creates, claims and so runs its
// own children; it writes nothing else, and reads no other user's jobs.
TEST(Api, JobTokenReadsItsOwnersJobsAndCreatesAndClaimsOnlyItsChildren) {
  service s(api_options(0));
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  long long other = s.submit(R"({"jobtype":"mysleep","config":"2"})");
  long long bobs = s.submit(R"({"jobtype":"mysleep","config":"2"})", s.bob_token);
  EXPECT_EQ(s.call("POST", path_of(id, "/claim"), R"({"host":"h1"})", s.bob_token).status, 404);
  auto c = s.claim(id, "h1");
  std::string token(c.at("token").as_string());
  ASSERT_EQ(token.rfind("dp_", 0), 0u);

  EXPECT_EQ(s.call("GET", path_of(id), "", token).status, 200);
  EXPECT_EQ(s.call("GET", path_of(id, "/events"), "", token).status, 200);
  EXPECT_EQ(s.call("GET", path_of(id, "/log"), "", token).status, 200);
  EXPECT_EQ(s.call("GET", path_of(other), "", token).status, 200) << "another job of its owner";
  EXPECT_EQ(s.call("GET", path_of(other, "/events"), "", token).status, 200);
  EXPECT_EQ(s.call("GET", path_of(other, "/log"), "", token).status, 200);
  auto listed = s.call("GET", "/api/jobs", "", token);
  EXPECT_EQ(listed.status, 200) << listed.body;
  EXPECT_EQ(listed.json().as_object().at("total").as_int64(), 2) << "its owner's jobs, not bob's";
  EXPECT_EQ(s.call("GET", path_of(bobs), "", token).status, 404) << "another user's job";
  EXPECT_EQ(s.call("GET", "/api/jobs?owner=bob", "", token).status, 403);
  EXPECT_EQ(s.call("GET", "/api/events", "", token).status, 403);
  EXPECT_EQ(s.call("POST", path_of(id, "/cancel"), "", token).status, 403);
  // Writes to another job are refused as before, as if it did not exist.
  EXPECT_EQ(s.call("POST", path_of(other, "/cancel"), "", token).status, 404);
  EXPECT_EQ(s.call("POST", path_of(other, "/archive"), "", token).status, 404);
  EXPECT_EQ(s.call("DELETE", path_of(other), "", token).status, 404);
  EXPECT_EQ(s.state(other), "ready");
  EXPECT_EQ(s.call("POST", path_of(id, "/claim"), R"({"host":"h2"})", token).status, 403) << "itself";
  EXPECT_EQ(s.call("POST", path_of(other, "/claim"), R"({"host":"h2"})", token).status, 403)
      << "not its child";
  EXPECT_EQ(s.call("POST", path_of(other, "/started"), R"({"attempt":1,"pid":1})", token).status, 404);

  auto child = s.call("POST", "/api/jobs",
                      R"({"jobtype":"mysleep","config":"3","parent":)" + std::to_string(id) + "}", token);
  ASSERT_EQ(child.status, 201) << child.body;
  auto cj = child.json().as_object();
  EXPECT_EQ(str(cj, "descname"), "alice");
  EXPECT_EQ(num(cj, "parent"), id);
  auto bulk =
      s.call("POST", "/api/jobs/bulk",
             R"({"jobs":[{"jobtype":"mysleep","config":"4","parent":)" + std::to_string(id) + "}]}", token);
  EXPECT_EQ(bulk.status, 201) << bulk.body;
  auto orphan = s.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":"3"})", token);
  EXPECT_EQ(orphan.status, 403) << orphan.body;
  EXPECT_EQ(orphan.json().as_object().at("error").as_string(), "forbidden");
  auto elsewhere =
      s.call("POST", "/api/jobs",
             R"({"jobtype":"mysleep","config":"3","parent":)" + std::to_string(other) + "}", token);
  EXPECT_EQ(elsewhere.status, 403) << elsewhere.body;
  EXPECT_EQ(num(s.job(id).at("children").as_object(), "total"), 2);
  // It claims its own child (descprod-start-job -w CHILD inside the job): the claim's answer
  // carries the child's own token, which reports the child's run.
  long long kid = cj.at("id").as_int64();
  auto kc = s.call("POST", path_of(kid, "/claim"), R"({"host":"h3"})", token);
  ASSERT_EQ(kc.status, 200) << kc.body;
  std::string kid_token(kc.json().as_object().at("token").as_string());
  EXPECT_NE(kid_token, token);
  EXPECT_EQ(s.call("POST", path_of(kid, "/started"), R"({"attempt":1,"pid":1,"rundir":"/tmp/x"})", kid_token)
                .status,
            200);
  // Once its job is cancelled the token claims nothing more.
  long long kid2 = s.call("POST", "/api/jobs",
                          R"({"jobtype":"mysleep","config":"5","parent":)" + std::to_string(id) + "}", token)
                       .json()
                       .as_object()
                       .at("id")
                       .as_int64();
  ASSERT_EQ(s.call("POST", path_of(id, "/cancel")).status, 202);
  EXPECT_EQ(s.call("POST", path_of(kid2, "/claim"), R"({"host":"h4"})", token).status, 403);
  EXPECT_EQ(s.call("GET", path_of(other), "", token).status, 200) << "it still reads";
}

TEST(Api, TwoConcurrentClaimsExactlyOneWins) {
  service s(api_options(0));
  for (int round = 0; round < 5; ++round) {
    long long id = s.submit(R"({"jobtype":"mysleep","config":"5"})");
    std::latch go(2);
    http_response results[2];
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t)
      threads.emplace_back([&, t] {
        go.arrive_and_wait();
        results[t] =
            s.call("POST", path_of(id, "/claim"), R"({"host":"host)" + std::to_string(t) + R"(.example"})");
      });
    for (auto& t : threads) t.join();
    int ok = 0, conflict = 0;
    for (const auto& r : results) {
      if (r.status == 200) ++ok;
      if (r.status == 409) {
        ++conflict;
        EXPECT_EQ(r.json().as_object().at("detail").as_string(),
                  "job " + std::to_string(id) + " is dispatched, not ready");
      }
    }
    EXPECT_EQ(ok, 1) << results[0].body << " / " << results[1].body;
    EXPECT_EQ(conflict, 1);
    const auto& win = results[0].status == 200 ? results[0] : results[1];
    auto w = win.json().as_object();
    EXPECT_EQ(num(w, "attempt"), 1);
    EXPECT_EQ(json::serialize(w.at("app")),
              R"({"argv":["runapp-mysleep","5"],"env":{},"time_limit_s":0E0,"login_shell":true})");
    auto j = w.at("job").as_object();
    EXPECT_EQ(str(j, "state"), "dispatched");
    EXPECT_EQ(str(j, "worker").rfind("cli:host", 0), 0u);
    redis_sync r(s.redis.endpoint());
    EXPECT_TRUE(r.exec({"ZSCORE", "descprod:queue", std::to_string(id)}).is_nil());
    EXPECT_GT(std::stod(r.exec({"ZSCORE", "descprod:leases", std::to_string(id)}).str),
              1e9 + 9 * 365 * 86400.0);
  }
}

TEST(Api, ClaimedJobReportsDriveItToDoneAndStaleReportsChangeNothing) {
  service s(api_options(0));
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  auto c = s.claim(id, "laptop.example.org");
  std::string token(c.at("token").as_string());
  auto p = [&](const std::string& what, const std::string& body) {
    return s.call("POST", path_of(id, "/" + what), body, token);
  };
  auto r = p("started", R"({"attempt":1,"pid":1234,"rundir":"/tmp/job)" + std::to_string(id) + "\"}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "{\"state\":\"running\"}\n");
  auto j = s.job(id);
  EXPECT_EQ(str(j, "host"), "laptop.example.org");
  EXPECT_EQ(num(j, "pid"), 1234);

  r = p("progress", R"({"attempt":1,"message":"half way","done":1,"total":2})");
  ASSERT_EQ(r.status, 200) << r.body;
  j = s.job(id);
  EXPECT_EQ(str(j, "progress"), "Running. half way");
  EXPECT_EQ(num(j, "done_count"), 1);
  EXPECT_EQ(num(j, "total_count"), 2);

  // Wrong attempt: 409 stale, nothing changes.
  auto before = s.call("GET", path_of(id)).body;
  for (const char* what : {"started", "progress", "finished"}) {
    auto bad = p(what, R"({"attempt":2,"message":"nope"})");
    if (std::string(what) == "started") bad = p(what, R"({"attempt":2})");
    EXPECT_EQ(bad.status, 409) << what << " " << bad.body;
    EXPECT_EQ(std::string(bad.json().as_object().at("detail").as_string()).rfind("stale:", 0), 0u)
        << bad.body;
  }
  EXPECT_EQ(s.call("GET", path_of(id)).body, before);
  EXPECT_EQ(p("progress", R"({"attempt":1,"done":1})").status, 400);
  EXPECT_EQ(p("finished", "{not json").status, 400);

  r = p("finished", R"({"attempt":1,"rc":0,"signal":0,"timed_out":false,"message":"all good"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "{\"state\":\"done\"}\n");
  j = s.job(id);
  EXPECT_EQ(str(j, "state"), "done");
  EXPECT_EQ(str(j, "progress"), "Done. all good");
  EXPECT_EQ(num(j, "return_status"), 0);
  // The job token died with the job (issue 13): a late report with it is unauthorized; the
  // owner's own late report is refused as illegal.
  EXPECT_EQ(p("progress", R"({"attempt":1,"message":"late"})").status, 401);
  auto late = s.call("POST", path_of(id, "/progress"), R"({"attempt":1,"message":"late"})");
  EXPECT_EQ(late.status, 409);
  EXPECT_EQ(std::string(late.json().as_object().at("detail").as_string()).rfind("illegal:", 0), 0u)
      << late.body;
  auto reclaim = s.call("POST", path_of(id, "/claim"), R"({"host":"x"})");
  EXPECT_EQ(reclaim.status, 409);
  EXPECT_EQ(reclaim.json().as_object().at("detail").as_string(),
            "job " + std::to_string(id) + " is done, not ready");
}

TEST(Api, ClaimedJobFinishedBySignalOrTimeoutIsClassifiedAsTheDaemonDoes) {
  service s(api_options(0));
  long long a = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  long long b = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  std::string ta(s.claim(a).at("token").as_string());
  std::string tb(s.claim(b).at("token").as_string());
  ASSERT_EQ(
      s.call("POST", path_of(a, "/finished"), R"({"attempt":1,"rc":0,"signal":9,"message":"m"})", ta).status,
      200);
  ASSERT_EQ(s.call("POST", path_of(b, "/finished"), R"({"attempt":1,"rc":1,"timed_out":true})", tb).status,
            200);
  EXPECT_EQ(s.state(a), "killed");
  EXPECT_EQ(str(s.job(a), "progress"), "Process received signal 9. m");
  EXPECT_EQ(num(s.job(a), "return_status"), -9);
  EXPECT_EQ(s.state(b), "timeout");
  EXPECT_EQ(num(s.job(b), "return_status"), 124);
}

}  // namespace
}  // namespace descprod::test
