// The end-to-end service fixture (see service.hpp).
#include "tests/support/service.hpp"

#include <filesystem>
#include <iostream>

#include <signal.h>

#include "core/accounts.hpp"

namespace descprod::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {
redis_server_options with_appendonly(redis_server_options r, bool appendonly) {
  r.appendonly = r.appendonly || appendonly;
  return r;
}
}  // namespace

service::service(service_options o)
    : opts(std::move(o)), redis(with_appendonly(opts.redis_options, opts.redis_appendonly)) {
  out_dir = dir.file("out");
  markers = dir.file("markers");
  config_file = dir.file("descprod.yaml");
  fs::create_directories(out_dir);
  fs::create_directories(markers);
  std::string extra_apps = opts.apps;
  for (const auto& [name, value] :
       {std::pair<std::string, std::string>{"{markers}", markers}, {"{dir}", dir.path()}})
    for (auto pos = extra_apps.find(name); pos != std::string::npos;
         pos = extra_apps.find(name, pos + value.size()))
      extra_apps.replace(pos, name.size(), value);
  write_file(
      dir.file("apps.yaml"),
      "apps:\n"
      "  - name: mysleep\n"
      "    pattern: \"^[0-9]{1,6}$\"\n"
      "  - name: marker\n"
      "    command: [\"/bin/sh\", \"-c\", \"echo \\\"$DESCPROD_ATTEMPT\\\" >> \\\"$0/m$DESCPROD_JOB_ID\\\"\", \"" +
          markers +
          "\"]\n"
          "    args: []\n"
          "  - name: fail\n"
          "    command: [\"/bin/sh\", \"-c\", \"echo 'it broke' > current-status.txt; exit 3\"]\n"
          "    args: []\n" +
          extra_apps);
  {
    redis_sync r(redis.endpoint());
    add_user(r, "descprod:", "alice", false);
    add_user(r, "descprod:", "bob", false);
    add_user(r, "descprod:", "ops", true);
    alice_token = issue_token(r, "descprod:", "alice");
    bob_token = issue_token(r, "descprod:", "bob");
    worker_token_file = dir.file("worker-token");
    write_file(worker_token_file, issue_worker_token(r, "descprod:", "ops", {"*"}, "fixture") + "\n");
  }
  write_file(config_file,
             "log_level: info\n"
             "apps: " +
                 dir.file("apps.yaml") +
                 "\n"
                 "redis:\n" +
                 (opts.redis_section ? opts.redis_section(redis) : "  path: " + redis.socket_path() + "\n") +
                 opts.redis_extra + "gateway:\n  port: 0\n  daemon_endpoint: ipc://" + dir.file("gw.ipc") +
                 "\n" + opts.gateway_extra + "daemon:\n  worker_endpoint: ipc://" + dir.file("w.ipc") +
                 "\n"
                 "  gateway_endpoint: ipc://" +
                 dir.file("gw.ipc") +
                 "\n"
                 "  heartbeat_interval_ms: " +
                 std::to_string(opts.heartbeat_ms) +
                 "\n"
                 "  lease_timeout_ms: " +
                 std::to_string(opts.lease_timeout_ms) +
                 "\n"
                 "  reconcile_interval_ms: " +
                 std::to_string(opts.reconcile_ms) + "\n" + opts.daemon_extra +
                 "worker:\n  daemon_endpoint: ipc://" + dir.file("w.ipc") +
                 "\n"
                 "  token_file: " +
                 worker_token_file +
                 "\n"
                 "  output_dir: " +
                 out_dir + "\n  status_poll_ms: 100\n  slots: " + std::to_string(opts.slots) + "\n" +
                 opts.worker_extra);
  start_daemon();
  start_gateway();
  for (int i = 0; i < opts.workers; ++i) start_worker(i);
  if (opts.wait_ready && !wait_until([&] { return readyz().status == 200; }, 20s))
    throw std::runtime_error("the gateway did not become ready: " + readyz().body);
}

service::~service() {
  // Workers first (they report what they ran), then gateway and daemon; Redis last (its own
  // destructor). A worker left stopped by a test is continued so it can exit.
  for (auto& w : workers)
    if (w) {
      w->signal(SIGCONT);
      w->stop(10s);
    }
  if (gateway) gateway->stop();
  if (daemon) daemon->stop();
  if (::testing::Test::HasFailure()) {
    for (const auto& entry : fs::directory_iterator(dir.path())) {
      if (entry.path().extension() != ".log") continue;
      auto s = read_file(entry.path().string());
      std::cerr << "---- " << entry.path().filename().string() << " (tail)\n"
                << (s.size() > 4000 ? s.substr(s.size() - 4000) : s) << "\n";
    }
  }
}

std::string service::bin(const std::string& name) const { return std::string(DESCPROD_BIN_DIR) + "/" + name; }

std::vector<std::pair<std::string, std::string>> service::env() const {
  return {
      {"PATH", std::string(DESCPROD_SOURCE_DIR) + "/apps:" + DESCPROD_BIN_DIR + ":" + std::getenv("PATH")}};
}

void service::start_daemon() {
  daemon = std::make_unique<process>(daemon_argv(config_file), env(), dir.file("daemon.log"));
}

std::vector<std::string> service::daemon_argv(const std::string& config) const {
  // In a session of its own, as under systemd: a test that stops it (SIGSTOP) must not have the
  // kernel hang it up when the test's own process group is orphaned (a backgrounded shell that
  // started the tests exits: POSIX sends SIGHUP to an orphaned group with a stopped member).
  // setsid(1) execs in place (the spawned child leads no group), so the PID is the daemon's.
  return {"setsid", bin("descprod-daemon"), "--config", config};
}

