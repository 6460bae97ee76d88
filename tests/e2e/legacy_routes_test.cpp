// End-to-end tests of DESCprod's JSON routes (issue #16 item 5): POST /get_job, /update_job and
// /add_child_job with DESCprod's request and answer shapes (its research notes: the shapes and
// status codes below), against the real binaries and a real redis-server. The update sequence is
// the one DESCprod's wrapper (descprod-wrap, wrapper version 19) sends: a first heartbeat with
// pid, host, rundir and start_time, more heartbeats, and a final one with stop_time and
// return_status; the job token travels as a bearer token, as this service requires.
#include <gtest/gtest.h>

#include <string>

#include "core/redis.hpp"
#include "tests/e2e/api_support.hpp"

namespace descprod::test {
namespace {

using namespace api;
namespace json = boost::json;
using namespace std::chrono_literals;

json::object body_of(const http_response& r) {
  EXPECT_EQ(r.status, 200) << r.body;
  auto v = json::parse(r.body);
  EXPECT_TRUE(v.is_object()) << r.body;
  return v.is_object() ? v.as_object() : json::object();
}

long long status_of(const http_response& r) {
  auto o = body_of(r);
  return o.contains("status") ? o.at("status").as_int64() : -1;
}

std::string update(long long id, const std::string& user, long long t, const std::string& more) {
  return R"({"id":)" + std::to_string(id) + R"(,"descname":")" + user +
         R"(","job":{"wrapper_version":19,"id":)" + std::to_string(id) + R"(,"descname":")" + user +
         R"(","update_time":)" + std::to_string(t) + more + "}}";
}

TEST(LegacyRoutes, GetJobAnswersDescprodsShapeAndStatuses) {
  service s(api_options(0));
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1","howfig":""})");
  auto r = s.call("POST", "/get_job", R"({"id":)" + std::to_string(id) + R"(,"descname":"alice"})");
  auto o = body_of(r);
  EXPECT_EQ(o.at("status").as_int64(), 0);
  EXPECT_EQ(o.at("message").as_string(), "Success");
  const auto& j = o.at("job").as_object();
  // DESCprod's fields only, in its order, times as integers.
  std::vector<std::string> keys;
  for (const auto& kv : j) keys.emplace_back(kv.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"id", "descname", "jobtype", "config", "howfig", "session",
                                            "archive", "create_time", "update_time", "progress"}));
  EXPECT_EQ(j.at("id").as_int64(), id);
  EXPECT_TRUE(j.at("create_time").is_int64());
  EXPECT_EQ(j.at("progress").as_string(), "Ready.");
  // The ID as a string of digits works as DESCprod's int() did.
  EXPECT_EQ(
      status_of(s.call("POST", "/get_job", R"({"id":")" + std::to_string(id) + R"(","descname":"alice"})")),
      0);

  // 1: a key missing; 2: not found, another user's name, or a job of someone else.
  EXPECT_EQ(status_of(s.call("POST", "/get_job", R"({"id":1})")), 1);
  EXPECT_EQ(status_of(s.call("POST", "/get_job", R"({"descname":"alice"})")), 1);
  auto missing = body_of(s.call("POST", "/get_job", R"({"id":999,"descname":"alice"})"));
  EXPECT_EQ(missing.at("status").as_int64(), 2);
  EXPECT_EQ(missing.at("message").as_string(), "Job 999 not found for user alice.");
  EXPECT_EQ(status_of(s.call("POST", "/get_job", R"({"id":)" + std::to_string(id) + R"(,"descname":"bob"})")),
            2);
  EXPECT_EQ(status_of(s.call("POST", "/get_job", R"({"id":)" + std::to_string(id) + R"(,"descname":"alice"})",
                             s.bob_token)),
            2)
      << "bob may not read alice's job by naming her";
  // What DESCprod had no status for keeps the API's HTTP errors.
  EXPECT_EQ(s.call("POST", "/get_job", "{not json").status, 400);
  EXPECT_EQ(s.call("POST", "/get_job", R"({"id":1,"descname":"alice"})", "dp_not_a_token").status, 401);
  EXPECT_EQ(s.call("GET", "/get_job").status, 405);
}

