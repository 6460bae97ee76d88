// The Redis job store against a real redis-server: every transition script, its refusals, the
// key layout of DESIGN §3.3, injection safety, the NOSCRIPT fallback, and the pipelining client.
#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "core/redis.hpp"
#include "core/store.hpp"
#include "gateway/notices.hpp"
#include "tests/support/support.hpp"

namespace descprod {
namespace {

using namespace std::chrono_literals;
using test::run_async;

new_job make_job(std::string jobtype, std::string config, int priority = 0, int max_attempts = 3) {
  new_job j;
  j.jobtype = std::move(jobtype);
  j.config = std::move(config);
  j.priority = priority;
  j.max_attempts = max_attempts;
  return j;
}

std::string sha1_hex(const std::string& s) {
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(s.data()), s.size(), md);
  char buf[3];
  std::string out;
  for (unsigned char c : md) {
    std::snprintf(buf, sizeof buf, "%02x", c);
    out += buf;
  }
  return out;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override { run_async(ioc, redis.async_connect()); }

  template <class T>
  T run(net::awaitable<T> a) {
    return run_async(ioc, std::move(a));
  }

  std::vector<job_id> create(const std::string& owner, std::vector<new_job> jobs) {
    std::vector<job_id> ids;
    auto r = run(st.async_create(owner, std::move(jobs), ids));
    EXPECT_TRUE(r.ok) << r.reason;
    return ids;
  }
  job_id create_one(const std::string& owner = "alice", int priority = 0, int max_attempts = 3) {
    std::vector<new_job> jobs;
    jobs.push_back(make_job("mysleep", "10", priority, max_attempts));
    auto ids = create(owner, std::move(jobs));
    return ids.empty() ? 0 : ids.front();
  }
  // lease + start by worker w1; returns the attempt.
  long long run_job(job_id id, const std::string& worker = "w1") {
    auto l = run(st.async_lease(id, worker, 30));
    EXPECT_TRUE(l.ok) << l.reason << " " << l.state;
    auto s = run(st.async_start(id, l.attempt, worker, "host1", "/tmp/run", 1234));
    EXPECT_TRUE(s.ok) << s.reason << " " << s.state;
    return l.attempt;
  }

  // Direct inspection through a second, blocking connection.
  redis_reply cmd(const std::vector<std::string>& args) { return inspect.exec(args); }
  job_record hash(job_id id) {
    job_record r;
    auto reply = cmd({"HGETALL", st.job_key(id)});
    for (std::size_t i = 0; i + 1 < reply.elements.size(); i += 2)
      r[reply.elements[i].str] = reply.elements[i + 1].str;
    return r;
  }
  std::vector<std::string> zrange(const std::string& key) {
    std::vector<std::string> out;
    for (const auto& e : cmd({"ZRANGE", key, "0", "-1"}).elements) out.push_back(e.str);
    return out;
  }
  bool in_zset(const std::string& key, job_id id) {
    return !cmd({"ZSCORE", key, std::to_string(id)}).is_nil();
  }
  // The field values of a stream's entries, oldest first.
  std::vector<std::map<std::string, std::string>> stream(const std::string& key) {
    std::vector<std::map<std::string, std::string>> out;
    for (const auto& entry : cmd({"XRANGE", key, "-", "+"}).elements) {
      std::map<std::string, std::string> fields;
      const auto& kv = entry.elements.at(1).elements;
      for (std::size_t i = 0; i + 1 < kv.size(); i += 2) fields[kv[i].str] = kv[i + 1].str;
      out.push_back(std::move(fields));
    }
    return out;
  }
  double now_s() {
    auto t = cmd({"TIME"});
    return std::stod(t.elements.at(0).str) + std::stod(t.elements.at(1).str) / 1e6;
  }

