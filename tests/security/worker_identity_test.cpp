// Worker identity is bound to its token (issue #13, item 1; docs/protocol.md, Worker
// authentication): the real Redis, daemon and gateway, a real worker of alice's, and a hostile
// worker of bob's played by the test on a DEALER socket (tests/security/trust_peer.hpp).
//  - bob's worker token saying hello under alice's worker id is refused while that id is
//    connected, and while it is disconnected but holds leases (after a daemon restart); repeated
//    hellos burn no attempts; the legitimate worker reconnects with its own token and finishes;
//  - started/progress/finished/handback/log for a job the sender does not hold change nothing:
//    state, progress, attempts, host stay; no log key is created for any job it does not hold;
//  - a report from a connection the daemon does not know, with another worker's id and bob's
//    token, is dropped.
#include <gtest/gtest.h>
#include <signal.h>

#include <boost/json.hpp>

#include "core/accounts.hpp"
#include "core/redis.hpp"
#include "tests/security/trust_peer.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

const std::string P = "descprod:";

struct identity_fixture {
  service s;
  redis_sync r;
  std::string alice_wt, bob_wt;  // worker tokens
  zmq::context_t ctx{1};

  explicit identity_fixture(int lease_timeout_ms = 3000)
      : s(options(lease_timeout_ms)), r(s.redis.endpoint()) {
    alice_wt = issue_worker_token(r, P, "alice", {}, "alice-worker");
    bob_wt = issue_worker_token(r, P, "bob", {}, "bob-worker");
    auto file = s.dir.file("alice-worker-token");
    write_file(file, alice_wt + "\n");
    s.start_worker(0, "alice-w", file);
  }
  static service_options options(int lease_timeout_ms) {
    service_options o;
    o.workers = 0;
    o.slots = 1;
    o.lease_timeout_ms = lease_timeout_ms;
    return o;
  }
  std::string endpoint() const { return "ipc://" + s.dir.file("w.ipc"); }
  std::string job(long long id, const std::string& field) {
    return hget(r, P + "job:" + std::to_string(id), field);
  }
  std::string daemon_log() { return read_file(s.dir.file("daemon.log")); }
  // A job of alice's running on alice-w.
  long long running_job(const std::string& seconds) {
    auto id = s.submit(R"({"jobtype":"mysleep","config":")" + seconds + R"("})");
    EXPECT_TRUE(wait_until([&] { return job(id, "state") == "running"; }, 20s)) << job(id, "state");
    EXPECT_EQ(job(id, "worker"), "alice-w");
    return id;
  }
};

TEST(WorkerIdentity, AnotherTokenCannotTakeOverAConnectedWorkerIdNorBurnItsAttempts) {
  identity_fixture f;
  auto id = f.running_job("4");
  ASSERT_EQ(f.job(id, "attempt"), "1");
  const auto attempt = 1;
  // Five hellos under alice-w with bob's worker token, each claiming the job: each refused, for good.
  for (int i = 0; i < 5; ++i) {
    hostile_peer evil(f.ctx, f.endpoint());
    evil.send("hello", hostile_peer::hello("alice-w", f.bob_wt, {{id, attempt}}));
    auto got = evil.expect({"welcome", "reject", "job"}, 10s);
    ASSERT_TRUE(got) << "no answer to hello " << i;
    EXPECT_EQ(got->first, "reject") << json::serialize(got->second);
    EXPECT_FALSE(got->second.contains("retry")) << json::serialize(got->second);
  }
  EXPECT_GE(count_of(f.daemon_log(), "worker identity refused worker=alice-w"), 5u) << f.daemon_log();
  EXPECT_EQ(f.job(id, "state"), "running");
  EXPECT_EQ(f.job(id, "attempt"), "1");
  EXPECT_EQ(f.job(id, "worker"), "alice-w");
  // The legitimate worker is unharmed: the job ends done, in its first attempt.
  ASSERT_TRUE(wait_until([&] { return f.job(id, "state") == "done"; }, 20s)) << f.job(id, "state");
  EXPECT_EQ(f.job(id, "attempt"), "1");
}

