// A whole DESCprod service on this machine for end-to-end tests: a real redis-server, the real
// descprod-daemon, descprod-gateway and N descprod-worker binaries, configured in a temporary
// directory, with users alice and bob and their API tokens, and the administrator ops. Processes
// are started and stopped by PID; on a failed test the tails of their logs are printed. Every test
// above the integration layer that needs a running service uses this one fixture.
//
// The workers hand applications the gateway's real URL (DESCPROD_URL, worker.gateway_url) and no
// user token from the test's environment: an application reaches the service with its job token.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/support.hpp"

namespace descprod::test {

struct service_options {
  int workers = 1;
  int slots = 2;
  bool redis_appendonly = false;
  // Extra entries of the `apps:` list (YAML lines, each starting "  - name: ..."). The apps
  // mysleep (the real apps/runapp-mysleep), marker (appends "$DESCPROD_ATTEMPT" to
  // <markers>/m<id>) and fail (exits 3 with status "it broke") are always there; "{markers}" in
  // these lines becomes the markers directory, "{dir}" the service's directory (dir.path()).
  std::string apps;
  int heartbeat_ms = 200;
  int lease_timeout_ms = 3000;
  int reconcile_ms = 5000;
  std::string worker_extra;   // more YAML lines for the worker section ("  key: value\n")
  std::string gateway_extra;  // more YAML lines for the gateway section
  std::string daemon_extra;   // more YAML lines for the daemon section
  // The redis-server's ACL setup (extra_args, and the user the fixture itself connects as) and
  // more YAML lines for the redis section (e.g. "  username: descprod\n  password: secret\n").
  redis_server_options redis_options;
  std::string redis_extra;
  // When set: called once the fixture's Redis is up, before any component starts; returns the
  // lines that name Redis in the config's redis section instead of its unix socket ("  path:
  // ..."), e.g. the sentinels of a sentinel_cluster built around that Redis (tests/ha).
  std::function<std::string(redis_server&)> redis_section;
  // The constructor returns once /readyz answers 200 (the daemon has welcomed the gateway).
  bool wait_ready = false;
};

class service {
 public:
  explicit service(service_options opts = {});
  ~service();
  service(const service&) = delete;
  service& operator=(const service&) = delete;

  // The programs, restartable (a restart replaces the process object).
  void start_daemon();
  void start_gateway();  // waits for its port file; updates port()
  // Starts worker i (id "w<i>" unless given) with the fixture's worker token, or the token in
  // `token_file` when given.
  void start_worker(int i, const std::string& id = "", const std::string& token_file = "");
  // Starts one more worker (index workers.size(), id "w<index>"), with `slots` slots instead of
  // the configured ones when given and more arguments (e.g. {"--site", "nersc"}); returns its index.
  int add_worker(int slots = 0, const std::vector<std::string>& args = {});
  static void kill9(std::unique_ptr<process>& p);

  int port() const { return port_.load(); }  // changes when the gateway restarts
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port()); }
  std::string bin(const std::string& name) const;
  // The daemon's command line with `config` (in a session of its own: service.cpp says why).
  std::vector<std::string> daemon_argv(const std::string& config) const;
  std::vector<std::pair<std::string, std::string>> env() const;  // PATH with apps/ and build/bin

  // HTTP with a bearer token (alice's unless given).
  http_response call(const std::string& method, const std::string& target, const std::string& body = "",
                     const std::string& token = "");
  // GET /readyz (no credentials).
  http_response readyz();
  // Whether the gateway knows an API route: anything but its 404 "no such API route" (a POST
  // carries "{}").
  bool has_route(const std::string& method, const std::string& target);
  // The job as the API shows it (empty when not 200), and its state.
  boost::json::object job(long long id, const std::string& token = "");
  std::string state(long long id, const std::string& token = "");
  static bool terminal(const std::string& state);
  // Waits until the job is in a terminal state (false at the deadline).
  bool wait_terminal(long long id, std::chrono::milliseconds timeout = 60s, const std::string& token = "");
  // POST /api/jobs; returns the id (or -1, recording a test failure).
  long long submit(const std::string& body, const std::string& token = "");
  // POST /api/jobs/<id>/claim for `host` (the claim of descprod-start-job); returns the answer's
  // body (empty, recording a test failure, when it is not 200).
  boost::json::object claim(long long id, const std::string& host = "cli.example.org",
                            const std::string& token = "");
  // Marker lines (runs) the `marker` app left for a job.
  std::string marker(long long id) const;
  // An API token of the administrator ops (issued at the first call).
  const std::string& admin_token();
  // Runs the real descprod-admin with the service's config; returns its stdout+stderr, recording
  // a test failure unless it exits with `want_rc`.
  std::string run_admin(const std::vector<std::string>& args, int want_rc = 0);

  service_options opts;
  temp_dir dir;
  redis_server redis;
  std::string out_dir, markers, config_file;
  std::unique_ptr<process> daemon, gateway;
  std::vector<std::unique_ptr<process>> workers;
  std::string alice_token, bob_token;
  // The workers' token: owned by the admin "ops", admitted to every user's jobs (pool "*").
  std::string worker_token_file;

 private:
  std::atomic<int> port_{0};
  std::string admin_token_;
  int admin_runs_ = 0;
};

}  // namespace descprod::test