  test::redis_server server;
  redis_sync inspect{server.endpoint()};
  net::io_context ioc;
  redis_client redis{ioc.get_executor(), server.endpoint()};
  store st{redis, "descprod:"};
};

TEST_F(StoreTest, CreateAssignsConsecutiveIdsAndWritesHashQueueUserIndexAndEvents) {
  std::vector<new_job> jobs;
  jobs.push_back(make_job("mysleep", "10", 5, 2));
  jobs.push_back(make_job("parsltest", "sleep-ttsk2-ntsk20-nwrk4"));
  jobs.back().howfig = "fast";
  jobs.back().session = "77";
  jobs.push_back(make_job("mysleep", "3"));
  double before = now_s();
  EXPECT_EQ(create("alice", std::move(jobs)), (std::vector<job_id>{1, 2, 3}));
  EXPECT_EQ(create("bob", {make_job("mysleep", "1"), make_job("mysleep", "2")}),
            (std::vector<job_id>{4, 5}));
  EXPECT_EQ(cmd({"GET", "descprod:next_job_id"}).str, "5");

  auto h = hash(1);
  EXPECT_EQ(h["id"], "1");
  EXPECT_EQ(h["descname"], "alice");
  EXPECT_EQ(h["jobtype"], "mysleep");
  EXPECT_EQ(h["config"], "10");
  EXPECT_EQ(h["howfig"], "");
  EXPECT_EQ(h["state"], "ready");
  EXPECT_EQ(h["progress"], "Ready.");
  EXPECT_EQ(h["attempt"], "1");
  EXPECT_EQ(h["max_attempts"], "2");
  EXPECT_EQ(h["priority"], "5");
  EXPECT_EQ(h["archive"], "0");
  EXPECT_EQ(h.count("parent"), 0u);
  EXPECT_EQ(h.count("session"), 0u);
  EXPECT_EQ(h.count("worker"), 0u);
  EXPECT_GE(std::stod(h["create_time"]), std::floor(before));
  EXPECT_LE(std::stod(h["create_time"]), now_s());
  EXPECT_EQ(h["update_time"], h["create_time"]);
  EXPECT_EQ(h["queued_time"], h["create_time"]);
  auto h2 = hash(2);
  EXPECT_EQ(h2["howfig"], "fast");
  EXPECT_EQ(h2["session"], "77");
  EXPECT_EQ(h2["config"], "sleep-ttsk2-ntsk20-nwrk4");

  EXPECT_EQ(cmd({"ZCARD", "descprod:queue"}).integer, 5);
  EXPECT_EQ(zrange("descprod:user:alice:jobs"), (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_EQ(zrange("descprod:user:bob:jobs"), (std::vector<std::string>{"4", "5"}));

  // A queued job has no stream of its own yet (its submission event is written at its first
  // transition, see JobStreamBeginsAtTheFirstTransitionWithTheSubmissionEvent).
  EXPECT_EQ(cmd({"EXISTS", "descprod:job:1:events"}).integer, 0);
  auto all = stream("descprod:events");
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(all[3]["id"], "4");
  EXPECT_EQ(all[3]["owner"], "bob");
  EXPECT_EQ(all[3]["state"], "ready");
}

TEST_F(StoreTest, UsesTheConfiguredKeyPrefix) {
  store other(redis, "test:");
  std::vector<job_id> ids;
  std::vector<new_job> jobs;
  jobs.push_back(make_job("mysleep", "1"));
  ASSERT_TRUE(run(other.async_create("carol", std::move(jobs), ids)).ok);
  EXPECT_EQ(ids, std::vector<job_id>{1});
  EXPECT_EQ(cmd({"HGET", "test:job:1", "state"}).str, "ready");
  EXPECT_TRUE(in_zset("test:queue", 1));
  EXPECT_TRUE(in_zset("test:user:carol:jobs", 1));
  EXPECT_EQ(cmd({"EXISTS", "descprod:job:1"}).integer, 0);
  EXPECT_EQ(cmd({"EXISTS", "descprod:queue"}).integer, 0);
}

TEST_F(StoreTest, QueueOrdersByHigherPriorityThenLowerId) {
  std::vector<new_job> jobs;
  for (int p : {0, 5, 0, -3, 5, 1000, -1000}) jobs.push_back(make_job("mysleep", "1", p));
  create("alice", std::move(jobs));
  EXPECT_EQ(zrange("descprod:queue"), (std::vector<std::string>{"6", "2", "5", "1", "3", "4", "7"}));
  EXPECT_EQ(std::stod(cmd({"ZSCORE", "descprod:queue", "2"}).str), queue_score(5, 2));
  EXPECT_EQ(std::stod(cmd({"ZSCORE", "descprod:queue", "7"}).str), queue_score(-1000, 7));
}

TEST_F(StoreTest, LeaseMovesAReadyJobToDispatchedAndFromQueueToLeases) {
  auto id = create_one();
  double t0 = now_s();
  auto r = run(st.async_lease(id, "w1", 30));
  ASSERT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.state, "dispatched");
  EXPECT_EQ(r.attempt, 1);
  EXPECT_EQ(r.worker, "w1");
  EXPECT_EQ(r.record["state"], "dispatched");
  EXPECT_EQ(r.record["worker"], "w1");
  EXPECT_EQ(r.record["jobtype"], "mysleep");
  EXPECT_EQ(r.record["config"], "10");
  EXPECT_FALSE(r.record["dispatch_time"].empty());
  auto h = hash(id);
  EXPECT_EQ(h["state"], "dispatched");
  EXPECT_EQ(h["worker"], "w1");
  EXPECT_FALSE(in_zset("descprod:queue", id));
  ASSERT_TRUE(in_zset("descprod:leases", id));
  double deadline = std::stod(cmd({"ZSCORE", "descprod:leases", std::to_string(id)}).str);
  EXPECT_GE(deadline, t0 + 29);
  EXPECT_LE(deadline, now_s() + 30.01);
  EXPECT_EQ(stream(st.job_key(id) + ":events").back()["state"], "dispatched");
}

// The stream reads as if written at submission: first the submission's event (ID from the job's
// create_time, as gateway readers show it while there is no stream), then the transition.
TEST_F(StoreTest, JobStreamBeginsAtTheFirstTransitionWithTheSubmissionEvent) {
  auto id = create_one();
  auto ct = hash(id)["create_time"];
  auto expected = submit_event_entry(ct);
  ASSERT_TRUE(expected);
  ASSERT_TRUE(run(st.async_lease(id, "w1", 30)).ok);
  auto range = cmd({"XRANGE", st.job_key(id) + ":events", "-", "+"});
  ASSERT_EQ(range.elements.size(), 2u);
  const auto& first = range.elements[0];
  EXPECT_EQ(first.elements.at(0).str, expected->elements[0].str);
  ASSERT_EQ(first.elements.at(1).elements.size(), expected->elements[1].elements.size());
  for (std::size_t i = 0; i < expected->elements[1].elements.size(); ++i)
    EXPECT_EQ(first.elements[1].elements[i].str, expected->elements[1].elements[i].str) << i;
  auto ev = stream(st.job_key(id) + ":events");
  EXPECT_EQ(ev[0]["state"], "ready");
  EXPECT_EQ(ev[0]["time"], ct);
  EXPECT_EQ(ev[1]["state"], "dispatched");
  EXPECT_LT(range.elements[0].elements[0].str, range.elements[1].elements[0].str);
  // A requeued job's next lease does not write the submission again.
  ASSERT_TRUE(run(st.async_requeue(id, 1, "w1", store::requeue_mode::plain, "test")).ok);
  ASSERT_TRUE(run(st.async_lease(id, "w2", 30)).ok);
  auto again = stream(st.job_key(id) + ":events");
  ASSERT_EQ(again.size(), 4u);
  EXPECT_EQ(again[2]["type"], "requeue");
  EXPECT_EQ(again[3]["state"], "dispatched");

  // Cancel and archive of a job still queued open its stream the same way.
  auto c = create_one();
  ASSERT_TRUE(run(st.async_cancel(c, "alice")).ok);
  auto cev = stream(st.job_key(c) + ":events");
  ASSERT_EQ(cev.size(), 2u);
  EXPECT_EQ(cev[0]["state"], "ready");
  EXPECT_EQ(cev[1]["state"], "cancelled");
  auto a = create_one();
  ASSERT_TRUE(run(st.async_set_archive(a, true)).ok);
  auto aev = stream(st.job_key(a) + ":events");
  ASSERT_EQ(aev.size(), 2u);
  EXPECT_EQ(aev[0]["state"], "ready");
  EXPECT_EQ(aev[1]["type"], "archive");
}

TEST(SubmitEventEntry, RefusesAMalformedCreateTime) {
  EXPECT_FALSE(submit_event_entry(""));
  EXPECT_FALSE(submit_event_entry("17"));
  EXPECT_FALSE(submit_event_entry(".5"));
  EXPECT_FALSE(submit_event_entry("17."));
  EXPECT_FALSE(submit_event_entry("1x.000001"));
  EXPECT_FALSE(submit_event_entry("1.-5"));
  auto e = submit_event_entry("1700000000.123456");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->elements[0].str, "1700000000123-0");
}

TEST_F(StoreTest, LeaseOfALeasedOrMissingJobIsRefused) {
  auto id = create_one();
  ASSERT_TRUE(run(st.async_lease(id, "w1", 30)).ok);
  auto again = run(st.async_lease(id, "w2", 30));
  EXPECT_FALSE(again.ok);
  EXPECT_EQ(again.reason, "illegal");
  EXPECT_EQ(again.state, "dispatched");
  EXPECT_EQ(hash(id)["worker"], "w1");
  auto missing = run(st.async_lease(999, "w1", 30));
  EXPECT_FALSE(missing.ok);
  EXPECT_EQ(missing.reason, "missing");
  EXPECT_EQ(cmd({"EXISTS", st.job_key(999)}).integer, 0);
}

TEST_F(StoreTest, StartWithStaleAttemptOrWrongWorkerIsRefusedAndChangesNothing) {
  auto id = create_one();
  ASSERT_TRUE(run(st.async_lease(id, "w1", 30)).ok);
  auto before = hash(id);
  auto events_before = cmd({"XLEN", "descprod:events"}).integer;

  auto old_attempt = run(st.async_start(id, 2, "w1", "host1", "/tmp/run", 1));
  EXPECT_FALSE(old_attempt.ok);
  EXPECT_EQ(old_attempt.reason, "stale");
  EXPECT_EQ(old_attempt.state, "dispatched");
  auto other_worker = run(st.async_start(id, 1, "w2", "host2", "/tmp/run", 1));
  EXPECT_FALSE(other_worker.ok);
  EXPECT_EQ(other_worker.reason, "stale");

  EXPECT_EQ(hash(id), before);
  EXPECT_EQ(cmd({"XLEN", "descprod:events"}).integer, events_before);
}

TEST_F(StoreTest, StartMovesADispatchedJobToRunning) {
  auto id = create_one();
  ASSERT_TRUE(run(st.async_lease(id, "w1", 30)).ok);
  auto r = run(st.async_start(id, 1, "w1", "node7", "/scratch/jobs/job000001", 4321));
  ASSERT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.state, "running");
  auto h = hash(id);
  EXPECT_EQ(h["state"], "running");
  EXPECT_EQ(h["host"], "node7");
  EXPECT_EQ(h["rundir"], "/scratch/jobs/job000001");
  EXPECT_EQ(h["pid"], "4321");
  EXPECT_EQ(h["progress"], "Running.");
  EXPECT_FALSE(h["start_time"].empty());
  EXPECT_TRUE(in_zset("descprod:leases", id));
  // A second start is illegal: the job is no longer dispatched.
  auto again = run(st.async_start(id, 1, "w1", "node7", "/x", 1));
  EXPECT_FALSE(again.ok);
  EXPECT_EQ(again.reason, "illegal");
}

