// End-to-end tests of the gateway's job-management API: cancel, archive/unarchive, delete, log
// tail, children roll-up, job tokens, claim and the claimed job's reports, Server-Sent Events and
// /readyz. The real descprod-daemon, descprod-gateway and (when a test needs one)
// descprod-worker binaries run against a real redis-server; the tests drive them over HTTP.
//
// The SSE latency figure is printed, never asserted on (docs/building.md#tests: no timed tests).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <latch>
#include <mutex>
#include <set>
#include <thread>

#include "core/accounts.hpp"
#include "core/crypto.hpp"
#include "core/redis.hpp"
#include "core/store.hpp"
#include "tests/support/support.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

// Redis, daemon, gateway and `workers` workers (more with start_worker), with users alice, bob
// and the admin root.
class service {
 public:
  explicit service(int workers = 0) {
    out_dir = dir.file("out");
    markers = dir.file("markers");
    fs::create_directories(out_dir);
    fs::create_directories(markers);
    write_file(dir.file("apps.yaml"),
               "apps:\n"
               "  - name: mysleep\n"
               "    pattern: \"^[0-9]{1,6}$\"\n"
               "  - name: marker\n"
               "    command: [\"/bin/sh\", \"-c\", \"echo \\\"$DESCPROD_ATTEMPT\\\" >> \\\"$0/m$DESCPROD_JOB_ID\\\"\", \"" +
                   markers + "\"]\n"
               "    args: []\n");
    write_file(dir.file("descprod.yaml"),
               "log_level: info\n"
               "apps: " + dir.file("apps.yaml") + "\n"
               "redis:\n  path: " + redis.socket_path() + "\n"
               "gateway:\n  port: 0\n  daemon_endpoint: ipc://" + dir.file("gw.ipc") + "\n"
               "daemon:\n  worker_endpoint: ipc://" + dir.file("w.ipc") + "\n"
               "  gateway_endpoint: ipc://" + dir.file("gw.ipc") + "\n"
               "  heartbeat_interval_ms: 200\n  lease_timeout_ms: 3000\n"
               "  worker_auth: open\n"  // worker tokens: auth_test.cpp
               "worker:\n  daemon_endpoint: ipc://" + dir.file("w.ipc") + "\n"
               "  output_dir: " + out_dir + "\n  status_poll_ms: 100\n");
    std::string path = std::string(DESCPROD_SOURCE_DIR) + "/apps:" + std::getenv("PATH");
    env = {{"PATH", path}};
    start_daemon();
    gateway = std::make_unique<process>(
        std::vector<std::string>{bin() + "/descprod-gateway", "--config", dir.file("descprod.yaml"),
                                 "--port-file", dir.file("gateway.port")},
        env, dir.file("gateway.log"));
    for (int i = 0; i < workers; ++i) start_worker();
    if (!wait_until([&] { return fs::exists(dir.file("gateway.port")) && fs::file_size(dir.file("gateway.port")) > 0; }, 20s))
      throw std::runtime_error("gateway did not write its port: " + read_file(dir.file("gateway.log")));
    port = std::stoi(read_file(dir.file("gateway.port")));
    redis_sync r(redis.endpoint());
    add_user(r, "descprod:", "alice", false);
    add_user(r, "descprod:", "bob", false);
    add_user(r, "descprod:", "root", true);
    alice_token = issue_token(r, "descprod:", "alice");
    bob_token = issue_token(r, "descprod:", "bob");
    root_token = issue_token(r, "descprod:", "root");
    if (!wait_until([&] { return readyz().status == 200; }, 20s))
      throw std::runtime_error("gateway not ready: " + readyz().body);
  }
  ~service() {
    for (auto& w : worker_procs) w->stop(10s);
    if (gateway) gateway->stop();
    if (daemon) daemon->stop();
    if (::testing::Test::HasFailure()) {
      for (const char* f : {"daemon.log", "gateway.log", "worker0.log"})
        if (fs::exists(dir.file(f)))
          std::cerr << "---- " << f << " (tail)\n" << tail(read_file(dir.file(f))) << "\n";
    }
  }
  static std::string bin() { return DESCPROD_BIN_DIR; }
  static std::string tail(const std::string& s) { return s.size() > 4000 ? s.substr(s.size() - 4000) : s; }

  void start_daemon() {
    daemon = std::make_unique<process>(
        std::vector<std::string>{bin() + "/descprod-daemon", "--config", dir.file("descprod.yaml")}, env,
        dir.file("daemon.log"));
  }
  void start_worker() {
    auto i = std::to_string(worker_procs.size());
    worker_procs.push_back(std::make_unique<process>(
        std::vector<std::string>{bin() + "/descprod-worker", "--config", dir.file("descprod.yaml"), "--id",
                                 "w" + i, "--slots", "2"},
        env, dir.file("worker" + i + ".log")));
  }