TEST(WorkerIdentity, ReportsOnJobsTheConnectionDoesNotHoldChangeNothing) {
  identity_fixture f;
  auto id = f.running_job("4");
  const long long attempt = 1;
  auto progress_before = f.job(id, "progress");
  auto host_before = f.job(id, "host");
  auto events_before = f.r.exec({"XLEN", P + "job:" + std::to_string(id) + ":events"}).as_integer();
  // bob's worker under its own id: welcome; then it reports on alice's job, and logs for jobs that
  // are not its own or do not exist.
  hostile_peer evil(f.ctx, f.endpoint());
  evil.send("hello", hostile_peer::hello("bob-w", f.bob_wt));
  auto w = evil.expect({"welcome", "reject"}, 10s);
  ASSERT_TRUE(w);
  ASSERT_EQ(w->first, "welcome") << json::serialize(w->second);
  json::object started{{"pid", 1}, {"host", "evil-host"}, {"rundir", "/tmp/evil"}};
  json::object progress{{"message", "forged progress"}, {"done", 9}, {"total", 9}};
  json::object finished{{"rc", 0}, {"signal", 0}, {"timed_out", false}, {"message", "forged finish"}};
  json::object handback{{"reason", "forged handback"}};
  json::array lines{"forged log line"};
  json::object log{{"lines", lines}};
  const long long no_such_job = 987654;
  for (long long a : {attempt, attempt + 1}) {
    evil.send("started", hostile_peer::report("bob-w", f.bob_wt, id, a, started));
    evil.send("progress", hostile_peer::report("bob-w", f.bob_wt, id, a, progress));
    evil.send("log", hostile_peer::report("bob-w", f.bob_wt, id, a, log));
    evil.send("handback", hostile_peer::report("bob-w", f.bob_wt, id, a, handback));
    evil.send("finished", hostile_peer::report("bob-w", f.bob_wt, id, a, finished));
    evil.send("log", hostile_peer::report("bob-w", f.bob_wt, no_such_job, a, log));
  }
  // Messages of one connection are handled in order: once the daemon answers a second hello,
  // everything above has been handled.
  evil.send("hello", hostile_peer::hello("bob-w", f.bob_wt));
  ASSERT_TRUE(evil.expect({"welcome"}, 10s));
  EXPECT_GE(count_of(f.daemon_log(), "report refused"), 12u) << f.daemon_log();
  EXPECT_EQ(f.job(id, "state"), "running");
  EXPECT_EQ(f.job(id, "attempt"), "1");
  EXPECT_EQ(f.job(id, "max_attempts"), "3");
  EXPECT_EQ(f.job(id, "progress"), progress_before);
  EXPECT_EQ(f.job(id, "host"), host_before);
  EXPECT_EQ(f.job(id, "done_count"), "");
  EXPECT_EQ(f.r.exec({"XLEN", P + "job:" + std::to_string(id) + ":events"}).as_integer(), events_before);
  EXPECT_EQ(f.r.exec({"EXISTS", P + "job:" + std::to_string(no_such_job) + ":log"}).as_integer(), 0);
  EXPECT_EQ(f.r.exec({"EXISTS", P + "job:" + std::to_string(no_such_job)}).as_integer(), 0);
  EXPECT_EQ(f.r.exec({"KEYS", P + "job:" + std::to_string(no_such_job) + "*"}).elements.size(), 0u);
  auto log_entries = f.r.exec({"XRANGE", P + "job:" + std::to_string(id) + ":log", "-", "+"});
  for (const auto& e : log_entries.elements)
    for (const auto& v : e.elements.size() > 1 ? e.elements[1].elements : std::vector<redis_reply>{})
      EXPECT_EQ(v.str.find("forged"), std::string::npos) << v.str;
  // The legitimate run goes on and ends done, first attempt, its own messages.
  ASSERT_TRUE(wait_until([&] { return f.job(id, "state") == "done"; }, 20s)) << f.job(id, "state");
  EXPECT_EQ(f.job(id, "attempt"), "1");
  EXPECT_EQ(f.job(id, "progress"), "Done. I'm awake now.");
}

TEST(WorkerIdentity, ADisconnectedIdHoldingLeasesStaysBoundAndItsOwnWorkerReconnects) {
  identity_fixture f(5000);
  auto id = f.running_job("5");
  const long long attempt = 1;
  // alice's worker stops answering (its job's process goes on), the daemon restarts: the lease is
  // in Redis, for alice-w, and alice-w has no connection.
  // Its binding is in Redis from its hello on.
  EXPECT_FALSE(hget(f.r, P + "worker:alice-w", "token_sha").empty());
  f.s.workers[0]->signal(SIGSTOP);
  f.s.daemon->stop();
  auto rebuilt = count_of(f.daemon_log(), "queue rebuilt");
  f.s.start_daemon();
  ASSERT_TRUE(wait_until([&] { return count_of(f.daemon_log(), "queue rebuilt") > rebuilt; }, 20s))
      << f.daemon_log();
  EXPECT_EQ(hget(f.r, P + "worker:alice-w", "token_sha").empty(), false);
  // A report from an unknown connection in alice-w's name with bob's token: dropped.
  {
    hostile_peer evil(f.ctx, f.endpoint());
    json::object finished{{"rc", 0}, {"signal", 0}, {"timed_out", false}, {"message", "forged finish"}};
    json::object progress{{"message", "forged progress"}};
    evil.send("progress", hostile_peer::report("alice-w", f.bob_wt, id, attempt, progress));
    evil.send("finished", hostile_peer::report("alice-w", f.bob_wt, id, attempt, finished));
    evil.send("handback", hostile_peer::report("alice-w", f.bob_wt, id, attempt, {{"reason", "forged"}}));
    auto got = evil.expect({"reject"}, 10s);
    ASSERT_TRUE(got);
    // Hellos under alice-w with bob's token: refused while alice-w holds the lease.
    for (int i = 0; i < 3; ++i) {
      evil.send("hello", hostile_peer::hello("alice-w", f.bob_wt, {{id, attempt}}));
      auto h = evil.expect({"welcome", "reject"}, 10s);
      ASSERT_TRUE(h);
      EXPECT_EQ(h->first, "reject") << json::serialize(h->second);
      if (h->first == "reject" && h->second.contains("retry")) --i;  // the answer to a report, not the hello
    }
  }
  ASSERT_TRUE(wait_until(
      [&] { return count_of(f.daemon_log(), "report from an unknown connection dropped") >= 3; }, 10s))
      << f.daemon_log();
  EXPECT_GE(count_of(f.daemon_log(), "worker identity refused worker=alice-w"), 3u);
  EXPECT_EQ(f.job(id, "state"), "running");
  EXPECT_EQ(f.job(id, "attempt"), "1");
  EXPECT_EQ(f.job(id, "worker"), "alice-w");
  EXPECT_EQ(f.job(id, "message").find("forged"), std::string::npos);
  // alice's worker comes back with its own token: accepted, it keeps its job, and finishes it.
  f.s.workers[0]->signal(SIGCONT);
  ASSERT_TRUE(wait_until([&] { return f.job(id, "state") == "done"; }, 30s))
      << f.job(id, "state") << f.daemon_log();
  EXPECT_EQ(f.job(id, "attempt"), "1");
  EXPECT_NE(f.daemon_log().find("worker connected worker=alice-w"), std::string::npos);
}

}  // namespace
}  // namespace descprod::test