TEST_F(StoreTest, ProgressSetsTheMessageAndRunningProgress) {
  auto id = create_one();
  run_job(id);
  auto r = run(st.async_progress(id, 1, "w1", "3/10 tasks done", 3, 10));
  ASSERT_TRUE(r.ok) << r.reason;
  auto h = hash(id);
  EXPECT_EQ(h["state"], "running");
  EXPECT_EQ(h["message"], "3/10 tasks done");
  EXPECT_EQ(h["progress"], "Running. 3/10 tasks done");
  EXPECT_EQ(h["done_count"], "3");
  EXPECT_EQ(h["total_count"], "10");
  auto ev = stream(st.job_key(id) + ":events").back();
  EXPECT_EQ(ev["type"], "progress");
  EXPECT_EQ(ev["progress"], "Running. 3/10 tasks done");

  auto plain = run(st.async_progress(id, 1, "w1", "", std::nullopt, std::nullopt));
  ASSERT_TRUE(plain.ok);
  EXPECT_EQ(hash(id)["progress"], "Running.");
  EXPECT_EQ(hash(id)["done_count"], "3");  // unchanged without structured progress

  auto stale = run(st.async_progress(id, 1, "w9", "not mine", std::nullopt, std::nullopt));
  EXPECT_FALSE(stale.ok);
  EXPECT_EQ(stale.reason, "stale");
  EXPECT_EQ(hash(id)["message"], "");
}

TEST_F(StoreTest, ProgressOfAJobThatIsNotRunningIsRefused) {
  auto id = create_one();
  ASSERT_TRUE(run(st.async_lease(id, "w1", 30)).ok);
  auto r = run(st.async_progress(id, 1, "w1", "early", std::nullopt, std::nullopt));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.reason, "illegal");
  EXPECT_EQ(hash(id).count("message"), 0u);
}

TEST_F(StoreTest, FinishMarksDoneWithProgressReturnStatusAndStopTime) {
  auto id = create_one();
  run_job(id);
  auto r = run(st.async_finish(id, 1, "w1", job_state::done, 0, "Done", "I'm awake now."));
  ASSERT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.state, "done");
  auto h = hash(id);
  EXPECT_EQ(h["state"], "done");
  EXPECT_EQ(h["progress"], "Done. I'm awake now.");
  EXPECT_EQ(h["message"], "I'm awake now.");
  EXPECT_EQ(h["return_status"], "0");
  ASSERT_FALSE(h["stop_time"].empty());
  EXPECT_GE(std::stod(h["stop_time"]), std::stod(h["start_time"]));
  EXPECT_FALSE(in_zset("descprod:leases", id));
  EXPECT_FALSE(in_zset("descprod:queue", id));
  EXPECT_EQ(stream("descprod:events").back()["state"], "done");
}

TEST_F(StoreTest, FinishStraightFromDispatchedIsAccepted) {
  auto id = create_one();
  ASSERT_TRUE(run(st.async_lease(id, "w1", 30)).ok);
  auto r = run(st.async_finish(id, 1, "w1", job_state::failed, 127, "Failed", "cannot spawn"));
  ASSERT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(hash(id)["state"], "failed");
  EXPECT_EQ(hash(id)["progress"], "Failed. cannot spawn");
  EXPECT_EQ(hash(id)["return_status"], "127");
  EXPECT_FALSE(in_zset("descprod:leases", id));
}

TEST_F(StoreTest, FinishOfAReadyJobOrToANonTerminalStateIsRefused) {
  auto id = create_one();
  auto r = run(st.async_finish(id, 1, "", job_state::done, 0, "Done", ""));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.reason, "illegal");
  run_job(id);
  auto bad = run(st.async_finish(id, 1, "w1", job_state::ready, 0, "Ready", ""));
  EXPECT_FALSE(bad.ok);
  EXPECT_EQ(bad.reason, "illegal");
  EXPECT_EQ(hash(id)["state"], "running");
}

TEST_F(StoreTest, SecondFinishIsRefusedBecauseTheFirstTerminalEventWins) {
  auto id = create_one();
  run_job(id);
  ASSERT_TRUE(run(st.async_finish(id, 1, "w1", job_state::done, 0, "Done", "first")).ok);
  auto before = hash(id);
  auto second = run(st.async_finish(id, 1, "w1", job_state::failed, 1, "Failed", "second"));
  EXPECT_FALSE(second.ok);
  EXPECT_EQ(second.reason, "illegal");
  EXPECT_EQ(second.state, "done");
  EXPECT_EQ(hash(id), before);
}

TEST_F(StoreTest, RequeueWithBumpRaisesTheAttemptAndQueuesTheJobAgain) {
  auto id = create_one();
  run_job(id);
  ASSERT_TRUE(run(st.async_progress(id, 1, "w1", "half way", 1, 2)).ok);
  auto r = run(st.async_requeue(id, 1, "w1", store::requeue_mode::lost, "worker lost"));
  ASSERT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.state, "ready");
  EXPECT_EQ(r.attempt, 2);
  auto h = hash(id);
  EXPECT_EQ(h["state"], "ready");
  EXPECT_EQ(h["attempt"], "2");
  EXPECT_EQ(h["progress"], "Ready.");
  for (const char* gone : {"worker", "host", "pid", "rundir", "start_time", "message", "done_count"})
    EXPECT_EQ(h.count(gone), 0u) << gone;
  EXPECT_TRUE(in_zset("descprod:queue", id));
  EXPECT_FALSE(in_zset("descprod:leases", id));
  auto ev = stream(st.job_key(id) + ":events").back();
  EXPECT_EQ(ev["type"], "requeue");
  EXPECT_EQ(ev["attempt"], "2");

  // Events of the old attempt are stale now; the new attempt runs normally.
  auto old = run(st.async_finish(id, 1, "w1", job_state::done, 0, "Done", ""));
  EXPECT_FALSE(old.ok);
  auto l = run(st.async_lease(id, "w2", 30));
  ASSERT_TRUE(l.ok);
  EXPECT_EQ(l.attempt, 2);
  auto stale_start = run(st.async_start(id, 1, "w2", "h", "/r", 1));
  EXPECT_FALSE(stale_start.ok);
  EXPECT_EQ(stale_start.reason, "stale");
  EXPECT_TRUE(run(st.async_start(id, 2, "w2", "h", "/r", 1)).ok);
}

TEST_F(StoreTest, RequeueWithAttemptsExhaustedMarksTheJobLost) {
  auto id = create_one("alice", 0, 2);
  run_job(id);
  ASSERT_EQ(run(st.async_requeue(id, 1, "w1", store::requeue_mode::lost, "worker lost")).attempt, 2);
  EXPECT_EQ(run_job(id, "w2"), 2);
  auto r = run(st.async_requeue(id, 2, "w2", store::requeue_mode::lost, "worker lost"));
  ASSERT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.state, "lost");
  auto h = hash(id);
  EXPECT_EQ(h["state"], "lost");
  EXPECT_EQ(h["progress"], "Lost. worker lost");
  EXPECT_EQ(h["attempt"], "2");
  EXPECT_FALSE(h["stop_time"].empty());
  EXPECT_FALSE(in_zset("descprod:queue", id));
  EXPECT_FALSE(in_zset("descprod:leases", id));
  // Lost is terminal.
  EXPECT_FALSE(run(st.async_lease(id, "w3", 30)).ok);
  EXPECT_EQ(run(st.async_cancel(id, "alice")).reason, "terminal");
}