  http_response readyz() { return http_request("127.0.0.1", port, "GET", "/readyz"); }
  http_response call(const std::string& method, const std::string& target, const std::string& body = "",
                     const std::string& token = "") {
    http_headers h;
    h.emplace_back("Authorization", "Bearer " + (token.empty() ? alice_token : token));
    return http_request("127.0.0.1", port, method, target, body, h);
  }
  json::object job(long long id, const std::string& token = "") {
    auto r = call("GET", "/api/jobs/" + std::to_string(id), "", token);
    if (r.status != 200) return {};
    return r.json().as_object();
  }
  std::string state(long long id) {
    auto j = job(id);
    auto it = j.find("state");
    return it == j.end() ? "" : std::string(it->value().as_string());
  }
  long long submit(const std::string& body, const std::string& token = "") {
    auto r = call("POST", "/api/jobs", body, token);
    EXPECT_EQ(r.status, 201) << r.body;
    if (r.status != 201) return -1;
    return r.json().as_object().at("id").as_int64();
  }
  // Claims a job for `host` and returns the answer's body.
  json::object claim(long long id, const std::string& host = "cli.example.org") {
    auto r = call("POST", "/api/jobs/" + std::to_string(id) + "/claim", R"({"host":")" + host + "\"}");
    EXPECT_EQ(r.status, 200) << r.body;
    if (r.status != 200) return {};
    return r.json().as_object();
  }

  temp_dir dir;
  redis_server redis;
  std::string out_dir, markers;
  std::vector<std::pair<std::string, std::string>> env;
  std::unique_ptr<process> daemon, gateway;
  std::vector<std::unique_ptr<process>> worker_procs;
  int port = 0;
  std::string alice_token, bob_token, root_token;
};

std::string str(const json::object& o, const char* k) {
  auto it = o.find(k);
  return it == o.end() || !it->value().is_string() ? "" : std::string(it->value().as_string());
}
long long num(const json::object& o, const char* k) {
  auto it = o.find(k);
  return it == o.end() || !it->value().is_int64() ? -1 : it->value().as_int64();
}
std::string path_of(long long id, const std::string& sub = "") { return "/api/jobs/" + std::to_string(id) + sub; }

// A raw SSE client (what `curl -N` does): one GET on a plain socket, a reader thread that splits
// the body into events and time-stamps each one when it is read.
class sse_client {
 public:
  struct event {
    std::string id, type, data;
    json::object json;
    steady::time_point at;
  };

  sse_client(int port, const std::string& target, const std::string& token,
             const std::string& last_event_id = "") {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) throw std::runtime_error("socket failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      throw std::runtime_error("connect failed");
    }
    std::string req = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n" +
                      "Authorization: Bearer " + token + "\r\n";
    if (!last_event_id.empty()) req += "Last-Event-ID: " + last_event_id + "\r\n";
    req += "\r\n";
    if (::send(fd_, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size()))
      throw std::runtime_error("send failed");
    reader_ = std::thread([this] { read_loop(); });
  }
  ~sse_client() {
    ::shutdown(fd_, SHUT_RDWR);
    reader_.join();
    ::close(fd_);
  }

  // Waits (deadline) for the response header; returns the status, 0 if none came.
  int status(std::chrono::milliseconds deadline = 10s) {
    wait_until([&] { return header_done(); }, deadline);
    std::lock_guard lock(mu_);
    return status_;
  }
  std::string header() {
    std::lock_guard lock(mu_);
    return header_;
  }
  std::string raw_body_start() {
    std::lock_guard lock(mu_);
    return body_start_;
  }
  std::vector<event> events() {
    std::lock_guard lock(mu_);
    return events_;
  }
  bool closed() {
    std::lock_guard lock(mu_);
    return closed_;
  }
  // Waits until an event satisfies `pred`; returns it.
  std::optional<event> wait_for(const std::function<bool(const event&)>& pred,
                                std::chrono::milliseconds deadline = 10s, std::size_t from = 0) {
    std::optional<event> found;
    wait_until(
        [&] {
          std::lock_guard lock(mu_);
          for (std::size_t i = from; i < events_.size(); ++i)
            if (pred(events_[i])) {
              found = events_[i];
              return true;
            }
          return false;
        },
        deadline, 1ms);
    return found;
  }

 private:
  bool header_done() {
    std::lock_guard lock(mu_);
    return header_seen_ || closed_;
  }
  void read_loop() {
    std::string buf;
    char chunk[8192];
    bool in_body = false;
    while (true) {
      auto n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) break;
      auto now = steady::now();
      buf.append(chunk, static_cast<std::size_t>(n));
      if (!in_body) {
        auto end = buf.find("\r\n\r\n");
        if (end == std::string::npos) continue;
        std::lock_guard lock(mu_);
        header_ = buf.substr(0, end);
        status_ = std::stoi(header_.substr(9, 3));
        header_seen_ = true;
        buf.erase(0, end + 4);
        in_body = true;
        body_start_ = buf.substr(0, 64);
      } else if (body_start_.size() < 64) {
        std::lock_guard lock(mu_);
        body_start_ += buf.substr(0, 64 - body_start_.size());
      }
      std::size_t pos;
      while ((pos = buf.find("\n\n")) != std::string::npos) {
        std::string block = buf.substr(0, pos);
        buf.erase(0, pos + 2);
        event e;
        e.at = now;
        std::size_t start = 0;
        while (start <= block.size()) {
          auto nl = block.find('\n', start);
          std::string line = block.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
          if (line.rfind("id: ", 0) == 0) e.id = line.substr(4);
          else if (line.rfind("event: ", 0) == 0) e.type = line.substr(7);
          else if (line.rfind("data: ", 0) == 0) e.data = line.substr(6);
          if (nl == std::string::npos) break;
          start = nl + 1;
        }
        if (e.data.empty()) continue;  // retry line, keepalive comment
        try {
          e.json = json::parse(e.data).as_object();
        } catch (...) {
        }
        std::lock_guard lock(mu_);
        events_.push_back(std::move(e));
      }
    }
    std::lock_guard lock(mu_);
    closed_ = true;
  }

  int fd_ = -1;
  std::thread reader_;
  std::mutex mu_;
  bool header_seen_ = false, closed_ = false;
  int status_ = 0;
  std::string header_, body_start_;
  std::vector<event> events_;
};

