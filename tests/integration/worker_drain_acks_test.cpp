// A worker stopped (SIGTERM: a drain) while the daemon that last welcomed it is gone must deliver
// the reports the daemon has not acknowledged before it exits: found by the rolling-restart test
// (ha.Upgrade), where a worker restarted between two daemon sessions took four `finished` reports
// with it and their jobs ran a second time. The test plays both daemons with plain ROUTER sockets
// (worker_fixture.hpp).
#include "tests/integration/worker_fixture.hpp"

namespace {

json::object acking_welcome() {
  auto w = welcome_body(100, 60000);
  w["acks"] = true;
  return w;
}

TEST_F(Worker, ADrainWaitsUntilTheDaemonHasAcknowledgedItsReports) {
  start_worker();
  auto route = handshake(acking_welcome());
  ASSERT_FALSE(route.empty());
  daemon_->send(route, "job", job_body(41, {"/bin/true"}));
  auto finished = daemon_->expect("finished", for_job(41));
  ASSERT_TRUE(finished) << "no finished";
  EXPECT_TRUE(finished->body.at("ack").as_bool());
  // The daemon dies before acknowledging it; the worker is told to stop meanwhile.
  daemon_.reset();
  net::post(ioc_, [this] { worker_->stop(); });
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(exit_.wait_for(0ms), std::future_status::timeout)
      << "the worker left with the report unacknowledged";

  // The next daemon: the worker's heartbeat reaches it, it asks for a hello; the hello lists the
  // job, the report comes again and is acknowledged; then the worker says bye and exits 0.
  fake_daemon next(ctx_, endpoint_);
  auto heartbeat = next.expect("heartbeat");
  ASSERT_TRUE(heartbeat);
  json::object reject;
  reject["reason"] = "unknown worker: send hello";
  reject["retry"] = true;
  next.send(heartbeat->route, "reject", reject);
  auto hello = next.expect("hello");
  ASSERT_TRUE(hello);
  const auto& running = hello->body.at("running").as_array();
  ASSERT_EQ(running.size(), 1u) << json::serialize(hello->body);
  EXPECT_EQ(running[0].as_object().at("job").as_int64(), 41);
  next.send(hello->route, "welcome", acking_welcome());
  auto again = next.expect("finished", for_job(41));
  ASSERT_TRUE(again) << "the report was not sent again";
  EXPECT_TRUE(next.expect("drain"));
  json::object ack;
  json::array reports;
  reports.push_back(json::array{41, 1, "started"});
  reports.push_back(json::array{41, 1, "finished"});
  ack["reports"] = reports;
  next.send(hello->route, "ack", ack);
  EXPECT_TRUE(next.expect("bye"));
  EXPECT_EQ(wait_exit(), 0);
}

TEST_F(Worker, ADrainGivesUpOnAcknowledgementsAfterTheDrainGrace) {
  auto o = options();
  o.drain_grace = 500ms;
  start_worker(o);
  auto route = handshake(acking_welcome());
  daemon_->send(route, "job", job_body(42, {"/bin/true"}));
  ASSERT_TRUE(daemon_->expect("finished", for_job(42)));
  daemon_.reset();  // and no daemon comes back
  auto t0 = steady::now();
  net::post(ioc_, [this] { worker_->stop(); });
  EXPECT_EQ(wait_exit(), 0);
  EXPECT_GE(steady::now() - t0, 450ms);
}

}  // namespace