TEST(LegacyRoutes, TheOldWrappersUpdatesRunAHeldJobToDoneAndAreCheckedAsDescprodDid) {
  service s(api_options(0));
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1","hold":true})");
  ASSERT_EQ(s.state(id), "held");
  // DESCprod's descprod-start-job reads the job and checks it is ready to run.
  auto got =
      body_of(s.call("POST", "/get_job", R"({"id":)" + std::to_string(id) + R"(,"descname":"alice"})"));
  EXPECT_FALSE(got.at("job").as_object().contains("pid"));
  EXPECT_EQ(got.at("job").as_object().at("progress").as_string(), "Ready.") << "DESCprod's word for held";

  // 1, 2, 3, 4: the job map missing, a key missing, a key null, a time that is not a number.
  EXPECT_EQ(status_of(s.call("POST", "/update_job", R"({"id":1})")), 1);
  EXPECT_EQ(status_of(s.call("POST", "/update_job", R"({"job":{"id":1,"descname":"alice"}})")), 2);
  EXPECT_EQ(
      status_of(s.call("POST", "/update_job", R"({"job":{"id":1,"descname":"alice","update_time":null}})")),
      3);
  EXPECT_EQ(
      status_of(s.call("POST", "/update_job", R"({"job":{"id":1,"descname":"alice","update_time":"soon"}})")),
      4);
  // 5: another user's name, or bob updating alice's job.
  EXPECT_EQ(status_of(s.call("POST", "/update_job", update(id, "bob", 100, ""))), 5);
  EXPECT_EQ(status_of(s.call("POST", "/update_job", update(id, "alice", 100, R"(,"pid":7)"), s.bob_token)),
            5);
  // Another job's token of the same owner reads the job but may not update it.
  long long sibling = s.submit(R"({"jobtype":"mysleep","config":"1","hold":true})");
  std::string sibling_token(s.claim(sibling, "h9").at("token").as_string());
  EXPECT_EQ(status_of(s.call("POST", "/update_job", update(id, "alice", 100, R"(,"pid":7)"), sibling_token)),
            5);
  EXPECT_EQ(status_of(s.call("POST", "/update_job", update(id, "alice", 100, ""), sibling_token)), 5);
  {
    redis_sync r(s.redis.endpoint());  // the field is never shown by the API: read it in Redis
    EXPECT_TRUE(r.exec({"HGET", "descprod:job:" + std::to_string(id), "wrapper_update_time"}).is_nil());
  }
  EXPECT_EQ(s.state(id), "held");

  // What the JSON API refuses is refused here too (4), and nothing changes: a host that is not a
  // host name, a signal out of range.
  EXPECT_EQ(
      status_of(s.call("POST", "/update_job", update(id, "alice", 100, R"x(,"pid":7,"host":"a b;$(id)")x"))),
      4);
  EXPECT_EQ(
      status_of(s.call("POST", "/update_job", update(id, "alice", 100, R"(,"pid":7,"return_status":-300)"))),
      4);
  EXPECT_EQ(s.state(id), "held");

  // The first heartbeat: the wrapper has started the application. The job is claimed for its host.
  const std::string started =
      R"(,"host":"nid001.example","rundir":"/scratch/job","pid":4242,"start_time":1000,)"
      R"("progress":"Running. starting")";
  EXPECT_EQ(status_of(s.call("POST", "/update_job", update(id, "alice", 1000, started))), 0);
  auto j = s.job(id);
  EXPECT_EQ(j.at("state").as_string(), "running");
  EXPECT_EQ(j.at("host").as_string(), "nid001.example");
  EXPECT_EQ(j.at("rundir").as_string(), "/scratch/job");
  EXPECT_EQ(j.at("pid").as_int64(), 4242);
  EXPECT_EQ(j.at("worker").as_string(), "cli:nid001.example");
  // 6: an update no newer than the last one.
  auto behind =
      body_of(s.call("POST", "/update_job", update(id, "alice", 990, R"(,"progress":"Running. old")")));
  EXPECT_EQ(behind.at("status").as_int64(), 6);
  EXPECT_EQ(behind.at("message").as_string(), "Update is 10 seconds behind current job.");
  // A heartbeat with the application's status line.
  EXPECT_EQ(status_of(s.call("POST", "/update_job",
                             update(id, "alice", 1010, started + R"(,"progress":"Running. 3 of 10 done")"))),
            0);
  EXPECT_EQ(s.job(id).at("progress").as_string(), "Running. 3 of 10 done");
  {
    redis_sync r(s.redis.endpoint());
    EXPECT_EQ(r.exec({"HGET", "descprod:job:" + std::to_string(id), "wrapper_update_time"}).str.substr(0, 4),
              "1010");
  }
  // The final update: return_status 0 is done, with DESCprod's progress.
  EXPECT_EQ(status_of(s.call(
                "POST", "/update_job",
                update(id, "alice", 1020,
                       R"(,"pid":4242,"stop_time":1020,"return_status":0,"progress":"Done. all 10")"))),
            0);
  j = s.job(id);
  EXPECT_EQ(j.at("state").as_string(), "done");
  EXPECT_EQ(j.at("return_status").as_int64(), 0);
  EXPECT_EQ(j.at("progress").as_string(), "Done. all 10");
  // 7 (not DESCprod's): the job has ended; nothing is changed.
  EXPECT_EQ(status_of(s.call("POST", "/update_job", update(id, "alice", 1030, R"(,"return_status":3)"))), 7);
  EXPECT_EQ(s.state(id), "done");
}