TEST_F(StoreTest, RequeueOfADispatchedJobGivesANewAttemptWithoutUsingOneUp) {
  // Its worker is gone and may have started it (the `started` report lost with a daemon that
  // stopped): the next run must not carry the same attempt number, and the job loses no attempt.
  auto id = create_one("alice", 0, 1);
  ASSERT_TRUE(run(st.async_lease(id, "w1", 30)).ok);
  auto r = run(st.async_requeue(id, 1, "w1", store::requeue_mode::lost, "worker drained"));
  ASSERT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.state, "ready");
  EXPECT_EQ(r.attempt, 2);
  EXPECT_EQ(hash(id)["attempt"], "2");
  EXPECT_EQ(hash(id)["max_attempts"], "2");
  EXPECT_EQ(hash(id)["state"], "ready");
  EXPECT_TRUE(in_zset("descprod:queue", id));
  EXPECT_FALSE(in_zset("descprod:leases", id));
  // The old run's reports are stale now; the new lease runs as attempt 2.
  EXPECT_EQ(run(st.async_start(id, 1, "w1", "h", "/r", 1)).reason, "stale");
  EXPECT_EQ(run_job(id, "w2"), 2);
}

TEST_F(StoreTest, PlainRequeueOfADispatchedJobKeepsItsAttempt) {
  // The daemon never sent it (walltime, its worker left before the send): no run happened.
  auto id = create_one("alice", 0, 1);
  ASSERT_TRUE(run(st.async_lease(id, "w1", 30)).ok);
  auto r = run(st.async_requeue(id, 1, "w1", store::requeue_mode::plain, "walltime"));
  ASSERT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.attempt, 1);
  EXPECT_EQ(hash(id)["max_attempts"], "1");
}

TEST_F(StoreTest, HandbackOfARunningJobGivesANewAttemptWithoutUsingOneUp) {
  auto id = create_one("alice", 0, 1);  // one attempt only: a lost worker would make it lost
  run_job(id, "w1");
  auto r = run(st.async_requeue(id, 1, "w1", store::requeue_mode::handback, "worker draining"));
  ASSERT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.state, "ready");
  EXPECT_EQ(r.attempt, 2);
  auto h = hash(id);
  EXPECT_EQ(h["attempt"], "2");
  EXPECT_EQ(h["max_attempts"], "2");
  EXPECT_TRUE(in_zset("descprod:queue", id));
  // The old attempt's events are stale now.
  EXPECT_EQ(run(st.async_finish(id, 1, "w1", job_state::done, 0, "Done", "")).reason, "stale");
}

TEST_F(StoreTest, RequeueWithoutWorkerMatchesAnyWorker) {
  auto id = create_one();
  run_job(id, "w1");
  auto r = run(st.async_requeue(id, 1, "", store::requeue_mode::plain, "daemon restart"));
  ASSERT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.attempt, 1);
  EXPECT_EQ(hash(id)["state"], "ready");
}

TEST_F(StoreTest, CancelOfAReadyJobCancelsItAtOnceAndRemovesItFromTheQueue) {
  auto id = create_one();
  auto r = run(st.async_cancel(id, "alice"));
  ASSERT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.state, "cancelled");
  auto h = hash(id);
  EXPECT_EQ(h["state"], "cancelled");
  EXPECT_EQ(h["progress"].rfind("Cancelled. ", 0), 0u) << h["progress"];
  EXPECT_NE(h["progress"].find("alice"), std::string::npos);
  EXPECT_FALSE(h["stop_time"].empty());
  EXPECT_FALSE(in_zset("descprod:queue", id));
  EXPECT_FALSE(run(st.async_lease(id, "w1", 30)).ok);
}

TEST_F(StoreTest, CancelOfARunningJobRequestsItAndTheKilledFinishBecomesCancelled) {
  auto id = create_one();
  run_job(id);
  auto r = run(st.async_cancel(id, "alice"));
  ASSERT_TRUE(r.ok) << r.reason;
  EXPECT_EQ(r.state, "cancel_requested");
  EXPECT_EQ(r.worker, "w1");
  EXPECT_EQ(hash(id)["state"], "running");
  EXPECT_EQ(hash(id)["cancel_requested"], "1");
  EXPECT_EQ(stream(st.job_key(id) + ":events").back()["type"], "cancel_requested");

  auto f = run(st.async_finish(id, 1, "w1", job_state::killed, -15, "Process received signal 15",
                               "stopping"));
  ASSERT_TRUE(f.ok) << f.reason;
  EXPECT_EQ(f.state, "cancelled");
  auto h = hash(id);
  EXPECT_EQ(h["state"], "cancelled");
  EXPECT_EQ(h["progress"], "Cancelled. stopping");
  EXPECT_EQ(h["return_status"], "-15");
  EXPECT_FALSE(in_zset("descprod:leases", id));
}

TEST_F(StoreTest, CancelRequestedJobThatFinishesDoneStaysDone) {
  auto id = create_one();
  run_job(id);
  ASSERT_TRUE(run(st.async_cancel(id, "alice")).ok);
  auto f = run(st.async_finish(id, 1, "w1", job_state::done, 0, "Done", "made it"));
  ASSERT_TRUE(f.ok);
  EXPECT_EQ(f.state, "done");
  EXPECT_EQ(hash(id)["progress"], "Done. made it");
}

TEST_F(StoreTest, CancelOfATerminalJobIsRefusedWithReasonTerminal) {
  auto id = create_one();
  run_job(id);
  ASSERT_TRUE(run(st.async_finish(id, 1, "w1", job_state::done, 0, "Done", "")).ok);
  auto before = hash(id);
  auto r = run(st.async_cancel(id, "alice"));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.reason, "terminal");
  EXPECT_EQ(r.state, "done");
  EXPECT_EQ(hash(id), before);
  EXPECT_EQ(run(st.async_cancel(424242, "alice")).reason, "missing");
}

TEST_F(StoreTest, CreateWithAnotherOwnersParentIsRefusedAndCreatesNothing) {
  auto parent = create_one("alice");
  auto events_before = cmd({"XLEN", "descprod:events"}).integer;
  std::vector<new_job> jobs;
  jobs.push_back(make_job("mysleep", "1"));
  jobs.push_back(make_job("mysleep", "2"));
  jobs.back().parent = parent;
  std::vector<job_id> ids;
  auto r = run(st.async_create("bob", std::move(jobs), ids));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.reason, "bad_parent");
  EXPECT_TRUE(ids.empty());
  EXPECT_EQ(cmd({"GET", "descprod:next_job_id"}).str, "1");
  EXPECT_EQ(cmd({"EXISTS", st.job_key(2)}).integer, 0);
  EXPECT_EQ(cmd({"EXISTS", "descprod:user:bob:jobs"}).integer, 0);
  EXPECT_EQ(cmd({"ZCARD", "descprod:queue"}).integer, 1);
  EXPECT_EQ(cmd({"XLEN", "descprod:events"}).integer, events_before);

  // A missing parent is refused the same way.
  std::vector<new_job> orphan;
  orphan.push_back(make_job("mysleep", "1"));
  orphan.back().parent = 999;
  EXPECT_EQ(run(st.async_create("alice", std::move(orphan), ids)).reason, "bad_parent");
}

TEST_F(StoreTest, CreateWithOwnParentRecordsTheChild) {
  auto parent = create_one("alice");
  std::vector<new_job> jobs;
  jobs.push_back(make_job("mysleep", "1"));
  jobs.back().parent = parent;
  auto ids = create("alice", std::move(jobs));
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(hash(ids[0])["parent"], std::to_string(parent));
  auto children = cmd({"SMEMBERS", st.job_key(parent) + ":children"});
  ASSERT_EQ(children.elements.size(), 1u);
  EXPECT_EQ(children.elements[0].str, std::to_string(ids[0]));
}

