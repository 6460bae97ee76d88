// Fault: the daemon is stopped (SIGTERM) and started again under load (issue #13, "Stopping the
// daemon loses nothing"). Every run of an application appends its attempt number to the job's
// marker file, so the test sees every run:
//  - jobs running and finishing around each SIGTERM (their reports held up by a Redis that pauses
//    writes) all end `done`, each exactly once, and no two runs of a job share an attempt number (the daemon drains its outbox before it exits; a
//    worker keeps each report until the daemon acknowledges it and sends it again after the
//    reconnect);
//  - a worker restarted without its job while the daemon was away gets that job requeued at once
//    when the daemon is back (its hello does not list it), not one lease period later.
// Figures (duplicates per scenario, stop and requeue times) are printed as "[ stop     ]" lines.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "core/redis.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

double secs(steady::duration d) { return std::chrono::duration<double>(d).count(); }

std::string nap_apps() {
  // nap: leaves a marker line, then works 0.3 s. gate: leaves a marker line, then runs until the
  // test creates <markers>/open-<config>.
  return "  - name: nap\n"
         "    command: [\"/bin/sh\", \"-c\", \"echo \\\"$DESCPROD_ATTEMPT\\\" >> \\\"$0/m$DESCPROD_JOB_ID\\\"; sleep 0.3\", "
         "\"{markers}\"]\n"
         "    args: []\n"
         "  - name: gate\n"
         "    pattern: \"^[a-z]{1,8}$\"\n"
         "    command: [\"/bin/sh\", \"-c\", \"echo \\\"$DESCPROD_ATTEMPT\\\" >> \\\"$0/m$DESCPROD_JOB_ID\\\"; "
         "while [ ! -e \\\"$0/open-$1\\\" ]; do sleep 0.05; done\", \"{markers}\"]\n"
         "    args: [\"{config}\"]\n";
}

// The runs a job's marker file records: one attempt number per line.
std::vector<std::string> runs_of(const service& c, long long id) {
  std::vector<std::string> out;
  std::istringstream in(c.marker(id));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

struct tally {
  int done = 0, other = 0, duplicates = 0, shared_attempts = 0, never_ran = 0;
};

// Waits until every job is terminal, then counts: done, runs beyond the first, runs that share
// an attempt number with another run of the same job.
tally settle(service& c, const std::vector<long long>& ids, std::chrono::seconds timeout) {
  tally t;
  for (auto id : ids) {
    EXPECT_TRUE(wait_until([&] { return service::terminal(c.state(id)); }, timeout))
        << "job " << id << " stuck in " << c.state(id);
    auto s = c.state(id);
    if (s == "done") ++t.done;
    else ++t.other;
    auto runs = runs_of(c, id);
    std::set<std::string> distinct(runs.begin(), runs.end());
    if (runs.empty()) ++t.never_ran;
    if (runs.size() > 1) t.duplicates += static_cast<int>(runs.size()) - 1;
    if (distinct.size() != runs.size()) {
      ++t.shared_attempts;
      ADD_FAILURE() << "job " << id << " ran twice with the same attempt number: " << c.marker(id);
    }
  }
  return t;
}

TEST(DaemonStop, SigtermWhileJobsFinishLosesNothingAndRunsNothingTwice) {
  service_options o;
  o.workers = 2;
  o.slots = 2;
  o.redis_appendonly = true;
  o.heartbeat_ms = 200;
  o.lease_timeout_ms = 3000;
  o.reconcile_ms = 500;
  o.apps = nap_apps();
  service c(o);

  std::vector<long long> ids;
  {
    std::string body = R"({"jobs":[)";
    for (int i = 0; i < 60; ++i)
      body += std::string(i ? "," : "") + R"({"jobtype":"nap","config":"n)" + std::to_string(i) + "\"}";
    body += "]}";
    auto r = c.call("POST", "/api/jobs/bulk", body);
    ASSERT_EQ(r.status, 201) << r.body;
    auto j = r.json();  // kept: a range-for over a temporary's member would dangle
    for (const auto& v : j.as_object().at("ids").as_array()) ids.push_back(v.as_int64());
  }
  redis_sync r(c.redis.endpoint());
  auto done_count = [&] {
    int n = 0;
    for (auto id : ids) n += r.exec({"HGET", "descprod:job:" + std::to_string(id), "state"}).str == "done";
    return n;
  };
  // Three SIGTERMs, each while jobs run and finish (every slot busy with 0.3 s jobs), each
  // followed by a restart. Before each, Redis pauses writes for 1.5 s (CLIENT PAUSE WRITE: a slow
  // Redis), so the reports of the jobs that finish meanwhile are still in the daemon's outbox, or
  // on their way to Redis, when the SIGTERM comes.
  std::vector<double> stop_times;
  for (int round = 0; round < 3; ++round) {
    int before = done_count();
    ASSERT_TRUE(wait_until([&] { return done_count() >= before + 4; }, 60s))
        << "no progress before stop " << round;
    ASSERT_FALSE(r.exec({"CLIENT", "PAUSE", "1500", "WRITE"}).is_error());
    std::this_thread::sleep_for(500ms);  // about six jobs finish: their reports wait for Redis
    auto t0 = steady::now();
    auto status = c.daemon->stop(15s);
    stop_times.push_back(secs(steady::now() - t0));
    EXPECT_EQ(status, std::optional<int>(0)) << "the daemon did not exit cleanly on SIGTERM";
    std::this_thread::sleep_for(300ms);  // jobs finish while no daemon runs
    c.start_daemon();
  }
  auto t = settle(c, ids, 120s);
  std::printf(
      "[ stop     ] SIGTERM x3 under load: jobs %zu done %d other %d duplicates %d shared-attempt %d "
      "never-ran %d; daemon exit after SIGTERM %.2f / %.2f / %.2f s\n",
      ids.size(), t.done, t.other, t.duplicates, t.shared_attempts, t.never_ran, stop_times[0], stop_times[1],
      stop_times[2]);
  EXPECT_EQ(t.done, static_cast<int>(ids.size()));
  EXPECT_EQ(t.duplicates, 0);
  EXPECT_EQ(t.shared_attempts, 0);
  EXPECT_EQ(t.never_ran, 0);
  for (double s : stop_times) EXPECT_LT(s, 8.0) << "the drain must end by its deadline (5 s)";
}