TEST(LegacyRoutes, AFinalUpdateAloneEndsTheJobANegativeStatusIsASignalAndAnUnstartedJobTakesNoProgress) {
  service s(api_options(0));
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1","hold":true})");
  // Only a final update (the wrapper's heartbeats were lost): claimed, started and finished at once.
  EXPECT_EQ(status_of(s.call("POST", "/update_job",
                             update(id, "alice", 50, R"(,"pid":9,"return_status":-9,"progress":"x")"))),
            0);
  auto j = s.job(id);
  EXPECT_EQ(j.at("state").as_string(), "killed");
  EXPECT_EQ(j.at("return_status").as_int64(), -9);
  EXPECT_EQ(std::string(j.at("progress").as_string()).substr(0, 27), "Process received signal 9. ");
  // A job claimed through the API (descprod-start-job of this project) takes its owner's updates;
  // a progress line for a job nobody started is refused (status 7) and changes nothing.
  long long other = s.submit(R"({"jobtype":"mysleep","config":"1","hold":true})");
  s.claim(other, "h1");
  EXPECT_EQ(status_of(s.call("POST", "/update_job", update(other, "alice", 60, R"(,"return_status":0)"))), 0);
  EXPECT_EQ(s.state(other), "done");
  long long ready = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  EXPECT_EQ(
      status_of(s.call("POST", "/update_job", update(ready, "alice", 70, R"(,"progress":"Running. x")"))), 7);
  EXPECT_EQ(s.state(ready), "ready");
}

TEST(LegacyRoutes, AddChildJobMakesAChildInTheParentsSessionAndRefusesAsDescprodDid) {
  service s(api_options(0));
  long long parent = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  auto made = body_of(s.call("POST", "/add_child_job",
                             R"({"jobtype":"mysleep","config":"2","howfig":"","parent":)" +
                                 std::to_string(parent) + R"(,"descname":"alice"})"));
  ASSERT_EQ(made.at("status").as_int64(), 0) << json::serialize(made);
  const auto& child = made.at("job").as_object();
  EXPECT_EQ(child.at("parent").as_int64(), parent);
  EXPECT_EQ(child.at("progress").as_string(), "Ready.");
  EXPECT_EQ(child.at("session"), s.job(parent).at("session"));
  EXPECT_TRUE(child.at("create_time").is_int64());
  // A missing howfig (an HTTP 500 in DESCprod) is an empty one.
  EXPECT_EQ(status_of(s.call("POST", "/add_child_job",
                             R"({"jobtype":"mysleep","config":"2","parent":)" + std::to_string(parent) +
                                 R"(,"descname":"alice"})")),
            0);
  // 1 missing, 2 null, 3 the parent not the caller's, 4 the job refused.
  EXPECT_EQ(
      status_of(s.call("POST", "/add_child_job", R"({"jobtype":"mysleep","config":"2","descname":"alice"})")),
      1);
  EXPECT_EQ(status_of(s.call("POST", "/add_child_job",
                             R"({"jobtype":null,"config":"2","parent":1,"descname":"alice"})")),
            2);
  auto theirs = body_of(s.call(
      "POST", "/add_child_job",
      R"({"jobtype":"mysleep","config":"2","parent":)" + std::to_string(parent) + R"(,"descname":"alice"})",
      s.bob_token));
  EXPECT_EQ(theirs.at("status").as_int64(), 3);
  EXPECT_EQ(theirs.at("message").as_string(),
            "Parent job alice/" + std::to_string(parent) + " was not found");
  EXPECT_EQ(status_of(s.call("POST", "/add_child_job",
                             R"({"jobtype":"nosuchapp","config":"2","parent":)" + std::to_string(parent) +
                                 R"(,"descname":"alice"})")),
            4);
  // A job token adds children of its own job only.
  auto c = s.claim(parent, "h1");
  std::string token(c.at("token").as_string());
  EXPECT_EQ(status_of(s.call("POST", "/add_child_job",
                             R"({"jobtype":"mysleep","config":"3","parent":)" + std::to_string(parent) +
                                 R"(,"descname":"alice"})",
                             token)),
            0);
  long long other = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  EXPECT_EQ(status_of(s.call("POST", "/add_child_job",
                             R"({"jobtype":"mysleep","config":"3","parent":)" + std::to_string(other) +
                                 R"(,"descname":"alice"})",
                             token)),
            4);
}

}  // namespace
}  // namespace descprod::test
