// Fault injection (issue "Nothing lost"): 2,000 jobs, a mix of instant ones and 0.2 s sleeps, run
// on 2 real workers while the test kills -9 in turn a worker, the daemon, the gateway and
// redis-server (restarting each), and SIGSTOPs a worker past its lease before SIGCONTing it.
// Every run of an application leaves a marker line, so the test can tell which jobs ran twice.
// It asserts that every accepted job ends terminal, none is lost, and a job ran twice only when
// its worker was declared dead while running it (its history shows the requeue).
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "core/accounts.hpp"
#include "core/redis.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

constexpr int total_jobs = 2000;
constexpr int batch = 50;
constexpr auto lease_timeout = 1500ms;

service_options fault_options() {
  service_options o;
  o.workers = 2;
  o.slots = 2;
  o.redis_appendonly = true;
  o.heartbeat_ms = 200;
  o.lease_timeout_ms = static_cast<int>(lease_timeout.count());
  o.reconcile_ms = 1000;
  // Each run appends its attempt to the job's marker file before doing its work.
  o.apps =
      "  - name: instant\n"
      "    command: [\"/bin/sh\", \"-c\", \"echo \\\"$DESCPROD_ATTEMPT\\\" >> \\\"$0/m$DESCPROD_JOB_ID\\\"\", \"{markers}\"]\n"
      "    args: []\n"
      "  - name: nap\n"
      "    command: [\"/bin/sh\", \"-c\", \"echo \\\"$DESCPROD_ATTEMPT\\\" >> \\\"$0/m$DESCPROD_JOB_ID\\\"; sleep 0.2\", \"{markers}\"]\n"
      "    args: []\n";
  return o;
}