std::string ev_state(const sse_client::event& e) { return str(e.json, "state"); }

// ---- cancel -------------------------------------------------------------------------------------

TEST(Api, CancelOfAReadyJobAnswers200AndItNeverRunsAndCancelOfADoneJobIsConflict) {
  service s(0);
  long long id = s.submit(R"({"jobtype":"marker","config":"c1"})");
  ASSERT_GT(id, 0);
  EXPECT_EQ(s.call("POST", path_of(id, "/cancel"), "", s.bob_token).status, 404);  // not bob's
  auto r = s.call("POST", path_of(id, "/cancel"));
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = r.json().as_object();
  EXPECT_EQ(str(j, "state"), "cancelled");
  EXPECT_EQ(str(j, "progress").rfind("Cancelled.", 0), 0u) << str(j, "progress");
  EXPECT_EQ(num(j, "cancel_requested"), 1);

  // A worker arrives; another job runs to done, the cancelled one never runs.
  s.start_worker();
  long long other = s.submit(R"({"jobtype":"marker","config":"c2"})");
  ASSERT_TRUE(wait_until([&] { return s.state(other) == "done"; }, 30s)) << s.state(other);
  EXPECT_EQ(s.state(id), "cancelled");
  EXPECT_FALSE(fs::exists(s.markers + "/m" + std::to_string(id)));
  EXPECT_TRUE(fs::exists(s.markers + "/m" + std::to_string(other)));

  auto again = s.call("POST", path_of(other, "/cancel"));
  EXPECT_EQ(again.status, 409) << again.body;
  EXPECT_EQ(again.body, R"({"error":"conflict","detail":"job )" + std::to_string(other) +
                            R"( is already done; only ready, dispatched or running jobs can be cancelled"})" "\n");
  EXPECT_EQ(s.call("POST", path_of(9999, "/cancel")).status, 404);
}

TEST(Api, CancelOfARunningJobAnswers202AndTheJobEndsCancelled) {
  service s(1);
  long long id = s.submit(R"({"jobtype":"mysleep","config":"30"})");
  ASSERT_TRUE(wait_until([&] { return s.state(id) == "running"; }, 30s)) << s.state(id);
  auto r = s.call("POST", path_of(id, "/cancel"));
  ASSERT_EQ(r.status, 202) << r.body;
  auto j = r.json().as_object();
  EXPECT_EQ(num(j, "cancel_requested"), 1);
  EXPECT_EQ(str(j, "state"), "running");
  ASSERT_TRUE(wait_until([&] { return s.state(id) == "cancelled"; }, 20s)) << s.state(id);
  auto done = s.job(id);
  EXPECT_EQ(str(done, "progress").rfind("Cancelled.", 0), 0u) << str(done, "progress");
  // A report through the gateway for a job a daemon worker runs is refused.
  auto rep = s.call("POST", path_of(id, "/progress"), R"({"attempt":1,"message":"x"})");
  EXPECT_EQ(rep.status, 409) << rep.body;
}

// ---- archive, delete, log -----------------------------------------------------------------------

TEST(Api, ArchiveUnarchiveAndDeleteOnlyWhenTerminal) {
  service s(0);
  long long parent = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1","parent":)" + std::to_string(parent) + "}");
  ASSERT_GT(id, 0);

  auto a = s.call("POST", path_of(id, "/archive"));
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(num(a.json().as_object(), "archive"), 1);
  EXPECT_EQ(s.call("POST", path_of(id, "/archive"), "", s.bob_token).status, 404);
  auto listed = s.call("GET", "/api/jobs?archived=1");
  ASSERT_EQ(listed.status, 200) << listed.body;
  EXPECT_EQ(num(listed.json().as_object(), "total"), 1);
  auto u = s.call("POST", path_of(id, "/unarchive"));
  ASSERT_EQ(u.status, 200) << u.body;
  EXPECT_EQ(num(u.json().as_object(), "archive"), 0);
  auto ev = s.call("GET", path_of(id, "/events"));
  EXPECT_NE(ev.body.find(R"("type":"archive")"), std::string::npos) << ev.body;
  EXPECT_NE(ev.body.find(R"("type":"unarchive")"), std::string::npos) << ev.body;

  // Running (claimed and started): delete refused.
  auto c = s.claim(id);
  std::string token(c.at("token").as_string());
  ASSERT_EQ(s.call("POST", path_of(id, "/started"), R"({"attempt":1,"pid":4242})", token).status, 200);
  auto d = s.call("DELETE", path_of(id));
  EXPECT_EQ(d.status, 409) << d.body;
  EXPECT_EQ(d.json().as_object().at("detail").as_string(), "job " + std::to_string(id) + " is running; cancel it first");
  ASSERT_EQ(s.call("POST", path_of(id, "/finished"), R"({"attempt":1,"rc":0})", token).status, 200);
  EXPECT_EQ(s.call("DELETE", path_of(id), "", s.bob_token).status, 404);
  // A job token may not delete; and once its job has finished it is revoked altogether (issue 13).
  EXPECT_EQ(s.call("DELETE", path_of(id), "", token).status, 401);

  auto del = s.call("DELETE", path_of(id));
  EXPECT_EQ(del.status, 204) << del.body;
  EXPECT_EQ(del.body, "");
  EXPECT_EQ(s.call("GET", path_of(id)).status, 404);
  EXPECT_EQ(s.call("DELETE", path_of(id)).status, 404);
  redis_sync r(s.redis.endpoint());
  std::string key = "descprod:job:" + std::to_string(id);
  EXPECT_EQ(r.exec({"EXISTS", key, key + ":events", key + ":log", key + ":children"}).integer, 0);
  EXPECT_TRUE(r.exec({"ZSCORE", "descprod:user:alice:jobs", std::to_string(id)}).is_nil());
  EXPECT_EQ(r.exec({"SISMEMBER", "descprod:job:" + std::to_string(parent) + ":children", std::to_string(id)}).integer, 0);
  EXPECT_EQ(s.job(parent).count("children"), 0u);  // no children left: no roll-up
}

