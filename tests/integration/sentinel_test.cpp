// Redis behind Sentinel (issue 15 item 2; core/redis.hpp): the clients against a real redis-server
// master, its replica and three real Debian redis-sentinel processes on loopback ports. A client
// given the sentinels reaches the master they name, follows a failover (+switch-master) to the new
// master, skips sentinels that do not answer, and refuses a server that is not a master; the
// store's WAIT (set_replication) answers a write once the replica has it, and stops waiting for a
// while when the replica is gone.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>

#include "core/redis.hpp"
#include "core/store.hpp"
#include "tests/support/sentinel.hpp"

namespace descprod::test {
namespace {

using namespace std::chrono_literals;

std::string role_of(redis_client& c, net::io_context& ioc) {
  auto r = run_async(ioc, c.async_exec(redis_cmd("ROLE")));
  return r.elements.empty() ? r.str : r.elements[0].str;
}

TEST(Sentinel, AClientReachesTheMasterTheSentinelsNameAndFollowsAFailover) {
  sentinel_cluster c;
  ASSERT_TRUE(c.wait_healthy()) << c.logs();
  net::io_context ioc;
  redis_client client(ioc.get_executor(), c.endpoint());
  run_async(ioc, client.async_connect());
  EXPECT_EQ(client.master().port, c.ports[0]);
  EXPECT_EQ(role_of(client, ioc), "master");
  EXPECT_EQ(run_async(ioc, client.async_exec(redis_cmd("SET", "k", "before"))).str, "OK");

  // A failover (asked of one sentinel: the master is demoted, the replica promoted). The client is
  // told by +switch-master and drops its connection; its next connect reaches the new master.
  redis_sync s0(loopback_tcp(c.sentinel_ports[0]));
  const auto asked = std::chrono::steady_clock::now();
  ASSERT_EQ(s0.exec({"SENTINEL", "FAILOVER", c.opts.master_name}).str, "OK");
  ASSERT_TRUE(run_until(
      ioc, [&] { return !client.connected(); }, 20s))
      << c.logs();
  const auto noticed = std::chrono::steady_clock::now();
  EXPECT_EQ(c.master_port(), c.ports[1]);
  bool reconnected = false;
  for (int i = 0; i < 100 && !reconnected; ++i) {
    try {
      run_async(ioc, client.async_connect());
      reconnected = true;
    } catch (const boost::system::system_error& e) {
      // Until the sentinels and servers agree: unavailable, never another failure.
      EXPECT_EQ(e.code(), make_error_code(redis_errc::unavailable)) << e.what();
      run_until(
          ioc, [] { return false; }, 100ms);
    }
  }
  ASSERT_TRUE(reconnected);
  EXPECT_EQ(client.master().port, c.ports[1]);
  EXPECT_EQ(role_of(client, ioc), "master");
  EXPECT_EQ(run_async(ioc, client.async_exec(redis_cmd("GET", "k"))).str, "before");
  std::cerr << "failover asked -> client dropped the old master: "
            << std::chrono::duration_cast<std::chrono::milliseconds>(noticed - asked).count() << " ms\n";

  // The blocking client (the admin tool's) finds the new master too.
  redis_sync sync(c.endpoint());
  EXPECT_EQ(sync.exec({"ROLE"}).elements.at(0).str, "master");
  EXPECT_EQ(sync.exec({"GET", "k"}).str, "before");
}

TEST(Sentinel, SentinelsThatDoNotAnswerAreSkippedAndNoneAnsweringIsAnOutage) {
  sentinel_cluster c;
  ASSERT_TRUE(c.wait_healthy()) << c.logs();
  net::io_context ioc;
  auto ep = c.endpoint();
  // A port nobody listens on first, then one that is not a sentinel (the replica: it does not know
  // SENTINEL), then the real ones.
  ep.sentinels.insert(ep.sentinels.begin(), {"127.0.0.1", static_cast<std::uint16_t>(c.ports[1])});
  ep.sentinels.insert(ep.sentinels.begin(), {"127.0.0.1", static_cast<std::uint16_t>(free_tcp_port())});
  redis_client client(ioc.get_executor(), ep);
  run_async(ioc, client.async_connect());
  EXPECT_EQ(client.master().port, c.ports[0]);

  // A name no sentinel monitors: an outage whose message names each sentinel's answer.
  auto wrong = c.endpoint();
  wrong.master_name = "nobody";
  redis_client lost(ioc.get_executor(), wrong);
  try {
    run_async(ioc, lost.async_connect());
    ADD_FAILURE() << "connected to a master no sentinel names";
  } catch (const boost::system::system_error& e) {
    EXPECT_EQ(e.code(), make_error_code(redis_errc::unavailable));
    std::string what = e.what();
    EXPECT_NE(what.find("no sentinel named the master 'nobody'"), std::string::npos) << what;
    EXPECT_NE(what.find(std::to_string(c.sentinel_ports[2])), std::string::npos) << what;
  }
  EXPECT_FALSE(lost.connected());
  EXPECT_THROW(redis_sync{wrong}, std::runtime_error);

  // Every sentinel gone: an outage, within a bounded time.
  for (auto& s : c.sentinels) s->stop();
  redis_client none(ioc.get_executor(), c.endpoint());
  const auto t0 = std::chrono::steady_clock::now();
  try {
    run_async(ioc, none.async_connect());
    ADD_FAILURE() << "connected with every sentinel stopped";
  } catch (const boost::system::system_error& e) {
    EXPECT_EQ(e.code(), make_error_code(redis_errc::unavailable)) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
}

TEST(Sentinel, AServerTheSentinelsNameIsUsedOnlyIfItSaysItIsAMaster) {
  sentinel_cluster c;
  ASSERT_TRUE(c.wait_healthy()) << c.logs();
  // A sentinel whose answer is stale (a failover under way) names a replica: made here by having
  // a real sentinel monitor the replica under another name.
  redis_sync s0(loopback_tcp(c.sentinel_ports[0]));
  ASSERT_EQ(s0.exec({"SENTINEL", "MONITOR", "stale", "127.0.0.1", std::to_string(c.ports[1]), "2"}).str,
            "OK");
  auto ep = c.endpoint();
  ep.master_name = "stale";
  ep.sentinels.resize(1);
  net::io_context ioc;
  redis_client client(ioc.get_executor(), ep);
  try {
    run_async(ioc, client.async_connect());
    ADD_FAILURE() << "connected to a replica as the master";
  } catch (const boost::system::system_error& e) {
    EXPECT_EQ(e.code(), make_error_code(redis_errc::unavailable));
    EXPECT_NE(std::string(e.what()).find("but it is a slave"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(client.connected());
  try {
    redis_sync sync(ep);
    ADD_FAILURE() << "the blocking client connected to a replica as the master";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("but it is a slave"), std::string::npos) << e.what();
  }
  s0.exec({"SENTINEL", "REMOVE", "stale"});
}

TEST(Sentinel, TheStoreAnswersAWriteOnceTheReplicaHasItAndPausesWhenTheReplicaIsGone) {
  sentinel_cluster c;
  ASSERT_TRUE(c.wait_healthy()) << c.logs();
  net::io_context ioc;
  redis_client client(ioc.get_executor(), c.endpoint());
  run_async(ioc, client.async_connect());
  store st(client, "descprod:");
  st.set_replication(1, 300ms, 2s);
  std::vector<new_job> jobs(1);
  jobs[0].jobtype = "mysleep";
  jobs[0].config = "1";
  auto created = run_async(ioc, st.async_create("alice", jobs));
  ASSERT_TRUE(created.ok);
  EXPECT_EQ(st.short_waits(), 0);
  // The replica has it the moment the create is answered.
  redis_sync replica(loopback_tcp(c.ports[1]));
  EXPECT_EQ(replica.exec({"HGET", st.job_key(created.ids[0]), "jobtype"}).str, "mysleep");

  // The replica frozen: the next write waits the timeout, is answered (the master has it), and is
  // counted; the writes after it within the pause do not wait.
  c.servers[1]->kill9();
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(run_async(ioc, st.async_create("alice", jobs)).ok);
  auto waited = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(waited, 290ms);
  EXPECT_EQ(st.short_waits(), 1);
  t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(run_async(ioc, st.async_create("alice", jobs)).ok);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 250ms);
  EXPECT_EQ(st.short_waits(), 1);
  // Without replication asked for, no WAIT at all.
  store plain(client, "descprod:");
  t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(run_async(ioc, plain.async_create("alice", jobs)).ok);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 250ms);
  EXPECT_EQ(plain.short_waits(), 0);
}

}  // namespace
}  // namespace descprod::test
