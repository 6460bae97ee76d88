// GET /metrics's pure parts (gateway/metrics.hpp): the exposition text and its escapes, the
// bounded route classes, the request histogram, the rendering of the service's state (job counts,
// daemon stats present / stale / missing, Redis down); the test reader of the format
// (tests/support/prometheus) against broken texts; and the admin page's pilot table.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>

#include "core/job.hpp"
#include "gateway/metrics.hpp"
#include "gateway/web.hpp"
#include "tests/support/prometheus.hpp"

namespace m = descprod::gateway::metrics;
namespace web = descprod::gateway::web;
using descprod::job_record;
using descprod::test::parse_prometheus;

namespace {

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

std::string errors_of(const descprod::test::prom_text& t) {
  std::string out;
  for (const auto& e : t.errors) out += e + "\n";
  return out;
}

}  // namespace

TEST(MetricsText, EscapesLabelValuesAndHelpAsTheFormatRequires) {
  EXPECT_EQ(m::escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(m::escape_help("a\\b\"c\nd"), "a\\\\b\"c\\nd");
  m::exposition e;
  e.family("descprod_x", "gauge", "two\nlines \\ here");
  e.sample("descprod_x", {{"state", "we\"ird\\\n"}}, 3);
  EXPECT_EQ(e.text(),
            "# HELP descprod_x two\\nlines \\\\ here\n# TYPE descprod_x gauge\n"
            "descprod_x{state=\"we\\\"ird\\\\\\n\"} 3\n");
  auto parsed = parse_prometheus(e.text());
  EXPECT_TRUE(parsed.errors.empty()) << errors_of(parsed);
  EXPECT_EQ(parsed.value("descprod_x", {{"state", "we\"ird\\\n"}}), 3.0);
  EXPECT_EQ(parsed.helps["descprod_x"], "two\nlines \\ here");
}

TEST(MetricsText, FormatsValuesExactlyAndReadably) {
  EXPECT_EQ(m::format_value(0), "0");
  EXPECT_EQ(m::format_value(42), "42");
  EXPECT_EQ(m::format_value(-7), "-7");
  EXPECT_EQ(m::format_value(0.0005), "0.0005");
  EXPECT_EQ(m::format_value(2.5), "2.5");
  EXPECT_EQ(m::format_value(1795625968.125), "1795625968.125");
  EXPECT_EQ(m::format_value(1e-7), "1e-07");
  EXPECT_EQ(m::format_value(INFINITY), "+Inf");
  EXPECT_EQ(m::format_value(-INFINITY), "-Inf");
  EXPECT_EQ(m::format_value(NAN), "NaN");
  double third = 1.0 / 3;
  EXPECT_EQ(std::stod(m::format_value(third)), third) << "reads back exactly";
}

TEST(MetricsRoutes, EveryPathMapsToOneOfABoundedSetOfClasses) {
  EXPECT_EQ(m::route_class("/api/jobs"), "api_jobs");
  EXPECT_EQ(m::route_class("/api/jobs/bulk"), "api_bulk");
  EXPECT_EQ(m::route_class("/api/jobs/17"), "api_job");
  EXPECT_EQ(m::route_class("/api/jobs/17/events"), "api_job");
  EXPECT_EQ(m::route_class("/api/jobs/17/cancel"), "api_job");
  EXPECT_EQ(m::route_class("/api/events"), "events");
  EXPECT_EQ(m::route_class("/api/login"), "api_account");
  EXPECT_EQ(m::route_class("/api/tokens"), "api_account");
  EXPECT_EQ(m::route_class("/api/admin/overview"), "api_admin");
  EXPECT_EQ(m::route_class("/api/admin/users/bob/approve"), "api_admin");
  EXPECT_EQ(m::route_class("/api/version"), "api_other");
  EXPECT_EQ(m::route_class("/api/jobs/abc"), "api_other");
  EXPECT_EQ(m::route_class("/api/nope/" + std::string(500, 'x')), "api_other");
  EXPECT_EQ(m::route_class("/healthz"), "health");
  EXPECT_EQ(m::route_class("/readyz"), "health");
  EXPECT_EQ(m::route_class("/metrics"), "metrics");
  EXPECT_EQ(m::route_class("/"), "pages");
  EXPECT_EQ(m::route_class("/jobs/5"), "pages");
  EXPECT_EQ(m::route_class("/admin"), "pages");
  EXPECT_EQ(m::route_class("/static/app.css"), "static");
  EXPECT_EQ(m::route_class("/wp-login.php"), "other");
  EXPECT_EQ(m::route_class("/../../etc/passwd"), "other");
  EXPECT_EQ(m::route_class(""), "other");
  EXPECT_EQ(m::method_label("GET"), "GET");
  EXPECT_EQ(m::method_label("DELETE"), "DELETE");
  EXPECT_EQ(m::method_label("BREW"), "OTHER");
  EXPECT_EQ(m::method_label("get"), "OTHER");
  EXPECT_EQ(m::status_class(201), "2xx");
  EXPECT_EQ(m::status_class(404), "4xx");
  EXPECT_EQ(m::status_class(503), "5xx");
  EXPECT_EQ(m::status_class(999), "other");
}

TEST(MetricsHttp, HistogramBucketsAreCumulativeAndCountEveryRequest) {
  m::http_metrics h;
  h.observe("GET", "api_jobs", 200, 0.0004);  // every bucket
  h.observe("GET", "api_jobs", 200, 0.003);   // from le=0.005 on
  h.observe("GET", "api_jobs", 404, 0.0025);  // le=0.0025 (bounds are inclusive)
  h.observe("GET", "api_jobs", 200, 100);     // +Inf only
  h.observe("POST", "api_bulk", 201, 0.2);
  h.observe("BREW", "other", 400, 0.001);
  h.observe("GET", "health", 503, -1);  // a clock oddity counts as 0
  EXPECT_EQ(h.requests(), 7u);
  m::exposition e;
  h.render(e);
  auto t = parse_prometheus(e.text());
  ASSERT_TRUE(t.errors.empty()) << errors_of(t) << e.text();
  EXPECT_EQ(t.types["descprod_http_request_duration_seconds"], "histogram");
  EXPECT_EQ(t.types["descprod_http_requests_total"], "counter");
  auto bucket = [&](const char* method, const char* route, const char* le) {
    return t.value("descprod_http_request_duration_seconds_bucket",
                   {{"method", method}, {"route", route}, {"le", le}});
  };
  EXPECT_EQ(bucket("GET", "api_jobs", "0.0005"), 1.0);
  EXPECT_EQ(bucket("GET", "api_jobs", "0.001"), 1.0);
  EXPECT_EQ(bucket("GET", "api_jobs", "0.0025"), 2.0);
  EXPECT_EQ(bucket("GET", "api_jobs", "0.005"), 3.0);
  EXPECT_EQ(bucket("GET", "api_jobs", "2.5"), 3.0);
  EXPECT_EQ(bucket("GET", "api_jobs", "+Inf"), 4.0);
  EXPECT_EQ(bucket("POST", "api_bulk", "0.1"), 0.0);
  EXPECT_EQ(bucket("POST", "api_bulk", "0.25"), 1.0);
  EXPECT_EQ(bucket("OTHER", "other", "0.001"), 1.0);
  EXPECT_EQ(bucket("GET", "health", "0.0005"), 1.0);
  EXPECT_EQ(
      t.value("descprod_http_request_duration_seconds_count", {{"method", "GET"}, {"route", "api_jobs"}}),
      4.0);
  auto sum =
      t.value("descprod_http_request_duration_seconds_sum", {{"method", "GET"}, {"route", "api_jobs"}});
  ASSERT_TRUE(sum);
  EXPECT_NEAR(*sum, 100.0059, 1e-9);
  EXPECT_EQ(t.value("descprod_http_requests_total", {{"code", "2xx"}}), 4.0);
  EXPECT_EQ(t.value("descprod_http_requests_total", {{"code", "4xx"}}), 2.0);
  EXPECT_EQ(t.value("descprod_http_requests_total", {{"code", "5xx"}}), 1.0);
  // 13 bucket lines (12 bounds and +Inf) per (method, route).
  EXPECT_EQ(t.all("descprod_http_request_duration_seconds_bucket").size(), 4u * 13u);
}

TEST(MetricsService, JobCountsCoverEveryStateAndDaemonCountersBecomeCounters) {
  m::service_snapshot s;
  s.redis_up = true;
  s.now_s = 1000;
  s.jobs_by_state = std::map<std::string, long long>{{"ready", 4}, {"done", 10}, {"running", 2}};
  s.queue_depth = 4;
  s.leases = 2;
  s.finished_last_minute = 3;
  s.daemon_stats = std::map<std::string, std::string>{{"updated", "995.5"},
                                                      {"queue_depth", "4"},
                                                      {"workers", "2"},
                                                      {"slots", "8"},
                                                      {"busy_slots", "2"},
                                                      {"outbox", "0"},
                                                      {"leased_total", "16"},
                                                      {"finished_total", "10"},
                                                      {"requeued_total", "1"},
                                                      {"lease_expiries_total", "1"},
                                                      {"stale_events_total", "0"},
                                                      {"malformed_total", "2"},
                                                      {"handed_back_total", "0"},
                                                      {"walltime_refusals_total", "0"},
                                                      {"junk", "not a number"},
                                                      {"workers_refused_total", "3"},
                                                      {"new_gauge", "1.5"},
                                                      {"Bad-Name", "1"}};
  s.pilots_by_state = std::map<std::string, long long>{{"running", 1}};
  m::exposition e;
  m::render_service(e, s);
  auto t = parse_prometheus(e.text());
  ASSERT_TRUE(t.errors.empty()) << errors_of(t) << e.text();
  for (auto st : descprod::all_job_states())
    EXPECT_TRUE(t.value("descprod_jobs", {{"state", std::string(descprod::to_string(st))}}))
        << descprod::to_string(st);
  EXPECT_EQ(t.all("descprod_jobs").size(), descprod::all_job_states().size());
  EXPECT_EQ(t.value("descprod_jobs", {{"state", "done"}}), 10.0);
  EXPECT_EQ(t.value("descprod_jobs", {{"state", "lost"}}), 0.0);
  EXPECT_EQ(t.value("descprod_queue_depth"), 4.0);
  EXPECT_EQ(t.value("descprod_leases"), 2.0);
  EXPECT_EQ(t.value("descprod_jobs_finished_last_minute"), 3.0);
  EXPECT_EQ(t.value("descprod_daemon_up"), 1.0);
  EXPECT_EQ(t.value("descprod_daemon_stats_age_seconds"), 4.5);
  EXPECT_EQ(t.value("descprod_daemon_jobs_leased_total"), 16.0);
  EXPECT_EQ(t.types["descprod_daemon_jobs_leased_total"], "counter");
  EXPECT_EQ(t.value("descprod_daemon_malformed_messages_total"), 2.0);
  EXPECT_EQ(t.value("descprod_daemon_lease_expiries_total"), 1.0);
  EXPECT_EQ(t.value("descprod_daemon_workers"), 2.0);
  EXPECT_EQ(t.types["descprod_daemon_workers"], "gauge");
  EXPECT_EQ(t.value("descprod_daemon_busy_slots"), 2.0);
  EXPECT_EQ(t.value("descprod_pilots", {{"state", "running"}}), 1.0);
  EXPECT_EQ(t.value("descprod_pilots", {{"state", "submitted"}}), 0.0);
  EXPECT_FALSE(contains(e.text(), "junk"));
  // Fields the daemon adds later are exported under their own name.
  EXPECT_EQ(t.value("descprod_daemon_workers_refused_total"), 3.0) << e.text();
  EXPECT_EQ(t.types["descprod_daemon_workers_refused_total"], "counter");
  EXPECT_EQ(t.value("descprod_daemon_new_gauge"), 1.5);
  EXPECT_EQ(t.types["descprod_daemon_new_gauge"], "gauge");
  EXPECT_FALSE(contains(e.text(), "Bad-Name"));
  EXPECT_FALSE(contains(e.text(), "descprod_daemon_updated"));
  for (const auto& sample : t.samples) EXPECT_EQ(sample.name.rfind("descprod_", 0), 0u) << sample.name;
  for (const auto& [name, help] : t.helps) EXPECT_FALSE(help.empty()) << name;
  for (const auto& sample : t.samples) {
    auto fam = sample.name;
    EXPECT_TRUE(t.types.count(fam)) << "no TYPE for " << fam;
  }
}

TEST(MetricsService, MissingOrStaleDaemonStatsAndRedisDownExportOnlyWhatIsKnown) {
  m::service_snapshot s;
  s.redis_up = true;
  s.now_s = 1000;
  {
    m::exposition e;
    m::render_service(e, s);
    auto t = parse_prometheus(e.text());
    ASSERT_TRUE(t.errors.empty()) << errors_of(t);
    EXPECT_EQ(t.value("descprod_daemon_up"), 0.0);
    EXPECT_FALSE(contains(e.text(), "descprod_daemon_jobs_leased_total"));
    EXPECT_FALSE(contains(e.text(), "descprod_daemon_stats_age_seconds"));
    EXPECT_FALSE(contains(e.text(), "descprod_jobs{")) << "no counts: nothing exported";
  }
  s.daemon_stats = std::map<std::string, std::string>{{"updated", "900"}, {"leased_total", "5"}};
  s.jobs_recounting = true;
  {
    m::exposition e;
    m::render_service(e, s);
    auto t = parse_prometheus(e.text());
    ASSERT_TRUE(t.errors.empty()) << errors_of(t);
    EXPECT_EQ(t.value("descprod_daemon_up"), 0.0) << "100 s old";
    EXPECT_EQ(t.value("descprod_daemon_stats_age_seconds"), 100.0);
    EXPECT_EQ(t.value("descprod_daemon_jobs_leased_total"), 5.0);
    EXPECT_EQ(t.value("descprod_jobs_recount_running"), 1.0);
  }
  m::service_snapshot down;
  down.now_s = 1000;
  m::exposition e;
  m::render_service(e, down);
  auto t = parse_prometheus(e.text());
  ASSERT_TRUE(t.errors.empty()) << errors_of(t);
  EXPECT_EQ(t.value("descprod_redis_up"), 0.0);
  EXPECT_EQ(t.samples.size(), 1u) << e.text();
}

TEST(MetricsService, GatewayGaugesRender) {
  m::gateway_snapshot g;
  g.version = "0.1.0";
  g.start_time_s = 1795625968.5;
  g.connections = 3;
  g.redis_up = true;
  g.event_streams = 2;
  m::exposition e;
  m::render_gateway(e, g);
  auto t = parse_prometheus(e.text());
  ASSERT_TRUE(t.errors.empty()) << errors_of(t);
  EXPECT_EQ(t.value("descprod_build_info", {{"version", "0.1.0"}}), 1.0);
  EXPECT_EQ(t.value("descprod_gateway_connections"), 3.0);
  EXPECT_EQ(t.value("descprod_gateway_start_time_seconds"), 1795625968.5);
  EXPECT_EQ(t.value("descprod_gateway_redis_connected"), 1.0);
  EXPECT_EQ(t.value("descprod_gateway_daemon_ready"), 0.0);
  EXPECT_EQ(t.value("descprod_gateway_event_streams"), 2.0);
}

// The reader the e2e test relies on must itself catch broken texts.
TEST(PrometheusReader, RejectsBrokenTexts) {
  auto bad = [](const std::string& text) { return !parse_prometheus(text).errors.empty(); };
  EXPECT_FALSE(bad("# HELP a_b x\n# TYPE a_b gauge\na_b{x=\"1\"} 2\na_b 3 1700000000000\n"));
  EXPECT_TRUE(bad("a_b 1"));                                    // no final newline
  EXPECT_TRUE(bad("1abc 1\n"));                                 // bad name
  EXPECT_TRUE(bad("a{b=1} 1\n"));                               // unquoted label value
  EXPECT_TRUE(bad("a{b=\"x\\t\"} 1\n"));                        // bad escape
  EXPECT_TRUE(bad("a{b=\"x\",b=\"y\"} 1\n"));                   // label twice
  EXPECT_TRUE(bad("a one\n"));                                  // bad value
  EXPECT_TRUE(bad("a 1 2 3\n"));                                // trailing text
  EXPECT_TRUE(bad("a 1\nb 1\na 2\n"));                          // family lines apart (and a dup)
  EXPECT_TRUE(bad("a 1\na 2\n"));                               // duplicate series
  EXPECT_TRUE(bad("# TYPE a gauge\n# TYPE a counter\na 1\n"));  // two TYPE lines
  EXPECT_TRUE(bad("a 1\n# TYPE a gauge\n"));                    // TYPE after samples
  EXPECT_TRUE(bad("# TYPE a wibble\na 1\n"));                   // unknown type
  const std::string hist_ok =
      "# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 3\n"
      "h_sum 1.5\nh_count 3\n";
  EXPECT_FALSE(bad(hist_ok)) << [&] {
    std::string s;
    for (auto& e : parse_prometheus(hist_ok).errors) s += e;
    return s;
  }();
  EXPECT_TRUE(
      bad("# TYPE h histogram\nh_bucket{le=\"0.1\"} 2\nh_bucket{le=\"1\"} 1\n"
          "h_bucket{le=\"+Inf\"} 3\nh_sum 1\nh_count 3\n"));                              // not cumulative
  EXPECT_TRUE(bad("# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_sum 1\nh_count 1\n"));   // no +Inf
  EXPECT_TRUE(bad("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_sum 1\nh_count 2\n"));  // count
  EXPECT_TRUE(bad("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 3\nh_count 3\n"));           // no sum
}

TEST(AdminPilots, ThePilotTableShowsEveryPilotWithEveryValueEscaped) {
  const std::string evil = "<script>alert(1)</script>\"'&";
  web::admin_view v;
  v.user.name = "root";
  v.user.admin = true;
  v.user.csrf = std::string(64, 'c');
  v.now_s = 1795625999;
  job_record p;
  p["id"] = "123456";
  p["state"] = "running";
  p["slurm_state"] = "RUNNING";
  p["reason"] = evil;
  p["nodes"] = "2";
  p["slots"] = "256";
  p["walltime_minutes"] = "60";
  p["workers"] = "slurm-123456-nid001," + evil;
  p["connected"] = "1";
  p["submitted_time"] = "1795625968.5";
  p["started_time"] = "1795625970.25";
  p["output"] = "/pscratch/" + evil + ".out";
  v.pilots.push_back(p);
  job_record q;
  q["id"] = "123457";
  q["state"] = "submitted";
  q["slurm_state"] = "PENDING";
  q["reason"] = "Priority";
  q["connected"] = "0";
  q["site"] = "nersc";
  q["pin"] = "77";
  v.pilots.push_back(q);
  p["site"] = evil;
  v.pilots.back() = q;
  v.pilots.front() = p;
  auto html = web::admin_page(v);
  EXPECT_TRUE(contains(html, "<td data-label=\"Site\">nersc · job 77</td>"))
      << "a pinned pilot names its job";
  EXPECT_FALSE(contains(html, "<script>alert")) << "a value got through unescaped";
  EXPECT_TRUE(contains(html, "&lt;script&gt;alert(1)&lt;/script&gt;"));
  EXPECT_TRUE(contains(html, "id=\"pilots\""));
  EXPECT_TRUE(contains(html, "data-pilot=\"123456\""));
  EXPECT_TRUE(contains(html, "data-pilot=\"123457\""));
  EXPECT_TRUE(contains(html, "PENDING (Priority)"));
  EXPECT_TRUE(contains(html, "60 min"));
  EXPECT_TRUE(contains(html, "1 connected: slurm-123456-nid001,"));
  EXPECT_TRUE(contains(html, "2026-11-25 16:59:28"));  // submitted_time as a date (UTC)

  web::admin_view none;
  none.user = v.user;
  EXPECT_TRUE(contains(web::admin_page(none), "No Slurm pilot is alive."));
}
