// Fair share and quotas, end to end (docs/operators.md, Fair share and quotas; docs/api.md,
// Quotas): real Redis, daemon, gateway and worker; quotas set with the real descprod-admin.
//  - fair share: a user who submits after another user's backlog gets every other job, not the
//    slots left after the backlog (and with `dispatch_policy: fifo` the backlog goes first, which
//    shows the test tells the two apart);
//  - max_running holds a user's jobs back (never two at once with max_running 1) while another
//    user's jobs run beside them;
//  - max_queued and submit_rate refuse a submission with 429, the limit's name and Retry-After.
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "core/redis.hpp"
#include "tests/e2e/api_support.hpp"

namespace descprod::test::api {
namespace {

namespace json = boost::json;

service_options fair_options(const std::string& policy = "") {
  service_options o = api_options(0);  // the worker starts once every job is queued
  o.slots = 1;
  o.reconcile_ms = 300;
  if (!policy.empty()) o.daemon_extra = "  dispatch_policy: " + policy + "\n";
  return o;
}

std::vector<long long> submit_bulk(service& s, int n, const std::string& config, const std::string& token) {
  std::string body = R"({"jobs":[)";
  for (int i = 0; i < n; ++i)
    body += std::string(i ? "," : "") + R"({"jobtype":"mysleep","config":")" + config + "\"}";
  body += "]}";
  auto r = s.call("POST", "/api/jobs/bulk", body, token);
  std::vector<long long> ids;
  EXPECT_EQ(r.status, 201) << r.body;
  if (r.status != 201) return ids;
  auto answer = r.json();  // kept: the loop below must not walk a destroyed temporary
  for (const auto& v : answer.as_object().at("ids").as_array()) ids.push_back(v.as_int64());
  return ids;
}

double time_field(const json::object& j, const char* name) {
  auto it = j.find(name);
  return it == j.end() || !it->value().is_number() ? -1 : it->value().to_number<double>();
}

// The jobs in the order they started (each must have ended within the deadline).
std::vector<long long> start_order(service& s, const std::vector<long long>& ids) {
  std::vector<std::pair<double, long long>> started;
  for (auto id : ids) {
    // The administrator's token reads every user's jobs.
    EXPECT_TRUE(s.wait_terminal(id, 60s, s.admin_token())) << "job " << id;
    auto j = s.job(id, s.admin_token());
    EXPECT_EQ(str(j, "state"), "done") << json::serialize(j);
    started.emplace_back(time_field(j, "start_time"), id);
  }
  std::sort(started.begin(), started.end());
  std::vector<long long> order;
  for (const auto& p : started) order.push_back(p.second);
  return order;
}

std::vector<long long> joined(std::vector<long long> a, const std::vector<long long>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Where each of `mine` stands in `order` (0: started first).
std::vector<std::size_t> positions(const std::vector<long long>& order, const std::vector<long long>& mine) {
  std::vector<std::size_t> out;
  for (auto id : mine)
    out.push_back(static_cast<std::size_t>(std::find(order.begin(), order.end(), id) - order.begin()));
  std::sort(out.begin(), out.end());
  return out;
}

TEST(FairShare, ALateUserGetsEveryOtherSlotNotTheEndOfTheBacklog) {
  service s(fair_options());
  auto alice = submit_bulk(s, 30, "0", s.alice_token);
  std::vector<long long> bob;
  for (int i = 0; i < 5; ++i) bob.push_back(s.submit(R"({"jobtype":"mysleep","config":"0"})", s.bob_token));
  s.add_worker(1);  // one slot: the jobs run one at a time, in the order the daemon picks
  auto all = joined(alice, bob);
  auto order = start_order(s, all);
  ASSERT_EQ(order.size(), 35u);
  auto at = positions(order, bob);
  // Alternating from the start: bob's five among the first eleven, not after alice's thirty.
  EXPECT_LE(at.back(), 10u) << "bob's jobs started at positions " << at[0] << "," << at[1] << "," << at[2]
                            << "," << at[3] << "," << at[4];
  // Each user's own jobs keep their order (priority, then age).
  std::vector<long long> alice_started;
  for (auto id : order)
    if (std::find(alice.begin(), alice.end(), id) != alice.end()) alice_started.push_back(id);
  EXPECT_TRUE(std::is_sorted(alice_started.begin(), alice_started.end()));
}

TEST(FairShare, FifoPolicyRunsTheEarlierBacklogFirst) {
  service s(fair_options("fifo"));
  auto alice = submit_bulk(s, 12, "0", s.alice_token);
  std::vector<long long> bob;
  for (int i = 0; i < 3; ++i) bob.push_back(s.submit(R"({"jobtype":"mysleep","config":"0"})", s.bob_token));
  s.add_worker(1);
  auto all = joined(alice, bob);
  auto at = positions(start_order(s, all), bob);
  EXPECT_EQ(at.front(), 12u) << "fifo: bob's jobs wait behind alice's whole bulk";
}

TEST(FairShare, SharesWeighTheUsers) {
  service s(fair_options());
  auto out = s.run_admin({"quota", "bob", "--share", "3"});
  EXPECT_NE(out.find("share=3"), std::string::npos) << out;
  auto alice = submit_bulk(s, 24, "0", s.alice_token);
  auto bob = submit_bulk(s, 24, "0", s.bob_token);
  s.add_worker(1);
  auto all = joined(alice, bob);
  auto order = start_order(s, all);
  // Of the first 16 jobs, bob (share 3) has three for each of alice's (share 1).
  int bobs = 0;
  for (std::size_t i = 0; i < 16 && i < order.size(); ++i)
    bobs += std::find(bob.begin(), bob.end(), order[i]) != bob.end();
  EXPECT_GE(bobs, 11);
  EXPECT_LE(bobs, 13);
}

// A pool's share weighs its members whose own quota sets none; a member's own share wins.
TEST(FairShare, APoolsShareWeighsItsMembers) {
  service s(fair_options());
  auto out = s.run_admin({"pool", "add", "desc-prod", "bob"});
  EXPECT_NE(out.find("added 1 to pool desc-prod"), std::string::npos) << out;
  out = s.run_admin({"pool", "share", "desc-prod", "3"});
  EXPECT_NE(out.find("pool desc-prod\tshare=3"), std::string::npos) << out;
  auto alice = submit_bulk(s, 24, "0", s.alice_token);
  auto bob = submit_bulk(s, 24, "0", s.bob_token);
  s.add_worker(1);
  auto order = start_order(s, joined(alice, bob));
  int bobs = 0;
  for (std::size_t i = 0; i < 16 && i < order.size(); ++i)
    bobs += std::find(bob.begin(), bob.end(), order[i]) != bob.end();
  EXPECT_GE(bobs, 11) << "bob weighs 3 through his pool";
  EXPECT_LE(bobs, 13);
  // Shown to him as his share; alice, in no pool, keeps 1.
  auto share_of = [&](const std::string& token) {
    auto session = s.call("GET", "/api/session", "", token);
    auto v = session.json();
    return v.as_object().at("quota").as_object().at("share").to_number<double>();
  };
  EXPECT_EQ(share_of(s.bob_token), 3.0);
  EXPECT_EQ(share_of(s.alice_token), 1.0);
  // Share 1 removes the pool's; a bad weight is a usage error.
  EXPECT_NE(s.run_admin({"pool", "share", "desc-prod", "1"}).find("share=1"), std::string::npos);
  EXPECT_NE(s.run_admin({"pool", "share", "desc-prod", "0"}, 2).find("share must be a number"),
            std::string::npos);
}

TEST(Quota, MaxRunningHoldsJobsBackWhileOthersRun) {
  service s(fair_options());
  auto out = s.run_admin({"quota", "alice", "--max-running", "1"});
  EXPECT_NE(out.find("max_running=1"), std::string::npos) << out;
  auto alice = submit_bulk(s, 4, "1", s.alice_token);
  auto bob = submit_bulk(s, 2, "1", s.bob_token);
  s.add_worker(3);  // three slots, but alice may hold only one
  for (auto id : alice) ASSERT_TRUE(s.wait_terminal(id, 60s));
  for (auto id : bob) ASSERT_TRUE(s.wait_terminal(id, 60s, s.bob_token));
  std::vector<std::pair<double, double>> runs;  // (start, stop) of alice's jobs
  for (auto id : alice) {
    auto j = s.job(id);
    runs.emplace_back(time_field(j, "start_time"), time_field(j, "stop_time"));
  }
  std::sort(runs.begin(), runs.end());
  for (std::size_t i = 1; i < runs.size(); ++i)
    EXPECT_GE(runs[i].first, runs[i - 1].second - 0.05)
        << "alice's job " << i << " started before the one before it ended";
  // Bob was not held back: both his jobs ended before alice's last one started.
  double bob_end = 0;
  for (auto id : bob) bob_end = std::max(bob_end, time_field(s.job(id, s.bob_token), "stop_time"));
  EXPECT_LT(bob_end, runs.back().first);
}

TEST(Quota, MaxQueuedAndSubmitRateRefuseWith429) {
  service s(fair_options());
  auto out = s.run_admin({"quota", "alice", "--max-queued", "5", "--submit-rate", "8/min"});
  EXPECT_NE(out.find("max_queued=5"), std::string::npos) << out;
  EXPECT_NE(out.find("submit_rate=8/min"), std::string::npos) << out;
  s.run_admin({"quota", "alice", "--max-queued", "-1"}, 2);
  s.run_admin({"quota", "nobody", "--max-queued", "3"}, 1);
  // The user sees their quota (GET /api/session); bob has none.
  auto mine = s.call("GET", "/api/session", "", s.alice_token);
  ASSERT_EQ(mine.status, 200) << mine.body;
  EXPECT_EQ(json::serialize(mine.json().as_object().at("quota")),
            R"({"share":1E0,"max_running":null,"max_queued":5,"submit_rate_per_minute":8})");
  auto bobs = s.call("GET", "/api/session", "", s.bob_token);
  EXPECT_EQ(json::serialize(bobs.json().as_object().at("quota")),
            R"({"share":1E0,"max_running":null,"max_queued":null,"submit_rate_per_minute":null})");
  auto first = submit_bulk(s, 5, "0", s.alice_token);
  ASSERT_EQ(first.size(), 5u);
  auto r = s.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":"0"})", s.alice_token);
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_NE(r.body.find("max_queued"), std::string::npos) << r.body;
  EXPECT_FALSE(r.header("Retry-After").empty());
  // Bob has no quota: his submissions go on.
  EXPECT_GT(s.submit(R"({"jobtype":"mysleep","config":"0"})", s.bob_token), 0);
  // Once alice's jobs have run, the queue has room again, but the minute's rate has 3 left.
  s.add_worker(2);
  for (auto id : first) ASSERT_TRUE(s.wait_terminal(id, 60s));
  EXPECT_EQ(submit_bulk(s, 3, "0", s.alice_token).size(), 3u);
  r = s.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":"0"})", s.alice_token);
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_NE(r.body.find("submit_rate"), std::string::npos) << r.body;
  auto retry = r.header("Retry-After");
  ASSERT_FALSE(retry.empty());
  EXPECT_GE(std::stoi(retry), 1);
  EXPECT_LE(std::stoi(retry), 60);
  // Lifted: the next submission goes.
  s.run_admin({"quota", "alice", "--submit-rate", "0", "--max-queued", "0"});
  std::this_thread::sleep_for(2100ms);  // the gateway reads a quota again after 2 s
  EXPECT_GT(s.submit(R"({"jobtype":"mysleep","config":"0"})", s.alice_token), 0);
}

