// GET /metrics end to end: the real service (tests/support/service), jobs run to done, and the
// scraped text read with a strict exposition-format reader (tests/support/prometheus). Also the
// recount of the job counts at gateway start, the daemon's stats hash, the live pilots in the
// admin overview, and /metrics while Redis is down.
#include <gtest/gtest.h>

#include <chrono>
#include <set>

#include "core/accounts.hpp"
#include "core/job.hpp"
#include "core/redis.hpp"
#include "tests/support/prometheus.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

using namespace std::chrono_literals;

const std::set<std::string> route_classes = {"api_jobs",    "api_bulk",  "api_job",   "events",
                                             "api_account", "api_admin", "api_other", "health",
                                             "metrics",     "static",    "pages",     "other"};

std::string errors_of(const prom_text& t) {
  std::string out;
  for (const auto& e : t.errors) out += e + "\n";
  return out;
}

prom_text scrape(http_client& c, std::string* raw = nullptr) {
  auto r = c.request("GET", "/metrics");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  auto t = parse_prometheus(r.body);
  EXPECT_TRUE(t.errors.empty()) << errors_of(t) << r.body;
  if (raw) *raw = r.body;
  return t;
}

prom_text scrape(service& s, std::string* raw = nullptr) {
  http_client c("127.0.0.1", s.port());
  return scrape(c, raw);
}

double count_of(const prom_text& t, const std::string& method, const std::string& route) {
  return t.value("descprod_http_request_duration_seconds_count", {{"method", method}, {"route", route}})
      .value_or(0);
}

double code_total(const prom_text& t, const std::string& code) {
  return t.value("descprod_http_requests_total", {{"code", code}}).value_or(0);
}

std::vector<long long> submit_and_finish(service& s, int n) {
  std::vector<long long> ids;
  for (int i = 0; i < n; ++i) ids.push_back(s.submit(R"({"jobtype":"mysleep","config":"0"})"));
  for (auto id : ids)
    EXPECT_TRUE(wait_until([&] { return s.state(id) == "done"; }, 30s)) << id << " " << s.state(id);
  return ids;
}

