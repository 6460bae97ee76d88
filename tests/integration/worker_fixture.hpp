// What the worker's integration tests (worker_test, worker_queue_test, worker_files_test) share:
// the worker library on its own io_context thread and real child processes, with the test playing
// the daemon with a plain ROUTER socket on ipc:// in a fresh temp dir (fake_daemon), and the Worker
// fixture around them. Every wait polls with a deadline; processes the worker started are killed by
// PID in TearDown as a safety net.
#pragma once

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

inline std::string slurp(const fs::path& p) {
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
inline bool eventually(const std::function<bool()>& cond, std::chrono::milliseconds within = default_wait) {
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
      sock_.send(zmq::buffer(frames[i]),
                 i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }

  std::vector<daemon_msg> history;

 private:
  zmq::socket_t sock_;
};

inline json::object welcome_body(long long heartbeat_ms = 100, long long lease_timeout_ms = 60000) {
  json::object o;
  o["protocol"] = 1;
  o["heartbeat_ms"] = heartbeat_ms;
  o["lease_timeout_ms"] = lease_timeout_ms;
  return o;
}

inline json::object job_body(long long id, const std::vector<std::string>& argv, int attempt = 1,
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

inline json::object job_ref(long long id, int attempt) {
  json::object o;
  o["job"] = id;
  o["attempt"] = attempt;
  return o;
}

inline std::function<bool(const daemon_msg&)> for_job(long long id) {
  return [id](const daemon_msg& m) { return m.body.contains("job") && m.body.at("job").as_int64() == id; };
}

// An app that waits until the file `go` appears in its run directory, then exits 0.
inline std::vector<std::string> wait_for_go_app() {
  return {"/bin/sh", "-c", "while [ ! -e go ]; do sleep 0.02; done; echo went > current-status.txt"};
}

class Worker : public ::testing::Test {
 protected:
  void SetUp() override {
    // The jobs' login shells read an empty profile, not the machine's (tests/support/service.cpp
    // says why); restored in TearDown.
    if (const char* h = std::getenv("HOME")) old_home_ = h;
    fs::create_directories(dir_.path / "home");
    ::setenv("HOME", (dir_.path / "home").c_str(), 1);
    endpoint_ = "ipc://" + (dir_.path / "w.ipc").string();
    daemon_ = std::make_unique<fake_daemon>(ctx_, endpoint_);
  }

  void TearDown() override {
    stop_worker();
    for (pid_t pid : pids_) ::kill(-pid, SIGKILL);  // safety net; normally long gone
    if (old_home_) ::setenv("HOME", old_home_->c_str(), 1);
    else ::unsetenv("HOME");
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
  std::optional<std::string> old_home_;
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

}  // namespace