// Held and waiting jobs are not started either: they count toward max_queued (they used to slip
// past it, letting a user keep any number of jobs in Redis), and leave the count when they are
// released, run, cancelled or deleted.
TEST(Quota, HeldAndWaitingJobsCountTowardMaxQueued) {
  service s(fair_options());
  s.run_admin({"quota", "alice", "--max-queued", "4"});
  long long held = s.submit(R"({"jobtype":"mysleep","config":"0","hold":true})");
  long long gate = s.submit(R"({"jobtype":"mysleep","config":"0","hold":true})");
  long long waits = s.submit(R"({"jobtype":"mysleep","config":"0","after":[)" + std::to_string(gate) + "]}");
  long long ready = s.submit(R"({"jobtype":"mysleep","config":"0"})");
  ASSERT_EQ(s.state(waits), "waiting");
  ASSERT_EQ(s.state(ready), "ready");
  auto r = s.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":"0","hold":true})");
  EXPECT_EQ(r.status, 429) << r.body;
  EXPECT_NE(r.body.find("you have 4"), std::string::npos) << r.body;
  r = s.call("POST", "/api/jobs/bulk",
             R"({"jobs":[{"jobtype":"mysleep","config":"0","after":[)" + std::to_string(gate) + "]}]}");
  EXPECT_EQ(r.status, 429) << r.body;
  // A cancelled held job leaves the count: one more fits, then none.
  ASSERT_EQ(s.call("POST", "/api/jobs/" + std::to_string(held) + "/cancel").status, 200);
  EXPECT_GT(s.submit(R"({"jobtype":"mysleep","config":"0","hold":true})"), 0);
  EXPECT_EQ(s.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":"0"})").status, 429);
  // Released and run, the gate and the job waiting for it leave the count too.
  s.add_worker(2);
  ASSERT_EQ(s.call("POST", "/api/jobs/" + std::to_string(gate) + "/release").status, 200);
  ASSERT_TRUE(s.wait_terminal(waits, 60s));
  ASSERT_TRUE(s.wait_terminal(ready, 60s));
  redis_sync rs(s.redis.endpoint());
  EXPECT_EQ(rs.exec({"ZCARD", "descprod:user:alice:pending"}).integer, 1) << "the one held job left";
  EXPECT_EQ(submit_bulk(s, 3, "0", s.alice_token).size(), 3u);
}

}  // namespace
}  // namespace descprod::test::api
