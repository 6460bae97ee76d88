// Held jobs and dependencies in the Redis job store, against a real redis-server: create with
// hold and after/after_any, the release script, the claim of a held job, cancellation down the
// graph, and the batched release of many dependents (docs/architecture.md, Job model).
#include "tests/integration/store_fixture.hpp"

namespace descprod {
namespace {

using namespace test_store;

job_dependency dep(job_id id, bool any = false) {
  job_dependency d;
  d.id = id;
  d.any = any;
  return d;
}
job_dependency local(std::size_t k, bool any = false) {
  job_dependency d;
  d.local_index = k;
  d.any = any;
  return d;
}

class StoreDepsTest : public StoreTest {
 protected:
  create_result create_r(const std::string& owner, std::vector<new_job> jobs) {
    return run(st.async_create(owner, std::move(jobs)));
  }
  job_id create_after(std::vector<job_dependency> after, bool hold = false,
                      const std::string& owner = "alice") {
    auto j = make_job("mysleep", "1");
    j.after = std::move(after);
    j.hold = hold;
    std::vector<new_job> jobs;
    jobs.push_back(std::move(j));
    auto r = create_r(owner, std::move(jobs));
    EXPECT_TRUE(r.ok) << r.reason << " " << r.parent;
    return r.ids.empty() ? 0 : r.ids.front();
  }
  void finish(job_id id, job_state target) {
    auto a = run_job(id);
    auto f = run(st.async_finish(id, a, "w1", target, target == job_state::done ? 0 : 1,
                                 target == job_state::done ? "Done" : "Failed", ""));
    ASSERT_TRUE(f.ok) << f.reason << " " << f.state;
  }
  // Runs the release script until nothing is left; the jobs it made ready, in order.
  std::vector<job_id> release_all(std::size_t budget = 1000) {
    std::vector<job_id> out;
    for (int i = 0; i < 100000; ++i) {
      auto r = run(st.async_deps_release(budget));
      for (const auto& j : r.ready) out.push_back(j.id);
      if (!r.more) break;
    }
    return out;
  }
  std::string state(job_id id) { return cmd({"HGET", st.job_key(id), "state"}).str; }
};

TEST_F(StoreDepsTest, AHeldJobIsOffTheQueueUntilReleased) {
  auto j = make_job("mysleep", "1");
  j.hold = true;
  std::vector<new_job> jobs;
  jobs.push_back(std::move(j));
  auto r = create_r("alice", std::move(jobs));
  ASSERT_TRUE(r.ok);
  ASSERT_EQ(r.states, std::vector<job_state>{job_state::held});
  job_id id = r.ids.front();
  auto h = hash(id);
  EXPECT_EQ(h["state"], "held");
  EXPECT_EQ(h["progress"], "Held.");
  EXPECT_EQ(h["hold"], "1");
  EXPECT_FALSE(in_zset("descprod:queue", id));
  // Its own stream starts with its real first event.
  auto ev = stream("descprod:job:" + std::to_string(id) + ":events");
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0]["state"], "held");

  // The daemon's lease refuses it; release puts it on the queue.
  auto l = run(st.async_lease(id, "w1", 30));
  EXPECT_FALSE(l.ok);
  EXPECT_EQ(l.reason, refusal::illegal);
  auto rel = run(st.async_release(id, "alice"));
  ASSERT_TRUE(rel.ok) << rel.reason;
  EXPECT_EQ(rel.state, "ready");
  EXPECT_EQ(rel.record["descname"], "alice");
  EXPECT_EQ(rel.record["priority"], "0");
  EXPECT_TRUE(in_zset("descprod:queue", id));
  EXPECT_EQ(hash(id).count("hold"), 0u);
  auto again = run(st.async_release(id, "alice"));
  EXPECT_FALSE(again.ok);
  EXPECT_EQ(again.reason, refusal::illegal);
  EXPECT_EQ(again.state, "ready");
  EXPECT_EQ(run(st.async_release(999, "alice")).reason, refusal::missing);
  EXPECT_EQ(owner_indexes_disagree(), "") << "the owners' indexes after the releases";
}