TEST(Metrics, CountsJobsByStateAndEveryRequestExactly) {
  service s;
  const int jobs = 5;
  submit_and_finish(s, jobs);

  http_client c("127.0.0.1", s.port());
  std::string raw;
  auto first = scrape(c, &raw);
  ASSERT_TRUE(first.errors.empty());
  for (auto st : all_job_states()) {
    std::string name(to_string(st));
    EXPECT_EQ(first.value("descprod_jobs", {{"state", name}}), name == "done" ? jobs : 0) << name << "\n"
                                                                                          << raw;
  }
  EXPECT_EQ(first.value("descprod_queue_depth"), 0.0);
  EXPECT_EQ(first.value("descprod_leases"), 0.0);
  EXPECT_EQ(first.value("descprod_jobs_finished_last_minute"), jobs);
  EXPECT_EQ(first.value("descprod_redis_up"), 1.0);
  EXPECT_EQ(first.value("descprod_jobs_recount_running"), 0.0);
  EXPECT_EQ(first.value("descprod_gateway_redis_connected"), 1.0);
  EXPECT_EQ(first.value("descprod_gateway_daemon_ready"), 1.0);
  EXPECT_TRUE(first.value("descprod_daemon_up")) << "exported whether or not the daemon writes stats";
  EXPECT_GE(first.value("descprod_gateway_connections").value_or(0), 1.0);
  for (const auto& sample : first.samples) {
    EXPECT_EQ(sample.name.rfind("descprod_", 0), 0u) << sample.name;
    auto route = sample.labels.find("route");
    if (route != sample.labels.end()) {
      EXPECT_TRUE(route_classes.count(route->second)) << route->second;
    }
  }
  for (const auto& [family, type] : first.types) EXPECT_TRUE(first.helps.count(family)) << family;

  // Known requests on the same keep-alive connection (so each is recorded before the next).
  const int lists = 7, missing = 3;
  http_headers auth = {{"Authorization", "Bearer " + s.alice_token}};
  for (int i = 0; i < lists; ++i) EXPECT_EQ(c.request("GET", "/api/jobs?limit=2", "", auth).status, 200);
  for (int i = 0; i < missing; ++i) EXPECT_EQ(c.request("GET", "/api/jobs/abc", "", auth).status, 404);
  EXPECT_EQ(c.request("POST", "/api/jobs", R"({"jobtype":"mysleep","config":"x"})", auth).status, 400);
  auto second = scrape(c);
  EXPECT_EQ(count_of(second, "GET", "api_jobs") - count_of(first, "GET", "api_jobs"), lists);
  EXPECT_EQ(count_of(second, "GET", "api_other") - count_of(first, "GET", "api_other"), missing);
  EXPECT_EQ(count_of(second, "POST", "api_jobs") - count_of(first, "POST", "api_jobs"), 1);
  EXPECT_EQ(count_of(second, "GET", "metrics") - count_of(first, "GET", "metrics"), 1) << "the first scrape";
  EXPECT_EQ(code_total(second, "2xx") - code_total(first, "2xx"), lists + 1);
  EXPECT_EQ(code_total(second, "4xx") - code_total(first, "4xx"), missing + 1);
  EXPECT_EQ(code_total(second, "5xx"), 0);
  // Every request is in both families: the histogram's counts add up to the status counter.
  double counted = 0, by_code = 0;
  for (const auto& sample : second.all("descprod_http_request_duration_seconds_count"))
    counted += sample.value;
  for (const auto& sample : second.all("descprod_http_requests_total")) by_code += sample.value;
  EXPECT_EQ(counted, by_code);
  // The submits of submit_and_finish and the state polls are there too (other connections).
  EXPECT_GE(count_of(second, "POST", "api_jobs"), jobs + 1);
  EXPECT_GE(count_of(second, "GET", "api_job"), jobs);
  auto sum =
      second.value("descprod_http_request_duration_seconds_sum", {{"method", "GET"}, {"route", "api_jobs"}});
  ASSERT_TRUE(sum);
  EXPECT_GT(*sum, 0);
  EXPECT_LT(*sum, 30);
}

TEST(Metrics, JobCountsAreRecountedWhenTheGatewayStartsWithoutThem) {
  service s;
  const int jobs = 3;
  submit_and_finish(s, jobs);
  // Without workers the next job stays ready.
  for (auto& w : s.workers) w->stop(10s);
  long long queued = s.submit(R"({"jobtype":"mysleep","config":"0"})");
  ASSERT_GT(queued, 0);
  redis_sync r(s.redis.endpoint());
  // Wrong numbers from an older version, then removed: the next gateway start recounts.
  r.exec({"HSET", "descprod:stats:jobs_by_state", "done", "1000"});
  EXPECT_EQ(scrape(s).value("descprod_jobs", {{"state", "done"}}), 1000.0) << "the hash is what is exported";
  r.exec({"DEL", "descprod:stats:jobs_by_state"});
  auto t = scrape(s);
  EXPECT_FALSE(t.value("descprod_jobs", {{"state", "done"}})) << "no counts, none exported";
  s.gateway->stop();
  s.start_gateway();
  ASSERT_TRUE(wait_until([&] { return scrape(s).value("descprod_jobs", {{"state", "done"}}) == jobs; }, 20s));
  auto after = scrape(s);
  EXPECT_EQ(after.value("descprod_jobs", {{"state", "ready"}}), 1.0);
  EXPECT_EQ(after.value("descprod_queue_depth"), 1.0);
  EXPECT_EQ(s.state(queued), "ready");
  EXPECT_NE(read_file(s.dir.file("gateway.log")).find("job counts by state: recount done"),
            std::string::npos);
  // Counting goes on after the recount: cancel the queued job.
  ASSERT_EQ(s.call("POST", "/api/jobs/" + std::to_string(queued) + "/cancel").status, 200);
  auto last = scrape(s);
  EXPECT_EQ(last.value("descprod_jobs", {{"state", "ready"}}), 0.0);
  EXPECT_EQ(last.value("descprod_jobs", {{"state", "cancelled"}}), 1.0);
}