TEST(Api, LogTailIsNewestLastAndLimitedByLines) {
  service s(0);
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  auto empty = s.call("GET", path_of(id, "/log"));
  ASSERT_EQ(empty.status, 200) << empty.body;
  EXPECT_EQ(empty.body, "{\"lines\":[]}\n");
  redis_sync r(s.redis.endpoint());
  for (int i = 1; i <= 5; ++i)
    r.exec({"XADD", "descprod:job:" + std::to_string(id) + ":log", "*", "line", "line " + std::to_string(i)});
  auto all = s.call("GET", path_of(id, "/log"));
  ASSERT_EQ(all.status, 200);
  EXPECT_EQ(all.body, R"({"lines":["line 1","line 2","line 3","line 4","line 5"]})" "\n");
  auto last = s.call("GET", path_of(id, "/log?lines=2"));
  EXPECT_EQ(last.body, R"({"lines":["line 4","line 5"]})" "\n");
  EXPECT_EQ(s.call("GET", path_of(id, "/log?lines=0")).status, 400);
  EXPECT_EQ(s.call("GET", path_of(id, "/log?lines=10001")).status, 400);
  EXPECT_EQ(s.call("GET", path_of(id, "/log"), "", s.bob_token).status, 404);
}

// ---- children -----------------------------------------------------------------------------------

TEST(Api, ChildrenRollUpAndParentListing) {
  service s(0);
  long long parent = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  EXPECT_EQ(s.job(parent).count("children"), 0u);
  std::string p = std::to_string(parent);
  auto bulk = s.call("POST", "/api/jobs/bulk",
                     R"({"jobs":[{"jobtype":"mysleep","config":"1","parent":)" + p +
                         R"(},{"jobtype":"mysleep","config":"2","parent":)" + p +
                         R"(},{"jobtype":"mysleep","config":"3","parent":)" + p +
                         R"(},{"jobtype":"mysleep","config":"4","parent":)" + p + "}]}");
  ASSERT_EQ(bulk.status, 201) << bulk.body;
  std::vector<long long> kids;
  auto bj = bulk.json();
  for (const auto& v : bj.as_object().at("ids").as_array()) kids.push_back(v.as_int64());
  ASSERT_EQ(kids.size(), 4u);
  ASSERT_EQ(s.call("POST", path_of(kids[0], "/cancel")).status, 200);
  s.claim(kids[1]);

  auto pj = s.job(parent);
  ASSERT_TRUE(pj.contains("children")) << json::serialize(pj);
  EXPECT_EQ(json::serialize(pj.at("children")), R"({"total":4,"ready":2,"dispatched":1,"cancelled":1})");

  auto list = s.call("GET", "/api/jobs?parent=" + p);
  ASSERT_EQ(list.status, 200) << list.body;
  auto lj = list.json().as_object();
  EXPECT_EQ(num(lj, "total"), 4);
  std::vector<long long> listed;
  for (const auto& v : lj.at("jobs").as_array()) listed.push_back(v.as_object().at("id").as_int64());
  EXPECT_EQ(listed, (std::vector<long long>{kids[3], kids[2], kids[1], kids[0]}));  // newest first
  auto ready = s.call("GET", "/api/jobs?parent=" + p + "&state=ready&limit=1");
  ASSERT_EQ(ready.status, 200);
  auto rj = ready.json().as_object();
  EXPECT_EQ(num(rj, "total"), 2);
  EXPECT_EQ(rj.at("jobs").as_array().size(), 1u);
  EXPECT_EQ(s.call("GET", "/api/jobs?parent=" + p, "", s.bob_token).status, 404);
  EXPECT_EQ(s.call("GET", "/api/jobs?parent=" + p, "", s.root_token).status, 200);  // admin
  EXPECT_EQ(s.call("GET", "/api/jobs?parent=99999").status, 404);
}

// ---- job tokens, claim, reports -----------------------------------------------------------------