TEST_F(StoreDepsTest, AHeldJobCanBeClaimedButNotLeased) {
  run(st.async_recount_states(true));
  job_id id = create_after({}, true);
  auto before = run(st.async_state_counts());
  ASSERT_TRUE(before);
  EXPECT_EQ((*before)["held"], 1);
  EXPECT_FALSE(run(st.async_claim_many({{id, "w1", ""}}, 30, 60)).front().ok) << "the daemon's batch lease";
  auto c = run(st.async_claim(id, "cli:host", 1e6, std::string(64, 'b'), 60));
  ASSERT_TRUE(c.ok) << c.reason << " " << c.state;
  EXPECT_EQ(c.state, "dispatched");
  auto counts = run(st.async_state_counts());
  ASSERT_TRUE(counts);
  EXPECT_EQ((*counts)["held"], 0);
  EXPECT_EQ((*counts)["dispatched"], 1);
}

TEST_F(StoreDepsTest, AJobWaitsForItsDependenciesAndIsReleasedWhenTheyAreDone) {
  auto a = create_one(), b = create_one();
  auto c = create_after({dep(a), dep(b)});
  auto h = hash(c);
  EXPECT_EQ(h["state"], "waiting");
  EXPECT_EQ(h["waiting_for"], "2");
  EXPECT_EQ(h["after"], std::to_string(a) + "," + std::to_string(b));
  EXPECT_EQ(h["progress"], "Waiting for 2 jobs.");
  EXPECT_FALSE(in_zset("descprod:queue", c));
  EXPECT_EQ(cmd({"HGET", "descprod:job:" + std::to_string(a) + ":dependents", std::to_string(c)}).str,
            "after");

  finish(a, job_state::done);
  EXPECT_EQ(cmd({"HGET", "descprod:deps:ended", std::to_string(a)}).str, "done");
  EXPECT_TRUE(release_all().empty());
  EXPECT_EQ(state(c), "waiting");
  EXPECT_EQ(hash(c)["progress"], "Waiting for 1 job.");
  EXPECT_EQ(cmd({"EXISTS", "descprod:deps:ended"}).integer, 0);
  // The edge stays, marked as handed on (the job page draws it); a second pass changes nothing.
  EXPECT_EQ(cmd({"HGET", "descprod:job:" + std::to_string(a) + ":dependents", std::to_string(c)}).str,
            "after/done");
  ASSERT_EQ(cmd({"HSET", "descprod:deps:ended", std::to_string(a), "done"}).integer, 1);
  EXPECT_TRUE(release_all().empty());
  EXPECT_EQ(hash(c)["waiting_for"], "1") << "an edge is handed on once";

  finish(b, job_state::done);
  EXPECT_EQ(release_all(), std::vector<job_id>{c});
  EXPECT_EQ(state(c), "ready");
  EXPECT_EQ(hash(c)["progress"], "Ready.");
  EXPECT_TRUE(in_zset("descprod:queue", c));
  EXPECT_EQ(owner_indexes_disagree(), "") << "the owners' indexes after the releases";
}

TEST_F(StoreDepsTest, AFailedAfterDependencyCancelsTheGraphBelowItButAfterAnyGoesOn) {
  run(st.async_recount_states(true));
  auto a = create_one();
  auto b = create_after({dep(a)});        // after a
  auto c = create_after({dep(b)});        // after b: cancelled in turn
  auto d = create_after({dep(a, true)});  // after_any a: runs
  auto e = create_after({dep(c, true)});  // after_any c: runs once c is cancelled
  finish(a, job_state::failed);
  auto ready = release_all(1);  // one dependent a call: the cascade crosses calls
  std::sort(ready.begin(), ready.end());
  EXPECT_EQ(ready, (std::vector<job_id>{d, e}));
  EXPECT_EQ(state(b), "cancelled");
  EXPECT_EQ(hash(b)["progress"], "Cancelled. Dependency " + std::to_string(a) + " ended failed.");
  EXPECT_EQ(state(c), "cancelled");
  EXPECT_EQ(hash(c)["progress"], "Cancelled. Dependency " + std::to_string(b) + " ended cancelled.");
  EXPECT_EQ(state(d), "ready");
  EXPECT_EQ(state(e), "ready");
  auto counts = run(st.async_state_counts());
  ASSERT_TRUE(counts);
  EXPECT_EQ((*counts)["waiting"], 0);
  EXPECT_EQ((*counts)["cancelled"], 2);
  EXPECT_EQ((*counts)["ready"], 2);
  EXPECT_EQ((*counts)["failed"], 1);
  EXPECT_EQ(owner_indexes_disagree(), "") << "the owners' indexes after the releases";
}

