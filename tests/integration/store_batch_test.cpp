// The Redis job store's batch scripts against a real redis-server: many claims in one call, a run
// of typed worker reports in one call, one broken job in a batch, and the gateway's create
// batcher (one create script per owner per event-loop turn).
#include "gateway/notices.hpp"
#include "tests/integration/store_fixture.hpp"

namespace descprod {
namespace {

using namespace test_store;
using namespace std::chrono_literals;

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
  EXPECT_EQ(rs[1].reason, refusal::illegal);
  EXPECT_EQ(rs[1].state, "cancelled");
  ASSERT_TRUE(rs[2].ok);
  EXPECT_EQ(hash(ids[2])["worker"], "w2");
  EXPECT_FALSE(rs[3].ok);
  EXPECT_EQ(rs[3].reason, refusal::missing);
  // Off the queue, into the leases; a token only where one was asked for.
  EXPECT_TRUE(zrange("descprod:queue").empty());
  EXPECT_EQ(zrange("descprod:leases"),
            (std::vector<std::string>{std::to_string(ids[0]), std::to_string(ids[2])}));
  EXPECT_EQ(cmd({"HGET", "descprod:token:" + std::string(64, 'b'), "scope"}).str,
            "job:" + std::to_string(ids[0]));
  EXPECT_GT(cmd({"TTL", "descprod:token:" + std::string(64, 'b')}).integer, 0);
  EXPECT_EQ(cmd({"EXISTS", "descprod:token:" + std::string(64, 'c')}).integer, 0);
  EXPECT_EQ(stream(st.job_key(ids[0]) + ":events").back()["state"], "dispatched");
  // Both leases share the script's one time.
  EXPECT_EQ(hash(ids[0])["dispatch_time"], hash(ids[2])["dispatch_time"]);
}

TEST_F(StoreTest, RestoreLeasesLeasesAgainOnlyReadyJobsAtTheirAttemptAndRaisesTheIdCounter) {
  std::vector<new_job> jobs;
  for (int i = 0; i < 3; ++i) jobs.push_back(make_job("mysleep", std::to_string(i)));
  auto ids = create("alice", std::move(jobs));
  ASSERT_EQ(ids.size(), 3u);
  ASSERT_TRUE(run(st.async_lease(ids[1], "w1", 30)).ok);  // Redis has this lease already
  std::vector<store::held_lease> held;
  held.push_back({ids[0], "w1", 1});        // Redis lost it: restored
  held.push_back({ids[1], "w1", 1});        // already there: nothing to do
  held.push_back({ids[2], "w2", 2});        // ready, but at attempt 1: not this lease
  held.push_back({ids[2] + 100, "w2", 1});  // the job itself is gone
  auto rs = run(st.async_restore_leases(held, 30, ids[2] + 100));
  ASSERT_EQ(rs.size(), 4u);
  ASSERT_TRUE(rs[0].ok) << rs[0].reason;
  EXPECT_EQ(hash(ids[0])["state"], "dispatched");
  EXPECT_EQ(hash(ids[0])["worker"], "w1");
  EXPECT_EQ(hash(ids[0])["attempt"], "1");
  EXPECT_FALSE(rs[1].ok);
  EXPECT_EQ(rs[1].reason, refusal::illegal);
  EXPECT_FALSE(rs[2].ok);
  EXPECT_EQ(rs[2].reason, refusal::illegal);
  EXPECT_EQ(hash(ids[2])["state"], "ready");
  EXPECT_FALSE(rs[3].ok);
  EXPECT_EQ(rs[3].reason, refusal::missing);
  EXPECT_EQ(zrange("descprod:queue"), (std::vector<std::string>{std::to_string(ids[2])}));
  auto leased = zrange("descprod:leases");  // in deadline order
  std::sort(leased.begin(), leased.end());
  EXPECT_EQ(leased, (std::vector<std::string>{std::to_string(ids[0]), std::to_string(ids[1])}));
  // The counter goes up to the highest ID the daemon has seen, and never down.
  EXPECT_EQ(cmd({"GET", "descprod:next_job_id"}).str, std::to_string(ids[2] + 100));
  run(st.async_restore_leases({}, 30, 1));
  EXPECT_EQ(cmd({"GET", "descprod:next_job_id"}).str, std::to_string(ids[2] + 100));
  // The next job created takes the next ID.
  std::vector<new_job> more;
  more.push_back(make_job("mysleep", "x"));
  EXPECT_EQ(create("alice", std::move(more)), (std::vector<job_id>{ids[2] + 101}));
}

TEST_F(StoreTest, ReportsApplyStartProgressAndFinishInOrderWithTheSameChecksAsOneByOne) {
  std::vector<new_job> jobs;
  for (int i = 0; i < 2; ++i) jobs.push_back(make_job("mysleep", std::to_string(i)));
  auto ids = create("alice", std::move(jobs));
  auto a = run(st.async_lease(ids[0], "w1", 30)).attempt;
  auto b = run(st.async_lease(ids[1], "w1", 30)).attempt;
  std::vector<store::report> q;
  q.push_back(start_r(ids[0], a, "w1", "host1", "/run/0", 11));
  q.push_back(progress_r(ids[0], a, "w1", "half way", 1, 2));
  q.push_back(finish_r(ids[0], a, "w1", job_state::done, 0, "Done", "all good"));
  q.push_back(start_r(ids[1], b + 1, "w1", "host1", "/run/1", 12));                 // stale attempt
  q.push_back(start_r(ids[1], b, "w9", "host1", "/run/1", 12));                     // stale worker
  q.push_back(progress_r(ids[1], b, "w1", "early", std::nullopt, std::nullopt));    // not running yet
  q.push_back(progress_r(ids[1] + 100, 1, "w1", "x", std::nullopt, std::nullopt));  // missing
  auto rs = run(st.async_reports(std::move(q)));
  ASSERT_EQ(rs.size(), 7u);
  EXPECT_TRUE(rs[0].ok && rs[0].state == "running") << rs[0].reason;
  EXPECT_TRUE(rs[1].ok) << rs[1].reason;
  EXPECT_TRUE(rs[2].ok && rs[2].state == "done") << rs[2].reason;
  EXPECT_EQ(rs[3].reason, refusal::stale);
  EXPECT_EQ(rs[4].reason, refusal::stale);
  EXPECT_EQ(rs[5].reason, refusal::illegal);
  EXPECT_EQ(rs[5].state, "dispatched");
  EXPECT_EQ(rs[6].reason, refusal::missing);
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
  EXPECT_EQ(rs[1].reason, refusal::error);
  EXPECT_NE(rs[1].state.find("WRONGTYPE"), std::string::npos) << rs[1].state;
  // A broken job stream does not stop the transition: the job is leased, its hash says so.
  EXPECT_TRUE(rs[2].ok) << rs[2].reason << " " << rs[2].state;
  EXPECT_EQ(hash(ids[2])["state"], "dispatched");
  EXPECT_EQ(cmd({"GET", st.job_key(ids[1])}).str, "oops") << "left as it was";
  EXPECT_TRUE(in_zset("descprod:queue", ids[1])) << "still queued";
  // Reports: the same, one job's error is its own result.
  std::vector<store::report> r;
  r.push_back(start_r(ids[0], 1, "w1", "h", "/r", 1));
  r.push_back(start_r(ids[1], 1, "w1", "h", "/r", 1));
  r.push_back(start_r(ids[2], 1, "w1", "h", "/r", 1));
  auto rr = run(st.async_reports(std::move(r)));
  ASSERT_EQ(rr.size(), 3u);
  EXPECT_TRUE(rr[0].ok);
  EXPECT_EQ(rr[1].reason, refusal::error);
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
    net::co_spawn(
        ioc,
        [&, i]() -> net::awaitable<void> {
          results[i] = co_await batcher.create(owners[i], make_job("mysleep", "c" + std::to_string(i)));
          ++answered;
        },
        net::detached);
  }
  run_until_answered(ioc, answered, 60);
  // One script call per owner, and one more for every full group of max_jobs (sent at once).
  auto calls_for = [](std::size_t jobs) {
    return (jobs + gateway::create_batcher::max_jobs - 1) / gateway::create_batcher::max_jobs;
  };
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
    net::co_spawn(
        ioc,
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
    net::co_spawn(
        ioc,
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

}  // namespace
}  // namespace descprod