TEST(Api, JobTokenReadsItsJobAndCreatesOnlyItsChildren) {
  service s(0);
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  long long other = s.submit(R"({"jobtype":"mysleep","config":"2"})");
  EXPECT_EQ(s.call("POST", path_of(id, "/claim"), R"({"host":"h1"})", s.bob_token).status, 404);
  auto c = s.claim(id, "h1");
  std::string token(c.at("token").as_string());
  ASSERT_EQ(token.rfind("dp_", 0), 0u);

  EXPECT_EQ(s.call("GET", path_of(id), "", token).status, 200);
  EXPECT_EQ(s.call("GET", path_of(id, "/events"), "", token).status, 200);
  EXPECT_EQ(s.call("GET", path_of(id, "/log"), "", token).status, 200);
  EXPECT_EQ(s.call("GET", path_of(other), "", token).status, 404);
  EXPECT_EQ(s.call("GET", path_of(other, "/events"), "", token).status, 404);
  EXPECT_EQ(s.call("GET", "/api/jobs", "", token).status, 403);
  EXPECT_EQ(s.call("GET", "/api/events", "", token).status, 403);
  EXPECT_EQ(s.call("POST", path_of(id, "/cancel"), "", token).status, 403);
  EXPECT_EQ(s.call("POST", path_of(id, "/claim"), R"({"host":"h2"})", token).status, 403);

  auto child = s.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":"3","parent":)" + std::to_string(id) + "}", token);
  ASSERT_EQ(child.status, 201) << child.body;
  auto cj = child.json().as_object();
  EXPECT_EQ(str(cj, "descname"), "alice");
  EXPECT_EQ(num(cj, "parent"), id);
  auto bulk = s.call("POST", "/api/jobs/bulk", R"({"jobs":[{"jobtype":"mysleep","config":"4","parent":)" + std::to_string(id) + "}]}", token);
  EXPECT_EQ(bulk.status, 201) << bulk.body;
  auto orphan = s.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":"3"})", token);
  EXPECT_EQ(orphan.status, 403) << orphan.body;
  EXPECT_EQ(orphan.json().as_object().at("error").as_string(), "forbidden");
  auto elsewhere = s.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":"3","parent":)" + std::to_string(other) + "}", token);
  EXPECT_EQ(elsewhere.status, 403) << elsewhere.body;
  EXPECT_EQ(num(s.job(id).at("children").as_object(), "total"), 2);
}

TEST(Api, TwoConcurrentClaimsExactlyOneWins) {
  service s(0);
  for (int round = 0; round < 5; ++round) {
    long long id = s.submit(R"({"jobtype":"mysleep","config":"5"})");
    std::latch go(2);
    http_response results[2];
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t)
      threads.emplace_back([&, t] {
        go.arrive_and_wait();
        results[t] = s.call("POST", path_of(id, "/claim"), R"({"host":"host)" + std::to_string(t) + R"(.example"})");
      });
    for (auto& t : threads) t.join();
    int ok = 0, conflict = 0;
    for (const auto& r : results) {
      if (r.status == 200) ++ok;
      if (r.status == 409) {
        ++conflict;
        EXPECT_EQ(r.json().as_object().at("detail").as_string(), "job " + std::to_string(id) + " is dispatched, not ready");
      }
    }
    EXPECT_EQ(ok, 1) << results[0].body << " / " << results[1].body;
    EXPECT_EQ(conflict, 1);
    const auto& win = results[0].status == 200 ? results[0] : results[1];
    auto w = win.json().as_object();
    EXPECT_EQ(num(w, "attempt"), 1);
    EXPECT_EQ(json::serialize(w.at("app")), R"({"argv":["runapp-mysleep","5"],"env":{},"time_limit_s":0E0,"login_shell":false})");
    auto j = w.at("job").as_object();
    EXPECT_EQ(str(j, "state"), "dispatched");
    EXPECT_EQ(str(j, "worker").rfind("cli:host", 0), 0u);
    redis_sync r(s.redis.endpoint());
    EXPECT_TRUE(r.exec({"ZSCORE", "descprod:queue", std::to_string(id)}).is_nil());
    EXPECT_GT(std::stod(r.exec({"ZSCORE", "descprod:leases", std::to_string(id)}).str), 1e9 + 9 * 365 * 86400.0);
  }
}

