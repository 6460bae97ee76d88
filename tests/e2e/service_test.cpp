// End-to-end tests of the spine: the real descprod-daemon, descprod-gateway and descprod-worker
// binaries, a real redis-server, real application processes, driven over HTTP as a user would.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include "core/accounts.hpp"
#include "core/redis.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

service_options spine_options(int workers = 1, int slots = 2) {
  service_options o;
  o.workers = workers;
  o.slots = slots;
  o.apps =
      "  - name: slow\n"
      "    command: [\"/bin/sh\", \"-c\", \"echo 'still going' > current-status.txt; exec sleep 30\"]\n"
      "    args: []\n"
      "    time_limit_s: 1\n"
      "  - name: nap\n"
      "    command: [\"/bin/sh\", \"-c\", \"echo \\\"$DESCPROD_ATTEMPT\\\" >> \\\"$0/m$DESCPROD_JOB_ID\\\"; sleep 2; "
      "echo rested > current-status.txt\", \"{markers}\"]\n"
      "    args: []\n";
  o.worker_extra = "  drain_grace_s: 0.5\n  kill_grace_s: 1\n";
  return o;
}

long long submit(service& s, const std::string& body, const std::string& token = "") {
  return s.submit(body, token);
}

TEST(Spine, SubmittedJobRunsToDoneAndRedisHoldsTheSameRecord) {
  service s(spine_options());
  long long id = submit(s, R"({"jobtype":"mysleep","config":"1","howfig":""})");
  ASSERT_GT(id, 0);
  ASSERT_TRUE(wait_until([&] { return s.terminal(s.state(id)); }, 30s)) << "state " << s.state(id);
  auto j = s.job(id);
  EXPECT_EQ(j.at("state").as_string(), "done");
  EXPECT_EQ(j.at("progress").as_string(), "Done. I'm awake now.");  // the apostrophe verbatim
  EXPECT_EQ(j.at("return_status").as_int64(), 0);
  EXPECT_EQ(j.at("descname").as_string(), "alice");
  for (const char* f : {"host", "rundir", "pid", "create_time", "start_time", "stop_time", "update_time"})
    EXPECT_TRUE(j.contains(f)) << "missing " << f;
  std::string rundir(j.at("rundir").as_string());
  char name[32];
  std::snprintf(name, sizeof name, "job%06lld", id);
  EXPECT_EQ(fs::path(rundir).filename().string(), name);
  EXPECT_EQ(fs::path(rundir).parent_path().string(), s.out_dir + "/jobs");
  EXPECT_NE(read_file(rundir + "/config.json").find("  \"id\": " + std::to_string(id) + ","),
            std::string::npos);
  EXPECT_NE(read_file(rundir + "/" + name + ".log").find("I'm sleeping for 1 seconds."), std::string::npos);

  // Redis holds the same record the API shows.
  redis_sync r(s.redis.endpoint());
  auto h = r.exec({"HGETALL", "descprod:job:" + std::to_string(id)});
  std::map<std::string, std::string> rec;
  for (std::size_t i = 0; i + 1 < h.elements.size(); i += 2) rec[h.elements[i].str] = h.elements[i + 1].str;
  EXPECT_EQ(rec["state"], "done");
  EXPECT_EQ(rec["progress"], "Done. I'm awake now.");
  EXPECT_EQ(rec["rundir"], rundir);
  EXPECT_EQ(rec["return_status"], "0");

  // The event history shows every transition in order.
  auto ev = s.call("GET", "/api/jobs/" + std::to_string(id) + "/events");
  ASSERT_EQ(ev.status, 200) << ev.body;
  std::vector<std::string> states;
  auto evj = ev.json();  // keep the parsed body alive while iterating it
  for (const auto& e : evj.as_object().at("events").as_array()) {
    const auto& o = e.as_object();
    if (o.at("type").as_string() == "transition") states.emplace_back(o.at("state").as_string());
  }
  EXPECT_EQ(states, (std::vector<std::string>{"ready", "dispatched", "running", "done"}));
}

TEST(Spine, FailingApplicationIsFailedWithItsMessageAndStatus) {
  service s(spine_options());
  long long id = submit(s, R"({"jobtype":"fail","config":"x"})");
  ASSERT_TRUE(wait_until([&] { return s.terminal(s.state(id)); }, 30s));
  auto j = s.job(id);
  EXPECT_EQ(j.at("state").as_string(), "failed");
  EXPECT_EQ(j.at("progress").as_string(), "Failed. it broke");
  EXPECT_EQ(j.at("return_status").as_int64(), 3);
}

