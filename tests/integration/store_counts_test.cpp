// The jobs-by-state counts the store's scripts keep (P stats:jobs_by_state) and their recount,
// and the pipelining Redis client the store runs on, against a real redis-server.
#include "core/job_import.hpp"
#include "tests/integration/store_fixture.hpp"

namespace descprod {
namespace {

using namespace test_store;
using namespace std::chrono_literals;

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

// A recount also puts held and waiting jobs into their owner's pending set (max_queued), so a
// store written before that set existed gets it from a forced recount.
TEST_F(StateCountTest, ARecountPutsHeldJobsIntoTheirOwnersPendingSet) {
  auto j = make_job("mysleep", "1");
  j.hold = true;
  auto held = create("alice", {j}).front();
  auto ready = create_one("alice");
  cmd({"DEL", "descprod:user:alice:pending"});  // as a store from before the set
  EXPECT_EQ(run(st.async_recount_states(true)), 2);
  auto members = cmd({"ZRANGE", "descprod:user:alice:pending", "0", "-1"});
  ASSERT_EQ(members.elements.size(), 1u);
  EXPECT_EQ(members.elements[0].str, std::to_string(held));
  (void)ready;
}

TEST_F(StateCountTest, CountsFollowEveryTransitionScript) {
  EXPECT_EQ(run(st.async_recount_start(false)), "started");
  EXPECT_EQ(run(st.async_recount_states()), 0) << "an empty store";
  EXPECT_EQ(run(st.async_recount_start(false)), "exists");
  auto check = [&](const char* after) {
    EXPECT_EQ(counts(), actual()) << "after " << after;
    EXPECT_EQ(owner_indexes_disagree(), "") << "after " << after;
  };
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
  std::vector<store::report> r;
  for (auto id : ids) r.push_back(start_r(id, 1, "w1", "h", "/r", 1));
  r.push_back(finish_r(ids[0], 1, "w1", job_state::done, 0, "Done", ""));
  r.push_back(finish_r(ids[1], 1, "w1", job_state::failed, 1, "Failed", ""));
  r.push_back(finish_r(ids[1], 1, "w1", job_state::done, 0, "Done", ""));  // refused: already failed
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
  // Counts a completed recount left, gone stale (wrong numbers), are left alone without force...
  run(st.async_recount_states());
  cmd({"HSET", "descprod:stats:jobs_by_state", "ready", "999"});
  EXPECT_EQ(run(st.async_recount_start(false)), "exists");
  // ...and replaced with force: a recount from zero, in batches of 10 IDs.
  EXPECT_EQ(run(st.async_recount_start(true)), "started");
  EXPECT_FALSE(run(st.async_state_counts())) << "no counts while recounting";
  auto step = run(st.async_recount_step(10));
  EXPECT_FALSE(step.done);
  EXPECT_EQ(step.upto, 10);
  EXPECT_EQ(run(st.async_recount_start(false)), "rebuilding");
  // Transitions on both sides of the cursor, a creation and a deletion, mid-recount.
  run_job(ids[2]);    // counted already: moves its count
  finish(ids[4], 1);  // counted already (running → done)
  run_job(ids[15]);   // not yet: counted when the recount gets there
  finish(ids[20], run_job(ids[20]));
  ASSERT_TRUE(run(st.async_delete(ids[20])).ok);
  create_one();  // ID 26, beyond the counter the recount started with
  step = run(st.async_recount_step(10));
  EXPECT_FALSE(step.done);
  EXPECT_EQ(step.upto, 20);
  run_job(ids[22]);
  step = run(st.async_recount_step(10));
  EXPECT_TRUE(step.done);
  EXPECT_EQ(step.upto, 26);
  EXPECT_EQ(cmd({"HEXISTS", "descprod:stats:jobs_by_state", "_rebuild_upto"}).integer, 0);
  EXPECT_EQ(counts(), actual());
  EXPECT_EQ(counts(), (std::map<std::string, long long>{{"ready", 20}, {"running", 3}, {"done", 1}}));
  // Done: a further step does nothing, transitions keep counting.
  EXPECT_TRUE(run(st.async_recount_step(10)).done);
  finish(ids[22], 1);
  EXPECT_EQ(counts(), actual());
  ASSERT_TRUE(run(st.async_state_counts()));
}

// ---- the Active view's index (user:<name>:active: the owner's jobs not archived) ----

// Every script that adds, archives, unarchives, imports or deletes a job keeps the index equal to
// the owner's jobs whose archive flag is not set, so GET /api/jobs?archived=0 is a range of it.
TEST_F(StateCountTest, TheOwnersIndexesFollowCreateArchiveUnarchiveImportAndDelete) {
  const std::string active = "descprod:user:alice:active";
  auto ids = create("alice", {make_job("mysleep", "1"), make_job("mysleep", "2"), make_job("mysleep", "3")});
  EXPECT_EQ(zrange(active), (std::vector<std::string>{std::to_string(ids[0]), std::to_string(ids[1]),
                                                      std::to_string(ids[2])}));
  ASSERT_TRUE(run(st.async_set_archive(ids[1], true)).ok);
  ASSERT_TRUE(run(st.async_set_archive(ids[1], true)).ok) << "archiving twice changes nothing";
  EXPECT_EQ(zrange(active), (std::vector<std::string>{std::to_string(ids[0]), std::to_string(ids[2])}));
  ASSERT_TRUE(run(st.async_set_archive(ids[1], false)).ok);
  EXPECT_EQ(zrange(active).size(), 3u);
  finish(ids[2], run_job(ids[2]));
  ASSERT_TRUE(run(st.async_delete(ids[2])).ok);
  EXPECT_EQ(zrange(active), (std::vector<std::string>{std::to_string(ids[0]), std::to_string(ids[1])}));
  // Imported jobs: one archived, one not.
  std::vector<imported_job> in(2);
  for (int i = 0; i < 2; ++i) {
    in[i].id = 500 + i;
    in[i].owner = "alice";
    in[i].state = job_state::done;
    in[i].fields = {{"id", std::to_string(500 + i)}, {"descname", "alice"}, {"state", "done"},
                    {"jobtype", "mysleep"},          {"config", "1"},       {"archive", i == 0 ? "1" : "0"}};
  }
  auto r = cmd(import_command(st.redis_keys(), in));
  ASSERT_EQ(r.elements.size(), 2u) << r.str;
  EXPECT_EQ(zrange(active),
            (std::vector<std::string>{std::to_string(ids[0]), std::to_string(ids[1]), "501"}));
  EXPECT_EQ(zrange("descprod:user:bob:active").size(), 0u);
  EXPECT_EQ(owner_indexes_disagree(), "");
}

// A store written before the index (no key, the counts without the '_derived' mark) gets it from
// the recount the gateways start when they see the mark missing; jobs archived, created and
// deleted while it runs end up right.
TEST_F(StateCountTest, ARecountBuildsTheActiveIndexOfAStoreFromBeforeIt) {
  std::vector<new_job> jobs;
  for (int i = 0; i < 30; ++i) jobs.push_back(make_job("mysleep", std::to_string(i)));
  auto ids = create("alice", std::move(jobs));
  auto bobs = create("bob", {make_job("mysleep", "b")});
  for (int i : {3, 14, 25}) ASSERT_TRUE(run(st.async_set_archive(ids[i], true)).ok);
  EXPECT_EQ(run(st.async_recount_states()), 31);
  EXPECT_EQ(run(st.async_recount_start(false)), "exists");
  // As a store from before: no indexes, no mark.
  cmd({"DEL", "descprod:user:alice:active", "descprod:user:bob:active", "descprod:user:alice:find",
       "descprod:user:bob:find"});
  cmd({"HDEL", "descprod:stats:jobs_by_state", "_derived"});
  EXPECT_EQ(run(st.async_recount_start(false)), "started") << "an old store is rebuilt without force";
  auto step = run(st.async_recount_step(10));
  EXPECT_FALSE(step.done);
  // Mid-rebuild: one job behind the cursor and one ahead of it archived, one ahead unarchived.
  ASSERT_TRUE(run(st.async_set_archive(ids[5], true)).ok);
  ASSERT_TRUE(run(st.async_set_archive(ids[20], true)).ok);
  ASSERT_TRUE(run(st.async_set_archive(ids[25], false)).ok);
  while (!step.done) step = run(st.async_recount_step(10));
  EXPECT_EQ(run(st.async_recount_start(false)), "exists");
  std::vector<std::string> want;
  for (int i = 0; i < 30; ++i)
    if (i != 3 && i != 14 && i != 5 && i != 20) want.push_back(std::to_string(ids[i]));
  auto got = zrange("descprod:user:alice:active");
  std::sort(want.begin(), want.end());
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, want);
  EXPECT_EQ(zrange("descprod:user:bob:active"), (std::vector<std::string>{std::to_string(bobs[0])}));
  EXPECT_EQ(owner_indexes_disagree(), "");
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
    net::co_spawn(ioc, incr_and_roundtrip(redis, i, incrs, gets, finished), [&](std::exception_ptr e) {
      if (e) ++failed;
    });
  ASSERT_TRUE(test::run_until(
      ioc, [&] { return finished + failed == n; }, 30s));
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