TEST_F(StoreDepsTest, DependenciesAlreadyEndedAreMetOrCancelAtCreation) {
  auto ok = create_one(), bad = create_one();
  finish(ok, job_state::done);
  finish(bad, job_state::failed);
  release_all();
  auto r1 = create_after({dep(ok)});
  EXPECT_EQ(state(r1), "ready");
  EXPECT_TRUE(in_zset("descprod:queue", r1));
  auto r2 = create_after({dep(bad, true)});
  EXPECT_EQ(state(r2), "ready");
  auto r3 = create_after({dep(ok), dep(bad)});
  EXPECT_EQ(state(r3), "cancelled");
  EXPECT_EQ(hash(r3)["progress"], "Cancelled. Dependency " + std::to_string(bad) + " ended failed.");
  EXPECT_FALSE(in_zset("descprod:queue", r3));
  auto r4 = create_after({dep(ok)}, true);
  EXPECT_EQ(state(r4), "held");
}

TEST_F(StoreDepsTest, AHeldWaitingJobBecomesHeldAndReleaseDropsTheHoldWhileItWaits) {
  auto a = create_one(), b = create_one();
  auto held = create_after({dep(a)}, true);
  auto freed = create_after({dep(b)}, true);
  auto rel = run(st.async_release(freed, "alice"));
  ASSERT_TRUE(rel.ok);
  EXPECT_EQ(rel.state, "waiting");
  finish(a, job_state::done);
  finish(b, job_state::done);
  EXPECT_EQ(release_all(), std::vector<job_id>{freed});
  EXPECT_EQ(state(held), "held");
  EXPECT_EQ(state(freed), "ready");
}

TEST_F(StoreDepsTest, ReferencesWithinOneCallAndRefusedDependencies) {
  std::vector<new_job> jobs;
  jobs.push_back(make_job("mysleep", "1"));
  jobs.push_back(make_job("mysleep", "2"));
  jobs.back().after = {local(1)};
  jobs.push_back(make_job("mysleep", "3"));
  jobs.back().after = {local(1), local(2, true), local(1)};  // a job named twice counts once
  auto r = create_r("alice", std::move(jobs));
  ASSERT_TRUE(r.ok) << r.reason << " " << r.parent;
  EXPECT_EQ(r.states, (std::vector<job_state>{job_state::ready, job_state::waiting, job_state::waiting}));
  EXPECT_EQ(hash(r.ids[2])["waiting_for"], "2");
  EXPECT_EQ(hash(r.ids[2])["after"], std::to_string(r.ids[0]));
  EXPECT_EQ(hash(r.ids[2])["after_any"], std::to_string(r.ids[1]));

  auto next = cmd({"GET", "descprod:next_job_id"}).str;
  auto refused = [&](std::vector<job_dependency> deps, const std::string& owner, const std::string& what) {
    std::vector<new_job> js;
    js.push_back(make_job("mysleep", "1"));
    js.back().after = std::move(deps);
    auto x = create_r(owner, std::move(js));
    EXPECT_FALSE(x.ok) << what;
    EXPECT_EQ(x.reason, refusal::bad_dep) << what;
    return x.parent;
  };
  EXPECT_EQ(refused({dep(99999)}, "alice", "unknown"), "99999");
  EXPECT_EQ(refused({dep(r.ids[0])}, "bob", "another owner's"), std::to_string(r.ids[0]));
  EXPECT_EQ(refused({local(1)}, "alice", "itself"), "#1");
  // A job this very call creates, named by the ID it is about to get: unknown, so no cycle.
  EXPECT_EQ(refused({dep(std::stoll(next) + 1)}, "alice", "its own future ID"),
            std::to_string(std::stoll(next) + 1));
  EXPECT_EQ(cmd({"GET", "descprod:next_job_id"}).str, next) << "a refused call takes no ID";
}

