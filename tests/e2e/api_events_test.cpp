// End-to-end tests of the Server-Sent Events streams: a job's stream (/api/jobs/<id>/events) and
// the global one (/api/events), who may follow what, resuming after Last-Event-ID, and the figure of
// a status change's way to a subscriber. The real binaries against a real redis-server
// (tests/support/service.hpp).
//
// The SSE latency figure is printed, never asserted on (docs/building.md#tests: no timed tests).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "core/redis.hpp"
#include "core/store.hpp"
#include "tests/e2e/api_support.hpp"

namespace descprod::test {
namespace {

using namespace api;
namespace json = boost::json;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

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

// ---- Server-Sent Events -------------------------------------------------------------------------

TEST(Api, EventStreamShowsEveryTransitionOfARunningJobOnce) {
  service s(api_options(1));
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  sse_client sse(s.port(), path_of(id, "/events?follow=1"), s.alice_token);
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
    for (const char* f : {"state", "progress", "attempt", "time", "type"})
      EXPECT_TRUE(e.json.contains(f)) << e.data;
    if (str(e.json, "type") == "transition") states.push_back(ev_state(e));
  }
  EXPECT_EQ(states, (std::vector<std::string>{"ready", "dispatched", "running", "done"}));
  EXPECT_EQ(str(done->json, "progress"), "Done. I'm awake now.");
}

TEST(Api, EventStreamOfAnotherUsersJobIsNotFound) {
  service s(api_options(0));
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  auto r = s.call("GET", path_of(id, "/events?follow=1"), "", s.bob_token);
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  sse_client raw(s.port(), path_of(id, "/events?follow=1"), s.bob_token);
  EXPECT_EQ(raw.status(), 404);
  EXPECT_EQ(s.call("GET", "/api/events?job=" + std::to_string(id), "", s.bob_token).status, 404);
  EXPECT_EQ(s.call("GET", path_of(id, "/events?follow=maybe")).status, 400);
}

// A job's own stream is written from its first transition on (core/store.hpp); while it is still
// queued the API shows the submission event from the job's hash, with the ID the stream gives it.
TEST(Api, AQueuedJobShowsItsSubmissionEventBeforeItHasAStreamOfItsOwn) {
  service s(api_options(0));
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

  sse_client follow(s.port(), path_of(id, "/events?follow=1"), s.alice_token);
  ASSERT_EQ(follow.status(), 200) << follow.header();
  ASSERT_TRUE(follow.wait_for([](const auto& e) { return ev_state(e) == "ready"; }));
  EXPECT_EQ(follow.events().front().id, sid);
  // Resuming after the submission event does not show it again.
  sse_client resumed(s.port(), path_of(id, "/events?follow=1"), s.alice_token, sid);
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
  service s(api_options(0));
  sse_client alice(s.port(), "/api/events", s.alice_token);
  sse_client bob(s.port(), "/api/events", s.bob_token);
  sse_client root(s.port(), "/api/events", s.admin_token());
  ASSERT_EQ(alice.status(), 200);
  ASSERT_EQ(bob.status(), 200);
  ASSERT_EQ(root.status(), 200);
  long long a1 = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  long long b1 = s.submit(R"({"jobtype":"mysleep","config":"1"})", s.bob_token);
  long long a2 = s.submit(R"({"jobtype":"mysleep","config":"2"})");
  ASSERT_EQ(s.call("POST", path_of(a1, "/cancel")).status, 200);
  ASSERT_TRUE(
      alice.wait_for([&](const auto& e) { return num(e.json, "id") == a1 && ev_state(e) == "cancelled"; }));
  ASSERT_TRUE(bob.wait_for([&](const auto& e) { return num(e.json, "id") == b1; }));
  ASSERT_TRUE(
      root.wait_for([&](const auto& e) { return num(e.json, "id") == a1 && ev_state(e) == "cancelled"; }));
  for (const auto& e : alice.events()) EXPECT_NE(num(e.json, "id"), b1);
  for (const auto& e : bob.events()) EXPECT_EQ(num(e.json, "id"), b1);
  std::set<long long> seen_by_root;
  for (const auto& e : root.events()) seen_by_root.insert(num(e.json, "id"));
  EXPECT_EQ(seen_by_root, (std::set<long long>{a1, b1, a2}));

  // Resume after alice's first event: the later ones come first (replayed), then live, once each.
  auto first = alice.events().front();
  ASSERT_EQ(num(first.json, "id"), a1);
  sse_client resumed(s.port(), "/api/events", s.alice_token, first.id);
  ASSERT_EQ(resumed.status(), 200);
  ASSERT_TRUE(
      resumed.wait_for([&](const auto& e) { return num(e.json, "id") == a1 && ev_state(e) == "cancelled"; }));
  ASSERT_EQ(s.call("POST", path_of(a2, "/cancel")).status, 200);
  ASSERT_TRUE(
      resumed.wait_for([&](const auto& e) { return num(e.json, "id") == a2 && ev_state(e) == "cancelled"; }));
  std::vector<std::string> got;
  for (const auto& e : resumed.events()) got.push_back(std::to_string(num(e.json, "id")) + ":" + ev_state(e));
  EXPECT_EQ(got, (std::vector<std::string>{std::to_string(a2) + ":ready", std::to_string(a1) + ":cancelled",
                                           std::to_string(a2) + ":cancelled"}));
  // One job only.
  sse_client one(s.port(), "/api/events?job=" + std::to_string(a2), s.alice_token, first.id);
  ASSERT_TRUE(one.wait_for([&](const auto& e) { return ev_state(e) == "cancelled"; }));
  for (const auto& e : one.events()) EXPECT_EQ(num(e.json, "id"), a2);
  // A malformed Last-Event-ID is a 400.
  http_headers h;
  h.emplace_back("Authorization", "Bearer " + s.alice_token);
  h.emplace_back("Last-Event-ID", "not-an-id");
  EXPECT_EQ(http_request("127.0.0.1", s.port(), "GET", "/api/events", "", h).status, 400);
}

TEST(Api, StatusChangeReachesSubscriberQuicklyFigure) {
  service s(api_options(0));
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  auto c = s.claim(id, "latency.example");
  std::string token(c.at("token").as_string());
  ASSERT_EQ(s.call("POST", path_of(id, "/started"), R"({"attempt":1,"pid":1})", token).status, 200);
  sse_client job_stream(s.port(), path_of(id, "/events?follow=1"), s.alice_token);
  sse_client global_stream(s.port(), "/api/events", s.alice_token);
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

}  // namespace
}  // namespace descprod::test
