// Integration tests of descprod-worker's job queue and connection (worker_fixture.hpp: the worker
// library against a fake daemon on ipc://): jobs beyond its slots, prefetch, reconnecting when the
// daemon falls silent, drain and bye, rejection, and a daemon that forgets it.
#include "tests/integration/worker_fixture.hpp"

namespace {

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
  EXPECT_FALSE(fs::exists(dir_.path / "out" / "jobs" / "job000061"))
      << "a handed-back job left a run directory";
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
  ASSERT_TRUE(eventually(
      [&] { return slurp(rundir / "wrapper-status.json").find("return_status") != std::string::npos; }));
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

}  // namespace
