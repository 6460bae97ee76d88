// Integration tests of descprod-worker: the worker library runs on its own io_context thread and
// real child processes; the test plays the daemon with a plain ROUTER socket on ipc:// in a fresh
// temp dir. The last tests run the real binary. Every wait polls with a deadline; processes the
// worker started are killed by PID in TearDown as a safety net.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "workers/job_spec.hpp"
#include "workers/run_files.hpp"
#include "workers/worker.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
namespace net = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using descprod::workers::worker;
using descprod::workers::worker_options;

constexpr auto default_wait = 10s;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "descprod-worker-test-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// Polls `cond` until it holds or the deadline passes.
bool eventually(const std::function<bool()>& cond, std::chrono::milliseconds within = default_wait) {
  auto deadline = steady::now() + within;
  while (steady::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return cond();
}

struct daemon_msg {
  std::string route;
  std::string command;
  json::object body;
};

// The test's side of the protocol: a ROUTER the worker connects to.
class fake_daemon {
 public:
  fake_daemon(zmq::context_t& ctx, const std::string& endpoint) : sock_(ctx, zmq::socket_type::router) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.bind(endpoint);
  }

  // The next message from any worker, or nullopt after `timeout`.
  std::optional<daemon_msg> recv(std::chrono::milliseconds timeout) {
    zmq::pollitem_t items[] = {{sock_.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, timeout);
    if (!(items[0].revents & ZMQ_POLLIN)) return std::nullopt;
    std::vector<zmq::message_t> parts;
    (void)zmq::recv_multipart(sock_, std::back_inserter(parts));
    EXPECT_EQ(parts.size(), 3u);
    if (parts.size() != 3) return std::nullopt;
    daemon_msg m{parts[0].to_string(), parts[1].to_string(), {}};
    auto v = json::parse(parts[2].to_string_view());
    EXPECT_TRUE(v.is_object());
    if (v.is_object()) m.body = v.as_object();
    history.push_back(m);
    return m;
  }

  // Waits for the next `command` (matching `pred` if given), skipping and keeping others.
  std::optional<daemon_msg> expect(std::string_view command,
                                   std::function<bool(const daemon_msg&)> pred = nullptr,
                                   std::chrono::milliseconds within = default_wait) {
    auto deadline = steady::now() + within;
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now());
      if (left <= 0ms) return std::nullopt;
      auto m = recv(left);
      if (!m) return std::nullopt;
      if (m->command == command && (!pred || pred(*m))) return m;
    }
  }

  void send(const std::string& route, std::string_view command, const json::object& body) {
    std::string cmd(command);
    std::string text = json::serialize(body);
    sock_.send(zmq::buffer(route), zmq::send_flags::sndmore);
    sock_.send(zmq::buffer(cmd), zmq::send_flags::sndmore);
    sock_.send(zmq::buffer(text), zmq::send_flags::none);
  }
  void send_raw(const std::vector<std::string>& frames) {
    for (std::size_t i = 0; i < frames.size(); ++i)
      sock_.send(zmq::buffer(frames[i]), i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }

  std::vector<daemon_msg> history;

 private:
  zmq::socket_t sock_;
};

json::object welcome_body(long long heartbeat_ms = 100, long long lease_timeout_ms = 60000) {
  json::object o;
  o["protocol"] = 1;
  o["heartbeat_ms"] = heartbeat_ms;
  o["lease_timeout_ms"] = lease_timeout_ms;
  return o;
}

json::object job_body(long long id, const std::vector<std::string>& argv, int attempt = 1,
                      double time_limit_s = 0, json::object env = {}, bool login_shell = false) {
  json::object job;
  job["id"] = id;
  job["descname"] = "alice";
  job["jobtype"] = "test";
  job["config"] = "cfg";
  job["howfig"] = "";
  job["progress"] = "Ready.";
  job["create_time"] = 1712345678.5;
  json::array a;
  for (const auto& s : argv) a.emplace_back(s);
  json::object app;
  app["argv"] = a;
  app["env"] = env;
  app["time_limit_s"] = time_limit_s;
  app["login_shell"] = login_shell;
  json::object o;
  o["job"] = job;
  o["attempt"] = attempt;
  o["app"] = app;
  return o;
}

json::object job_ref(long long id, int attempt) {
  json::object o;
  o["job"] = id;
  o["attempt"] = attempt;
  return o;
}

std::function<bool(const daemon_msg&)> for_job(long long id) {
  return [id](const daemon_msg& m) { return m.body.contains("job") && m.body.at("job").as_int64() == id; };
}

// An app that waits until the file `go` appears in its run directory, then exits 0.
std::vector<std::string> wait_for_go_app() {
  return {"/bin/sh", "-c", "while [ ! -e go ]; do sleep 0.02; done; echo went > current-status.txt"};
}