TEST(Spine, TimeLimitKillsTheJobWithStatus124AndStateTimeout) {
  service s(spine_options());
  auto t0 = std::chrono::steady_clock::now();
  long long id = submit(s, R"({"jobtype":"slow","config":"x"})");
  ASSERT_TRUE(wait_until([&] { return s.terminal(s.state(id)); }, 20s)) << s.state(id);
  auto j = s.job(id);
  EXPECT_EQ(j.at("state").as_string(), "timeout");
  EXPECT_EQ(j.at("return_status").as_int64(), 124);
  EXPECT_EQ(j.at("progress").as_string(), "Timeout. still going");
  // Killed at its 1 s limit, long before the 30 s sleep would have ended.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 15s);
}

TEST(Spine, DrainingWorkerHandsBackItsJobWhichFinishesElsewhereWithoutUsingAnAttempt) {
  service s(spine_options(1));
  long long id = submit(s, R"({"jobtype":"nap","config":"x"})");
  ASSERT_TRUE(wait_until([&] { return s.state(id) == "running"; }, 20s)) << s.state(id);
  // A second worker joins; then the first is told to stop (as Slurm does before the walltime).
  s.start_worker(1, "late");
  s.workers[0]->signal(SIGTERM);
  auto rc = s.workers[0]->wait_exit(20s);
  ASSERT_TRUE(rc.has_value()) << "the draining worker did not exit";
  EXPECT_EQ(*rc, 0);
  ASSERT_TRUE(wait_until([&] { return s.terminal(s.state(id)); }, 30s)) << s.state(id);
  auto j = s.job(id);
  EXPECT_EQ(j.at("state").as_string(), "done");
  EXPECT_EQ(j.at("worker").as_string(), "late");
  EXPECT_EQ(j.at("attempt").as_int64(), 2);       // a new attempt number for the new run ...
  EXPECT_EQ(j.at("max_attempts").as_int64(), 4);  // ... that did not use one up
  EXPECT_EQ(s.marker(id), "1\n2\n");
  EXPECT_NE(read_file(s.dir.file("worker-w0.log")).find("drain complete"), std::string::npos);
}

TEST(Spine, ThousandBulkJobsAllReachDoneNoneLostNoneRunTwice) {
  service s(spine_options(2, 2));
  std::string body = R"({"jobs":[)";
  const int n = 1000;
  for (int i = 0; i < n; ++i)
    body += std::string(i ? "," : "") + R"({"jobtype":"marker","config":"c)" + std::to_string(i) + "\"}";
  body += "]}";
  auto t0 = std::chrono::steady_clock::now();
  auto r = s.call("POST", "/api/jobs/bulk", body);
  ASSERT_EQ(r.status, 201) << r.body;
  std::vector<long long> ids;
  auto rj = r.json();
  for (const auto& v : rj.as_object().at("ids").as_array()) ids.push_back(v.as_int64());
  ASSERT_EQ(ids.size(), static_cast<std::size_t>(n));
  EXPECT_EQ(std::set<long long>(ids.begin(), ids.end()).size(), ids.size());

  redis_sync rs(s.redis.endpoint());
  auto count_done = [&] {
    int done = 0;
    for (long long id : ids) {
      auto st = rs.exec({"HGET", "descprod:job:" + std::to_string(id), "state"});
      if (st.str == "done") ++done;
    }
    return done;
  };
  bool all = wait_until([&] { return count_done() == n; }, 180s, 200ms);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[ figures  ] " << n << " bulk-submitted jobs done end to end in " << secs << " s ("
            << n / secs << " jobs/s, 2 workers x 2 slots)\n";
  ASSERT_TRUE(all) << "done: " << count_done() << " of " << n;
  // Each job's app ran exactly once: one marker line per job, attempt 1.
  int twice = 0, missing = 0;
  for (long long id : ids) {
    auto f = s.markers + "/m" + std::to_string(id);
    if (!fs::exists(f)) {
      ++missing;
      continue;
    }
    if (read_file(f) != "1\n") ++twice;
  }
  EXPECT_EQ(missing, 0);
  EXPECT_EQ(twice, 0);
  EXPECT_EQ(rs.exec({"ZCARD", "descprod:queue"}).integer, 0);
  EXPECT_EQ(rs.exec({"ZCARD", "descprod:leases"}).integer, 0);
}

