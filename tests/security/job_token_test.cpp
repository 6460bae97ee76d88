// A job token dies with its job (issue #13, item 6; docs/security.md#job-tokens): the real Redis,
// daemon, gateway and worker run an app that writes its DESCPROD_TOKEN to a file; the test then
// uses that token.
//  - while the job runs, the token creates a child (so the checks below can fail);
//  - once the job is done, the token is gone from Redis and every write route answers 401/403;
//  - right after a cancel of a running job, it creates nothing more, and once the job is
//    cancelled it is gone;
//  - when a lost worker's job is requeued, the old attempt's token is gone, and the new attempt
//    gets a token of its own.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <filesystem>

#include "core/crypto.hpp"
#include "core/redis.hpp"
#include "tests/security/trust_peer.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

const std::string P = "descprod:";

service_options token_options() {
  service_options o;
  o.workers = 1;
  o.slots = 2;
  // tokrec SECONDS: writes its DESCPROD_TOKEN to <markers>/t<id>.<attempt>, then sleeps.
  o.apps =
      "  - name: tokrec\n"
      "    command: [\"/bin/sh\", \"-c\", \"f=\\\"$0/t$DESCPROD_JOB_ID.$DESCPROD_ATTEMPT\\\"; "
      "printf '%s' \\\"$DESCPROD_TOKEN\\\" > \\\"$f.tmp\\\" && mv \\\"$f.tmp\\\" \\\"$f\\\"; exec sleep \\\"$1\\\"\", "
      "\"{markers}\"]\n"
      "    args: [\"{config}\"]\n"
      "    pattern: \"^[0-9]{1,3}$\"\n";
  return o;
}

// The token the job's attempt got, once its app has written it.
std::string job_token(service& s, long long id, int attempt = 1) {
  auto f = s.markers + "/t" + std::to_string(id) + "." + std::to_string(attempt);
  EXPECT_TRUE(wait_until([&] { return fs::exists(f); }, 20s)) << "no token file for job " << id;
  return fs::exists(f) ? read_file(f) : std::string();
}

std::string child_body(long long parent) {
  return R"({"jobtype":"mysleep","config":"0","parent":)" + std::to_string(parent) + "}";
}

// Every route that writes, with the job token: none may succeed.
void expect_no_write(service& s, long long id, const std::string& token, bool gone) {
  std::string j = "/api/jobs/" + std::to_string(id);
  std::vector<std::tuple<std::string, std::string, std::string>> calls = {
      {"POST", "/api/jobs", child_body(id)},
      {"POST", "/api/jobs/bulk", R"({"jobs":[)" + child_body(id) + "]}"},
      {"POST", j + "/progress", R"({"attempt":1,"message":"x"})"},
      {"POST", j + "/started", R"({"attempt":1})"},
      {"POST", j + "/finished", R"({"attempt":1,"rc":0})"},
      {"POST", j + "/cancel", ""},
      {"POST", j + "/archive", ""},
      {"POST", j + "/claim", R"({"host":"h"})"},
      {"DELETE", j, ""},
  };
  for (const auto& [method, target, body] : calls) {
    auto r = s.call(method, target, body, token);
    if (gone) EXPECT_EQ(r.status, 401) << method << " " << target << ": " << r.body;
    else
      EXPECT_TRUE(r.status == 401 || r.status == 403 || r.status == 409)
          << method << " " << target << ": " << r.status << " " << r.body;
    EXPECT_NE(r.status / 100, 2) << method << " " << target << ": " << r.body;
  }
  if (gone) {
    EXPECT_EQ(s.call("GET", j, "", token).status, 401);
  }
}