TEST_F(StoreDepsTest, CancellingAWaitingJobCancelsItsDependentsAndTheReleaseSkipsIt) {
  auto a = create_one();
  auto b = create_after({dep(a)});
  auto c = create_after({dep(b)});
  auto x = run(st.async_cancel(b, "alice"));
  ASSERT_TRUE(x.ok);
  EXPECT_EQ(state(b), "cancelled");
  EXPECT_TRUE(release_all().empty());
  EXPECT_EQ(state(c), "cancelled");
  EXPECT_EQ(hash(c)["progress"], "Cancelled. Dependency " + std::to_string(b) + " ended cancelled.");
  finish(a, job_state::done);
  EXPECT_TRUE(release_all().empty()) << "b is no longer waiting";
  EXPECT_EQ(state(b), "cancelled");
  // A job deleted before its dependents were handed on: they are, and its edges go after.
  auto d = create_one();
  auto e = create_after({dep(d, true)});
  finish(d, job_state::done);
  ASSERT_TRUE(run(st.async_delete(d)).ok);
  EXPECT_EQ(cmd({"EXISTS", "descprod:job:" + std::to_string(d) + ":dependents"}).integer, 1);
  EXPECT_EQ(release_all(), std::vector<job_id>{e});
  EXPECT_EQ(cmd({"EXISTS", "descprod:job:" + std::to_string(d) + ":dependents"}).integer, 0);
  auto h = run(st.async_cancel(create_after({}, true), "alice"));
  EXPECT_TRUE(h.ok) << "a held job is cancelled at once";
  EXPECT_EQ(h.state, "cancelled");
  EXPECT_EQ(owner_indexes_disagree(), "") << "the owners' indexes after the releases";
}

TEST_F(StoreDepsTest, TenThousandDependentsOfOneJobAreReleasedInBoundedBatches) {
  auto a = create_one();
  const std::size_t n = 10000;
  std::vector<new_job> jobs;
  for (std::size_t i = 0; i < n; ++i) {
    jobs.push_back(make_job("mysleep", "1"));
    jobs.back().after = {dep(a)};
  }
  for (std::size_t i = 0; i < n; i += 1000) {
    std::vector<new_job> chunk(std::make_move_iterator(jobs.begin() + i),
                               std::make_move_iterator(jobs.begin() + i + 1000));
    ASSERT_TRUE(create_r("alice", std::move(chunk)).ok);
  }
  EXPECT_EQ(cmd({"HLEN", "descprod:job:" + std::to_string(a) + ":dependents"}).integer,
            static_cast<long long>(n));
  finish(a, job_state::done);
  std::size_t calls = 0, released = 0;
  for (; calls < 200; ++calls) {
    auto r = run(st.async_deps_release(500));
    // HSCAN's COUNT is a hint: a call handles about its budget, never the whole set.
    EXPECT_LE(r.handled, 1000);
    released += r.ready.size();
    if (!r.more) break;
  }
  EXPECT_EQ(released, n);
  EXPECT_GE(calls + 1, n / 1000) << "the 10,000 dependents took many short calls";
  EXPECT_EQ(cmd({"ZCARD", "descprod:queue"}).integer, static_cast<long long>(n));
  // Deleting the ended job takes its edges with it.
  ASSERT_TRUE(run(st.async_delete(a)).ok);
  EXPECT_EQ(cmd({"EXISTS", "descprod:job:" + std::to_string(a) + ":dependents"}).integer, 0);
}

TEST_F(StoreDepsTest, AnArraySpansCreateCallsUnderItsFirstJobsId) {
  auto member = [&](long long index, job_id array) {
    auto j = make_job("mysleep", std::to_string(index));
    j.array_index = index;
    j.array = array;
    return j;
  };
  std::vector<new_job> first;
  for (long long i = 0; i < 3; ++i) first.push_back(member(i * 2, 0));
  auto a = create_r("alice", std::move(first));
  ASSERT_TRUE(a.ok);
  job_id head = a.ids.front();
  std::vector<new_job> rest;
  rest.push_back(member(6, head));
  auto b = create_r("alice", std::move(rest));
  ASSERT_TRUE(b.ok);
  auto key = "descprod:job:" + std::to_string(head) + ":array";
  EXPECT_EQ(cmd({"SCARD", key}).integer, 4);
  EXPECT_EQ(hash(b.ids.front())["array"], std::to_string(head));
  EXPECT_EQ(hash(b.ids.front())["array_index"], "6");
  EXPECT_EQ(hash(a.ids[1])["array_index"], "2");
  EXPECT_EQ(hash(create_one()).count("array"), 0u) << "a job outside any array";
  // Deleting a job takes it out of its array.
  ASSERT_TRUE(run(st.async_cancel(a.ids[1], "alice")).ok);
  ASSERT_TRUE(run(st.async_delete(a.ids[1])).ok);
  EXPECT_EQ(cmd({"SCARD", key}).integer, 3);
  EXPECT_EQ(cmd({"SISMEMBER", key, std::to_string(a.ids[1])}).integer, 0);
}

}  // namespace
}  // namespace descprod