TEST(Spine, AJobWithBrokenKeysIsRefusedAloneTheOthersRunAndNoWorkerSlotIsLost) {
  // The daemon leases jobs in batches (one Redis script for many): one job whose hash an operator
  // replaced by a string must not stop the others, nor keep the worker's slot.
  service s(spine_options(0));
  std::vector<long long> ids;
  for (int i = 0; i < 6; ++i)
    ids.push_back(submit(s, R"({"jobtype":"marker","config":"b)" + std::to_string(i) + "\"}"));
  redis_sync r(s.redis.endpoint());
  ASSERT_EQ(r.exec({"SET", "descprod:job:" + std::to_string(ids[2]), "broken"}).str, "OK");
  s.start_worker(0);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i == 2) continue;
    ASSERT_TRUE(wait_until([&] { return s.state(ids[i]) == "done"; }, 30s))
        << ids[i] << " " << s.state(ids[i]);
  }
  // The worker has both its slots: two more jobs run side by side to done.
  long long a = submit(s, R"({"jobtype":"mysleep","config":"1"})");
  long long b = submit(s, R"({"jobtype":"mysleep","config":"1"})");
  ASSERT_TRUE(wait_until([&] { return s.state(a) == "done" && s.state(b) == "done"; }, 30s))
      << s.state(a) << " " << s.state(b);
  EXPECT_EQ(r.exec({"GET", "descprod:job:" + std::to_string(ids[2])}).str, "broken") << "left as it was";
  auto log = read_file(s.dir.file("daemon.log"));
  EXPECT_NE(log.find("lease failed job_id=" + std::to_string(ids[2])), std::string::npos) << log;
  EXPECT_EQ(s.marker(ids[2]), "") << "the broken job never ran";
}

TEST(Spine, UserSeesOnlyTheirOwnJobs) {
  service s(spine_options(0));
  long long id = submit(s, R"({"jobtype":"mysleep","config":"1"})");
  ASSERT_GT(id, 0);
  auto as_bob = s.call("GET", "/api/jobs/" + std::to_string(id), "", s.bob_token);
  EXPECT_EQ(as_bob.status, 404);
  EXPECT_EQ(as_bob.json().as_object().at("error").as_string(), "not_found");
  auto events_bob = s.call("GET", "/api/jobs/" + std::to_string(id) + "/events", "", s.bob_token);
  EXPECT_EQ(events_bob.status, 404);
  auto list_bob = s.call("GET", "/api/jobs", "", s.bob_token);
  ASSERT_EQ(list_bob.status, 200);
  EXPECT_EQ(list_bob.json().as_object().at("jobs").as_array().size(), 0u);
  auto list_alice = s.call("GET", "/api/jobs");
  ASSERT_EQ(list_alice.status, 200);
  EXPECT_EQ(list_alice.json().as_object().at("jobs").as_array().size(), 1u);
  EXPECT_EQ(s.call("GET", "/api/jobs/" + std::to_string(id)).status, 200);
}

TEST(Spine, BadRequestsGetClearErrorsAndCreateNothing) {
  service s(spine_options(0));
  auto no_token = http_request("127.0.0.1", s.port(), "GET", "/api/jobs");
  EXPECT_EQ(no_token.status, 401);
  EXPECT_EQ(s.call("GET", "/api/jobs", "", "dp_not-a-real-token").status, 401);
  struct bad {
    std::string body;
    int status;
    std::string detail_has;
  };
  std::vector<bad> cases = {
      {"{not json", 400, ""},
      {R"({"config":"1"})", 400, "jobtype"},
      {R"({"jobtype":7,"config":"1"})", 400, "jobtype"},
      {R"({"jobtype":"nosuchapp","config":"1"})", 400, "nosuchapp"},
      {R"({"jobtype":"mysleep","config":"$(id); rm -rf x"})", 400, "config"},
      {R"({"jobtype":"mysleep","config":"abc"})", 400, "config"},
      {R"({"jobtype":"mysleep","config":"1","howfig":"a\nb"})", 400, "howfig"},  // free text, but no controls
      {R"({"jobtype":"mysleep","config":"1","colour":"red"})", 400, "colour"},
  };
  for (const auto& c : cases) {
    auto r = s.call("POST", "/api/jobs", c.body);
    EXPECT_EQ(r.status, c.status) << c.body << " -> " << r.body;
    auto rj = r.json();
    const auto& o = rj.as_object();
    EXPECT_TRUE(o.contains("error")) << r.body;
    if (!c.detail_has.empty()) {
      EXPECT_NE(r.body.find(c.detail_has), std::string::npos) << r.body;
    }
  }
  auto big =
      s.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":")" + std::string(2 << 20, '1') + "\"}");
  EXPECT_EQ(big.status, 413);
  // Nothing was created by any of them.
  redis_sync rs(s.redis.endpoint());
  EXPECT_TRUE(rs.exec({"GET", "descprod:next_job_id"}).is_nil());
  // The gateway is still up.
  EXPECT_EQ(http_request("127.0.0.1", s.port(), "GET", "/healthz").status, 200);
}

}  // namespace
}  // namespace descprod::test