TEST(JobToken, ItCreatesChildrenWhileItsJobRunsAndNothingOnceItIsDone) {
  service s(token_options());
  redis_sync r(s.redis.endpoint());
  auto id = s.submit(R"({"jobtype":"tokrec","config":"2"})");
  auto token = job_token(s, id);
  ASSERT_EQ(token.rfind("dp_", 0), 0u) << token;
  // While it runs: its token reads the job and creates a child.
  EXPECT_EQ(s.call("GET", "/api/jobs/" + std::to_string(id), "", token).status, 200);
  auto child = s.call("POST", "/api/jobs", child_body(id), token);
  EXPECT_EQ(child.status, 201) << child.body;
  EXPECT_EQ(r.exec({"EXISTS", P + "token:" + sha256_hex(token)}).as_integer(), 1);
  ASSERT_TRUE(wait_until([&] { return s.state(id) == "done"; }, 30s)) << s.state(id);
  // Done: the token is gone from Redis, at once, and refused everywhere.
  EXPECT_EQ(r.exec({"EXISTS", P + "token:" + sha256_hex(token)}).as_integer(), 0);
  EXPECT_EQ(hget(r, P + "job:" + std::to_string(id), "token_sha"), "");
  expect_no_write(s, id, token, true);
  // The API never shows the token's hash.
  EXPECT_FALSE(s.job(id).contains("token_sha"));
}

TEST(JobToken, ACancelStopsItsChildrenAtOnceAndTheEndRevokesIt) {
  service s(token_options());
  redis_sync r(s.redis.endpoint());
  auto id = s.submit(R"({"jobtype":"tokrec","config":"30"})");
  auto token = job_token(s, id);
  ASSERT_TRUE(wait_until([&] { return s.state(id) == "running"; }, 20s));
  EXPECT_EQ(s.call("POST", "/api/jobs", child_body(id), token).status, 201);
  auto c = s.call("POST", "/api/jobs/" + std::to_string(id) + "/cancel", "");
  ASSERT_TRUE(c.status == 200 || c.status == 202) << c.body;
  // Right after the cancel (whether or not the worker has stopped the job yet): no children.
  auto child = s.call("POST", "/api/jobs", child_body(id), token);
  EXPECT_TRUE(child.status == 401 || child.status == 403) << child.status << " " << child.body;
  auto bulk = s.call("POST", "/api/jobs/bulk", R"({"jobs":[)" + child_body(id) + "]}", token);
  EXPECT_TRUE(bulk.status == 401 || bulk.status == 403) << bulk.status << " " << bulk.body;
  ASSERT_TRUE(wait_until([&] { return s.state(id) == "cancelled"; }, 30s)) << s.state(id);
  EXPECT_EQ(r.exec({"EXISTS", P + "token:" + sha256_hex(token)}).as_integer(), 0);
  expect_no_write(s, id, token, true);
}

TEST(JobToken, TheOldAttemptsTokenDiesWhenALostWorkersJobIsRequeued) {
  service s(token_options());
  redis_sync r(s.redis.endpoint());
  auto id = s.submit(R"({"jobtype":"tokrec","config":"3"})");
  auto first = job_token(s, id, 1);
  ASSERT_EQ(first.rfind("dp_", 0), 0u);
  service::kill9(s.workers[0]);
  // Lost after the lease timeout, requeued as attempt 2: the first attempt's token is gone.
  ASSERT_TRUE(wait_until([&] { return hget(r, P + "job:" + std::to_string(id), "attempt") == "2"; }, 20s));
  EXPECT_EQ(r.exec({"EXISTS", P + "token:" + sha256_hex(first)}).as_integer(), 0);
  EXPECT_EQ(s.call("POST", "/api/jobs", child_body(id), first).status, 401);
  s.start_worker(0);
  auto second = job_token(s, id, 2);
  EXPECT_NE(second, first);
  EXPECT_EQ(s.call("GET", "/api/jobs/" + std::to_string(id), "", second).status, 200);
  ASSERT_TRUE(wait_until([&] { return s.state(id) == "done"; }, 30s)) << s.state(id);
  EXPECT_EQ(s.call("GET", "/api/jobs/" + std::to_string(id), "", second).status, 401);
}

}  // namespace
}  // namespace descprod::test