TEST_F(StoreTest, HostileStringsAreStoredVerbatimWithoutInjection) {
  const std::string hostile = "it's \"; redis.call('FLUSHALL') --\n]] end; return {'ok'} --[[ \xc3\xbc";
  std::vector<new_job> jobs;
  jobs.push_back(make_job("mysleep", "10"));
  jobs.back().howfig = hostile;
  jobs.back().session = hostile;
  auto ids = create("o'brien", std::move(jobs));
  ASSERT_EQ(ids.size(), 1u);
  auto id = ids[0];
  EXPECT_EQ(hash(id)["howfig"], hostile);
  EXPECT_EQ(hash(id)["session"], hostile);
  EXPECT_EQ(hash(id)["descname"], "o'brien");
  run_job(id, hostile);
  auto p = run(st.async_progress(id, 1, hostile, hostile, std::nullopt, std::nullopt));
  ASSERT_TRUE(p.ok) << p.reason;
  auto h = hash(id);
  EXPECT_EQ(h["worker"], hostile);
  EXPECT_EQ(h["message"], hostile);
  EXPECT_EQ(h["progress"], "Running. " + hostile);
  auto f = run(st.async_finish(id, 1, hostile, job_state::failed, 1, "Failed", hostile));
  ASSERT_TRUE(f.ok) << f.reason;
  EXPECT_EQ(hash(id)["progress"], "Failed. " + hostile);
  // Nothing was flushed: the counter, the user index and the events are all still there.
  EXPECT_EQ(cmd({"GET", "descprod:next_job_id"}).str, "1");
  EXPECT_TRUE(in_zset("descprod:user:o'brien:jobs", id));
  EXPECT_GE(cmd({"XLEN", "descprod:events"}).integer, 4);
}

TEST_F(StoreTest, ScriptsStillWorkAfterScriptFlush) {
  auto first = create_one();
  const auto& create_script = store_scripts().at(0);
  EXPECT_EQ(cmd({"SCRIPT", "EXISTS", sha1_hex(create_script)}).elements.at(0).integer, 1);
  ASSERT_EQ(cmd({"SCRIPT", "FLUSH"}).str, "OK");
  EXPECT_EQ(cmd({"SCRIPT", "EXISTS", sha1_hex(create_script)}).elements.at(0).integer, 0);
  auto second = create_one();
  EXPECT_EQ(second, first + 1);
  EXPECT_EQ(cmd({"SCRIPT", "EXISTS", sha1_hex(create_script)}).elements.at(0).integer, 1);
  // A different script, first used after the flush, works too.
  auto r = run(st.async_lease(second, "w1", 30));
  EXPECT_TRUE(r.ok) << r.reason;
}

// ---- many transitions in one call (the daemon's dispatch and outbox) ----

TEST_F(StoreTest, ClaimManyLeasesEachJobAsOneClaimWouldAndRefusesTheOthersInPlace) {
  std::vector<new_job> jobs;
  for (int i = 0; i < 3; ++i) jobs.push_back(make_job("mysleep", std::to_string(i)));
  auto ids = create("alice", std::move(jobs));
  ASSERT_EQ(ids.size(), 3u);
  ASSERT_TRUE(run(st.async_cancel(ids[1], "alice")).ok);  // cancelled: a lease is illegal
  std::vector<store::claim_request> q;
  q.push_back({ids[0], "w1", std::string(64, 'b')});
  q.push_back({ids[1], "w1", std::string(64, 'c')});
  q.push_back({ids[2], "w2", ""});  // no token
  q.push_back({ids[2] + 100, "w2", ""});
  auto rs = run(st.async_claim_many(std::move(q), 30, 60));
  ASSERT_EQ(rs.size(), 4u);
  ASSERT_TRUE(rs[0].ok) << rs[0].reason;
  EXPECT_EQ(rs[0].state, "dispatched");
  EXPECT_EQ(rs[0].worker, "w1");
  EXPECT_EQ(rs[0].attempt, 1);
  // The record is the job as leased, the same as the hash now holds.
  EXPECT_EQ(rs[0].record, hash(ids[0]));
  EXPECT_EQ(rs[0].record.at("state"), "dispatched");
  EXPECT_EQ(rs[0].record.at("config"), "0");
  EXPECT_FALSE(rs[1].ok);
  EXPECT_EQ(rs[1].reason, "illegal");
  EXPECT_EQ(rs[1].state, "cancelled");
  ASSERT_TRUE(rs[2].ok);
  EXPECT_EQ(hash(ids[2])["worker"], "w2");
  EXPECT_FALSE(rs[3].ok);
  EXPECT_EQ(rs[3].reason, "missing");
  // Off the queue, into the leases; a token only where one was asked for.
  EXPECT_TRUE(zrange("descprod:queue").empty());
  EXPECT_EQ(zrange("descprod:leases"), (std::vector<std::string>{std::to_string(ids[0]), std::to_string(ids[2])}));
  EXPECT_EQ(cmd({"HGET", "descprod:token:" + std::string(64, 'b'), "scope"}).str, "job:" + std::to_string(ids[0]));
  EXPECT_GT(cmd({"TTL", "descprod:token:" + std::string(64, 'b')}).integer, 0);
  EXPECT_EQ(cmd({"EXISTS", "descprod:token:" + std::string(64, 'c')}).integer, 0);
  EXPECT_EQ(stream(st.job_key(ids[0]) + ":events").back()["state"], "dispatched");
  // Both leases share the script's one time.
  EXPECT_EQ(hash(ids[0])["dispatch_time"], hash(ids[2])["dispatch_time"]);
}

TEST_F(StoreTest, ReportsApplyStartProgressAndFinishInOrderWithTheSameChecksAsOneByOne) {
  std::vector<new_job> jobs;
  for (int i = 0; i < 2; ++i) jobs.push_back(make_job("mysleep", std::to_string(i)));
  auto ids = create("alice", std::move(jobs));
  auto a = run(st.async_lease(ids[0], "w1", 30)).attempt;
  auto b = run(st.async_lease(ids[1], "w1", 30)).attempt;
  using kind = store::report::kind;
  std::vector<store::report> q;
  q.push_back({kind::start, ids[0], a, "w1", "host1", "/run/0", "11", ""});
  q.push_back({kind::progress, ids[0], a, "w1", "half way", "1", "2", ""});
  q.push_back({kind::finish, ids[0], a, "w1", "done", "0", "Done", "all good"});
  q.push_back({kind::start, ids[1], b + 1, "w1", "host1", "/run/1", "12", ""});  // stale attempt
  q.push_back({kind::start, ids[1], b, "w9", "host1", "/run/1", "12", ""});      // stale worker
  q.push_back({kind::progress, ids[1], b, "w1", "early", "", "", ""});          // not running yet
  q.push_back({kind::progress, ids[1] + 100, 1, "w1", "x", "", "", ""});         // missing
  auto rs = run(st.async_reports(std::move(q)));
  ASSERT_EQ(rs.size(), 7u);
  EXPECT_TRUE(rs[0].ok && rs[0].state == "running") << rs[0].reason;
  EXPECT_TRUE(rs[1].ok) << rs[1].reason;
  EXPECT_TRUE(rs[2].ok && rs[2].state == "done") << rs[2].reason;
  EXPECT_EQ(rs[3].reason, "stale");
  EXPECT_EQ(rs[4].reason, "stale");
  EXPECT_EQ(rs[5].reason, "illegal");
  EXPECT_EQ(rs[5].state, "dispatched");
  EXPECT_EQ(rs[6].reason, "missing");
  auto h = hash(ids[0]);
  EXPECT_EQ(h["state"], "done");
  EXPECT_EQ(h["host"], "host1");
  EXPECT_EQ(h["pid"], "11");
  EXPECT_EQ(h["done_count"], "1");
  EXPECT_EQ(h["progress"], "Done. all good");
  EXPECT_EQ(hash(ids[1])["state"], "dispatched");
  auto ev = stream(st.job_key(ids[0]) + ":events");
  ASSERT_GE(ev.size(), 5u);  // ready, dispatched, running, progress, done
  EXPECT_EQ(ev[ev.size() - 3]["state"], "running");
  EXPECT_EQ(ev[ev.size() - 2]["type"], "progress");
  EXPECT_EQ(ev[ev.size() - 1]["state"], "done");
  EXPECT_EQ(zrange("descprod:leases"), (std::vector<std::string>{std::to_string(ids[1])}));
}

