// The daemon's per-owner ready queue: global score order for workers that may run every job,
// per-owner order for restricted workers, the walltime `fits` filter and its scan budget.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace descprod