class Worker : public ::testing::Test {
 protected:
  void SetUp() override {
    endpoint_ = "ipc://" + (dir_.path / "w.ipc").string();
    daemon_ = std::make_unique<fake_daemon>(ctx_, endpoint_);
  }

  void TearDown() override {
    stop_worker();
    for (pid_t pid : pids_) ::kill(-pid, SIGKILL);  // safety net; normally long gone
  }

  worker_options options() {
    worker_options o;
    o.endpoint = endpoint_;
    o.id = "test-worker";
    o.owner = "alice";
    o.pool = "testpool";
    o.host = "node1.example";
    o.slots = 2;
    o.run.output_dir = dir_.path / "out";
    o.run.host = o.host;
    o.run.gateway_url = "http://gateway.example:8080";
    o.run.status_poll = 20ms;
    o.run.kill_grace = 2s;
    o.shutdown_grace = 2s;
    o.heartbeat = 100ms;
    o.lease_timeout = 5s;
    o.reconnect_min = 50ms;
    o.reconnect_max = 200ms;
    o.linger_on_exit = 500ms;
    return o;
  }

  void start_worker(worker_options o) {
    worker_ = std::make_unique<worker>(ioc_.get_executor(), ctx_, std::move(o));
    exit_ = exit_promise_.get_future();
    worker_->start([this](std::exception_ptr e) {
      if (e) exit_promise_.set_exception(e);
      else exit_promise_.set_value(worker_->exit_code());
    });
    thread_ = std::thread([this] { ioc_.run(); });
  }
  void start_worker() { start_worker(options()); }

  // Answers the worker's hello with a welcome; returns the worker's routing id.
  std::string handshake(json::object welcome = welcome_body()) {
    auto hello = daemon_->expect("hello");
    EXPECT_TRUE(hello) << "no hello from the worker";
    if (!hello) return {};
    daemon_->send(hello->route, "welcome", welcome);
    return hello->route;
  }

  // Posts stop() and waits for run() to end; returns its exit code (or -1 after a deadline).
  int stop_worker() {
    if (!thread_.joinable()) return exit_code_;
    net::post(ioc_, [this] { worker_->stop(); });
    return wait_exit();
  }

  int wait_exit(std::chrono::milliseconds within = 15s) {
    if (!thread_.joinable()) return exit_code_;
    if (exit_.wait_for(within) != std::future_status::ready) {
      ADD_FAILURE() << "worker did not stop in time";
      ioc_.stop();
      thread_.join();
      return -1;
    }
    thread_.join();
    exit_code_ = exit_.get();
    return exit_code_;
  }

  std::optional<daemon_msg> expect_started(long long id) {
    auto m = daemon_->expect("started", for_job(id));
    if (m && m->body.contains("pid")) pids_.insert(static_cast<pid_t>(m->body.at("pid").as_int64()));
    return m;
  }

  temp_dir dir_;
  std::string endpoint_;
  zmq::context_t ctx_{1};
  std::unique_ptr<fake_daemon> daemon_;
  net::io_context ioc_{1};
  std::unique_ptr<worker> worker_;
  std::promise<int> exit_promise_;
  std::future<int> exit_;
  std::thread thread_;
  int exit_code_ = -1;
  std::set<pid_t> pids_;
};

// ---------------------------------------------------------------------------------------------

TEST_F(Worker, SaysHelloThenAsksForAsManyJobsAsSlots) {
  start_worker();
  auto hello = daemon_->expect("hello");
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->body.at("protocol").as_int64(), 1);
  EXPECT_EQ(hello->body.at("role").as_string(), "worker");
  EXPECT_EQ(hello->body.at("worker").as_string(), "test-worker");
  EXPECT_EQ(hello->body.at("owner").as_string(), "alice");
  EXPECT_EQ(hello->body.at("host").as_string(), "node1.example");
  EXPECT_EQ(hello->body.at("slots").as_int64(), 2);
  EXPECT_EQ(hello->body.at("pool").as_string(), "testpool");
  EXPECT_EQ(hello->body.at("version").as_string(), DESCPROD_VERSION);
  EXPECT_EQ(hello->body.at("walltime_end").as_int64(), 0);
  EXPECT_TRUE(hello->body.at("running").as_array().empty());
  daemon_->send(hello->route, "welcome", welcome_body());
  auto ready = daemon_->expect("ready");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->body.at("credits").as_int64(), 2);
  auto hb = daemon_->expect("heartbeat");
  ASSERT_TRUE(hb) << "no heartbeat";
  EXPECT_TRUE(hb->body.at("running").is_array());
  EXPECT_EQ(stop_worker(), 0);
}