void service::start_gateway() {
  auto port_file = dir.file("gateway.port");
  fs::remove(port_file);
  gateway = std::make_unique<process>(
      std::vector<std::string>{bin("descprod-gateway"), "--config", config_file, "--port-file", port_file},
      env(), dir.file("gateway.log"));
  if (!wait_until([&] { return fs::exists(port_file) && fs::file_size(port_file) > 0; }, 20s))
    throw std::runtime_error("the gateway did not write its port: " + read_file(dir.file("gateway.log")));
  port_ = std::stoi(read_file(port_file));
}

namespace {

// Starts worker `i`: the service's config (as the file is now: a test may have rewritten it) with
// the gateway's current URL for the applications, and an environment without a user token.
std::unique_ptr<process> spawn_worker(service& s, int i, const std::string& id, const std::string& token_file,
                                      int slots, const std::vector<std::string>& extra = {}) {
  std::string wid = id.empty() ? "w" + std::to_string(i) : id;
  auto config = s.dir.file("worker-" + wid + ".yaml");
  // gateway_url goes into the worker section itself: sections after it (a test's pilots:) must
  // not receive it.
  std::string text = read_file(s.config_file);
  const std::string line = "  gateway_url: " + s.url() + "\n";
  auto at = text.find("\nworker:\n");
  if (at == std::string::npos) text += "worker:\n" + line;
  else text.insert(at + std::string("\nworker:\n").size(), line);
  write_file(config, text);
  std::vector<std::string> argv{s.bin("descprod-worker"), "--config", config, "--id", wid};
  if (!token_file.empty()) {
    argv.push_back("--token-file");
    argv.push_back(token_file);
  }
  if (slots > 0) {
    argv.push_back("--slots");
    argv.push_back(std::to_string(slots));
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto env = s.env();
  env.emplace_back("DESCPROD_TOKEN", "");
  // The jobs' login shells (runapp-* apps) read this HOME's profile, which is empty, not the
  // machine's: a user profile that stalls (pyenv's rehash waits 60 s on a lock that a job killed
  // mid-profile left behind) would otherwise slow every later job of the suite.
  const std::string home = s.dir.file("home");
  std::filesystem::create_directories(home);
  env.emplace_back("HOME", home);
  return std::make_unique<process>(argv, env, s.dir.file("worker-" + wid + ".log"));
}

}  // namespace

void service::start_worker(int i, const std::string& id, const std::string& token_file) {
  if (workers.size() <= static_cast<std::size_t>(i)) workers.resize(i + 1);
  workers[i] = spawn_worker(*this, i, id, token_file, 0);
}

int service::add_worker(int slots, const std::vector<std::string>& args) {
  int i = static_cast<int>(workers.size());
  workers.push_back(spawn_worker(*this, i, "", "", slots, args));
  return i;
}

void service::kill9(std::unique_ptr<process>& p) {
  p->signal(SIGKILL);
  p->wait_exit(10s);
}

http_response service::call(const std::string& method, const std::string& target, const std::string& body,
                            const std::string& token) {
  http_headers h;
  h.emplace_back("Authorization", "Bearer " + (token.empty() ? alice_token : token));
  return http_request("127.0.0.1", port_, method, target, body, h);
}

http_response service::readyz() { return http_request("127.0.0.1", port_, "GET", "/readyz"); }

bool service::has_route(const std::string& method, const std::string& target) {
  auto r = call(method, target, method == "POST" ? "{}" : "");
  return !(r.status == 404 && r.body.find("no such API route") != std::string::npos);
}

boost::json::object service::job(long long id, const std::string& token) {
  auto r = call("GET", "/api/jobs/" + std::to_string(id), "", token);
  if (r.status != 200) return {};
  return r.json().as_object();
}

std::string service::state(long long id, const std::string& token) {
  auto j = job(id, token);
  auto it = j.find("state");
  return it == j.end() ? "" : std::string(it->value().as_string());
}

bool service::terminal(const std::string& s) {
  return s == "done" || s == "failed" || s == "timeout" || s == "killed" || s == "cancelled" || s == "lost";
}

bool service::wait_terminal(long long id, std::chrono::milliseconds timeout, const std::string& token) {
  return wait_until([&] { return terminal(state(id, token)); }, timeout, 50ms);
}

long long service::submit(const std::string& body, const std::string& token) {
  auto r = call("POST", "/api/jobs", body, token);
  EXPECT_EQ(r.status, 201) << r.body;
  if (r.status != 201) return -1;
  return r.json().as_object().at("id").as_int64();
}

boost::json::object service::claim(long long id, const std::string& host, const std::string& token) {
  auto r = call("POST", "/api/jobs/" + std::to_string(id) + "/claim", R"({"host":")" + host + "\"}", token);
  EXPECT_EQ(r.status, 200) << r.body;
  if (r.status != 200) return {};
  return r.json().as_object();
}

std::string service::run_admin(const std::vector<std::string>& args, int want_rc) {
  std::vector<std::string> argv{bin("descprod-admin"), "--config", config_file};
  argv.insert(argv.end(), args.begin(), args.end());
  auto out = dir.file("admin-" + std::to_string(++admin_runs_) + ".out");
  process p(argv, env(), out);
  auto rc = p.wait_exit(20s);
  auto text = read_file(out);
  EXPECT_EQ(rc, want_rc) << "descprod-admin " << (args.empty() ? "" : args[0]) << ": " << text;
  return text;
}

const std::string& service::admin_token() {
  if (admin_token_.empty()) {
    redis_sync r(redis.endpoint());
    admin_token_ = issue_token(r, "descprod:", "ops");
  }
  return admin_token_;
}

std::string service::marker(long long id) const {
  auto f = markers + "/m" + std::to_string(id);
  return fs::exists(f) ? read_file(f) : std::string();
}

}  // namespace descprod::test
