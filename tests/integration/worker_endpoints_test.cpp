// A worker given several daemon endpoints (worker.daemon_endpoint "a,b"; issue 15 item 1): it
// connects to all of them and talks to the one that is bound (the leader; a standby binds
// nothing), and when the leader goes and another daemon binds its own endpoint, the worker's next
// messages reach that one, which has it say hello again. The test plays both daemons with plain
// ROUTER sockets (worker_fixture.hpp).
#include "core/protocol.hpp"
#include "tests/integration/worker_fixture.hpp"

namespace {

TEST_F(Worker, WithSeveralEndpointsItTalksToTheBoundOneAndFollowsTheNextLeader) {
  // The first endpoint is a standby's: nothing is bound there yet. Without ZMQ_IMMEDIATE the
  // hello would wait in that endpoint's queue and the leader would never see it.
  const std::string standby = "ipc://" + (dir_.path / "standby.ipc").string();
  auto o = options();
  o.endpoint = standby + "," + endpoint_;
  start_worker(o);
  ASSERT_FALSE(handshake().empty());
  ASSERT_TRUE(daemon_->expect("heartbeat"));

  // The leader dies; the standby takes over and binds its endpoint.
  daemon_.reset();
  fake_daemon next(ctx_, standby);
  auto heartbeat = next.expect("heartbeat");
  ASSERT_TRUE(heartbeat) << "the worker's messages did not reach the new leader";
  json::object reject;
  reject["reason"] = "unknown worker: send hello";
  reject["retry"] = true;
  next.send(heartbeat->route, "reject", reject);
  auto hello = next.expect("hello");
  ASSERT_TRUE(hello) << "no hello to the new leader";
  EXPECT_EQ(hello->body.at("worker").as_string(), "test-worker");
  EXPECT_EQ(hello->body.at("minor").as_int64(), descprod::protocol::minor);
  next.send(hello->route, "welcome", welcome_body());
  EXPECT_TRUE(next.expect("heartbeat", [&](const daemon_msg& m) { return m.route == hello->route; }));
}

}  // namespace