TEST_F(Worker, ReportsExitCodeAndLastStatusLine) {
  start_worker();
  auto route = handshake();
  ASSERT_TRUE(daemon_->expect("ready"));
  daemon_->send(route, "job",
                job_body(42, {"/bin/sh", "-c", "echo hi; echo 'I'\\''m awake now.' > current-status.txt; exit 3"}));
  auto started = expect_started(42);
  ASSERT_TRUE(started);
  EXPECT_EQ(started->body.at("attempt").as_int64(), 1);
  EXPECT_GT(started->body.at("pid").as_int64(), 0);
  EXPECT_EQ(started->body.at("host").as_string(), "node1.example");
  fs::path rundir(std::string(started->body.at("rundir").as_string()));
  EXPECT_EQ(rundir, dir_.path / "out" / "jobs" / "job000042");

  auto finished = daemon_->expect("finished", for_job(42));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("attempt").as_int64(), 1);
  EXPECT_EQ(finished->body.at("rc").as_int64(), 3);
  EXPECT_EQ(finished->body.at("signal").as_int64(), 0);
  EXPECT_EQ(finished->body.at("timed_out").as_bool(), false);
  EXPECT_EQ(finished->body.at("message").as_string(), "I'm awake now.");
  auto ready = daemon_->expect("ready");
  ASSERT_TRUE(ready) << "no new credit after the job ended";
  EXPECT_EQ(ready->body.at("credits").as_int64(), 1);

  auto config = slurp(rundir / "config.json");
  EXPECT_NE(config.find("\n  \"id\": 42,\n"), std::string::npos) << config;
  EXPECT_NE(config.find("\n  \"progress\": \"Ready.\""), std::string::npos) << config;
  EXPECT_NE(config.find("\n  \"create_time\": 1712345678,"), std::string::npos) << config;
  EXPECT_EQ(slurp(rundir / "job000042.log"), "hi\n");
  auto progress = slurp(rundir / "progress.log");
  EXPECT_NE(progress.find("       0: Running.\n"), std::string::npos) << progress;
  EXPECT_NE(progress.find(": Failed. I'm awake now.\n"), std::string::npos) << progress;
  auto status = json::parse(slurp(rundir / "wrapper-status.json")).as_object();
  EXPECT_EQ(status.at("wrapper_version").as_string(), "descprod-cpp-1");
  EXPECT_EQ(status.at("id").as_int64(), 42);
  EXPECT_EQ(status.at("descname").as_string(), "alice");
  EXPECT_EQ(status.at("return_status").as_int64(), 3);
  EXPECT_EQ(status.at("progress").as_string(), "Failed. I'm awake now.");
  EXPECT_EQ(status.at("pid").as_int64(), started->body.at("pid").as_int64());
  EXPECT_TRUE(status.contains("stop_time"));
  EXPECT_EQ(slurp(rundir / "wrapper-status.json").substr(0, 32), "{\n  \"wrapper_version\": \"descprod");
}

TEST_F(Worker, PassesConfigToTheAppAsOneLiteralArgument) {
  const std::string evil = "$(id); rm -rf x";
  start_worker();
  auto route = handshake();
  daemon_->send(route, "job", job_body(5, {"/usr/bin/printf", "%s", evil}));
  auto started = expect_started(5);
  ASSERT_TRUE(started);
  auto finished = daemon_->expect("finished", for_job(5));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("rc").as_int64(), 0);
  fs::path rundir(std::string(started->body.at("rundir").as_string()));
  EXPECT_EQ(slurp(rundir / "job000005.log"), evil);
}

TEST_F(Worker, LoginShellPassesArgumentsAsPositionalParameters) {
  const std::string evil = "$(id); rm -rf x \"'`";
  start_worker();
  auto route = handshake();
  daemon_->send(route, "job", job_body(6, {"/usr/bin/printf", "%s", evil}, 1, 0, {}, true));
  auto started = expect_started(6);
  ASSERT_TRUE(started);
  auto finished = daemon_->expect("finished", for_job(6));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("rc").as_int64(), 0);
  fs::path rundir(std::string(started->body.at("rundir").as_string()));
  // A login shell may print its own noise first; the app's output must end the log unchanged.
  auto log = slurp(rundir / "job000006.log");
  ASSERT_GE(log.size(), evil.size()) << log;
  EXPECT_EQ(log.substr(log.size() - evil.size()), evil);
}

