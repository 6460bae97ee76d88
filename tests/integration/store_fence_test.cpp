// The store's fence (store.hpp, set_fence; issue 15 item 1), against a real redis-server: a
// daemon that was deposed (another daemon took the lead and raised daemon:epoch) cannot change a
// job through any script, and a caller without a fence (the gateway, the admin tool) is not
// affected.
#include "core/keys.hpp"
#include "core/store_scripts.hpp"
#include "tests/integration/store_fixture.hpp"

namespace descprod::test_store {
namespace {

class FenceTest : public StoreTest {
 protected:
  // The job's hash, its events and the global stream, the queue, the leases and the counts: what
  // a refused script must leave exactly as it was.
  std::string snapshot(job_id id) {
    std::string out;
    for (const auto& [k, v] : hash(id)) out += k + "=" + v + ";";
    out += "|events=" + std::to_string(cmd({"XLEN", "descprod:events"}).integer);
    out += "|job_events=" + std::to_string(cmd({"XLEN", st.redis_keys().job_events(id)}).integer);
    for (const auto& m : zrange("descprod:queue")) out += "|q" + m;
    for (const auto& m : zrange("descprod:leases")) out += "|l" + m;
    auto counts = cmd({"HGETALL", "descprod:stats:jobs_by_state"});
    for (const auto& e : counts.elements) out += "|" + e.str;
    return out;
  }
};

TEST_F(FenceTest, TheLeaderWritesUnderItsEpochAndADeposedOneChangesNothing) {
  job_id running = create_one();
  job_id queued = create_one();
  ASSERT_EQ(cmd({"SET", "descprod:daemon:epoch", "1"}).str, "OK");
  std::vector<std::string> fenced_messages;
  st.on_fenced = [&](const std::string& why) { fenced_messages.push_back(why); };
  st.set_fence("1");
  // Epoch 1 leads: every kind of daemon write goes through.
  auto attempt = run_job(running);
  ASSERT_EQ(hash(running)["state"], "running");
  EXPECT_TRUE(fenced_messages.empty());

  // Another daemon takes the lead.
  ASSERT_EQ(cmd({"SET", "descprod:daemon:epoch", "2"}).str, "OK");
  const auto before_running = snapshot(running), before_queued = snapshot(queued);
  std::vector<store::report> reports;
  reports.push_back(finish_r(running, attempt, "w1", job_state::done, 0, "Done", "ok"));
  EXPECT_THROW(run(st.async_reports(std::move(reports))), fenced_error);
  EXPECT_THROW(run(st.async_lease(queued, "w2", 30)), fenced_error);
  std::vector<store::claim_request> claims;
  claims.push_back({queued, "w2", ""});
  EXPECT_THROW(run(st.async_claim_many(std::move(claims), 30, 60)), fenced_error);
  EXPECT_THROW(run(st.async_requeue(running, attempt, "w1", store::requeue_mode::lost, "lost")),
               fenced_error);
  std::vector<store::held_lease> held;
  held.push_back({running, "w1", attempt});
  EXPECT_THROW(run(st.async_restore_leases(std::move(held), 30, queued)), fenced_error);
  EXPECT_THROW(run(st.async_deps_release(100)), fenced_error);
  EXPECT_EQ(snapshot(running), before_running);
  EXPECT_EQ(snapshot(queued), before_queued);
  ASSERT_EQ(fenced_messages.size(), 6u);
  EXPECT_NE(
      fenced_messages[0].find("FENCED this daemon no longer leads: its epoch is 1, the lead is at epoch 2"),
      std::string::npos)
      << fenced_messages[0];

  // The epoch key gone (a Redis that lost it) fences too: only the leader's reassertion writes it.
  ASSERT_EQ(cmd({"DEL", "descprod:daemon:epoch"}).integer, 1);
  EXPECT_THROW(run(st.async_lease(queued, "w2", 30)), fenced_error);
  EXPECT_NE(fenced_messages.back().find("the lead is at epoch none"), std::string::npos)
      << fenced_messages.back();
  EXPECT_EQ(snapshot(queued), before_queued);

  // The new leader (epoch 2) and an unfenced caller (the gateway's cancel, a create) work.
  ASSERT_EQ(cmd({"SET", "descprod:daemon:epoch", "2"}).str, "OK");
  store leader{redis, "descprod:"};
  leader.set_fence("2");
  std::vector<store::report> again;
  again.push_back(finish_r(running, attempt, "w1", job_state::done, 0, "Done", "ok"));
  auto done = run(leader.async_reports(std::move(again)));
  ASSERT_EQ(done.size(), 1u);
  EXPECT_TRUE(done[0].ok) << done[0].reason;
  EXPECT_EQ(hash(running)["state"], "done");
  store gateway{redis, "descprod:"};
  EXPECT_TRUE(run(gateway.async_cancel(queued, "alice")).ok);
  EXPECT_EQ(hash(queued)["state"], "cancelled");
}

TEST_F(FenceTest, EveryScriptRefusesAStaleEpochBeforeItReadsAnything) {
  // Each script run by value with the head keys, a stale fence and garbage after it: the fence is
  // checked first, so none of them gets as far as reading its (malformed) arguments.
  ASSERT_EQ(cmd({"SET", "descprod:daemon:epoch", "5"}).str, "OK");
  const auto head = store_lua::head_keys(keys("descprod:"));
  const auto& scripts = store_scripts();
  ASSERT_GE(scripts.size(), 10u);
  for (std::size_t i = 0; i < scripts.size(); ++i) {
    std::vector<std::string> eval = {"EVAL", scripts[i], std::to_string(head.size() + 1)};
    eval.insert(eval.end(), head.begin(), head.end());
    eval.push_back("descprod:daemon:epoch");
    for (const char* a : {"descprod:", "not-a-number", "x", "y", "4"})
      eval.emplace_back(a);  // the fence last
    auto r = cmd(eval);
    ASSERT_TRUE(r.is_error()) << "script " << i << " ran under a stale epoch";
    EXPECT_EQ(r.str.rfind("FENCED", 0), 0u) << "script " << i << ": " << r.str;
  }
  // Nothing was written by any of them.
  EXPECT_EQ(cmd({"EXISTS", "descprod:events", "descprod:queue", "descprod:next_job_id"}).integer, 0);
}

}  // namespace
}  // namespace descprod::test_store