TEST_F(StoreTest, OneJobWithBrokenKeysInABatchIsRefusedAloneAndLeftAsItWas) {
  std::vector<new_job> jobs;
  for (int i = 0; i < 3; ++i) jobs.push_back(make_job("mysleep", std::to_string(i)));
  auto ids = create("alice", std::move(jobs));
  // Job 2's hash replaced by a string (an operator's mistake); job 3's own event stream too.
  ASSERT_EQ(cmd({"SET", st.job_key(ids[1]), "oops"}).str, "OK");
  ASSERT_EQ(cmd({"SET", st.job_key(ids[2]) + ":events", "oops"}).str, "OK");
  std::vector<store::claim_request> q;
  for (auto id : ids) q.push_back({id, "w1", ""});
  auto rs = run(st.async_claim_many(std::move(q), 30, 60));
  ASSERT_EQ(rs.size(), 3u);
  EXPECT_TRUE(rs[0].ok) << rs[0].reason;
  EXPECT_FALSE(rs[1].ok);
  EXPECT_EQ(rs[1].reason, "error");
  EXPECT_NE(rs[1].state.find("WRONGTYPE"), std::string::npos) << rs[1].state;
  // A broken job stream does not stop the transition: the job is leased, its hash says so.
  EXPECT_TRUE(rs[2].ok) << rs[2].reason << " " << rs[2].state;
  EXPECT_EQ(hash(ids[2])["state"], "dispatched");
  EXPECT_EQ(cmd({"GET", st.job_key(ids[1])}).str, "oops") << "left as it was";
  EXPECT_TRUE(in_zset("descprod:queue", ids[1])) << "still queued";
  // Reports: the same, one job's error is its own result.
  using kind = store::report::kind;
  std::vector<store::report> r;
  r.push_back({kind::start, ids[0], 1, "w1", "h", "/r", "1", ""});
  r.push_back({kind::start, ids[1], 1, "w1", "h", "/r", "1", ""});
  r.push_back({kind::start, ids[2], 1, "w1", "h", "/r", "1", ""});
  auto rr = run(st.async_reports(std::move(r)));
  ASSERT_EQ(rr.size(), 3u);
  EXPECT_TRUE(rr[0].ok);
  EXPECT_EQ(rr[1].reason, "error");
  EXPECT_TRUE(rr[2].ok);
  EXPECT_EQ(hash(ids[0])["state"], "running");
  EXPECT_EQ(hash(ids[2])["state"], "running");
}

// Runs the io_context until every spawned create has its answer, bounded at 10 s (the Redis
// client's read loop keeps the io_context busy, so run() alone would not return).
void run_until_answered(net::io_context& ioc, const std::size_t& answered, std::size_t expected) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  ioc.restart();
  while (answered < expected && std::chrono::steady_clock::now() < deadline) ioc.run_for(5ms);
}

// The gateway's group commit of single-job creates (gateway/notices.hpp) against a real Redis.
TEST_F(StoreTest, CreateBatcherWritesTheCreatesOfOneTurnAsOneCallPerOwnerAndAnswersEachWithItsJob) {
  gateway::create_batcher batcher(ioc.get_executor(), st);
  std::size_t answered = 0;
  std::vector<gateway::create_batcher::result> results(60);
  std::vector<std::string> owners(60);
  for (int i = 0; i < 60; ++i) {
    owners[i] = i % 3 == 0 ? "bob" : "alice";
    net::co_spawn(ioc,
                  [&, i]() -> net::awaitable<void> {
                    results[i] = co_await batcher.create(owners[i], make_job("mysleep", "c" + std::to_string(i)));
                    ++answered;
                  },
                  net::detached);
  }
  run_until_answered(ioc, answered, 60);
  // One script call per owner, and one more for every full group of max_jobs (sent at once).
  auto calls_for = [](std::size_t jobs) { return (jobs + gateway::create_batcher::max_jobs - 1) / gateway::create_batcher::max_jobs; };
  const std::size_t first_calls = calls_for(40) + calls_for(20);  // alice 40, bob 20
  EXPECT_EQ(batcher.calls(), first_calls);
  EXPECT_EQ(batcher.jobs(), 60u);
  std::set<job_id> ids;
  for (int i = 0; i < 60; ++i) {
    ASSERT_TRUE(results[i].ok) << i << " " << results[i].reason;
    ids.insert(results[i].id);
    auto h = hash(results[i].id);
    EXPECT_EQ(h["config"], "c" + std::to_string(i)) << "each caller gets its own job";
    EXPECT_EQ(h["descname"], owners[i]);
    EXPECT_EQ(h["create_time"], results[i].time);
  }
  EXPECT_EQ(ids.size(), 60u);
  EXPECT_EQ(cmd({"ZCARD", "descprod:queue"}).integer, 60);

  // More than max_jobs in one turn: several calls, every job created once.
  const int n = static_cast<int>(gateway::create_batcher::max_jobs) + 10;
  std::vector<gateway::create_batcher::result> more(n);
  answered = 0;
  for (int i = 0; i < n; ++i)
    net::co_spawn(ioc,
                  [&, i]() -> net::awaitable<void> {
                    more[i] = co_await batcher.create("alice", make_job("mysleep", "m" + std::to_string(i)));
                    ++answered;
                  },
                  net::detached);
  run_until_answered(ioc, answered, static_cast<std::size_t>(n));
  EXPECT_EQ(batcher.calls(), first_calls + calls_for(n));
  for (int i = 0; i < n; ++i) EXPECT_TRUE(more[i].ok) << i;
  EXPECT_EQ(cmd({"ZCARD", "descprod:queue"}).integer, 60 + n);
}

TEST_F(StoreTest, CreateBatcherHandsEachCallerTheErrorWhenRedisIsUnreachable) {
  // A client never connected: the call fails at once, as with Redis gone; nothing is created.
  redis_client offline{ioc.get_executor(), server.endpoint()};
  store off{offline, "descprod:"};
  gateway::create_batcher batcher(ioc.get_executor(), off);
  std::size_t answered = 0;
  std::vector<gateway::create_batcher::result> results(3);
  for (int i = 0; i < 3; ++i)
    net::co_spawn(ioc,
                  [&, i]() -> net::awaitable<void> {
                    results[i] = co_await batcher.create("alice", make_job("mysleep", "x"));
                    ++answered;
                  },
                  net::detached);
  run_until_answered(ioc, answered, 3);
  for (const auto& r : results) {
    EXPECT_FALSE(r.ok);
    ASSERT_TRUE(r.error);
    EXPECT_THROW(std::rethrow_exception(r.error), boost::system::system_error);
  }
  EXPECT_EQ(cmd({"EXISTS", "descprod:next_job_id"}).integer, 0);
}