TEST_F(Worker, GivesTheAppItsEnvironmentAndAFreshRunDirectoryPerAttempt) {
  start_worker();
  auto route = handshake();
  json::object env;
  env["FOO"] = "bar baz";
  daemon_->send(route, "job",
                job_body(7, {"/bin/sh", "-c", "printf '%s|%s|%s|%s|%s' \"$FOO\" \"$DESCPROD_JOB_ID\" "
                                              "\"$DESCPROD_ATTEMPT\" \"$DESCPROD_RUNDIR\" \"$DESCPROD_URL\""},
                         2, 0, env));
  auto started = expect_started(7);
  ASSERT_TRUE(started);
  fs::path rundir(std::string(started->body.at("rundir").as_string()));
  EXPECT_EQ(rundir.filename(), "job000007.2");
  ASSERT_TRUE(daemon_->expect("finished", for_job(7)));
  EXPECT_EQ(slurp(rundir / "job000007.log"),
            "bar baz|7|2|" + rundir.string() + "|http://gateway.example:8080");

  // The same attempt again (e.g. a daemon replaying it) must not overwrite the first directory.
  daemon_->send(route, "job", job_body(7, {"/bin/true"}, 2));
  auto again = expect_started(7);
  ASSERT_TRUE(again);
  EXPECT_EQ(fs::path(std::string(again->body.at("rundir").as_string())).filename(), "job000007.3");
  ASSERT_TRUE(daemon_->expect("finished", for_job(7)));
}

TEST_F(Worker, CancelEndsTheJobWithSignal15) {
  start_worker();
  auto route = handshake();
  daemon_->send(route, "job", job_body(8, {"/bin/sleep", "60"}));
  ASSERT_TRUE(expect_started(8));
  daemon_->send(route, "cancel", job_ref(8, 1));
  auto finished = daemon_->expect("finished", for_job(8));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("signal").as_int64(), SIGTERM);
  EXPECT_EQ(finished->body.at("rc").as_int64(), 0);
  EXPECT_EQ(finished->body.at("timed_out").as_bool(), false);
}

TEST_F(Worker, CancelEscalatesToSigkillWhenTheAppIgnoresSigterm) {
  auto o = options();
  o.run.kill_grace = 200ms;
  start_worker(o);
  auto route = handshake();
  daemon_->send(route, "job",
                job_body(9, {"/bin/sh", "-c", "trap '' TERM; echo armed > current-status.txt; "
                                              "while true; do sleep 0.05; done"}));
  ASSERT_TRUE(expect_started(9));
  ASSERT_TRUE(daemon_->expect("progress", for_job(9))) << "trap not armed";
  daemon_->send(route, "cancel", job_ref(9, 1));
  auto finished = daemon_->expect("finished", for_job(9));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("signal").as_int64(), SIGKILL);
}

TEST_F(Worker, ReportsDoneAndTotalFromAStatusLine) {
  start_worker();
  auto route = handshake();
  daemon_->send(route, "job",
                job_body(10, {"/bin/sh", "-c", "echo '  [3/10] working  ' > current-status.txt; exec sleep 60"}));
  ASSERT_TRUE(expect_started(10));
  auto progress = daemon_->expect("progress", for_job(10));
  ASSERT_TRUE(progress);
  EXPECT_EQ(progress->body.at("message").as_string(), "[3/10] working");
  EXPECT_EQ(progress->body.at("done").as_int64(), 3);
  EXPECT_EQ(progress->body.at("total").as_int64(), 10);
  daemon_->send(route, "cancel", job_ref(10, 1));
  auto finished = daemon_->expect("finished", for_job(10));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("message").as_string(), "[3/10] working");
}

TEST_F(Worker, ReportsRc127WithoutStartedWhenTheProgramDoesNotExist) {
  start_worker();
  auto route = handshake();
  daemon_->send(route, "job", job_body(11, {"/nonexistent/runapp-nothing", "x"}));
  auto finished = daemon_->expect("finished", for_job(11));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("rc").as_int64(), 127);
  EXPECT_EQ(finished->body.at("message").as_string(),
            "cannot start /nonexistent/runapp-nothing: No such file or directory");
  for (const auto& m : daemon_->history) EXPECT_NE(m.command, "started");
  auto log = slurp(dir_.path / "out" / "jobs" / "job000011" / "job000011.log");
  EXPECT_EQ(log, "cannot start /nonexistent/runapp-nothing: No such file or directory\n");
}

TEST_F(Worker, DropsMalformedMessagesAndKeepsWorking) {
  start_worker();
  auto route = handshake();
  auto bad = job_body(12, {"/bin/true"});
  bad["app"].as_object()["argv"] = "not a list";
  daemon_->send(route, "job", bad);
  auto no_id = job_body(12, {"/bin/true"});
  no_id["job"].as_object().erase("id");
  daemon_->send(route, "job", no_id);
  auto nul = job_body(12, {std::string("/bin/tr\0ue", 10)});
  daemon_->send(route, "job", nul);
  daemon_->send_raw({route, "job", "{not json"});
  daemon_->send_raw({route, "job", "[1,2]"});
  daemon_->send_raw({route, "no-such-command", "{}"});
  daemon_->send_raw({route, "job"});
  daemon_->send(route, "cancel", json::object());
  daemon_->send(route, "job", job_body(13, {"/bin/true"}));
  auto finished = daemon_->expect("finished");
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("job").as_int64(), 13);
  EXPECT_EQ(finished->body.at("rc").as_int64(), 0);
  EXPECT_FALSE(fs::exists(dir_.path / "out" / "jobs" / "job000012"));
}