TEST(Metrics, DaemonStatsBecomeCountersAndGaugesAndVanishWithTheHash) {
  service s;
  s.daemon->stop();  // this test writes the daemon's stats hash itself
  redis_sync r(s.redis.endpoint());
  auto now = [&] {
    auto t = r.exec({"TIME"});
    return std::stod(t.elements.at(0).str) + std::stod(t.elements.at(1).str) / 1e6;
  };
  r.exec({"DEL", "descprod:daemon:stats"});
  r.exec({"HSET",
          "descprod:daemon:stats",
          "updated",
          std::to_string(now() - 2),
          "queue_depth",
          "12",
          "workers",
          "3",
          "slots",
          "24",
          "busy_slots",
          "20",
          "outbox",
          "1",
          "leased_total",
          "1500",
          "finished_total",
          "1480",
          "requeued_total",
          "7",
          "lease_expiries_total",
          "2",
          "stale_events_total",
          "4",
          "malformed_total",
          "5",
          "handed_back_total",
          "6",
          "walltime_refusals_total",
          "8"});
  auto t = scrape(s);
  EXPECT_EQ(t.value("descprod_daemon_up"), 1.0);
  auto age = t.value("descprod_daemon_stats_age_seconds");
  ASSERT_TRUE(age);
  EXPECT_GE(*age, 1.5);
  EXPECT_LT(*age, 10);
  EXPECT_EQ(t.value("descprod_daemon_jobs_leased_total"), 1500.0);
  EXPECT_EQ(t.types["descprod_daemon_jobs_leased_total"], "counter");
  EXPECT_EQ(t.value("descprod_daemon_jobs_finished_total"), 1480.0);
  EXPECT_EQ(t.value("descprod_daemon_jobs_requeued_total"), 7.0);
  EXPECT_EQ(t.value("descprod_daemon_lease_expiries_total"), 2.0);
  EXPECT_EQ(t.value("descprod_daemon_stale_events_total"), 4.0);
  EXPECT_EQ(t.value("descprod_daemon_malformed_messages_total"), 5.0);
  EXPECT_EQ(t.value("descprod_daemon_jobs_handed_back_total"), 6.0);
  EXPECT_EQ(t.value("descprod_daemon_walltime_refusals_total"), 8.0);
  EXPECT_EQ(t.value("descprod_daemon_queue_depth"), 12.0);
  EXPECT_EQ(t.types["descprod_daemon_queue_depth"], "gauge");
  EXPECT_EQ(t.value("descprod_daemon_workers"), 3.0);
  EXPECT_EQ(t.value("descprod_daemon_slots"), 24.0);
  EXPECT_EQ(t.value("descprod_daemon_busy_slots"), 20.0);
  EXPECT_EQ(t.value("descprod_daemon_outbox"), 1.0);
  EXPECT_EQ(t.value("descprod_gateway_daemon_ready"), 0.0) << "the daemon is stopped";

  r.exec({"HSET", "descprod:daemon:stats", "updated", std::to_string(now() - 120)});
  auto stale = scrape(s);
  EXPECT_EQ(stale.value("descprod_daemon_up"), 0.0);
  EXPECT_GE(stale.value("descprod_daemon_stats_age_seconds").value_or(0), 119.0);

  r.exec({"DEL", "descprod:daemon:stats"});
  std::string raw;
  auto gone = scrape(s, &raw);
  EXPECT_EQ(gone.value("descprod_daemon_up"), 0.0);
  EXPECT_EQ(raw.find("descprod_daemon_jobs_leased_total"), std::string::npos);
  EXPECT_EQ(raw.find("descprod_daemon_stats_age_seconds"), std::string::npos);
}