TEST(Faults, EveryAcceptedJobEndsTerminalNoneLostRerunOnlyWhenItsWorkerDied) {
  service c(fault_options());
  std::mutex mu;
  std::set<long long> accepted;
  std::atomic<bool> submitting{true};
  std::atomic<int> rejected_503{0}, conn_errors{0};

  // The submitter: bulk batches, retried until accepted, whatever is down at the moment.
  std::thread submitter([&] {
    auto deadline = steady::now() + 120s;
    for (int sent = 0; sent < total_jobs && steady::now() < deadline;) {
      std::string body = R"({"jobs":[)";
      for (int i = 0; i < batch; ++i) {
        int n = sent + i;
        body += std::string(i ? "," : "") + R"({"jobtype":")" + (n % 2 ? "nap" : "instant") +
                R"(","config":"j)" + std::to_string(n) + "\"}";
      }
      body += "]}";
      try {
        auto r = c.call("POST", "/api/jobs/bulk", body);
        if (r.status == 201) {
          auto j = r.json();
          std::lock_guard<std::mutex> lock(mu);
          for (const auto& v : j.as_object().at("ids").as_array()) accepted.insert(v.as_int64());
          sent += batch;
          // Paced so that submissions go on through every fault (40 batches over about 10 s).
          std::this_thread::sleep_for(250ms);
          continue;
        }
        if (r.status == 503) ++rejected_503;
        else ADD_FAILURE() << "unexpected status " << r.status << ": " << r.body;
      } catch (const std::exception&) {
        ++conn_errors;  // the gateway is being restarted
      }
      std::this_thread::sleep_for(100ms);  // client back-off before retrying the same batch
    }
    submitting = false;
  });

  auto jobs_done_at_least = [&](int n) {
    return wait_until(
        [&] {
          try {
            redis_sync r(c.redis.endpoint());
            auto v = r.exec({"GET", "descprod:next_job_id"});
            return !v.is_nil() && v.as_integer() >= n;
          } catch (...) {
            return false;
          }
        },
        60s, 50ms);
  };
  std::vector<std::string> faults;
  auto pause_between = [&] { std::this_thread::sleep_for(1500ms); };  // let work flow between faults

  ASSERT_TRUE(jobs_done_at_least(100)) << "no jobs were created";
  // 1. A worker dies mid-run and comes back.
  service::kill9(c.workers[0]);
  c.start_worker(0);
  faults.push_back("kill -9 worker w0, restart");
  pause_between();
  // 2. The daemon dies and comes back: it rebuilds from Redis and the workers reconnect.
  service::kill9(c.daemon);
  c.start_daemon();
  faults.push_back("kill -9 daemon, restart");
  pause_between();
  // 3. The gateway dies and comes back (on a new port).
  service::kill9(c.gateway);
  c.start_gateway();
  faults.push_back("kill -9 gateway, restart");
  pause_between();
  // 4. Redis dies and comes back from its append-only file, once it has written what it has
  // answered (under appendfsync everysec it may hold writes back while an fsync runs: a crash
  // then loses acknowledged writes, the subject of RedisBehind in redis_restart_test.cpp).
  ASSERT_TRUE(c.redis.wait_written());
  c.redis.kill9();
  std::this_thread::sleep_for(500ms);
  c.redis.start();
  faults.push_back("kill -9 redis-server, restart (appendonly)");
  pause_between();
  // 5. A worker freezes past its lease, then thaws.
  c.workers[1]->signal(SIGSTOP);
  std::this_thread::sleep_for(lease_timeout + 1000ms);
  c.workers[1]->signal(SIGCONT);
  faults.push_back("SIGSTOP worker w1 past its lease, SIGCONT");

  submitter.join();
  ASSERT_EQ(static_cast<int>(accepted.size()), total_jobs) << "not every batch was accepted";

  // Every job in Redis (accepted or not) must end terminal.
  redis_sync r(c.redis.endpoint());
  long long max_id = r.exec({"GET", "descprod:next_job_id"}).as_integer();
  std::map<std::string, int> states;
  auto count_states = [&] {
    states.clear();
    for (long long id = 1; id <= max_id; ++id) {
      auto s = r.exec({"HGET", "descprod:job:" + std::to_string(id), "state"});
      states[s.is_nil() ? "(missing)" : s.str]++;
    }
    int active = states["ready"] + states["dispatched"] + states["running"];
    return active == 0;
  };
  bool all_terminal = wait_until(count_states, 180s, 500ms);
  std::string summary;
  for (const auto& [k, v] : states) summary += k + "=" + std::to_string(v) + " ";
  ASSERT_TRUE(all_terminal) << "jobs still active: " << summary;

  int done = 0, lost = 0, requeued = 0, twice = 0, twice_without_requeue = 0, never_ran = 0;
  for (long long id : accepted) {
    auto key = "descprod:job:" + std::to_string(id);
    auto state = r.exec({"HGET", key, "state"}).str;
    if (state == "done") ++done;
    if (state == "lost") ++lost;
    auto events = r.exec({"XRANGE", key + ":events", "-", "+"});
    bool was_requeued_from_running = false;
    for (const auto& e : events.elements) {
      const auto& f = e.elements[1].elements;
      std::map<std::string, std::string> m;
      for (std::size_t i = 0; i + 1 < f.size(); i += 2) m[f[i].str] = f[i + 1].str;
      // Requeued: its worker was declared lost (or the daemon restarted without it coming back).
      if (m["type"] == "requeue") was_requeued_from_running = true;
    }
    if (was_requeued_from_running) ++requeued;
    auto marker = c.markers + "/m" + std::to_string(id);
    int runs = 0;
    if (fs::exists(marker)) {
      auto text = read_file(marker);
      for (char ch : text) runs += ch == '\n';
    }
    if (runs == 0) ++never_ran;
    if (runs > 1) {
      ++twice;
      if (!was_requeued_from_running) {
        ++twice_without_requeue;
        ADD_FAILURE() << "job " << id << " ran " << runs << " times without its worker being declared lost";
      }
    }
  }
  std::printf("\n[ faults   ] %-44s\n", "fault table");
  for (const auto& f : faults) std::printf("[ faults   ]   %s\n", f.c_str());
  std::printf("[ faults   ] %-22s %6s %6s %9s %10s %5s\n", "faults injected", "jobs", "done", "requeued",
              "run twice", "lost");
  std::printf("[ faults   ] %-22zu %6zu %6d %9d %10d %5d\n", faults.size(), accepted.size(), done, requeued,
              twice, lost);
  std::printf("[ faults   ] submit retries: %d answered 503, %d connection errors\n\n", rejected_503.load(),
              conn_errors.load());
  EXPECT_EQ(lost, 0);
  EXPECT_EQ(done, total_jobs) << summary;
  EXPECT_EQ(never_ran, 0);
  EXPECT_EQ(twice_without_requeue, 0);
}

}  // namespace
}  // namespace descprod::test