TEST_F(Worker, KillsTheJobAtItsTimeLimit) {
  start_worker();
  auto route = handshake();
  daemon_->send(route, "job", job_body(14, {"/bin/sleep", "60"}, 1, 0.3));
  auto started = expect_started(14);
  ASSERT_TRUE(started);
  auto finished = daemon_->expect("finished", for_job(14));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("timed_out").as_bool(), true);
  EXPECT_EQ(finished->body.at("signal").as_int64(), SIGTERM);
  fs::path rundir(std::string(started->body.at("rundir").as_string()));
  auto status = json::parse(slurp(rundir / "wrapper-status.json")).as_object();
  EXPECT_EQ(status.at("return_status").as_int64(), 124);
  EXPECT_EQ(status.at("progress").as_string(), "Timeout.");
}

TEST_F(Worker, RunsCloseoutWithTheReturnStatus) {
  start_worker();
  auto route = handshake();
  daemon_->send(route, "job",
                job_body(15, {"/bin/sh", "-c",
                              "printf '#!/bin/sh\\necho \"closeout $1\" > closeout.txt\\n' > descprod-closeout; "
                              "chmod +x descprod-closeout; exit 4"}));
  auto started = expect_started(15);
  ASSERT_TRUE(started);
  auto finished = daemon_->expect("finished", for_job(15));
  ASSERT_TRUE(finished);
  fs::path rundir(std::string(started->body.at("rundir").as_string()));
  EXPECT_EQ(slurp(rundir / "closeout.txt"), "closeout 4\n");
}

TEST_F(Worker, QueuesJobsSentBeyondItsSlots) {
  auto o = options();
  o.slots = 1;
  start_worker(o);
  auto route = handshake();
  auto ready = daemon_->expect("ready");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->body.at("credits").as_int64(), 1);
  daemon_->send(route, "job", job_body(16, wait_for_go_app()));
  daemon_->send(route, "job", job_body(17, wait_for_go_app()));
  auto first = expect_started(16);
  ASSERT_TRUE(first);
  // The second must wait: nothing else is started while the first runs.
  auto early = daemon_->expect("started", for_job(17), 300ms);
  EXPECT_FALSE(early) << "ran more jobs than slots";
  std::ofstream(fs::path(std::string(first->body.at("rundir").as_string())) / "go");
  ASSERT_TRUE(daemon_->expect("finished", for_job(16)));
  auto second = expect_started(17);
  ASSERT_TRUE(second);
  std::ofstream(fs::path(std::string(second->body.at("rundir").as_string())) / "go");
  ASSERT_TRUE(daemon_->expect("finished", for_job(17)));
}

// Prefetch: with 1 slot and prefetch 1 the worker asks for 2 jobs; the second waits in its queue,
// is listed (with the running one) in every heartbeat so the daemon keeps its lease, and a drain
// hands it back unstarted. When the queued job has started, the worker asks for one more.
TEST_F(Worker, PrefetchedJobIsQueuedListedInHeartbeatsAndHandedBackOnDrain) {
  auto o = options();
  o.slots = 1;
  o.prefetch = 1;
  o.drain_grace = 30s;
  start_worker(o);
  auto hello = daemon_->expect("hello");
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->body.at("slots").as_int64(), 1);
  EXPECT_EQ(hello->body.at("prefetch").as_int64(), 1);
  daemon_->send(hello->route, "welcome", welcome_body());
  const auto route = hello->route;
  auto ready = daemon_->expect("ready");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->body.at("credits").as_int64(), 2) << "slots + prefetch";
  daemon_->send(route, "job", job_body(60, wait_for_go_app()));
  daemon_->send(route, "job", job_body(61, wait_for_go_app()));
  auto first = expect_started(60);
  ASSERT_TRUE(first);
  auto holds_both = [](const daemon_msg& m) {
    std::set<long long> held;
    for (const auto& e : m.body.at("running").as_array()) held.insert(e.as_object().at("job").as_int64());
    return held == std::set<long long>{60, 61};
  };
  EXPECT_TRUE(daemon_->expect("heartbeat", holds_both)) << "the queued job is not listed in heartbeats";
  EXPECT_FALSE(daemon_->expect("started", for_job(61), 300ms)) << "ran more jobs than slots";
  // Both credits are in use: no new ready while the queue is full.
  int readies = 0;
  for (const auto& m : daemon_->history) readies += m.command == "ready";
  EXPECT_EQ(readies, 1) << "asked for more than slots + prefetch";

  net::post(ioc_, [this] { worker_->stop(); });
  ASSERT_TRUE(daemon_->expect("drain"));
  auto back = daemon_->expect("handback", for_job(61));
  ASSERT_TRUE(back) << "the prefetched job was not handed back";
  EXPECT_EQ(back->body.at("attempt").as_int64(), 1);
  // The running job finishes within the grace and is reported normally; the queued one never runs.
  std::ofstream(fs::path(std::string(first->body.at("rundir").as_string())) / "go");
  ASSERT_TRUE(daemon_->expect("finished", for_job(60)));
  ASSERT_TRUE(daemon_->expect("bye"));
  EXPECT_EQ(wait_exit(), 0);
  for (const auto& m : daemon_->history) {
    if (m.command == "started" || m.command == "finished") {
      EXPECT_NE(m.body.at("job").as_int64(), 61);
    }
  }
  EXPECT_FALSE(fs::exists(dir_.path / "out" / "jobs" / "job000061")) << "a handed-back job left a run directory";
}