TEST(Metrics, NeedsNoTokenRefusesOtherMethodsAndSurvivesRedisGoingAway) {
  service s;
  auto plain = http_request("127.0.0.1", s.port(), "GET", "/metrics?whatever=1");
  EXPECT_EQ(plain.status, 200);
  EXPECT_TRUE(parse_prometheus(plain.body).errors.empty());
  auto post = http_request("127.0.0.1", s.port(), "POST", "/metrics", "{}");
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(post.header("allow"), "GET");
  EXPECT_EQ(post.json().as_object().at("error").as_string(), "method_not_allowed");

  s.redis.stop();
  std::string raw;
  auto t = scrape(s, &raw);
  EXPECT_EQ(t.value("descprod_redis_up"), 0.0);
  EXPECT_EQ(raw.find("descprod_jobs{"), std::string::npos);
  EXPECT_EQ(raw.find("descprod_daemon_up"), std::string::npos) << "unknown without Redis";
  EXPECT_TRUE(t.value("descprod_http_requests_total", {{"code", "2xx"}})) << "the gateway's own metrics stay";
}

TEST(AdminOverview, ListsTheLivePilotsForAdminsOnly) {
  service s;
  redis_sync r(s.redis.endpoint());
  add_user(r, "descprod:", "root", true);
  std::string root = issue_token(r, "descprod:", "root");
  r.exec({"SADD", "descprod:pilots", "4242"});
  r.exec({"HSET",
          "descprod:pilot:4242",
          "id",
          "4242",
          "state",
          "running",
          "slurm_state",
          "RUNNING",
          "reason",
          "None",
          "submitted_time",
          "1795625968.500",
          "started_time",
          "1795625970.250",
          "ended_time",
          "",
          "nodes",
          "2",
          "walltime_minutes",
          "60",
          "slots",
          "256",
          "workers",
          "slurm-4242-n1,slurm-4242-n2",
          "connected",
          "2",
          "output",
          "/var/pilots/descprod-pilot-4242.out"});
  // An ended pilot: its hash remains for a day but it is no longer in the set.
  r.exec({"HSET", "descprod:pilot:4100", "id", "4100", "state", "ended"});

  auto res = s.call("GET", "/api/admin/overview", "", root);
  ASSERT_EQ(res.status, 200) << res.body;
  auto o = res.json().as_object();
  ASSERT_TRUE(o.contains("pilots")) << res.body;
  const auto& pilots = o.at("pilots").as_array();
  ASSERT_EQ(pilots.size(), 1u) << res.body;
  const auto& p = pilots[0].as_object();
  EXPECT_EQ(p.at("id").as_string(), "4242");
  EXPECT_EQ(p.at("state").as_string(), "running");
  EXPECT_EQ(p.at("nodes").as_int64(), 2);
  EXPECT_EQ(p.at("slots").as_int64(), 256);
  EXPECT_EQ(p.at("connected").as_int64(), 2);
  EXPECT_DOUBLE_EQ(p.at("submitted_time").as_double(), 1795625968.5);
  EXPECT_FALSE(p.contains("ended_time")) << "empty times are left out";
  ASSERT_EQ(p.at("workers").as_array().size(), 2u);
  EXPECT_EQ(p.at("workers").as_array()[1].as_string(), "slurm-4242-n2");
  EXPECT_EQ(s.call("GET", "/api/admin/overview").status, 403) << "alice is no admin";

  auto t = scrape(s);
  EXPECT_EQ(t.value("descprod_pilots", {{"state", "running"}}), 1.0);
  EXPECT_EQ(t.value("descprod_pilots", {{"state", "submitted"}}), 0.0);
}

}  // namespace
}  // namespace descprod::test
