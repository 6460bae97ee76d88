// The Redis job store against a real redis-server: every transition script, its refusals, the
// key layout (core/keys.hpp), injection safety and the NOSCRIPT fallback. Batches:
// store_batch_test.cpp; state counts and the client: store_counts_test.cpp; the layout, KEYS and
// the refusal words: store_layout_test.cpp.
#include "tests/integration/store_fixture.hpp"

namespace descprod {
namespace {

using namespace test_store;
using namespace std::chrono_literals;

TEST_F(StoreTest, CreateAssignsConsecutiveIdsAndWritesHashQueueUserIndexAndEvents) {
  std::vector<new_job> jobs;
  jobs.push_back(make_job("mysleep", "10", 5, 2));
  jobs.push_back(make_job("parsltest", "sleep-ttsk2-ntsk20-nwrk4"));
  jobs.back().howfig = "fast";
  jobs.back().session = "77";
  jobs.push_back(make_job("mysleep", "3"));
  double before = now_s();
  EXPECT_EQ(create("alice", std::move(jobs)), (std::vector<job_id>{1, 2, 3}));
  EXPECT_EQ(create("bob", {make_job("mysleep", "1"), make_job("mysleep", "2")}), (std::vector<job_id>{4, 5}));
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
  std::vector<new_job> jobs;
  jobs.push_back(make_job("mysleep", "1"));
  auto r = run(other.async_create("carol", std::move(jobs)));
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.ids, std::vector<job_id>{1});
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
  EXPECT_EQ(again.reason, refusal::illegal);
  EXPECT_EQ(again.state, "dispatched");
  EXPECT_EQ(hash(id)["worker"], "w1");
  auto missing = run(st.async_lease(999, "w1", 30));
  EXPECT_FALSE(missing.ok);
  EXPECT_EQ(missing.reason, refusal::missing);
  EXPECT_EQ(cmd({"EXISTS", st.job_key(999)}).integer, 0);
}

TEST_F(StoreTest, StartWithStaleAttemptOrWrongWorkerIsRefusedAndChangesNothing) {
  auto id = create_one();
  ASSERT_TRUE(run(st.async_lease(id, "w1", 30)).ok);
  auto before = hash(id);
  auto events_before = cmd({"XLEN", "descprod:events"}).integer;

  auto old_attempt = run(st.async_start(id, 2, "w1", "host1", "/tmp/run", 1));
  EXPECT_FALSE(old_attempt.ok);
  EXPECT_EQ(old_attempt.reason, refusal::stale);
  EXPECT_EQ(old_attempt.state, "dispatched");
  auto other_worker = run(st.async_start(id, 1, "w2", "host2", "/tmp/run", 1));
  EXPECT_FALSE(other_worker.ok);
  EXPECT_EQ(other_worker.reason, refusal::stale);

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
  EXPECT_EQ(again.reason, refusal::illegal);
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
  EXPECT_EQ(stale.reason, refusal::stale);
  EXPECT_EQ(hash(id)["message"], "");
}

TEST_F(StoreTest, ProgressOfAJobThatIsNotRunningIsRefused) {
  auto id = create_one();
  ASSERT_TRUE(run(st.async_lease(id, "w1", 30)).ok);
  auto r = run(st.async_progress(id, 1, "w1", "early", std::nullopt, std::nullopt));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.reason, refusal::illegal);
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
  EXPECT_EQ(r.reason, refusal::illegal);
  run_job(id);
  auto bad = run(st.async_finish(id, 1, "w1", job_state::ready, 0, "Ready", ""));
  EXPECT_FALSE(bad.ok);
  EXPECT_EQ(bad.reason, refusal::illegal);
  EXPECT_EQ(hash(id)["state"], "running");
}

