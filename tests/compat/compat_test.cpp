// DESCprod compatibility, end to end: an application written the way DESCprod's users wrote them
// (a shell script that greps "id" out of config.json, overwrites current-status.txt, leaves a
// descprod-closeout, adds a child job with descprod-add-job and parses the new ID from the
// ` id: N` line, finds its run directory with descprod-get-job | grep rundir:) runs unchanged
// under the real worker and under descprod-start-job; its progress, closeout and child show
// correctly through the service.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <iostream>

#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

// The application, unchanged from what a DESCprod user would have written (POSIX sh only).
const char* const compat_app = R"APP(#!/bin/sh
# runapp-compat CONFIG [HOWFIG]: a DESCprod-style application.
JOBID=$(grep '"id"' config.json | sed 's/.*: //' | sed 's/,.*//')
echo "Starting job $JOBID with config $1" > current-status.txt
sleep 0.4
echo "Step 1 of 3: working" > current-status.txt
sleep 0.4
cat > descprod-closeout <<'EOF'
#!/bin/sh
echo "closeout rc=$1" > closeout.txt
echo "Closed out with rc $1" > current-status.txt
EOF
chmod +x descprod-closeout
if [ -z "$DESCPROD_TOKEN" ]; then
  echo "NO-TOKEN" > current-status.txt
  exit 7
fi
if ! descprod-add-job -p $DESCPROD_JOB_ID mysleep 1 > child.log 2>&1; then
  echo "Unable to create child job" > current-status.txt
  exit 5
fi
CHILD=$(grep " id:" child.log | sed 's/.*id: //')
echo "Step 2 of 3: created child job $CHILD" > current-status.txt
RUNDIR=$(descprod-get-job $JOBID | grep rundir: | sed 's/ *rundir: //g')
echo "$RUNDIR" > rundir-seen.txt
sleep 0.4
echo "Step 3 of 3: job $JOBID made child $CHILD" > current-status.txt
exit 0
)APP";

// A pmbs/g3wfpipe-style application (issue #16 items 1 and 2): it reads the job its config names
// (g3wfpipe's job:JJJ continuation) with descprod-get-job, creates a held child and runs it itself
// with descprod-start-job -w, all with the job's own DESCPROD_TOKEN.
const char* const pmbs_app = R"APP(#!/bin/sh
PREV=$(echo "$1" | sed -n 's/^job:\([0-9]*\)$/\1/p')
if [ -n "$PREV" ] && ! descprod-get-job "$PREV" > prev.txt 2>&1; then
  echo "cannot read job $PREV" > current-status.txt
  exit 4
fi
if ! descprod-add-job --hold -p "$DESCPROD_JOB_ID" mysleep 0 > child.log 2>&1; then
  echo "cannot create a child" > current-status.txt
  exit 5
fi
CHILD=$(grep " id:" child.log | sed 's/.*id: //')
if ! DESCPROD_OUTPUT_DIR="$PWD/children" descprod-start-job -w "$CHILD" > start.log 2>&1; then
  echo "child $CHILD did not run" > current-status.txt
  exit 6
fi
echo "ran child $CHILD after reading job $PREV" > current-status.txt
)APP";

// The service (tests/support/service.hpp) with the compat application, whose script is written
// once the service's directory exists (nothing looks at it before a job runs).
service_options compat_options(int workers) {
  service_options o;
  o.workers = workers;
  o.apps =
      "  - name: compat\n    command: [\"{dir}/runapp-compat\"]\n"
      "  - name: pmbsstyle\n    command: [\"{dir}/runapp-pmbsstyle\"]\n";
  return o;
}

class compat_service : public service {
 public:
  explicit compat_service(int workers)
      : service(compat_options(workers)), client_out(dir.file("client-out")) {
    write_file(dir.file("runapp-compat"), compat_app);
    fs::permissions(dir.file("runapp-compat"), fs::perms::owner_all);
    write_file(dir.file("runapp-pmbsstyle"), pmbs_app);
    fs::permissions(dir.file("runapp-pmbsstyle"), fs::perms::owner_all);
    fs::create_directories(dir.file("home"));
  }

  std::string field(long long id, const char* name) {
    auto j = job(id);
    auto it = j.find(name);
    if (it == j.end()) return "";
    return it->value().is_string() ? std::string(it->value().as_string()) : json::serialize(it->value());
  }
  // The progress messages the service recorded for a job, in order.
  std::vector<std::string> progress_history(long long id) {
    std::vector<std::string> out;
    auto r = call("GET", "/api/jobs/" + std::to_string(id) + "/events");
    if (r.status != 200) return out;
    auto v = r.json();
    for (const auto& e : v.as_object().at("events").as_array()) {
      const auto& o = e.as_object();
      auto it = o.find("progress");
      if (it != o.end() && it->value().is_string()) {
        std::string p(it->value().as_string());
        if (out.empty() || out.back() != p) out.push_back(p);
      }
    }
    return out;
  }

