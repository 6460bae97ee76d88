// The daemon's per-owner ready queue: global score order for workers that may run every job,
// per-owner order for restricted workers, the walltime `fits` filter and its scan budget.
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <random>
#include <set>

#include "core/store.hpp"
#include "daemon/ready_queue.hpp"

namespace descprod {
namespace {

auto any = [](job_id) { return true; };

TEST(ReadyQueue, EveryOwnerWorkerTakesJobsInGlobalScoreOrder) {
  ready_queue q;
  auto a = q.intern("alice"), b = q.intern("bob");
  EXPECT_EQ(q.intern("alice"), a);
  EXPECT_EQ(q.owner_name(b), "bob");
  q.push(3, queue_score(0, 3), a);
  q.push(1, queue_score(0, 1), b);
  q.push(2, queue_score(5, 2), a);  // higher priority first
  q.push(4, queue_score(0, 4), b);
  EXPECT_FALSE(q.push(4, queue_score(0, 4), b)) << "a job is queued once";
  std::vector<job_id> order;
  while (auto e = q.best(nullptr, any, 128)) {
    order.push_back(e->second);
    EXPECT_TRUE(q.erase(e->second));
  }
  EXPECT_EQ(order, (std::vector<job_id>{2, 1, 3, 4}));
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.erase(2));
}

TEST(ReadyQueue, RestrictedWorkerSeesOnlyItsOwnersJobs) {
  ready_queue q;
  auto a = q.intern("alice"), b = q.intern("bob"), c = q.intern("carol");
  for (job_id id = 1; id <= 30; ++id) q.push(id, queue_score(0, id), id % 3 == 0 ? a : id % 3 == 1 ? b : c);
  std::vector<ready_queue::owner_id> bob_only{b};
  auto e = q.best(&bob_only, any, 128);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->second, 1);
  std::vector<ready_queue::owner_id> alice_carol{a, c};
  e = q.best(&alice_carol, any, 128);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->second, 2);
  std::vector<ready_queue::owner_id> nobody{q.intern("dave")};
  EXPECT_FALSE(q.best(&nobody, any, 128));
  // Draining bob's queue through a restricted worker leaves the others' untouched.
  while (auto j = q.best(&bob_only, any, 128)) {
    EXPECT_EQ(q.find(j->second)->second, b);
    q.erase(j->second);
  }
  EXPECT_EQ(q.size(), 20u);
  EXPECT_EQ(q.best(nullptr, any, 128)->second, 2);
}

TEST(ReadyQueue, FitsFilterSkipsJobsWithinTheScanBudget) {
  ready_queue q;
  auto a = q.intern("alice"), b = q.intern("bob");
  for (job_id id = 1; id <= 10; ++id) q.push(id, queue_score(0, id), id <= 5 ? a : b);
  auto not_small = [](job_id id) { return id > 3; };
  EXPECT_EQ(q.best(nullptr, not_small, 128)->second, 4);
  std::vector<ready_queue::owner_id> both{a, b};
  EXPECT_EQ(q.best(&both, not_small, 128)->second, 4);
  // A budget of 3 jobs looks only at 1..3 (none fits).
  EXPECT_FALSE(q.best(nullptr, not_small, 3));
  auto only_bob_jobs = [](job_id id) { return id > 5; };
  EXPECT_EQ(q.best(nullptr, only_bob_jobs, 128)->second, 6);
}

TEST(ReadyQueue, MatchesAPlainOrderedSetUnderRandomOperations) {
  // A model check: per-owner queues plus fronts must give what one ordered set filtered by owner
  // gives, after any mix of pushes and erases.
  ready_queue q;
  std::vector<ready_queue::owner_id> owners;
  for (const char* n : {"a", "b", "c", "d"}) owners.push_back(q.intern(n));
  std::set<std::tuple<double, job_id, ready_queue::owner_id>> model;
  std::mt19937 rng(42);
  for (int step = 0; step < 5000; ++step) {
    job_id id = 1 + rng() % 400;
    if (rng() % 3) {
      auto o = owners[rng() % owners.size()];
      double s = queue_score(static_cast<int>(rng() % 5) - 2, id);
      bool in_model = false;
      for (const auto& t : model) in_model |= std::get<1>(t) == id;
      EXPECT_EQ(q.push(id, s, o), !in_model);
      if (!in_model) model.emplace(s, id, o);
    } else {
      bool erased = q.erase(id);
      bool in_model = false;
      for (auto it = model.begin(); it != model.end(); ++it)
        if (std::get<1>(*it) == id) {
          model.erase(it);
          in_model = true;
          break;
        }
      EXPECT_EQ(erased, in_model);
    }
    ASSERT_EQ(q.size(), model.size());
    auto e = q.best(nullptr, any, 1000000);
    ASSERT_EQ(e.has_value(), !model.empty());
    if (e) {
      EXPECT_EQ(e->second, std::get<1>(*model.begin()));
    }
    std::vector<ready_queue::owner_id> some{owners[step % 4], owners[(step + 1) % 4]};
    auto r = q.best(&some, any, 1000000);
    std::optional<job_id> want;
    for (const auto& t : model)
      if (std::get<2>(t) == some[0] || std::get<2>(t) == some[1]) {
        want = std::get<1>(t);
        break;
      }
    ASSERT_EQ(r.has_value(), want.has_value());
    if (r) {
      EXPECT_EQ(r->second, *want);
    }
  }
}