TEST_F(StoreTest, GetReturnsTheRecordOrNothing) {
  auto id = create_one();
  auto r = run(st.async_get(id));
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["state"], "ready");
  EXPECT_EQ((*r)["id"], std::to_string(id));
  EXPECT_FALSE(run(st.async_get(id + 100)));
}

// ---- jobs by state (P stats:jobs_by_state) ----

class StateCountTest : public StoreTest {
 protected:
  // The counts the hash holds (fields starting '_' left out), and whether a recount runs.
  std::map<std::string, long long> counts() {
    std::map<std::string, long long> out;
    auto r = cmd({"HGETALL", "descprod:stats:jobs_by_state"});
    for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
      if (r.elements[i].str.rfind('_', 0) == 0) continue;
      auto n = std::stoll(r.elements[i + 1].str);
      if (n != 0) out[r.elements[i].str] = n;
    }
    return out;
  }
  // The truth: every job hash's state, by reading them all.
  std::map<std::string, long long> actual() {
    std::map<std::string, long long> out;
    auto last = cmd({"GET", "descprod:next_job_id"});
    long long n = last.is_nil() ? 0 : std::stoll(last.str);
    for (long long id = 1; id <= n; ++id) {
      auto s = cmd({"HGET", st.job_key(id), "state"});
      if (!s.is_nil()) ++out[s.str];
    }
    return out;
  }
  long long finish(job_id id, long long attempt, job_state target = job_state::done) {
    auto out = classify_exit(target == job_state::done ? 0 : 1, 0, false);
    auto r = run(st.async_finish(id, attempt, "w1", out.state, out.return_status, out.prefix, "m"));
    EXPECT_TRUE(r.ok) << r.reason << " " << r.state;
    return attempt;
  }
};

TEST_F(StateCountTest, NoCountsAreKeptBeforeTheFirstRecount) {
  create_one();
  run_job(create_one());
  EXPECT_EQ(cmd({"EXISTS", "descprod:stats:jobs_by_state"}).integer, 0);
  EXPECT_FALSE(run(st.async_state_counts()));
  EXPECT_EQ(run(st.async_recount_states()), 2);
  EXPECT_EQ(counts(), (std::map<std::string, long long>{{"ready", 1}, {"running", 1}}));
  auto c = run(st.async_state_counts());
  ASSERT_TRUE(c);
  EXPECT_EQ(c->size(), all_job_states().size()) << "every state, zeros included";
  EXPECT_EQ((*c)["running"], 1);
  EXPECT_EQ((*c)["lost"], 0);
}

TEST_F(StateCountTest, CountsFollowEveryTransitionScript) {
  EXPECT_EQ(run(st.async_recount_start(false)), "started");
  EXPECT_EQ(run(st.async_recount_states()), 0) << "an empty store";
  EXPECT_EQ(run(st.async_recount_start(false)), "exists");
  auto check = [&](const char* after) { EXPECT_EQ(counts(), actual()) << "after " << after; };
  std::vector<new_job> jobs;
  for (int i = 0; i < 6; ++i) jobs.push_back(make_job("mysleep", std::to_string(i), 0, 1));
  auto ids = create("alice", std::move(jobs));
  ASSERT_EQ(ids.size(), 6u);
  check("create");
  EXPECT_EQ(counts()["ready"], 6);
  auto l = run(st.async_lease(ids[0], "w1", 30));
  ASSERT_TRUE(l.ok);
  check("lease");
  ASSERT_TRUE(run(st.async_start(ids[0], l.attempt, "w1", "h", "/r", 1)).ok);
  check("start");
  ASSERT_TRUE(run(st.async_progress(ids[0], l.attempt, "w1", "half", 1, 2)).ok);
  check("progress");
  finish(ids[0], l.attempt);
  check("finish done");
  EXPECT_FALSE(run(st.async_finish(ids[0], l.attempt, "w1", job_state::failed, 1, "Failed", "")).ok);
  check("a refused second finish");
  finish(ids[1], run_job(ids[1]), job_state::failed);
  check("finish failed");
  // Requeue as is (dispatched), then lost (running, no attempts left: max_attempts 1).
  auto l2 = run(st.async_lease(ids[2], "w1", 30));
  ASSERT_TRUE(run(st.async_requeue(ids[2], l2.attempt, "w1", store::requeue_mode::plain, "gone")).ok);
  check("requeue dispatched");
  auto a = run_job(ids[2]);
  auto lost = run(st.async_requeue(ids[2], a, "w1", store::requeue_mode::lost, "gone"));
  ASSERT_TRUE(lost.ok);
  EXPECT_EQ(lost.state, "lost");
  check("lost");
  // Handback of a running job: back to ready.
  auto a3 = run_job(ids[3]);
  ASSERT_TRUE(run(st.async_requeue(ids[3], a3, "w1", store::requeue_mode::handback, "drain")).ok);
  check("handback");
  ASSERT_TRUE(run(st.async_cancel(ids[3], "alice")).ok);
  check("cancel ready");
  auto a4 = run_job(ids[4]);
  ASSERT_TRUE(run(st.async_cancel(ids[4], "alice")).ok);
  check("cancel requested (no state change)");
  EXPECT_EQ(counts()["running"], 1);
  auto killed = classify_exit(0, 15, false);
  auto k = run(st.async_finish(ids[4], a4, "w1", killed.state, killed.return_status, killed.prefix, ""));
  EXPECT_EQ(k.state, "cancelled");
  check("cancel finish");
  ASSERT_TRUE(run(st.async_claim(ids[5], "cli:h", 1e6, std::string(64, 'a'), 60)).ok);
  check("claim");
  ASSERT_TRUE(run(st.async_set_archive(ids[0], true)).ok);
  check("archive");
  ASSERT_TRUE(run(st.async_delete(ids[0])).ok);
  ASSERT_TRUE(run(st.async_delete(ids[1])).ok);
  EXPECT_FALSE(run(st.async_delete(ids[5])).ok) << "active";
  check("delete");
  EXPECT_EQ(counts(), (std::map<std::string, long long>{{"cancelled", 2}, {"dispatched", 1}, {"lost", 1}}));
}

TEST_F(StateCountTest, BatchesMoveTheCountsOncePerJobAndNotForRefusals) {
  EXPECT_EQ(run(st.async_recount_start(false)), "started");
  run(st.async_recount_states());
  std::vector<new_job> jobs;
  for (int i = 0; i < 4; ++i) jobs.push_back(make_job("mysleep", std::to_string(i)));
  auto ids = create("alice", std::move(jobs));
  std::vector<store::claim_request> q;
  for (auto id : ids) q.push_back({id, "w1", ""});
  q.push_back({ids[0], "w1", ""});  // a second lease of the same job: refused, not counted
  auto ls = run(st.async_claim_many(std::move(q), 30, 60));
  ASSERT_EQ(ls.size(), 5u);
  EXPECT_FALSE(ls[4].ok);
  EXPECT_EQ(counts(), actual());
  EXPECT_EQ(counts()["dispatched"], 4);
  using kind = store::report::kind;
  std::vector<store::report> r;
  for (auto id : ids) r.push_back({kind::start, id, 1, "w1", "h", "/r", "1", ""});
  r.push_back({kind::finish, ids[0], 1, "w1", "done", "0", "Done", ""});
  r.push_back({kind::finish, ids[1], 1, "w1", "failed", "1", "Failed", ""});
  r.push_back({kind::finish, ids[1], 1, "w1", "done", "0", "Done", ""});  // refused: already failed
  auto rs = run(st.async_reports(std::move(r)));
  ASSERT_EQ(rs.size(), 7u);
  EXPECT_FALSE(rs[6].ok);
  EXPECT_EQ(counts(), actual());
  EXPECT_EQ(counts(), (std::map<std::string, long long>{{"done", 1}, {"failed", 1}, {"running", 2}}));
}

