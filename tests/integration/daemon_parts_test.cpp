// The queue daemon's parts in-process (daemon/*.hpp; docs/architecture.md, Daemon): the lease
// table's invariants (a job held by at most one worker at one attempt; release removes it
// everywhere; orphan adoption), the dispatcher's fit and credit rules, and the outbox's
// drain(deadline) against a real redis-server.
#include <gtest/gtest.h>

#include <algorithm>

#include "core/redis.hpp"
#include "core/store.hpp"
#include "daemon/dispatcher.hpp"
#include "daemon/lease_table.hpp"
#include "daemon/outbox.hpp"
#include "daemon/worker_table.hpp"
#include "tests/support/support.hpp"

namespace descprod {
namespace {

using namespace std::chrono_literals;
using test::run_async;

// Every view of the table agrees: each job in a worker's list is held by that worker, and the
// lists of all workers together hold each job once.
void expect_consistent(const lease_table& t, const std::vector<std::string>& workers) {
  std::size_t listed = 0;
  for (const auto& w : workers)
    for (job_id id : t.jobs_of(w)) {
      ++listed;
      const lease* l = t.find(id);
      ASSERT_NE(l, nullptr) << "job " << id << " listed for " << w << " but not held";
      EXPECT_EQ(l->worker, w) << "job " << id;
      EXPECT_EQ(t.find_orphan(id), nullptr) << "job " << id << " is held and an orphan";
    }
  EXPECT_EQ(listed, t.size());
}

TEST(LeaseTable, AJobIsHeldByOneWorkerAtOneAttempt) {
  lease_table t;
  t.hold(1, "a", 0);
  t.hold(2, "a", 0);
  EXPECT_FALSE(t.holds("a", 1, 0)) << "a lease being leased (attempt 0) accepts no report";
  t.hold(1, "a", 3);
  EXPECT_TRUE(t.holds("a", 1, 3));
  EXPECT_FALSE(t.holds("a", 1, 2));
  EXPECT_FALSE(t.holds("b", 1, 3));
  // The same job held by another worker moves: it is no longer a's.
  t.hold(1, "b", 4);
  EXPECT_FALSE(t.holds("a", 1, 3));
  EXPECT_TRUE(t.holds("b", 1, 4));
  EXPECT_EQ(t.count("a"), 1u);
  EXPECT_EQ(t.count("b"), 1u);
  expect_consistent(t, {"a", "b"});
}

TEST(LeaseTable, CountsTheLeasesOfEachOwnerThroughEveryRelease) {
  // Fair share and max_running read these counts: every way a lease ends must give its slot back.
  lease_table t;
  const lease_owner alice = 0, bob = 1;
  t.hold(1, "w1", 0, false, alice);
  t.hold(2, "w1", 0, false, alice);
  t.hold(3, "w2", 0, false, bob);
  EXPECT_EQ(t.held_of(alice), 2u);
  EXPECT_EQ(t.held_of(bob), 1u);
  EXPECT_EQ(t.held_of(7), 0u) << "an owner never seen holds nothing";
  t.hold(1, "w1", 4);        // Redis's answer: the attempt, owner kept
  t.hold(1, "w2", 5, true);  // moved to another worker: still alice's one lease
  EXPECT_EQ(t.held_of(alice), 2u);
  t.release(1);
  EXPECT_EQ(t.held_of(alice), 1u);
  t.release(1);  // twice: nothing more
  EXPECT_EQ(t.held_of(alice), 1u);
  t.release_worker("w1");  // job 2 goes with its worker
  EXPECT_EQ(t.held_of(alice), 0u);
  t.hold(4, "w2", 1, true);  // no owner known (e.g. an unknown job): counted for nobody
  EXPECT_EQ(t.held_of(bob), 1u);
  t.release_worker("w2");
  EXPECT_EQ(t.held_of(bob), 0u);
  EXPECT_EQ(t.held_of(alice), 0u);
}

TEST(LeaseTable, ReleaseRemovesTheJobEverywhere) {
  lease_table t;
  t.hold(1, "a", 2, true);
  t.hold(2, "a", 5);
  auto l = t.release(1);
  ASSERT_TRUE(l);
  EXPECT_EQ(l->worker, "a");
  EXPECT_EQ(l->attempt, 2);
  EXPECT_TRUE(l->started);
  EXPECT_EQ(t.find(1), nullptr);
  EXPECT_FALSE(t.contains(1));
  EXPECT_EQ(t.jobs_of("a"), std::set<job_id>{2});
  EXPECT_FALSE(t.release(1)) << "a second release finds nothing";
  // Released only for its holder when a worker is named.
  EXPECT_FALSE(t.release(2, "b"));
  EXPECT_TRUE(t.contains(2));
  EXPECT_TRUE(t.release(2, "a"));
  EXPECT_EQ(t.size(), 0u);
  EXPECT_TRUE(t.jobs_of("a").empty());
}

TEST(LeaseTable, ReleaseWorkerReturnsItsJobsAndLeavesOthers) {
  lease_table t;
  t.hold(3, "a", 1);
  t.hold(1, "a", 0);
  t.hold(2, "b", 7);
  auto gone = t.release_worker("a");
  ASSERT_EQ(gone.size(), 2u);
  EXPECT_EQ(gone[0].first, 1);  // in ID order
  EXPECT_EQ(gone[0].second.attempt, 0);
  EXPECT_EQ(gone[1].first, 3);
  EXPECT_EQ(gone[1].second.attempt, 1);
  EXPECT_FALSE(t.contains(1));
  EXPECT_FALSE(t.contains(3));
  EXPECT_TRUE(t.holds("b", 2, 7));
  EXPECT_TRUE(t.release_worker("a").empty());
  expect_consistent(t, {"a", "b"});
}

TEST(LeaseTable, OrphanLeasesAreAdoptedOnceAndExpire) {
  lease_table t;
  auto now = clock_type::now();
  t.add_orphan(10, orphan_lease{now + 1h, "a", 2, "alice"});
  t.add_orphan(11, orphan_lease{now + 1h, "a", 1, "alice"});
  t.add_orphan(12, orphan_lease{now - 1s, "b", 1, "bob"});
  t.add_orphan(13, orphan_lease{now - 1s, "", 1, "carol"});  // whose worker Redis did not say
  EXPECT_EQ(t.orphan_count(), 4u);
  EXPECT_TRUE(t.has_orphans("a"));
  // Adopting (hold) claims the orphan: held, no longer an orphan.
  t.hold(10, "a", 2, true);
  EXPECT_EQ(t.find_orphan(10), nullptr);
  EXPECT_TRUE(t.holds("a", 10, 2));
  // An orphan is never added for a job that is held.
  t.add_orphan(10, orphan_lease{now + 1h, "c", 9, "alice"});
  EXPECT_EQ(t.find_orphan(10), nullptr);
  EXPECT_TRUE(t.holds("a", 10, 2));
  // The rest of a's orphans go to the caller (requeued), once.
  EXPECT_EQ(t.take_orphans_of("a"), std::vector<job_id>{11});
  EXPECT_TRUE(t.take_orphans_of("a").empty());
  EXPECT_FALSE(t.has_orphans("a"));
  // Expired ones go, the others stay.
  auto expired = t.take_expired_orphans(now);
  std::sort(expired.begin(), expired.end());
  EXPECT_EQ(expired, (std::vector<job_id>{12, 13}));
  EXPECT_EQ(t.orphan_count(), 0u);
  EXPECT_FALSE(t.has_orphans("b"));
  expect_consistent(t, {"a", "b", "c"});
}

TEST(LeaseTable, ReleaseDropsAnOrphanLease) {
  lease_table t;
  t.add_orphan(5, orphan_lease{clock_type::now() + 1h, "a", 1, "alice"});
  // A finished report from an unknown connection of another worker: the lease (none here) stays
  // for its holder, the orphan lease goes all the same.
  EXPECT_FALSE(t.release(5, "b"));
  EXPECT_EQ(t.find_orphan(5), nullptr);
  EXPECT_FALSE(t.has_orphans("a"));
}

TEST(WorkerTable, CreditsStopAtSlotsPlusPrefetchLessHeldJobs) {
  worker_state w;
  w.slots = 2;
  w.prefetch = worker_table::prefetch_of(1);
  worker_table::add_credits(w, 10, 0);
  EXPECT_EQ(w.credits, 3);
  w.credits = 0;
  worker_table::add_credits(w, 10, 2);
  EXPECT_EQ(w.credits, 1);
  w.credits = 0;
  worker_table::add_credits(w, 10, 5);  // holds more than it may: no credit, never negative
  EXPECT_EQ(w.credits, 0);
  worker_table::add_credits(w, 0, 0);
  EXPECT_EQ(w.credits, 0);
  EXPECT_EQ(worker_table::prefetch_of(-1), 0);
  EXPECT_EQ(worker_table::prefetch_of(worker_table::max_prefetch), worker_table::max_prefetch);
  EXPECT_EQ(worker_table::prefetch_of(worker_table::max_prefetch + 1), 0);
}

TEST(WorkerTable, AnUnhealthyWorkerLosesItsCredits) {
  worker_state w;
  w.id = "w";
  w.credits = 4;
  boost::json::object body{{"healthy", false}, {"health_reason", "disk full\x01"}};
  worker_table::note_health(w, body);
  EXPECT_TRUE(w.unhealthy);
  EXPECT_EQ(w.credits, 0);
  EXPECT_FALSE(w.takes_jobs());
  EXPECT_EQ(w.health_reason.find('\x01'), std::string::npos) << "a peer's text is cleaned";
  worker_table::note_health(w, boost::json::object{});  // absent: healthy
  EXPECT_FALSE(w.unhealthy);
  EXPECT_TRUE(w.takes_jobs());
}

TEST(WorkerTable, RoutingFollowsTheLatestHello) {
  worker_table t;
  t.connect("w", "r1");
  EXPECT_EQ(t.by_routing("r1")->id, "w");
  t.connect("w", "r2");
  EXPECT_EQ(t.by_routing("r1"), nullptr);
  EXPECT_EQ(t.by_routing("r2")->id, "w");
  EXPECT_EQ(t.routing_of("w", "fallback"), "r2");
  EXPECT_EQ(t.routing_of("x", "fallback"), "fallback");
  EXPECT_TRUE(t.remove("w"));
  EXPECT_EQ(t.by_routing("r2"), nullptr);
  EXPECT_FALSE(t.remove("w"));
}

TEST(Dispatcher, FitsRefusedAndWalltime) {
  worker_state w;
  std::map<job_id, double> limits;
  const double now = 1000;
  EXPECT_TRUE(dispatcher::fits(w, limits, 1, now)) << "no walltime, no limit";
  worker_table::refuse(w, 1);
  EXPECT_FALSE(dispatcher::fits(w, limits, 1, now)) << "a job it handed back for walltime";
  w.walltime_end = now + 100;
  w.walltime_margin_s = 10;
  limits[2] = 90;  // ends at now + 90 = end - margin: fits
  limits[3] = 91;  // one second too long
  EXPECT_TRUE(dispatcher::fits(w, limits, 2, now));
  EXPECT_FALSE(dispatcher::fits(w, limits, 3, now));
  EXPECT_TRUE(dispatcher::fits(w, limits, 4, now)) << "a job whose limit is unknown";
  worker_state open_ended;  // no allocation end: every limit fits
  EXPECT_TRUE(dispatcher::fits(open_ended, limits, 3, now));
}

// Parts wired on a daemon_context against a real redis-server.
class DaemonParts : public ::testing::Test {
 protected:
  static descprod_config config(const test::redis_server& server) {
    descprod_config c;
    c.redis.endpoint = server.endpoint();
    c.redis.prefix = "parts:";
    c.daemon.lease_timeout = 30s;
    return c;
  }
  void SetUp() override {
    ctx.redis_failed = [this](const std::exception&) { ctx.redis_refusing = true; };
  }
  void connect() {
    run_async(ioc, ctx.redis.async_connect());
    ctx.redis_refusing = false;
  }
  // The one call of store::async_create here.
  job_id create_job(const std::string& owner) {
    new_job j;
    j.jobtype = "mysleep";
    j.config = "1";
    std::vector<new_job> jobs{j};
    auto r = run_async(ioc, ctx.st.async_create(owner, std::move(jobs)));
    EXPECT_TRUE(r.ok) << to_string(r.reason);
    return r.ids.empty() ? 0 : r.ids.front();
  }
  // Ends the coroutines the test started (the outbox's loop) before the parts go.
  void TearDown() override {
    ctx.stopping = true;
    out.wake();
    ctx.redis.close();
    ioc.restart();
    ioc.run_for(200ms);
  }
  std::string field(job_id id, const std::string& f) {
    return run_async(ioc, ctx.redis.async_exec(redis_cmd("HGET", ctx.k.job(id), f))).str;
  }