TEST(Api, ClaimedJobReportsDriveItToDoneAndStaleReportsChangeNothing) {
  service s(0);
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  auto c = s.claim(id, "laptop.example.org");
  std::string token(c.at("token").as_string());
  auto p = [&](const std::string& what, const std::string& body) {
    return s.call("POST", path_of(id, "/" + what), body, token);
  };
  auto r = p("started", R"({"attempt":1,"pid":1234,"rundir":"/tmp/job)" + std::to_string(id) + "\"}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "{\"state\":\"running\"}\n");
  auto j = s.job(id);
  EXPECT_EQ(str(j, "host"), "laptop.example.org");
  EXPECT_EQ(num(j, "pid"), 1234);

  r = p("progress", R"({"attempt":1,"message":"half way","done":1,"total":2})");
  ASSERT_EQ(r.status, 200) << r.body;
  j = s.job(id);
  EXPECT_EQ(str(j, "progress"), "Running. half way");
  EXPECT_EQ(num(j, "done_count"), 1);
  EXPECT_EQ(num(j, "total_count"), 2);

  // Wrong attempt: 409 stale, nothing changes.
  auto before = s.call("GET", path_of(id)).body;
  for (const char* what : {"started", "progress", "finished"}) {
    auto bad = p(what, R"({"attempt":2,"message":"nope"})");
    if (std::string(what) == "started") bad = p(what, R"({"attempt":2})");
    EXPECT_EQ(bad.status, 409) << what << " " << bad.body;
    EXPECT_EQ(std::string(bad.json().as_object().at("detail").as_string()).rfind("stale:", 0), 0u) << bad.body;
  }
  EXPECT_EQ(s.call("GET", path_of(id)).body, before);
  EXPECT_EQ(p("progress", R"({"attempt":1,"done":1})").status, 400);
  EXPECT_EQ(p("finished", "{not json").status, 400);

  r = p("finished", R"({"attempt":1,"rc":0,"signal":0,"timed_out":false,"message":"all good"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "{\"state\":\"done\"}\n");
  j = s.job(id);
  EXPECT_EQ(str(j, "state"), "done");
  EXPECT_EQ(str(j, "progress"), "Done. all good");
  EXPECT_EQ(num(j, "return_status"), 0);
  // The job token died with the job (issue 13): a late report with it is unauthorized; the
  // owner's own late report is refused as illegal.
  EXPECT_EQ(p("progress", R"({"attempt":1,"message":"late"})").status, 401);
  auto late = s.call("POST", path_of(id, "/progress"), R"({"attempt":1,"message":"late"})");
  EXPECT_EQ(late.status, 409);
  EXPECT_EQ(std::string(late.json().as_object().at("detail").as_string()).rfind("illegal:", 0), 0u) << late.body;
  auto reclaim = s.call("POST", path_of(id, "/claim"), R"({"host":"x"})");
  EXPECT_EQ(reclaim.status, 409);
  EXPECT_EQ(reclaim.json().as_object().at("detail").as_string(), "job " + std::to_string(id) + " is done, not ready");
}

TEST(Api, ClaimedJobFinishedBySignalOrTimeoutIsClassifiedAsTheDaemonDoes) {
  service s(0);
  long long a = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  long long b = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  std::string ta(s.claim(a).at("token").as_string());
  std::string tb(s.claim(b).at("token").as_string());
  ASSERT_EQ(s.call("POST", path_of(a, "/finished"), R"({"attempt":1,"rc":0,"signal":9,"message":"m"})", ta).status, 200);
  ASSERT_EQ(s.call("POST", path_of(b, "/finished"), R"({"attempt":1,"rc":1,"timed_out":true})", tb).status, 200);
  EXPECT_EQ(s.state(a), "killed");
  EXPECT_EQ(str(s.job(a), "progress"), "Process received signal 9. m");
  EXPECT_EQ(num(s.job(a), "return_status"), -9);
  EXPECT_EQ(s.state(b), "timeout");
  EXPECT_EQ(num(s.job(b), "return_status"), 124);
}

// ---- Server-Sent Events -------------------------------------------------------------------------

TEST(Api, EventStreamShowsEveryTransitionOfARunningJobOnce) {
  service s(1);
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  sse_client sse(s.port, path_of(id, "/events?follow=1"), s.alice_token);
  ASSERT_EQ(sse.status(), 200) << sse.header();
  EXPECT_NE(sse.header().find("Content-Type: text/event-stream"), std::string::npos) << sse.header();
  EXPECT_NE(sse.header().find("Cache-Control: no-store"), std::string::npos) << sse.header();
  EXPECT_EQ(sse.header().find("Content-Length"), std::string::npos) << sse.header();
  auto done = sse.wait_for([](const auto& e) { return ev_state(e) == "done"; }, 30s);
  ASSERT_TRUE(done) << "no done event";
  EXPECT_EQ(sse.raw_body_start().rfind("retry: 1000\n\n", 0), 0u) << sse.raw_body_start();
  std::vector<std::string> states;
  std::set<std::string> ids;
  for (const auto& e : sse.events()) {
    EXPECT_EQ(e.type, "job");
    EXPECT_EQ(num(e.json, "id"), id);
    EXPECT_TRUE(ids.insert(e.id).second) << "event id sent twice: " << e.id;
    for (const char* f : {"state", "progress", "attempt", "time", "type"}) EXPECT_TRUE(e.json.contains(f)) << e.data;
    if (str(e.json, "type") == "transition") states.push_back(ev_state(e));
  }
  EXPECT_EQ(states, (std::vector<std::string>{"ready", "dispatched", "running", "done"}));
  EXPECT_EQ(str(done->json, "progress"), "Done. I'm awake now.");
}

TEST(Api, EventStreamOfAnotherUsersJobIsNotFound) {
  service s(0);
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  auto r = s.call("GET", path_of(id, "/events?follow=1"), "", s.bob_token);
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  sse_client raw(s.port, path_of(id, "/events?follow=1"), s.bob_token);
  EXPECT_EQ(raw.status(), 404);
  EXPECT_EQ(s.call("GET", "/api/events?job=" + std::to_string(id), "", s.bob_token).status, 404);
  EXPECT_EQ(s.call("GET", path_of(id, "/events?follow=maybe")).status, 400);
}

// A job's own stream is written from its first transition on (core/store.hpp); while it is still
// queued the API shows the submission event from the job's hash, with the ID the stream gives it.
TEST(Api, AQueuedJobShowsItsSubmissionEventBeforeItHasAStreamOfItsOwn) {
  service s(0);
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  redis_sync r(s.redis.endpoint());
  std::string key = "descprod:job:" + std::to_string(id);
  ASSERT_EQ(r.exec({"EXISTS", key + ":events"}).integer, 0);
  auto ct = r.exec({"HGET", key, "create_time"}).str;
  auto expected = submit_event_entry(ct);
  ASSERT_TRUE(expected);
  std::string sid = expected->elements[0].str;

  auto ev = s.call("GET", path_of(id, "/events"));
  ASSERT_EQ(ev.status, 200) << ev.body;
  auto evj = ev.json();
  const auto& list = evj.as_object().at("events").as_array();
  ASSERT_EQ(list.size(), 1u) << ev.body;
  EXPECT_EQ(str(list[0].as_object(), "stream_id"), sid);
  EXPECT_EQ(str(list[0].as_object(), "state"), "ready");
  EXPECT_EQ(str(list[0].as_object(), "type"), "transition");
  EXPECT_DOUBLE_EQ(list[0].as_object().at("time").as_double(), std::stod(ct));

  sse_client follow(s.port, path_of(id, "/events?follow=1"), s.alice_token);
  ASSERT_EQ(follow.status(), 200) << follow.header();
  ASSERT_TRUE(follow.wait_for([](const auto& e) { return ev_state(e) == "ready"; }));
  EXPECT_EQ(follow.events().front().id, sid);
  // Resuming after the submission event does not show it again.
  sse_client resumed(s.port, path_of(id, "/events?follow=1"), s.alice_token, sid);
  ASSERT_EQ(resumed.status(), 200) << resumed.header();

  ASSERT_EQ(s.call("POST", path_of(id, "/cancel")).status, 200);
  ASSERT_TRUE(follow.wait_for([](const auto& e) { return ev_state(e) == "cancelled"; }));
  ASSERT_TRUE(resumed.wait_for([](const auto& e) { return ev_state(e) == "cancelled"; }));
  for (const auto& e : resumed.events()) EXPECT_NE(ev_state(e), "ready") << e.data;
  int readies = 0;
  for (const auto& e : follow.events()) readies += ev_state(e) == "ready";
  EXPECT_EQ(readies, 1);
  // The cancel wrote the stream, the submission event first with the ID shown before.
  auto stored = r.exec({"XRANGE", key + ":events", "-", "+"});
  ASSERT_EQ(stored.elements.size(), 2u);
  EXPECT_EQ(stored.elements[0].elements.at(0).str, sid);
  auto after = s.call("GET", path_of(id, "/events"));
  auto afterj = after.json();
  const auto& both = afterj.as_object().at("events").as_array();
  ASSERT_EQ(both.size(), 2u) << after.body;
  EXPECT_EQ(str(both[0].as_object(), "stream_id"), sid);
  EXPECT_EQ(str(both[1].as_object(), "state"), "cancelled");
}

TEST(Api, GlobalStreamCarriesOnlyTheCallersJobsAndResumesAfterLastEventId) {
  service s(0);
  sse_client alice(s.port, "/api/events", s.alice_token);
  sse_client bob(s.port, "/api/events", s.bob_token);
  sse_client root(s.port, "/api/events", s.root_token);
  ASSERT_EQ(alice.status(), 200);
  ASSERT_EQ(bob.status(), 200);
  ASSERT_EQ(root.status(), 200);
  long long a1 = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  long long b1 = s.submit(R"({"jobtype":"mysleep","config":"1"})", s.bob_token);
  long long a2 = s.submit(R"({"jobtype":"mysleep","config":"2"})");
  ASSERT_EQ(s.call("POST", path_of(a1, "/cancel")).status, 200);
  ASSERT_TRUE(alice.wait_for([&](const auto& e) { return num(e.json, "id") == a1 && ev_state(e) == "cancelled"; }));
  ASSERT_TRUE(bob.wait_for([&](const auto& e) { return num(e.json, "id") == b1; }));
  ASSERT_TRUE(root.wait_for([&](const auto& e) { return num(e.json, "id") == a1 && ev_state(e) == "cancelled"; }));
  for (const auto& e : alice.events()) EXPECT_NE(num(e.json, "id"), b1);
  for (const auto& e : bob.events()) EXPECT_EQ(num(e.json, "id"), b1);
  std::set<long long> seen_by_root;
  for (const auto& e : root.events()) seen_by_root.insert(num(e.json, "id"));
  EXPECT_EQ(seen_by_root, (std::set<long long>{a1, b1, a2}));

  // Resume after alice's first event: the later ones come first (replayed), then live, once each.
  auto first = alice.events().front();
  ASSERT_EQ(num(first.json, "id"), a1);
  sse_client resumed(s.port, "/api/events", s.alice_token, first.id);
  ASSERT_EQ(resumed.status(), 200);
  ASSERT_TRUE(resumed.wait_for([&](const auto& e) { return num(e.json, "id") == a1 && ev_state(e) == "cancelled"; }));
  ASSERT_EQ(s.call("POST", path_of(a2, "/cancel")).status, 200);
  ASSERT_TRUE(resumed.wait_for([&](const auto& e) { return num(e.json, "id") == a2 && ev_state(e) == "cancelled"; }));
  std::vector<std::string> got;
  for (const auto& e : resumed.events()) got.push_back(std::to_string(num(e.json, "id")) + ":" + ev_state(e));
  EXPECT_EQ(got, (std::vector<std::string>{std::to_string(a2) + ":ready", std::to_string(a1) + ":cancelled",
                                           std::to_string(a2) + ":cancelled"}));
  // One job only.
  sse_client one(s.port, "/api/events?job=" + std::to_string(a2), s.alice_token, first.id);
  ASSERT_TRUE(one.wait_for([&](const auto& e) { return ev_state(e) == "cancelled"; }));
  for (const auto& e : one.events()) EXPECT_EQ(num(e.json, "id"), a2);
  // A malformed Last-Event-ID is a 400.
  http_headers h;
  h.emplace_back("Authorization", "Bearer " + s.alice_token);
  h.emplace_back("Last-Event-ID", "not-an-id");
  EXPECT_EQ(http_request("127.0.0.1", s.port, "GET", "/api/events", "", h).status, 400);
}

TEST(Api, StatusChangeReachesSubscriberQuicklyFigure) {
  service s(0);
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  auto c = s.claim(id, "latency.example");
  std::string token(c.at("token").as_string());
  ASSERT_EQ(s.call("POST", path_of(id, "/started"), R"({"attempt":1,"pid":1})", token).status, 200);
  sse_client job_stream(s.port, path_of(id, "/events?follow=1"), s.alice_token);
  sse_client global_stream(s.port, "/api/events", s.alice_token);
  ASSERT_EQ(job_stream.status(), 200);
  ASSERT_EQ(global_stream.status(), 200);
  ASSERT_TRUE(job_stream.wait_for([](const auto& e) { return ev_state(e) == "running"; }));

  net::io_context ioc;
  redis_client rc(ioc.get_executor(), s.redis.endpoint());
  run_async(ioc, rc.async_connect());
  store st(rc, "descprod:");
  const int n = 200;
  std::vector<double> job_ms, global_ms;
  for (int i = 0; i < n; ++i) {
    std::string msg = "step " + std::to_string(i);
    std::string want = "Running. " + msg;
    auto t0 = steady::now();
    auto r = run_async(ioc, st.async_progress(id, 1, "cli:latency.example", msg, std::nullopt, std::nullopt));
    ASSERT_TRUE(r.ok) << r.reason;
    auto e1 = job_stream.wait_for([&](const auto& e) { return str(e.json, "progress") == want; }, 5s);
    auto e2 = global_stream.wait_for([&](const auto& e) { return str(e.json, "progress") == want; }, 5s);
    ASSERT_TRUE(e1 && e2) << "event " << i << " not delivered within 5 s";
    job_ms.push_back(std::chrono::duration<double, std::milli>(e1->at - t0).count());
    global_ms.push_back(std::chrono::duration<double, std::milli>(e2->at - t0).count());
  }
  auto pct = [](std::vector<double> v, double p) {
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
  };
  std::cout << "[ figures  ] status change -> SSE client (" << n << " changes; store call to event read): "
            << "job stream p50 " << pct(job_ms, 0.5) << " ms, p99 " << pct(job_ms, 0.99) << " ms, max "
            << pct(job_ms, 1.0) << " ms; /api/events p50 " << pct(global_ms, 0.5) << " ms, p99 "
            << pct(global_ms, 0.99) << " ms\n";
  // Every change arrived exactly once on the job stream.
  std::set<std::string> progress;
  for (const auto& e : job_stream.events()) {
    if (str(e.json, "type") == "progress") {
      EXPECT_TRUE(progress.insert(str(e.json, "progress")).second);
    }
  }
  EXPECT_EQ(progress.size(), static_cast<std::size_t>(n));
}

// ---- readiness ----------------------------------------------------------------------------------

// The gateway remembers a checked token for at most 1 s (docs/api.md, Authentication): a token
// deleted, or an account disabled, straight in Redis (descprod-admin, another gateway) is refused
// once that bound has passed, without any call to this gateway in between.
TEST(Api, TokenRevokedOrAccountDisabledInRedisIsRefusedWithinTheBound) {
  service s(0);
  redis_sync r(s.redis.endpoint());
  ASSERT_EQ(s.call("GET", "/api/jobs", "", s.bob_token).status, 200);  // remembered from here
  ASSERT_EQ(s.call("GET", "/api/jobs", "", s.alice_token).status, 200);
  r.exec({"DEL", "descprod:token:" + sha256_hex(s.bob_token)});
  r.exec({"HSET", "descprod:user:alice", "status", "disabled"});
  std::this_thread::sleep_for(1100ms);
  auto bob = s.call("GET", "/api/jobs", "", s.bob_token);
  EXPECT_EQ(bob.status, 401) << bob.body;
  EXPECT_EQ(str(bob.json().as_object(), "detail"), "unknown or revoked token");
  auto alice = s.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":"1"})", s.alice_token);
  EXPECT_EQ(alice.status, 401) << alice.body;
  EXPECT_EQ(str(alice.json().as_object(), "detail"), "account alice is disabled");
}

