// Every process a job starts ends with the job (issue #13, item 3): on normal exit, cancel, time
// limit and drain, including children that were backgrounded, double-forked or setsid'd (and
// ignore SIGTERM). Run in both containment modes: a cgroup v2 per job, and the child-subreaper
// fallback (forced with worker.containment: subreaper). Each app carries a marker in its
// environment (apps.yaml env); a bounded /proc scan finds every process that still has it.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <dirent.h>
#include <chrono>
#include <filesystem>
#include <regex>
#include <string>

#include "core/redis.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// PIDs of live (not zombie) processes whose environment holds `marker` (one pass over /proc).
std::vector<int> marked_processes(const std::string& marker) {
  std::vector<int> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end) continue;
    std::string base = std::string("/proc/") + e->d_name;
    std::string stat;
    try {
      stat = read_file(base + "/stat");
    } catch (...) {
      continue;
    }
    auto close = stat.rfind(')');
    if (close == std::string::npos || close + 2 >= stat.size() || stat[close + 2] == 'Z') continue;
    std::string env;
    try {
      env = read_file(base + "/environ");
    } catch (...) {
      continue;
    }
    if (env.find(marker) != std::string::npos) out.push_back(static_cast<int>(pid));
  }
  ::closedir(d);
  return out;
}

// The number in the job log's "killed N leftover processes" line (-1 when there is none).
int leftovers_in_log(const std::string& log) {
  std::smatch m;
  std::regex re("descprod-worker: killed ([0-9]+) leftover process");
  if (!std::regex_search(log, m, re)) return -1;
  return std::stoi(m[1]);
}

class Containment : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    marker_ = "DPMARK=" + std::to_string(::getpid()) + "-" + GetParam() + "-" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name();
    for (auto& ch : marker_)
      if (ch == '/') ch = '_';
    std::string env = "    env: {DPMARK: \"" + marker_.substr(7) + "\"}\n";
    // Background children (1,000), a double fork, a setsid'd sleeper that ignores SIGTERM.
    const std::string spawn =
        "i=0; while [ $i -lt 1000 ]; do sleep 1000 & i=$((i+1)); done; "
        "(sh -c 'sleep 1000 &' &); "
        "setsid sh -c 'trap \\\"\\\" TERM; sleep 1000' & ";
    const std::string hold =
        "sleep 1000 & (sh -c 'sleep 1000 &' &); setsid sh -c 'trap \\\"\\\" TERM; sleep 1000' & "
        "echo ready > current-status.txt; sleep 1000";
    service_options o;
    o.workers = 1;
    o.slots = 2;
    o.worker_extra = "  containment: " + GetParam() + "\n  kill_grace_s: 0.5\n  drain_grace_s: 0.5\n";
    o.apps = "  - name: spawner\n    command: [\"/bin/sh\", \"-c\", \"" + spawn +
             "echo spawned > current-status.txt\"]\n    args: []\n" + env +
             "  - name: hold\n    command: [\"/bin/sh\", \"-c\", \"" + hold + "\"]\n    args: []\n" + env +
             "  - name: limited\n    command: [\"/bin/sh\", \"-c\", \"" + hold +
             "\"]\n    args: []\n    time_limit_s: 2\n" + env;
    svc_ = std::make_unique<service>(o);
  }
  void TearDown() override {
    svc_.reset();
    // Whatever a failed case left behind is not left to the next test.
    for (int pid : marked_processes(marker_)) ::kill(pid, SIGKILL);
  }
  // The first attempt's log (a handed-back job's record no longer names its run directory).
  std::string log_of(long long id) {
    char name[32];
    std::snprintf(name, sizeof name, "job%06lld", id);
    auto log = svc_->out_dir + "/jobs/" + name + "/" + name + ".log";
    return fs::exists(log) ? read_file(log) : std::string();
  }
  std::string wait_terminal(long long id, std::chrono::milliseconds timeout = 60s) {
    std::string st;
    wait_until(
        [&] {
          st = svc_->state(id);
          return service::terminal(st);
        },
        timeout, 50ms);
    return st;
  }
  void wait_ready(long long id) {
    ASSERT_TRUE(wait_until(
        [&] {
          auto j = svc_->job(id);
          return j.contains("progress") &&
                 std::string(j["progress"].as_string()).find("ready") != std::string::npos;
        },
        30s))
        << svc_->job(id);
    ASSERT_GE(marked_processes(marker_).size(), 4u);
  }
  // No process of the job remains: checked at once (the worker kills before it reports).
  void expect_none_left() {
    auto left = marked_processes(marker_);
    EXPECT_TRUE(left.empty()) << left.size() << " processes of the job remain, e.g. pid " << left.front();
  }
  std::string marker_;
  std::unique_ptr<service> svc_;
};