TEST_F(Worker, PrefetchedJobStartsWhenTheSlotFreesAndCanBeCancelledWhileQueued) {
  auto o = options();
  o.slots = 1;
  o.prefetch = 2;
  start_worker(o);
  auto route = handshake();
  auto ready = daemon_->expect("ready");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->body.at("credits").as_int64(), 3);
  daemon_->send(route, "job", job_body(62, wait_for_go_app()));
  daemon_->send(route, "job", job_body(63, wait_for_go_app()));
  daemon_->send(route, "job", job_body(64, wait_for_go_app()));
  auto first = expect_started(62);
  ASSERT_TRUE(first);
  // Cancel the last queued job: it ends as if SIGTERMed before it started, and frees a credit.
  json::object cancel;
  cancel["job"] = 64;
  cancel["attempt"] = 1;
  daemon_->send(route, "cancel", cancel);
  auto cancelled = daemon_->expect("finished", for_job(64));
  ASSERT_TRUE(cancelled);
  EXPECT_EQ(cancelled->body.at("signal").as_int64(), SIGTERM);
  EXPECT_EQ(cancelled->body.at("message").as_string(), "cancelled before it started");
  auto again = daemon_->expect("ready");
  ASSERT_TRUE(again) << "no credit back after cancelling a queued job";
  EXPECT_EQ(again->body.at("credits").as_int64(), 1);
  EXPECT_FALSE(fs::exists(dir_.path / "out" / "jobs" / "job000064"));
  // The slot frees: the queued job starts at once, without waiting for a new job message.
  std::ofstream(fs::path(std::string(first->body.at("rundir").as_string())) / "go");
  ASSERT_TRUE(daemon_->expect("finished", for_job(62)));
  auto second = expect_started(63);
  ASSERT_TRUE(second);
  std::ofstream(fs::path(std::string(second->body.at("rundir").as_string())) / "go");
  ASSERT_TRUE(daemon_->expect("finished", for_job(63)));
  EXPECT_EQ(stop_worker(), 0);
}

TEST_F(Worker, ReconnectsWhenTheDaemonFallsSilentAndResendsFinished) {
  start_worker();
  auto route = handshake(welcome_body(50, 300));
  daemon_->send(route, "job", job_body(18, wait_for_go_app()));
  auto started = expect_started(18);
  ASSERT_TRUE(started);
  // Say nothing: after 300 ms of silence the worker must come back with a new hello that lists
  // the job it still runs.
  auto hello = daemon_->expect("hello", [&](const daemon_msg& m) { return m.route != route; });
  ASSERT_TRUE(hello) << "no reconnect";
  const auto& running = hello->body.at("running").as_array();
  ASSERT_EQ(running.size(), 1u);
  EXPECT_EQ(running[0].as_object().at("job").as_int64(), 18);
  EXPECT_EQ(running[0].as_object().at("attempt").as_int64(), 1);

  // The job ends while no session is welcomed: its finished must come after the next welcome.
  fs::path rundir(std::string(started->body.at("rundir").as_string()));
  std::ofstream(rundir / "go");
  ASSERT_TRUE(eventually([&] { return slurp(rundir / "wrapper-status.json").find("return_status") != std::string::npos; }));
  std::set<std::string> seen;
  for (const auto& h : daemon_->history) seen.insert(h.route);
  auto next_hello = daemon_->expect("hello", [&](const daemon_msg& m) { return !seen.count(m.route); });
  ASSERT_TRUE(next_hello);
  const auto& held = next_hello->body.at("running").as_array();
  ASSERT_EQ(held.size(), 1u) << "a job with an unreported end is still held";
  EXPECT_EQ(held[0].as_object().at("job").as_int64(), 18);
  for (const auto& h : daemon_->history) EXPECT_NE(h.command, "finished");
  daemon_->send(next_hello->route, "welcome", welcome_body());
  auto finished = daemon_->expect("finished", for_job(18));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->route, next_hello->route);
  EXPECT_EQ(finished->body.at("rc").as_int64(), 0);
  EXPECT_EQ(finished->body.at("message").as_string(), "went");
}