// The 201 answer is built from what was written (no read-back): it must equal the stored job.
TEST(Api, CreatedAnswerIsTheStoredJobAsCreated) {
  service s(0);
  long long parent = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  ASSERT_GT(parent, 0);
  auto res = s.call("POST", "/api/jobs",
                    R"({"jobtype":"mysleep","config":"30","howfig":"fast","priority":-7,"parent":)" +
                        std::to_string(parent) + "}");
  ASSERT_EQ(res.status, 201) << res.body;
  auto created = res.json().as_object();
  long long id = created.at("id").as_int64();
  EXPECT_EQ(res.header("location"), "/api/jobs/" + std::to_string(id));
  auto stored = s.job(id);
  stored.erase("children");
  // Nothing dispatches (no worker), so the stored job is still as created.
  EXPECT_EQ(json::serialize(created), json::serialize(stored));
  EXPECT_EQ(str(created, "state"), "ready");
  EXPECT_EQ(created.at("parent").as_int64(), parent);
}

TEST(Api, ReadyzFollowsTheDaemonLink) {
  service s(0);  // the constructor waited for 200
  auto ok = s.readyz();
  EXPECT_EQ(ok.body, "{\"status\":\"ready\"}\n");
  s.daemon->stop();
  ASSERT_TRUE(wait_until([&] { return s.readyz().status == 503; }, 15s)) << s.readyz().body;
  auto down = s.readyz().json().as_object();
  EXPECT_EQ(str(down, "detail"), "the daemon has not welcomed the gateway yet");
  EXPECT_EQ(http_request("127.0.0.1", s.port, "GET", "/healthz").status, 200);  // alive, not ready
  s.start_daemon();
  EXPECT_TRUE(wait_until([&] { return s.readyz().status == 200; }, 20s)) << s.readyz().body;
}

}  // namespace
}  // namespace descprod::test
