// End-to-end tests of GET /api/status (docs/api.md): the daemon's samples of the last hour and
// its current figures, against the real binaries and a real redis-server, with the daemon
// sampling every second (daemon.stats_interval_s: 1). The jobs run are counted from what the test
// did, not from assumed timings.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/api_support.hpp"

namespace descprod::test {
namespace {

using namespace api;
namespace json = boost::json;
using namespace std::chrono_literals;

service_options status_options() {
  auto o = api_options(1);
  o.slots = 2;
  o.daemon_extra = "  stats_interval_s: 1\n";
  return o;
}

std::vector<double> numbers(const json::object& samples, const char* k) {
  std::vector<double> out;
  for (const auto& v : samples.at(k).as_array()) out.push_back(v.to_number<double>());
  return out;
}

double sum(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

// GET /api/status until `done` says the answer is the one awaited (at most `timeout`); the last
// answer's body.
json::object status_until(service& s, const std::function<bool(const json::object&)>& done,
                          std::chrono::milliseconds timeout = 20s, const std::string& token = "") {
  json::object last;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = s.call("GET", "/api/status", "", token);
    EXPECT_EQ(r.status, 200) << r.body;
    if (r.status != 200) return last;
    last = r.json().as_object();
    if (done(last)) return last;
    std::this_thread::sleep_for(200ms);
  }
  ADD_FAILURE() << "the awaited status did not come: " << json::serialize(last);
  return last;
}

class ApiStatus : public ::testing::Test {
 protected:
  service s{status_options()};
};

TEST_F(ApiStatus, NeedsACallerAndOnlyReads) {
  auto r = s.call("GET", "/api/status", "", "dp_" + std::string(64, '0'));
  EXPECT_EQ(r.status, 401) << r.body;
  r = s.call("POST", "/api/status", "{}");
  EXPECT_EQ(r.status, 405) << r.body;
  EXPECT_EQ(r.header("allow"), "GET");
}

TEST_F(ApiStatus, TheLastHoursSamplesCountTheJobsThatEnded) {
  std::vector<long long> ok, bad;
  for (int i = 0; i < 3; ++i) ok.push_back(s.submit(R"({"jobtype":"mysleep","config":"0","howfig":""})"));
  for (int i = 0; i < 2; ++i) bad.push_back(s.submit(R"({"jobtype":"fail","config":"x","howfig":""})"));
  for (auto id : ok) ASSERT_TRUE(s.wait_terminal(id));
  for (auto id : bad) ASSERT_TRUE(s.wait_terminal(id));
  for (auto id : ok) ASSERT_EQ(s.state(id), "done");
  for (auto id : bad) ASSERT_EQ(s.state(id), "failed");

  auto body = status_until(s, [](const json::object& o) {
    const auto& t = o.at("totals").as_object();
    return t.at("done").as_int64() >= 3 && t.at("failed").as_int64() >= 2;
  });
  const auto& samples = body.at("samples").as_object();
  const auto& totals = body.at("totals").as_object();
  EXPECT_EQ(totals.at("done").as_int64(), 3) << "the jobs this test ran, each counted once";
  EXPECT_EQ(totals.at("failed").as_int64(), 2);
  EXPECT_EQ(totals.at("cancelled").as_int64(), 0);
  EXPECT_EQ(body.at("period_s").as_int64(), 1);
  EXPECT_EQ(body.at("window_s").as_int64(), 3600);

  // Every series as long as t; t rising and within the last hour; totals are the series' sums.
  auto t = numbers(samples, "t");
  ASSERT_FALSE(t.empty());
  for (const char* k :
       {"interval_s", "done", "failed", "cancelled", "queue", "running", "workers", "slots", "busy"})
    EXPECT_EQ(samples.at(k).as_array().size(), t.size()) << k;
  const double now = body.at("now").to_number<double>();
  for (std::size_t i = 0; i < t.size(); ++i) {
    EXPECT_GE(t[i], now - 3600) << i;
    EXPECT_LE(t[i], now + 5) << i;
    if (i > 0) {
      EXPECT_GT(t[i], t[i - 1]) << i;
    }
  }
  EXPECT_EQ(sum(numbers(samples, "done")), 3);
  EXPECT_EQ(sum(numbers(samples, "failed")), 2);
  for (double iv : numbers(samples, "interval_s")) {
    EXPECT_GT(iv, 0.5);
    EXPECT_LT(iv, 5.0);
  }
  // The worker: one, with its two slots.
  EXPECT_EQ(numbers(samples, "workers").back(), 1);
  EXPECT_EQ(numbers(samples, "slots").back(), 2);
  ASSERT_TRUE(body.at("current").is_object()) << json::serialize(body);
  const auto& cur = body.at("current").as_object();
  EXPECT_EQ(cur.at("workers").as_int64(), 1);
  EXPECT_EQ(cur.at("slots").as_int64(), 2);
  EXPECT_NEAR(cur.at("time").to_number<double>(), now, 10.0);

  // Aggregate numbers only: nothing of who ran what. Another user gets the same figures.
  auto raw = s.call("GET", "/api/status").body;
  EXPECT_EQ(raw.find("alice"), std::string::npos) << raw;
  EXPECT_EQ(raw.find("\"id\""), std::string::npos) << raw;
  auto bobs = s.call("GET", "/api/status", "", s.bob_token);
  EXPECT_EQ(bobs.status, 200) << bobs.body;
  EXPECT_EQ(bobs.json().as_object().at("totals").as_object().at("done").as_int64(), 3);
}

TEST_F(ApiStatus, QueueAndRunningFollowTheWork) {
  // Two slots, five jobs of 4 s: two run, three wait; later nothing runs and nothing waits.
  std::vector<long long> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(s.submit(R"({"jobtype":"mysleep","config":"4","howfig":""})"));
  status_until(s, [](const json::object& o) {
    const auto& sm = o.at("samples").as_object();
    auto q = sm.at("queue").as_array();
    auto r = sm.at("running").as_array();
    for (std::size_t i = 0; i < q.size(); ++i)
      if (q[i].as_int64() >= 1 && r[i].as_int64() == 2) return true;
    return false;
  });
  for (auto id : ids) ASSERT_TRUE(s.wait_terminal(id, 60s));
  auto body = status_until(s, [](const json::object& o) {
    const auto& sm = o.at("samples").as_object();
    const auto& q = sm.at("queue").as_array();
    const auto& r = sm.at("running").as_array();
    return !q.empty() && q.back().as_int64() == 0 && r.back().as_int64() == 0 &&
           o.at("totals").as_object().at("done").as_int64() == 5;
  });
  EXPECT_EQ(body.at("totals").as_object().at("done").as_int64(), 5);
}

}  // namespace
}  // namespace descprod::test
