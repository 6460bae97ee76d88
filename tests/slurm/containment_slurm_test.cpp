// Job containment under a real Slurm (issue #13, item 3): a worker started by the pilot script
// (sbatch → srun → descprod-worker, as at NERSC) runs a job whose app leaves setsid'd children
// that ignore SIGTERM, and a job that is cancelled while such children run. The children must be
// gone as soon as each job ends — while the pilot still runs, so it is the worker that ended
// them, not Slurm's step cleanup. The one-node Slurm comes from scripts/slurm/local-slurm (root).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <dirent.h>
#include <chrono>
#include <filesystem>
#include <regex>

#include "core/redis.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

const std::string source_dir = DESCPROD_SOURCE_DIR;

struct run_result {
  int status = -1;
  std::string output;
};
run_result run(const std::vector<std::string>& argv,
               const std::vector<std::pair<std::string, std::string>>& env = {},
               std::chrono::milliseconds timeout = 60s) {
  temp_dir scratch("descprod-run-");
  auto out = scratch.file("out");
  process p(argv, env, out);
  auto st = p.wait_exit(timeout);
  if (!st) p.stop(1s);
  return {st.value_or(-1000), p.output()};
}

std::vector<int> marked_processes(const std::string& marker) {
  std::vector<int> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end) continue;
    try {
      auto stat = read_file(std::string("/proc/") + e->d_name + "/stat");
      auto close = stat.rfind(')');
      if (close == std::string::npos || close + 2 >= stat.size() || stat[close + 2] == 'Z') continue;
      if (read_file(std::string("/proc/") + e->d_name + "/environ").find(marker) != std::string::npos)
        out.push_back(static_cast<int>(pid));
    } catch (...) {
    }
  }
  ::closedir(d);
  return out;
}

class SlurmContainment : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = run({source_dir + "/scripts/slurm/local-slurm", "start", state_.path()}, {}, 60s);
    started_ = r.status == 0;
    ASSERT_TRUE(started_) << "the local Slurm did not start (status " << r.status << "):\n" << r.output;
  }
  void TearDown() override {
    auto r = run({source_dir + "/scripts/slurm/local-slurm", "stop", state_.path()}, {}, 90s);
    EXPECT_EQ(r.status, 0) << "local-slurm stop:\n" << r.output;
  }
  temp_dir state_{"descprod-slurm-"};
  bool started_ = false;
};

TEST_F(SlurmContainment, SetsidChildrenOfAJobRunByAWorkerUnderSlurmEndWithTheJob) {
  const std::string mark = "SLURMMARK=" + std::to_string(::getpid());
  const std::string env = "    env: {SLURMMARK: \"" + mark.substr(10) + "\"}\n";
  const std::string children =
      "setsid sh -c 'trap \\\"\\\" TERM; sleep 1000' & (setsid sleep 1000 &); sleep 1000 & ";
  service_options o;
  o.workers = 0;
  o.worker_extra = "  kill_grace_s: 0.5\n";
  o.apps = "  - name: leaver\n    command: [\"/bin/sh\", \"-c\", \"" + children +
           "echo spawned > current-status.txt; sleep 1\"]\n    args: []\n" + env +
           "  - name: holder\n    command: [\"/bin/sh\", \"-c\", \"" + children +
           "echo ready > current-status.txt; sleep 1000\"]\n    args: []\n" + env;
  service c(o);
  temp_dir pilot_dir("descprod-pilot-");
  auto sb = run({"sbatch", "--parsable", "--time=5", "--output=" + pilot_dir.file("pilot-%j.out"),
                 source_dir + "/scripts/slurm/descprod-pilot.sbatch"},
                {{"DESCPROD_CONFIG", c.config_file},
                 {"DESCPROD_WORKER", c.bin("descprod-worker")},
                 {"DESCPROD_IDLE_TIMEOUT", "30"}},
                30s);
  ASSERT_EQ(sb.status, 0) << sb.output;
  auto out_file = [&] {
    for (const auto& e : fs::directory_iterator(pilot_dir.path())) return e.path().string();
    return std::string();
  };

  auto done_job = c.submit(R"({"jobtype":"leaver","config":"x"})");
  std::string st;
  wait_until(
      [&] {
        st = c.state(done_job);
        return service::terminal(st);
      },
      60s, 50ms);
  ASSERT_EQ(st, "done") << (out_file().empty() ? "" : read_file(out_file()));
  auto left = marked_processes(mark);
  EXPECT_TRUE(left.empty()) << left.size() << " processes of the done job remain";
  auto job = c.job(done_job);
  auto rundir = std::string(job["rundir"].as_string());
  auto log = read_file(rundir + "/" + fs::path(rundir).filename().string() + ".log");
  EXPECT_NE(log.find("descprod-worker: killed"), std::string::npos) << log;

  auto cancelled = c.submit(R"({"jobtype":"holder","config":"x"})");
  ASSERT_TRUE(wait_until(
      [&] {
        auto j = c.job(cancelled);
        return j.contains("progress") &&
               std::string(j["progress"].as_string()).find("ready") != std::string::npos;
      },
      30s))
      << "job " << cancelled << ": " << boost::json::serialize(c.job(cancelled)) << "\n"
      << (out_file().empty() ? "" : read_file(out_file()));
  EXPECT_GE(marked_processes(mark).size(), 4u);
  ASSERT_LT(c.call("POST", "/api/jobs/" + std::to_string(cancelled) + "/cancel").status, 300);
  wait_until(
      [&] {
        st = c.state(cancelled);
        return service::terminal(st);
      },
      30s, 50ms);
  EXPECT_EQ(st, "cancelled");
  left = marked_processes(mark);
  EXPECT_TRUE(left.empty()) << left.size() << " processes of the cancelled job remain";
  auto out = out_file().empty() ? std::string() : read_file(out_file());
  EXPECT_NE(out.find("job containment mode="), std::string::npos) << out;
  std::smatch m;
  std::regex re("job containment mode=[a-z]+[^\n]*");
  if (std::regex_search(out, m, re)) std::printf("[ slurm    ] worker under srun: %s\n", m.str().c_str());
  std::string pilot = sb.output;
  while (!pilot.empty() && (pilot.back() == '\n' || pilot.back() == ' ')) pilot.pop_back();
  if (auto nl = pilot.rfind('\n'); nl != std::string::npos) pilot = pilot.substr(nl + 1);
  run({"scancel", pilot}, {}, 20s);
}

}  // namespace
}  // namespace descprod::test
