// Held jobs and dependencies end to end (docs/api.md, Held jobs and Dependencies): real Redis,
// daemon, gateway and worker.
//  - hold: a held job is not run by a worker until released, and its owner may claim it
//    (descprod-start-job's way); an app with `dispatch: manual` makes every job held;
//  - after / after_any: a chain runs in order; a failed `after` dependency cancels the graph below
//    it while an `after_any` dependent runs; bulk "#k" names an earlier job of the request;
//  - refusals (unknown, another user's, forward or self references, a job in both lists) create
//    nothing; a waiting job cannot be claimed; cancelling a waiting job cancels its dependents;
//  - a dependency that ends while the daemon is down releases its dependents when it is back.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/api_support.hpp"

namespace descprod::test::api {
namespace {

namespace json = boost::json;

service_options deps_options(int workers = 1) {
  service_options o = api_options(workers);
  o.apps =
      "  - name: manualapp\n"
      "    command: [\"/bin/true\"]\n"
      "    args: []\n"
      "    dispatch: manual\n";
  return o;
}

double time_of(const json::object& j, const char* name) {
  auto it = j.find(name);
  return it == j.end() || !it->value().is_number() ? -1 : it->value().to_number<double>();
}

std::vector<long long> bulk_ids(service& s, const std::string& jobs, int want_status = 201) {
  auto r = s.call("POST", "/api/jobs/bulk", R"({"jobs":[)" + jobs + "]}");
  EXPECT_EQ(r.status, want_status) << r.body;
  std::vector<long long> ids;
  if (r.status != 201) return ids;
  auto answer = r.json();
  for (const auto& v : answer.as_object().at("ids").as_array()) ids.push_back(v.as_int64());
  return ids;
}

// The state stays `want` for `for_ms` (sampled), with workers free to take the job.
void stays(service& s, long long id, const std::string& want, int for_ms = 800) {
  for (int waited = 0; waited < for_ms; waited += 100) {
    ASSERT_EQ(s.state(id), want) << "job " << id << " after " << waited << " ms";
    std::this_thread::sleep_for(100ms);
  }
}

TEST(Dependencies, AHeldJobRunsOnlyOnceReleased) {
  service s(deps_options());
  auto r = s.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":"0","hold":true})");
  ASSERT_EQ(r.status, 201) << r.body;
  auto j = r.json().as_object();
  long long id = j.at("id").as_int64();
  EXPECT_EQ(str(j, "state"), "held");
  EXPECT_EQ(str(j, "progress"), "Held.");
  EXPECT_EQ(num(j, "hold"), 1);
  stays(s, id, "held");
  // Only a held job is released; the release hands it to the workers.
  auto ready = s.call(
      "POST", "/api/jobs/" + std::to_string(s.submit(R"({"jobtype":"mysleep","config":"0"})")) + "/release");
  EXPECT_EQ(ready.status, 409) << ready.body;
  EXPECT_NE(ready.body.find("not held"), std::string::npos) << ready.body;
  EXPECT_EQ(s.call("POST", path_of(id, "/release"), "", s.bob_token).status, 404) << "not bob's job";
  auto rel = s.call("POST", path_of(id, "/release"));
  ASSERT_EQ(rel.status, 200) << rel.body;
  EXPECT_TRUE(s.wait_terminal(id, 30s));
  EXPECT_EQ(s.state(id), "done");
}

TEST(Dependencies, TheOwnerClaimsAHeldJobAndManualAppsHoldEveryJob) {
  service s(deps_options());
  long long id = s.submit(R"({"jobtype":"manualapp","config":"x"})");
  EXPECT_EQ(s.state(id), "held") << "the app's dispatch: manual";
  stays(s, id, "held", 500);
  auto c = s.claim(id);
  ASSERT_FALSE(c.empty());
  EXPECT_EQ(s.state(id), "dispatched");
  // A held job's claim goes through the same lease: a second claim is refused.
  EXPECT_EQ(s.call("POST", path_of(id, "/claim"), R"({"host":"other.example.org"})").status, 409);
}

TEST(Dependencies, AChainRunsInOrderAndAFailureCancelsTheGraphBelowIt) {
  service s(deps_options());
  auto ids = bulk_ids(s, R"({"jobtype":"mysleep","config":"0"},)"
                         R"({"jobtype":"mysleep","config":"0","after":["#0"]},)"
                         R"({"jobtype":"mysleep","config":"0","after":["#1"]},)"
                         R"({"jobtype":"fail","config":"x"},)"
                         R"({"jobtype":"mysleep","config":"0","after":["#3"]},)"
                         R"({"jobtype":"mysleep","config":"0","after":["#4"]},)"
                         R"({"jobtype":"mysleep","config":"0","after_any":["#3"]})");
  ASSERT_EQ(ids.size(), 7u);
  auto first = s.job(ids[1]);
  EXPECT_EQ(str(first, "state"), "waiting");
  ASSERT_TRUE(first.at("after").is_array());
  EXPECT_EQ(first.at("after").as_array().at(0).as_int64(), ids[0]);
  for (auto id : ids) ASSERT_TRUE(s.wait_terminal(id, 60s)) << "job " << id;
  auto a = s.job(ids[0]), b = s.job(ids[1]), c = s.job(ids[2]);
  for (const auto* j : {&a, &b, &c}) EXPECT_EQ(str(*j, "state"), "done") << json::serialize(*j);
  EXPECT_GE(time_of(b, "start_time"), time_of(a, "stop_time"));
  EXPECT_GE(time_of(c, "start_time"), time_of(b, "stop_time"));
  EXPECT_EQ(s.state(ids[3]), "failed");
  auto d = s.job(ids[4]), e = s.job(ids[5]);
  EXPECT_EQ(str(d, "state"), "cancelled");
  EXPECT_EQ(str(d, "progress"), "Cancelled. Dependency " + std::to_string(ids[3]) + " ended failed.");
  EXPECT_EQ(str(e, "progress"), "Cancelled. Dependency " + std::to_string(ids[4]) + " ended cancelled.");
  EXPECT_EQ(s.state(ids[6]), "done") << "after_any runs whatever its dependency's state";
  // The graph around a job: what it waited for and what waited for it, with their states.
  auto up = b.at("dependencies").as_array();
  ASSERT_EQ(up.size(), 1u);
  EXPECT_EQ(up[0].as_object().at("id").as_int64(), ids[0]);
  EXPECT_EQ(str(up[0].as_object(), "kind"), "after");
  EXPECT_EQ(str(up[0].as_object(), "state"), "done");
  auto failed = s.job(ids[3]);
  const auto& down = failed.at("dependents").as_object();
  EXPECT_EQ(down.at("total").as_int64(), 2);
  const auto& jobs = down.at("jobs").as_array();
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[0].as_object().at("id").as_int64(), ids[4]);
  EXPECT_EQ(str(jobs[0].as_object(), "kind"), "after");
  EXPECT_EQ(str(jobs[0].as_object(), "state"), "cancelled");
  EXPECT_EQ(jobs[1].as_object().at("id").as_int64(), ids[6]);
  EXPECT_EQ(str(jobs[1].as_object(), "kind"), "after_any");
}

TEST(Dependencies, BadDependenciesAreRefusedAndCreateNothing) {
  service s(deps_options());
  long long mine = s.submit(R"({"jobtype":"mysleep","config":"0","hold":true})");
  long long bobs = s.submit(R"({"jobtype":"mysleep","config":"0","hold":true})", s.bob_token);
  auto count = [&] {
    auto r = s.call("GET", "/api/jobs?limit=1000");
    auto j = r.json();
    return j.as_object().at("total").as_int64();
  };
  const auto before = count();
  struct bad {
    std::string path, body, says;
  };
  const std::vector<bad> cases = {
      {"/api/jobs", R"({"jobtype":"mysleep","config":"0","after":[999999]})", "not one of your jobs"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"0","after":[)" + std::to_string(bobs) + "]}",
       "not one of your jobs"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"0","after":["#0"]})", "bulk request"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"0","after":[-3]})", "positive integers"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"0","after":"12"})", "must be an array"},
      {"/api/jobs",
       R"({"jobtype":"mysleep","config":"0","after":[)" + std::to_string(mine) + R"(],"after_any":[)" +
           std::to_string(mine) + "]}",
       "in both after and after_any"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"0","hold":"yes"})", "must be a boolean"},
      // An array copies its after list to every job: 20,000 x 10 edges is past the request's cap.
      {"/api/jobs", R"({"jobtype":"mysleep","config":"0","array":20000,"after":[1,2,3,4,5,6,7,8,9,10]})",
       "dependencies in all; at most 100000"},
      {"/api/jobs/bulk",
       R"({"jobs":[{"jobtype":"mysleep","config":"0"},{"jobtype":"mysleep","config":"0","after":["#1"]}]})",
       "earlier job"},
      {"/api/jobs/bulk",
       R"({"jobs":[{"jobtype":"mysleep","config":"0","after":["#1"]},{"jobtype":"mysleep","config":"0"}]})",
       "earlier job"},
      {"/api/jobs/bulk",
       R"({"jobs":[{"jobtype":"mysleep","config":"0"},{"jobtype":"mysleep","config":"0","after":[999999]}]})",
       "jobs[1]: job 999999"},
  };
  for (const auto& c : cases) {
    auto r = s.call("POST", c.path, c.body);
    EXPECT_EQ(r.status, 400) << c.body << " -> " << r.body;
    EXPECT_NE(r.body.find(c.says), std::string::npos) << c.body << " -> " << r.body;
  }
  EXPECT_EQ(count(), before) << "no refused request created a job";
}