TEST_F(StateCountTest, ARecountCountsEachJobOnceWhateverRunsMeanwhile) {
  std::vector<new_job> jobs;
  for (int i = 0; i < 25; ++i) jobs.push_back(make_job("mysleep", std::to_string(i)));
  auto ids = create("alice", std::move(jobs));
  run_job(ids[4]);
  finish(ids[6], run_job(ids[6]));
  ASSERT_TRUE(run(st.async_delete(ids[6])).ok);
  // A stale hash from before (wrong numbers) is left alone without force...
  cmd({"HSET", "descprod:stats:jobs_by_state", "ready", "999"});
  EXPECT_EQ(run(st.async_recount_start(false)), "exists");
  // ...and replaced with force: a recount from zero, in batches of 10 IDs.
  EXPECT_EQ(run(st.async_recount_start(true)), "started");
  EXPECT_FALSE(run(st.async_state_counts())) << "no counts while recounting";
  long long upto = 0;
  EXPECT_FALSE(run(st.async_recount_step(10, &upto)));
  EXPECT_EQ(upto, 10);
  EXPECT_EQ(run(st.async_recount_start(false)), "rebuilding");
  // Transitions on both sides of the cursor, a creation and a deletion, mid-recount.
  run_job(ids[2]);                          // counted already: moves its count
  finish(ids[4], 1);                        // counted already (running → done)
  run_job(ids[15]);                         // not yet: counted when the recount gets there
  finish(ids[20], run_job(ids[20]));
  ASSERT_TRUE(run(st.async_delete(ids[20])).ok);
  create_one();                             // ID 26, beyond the counter the recount started with
  EXPECT_FALSE(run(st.async_recount_step(10, &upto)));
  EXPECT_EQ(upto, 20);
  run_job(ids[22]);
  EXPECT_TRUE(run(st.async_recount_step(10, &upto)));
  EXPECT_EQ(upto, 26);
  EXPECT_EQ(cmd({"HEXISTS", "descprod:stats:jobs_by_state", "_rebuild_upto"}).integer, 0);
  EXPECT_EQ(counts(), actual());
  EXPECT_EQ(counts(), (std::map<std::string, long long>{{"ready", 20}, {"running", 3}, {"done", 1}}));
  // Done: a further step does nothing, transitions keep counting.
  EXPECT_TRUE(run(st.async_recount_step(10, &upto)));
  finish(ids[22], 1);
  EXPECT_EQ(counts(), actual());
  ASSERT_TRUE(run(st.async_state_counts()));
}

// ---- the pipelining client ----

class RedisClientTest : public ::testing::Test {
 protected:
  test::redis_server server;
  net::io_context ioc;
  redis_client redis{ioc.get_executor(), server.endpoint()};
};

// One client coroutine of the pipelining test: INCR, then SET and GET its own key.
net::awaitable<void> incr_and_roundtrip(redis_client& redis, int i, std::vector<long long>& incrs,
                                        std::vector<std::string>& gets, int& finished) {
  std::vector<std::string> incr;
  incr.push_back("INCR");
  incr.push_back("counter");
  auto n = co_await redis.async_exec(std::move(incr));
  incrs[i] = n.integer;
  std::vector<std::string> set;
  set.push_back("SET");
  set.push_back("key:" + std::to_string(i));
  set.push_back("value-" + std::to_string(i));
  co_await redis.async_exec(std::move(set));
  std::vector<std::string> get;
  get.push_back("GET");
  get.push_back("key:" + std::to_string(i));
  auto g = co_await redis.async_exec(std::move(get));
  gets[i] = g.str;
  ++finished;
}

TEST_F(RedisClientTest, ThousandConcurrentCommandsEachGetTheirOwnReply) {
  test::run_async(ioc, redis.async_connect());
  constexpr int n = 1000;
  std::vector<long long> incrs(n, 0);
  std::vector<std::string> gets(n);
  int finished = 0;
  int failed = 0;
  for (int i = 0; i < n; ++i)
    net::co_spawn(ioc, incr_and_roundtrip(redis, i, incrs, gets, finished),
                  [&](std::exception_ptr e) {
                    if (e) ++failed;
                  });
  ASSERT_TRUE(test::run_until(ioc, [&] { return finished + failed == n; }, 30s));
  EXPECT_EQ(failed, 0);
  auto sorted = incrs;
  std::sort(sorted.begin(), sorted.end());
  std::vector<long long> expected(n);
  std::iota(expected.begin(), expected.end(), 1);
  EXPECT_EQ(sorted, expected);
  for (int i = 0; i < n; ++i) EXPECT_EQ(gets[i], "value-" + std::to_string(i));
}

TEST_F(RedisClientTest, PipelineReturnsRepliesInOrderAndErrorsAsReplies) {
  test::run_async(ioc, redis.async_connect());
  std::vector<std::vector<std::string>> cmds = {
      {"SET", "a", "1"}, {"INCR", "a"}, {"HGET", "a", "x"}, {"GET", "missing"}, {"LRANGE", "l", "0", "-1"}};
  auto replies = test::run_async(ioc, redis.async_pipeline(cmds));
  ASSERT_EQ(replies.size(), 5u);
  EXPECT_EQ(replies[0].type, redis_reply::kind::status);
  EXPECT_EQ(replies[0].str, "OK");
  EXPECT_EQ(replies[1].integer, 2);
  EXPECT_TRUE(replies[2].is_error());
  EXPECT_EQ(replies[2].str.rfind("WRONGTYPE", 0), 0u) << replies[2].str;
  EXPECT_TRUE(replies[3].is_nil());
  EXPECT_EQ(replies[4].type, redis_reply::kind::array);
  EXPECT_TRUE(replies[4].elements.empty());
}

TEST_F(RedisClientTest, PendingCallsThrowSystemErrorWhenTheServerIsKilled) {
  test::run_async(ioc, redis.async_connect());
  std::vector<std::string> blpop = {"BLPOP", "never", "0"};
  auto pending = net::co_spawn(ioc, redis.async_exec(blpop), net::use_future);
  redis_sync inspect(server.endpoint());
  // Wait until the server holds the call, so it is truly pending when the server dies.
  ASSERT_TRUE(test::run_until(
      ioc,
      [&] {
        auto info = inspect.exec({"INFO", "clients"}).str;
        return info.find("blocked_clients:1") != std::string::npos;
      },
      10s));
  server.kill9();
  ASSERT_TRUE(test::run_until(
      ioc, [&] { return pending.wait_for(0s) == std::future_status::ready; }, 10s));
  EXPECT_THROW(pending.get(), boost::system::system_error);
  EXPECT_FALSE(redis.connected());
  std::vector<std::string> ping = {"PING"};
  EXPECT_THROW(test::run_async(ioc, redis.async_exec(ping)), boost::system::system_error);

  // After a restart on the same socket the client connects again.
  server.start();
  test::run_async(ioc, redis.async_connect());
  EXPECT_EQ(test::run_async(ioc, redis.async_exec(ping)).str, "PONG");
}

TEST_F(RedisClientTest, ConnectToAMissingSocketThrowsSystemError) {
  test::temp_dir dir;
  redis_endpoint ep;
  ep.unix_path = dir.file("nobody.sock");
  redis_client lonely(ioc.get_executor(), ep);
  EXPECT_THROW(test::run_async(ioc, lonely.async_connect()), boost::system::system_error);
  EXPECT_FALSE(lonely.connected());
}

}  // namespace
}  // namespace descprod