// Fair share: each pick goes to the owner with the lowest pass (jobs dispatched / share), so one
// owner's early backlog does not hold the others' jobs behind it. `held` plays the lease table
// (max_running), `pick` the dispatcher (it charges the owner).
struct fair_run {
  ready_queue q;
  std::vector<std::uint32_t> held;
  std::vector<ready_queue::owner_id> picked;  // whose job each pick was
  std::optional<ready_queue::entry> pick(const std::vector<ready_queue::owner_id>* owners = nullptr) {
    auto e = q.fair(
        owners, any, [this](ready_queue::owner_id o) { return o < held.size() ? held[o] : 0u; }, 128);
    if (e) {
      auto o = q.find(e->second)->second;
      if (held.size() <= o) held.resize(o + 1, 0);
      ++held[o];
      picked.push_back(o);
      q.erase(e->second);
      q.charge(o);
    }
    return e;
  }
};

TEST(ReadyQueue, FairShareInterleavesOwnersWhateverTheirBacklog) {
  fair_run r;
  auto a = r.q.intern("alice"), b = r.q.intern("bob");
  for (job_id id = 1; id <= 100; ++id) r.q.push(id, queue_score(0, id), a);  // alice's bulk first
  for (job_id id = 101; id <= 104; ++id) r.q.push(id, queue_score(0, id), b);
  std::vector<job_id> first8;
  for (int i = 0; i < 8; ++i) first8.push_back(r.pick()->second);
  // Alternating, each owner in its own order: alice's 1-4 and bob's 101-104, not alice's 1-8.
  EXPECT_EQ(first8, (std::vector<job_id>{1, 101, 2, 102, 3, 103, 4, 104}));
  EXPECT_EQ(r.held[a], 4u);
  EXPECT_EQ(r.held[b], 4u);
  // Bob has nothing left: alice takes every slot after.
  EXPECT_EQ(r.pick()->second, 5);
  EXPECT_EQ(r.pick()->second, 6);
}

TEST(ReadyQueue, FairShareOwnerBackFromIdleBanksNoCredit) {
  fair_run r;
  auto a = r.q.intern("alice"), b = r.q.intern("bob");
  r.q.push(1, queue_score(0, 1), b);
  ASSERT_EQ(r.pick()->second, 1);  // bob had one job long ago
  for (job_id id = 10; id < 60; ++id) r.q.push(id, queue_score(0, id), a);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(r.pick());  // alice alone for 40 jobs
  for (job_id id = 100; id < 110; ++id) r.q.push(id, queue_score(0, id), b);
  // Bob is back: he shares from now on; he does not get the next 39 jobs for the time he was away.
  r.picked.clear();
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(r.pick());
  int bobs = static_cast<int>(std::count(r.picked.begin(), r.picked.end(), b));
  EXPECT_GE(bobs, 2);
  EXPECT_LE(bobs, 4) << "alternating, not bob alone";
}

TEST(ReadyQueue, FairShareFollowsTheOwnersShares) {
  fair_run r;
  auto a = r.q.intern("alice"), b = r.q.intern("bob");
  r.q.set_quota(b, 3.0, 0);  // bob weighs three times alice
  for (job_id id = 1; id <= 400; ++id) r.q.push(id, queue_score(0, id), id % 2 ? a : b);
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(r.pick());
  EXPECT_EQ(r.held[a] + r.held[b], 200u);
  EXPECT_EQ(r.held[b], 150u) << "slots in the ratio of the shares, 3:1";
  EXPECT_EQ(r.held[a], 50u);
}