TEST_F(StoreTest, SecondFinishIsRefusedBecauseTheFirstTerminalEventWins) {
  auto id = create_one();
  run_job(id);
  ASSERT_TRUE(run(st.async_finish(id, 1, "w1", job_state::done, 0, "Done", "first")).ok);
  auto before = hash(id);
  auto second = run(st.async_finish(id, 1, "w1", job_state::failed, 1, "Failed", "second"));
  EXPECT_FALSE(second.ok);
  EXPECT_EQ(second.reason, refusal::illegal);
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
  EXPECT_EQ(stale_start.reason, refusal::stale);
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
  EXPECT_EQ(run(st.async_cancel(id, "alice")).reason, refusal::terminal);
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
  EXPECT_EQ(run(st.async_start(id, 1, "w1", "h", "/r", 1)).reason, refusal::stale);
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

TEST_F(StoreTest, AJobAskedToStopIsCancelledInsteadOfRequeuedInEveryMode) {
  // A cancel that found the job dispatched or running sets cancel_requested; if its worker then
  // leaves, hands it back or was never sent it, the job must not run again.
  for (auto mode : {store::requeue_mode::plain, store::requeue_mode::lost, store::requeue_mode::handback}) {
    auto id = create_one("alice", 0, 3);
    run_job(id, "w1");
    ASSERT_TRUE(run(st.async_cancel(id, "alice")).ok);
    EXPECT_EQ(hash(id)["cancel_requested"], "1");
    auto r = run(st.async_requeue(id, 1, "w1", mode, "worker lost"));
    ASSERT_TRUE(r.ok) << r.reason;
    EXPECT_EQ(r.state, "cancelled") << static_cast<int>(mode);
    auto h = hash(id);
    EXPECT_EQ(h["state"], "cancelled");
    EXPECT_EQ(h["progress"], "Cancelled. It was asked to stop; it was not run again (worker lost)");
    EXPECT_FALSE(in_zset("descprod:queue", id));
    EXPECT_FALSE(in_zset("descprod:leases", id));
    EXPECT_EQ(stream(st.job_key(id) + ":events").back()["state"], "cancelled");
  }
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
  EXPECT_EQ(run(st.async_finish(id, 1, "w1", job_state::done, 0, "Done", "")).reason, refusal::stale);
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

  auto f =
      run(st.async_finish(id, 1, "w1", job_state::killed, -15, "Process received signal 15", "stopping"));
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
  EXPECT_EQ(r.reason, refusal::terminal);
  EXPECT_EQ(r.state, "done");
  EXPECT_EQ(hash(id), before);
  EXPECT_EQ(run(st.async_cancel(424242, "alice")).reason, refusal::missing);
}

TEST_F(StoreTest, CreateWithAnotherOwnersParentIsRefusedAndCreatesNothing) {
  auto parent = create_one("alice");
  auto events_before = cmd({"XLEN", "descprod:events"}).integer;
  std::vector<new_job> jobs;
  jobs.push_back(make_job("mysleep", "1"));
  jobs.push_back(make_job("mysleep", "2"));
  jobs.back().parent = parent;
  auto r = run(st.async_create("bob", std::move(jobs)));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.reason, refusal::bad_parent);
  EXPECT_EQ(r.parent, std::to_string(parent));
  EXPECT_TRUE(r.ids.empty());
  EXPECT_EQ(cmd({"GET", "descprod:next_job_id"}).str, "1");
  EXPECT_EQ(cmd({"EXISTS", st.job_key(2)}).integer, 0);
  EXPECT_EQ(cmd({"EXISTS", "descprod:user:bob:jobs"}).integer, 0);
  EXPECT_EQ(cmd({"ZCARD", "descprod:queue"}).integer, 1);
  EXPECT_EQ(cmd({"XLEN", "descprod:events"}).integer, events_before);

  // A missing parent is refused the same way.
  std::vector<new_job> orphan;
  orphan.push_back(make_job("mysleep", "1"));
  orphan.back().parent = 999;
  EXPECT_EQ(run(st.async_create("alice", std::move(orphan))).reason, refusal::bad_parent);
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

}  // namespace
}  // namespace descprod