// The worker reuses an attempt's cgroup for later attempts: one whose leftovers were killed
// (cgroup.kill) must start the next job like a fresh one, again and again.
TEST_P(Containment, JobsAfterOneWhoseLeftoversWereKilledRunNormally) {
  for (int round = 0; round < 3; ++round) {
    auto id = svc_->submit(R"({"jobtype":"spawner","config":"x"})");
    EXPECT_EQ(wait_terminal(id), "done") << "round " << round << ": " << svc_->job(id);
    expect_none_left();
  }
}

TEST_P(Containment, NormalExitKillsBackgroundedDoubleForkedAndSetsidChildren) {
  auto id = svc_->submit(R"({"jobtype":"spawner","config":"x"})");
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(wait_terminal(id), "done");
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  expect_none_left();
  auto log = log_of(id);
  int n = leftovers_in_log(log);
  EXPECT_GE(n, 1002) << log;  // 1,000 sleeps, the double-forked sleep, the setsid'd shell (+ its sleep)
  std::printf(
      "[ contain  ] mode=%s normal exit: %d leftover processes killed, job %lld ms from submit to done\n",
      GetParam().c_str(), n, static_cast<long long>(ms));
}

TEST_P(Containment, CancelKillsSetsidChildrenThatIgnoreSigterm) {
  auto id = svc_->submit(R"({"jobtype":"hold","config":"x"})");
  wait_ready(id);
  auto r = svc_->call("POST", "/api/jobs/" + std::to_string(id) + "/cancel");
  ASSERT_LT(r.status, 300) << r.body;
  EXPECT_EQ(wait_terminal(id, 20s), "cancelled");
  expect_none_left();
  auto log = log_of(id);
  EXPECT_GE(leftovers_in_log(log), 1) << log;  // the setsid'd shell ignored SIGTERM
}

TEST_P(Containment, TimeLimitKillsEveryProcessOfTheJob) {
  auto id = svc_->submit(R"({"jobtype":"limited","config":"x"})");
  wait_ready(id);
  EXPECT_EQ(wait_terminal(id, 20s), "timeout");
  expect_none_left();
  auto log = log_of(id);
  EXPECT_GE(leftovers_in_log(log), 1) << log;
}

TEST_P(Containment, DrainKillsEveryProcessOfTheJobsItHandsBack) {
  auto id = svc_->submit(R"({"jobtype":"hold","config":"x"})");
  wait_ready(id);
  svc_->workers[0]->signal(SIGTERM);
  auto st = svc_->workers[0]->wait_exit(20s);
  ASSERT_TRUE(st.has_value()) << "the worker did not finish its drain";
  EXPECT_EQ(*st, 0);
  expect_none_left();
  auto log = log_of(id);
  EXPECT_GE(leftovers_in_log(log), 1) << log;
  // Handed back, not failed: the job waits for another worker, its attempt unused.
  EXPECT_TRUE(wait_until([&] { return svc_->state(id) == "ready"; }, 10s)) << svc_->state(id);
}

INSTANTIATE_TEST_SUITE_P(Modes, Containment, ::testing::Values("cgroup", "subreaper"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace descprod::test