TEST(ReadyQueue, MaxRunningHoldsAnOwnersJobsBackButNotTheOthers) {
  fair_run r;
  auto a = r.q.intern("alice"), b = r.q.intern("bob");
  r.q.set_quota(a, 1.0, 2);
  for (job_id id = 1; id <= 10; ++id) r.q.push(id, queue_score(0, id), a);
  EXPECT_EQ(r.pick()->second, 1);
  EXPECT_EQ(r.pick()->second, 2);
  EXPECT_FALSE(r.pick()) << "alice holds her max_running of 2: her jobs wait";
  r.q.push(50, queue_score(0, 50), b);
  EXPECT_EQ(r.pick()->second, 50) << "bob is not held back by alice's limit";
  --r.held[a];  // one of alice's jobs ends
  EXPECT_EQ(r.pick()->second, 3);
  EXPECT_FALSE(r.pick());
  r.q.set_quota(a, 1.0, 0);  // limit lifted
  EXPECT_EQ(r.pick()->second, 4);
}

TEST(ReadyQueue, HeldBackCountsTheJobsMaxRunningKeepsWaiting) {
  // Pilot demand leaves these out: a new pilot could not run them.
  ready_queue q;
  auto a = q.intern("alice"), b = q.intern("bob"), c = q.intern("carol");
  for (job_id id = 1; id <= 10; ++id) q.push(id, queue_score(0, id), a);
  for (job_id id = 11; id <= 13; ++id) q.push(id, queue_score(0, id), b);
  for (job_id id = 14; id <= 20; ++id) q.push(id, queue_score(0, id), c);
  std::vector<std::uint32_t> held{2, 0, 9};
  auto running = [&](ready_queue::owner_id o) { return held[o]; };
  EXPECT_EQ(q.held_back(running), 0u) << "no limits";
  q.set_quota(a, 1.0, 5);  // alice: 2 running, room for 3 of her 10
  q.set_quota(b, 1.0, 5);  // bob: room for 5, has 3
  q.set_quota(c, 1.0, 4);  // carol: over her limit already (9 running): all 7 wait
  EXPECT_EQ(q.held_back(running), 7u + 7u);
  held[0] = 5;
  EXPECT_EQ(q.held_back(running), 10u + 7u);
}

TEST(ReadyQueue, FairSharePriorityOrdersAnOwnersOwnJobsOnly) {
  fair_run r;
  auto a = r.q.intern("alice"), b = r.q.intern("bob");
  r.q.push(1, queue_score(0, 1), a);
  r.q.push(2, queue_score(900, 2), a);  // alice's urgent job goes before her older one
  r.q.push(3, queue_score(1000, 3), b);
  r.q.push(4, queue_score(1000, 4), b);
  // Neither has had a job: the tie goes to the better front (bob's priority 1000), then alternation.
  std::vector<job_id> order;
  while (auto e = r.pick()) order.push_back(e->second);
  EXPECT_EQ(order, (std::vector<job_id>{3, 2, 4, 1}));
}

TEST(ReadyQueue, FairShareRestrictedWorkerAndFitsBudget) {
  fair_run r;
  auto a = r.q.intern("alice"), b = r.q.intern("bob"), c = r.q.intern("carol");
  for (job_id id = 1; id <= 30; ++id) r.q.push(id, queue_score(0, id), id % 3 == 0 ? a : id % 3 == 1 ? b : c);
  std::vector<ready_queue::owner_id> bob_only{b};
  EXPECT_EQ(r.pick(&bob_only)->second, 1) << "a worker only for bob still serves bob";
  std::vector<ready_queue::owner_id> alice_bob{a, b};
  EXPECT_EQ(r.pick(&alice_bob)->second, 3) << "alice has had fewer: hers first";
  // A fits filter that refuses alice's jobs: the next owner by usage gets the slot.
  auto not_alice = [&](job_id id) { return id % 3 != 0; };
  auto held = [&](ready_queue::owner_id o) { return o < r.held.size() ? r.held[o] : 0u; };
  auto e = r.q.fair(nullptr, not_alice, held, 128);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->second, 2) << "carol (no job yet) before bob and alice (one each)";
  // Within the scan budget only.
  auto none = [](job_id) { return false; };
  EXPECT_FALSE(r.q.fair(nullptr, none, held, 5));
}