  test::redis_server server;
  net::io_context ioc;
  daemon_context ctx{ioc, config(server), app_registry{}};
  worker_table workers;
  lease_table leases;
  std::vector<std::pair<job_id, std::string>> requeued;
  outbox out{ctx, workers, [this](job_id id, int, const std::string& owner, const std::string&) {
               requeued.emplace_back(id, owner);
             }};
  dispatcher disp{ctx, workers, leases, out};
};

TEST_F(DaemonParts, OutboxDrainWritesEveryReportInOrder) {
  connect();
  job_id id = create_job("alice");
  auto l = run_async(ioc, ctx.st.async_lease(id, "w1", 30));
  ASSERT_TRUE(l.ok) << refusal_reason(l);
  auto report = [&](std::string command, boost::json::object body) {
    pending_write pw{pending_write::kind::report};
    pw.worker = "w1";
    pw.command = std::move(command);
    body["job"] = id;
    body["attempt"] = l.attempt;
    pw.body = std::move(body);
    out.submit(std::move(pw));
  };
  report("started", {{"host", "h1"}, {"rundir", "/tmp/r"}, {"pid", 42}});
  report("progress", {{"message", "half"}, {"done", 1}, {"total", 2}});
  report("finished", {{"rc", 0}, {"signal", 0}, {"timed_out", false}, {"message", "ok"}});
  EXPECT_EQ(out.size(), 3u);
  ctx.spawn(out.run(), "outbox");
  bool drained = run_async(ioc, out.drain(clock_type::now() + 10s));
  EXPECT_TRUE(drained);
  EXPECT_TRUE(out.idle());
  EXPECT_EQ(field(id, "state"), "done");
  EXPECT_EQ(field(id, "host"), "h1");
  EXPECT_EQ(ctx.stats.finished, 1u);
  EXPECT_EQ(ctx.stats.stale_events, 0u);
}

TEST_F(DaemonParts, OutboxDrainStopsAtTheDeadlineWhileRedisIsAway) {
  // Not connected: the write waits in the outbox, and drain gives up at its deadline.
  out.requeue_later(1, 1, "w1", store::requeue_mode::lost, "test");
  ctx.spawn(out.run(), "outbox");
  auto start = clock_type::now();
  bool drained = run_async(ioc, out.drain(start + 300ms));
  EXPECT_FALSE(drained);
  EXPECT_GE(clock_type::now() - start, 300ms);
  EXPECT_EQ(out.size(), 1u) << "held, not lost";
  // Redis serves: the same drain empties it (a requeue of a job that is not there is refused by
  // the script, which is an answer: the write is done).
  connect();
  out.wake();
  EXPECT_TRUE(run_async(ioc, out.drain(clock_type::now() + 10s)));
  EXPECT_EQ(out.size(), 0u);
}

TEST_F(DaemonParts, DispatchGivesJobsOnlyForCreditsAndOnlyToWorkersTheyFit) {
  connect();
  auto& a = workers.connect("a", "ra");
  a.slots = 1;
  a.any_owner = true;  // open mode: every owner's jobs
  auto& b = workers.connect("b", "rb");
  b.slots = 1;
  b.any_owner = true;
  b.walltime_end = epoch_now() + 50;
  disp.remember_limit(2, 3600);  // job 2 runs an hour: not on b
  disp.enqueue(1, 0, "alice");
  disp.enqueue(2, 5, "alice");  // higher priority: first in the queue
  disp.enqueue(3, 0, "alice");
  disp.dispatch();
  EXPECT_EQ(leases.size(), 0u) << "no credits, no jobs";
  worker_table::add_credits(b, 1, leases.count("b"));
  disp.dispatch();
  // b may not take job 2 (walltime): it takes the next, job 1.
  EXPECT_EQ(leases.jobs_of("b"), std::set<job_id>{1});
  EXPECT_EQ(b.credits, 0);
  worker_table::add_credits(a, 5, leases.count("a"));
  EXPECT_EQ(a.credits, 1) << "one slot, no prefetch";
  disp.dispatch();
  EXPECT_EQ(leases.jobs_of("a"), std::set<job_id>{2});
  ASSERT_NE(leases.find(2), nullptr);
  EXPECT_EQ(leases.find(2)->attempt, 0) << "held while Redis leases it";
  EXPECT_TRUE(disp.queue().contains(3));
  EXPECT_FALSE(disp.idle()) << "two leases queued for Redis";
  // A leased job is not queued again by a late notice.
  disp.enqueue(2, 5, "alice");
  EXPECT_FALSE(disp.queue().contains(2));
  // A worker whose token admits other owners only gets nothing.
  auto& c = workers.connect("c", "rc");
  c.slots = 1;
  worker_grant bob;
  bob.ok = true;
  bob.owner = "bob";
  bob.owners = {"bob"};
  worker_table::set_grant(c, bob, disp.queue());
  worker_table::add_credits(c, 1, 0);
  disp.dispatch();
  EXPECT_TRUE(leases.jobs_of("c").empty());
  EXPECT_TRUE(disp.queue().contains(3));
  // Redis refusing: nothing is dispatched.
  ctx.redis_refusing = true;
  worker_table::add_credits(a, 1, 0);
  disp.dispatch();
  EXPECT_TRUE(disp.queue().contains(3));
}

// Sites: a worker gets only jobs that asked for no site or for its own, and the pilots of a site
// count as demand only the jobs they could run.
TEST_F(DaemonParts, DispatchPlacesJobsAtTheirSitesAndPilotDemandCountsPerSite) {
  connect();
  disp.enqueue(1, 0, "alice", "nersc");
  disp.enqueue(2, 0, "alice", "nersc,slac");
  disp.enqueue(3, 0, "alice");
  disp.enqueue(4, 0, "alice", "slac");
  EXPECT_EQ(disp.demand(3600, "nersc").ready, 3u);
  EXPECT_EQ(disp.demand(3600, "slac").ready, 3u);
  EXPECT_EQ(disp.demand(3600, "cern").ready, 1u) << "only the job that asked for no site";
  EXPECT_EQ(disp.demand(3600).ready, 1u) << "pilots without a site";
  auto& plain = workers.connect("p", "rp");
  plain.slots = 4;
  plain.any_owner = true;
  worker_table::add_credits(plain, 4, 0);
  disp.dispatch();
  EXPECT_EQ(leases.jobs_of("p"), std::set<job_id>{3}) << "a worker without a site";
  auto& slac = workers.connect("s", "rs");
  slac.slots = 4;
  slac.site = "slac";
  slac.any_owner = true;
  worker_table::add_credits(slac, 4, 0);
  disp.dispatch();
  EXPECT_EQ(leases.jobs_of("s"), (std::set<job_id>{2, 4}));
  EXPECT_TRUE(disp.queue().contains(1)) << "nersc's job waits for a nersc worker";
  EXPECT_EQ(disp.demand(3600, "nersc").ready, 1u);
  EXPECT_EQ(disp.demand(3600, "slac").ready, 0u);
}

// The gateway's cancel notice can reach the daemon while Redis is leasing the job: the lease
// script's record predates the cancel (it has no cancel_requested), so the worker must get a
// `cancel` right after the job, or the job runs to its end (found as a flaky e2e test: a cancelled
// mysleep 30 that was not cancelled within 20 s).
TEST_F(DaemonParts, ACancelThatArrivesWhileTheJobIsBeingLeasedFollowsTheJobToItsWorker) {
  connect();
  std::vector<std::vector<std::string>> sent;
  ctx.send_frames = [&](const std::vector<std::string>& f) {
    sent.push_back(f);
    return true;
  };
  app_def mysleep;
  mysleep.name = "mysleep";
  mysleep.command = {"runapp-mysleep"};
  ctx.apps.apps["mysleep"] = mysleep;
  auto id = create_job("alice");
  auto other = create_job("alice");
  auto& a = workers.connect("a", "ra");
  a.slots = 2;
  a.any_owner = true;
  disp.enqueue(id, 0, "alice");
  disp.enqueue(other, 0, "alice");
  worker_table::add_credits(a, 2, 0);
  disp.dispatch();
  ASSERT_NE(leases.find(id), nullptr);
  ASSERT_EQ(leases.find(id)->attempt, 0) << "being leased";
  disp.cancel(id);  // the notice, before Redis answers the lease
  EXPECT_TRUE(sent.empty()) << "nothing to send before the job itself";
  ioc.restart();
  ioc.run_for(500ms);
  // The job, then its cancel at the attempt just leased; the other job gets no cancel.
  ASSERT_EQ(sent.size(), 3u);
  std::ptrdiff_t job_at = -1, cancel_at = -1;
  for (std::size_t i = 0; i < sent.size(); ++i) {
    auto body = boost::json::parse(sent[i][2]).as_object();
    EXPECT_EQ(sent[i][0], "ra");
    if (sent[i][1] == "job" && body.at("job").as_object().at("id").as_int64() == id) job_at = i;
    if (sent[i][1] == "cancel") {
      EXPECT_EQ(cancel_at, -1) << "one cancel";
      cancel_at = i;
      EXPECT_EQ(body.at("job").as_int64(), id);
      EXPECT_EQ(body.at("attempt").as_int64(), 1);
    }
  }
  ASSERT_GE(job_at, 0);
  EXPECT_GT(cancel_at, job_at) << "the cancel follows its job";
  // A cancel of a job leased and sent goes at once; of a job not held, nowhere.
  sent.clear();
  disp.cancel(other);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(boost::json::parse(sent[0][2]).as_object().at("job").as_int64(), other);
  sent.clear();
  disp.cancel(other + 100);
  EXPECT_TRUE(sent.empty());
}

}  // namespace
}  // namespace descprod
