// A frozen worker fences itself (issue #13, item 14). Worker w0 runs a job, then is SIGSTOPped for
// longer than the lease timeout: the daemon declares it lost and requeues the job, which worker
// w1 runs as attempt 2. When w0 is SIGCONTed, its first act must be to kill its copy of the job
// (measured: from SIGCONT until no process of attempt 1 is left), and its stale report must be
// refused: the job ends done exactly once, with attempt 2.
#include <gtest/gtest.h>
#include <signal.h>

#include <dirent.h>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "core/redis.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

// Live processes whose environment holds all of `needles` (one bounded pass over /proc).
int count_processes_with(const std::vector<std::string>& needles) {
  int n = 0;
  DIR* d = ::opendir("/proc");
  if (!d) return 0;
  while (auto* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end) continue;
    std::string env;
    try {
      auto stat = read_file(std::string("/proc/") + e->d_name + "/stat");
      auto close = stat.rfind(')');
      if (close == std::string::npos || close + 2 >= stat.size() || stat[close + 2] == 'Z') continue;
      env = read_file(std::string("/proc/") + e->d_name + "/environ");
    } catch (...) {
      continue;
    }
    env.insert(env.begin(), '\0');
    bool all = true;
    for (const auto& nd : needles) all = all && env.find(nd) != std::string::npos;
    if (all) ++n;
  }
  ::closedir(d);
  return n;
}

TEST(FrozenWorker, FencesItselfOnResumeAndTheJobEndsDoneOnceWithTheNewAttempt) {
  const std::string mark = "FROZENMARK=" + std::to_string(::getpid());
  service_options o;
  o.workers = 1;  // w1 joins once w0 holds the job
  o.slots = 1;
  o.heartbeat_ms = 100;
  o.lease_timeout_ms = 1000;
  o.reconcile_ms = 500;
  o.apps =
      "  - name: longnap\n"
      "    command: [\"/bin/sh\", \"-c\", \"echo \\\"$DESCPROD_ATTEMPT\\\" >> \\\"$0/m$DESCPROD_JOB_ID\\\"; "
      "sleep 1000 & sleep 4\", \"{markers}\"]\n"
      "    args: []\n"
      "    env: {FROZENMARK: \"" +
      mark.substr(11) + "\"}\n";
  service c(o);
  redis_sync r(c.redis.endpoint());
  auto id = c.submit(R"({"jobtype":"longnap","config":"x"})");
  ASSERT_TRUE(wait_until([&] { return c.state(id) == "running"; }, 20s)) << c.state(id);
  const std::string attempt1 = std::string(1, '\0') + "DESCPROD_ATTEMPT=1" + '\0';
  // sh, its backgrounded sleep and the sleep 4 (sh may exec the last one itself).
  ASSERT_TRUE(wait_until(
      [&] {
        return count_processes_with({mark, attempt1}) >= 2;
      },
      5s))
      << count_processes_with({mark, attempt1});

  c.workers[0]->signal(SIGSTOP);
  c.start_worker(1);
  // Requeued past the lease and running again on w1 as attempt 2.
  ASSERT_TRUE(wait_until(
      [&] {
        auto j = c.job(id);
        return j.contains("attempt") && j["attempt"].as_int64() == 2 && c.state(id) == "running";
      },
      20s))
      << c.job(id);
  EXPECT_GE(count_processes_with({mark, attempt1}), 2)
      << "the frozen worker's copy still exists while it is stopped";

  auto t0 = steady::now();
  c.workers[0]->signal(SIGCONT);
  ASSERT_TRUE(wait_until(
      [&] {
        return count_processes_with({mark, attempt1}) == 0;
      },
      10s, 2ms))
      << "the frozen worker's job processes were not killed";
  auto kill_ms = std::chrono::duration<double, std::milli>(steady::now() - t0).count();
  std::printf("[ frozen   ] SIGCONT to no process of attempt 1 left: %.1f ms\n", kill_ms);
  EXPECT_LT(kill_ms, 500.0)
      << "the fence must come before the daemon's cancel (hello after a reconnect backoff)";

  std::string st;
  ASSERT_TRUE(wait_until(
      [&] {
        st = c.state(id);
        return service::terminal(st);
      },
      30s));
  EXPECT_EQ(st, "done");
  auto j = c.job(id);
  EXPECT_EQ(j["attempt"].as_int64(), 2);
  // Ran twice (attempt 1 on the frozen worker, attempt 2 on w1), finished once.
  EXPECT_EQ(c.marker(id), "1\n2\n");
  auto events = r.exec({"XRANGE", "descprod:job:" + std::to_string(id) + ":events", "-", "+"});
  int finishes = 0;
  std::string history;
  for (const auto& e : events.elements) {
    std::map<std::string, std::string> m;
    const auto& f = e.elements[1].elements;
    for (std::size_t i = 0; i + 1 < f.size(); i += 2) m[f[i].str] = f[i + 1].str;
    history += m["type"] + ":" + m["state"] + "(" + m["attempt"] + ") ";
    if (m["state"] == "done" || m["state"] == "failed" || m["state"] == "cancelled") ++finishes;
  }
  EXPECT_EQ(finishes, 1) << history;
  // The frozen worker's report (a handback of attempt 1) was refused as stale.
  auto worker_log = read_file(c.dir.file("worker-w0.log"));
  EXPECT_NE(worker_log.find("frozen past its lease: stopping its jobs"), std::string::npos) << worker_log;
  auto daemon_log = read_file(c.dir.file("daemon.log"));
  EXPECT_NE(daemon_log.find("report refused command=handback job_id=" + std::to_string(id) + " attempt=1"),
            std::string::npos)
      << daemon_log.substr(daemon_log.size() > 4000 ? daemon_log.size() - 4000 : 0);
}

}  // namespace
}  // namespace descprod::test