// Sites: a worker sees only the lanes its site may serve, so a backlog for one site never hides
// another site's jobs from it, whatever the scan budget; a worker without a site runs only jobs
// that asked for none.
TEST(ReadyQueue, SitesKeepEachSitesJobsWithinReachOfItsWorkers) {
  ready_queue q;
  auto a = q.intern("alice");
  auto nersc = q.intern_lane("nersc"), both = q.intern_lane("nersc,slac"), slac = q.intern_lane("slac");
  EXPECT_EQ(q.intern_lane("nersc"), nersc);
  EXPECT_EQ(q.intern_lane(""), 0u);
  for (job_id id = 1; id <= 1000; ++id) q.push(id, queue_score(0, id), a, nersc);  // a backlog for nersc
  q.push(2000, queue_score(0, 2000), a, slac);
  q.push(2001, queue_score(0, 2001), a, both);
  q.push(2002, queue_score(0, 2002), a, 0);
  auto held = [](ready_queue::owner_id) { return 0u; };
  auto pick_fair = [&](std::string_view site) { return q.fair(nullptr, any, held, 128, site); };
  EXPECT_EQ(pick_fair("slac")->second, 2000) << "behind 1,000 nersc jobs, within a scan of 128";
  EXPECT_EQ(q.best(nullptr, any, 128, "slac")->second, 2000);
  EXPECT_EQ(pick_fair("nersc")->second, 1);
  EXPECT_EQ(pick_fair("")->second, 2002) << "a worker without a site: only jobs that asked for none";
  EXPECT_EQ(q.best(nullptr, any, 128, "")->second, 2002);
  EXPECT_EQ(q.fair(nullptr, any, held, 128, "cern")->second, 2002)
      << "another site runs jobs that asked for none";
  EXPECT_EQ(q.runnable_at("nersc"), 1002u);
  EXPECT_EQ(q.runnable_at("slac"), 3u);
  EXPECT_EQ(q.runnable_at(""), 1u);
  EXPECT_EQ(q.runnable_at("cern"), 1u);
  EXPECT_TRUE(q.erase(2000));
  EXPECT_EQ(pick_fair("slac")->second, 2001);
  EXPECT_TRUE(q.erase(2002));
  EXPECT_EQ(q.runnable_at("slac"), 1u);
  EXPECT_FALSE(q.fair(nullptr, any, held, 128, "cern")) << "nothing for a site no job asked for";
  EXPECT_EQ(q.queued(a), 1001u);
  // The owner's front follows its lanes: global order stays right across them.
  std::vector<job_id> first;
  for (int i = 0; i < 3; ++i) {
    auto e = q.best(nullptr, any, 128, "slac");
    if (!e) break;
    first.push_back(e->second);
    q.erase(e->second);
  }
  EXPECT_EQ(first, (std::vector<job_id>{2001})) << "then nothing slac may run";
  EXPECT_EQ(q.best(nullptr, any, 128, "nersc")->second, 1);
}

// Jobs pinned to an allocation of their own (sites "@pin"): no worker's site reaches them through
// best/fair, and in_lane lists them owners in turn.
TEST(ReadyQueue, PinnedJobsAreReachedByNoSiteAndListedOwnersInTurn) {
  ready_queue q;
  auto a = q.intern("alice"), b = q.intern("bob");
  auto pin = q.intern_lane("@pin");
  for (job_id id = 1; id <= 100; ++id) q.push(id, queue_score(0, id), a, pin);
  q.push(200, queue_score(0, 200), b, pin);
  q.push(201, queue_score(0, 201), b, pin);
  auto held = [](ready_queue::owner_id) { return 0u; };
  for (std::string_view site : {"", "nersc", "pin-1", "@pin"}) {
    EXPECT_FALSE(q.best(nullptr, any, 1000, site)) << site;
    EXPECT_FALSE(q.fair(nullptr, any, held, 1000, site)) << site;
  }
  EXPECT_EQ(q.in_lane(pin, 5), (std::vector<job_id>{1, 200, 2, 201, 3}));
  EXPECT_EQ(q.in_lane(pin, 0), std::vector<job_id>{});
  EXPECT_EQ(q.in_lane(0, 5), std::vector<job_id>{});
  EXPECT_EQ(q.in_lane(99, 5), std::vector<job_id>{});
  EXPECT_EQ(q.in_lane(pin, 1000).size(), 102u);
}

}  // namespace
}  // namespace descprod