TEST_F(Worker, DrainLetsRunningJobsFinishThenSaysBye) {
  auto o = options();
  o.drain_grace = 30s;
  start_worker(o);
  auto route = handshake();
  daemon_->send(route, "job", job_body(19, wait_for_go_app()));
  auto started = expect_started(19);
  ASSERT_TRUE(started);
  net::post(ioc_, [this] { worker_->stop(); });
  ASSERT_TRUE(daemon_->expect("drain"));
  // The job is still running: no bye yet. It finishes within the grace and is reported normally.
  std::ofstream(fs::path(std::string(started->body.at("rundir").as_string())) / "go");
  auto finished = daemon_->expect("finished", for_job(19));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("rc").as_int64(), 0);
  EXPECT_EQ(finished->body.at("signal").as_int64(), 0);
  ASSERT_TRUE(daemon_->expect("bye"));
  EXPECT_EQ(wait_exit(), 0);
}

TEST_F(Worker, DrainHandsBackJobsStillRunningAfterTheGraceAndThoseNeverStarted) {
  auto o = options();
  o.slots = 1;
  o.drain_grace = 200ms;
  start_worker(o);
  auto route = handshake();
  daemon_->send(route, "job", job_body(19, {"/bin/sleep", "60"}));
  ASSERT_TRUE(expect_started(19));
  daemon_->send(route, "job", job_body(20, {"/bin/sleep", "60"}));  // beyond the one slot: queued
  net::post(ioc_, [this] { worker_->stop(); });
  ASSERT_TRUE(daemon_->expect("drain"));
  auto queued_back = daemon_->expect("handback", for_job(20));
  ASSERT_TRUE(queued_back);
  // After the grace the running job is stopped and handed back, never reported as finished.
  auto running_back = daemon_->expect("handback", for_job(19));
  ASSERT_TRUE(running_back);
  EXPECT_EQ(running_back->body.at("attempt").as_int64(), 1);
  ASSERT_TRUE(daemon_->expect("bye"));
  EXPECT_FALSE(daemon_->expect("finished", for_job(19), 300ms));
  EXPECT_EQ(wait_exit(), 0);
}

TEST_F(Worker, JobArrivingDuringADrainIsHandedBackAtOnce) {
  start_worker();
  auto route = handshake();
  daemon_->send(route, "job", job_body(21, wait_for_go_app()));
  auto started = expect_started(21);
  ASSERT_TRUE(started);
  net::post(ioc_, [this] { worker_->stop(); });
  ASSERT_TRUE(daemon_->expect("drain"));
  daemon_->send(route, "job", job_body(22, {"/bin/true"}));
  ASSERT_TRUE(daemon_->expect("handback", for_job(22)));
  std::ofstream(fs::path(std::string(started->body.at("rundir").as_string())) / "go");
  ASSERT_TRUE(daemon_->expect("finished", for_job(21)));
  ASSERT_TRUE(daemon_->expect("bye"));
  EXPECT_EQ(wait_exit(), 0);
}

TEST_F(Worker, ExitsWithCode1WhenTheDaemonRejectsIt) {
  start_worker();
  auto hello = daemon_->expect("hello");
  ASSERT_TRUE(hello);
  json::object reject;
  reject["reason"] = "owner not allowed";
  daemon_->send(hello->route, "reject", reject);
  EXPECT_EQ(wait_exit(), 1);
}

TEST_F(Worker, SaysHelloAgainWhenTheDaemonForgetsIt) {
  start_worker();
  auto route = handshake();
  daemon_->send(route, "job", job_body(20, wait_for_go_app()));
  auto started = expect_started(20);
  ASSERT_TRUE(started);
  // What a restarted daemon answers to a heartbeat from a worker it does not know.
  json::object reject;
  reject["reason"] = "unknown worker: send hello";
  reject["retry"] = true;
  daemon_->send(route, "reject", reject);
  auto hello = daemon_->expect("hello", [&](const daemon_msg& m) { return m.route != route; });
  ASSERT_TRUE(hello);
  ASSERT_EQ(hello->body.at("running").as_array().size(), 1u);
  daemon_->send(hello->route, "welcome", welcome_body());
  std::ofstream(fs::path(std::string(started->body.at("rundir").as_string())) / "go");
  auto finished = daemon_->expect("finished", for_job(20));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->route, hello->route);
}