  std::string client_out;
};

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// What every run of the compat app must show, wherever it ran.
void expect_compat_outcome(compat_service& s, long long id, bool child_runs) {
  auto job = s.job(id);
  ASSERT_EQ(std::string(job.at("state").as_string()), "done") << json::serialize(job);
  std::string rundir(job.at("rundir").as_string());
  // The app found its ID in config.json and its child's ID in descprod-add-job's output.
  std::string child_log = read_file(rundir + "/child.log");
  long long child = -1;
  auto pos = child_log.find(" id: ");
  ASSERT_NE(pos, std::string::npos) << child_log;
  child = std::stoll(child_log.substr(pos + 5));
  EXPECT_EQ(child_log.substr(0, child_log.find('\n')), "Success: Added job alice/" + std::to_string(child));
  // Progress: each overwrite of current-status.txt reached the service, the closeout's last word too.
  auto history = s.progress_history(id);
  for (const auto& p : {std::string("Running. Step 1 of 3: working"),
                        "Running. Step 2 of 3: created child job " + std::to_string(child)})
    EXPECT_TRUE(contains(history, p)) << p;
  EXPECT_EQ(std::string(job.at("progress").as_string()), "Done. Closed out with rc 0");
  // The closeout ran with the app's status.
  EXPECT_EQ(read_file(rundir + "/closeout.txt"), "closeout rc=0\n");
  // descprod-get-job | grep rundir: gave the app its own run directory.
  EXPECT_EQ(read_file(rundir + "/rundir-seen.txt"), rundir + "\n");
  // The child is a real job of the same user with this job as parent.
  auto c = s.job(child);
  ASSERT_FALSE(c.empty());
  EXPECT_EQ(c.at("parent").as_int64(), id);
  EXPECT_EQ(std::string(c.at("jobtype").as_string()), "mysleep");
  EXPECT_EQ(std::string(c.at("descname").as_string()), "alice");
  auto children = s.job(id).at("children").as_object();
  EXPECT_EQ(children.at("total").as_int64(), 1);
  if (child_runs) {
    ASSERT_TRUE(s.wait_terminal(child));
    EXPECT_EQ(s.field(child, "state"), "done");
    EXPECT_EQ(s.job(id).at("children").as_object().at("done").as_int64(), 1);
  }
}

TEST(Compat, DescprodStyleShellAppRunsUnchangedUnderTheWorker) {
  compat_service s(1);
  long long id = s.submit(R"({"jobtype":"compat","config":"cfg1"})");
  ASSERT_TRUE(s.wait_terminal(id)) << s.field(id, "state");
  // The app needs the job token the worker hands it (DESCPROD_TOKEN); without it it stops here.
  ASSERT_NE(s.field(id, "progress"), "Failed. NO-TOKEN") << "the worker gave the application no job token";
  expect_compat_outcome(s, id, true);
}

TEST(Compat, DescprodStyleShellAppRunsUnchangedUnderStartJob) {
  compat_service s(0);
  ASSERT_TRUE(s.has_route("POST", "/api/jobs/999999999/claim")) << "no claim route";
  long long id = s.submit(R"({"jobtype":"compat","config":"cfg2"})");
  process start({s.bin("descprod-start-job"), "-w", std::to_string(id)},
                {{"PATH", s.env().front().second},
                 {"DESCPROD_URL", s.url()},
                 {"DESCPROD_TOKEN", s.alice_token},
                 {"HOME", s.dir.file("home")},
                 {"DESCPROD_OUTPUT_DIR", s.client_out}},
                s.dir.file("start-job.log"));
  auto st = start.wait_exit(60s);
  ASSERT_TRUE(st.has_value()) << "descprod-start-job did not end";
  EXPECT_EQ(*st, 0) << start.output();
  ASSERT_TRUE(s.wait_terminal(id, 10s));
  expect_compat_outcome(s, id, false);  // no worker: the child stays ready
  char name[32];
  std::snprintf(name, sizeof name, "job%06lld", id);
  EXPECT_EQ(s.field(id, "rundir"), s.client_out + "/jobs/" + name);
}

TEST(Compat, AJobReadsItsOwnersOtherJobsAndStartsItsHeldChildItself) {
  compat_service s(1);
  long long prev = s.submit(R"({"jobtype":"mysleep","config":"0"})");
  ASSERT_TRUE(s.wait_terminal(prev));
  long long id = s.submit(R"({"jobtype":"pmbsstyle","config":"job:)" + std::to_string(prev) + "\"}");
  ASSERT_TRUE(s.wait_terminal(id, 60s)) << s.field(id, "state");
  auto job = s.job(id);
  std::string rundir(job.at("rundir").as_string());
  ASSERT_EQ(s.field(id, "state"), "done")
      << s.field(id, "progress") << "\n"
      << read_file(rundir + "/start.log") << read_file(rundir + "/prev.txt");
  std::string child_log = read_file(rundir + "/child.log");
  auto pos = child_log.find(" id: ");
  ASSERT_NE(pos, std::string::npos) << child_log;
  long long child = std::stoll(child_log.substr(pos + 5));
  EXPECT_EQ(s.field(id, "progress"),
            "Done. ran child " + std::to_string(child) + " after reading job " + std::to_string(prev));
  // descprod-get-job of the other job printed its fields.
  EXPECT_NE(read_file(rundir + "/prev.txt").find("id: " + std::to_string(prev) + "\n"), std::string::npos);
  // The held child was run by the job itself, not by the service's worker.
  EXPECT_EQ(s.field(child, "state"), "done");
  EXPECT_EQ(s.field(child, "worker").rfind("cli:", 0), 0u) << s.field(child, "worker");
  EXPECT_EQ(s.field(child, "parent"), std::to_string(id));
}

}  // namespace
}  // namespace descprod::test