TEST(DaemonStop, WorkerRestartedWithoutItsJobDuringAnOutageGetsItRequeuedAtOnce) {
  service_options o;
  o.workers = 1;
  o.slots = 1;
  o.redis_appendonly = true;
  o.heartbeat_ms = 200;
  o.lease_timeout_ms = 10000;  // a requeue "one lease period later" would take 10 s
  o.reconcile_ms = 500;
  o.apps = nap_apps();
  service c(o);
  redis_sync r(c.redis.endpoint());

  auto id = c.submit(R"({"jobtype":"gate","config":"x"})");
  ASSERT_TRUE(wait_until([&] { return c.state(id) == "running"; }, 30s));
  auto key = "descprod:job:" + std::to_string(id);
  auto pid = r.exec({"HGET", key, "pid"}).as_integer();
  ASSERT_GT(pid, 0);

  // The daemon stops; meanwhile the worker dies with its job and comes back empty.
  ASSERT_EQ(c.daemon->stop(15s), std::optional<int>(0));
  service::kill9(c.workers[0]);
  ::kill(static_cast<pid_t>(pid), SIGKILL);  // the job's process, orphaned by the kill -9
  c.start_worker(0);
  std::this_thread::sleep_for(500ms);

  auto t0 = steady::now();
  c.start_daemon();
  // The job's lease (in Redis, to w0) is not in w0's hello: it is requeued and runs again.
  bool again = wait_until(
      [&] {
        auto v = r.exec({"HMGET", key, "state", "attempt"});
        return v.elements.size() == 2 && v.elements[1].as_integer() >= 2;
      },
      30s, 10ms);
  double requeue_s = secs(steady::now() - t0);
  ASSERT_TRUE(again) << "the job was not requeued";
  ASSERT_TRUE(wait_until([&] { return runs_of(c, id).size() == 2; }, 30s)) << c.marker(id);
  write_file(c.markers + "/open-x", "");
  auto t = settle(c, {id}, 60s);
  std::printf(
      "[ stop     ] worker restarted without its job during a daemon outage: requeued %.2f s after the "
      "daemon started (lease period 10 s); runs %s duplicates %d shared-attempt %d\n",
      requeue_s, c.marker(id) == "" ? "-" : c.marker(id).c_str(), t.duplicates, t.shared_attempts);
  EXPECT_LT(requeue_s, 5.0) << "requeued only after the lease period";
  EXPECT_EQ(t.done, 1);
  EXPECT_EQ(t.shared_attempts, 0);
  EXPECT_EQ(runs_of(c, id), (std::vector<std::string>{"1", "2"}));
}

}  // namespace
}  // namespace descprod::test