// --- pure helpers ------------------------------------------------------------------------------

TEST(WorkerFiles, ParsesDoneAndTotalOnlyFromALeadingBracket) {
  using descprod::workers::parse_progress_counts;
  auto c = parse_progress_counts("[3/20] tasks done");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->done, 3);
  EXPECT_EQ(c->total, 20);
  EXPECT_FALSE(parse_progress_counts("3/20 tasks"));
  EXPECT_FALSE(parse_progress_counts("[a/20]"));
  EXPECT_FALSE(parse_progress_counts("[3/]"));
  EXPECT_FALSE(parse_progress_counts("[1234567890123456789/1]"));
}

TEST(WorkerFiles, StatusIsTheLastNonEmptyLineTrimmedAndCapped) {
  temp_dir d;
  auto f = d.path / "current-status.txt";
  EXPECT_EQ(descprod::workers::read_status_line(f), "");
  std::ofstream(f) << "first\n  second line \t\n\n   \n";
  EXPECT_EQ(descprod::workers::read_status_line(f), "second line");
  std::ofstream(f) << std::string(5000, 'x');
  EXPECT_EQ(descprod::workers::read_status_line(f).size(), descprod::workers::max_message_bytes);
}

TEST(WorkerFiles, ProgressLogLineRightAlignsWholeSeconds) {
  EXPECT_EQ(descprod::workers::progress_log_line(12.7, "Running. x"), "      12: Running. x\n");
}

TEST(WorkerFiles, LoginShellWrapsArgvAsPositionalParameters) {
  descprod::workers::job_spec s;
  s.argv = {"runapp-x", "$(id)"};
  s.login_shell = true;
  std::vector<std::string> want = {"bash", "-l", "-c", "exec \"$0\" \"$@\"", "runapp-x", "$(id)"};
  EXPECT_EQ(descprod::workers::command_argv(s), want);
}

// --- the real binary ---------------------------------------------------------------------------

pid_t spawn_binary(const std::vector<std::string>& args, const fs::path& output) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

// Waits for `pid` to exit; its exit code, or -1 (after killing it) at the deadline.
int wait_pid(pid_t pid, std::chrono::milliseconds within = default_wait) {
  int status = 0;
  bool ended = eventually([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, within);
  if (!ended) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

const std::string worker_binary = DESCPROD_BIN_DIR "/descprod-worker";

TEST(WorkerBinary, ExitsWithCode2AndAPreciseMessageOnABadConfig) {
  ASSERT_TRUE(fs::exists(worker_binary)) << "build descprod-worker first";
  temp_dir d;
  std::ofstream(d.path / "bad.yaml") << "worker:\n  slots: 2\n  bogus: 1\n";
  auto out = d.path / "out.txt";
  pid_t pid = spawn_binary({worker_binary, "--config", (d.path / "bad.yaml").string()}, out);
  ASSERT_GT(pid, 0);
  EXPECT_EQ(wait_pid(pid), 2);
  auto text = slurp(out);
  EXPECT_NE(text.find("fatal: " + (d.path / "bad.yaml").string() + ":3:3: worker.bogus: unknown key"),
            std::string::npos)
      << text;
}

TEST(WorkerBinary, SaysByeAndExitsZeroOnSigterm) {
  ASSERT_TRUE(fs::exists(worker_binary)) << "build descprod-worker first";
  temp_dir d;
  std::string endpoint = "ipc://" + (d.path / "w.ipc").string();
  zmq::context_t ctx(1);
  fake_daemon daemon(ctx, endpoint);
  std::ofstream(d.path / "worker.yaml") << "worker:\n  daemon_endpoint: \"" << endpoint << "\"\n"
                                        << "  output_dir: \"" << (d.path / "out").string() << "\"\n";
  pid_t pid = spawn_binary({worker_binary, "--config", (d.path / "worker.yaml").string(), "--slots", "3",
                            "--id", "bin-worker"},
                           d.path / "out.txt");
  ASSERT_GT(pid, 0);
  auto hello = daemon.expect("hello");
  if (!hello) {
    ::kill(pid, SIGKILL);
    wait_pid(pid);
    FAIL() << "no hello: " << slurp(d.path / "out.txt");
  }
  EXPECT_EQ(hello->body.at("worker").as_string(), "bin-worker");
  EXPECT_EQ(hello->body.at("slots").as_int64(), 3);
  daemon.send(hello->route, "welcome", welcome_body());
  auto ready = daemon.expect("ready");
  EXPECT_TRUE(ready);
  ::kill(pid, SIGTERM);
  EXPECT_TRUE(daemon.expect("bye"));
  EXPECT_EQ(wait_pid(pid), 0) << slurp(d.path / "out.txt");
}

}  // namespace