TEST(Dependencies, AWaitingJobCannotBeClaimedAndCancellingItCancelsItsDependents) {
  service s(deps_options());
  long long held = s.submit(R"({"jobtype":"mysleep","config":"0","hold":true})");
  long long waits = s.submit(R"({"jobtype":"mysleep","config":"0","after":[)" + std::to_string(held) + "]}");
  long long below = s.submit(R"({"jobtype":"mysleep","config":"0","after":[)" + std::to_string(waits) + "]}");
  EXPECT_EQ(s.state(waits), "waiting");
  auto c = s.call("POST", path_of(waits, "/claim"), R"({"host":"h.example.org"})");
  EXPECT_EQ(c.status, 409) << c.body;
  EXPECT_NE(c.body.find("waiting for its dependencies"), std::string::npos) << c.body;
  auto x = s.call("POST", path_of(waits, "/cancel"));
  EXPECT_EQ(x.status, 200) << x.body;
  EXPECT_TRUE(s.wait_terminal(below, 10s));
  EXPECT_EQ(str(s.job(below), "progress"),
            "Cancelled. Dependency " + std::to_string(waits) + " ended cancelled.");
  EXPECT_EQ(s.state(held), "held") << "a dependency is not touched by its dependent's cancel";
}

TEST(Dependencies, ADependencyEndedWhileTheDaemonWasDownReleasesItsDependentsWhenItIsBack) {
  service s(deps_options());
  long long held = s.submit(R"({"jobtype":"mysleep","config":"0","hold":true})");
  long long after_any =
      s.submit(R"({"jobtype":"mysleep","config":"0","after_any":[)" + std::to_string(held) + "]}");
  service::kill9(s.daemon);
  // Cancelled through the gateway while no daemon runs: its dependent waits in Redis.
  ASSERT_EQ(s.call("POST", path_of(held, "/cancel")).status, 200);
  EXPECT_EQ(s.state(after_any), "waiting");
  s.start_daemon();
  ASSERT_TRUE(s.wait_terminal(after_any, 30s));
  EXPECT_EQ(s.state(after_any), "done");
}

}  // namespace
}  // namespace descprod::test::api
