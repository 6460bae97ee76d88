// Unit tests of the gateway's pure logic (api.hpp), of handle_request on the paths that need no
// Redis (routing, method checks, missing token, Redis down), and of the HTTP session's limits on
// an in-process server over loopback. Tests with Redis and the real binaries are in tests/e2e.
#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <set>
#include <string>
#include <thread>

#include "gateway/api.hpp"
#include "gateway/events.hpp"
#include "gateway/handler.hpp"
#include "gateway/server.hpp"

namespace dg = descprod::gateway;
namespace json = boost::json;
namespace net = boost::asio;
namespace http = boost::beast::http;
using descprod::job_state;

namespace {

const char* apps_yaml = R"(
apps:
  - name: mysleep
    help: "sleeps N seconds"
    pattern: "^[0-9]+$"
    max_attempts: 2
  - name: anything
    help: "no pattern"
  - name: howapp
    help: "howfig restricted"
    howfig_pattern: "^(fast|slow)$"
)";

descprod::app_registry test_apps() { return descprod::parse_apps(apps_yaml, "apps.yaml"); }

json::value parse(const std::string& s) { return json::parse(s); }

// Validates one job body text end to end (JSON parse, then field checks).
std::optional<dg::api_error> check_body(const std::string& body, dg::job_request* out = nullptr) {
  json::value v;
  if (auto e = dg::parse_json_body(body, v)) return e;
  dg::job_request r;
  auto e = dg::validate_job(v, test_apps(), r);
  if (out) *out = r;
  return e;
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

}  // namespace

// ---- job validation -------------------------------------------------------------------------

TEST(GatewayValidation, AcceptsMinimalJobWithDefaultsAndAppMaxAttempts) {
  dg::job_request r;
  auto e = check_body(R"({"jobtype":"mysleep","config":"30"})", &r);
  ASSERT_FALSE(e) << e->detail;
  EXPECT_EQ(r.jobtype, "mysleep");
  EXPECT_EQ(r.config, "30");
  EXPECT_EQ(r.howfig, "");
  EXPECT_EQ(r.priority, 0);
  EXPECT_FALSE(r.parent);
  EXPECT_EQ(r.max_attempts, 2);
}

TEST(GatewayValidation, AcceptsAllFields) {
  dg::job_request r;
  auto e = check_body(
      R"({"jobtype":"howapp","config":"a-b:c","howfig":"fast","priority":-7,"parent":12})", &r);
  ASSERT_FALSE(e) << e->detail;
  EXPECT_EQ(r.howfig, "fast");
  EXPECT_EQ(r.priority, -7);
  ASSERT_TRUE(r.parent);
  EXPECT_EQ(*r.parent, 12);
  EXPECT_EQ(r.max_attempts, 3);
}

TEST(GatewayValidation, MalformedJsonIsBadJson) {
  auto e = check_body(R"({"jobtype": "mysleep", )");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400u);
  EXPECT_EQ(e->error, "bad_json");
  EXPECT_TRUE(contains(e->detail, "malformed JSON")) << e->detail;
}

TEST(GatewayValidation, TrailingGarbageAfterJsonIsBadJson) {
  auto e = check_body(R"({"jobtype":"mysleep","config":"1"} x)");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->error, "bad_json");
}

TEST(GatewayValidation, EmptyBodyIsBadJson) {
  auto e = check_body("");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400u);
  EXPECT_EQ(e->error, "bad_json");
  EXPECT_TRUE(contains(e->detail, "empty"));
}

TEST(GatewayValidation, BodyThatIsNotAnObjectIsRefused) {
  auto e = check_body(R"(["mysleep","1"])");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400u);
  EXPECT_EQ(e->error, "bad_request");
  EXPECT_TRUE(contains(e->detail, "JSON object")) << e->detail;
}

TEST(GatewayValidation, MissingJobtypeIsNamed) {
  auto e = check_body(R"({"config":"1"})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400u);
  EXPECT_EQ(e->detail, "missing field 'jobtype'");
}

TEST(GatewayValidation, MissingConfigIsNamed) {
  auto e = check_body(R"({"jobtype":"mysleep"})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400u);
  EXPECT_EQ(e->detail, "missing field 'config'");
}

TEST(GatewayValidation, MistypedJobtypeIsNamedWithItsType) {
  auto e = check_body(R"({"jobtype":5,"config":"1"})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400u);
  EXPECT_EQ(e->detail, "field 'jobtype' must be a string, not an integer");
}

TEST(GatewayValidation, ConfigAsNumberIsRefused) {
  auto e = check_body(R"({"jobtype":"mysleep","config":30})");
  ASSERT_TRUE(e);
  EXPECT_TRUE(contains(e->detail, "field 'config' must be a string")) << e->detail;
}

TEST(GatewayValidation, UnknownFieldIsRefused) {
  auto e = check_body(R"({"jobtype":"mysleep","config":"1","user":"root"})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400u);
  EXPECT_TRUE(contains(e->detail, "unknown field 'user'")) << e->detail;
}

TEST(GatewayValidation, UnknownJobtypeListsTheKnownTypes) {
  auto e = check_body(R"({"jobtype":"rm","config":"1"})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400u);
  EXPECT_EQ(e->error, "unknown_jobtype");
  EXPECT_EQ(e->detail, "unknown jobtype 'rm'; known: anything, howapp, mysleep");
}

TEST(GatewayValidation, ConfigWithSpaceFailsCheckConfig) {
  auto e = check_body(R"({"jobtype":"anything","config":"a b"})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400u);
  EXPECT_EQ(e->error, "invalid_config");
  EXPECT_TRUE(contains(e->detail, "check_config code 1")) << e->detail;
  EXPECT_TRUE(contains(e->detail, "only letters, digits")) << e->detail;
}

TEST(GatewayValidation, ConfigWithShellSubstitutionFailsCheckConfig) {
  auto e = check_body(R"j({"jobtype":"anything","config":"$(id)"})j");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400u);
  EXPECT_EQ(e->error, "invalid_config");
  EXPECT_TRUE(contains(e->detail, "check_config code 1")) << e->detail;
}

TEST(GatewayValidation, ConfigWithFourDashesFailsCheckConfigCode2) {
  auto e = check_body(R"({"jobtype":"anything","config":"a----b"})");
  ASSERT_TRUE(e);
  EXPECT_TRUE(contains(e->detail, "check_config code 2")) << e->detail;
}

TEST(GatewayValidation, EmptyConfigFailsCheckConfigCode9) {
  auto e = check_body(R"({"jobtype":"anything","config":""})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->error, "invalid_config");
  EXPECT_TRUE(contains(e->detail, "check_config code 9")) << e->detail;
}

TEST(GatewayValidation, ConfigNotMatchingTheAppPatternShowsThePattern) {
  auto e = check_body(R"({"jobtype":"mysleep","config":"abc"})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400u);
  EXPECT_EQ(e->error, "invalid_config");
  EXPECT_EQ(e->detail, "config 'abc' does not match the pattern of application mysleep: ^[0-9]+$");
}

TEST(GatewayValidation, EmptyHowfigIsAllowedEvenWithAHowfigPattern) {
  auto e = check_body(R"({"jobtype":"howapp","config":"x","howfig":""})");
  EXPECT_FALSE(e) << e->detail;
}

TEST(GatewayValidation, HowfigFailingCheckConfigIsRefused) {
  auto e = check_body(R"({"jobtype":"anything","config":"x","howfig":"a;b"})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->error, "invalid_config");
  EXPECT_TRUE(contains(e->detail, "howfig 'a;b'")) << e->detail;
  EXPECT_TRUE(contains(e->detail, "check_config code 1")) << e->detail;
}

TEST(GatewayValidation, HowfigNotMatchingHowfigPatternIsRefused) {
  auto e = check_body(R"({"jobtype":"howapp","config":"x","howfig":"medium"})");
  ASSERT_TRUE(e);
  EXPECT_TRUE(contains(e->detail, "howfig 'medium' does not match")) << e->detail;
  EXPECT_TRUE(contains(e->detail, "^(fast|slow)$")) << e->detail;
}

TEST(GatewayValidation, PriorityAtTheBoundsIsAccepted) {
  dg::job_request r;
  EXPECT_FALSE(check_body(R"({"jobtype":"anything","config":"x","priority":1000})", &r));
  EXPECT_EQ(r.priority, 1000);
  EXPECT_FALSE(check_body(R"({"jobtype":"anything","config":"x","priority":-1000})", &r));
  EXPECT_EQ(r.priority, -1000);
}

TEST(GatewayValidation, PriorityOutOfRangeIsRefused) {
  for (const char* p : {"1001", "-1001", "18446744073709551615"}) {
    auto e = check_body(std::string(R"({"jobtype":"anything","config":"x","priority":)") + p + "}");
    ASSERT_TRUE(e) << p;
    EXPECT_EQ(e->status, 400u);
    EXPECT_EQ(e->detail, "field 'priority' must be between -1000 and 1000") << p;
  }
}

TEST(GatewayValidation, PriorityThatIsNotAnIntegerIsRefused) {
  for (const char* p : {"\"5\"", "5.0", "true", "null"}) {
    auto e = check_body(std::string(R"({"jobtype":"anything","config":"x","priority":)") + p + "}");
    ASSERT_TRUE(e) << p;
    EXPECT_TRUE(contains(e->detail, "field 'priority' must be an integer")) << e->detail;
  }
}

TEST(GatewayValidation, ParentMustBeAPositiveInteger) {
  auto e = check_body(R"({"jobtype":"anything","config":"x","parent":0})");
  ASSERT_TRUE(e);
  EXPECT_TRUE(contains(e->detail, "field 'parent' must be between 1 and")) << e->detail;
  e = check_body(R"({"jobtype":"anything","config":"x","parent":"3"})");
  ASSERT_TRUE(e);
  EXPECT_TRUE(contains(e->detail, "field 'parent' must be an integer")) << e->detail;
}

TEST(GatewayValidation, ConfigOf512BytesIsAcceptedAnd513Refused) {
  std::string ok(512, 'a');
  EXPECT_FALSE(check_body(R"({"jobtype":"anything","config":")" + ok + "\"}"));
  auto e = check_body(R"({"jobtype":"anything","config":")" + ok + "a\"}");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400u);
  EXPECT_EQ(e->detail, "field 'config' is longer than 512 bytes");
}

TEST(GatewayValidation, OversizedHowfigAndJobtypeAreRefused) {
  auto e = check_body(R"({"jobtype":"anything","config":"x","howfig":")" + std::string(600, 'h') +
                      "\"}");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->detail, "field 'howfig' is longer than 512 bytes");
  e = check_body(R"({"jobtype":")" + std::string(65, 'j') + R"(","config":"x"})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->detail, "field 'jobtype' is longer than 64 bytes");
}

TEST(GatewayValidation, LongUserInputIsCutInErrorDetails) {
  auto e = check_body(R"({"jobtype":"anything","config":")" + std::string(300, ' ') + "\"}");
  ASSERT_TRUE(e);
  EXPECT_LT(e->detail.size(), 200u) << e->detail;
}

// ---- bulk validation ------------------------------------------------------------------------

namespace {
std::optional<dg::api_error> check_bulk(const std::string& body, std::size_t max_jobs,
                                        std::vector<dg::job_request>* out = nullptr) {
  std::vector<dg::job_request> reqs;
  auto e = dg::validate_bulk(parse(body), test_apps(), max_jobs, reqs);
  if (out) *out = reqs;
  return e;
}
}  // namespace

TEST(GatewayBulkValidation, AcceptsAListOfValidJobs) {
  std::vector<dg::job_request> reqs;
  auto e = check_bulk(
      R"({"jobs":[{"jobtype":"mysleep","config":"1"},{"jobtype":"anything","config":"b","priority":5}]})",
      10, &reqs);
  ASSERT_FALSE(e) << e->detail;
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[1].priority, 5);
}

TEST(GatewayBulkValidation, InvalidJobIsReportedWithItsIndexAndNothingIsReturned) {
  std::vector<dg::job_request> reqs;
  auto e = check_bulk(
      R"({"jobs":[{"jobtype":"mysleep","config":"1"},{"jobtype":"mysleep","config":"2"},{"jobtype":"mysleep","config":"x"}]})",
      10, &reqs);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400u);
  EXPECT_EQ(e->detail.rfind("jobs[2]: config 'x' does not match", 0), 0u) << e->detail;
  EXPECT_TRUE(reqs.empty());
}

TEST(GatewayBulkValidation, NonObjectItemIsReportedWithItsIndex) {
  auto e = check_bulk(R"({"jobs":[{"jobtype":"mysleep","config":"1"},7]})", 10);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->detail, "jobs[1]: a job must be a JSON object, not an integer");
}

TEST(GatewayBulkValidation, EmptyListIsRefused) {
  auto e = check_bulk(R"({"jobs":[]})", 10);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400u);
  EXPECT_EQ(e->detail, "field 'jobs' must hold at least one job");
}

TEST(GatewayBulkValidation, MoreThanTheLimitIsRefused) {
  auto e = check_bulk(
      R"({"jobs":[{"jobtype":"mysleep","config":"1"},{"jobtype":"mysleep","config":"1"},{"jobtype":"mysleep","config":"1"}]})",
      2);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->detail, "field 'jobs' holds 3 jobs; at most 2 are allowed per request");
}

TEST(GatewayBulkValidation, MissingOrMistypedJobsListIsRefused) {
  auto e = check_bulk(R"({})", 10);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->detail, "missing field 'jobs'");
  e = check_bulk(R"({"jobs":{"jobtype":"mysleep"}})", 10);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->detail, "field 'jobs' must be an array, not an object");
  e = check_bulk(R"({"jobs":[{"jobtype":"mysleep","config":"1"}],"dry_run":true})", 10);
  ASSERT_TRUE(e);
  EXPECT_TRUE(contains(e->detail, "unknown field 'dry_run'")) << e->detail;
}

// ---- routing and query --------------------------------------------------------------------

TEST(GatewayRoutes, JobPathCarriesTheId) {
  auto r = dg::match_route("/api/jobs/12");
  EXPECT_EQ(r.kind, dg::route_kind::job);
  EXPECT_EQ(r.id, 12);
}

TEST(GatewayRoutes, EventsPathCarriesTheId) {
  auto r = dg::match_route("/api/jobs/12/events");
  EXPECT_EQ(r.kind, dg::route_kind::job_events);
  EXPECT_EQ(r.id, 12);
}

TEST(GatewayRoutes, NonNumericOrOutOfRangeIdsAreNotFound) {
  for (const char* p : {"/api/jobs/abc", "/api/jobs/0", "/api/jobs/-1", "/api/jobs/12a",
                        "/api/jobs/", "/api/jobs/1234567890123456789012", "/api/jobs/12/",
                        "/api/jobs/12/log2", "/api/jobs/12/events/x", "/api/jobs//events"})
    EXPECT_EQ(dg::match_route(p).kind, dg::route_kind::not_found) << p;
}

TEST(GatewayRoutes, FixedPathsAreRecognised) {
  EXPECT_EQ(dg::match_route("/healthz").kind, dg::route_kind::healthz);
  EXPECT_EQ(dg::match_route("/api/version").kind, dg::route_kind::version);
  EXPECT_EQ(dg::match_route("/api/jobs").kind, dg::route_kind::jobs);
  EXPECT_EQ(dg::match_route("/api/jobs/bulk").kind, dg::route_kind::jobs_bulk);
  EXPECT_EQ(dg::match_route("/api").kind, dg::route_kind::not_found);
  EXPECT_EQ(dg::match_route("/").kind, dg::route_kind::not_found);
}

TEST(GatewayRoutes, AllowedMethodsPerRoute) {
  EXPECT_EQ(dg::allowed_methods(dg::route_kind::jobs), "GET, POST");
  EXPECT_EQ(dg::allowed_methods(dg::route_kind::jobs_bulk), "POST");
  EXPECT_EQ(dg::allowed_methods(dg::route_kind::job), "GET, DELETE");
  EXPECT_TRUE(dg::method_allowed(dg::route_kind::jobs, "POST"));
  EXPECT_TRUE(dg::method_allowed(dg::route_kind::job, "DELETE"));
  EXPECT_FALSE(dg::method_allowed(dg::route_kind::job, "POST"));
  EXPECT_FALSE(dg::method_allowed(dg::route_kind::job, "GET, DELETE"));
  EXPECT_FALSE(dg::method_allowed(dg::route_kind::jobs_bulk, "GET"));
}

TEST(GatewayRoutes, JobSubRoutesCarryTheIdAndTheirMethods) {
  struct c {
    const char* path;
    dg::route_kind kind;
    const char* allow;
  };
  for (const auto& t :
       std::vector<c>{{"/api/jobs/7/log", dg::route_kind::job_log, "GET"},
                      {"/api/jobs/7/events", dg::route_kind::job_events, "GET"},
                      {"/api/jobs/7/cancel", dg::route_kind::job_cancel, "POST"},
                      {"/api/jobs/7/archive", dg::route_kind::job_archive, "POST"},
                      {"/api/jobs/7/unarchive", dg::route_kind::job_unarchive, "POST"},
                      {"/api/jobs/7/claim", dg::route_kind::job_claim, "POST"},
                      {"/api/jobs/7/started", dg::route_kind::job_started, "POST"},
                      {"/api/jobs/7/progress", dg::route_kind::job_progress, "POST"},
                      {"/api/jobs/7/finished", dg::route_kind::job_finished, "POST"}}) {
    auto r = dg::match_route(t.path);
    EXPECT_EQ(r.kind, t.kind) << t.path;
    EXPECT_EQ(r.id, 7) << t.path;
    EXPECT_EQ(dg::allowed_methods(r.kind), t.allow) << t.path;
  }
  for (const char* p : {"/api/jobs/7/cancel/", "/api/jobs/7/Cancel", "/api/jobs/x/log",
                        "/api/jobs/7/logs", "/api/jobs/0/claim"})
    EXPECT_EQ(dg::match_route(p).kind, dg::route_kind::not_found) << p;
}

TEST(GatewayRoutes, ProbesAreMatchedAndPublic) {
  EXPECT_EQ(dg::match_route("/readyz").kind, dg::route_kind::readyz);
  EXPECT_EQ(dg::match_route("/api/events").kind, dg::route_kind::events);
  EXPECT_TRUE(dg::is_public(dg::route_kind::readyz));
  EXPECT_TRUE(dg::is_public(dg::route_kind::healthz));
  EXPECT_FALSE(dg::is_public(dg::route_kind::events));
  EXPECT_FALSE(dg::is_public(dg::route_kind::job));
}

TEST(GatewayRoutes, OnlyEventsAndFollowedJobEventsAreStreams) {
  auto events = dg::match_route("/api/events");
  auto job_events = dg::match_route("/api/jobs/3/events");
  EXPECT_TRUE(dg::is_event_stream(events, "GET", ""));
  EXPECT_TRUE(dg::is_event_stream(events, "GET", "job=3"));
  EXPECT_FALSE(dg::is_event_stream(events, "POST", ""));
  EXPECT_TRUE(dg::is_event_stream(job_events, "GET", "follow=1"));
  EXPECT_TRUE(dg::is_event_stream(job_events, "GET", "follow=true"));
  EXPECT_FALSE(dg::is_event_stream(job_events, "GET", ""));
  EXPECT_FALSE(dg::is_event_stream(job_events, "GET", "follow=0"));
  EXPECT_FALSE(dg::is_event_stream(job_events, "GET", "follow=yes"));  // a 400, as JSON
  EXPECT_FALSE(dg::is_event_stream(dg::match_route("/api/jobs/3"), "GET", "follow=1"));
}

TEST(GatewayQueries, LogLinesDefaultBoundsAndUnknownParameters) {
  int lines = 0;
  ASSERT_FALSE(dg::parse_log_query("", lines));
  EXPECT_EQ(lines, 100);
  ASSERT_FALSE(dg::parse_log_query("lines=10000", lines));
  EXPECT_EQ(lines, 10000);
  ASSERT_FALSE(dg::parse_log_query("lines=1", lines));
  EXPECT_EQ(lines, 1);
  for (const char* q : {"lines=0", "lines=10001", "lines=abc", "lines=", "lines=-3"}) {
    auto e = dg::parse_log_query(q, lines);
    ASSERT_TRUE(e) << q;
    EXPECT_EQ(e->status, 400u);
    EXPECT_EQ(e->detail, "lines must be an integer between 1 and 10000") << q;
  }
  auto e = dg::parse_log_query("line=5", lines);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->detail, "unknown query parameter 'line'; known: lines");
}

TEST(GatewayQueries, FollowAndJobParameters) {
  bool follow = true;
  ASSERT_FALSE(dg::parse_job_events_query("", follow));
  EXPECT_FALSE(follow);
  ASSERT_FALSE(dg::parse_job_events_query("follow=1", follow));
  EXPECT_TRUE(follow);
  EXPECT_TRUE(dg::parse_job_events_query("follow=2", follow));
  EXPECT_TRUE(dg::parse_job_events_query("since=5", follow));
  std::optional<descprod::job_id> job;
  ASSERT_FALSE(dg::parse_events_query("job=42", job));
  ASSERT_TRUE(job);
  EXPECT_EQ(*job, 42);
  ASSERT_FALSE(dg::parse_events_query("", job));
  EXPECT_FALSE(job);
  for (const char* q : {"job=0", "job=abc", "job=", "owner=bob"})
    EXPECT_TRUE(dg::parse_events_query(q, job)) << q;
}

TEST(GatewayListQuery, ParentAndArchivedParameters) {
  dg::list_query q;
  ASSERT_FALSE(dg::parse_list_query("parent=12&archived=1", q));
  ASSERT_TRUE(q.parent);
  EXPECT_EQ(*q.parent, 12);
  ASSERT_TRUE(q.archived);
  EXPECT_TRUE(*q.archived);
  EXPECT_TRUE(q.filtered());
  dg::list_query p;
  ASSERT_FALSE(dg::parse_list_query("parent=3", p));
  EXPECT_FALSE(p.filtered());  // a parent alone is a different listing, not a filter
  dg::list_query bad;
  EXPECT_EQ(dg::parse_list_query("parent=0", bad)->detail,
            "parent must be a job id (a positive integer)");
  EXPECT_EQ(dg::parse_list_query("archived=yes", bad)->detail, "archived must be 0 or 1");
}

TEST(GatewayRoutes, TargetSplitsIntoPathAndQuery) {
  auto t = dg::split_target("/api/jobs?limit=5&state=ready");
  EXPECT_EQ(t.path, "/api/jobs");
  EXPECT_EQ(t.query, "limit=5&state=ready");
  EXPECT_EQ(dg::split_target("/healthz").query, "");
}

TEST(GatewayListQuery, DefaultsWhenEmpty) {
  dg::list_query q;
  ASSERT_FALSE(dg::parse_list_query("", q));
  EXPECT_EQ(q.limit, 50);
  EXPECT_EQ(q.offset, 0);
  EXPECT_FALSE(q.state);
  EXPECT_FALSE(q.filtered());
}

TEST(GatewayListQuery, ParsesLimitOffsetStateAndJobtype) {
  dg::list_query q;
  auto e = dg::parse_list_query("limit=1000&offset=20&state=running&jobtype=my%73leep", q);
  ASSERT_FALSE(e) << e->detail;
  EXPECT_EQ(q.limit, 1000);
  EXPECT_EQ(q.offset, 20);
  ASSERT_TRUE(q.state);
  EXPECT_EQ(*q.state, job_state::running);
  EXPECT_EQ(q.jobtype, "mysleep");
  EXPECT_TRUE(q.filtered());
}

TEST(GatewayListQuery, LimitOutsideOneToThousandIsRefused) {
  for (const char* s : {"limit=0", "limit=1001", "limit=abc", "limit=", "limit=-5"}) {
    dg::list_query q;
    auto e = dg::parse_list_query(s, q);
    ASSERT_TRUE(e) << s;
    EXPECT_EQ(e->status, 400u);
    EXPECT_EQ(e->detail, "limit must be an integer between 1 and 1000") << s;
  }
}

TEST(GatewayListQuery, NegativeOrHugeOffsetIsRefused) {
  for (const char* s : {"offset=-1", "offset=9223372036854775807", "offset=x"}) {
    dg::list_query q;
    auto e = dg::parse_list_query(s, q);
    ASSERT_TRUE(e) << s;
    EXPECT_EQ(e->status, 400u);
    EXPECT_EQ(e->detail, "offset must be an integer between 0 and 1000000000000") << s;
  }
}

TEST(GatewayListQuery, UnknownStateListsTheStates) {
  dg::list_query q;
  auto e = dg::parse_list_query("state=sleeping", q);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400u);
  EXPECT_TRUE(contains(e->detail, "unknown state 'sleeping'; known: ready, dispatched, running"))
      << e->detail;
}

TEST(GatewayListQuery, UnknownParameterAndBadEscapesAreRefused) {
  dg::list_query q;
  auto e = dg::parse_list_query("limt=5", q);
  ASSERT_TRUE(e);
  EXPECT_TRUE(contains(e->detail, "unknown query parameter 'limt'")) << e->detail;
  e = dg::parse_list_query("state=%zz", q);
  ASSERT_TRUE(e);
  EXPECT_TRUE(contains(e->detail, "malformed %-escape")) << e->detail;
  e = dg::parse_list_query("limit=5&limit=6", q);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->detail, "query parameter 'limit' given twice");
}

TEST(GatewayListQuery, PercentDecodingHandlesPlusAndTruncatedEscapes) {
  EXPECT_EQ(dg::percent_decode("a+b%2Fc").value_or("?"), "a b/c");
  EXPECT_FALSE(dg::percent_decode("abc%4"));
  EXPECT_FALSE(dg::percent_decode("%"));
}

// ---- authentication -----------------------------------------------------------------------

TEST(GatewayAuth, BearerTokenIsExtractedCaseInsensitively) {
  EXPECT_EQ(dg::bearer_token("Bearer dp_abc").value_or(""), "dp_abc");
  EXPECT_EQ(dg::bearer_token("  bearer   dp_abc  ").value_or(""), "dp_abc");
}

TEST(GatewayAuth, MalformedAuthorizationYieldsNoToken) {
  for (const char* h :
       {"", "Bearer", "Bearer ", "Basic dXNlcjpwdw==", "Bearerdp_abc", "Bearer a b"})
    EXPECT_FALSE(dg::bearer_token(h)) << h;
  EXPECT_FALSE(dg::bearer_token("Bearer " + std::string(300, 'x')));
}

TEST(GatewayAuth, UnknownTokenIsUnauthorized) {
  dg::principal who;
  auto e = dg::check_token({}, 1000, who);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 401u);
  EXPECT_EQ(e->error, "unauthorized");
}

TEST(GatewayAuth, UserTokenWithoutExpiryIsAccepted) {
  dg::principal who;
  auto e = dg::check_token({{"owner", "alice"}, {"scope", "user"}, {"expires", "0"}}, 1e9, who);
  ASSERT_FALSE(e) << e->detail;
  EXPECT_EQ(who.name, "alice");
  EXPECT_FALSE(who.only_job);
}

TEST(GatewayAuth, ExpiredTokenIsUnauthorized) {
  dg::principal who;
  auto e =
      dg::check_token({{"owner", "alice"}, {"scope", "user"}, {"expires", "1000"}}, 1000.5, who);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 401u);
  EXPECT_EQ(e->detail, "token expired");
  EXPECT_FALSE(
      dg::check_token({{"owner", "alice"}, {"scope", "user"}, {"expires", "1000"}}, 999, who));
}

TEST(GatewayAuth, JobTokenIsLimitedToItsJob) {
  dg::principal who;
  ASSERT_FALSE(
      dg::check_token({{"owner", "alice"}, {"scope", "job:42"}, {"expires", "0"}}, 1, who));
  ASSERT_TRUE(who.only_job);
  EXPECT_EQ(*who.only_job, 42);
  EXPECT_TRUE(dg::may_read(who, 42, "alice"));
  EXPECT_FALSE(dg::may_read(who, 43, "alice"));
}

TEST(GatewayAuth, UnknownScopeIsUnauthorized) {
  dg::principal who;
  auto e = dg::check_token({{"owner", "alice"}, {"scope", "admin"}}, 1, who);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 401u);
  EXPECT_TRUE(contains(e->detail, "scope 'admin'")) << e->detail;
}

TEST(GatewayAuth, InactiveAccountIsUnauthorized) {
  dg::principal who;
  who.name = "bob";
  auto e = dg::check_user({{"role", "user"}, {"status", "pending"}}, who);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 401u);
  EXPECT_EQ(e->detail, "account bob is pending");
  EXPECT_TRUE(dg::check_user({}, who));
}

TEST(GatewayAuth, AdminReadsEveryJobAndUsersOnlyTheirOwn) {
  dg::principal admin;
  admin.name = "root";
  ASSERT_FALSE(dg::check_user({{"role", "admin"}, {"status", "active"}}, admin));
  EXPECT_TRUE(admin.admin);
  EXPECT_TRUE(dg::may_read(admin, 7, "alice"));

  dg::principal alice;
  alice.name = "alice";
  ASSERT_FALSE(dg::check_user({{"role", "user"}, {"status", "active"}}, alice));
  EXPECT_FALSE(alice.admin);
  EXPECT_TRUE(dg::may_read(alice, 7, "alice"));
  EXPECT_FALSE(dg::may_read(alice, 7, "bob"));
  EXPECT_FALSE(dg::may_read(alice, 7, ""));
}

TEST(GatewayAuth, JobTokenOfAnAdminCarriesNoAdminRights) {
  dg::principal who;
  ASSERT_FALSE(dg::check_token({{"owner", "root"}, {"scope", "job:5"}}, 1, who));
  ASSERT_FALSE(dg::check_user({{"role", "admin"}, {"status", "active"}}, who));
  EXPECT_FALSE(who.admin);
  EXPECT_FALSE(dg::may_read(who, 6, "alice"));
}

TEST(GatewayAuth, OnlyTheOwnerOrAnAdminWithAUserTokenMayChangeAJob) {
  dg::principal alice;
  alice.name = "alice";
  EXPECT_TRUE(dg::may_change(alice, "alice"));
  EXPECT_FALSE(dg::may_change(alice, "bob"));
  EXPECT_FALSE(dg::may_change(alice, ""));
  dg::principal admin;
  admin.name = "root";
  admin.admin = true;
  EXPECT_TRUE(dg::may_change(admin, "bob"));
  dg::principal job_token;
  job_token.name = "alice";
  job_token.only_job = 5;
  EXPECT_FALSE(dg::may_change(job_token, "alice"));
}

namespace {
dg::principal job_token_of(descprod::job_id id) {
  dg::principal p;
  p.name = "alice";
  p.only_job = id;
  return p;
}
std::optional<unsigned> scope_status(const dg::principal& who, const std::string& path,
                                     const std::string& method) {
  auto e = dg::check_job_token_scope(who, dg::match_route(path), method);
  if (!e) return std::nullopt;
  return e->status;
}
}  // namespace

TEST(GatewayJobToken, ReadsItsJobItsEventsAndItsLog) {
  auto who = job_token_of(5);
  EXPECT_FALSE(scope_status(who, "/api/jobs/5", "GET"));
  EXPECT_FALSE(scope_status(who, "/api/jobs/5/events", "GET"));
  EXPECT_FALSE(scope_status(who, "/api/jobs/5/log", "GET"));
  EXPECT_FALSE(scope_status(who, "/api/version", "GET"));
}

TEST(GatewayJobToken, ReportsTheRunOfItsJob) {
  auto who = job_token_of(5);
  EXPECT_FALSE(scope_status(who, "/api/jobs/5/started", "POST"));
  EXPECT_FALSE(scope_status(who, "/api/jobs/5/progress", "POST"));
  EXPECT_FALSE(scope_status(who, "/api/jobs/5/finished", "POST"));
}

TEST(GatewayJobToken, OtherJobsAreNotFound) {
  auto who = job_token_of(5);
  for (const char* p : {"/api/jobs/6", "/api/jobs/6/events", "/api/jobs/6/log",
                        "/api/jobs/6/cancel", "/api/jobs/6/started", "/api/jobs/6/claim"})
    EXPECT_EQ(scope_status(who, p, p == std::string("/api/jobs/6") ? "GET" : "POST").value_or(0),
              404u)
        << p;
}

TEST(GatewayJobToken, EverythingElseIsForbidden) {
  auto who = job_token_of(5);
  EXPECT_EQ(scope_status(who, "/api/jobs/5", "DELETE").value_or(0), 403u);
  EXPECT_EQ(scope_status(who, "/api/jobs/5/cancel", "POST").value_or(0), 403u);
  EXPECT_EQ(scope_status(who, "/api/jobs/5/archive", "POST").value_or(0), 403u);
  EXPECT_EQ(scope_status(who, "/api/jobs/5/unarchive", "POST").value_or(0), 403u);
  EXPECT_EQ(scope_status(who, "/api/jobs/5/claim", "POST").value_or(0), 403u);
  EXPECT_EQ(scope_status(who, "/api/jobs", "GET").value_or(0), 403u);
  EXPECT_EQ(scope_status(who, "/api/events", "GET").value_or(0), 403u);
  auto e = dg::check_job_token_scope(who, dg::match_route("/api/events"), "GET");
  EXPECT_EQ(e->error, "forbidden");
}

TEST(GatewayJobToken, CreatesOnlyChildrenOfItsJob) {
  auto who = job_token_of(5);
  EXPECT_FALSE(scope_status(who, "/api/jobs", "POST"));
  EXPECT_FALSE(scope_status(who, "/api/jobs/bulk", "POST"));
  std::vector<dg::job_request> jobs(2);
  jobs[0].parent = 5;
  jobs[1].parent = 5;
  EXPECT_FALSE(dg::check_children_only(who, jobs));
  jobs[1].parent = 6;
  auto e = dg::check_children_only(who, jobs);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 403u);
  EXPECT_EQ(e->error, "forbidden");
  EXPECT_EQ(e->detail.rfind("jobs[1]: ", 0), 0u) << e->detail;
  jobs[1].parent.reset();
  EXPECT_TRUE(dg::check_children_only(who, jobs));
  dg::principal user;
  user.name = "alice";
  EXPECT_FALSE(dg::check_children_only(user, jobs));  // user tokens: no such rule
  EXPECT_FALSE(dg::check_job_token_scope(user, dg::match_route("/api/events"), "GET"));
}

// ---- claim and reports ----------------------------------------------------------------------

TEST(GatewayClaim, HostIsRequiredAndChecked) {
  std::string host;
  ASSERT_FALSE(dg::parse_claim_body(parse(R"({"host":"nid001.perlmutter.nersc.gov"})"), host));
  EXPECT_EQ(host, "nid001.perlmutter.nersc.gov");
  EXPECT_EQ(dg::parse_claim_body(parse("{}"), host)->detail, "missing field 'host'");
  EXPECT_EQ(dg::parse_claim_body(parse(R"({"host":""})"), host)->detail,
            "field 'host' must not be empty");
  EXPECT_TRUE(contains(dg::parse_claim_body(parse(R"({"host":"a b"})"), host)->detail,
                       "may hold only letters"));
  EXPECT_TRUE(contains(dg::parse_claim_body(parse(R"({"host":"x","pid":1})"), host)->detail,
                       "unknown field 'pid'"));
  EXPECT_TRUE(contains(
      dg::parse_claim_body(parse(R"({"host":")" + std::string(256, 'h') + "\"}"), host)->detail,
      "longer than 255"));
  EXPECT_TRUE(dg::parse_claim_body(parse("[1]"), host));
}

TEST(GatewayReports, StartedNeedsAnAttempt) {
  dg::started_report r;
  ASSERT_FALSE(dg::parse_started_body(
      parse(R"({"attempt":2,"pid":123,"host":"h.example","rundir":"/tmp/job000001"})"), r));
  EXPECT_EQ(r.attempt, 2);
  EXPECT_EQ(r.pid, 123);
  EXPECT_EQ(r.host, "h.example");
  EXPECT_EQ(r.rundir, "/tmp/job000001");
  EXPECT_EQ(dg::parse_started_body(parse(R"({"pid":1})"), r)->detail, "missing field 'attempt'");
  EXPECT_TRUE(contains(dg::parse_started_body(parse(R"({"attempt":0})"), r)->detail,
                       "field 'attempt' must be between 1"));
  EXPECT_TRUE(contains(dg::parse_started_body(parse(R"({"attempt":"1"})"), r)->detail,
                       "must be an integer"));
  EXPECT_TRUE(contains(dg::parse_started_body(parse(R"({"attempt":1,"pid":-1})"), r)->detail,
                       "field 'pid'"));
  EXPECT_TRUE(contains(dg::parse_started_body(parse(R"({"attempt":1,"x":1})"), r)->detail,
                       "unknown field 'x'"));
}

TEST(GatewayReports, ProgressDoneAndTotalGoTogetherAndLongMessagesAreCut) {
  dg::progress_report r;
  ASSERT_FALSE(dg::parse_progress_body(
      parse(R"({"attempt":1,"message":"3/10 left","done":7,"total":10})"), r));
  EXPECT_EQ(r.message, "3/10 left");
  EXPECT_EQ(r.done.value_or(-1), 7);
  EXPECT_EQ(r.total.value_or(-1), 10);
  EXPECT_EQ(dg::parse_progress_body(parse(R"({"attempt":1,"done":1})"), r)->detail,
            "fields 'done' and 'total' go together");
  ASSERT_FALSE(dg::parse_progress_body(
      parse(R"({"attempt":1,"message":")" + std::string(5000, 'm') + "\"}"), r));
  EXPECT_EQ(r.message.size(), dg::max_message_bytes);
  ASSERT_FALSE(dg::parse_progress_body(parse(R"({"attempt":1})"), r));
  EXPECT_EQ(r.message, "");
  EXPECT_FALSE(r.done);
}

TEST(GatewayReports, FinishedDefaultsAndTypes) {
  dg::finished_report r;
  ASSERT_FALSE(dg::parse_finished_body(parse(R"({"attempt":1})"), r));
  EXPECT_EQ(r.rc, 0);
  EXPECT_EQ(r.signal, 0);
  EXPECT_FALSE(r.timed_out);
  ASSERT_FALSE(dg::parse_finished_body(
      parse(R"({"attempt":3,"rc":3,"signal":9,"timed_out":true,"message":"bye"})"), r));
  EXPECT_EQ(r.attempt, 3);
  EXPECT_EQ(r.rc, 3);
  EXPECT_EQ(r.signal, 9);
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(r.message, "bye");
  EXPECT_EQ(dg::parse_finished_body(parse(R"({"attempt":1,"timed_out":1})"), r)->detail,
            "field 'timed_out' must be a boolean, not an integer");
  EXPECT_TRUE(contains(dg::parse_finished_body(parse(R"({"attempt":1,"signal":300})"), r)->detail,
                       "field 'signal' must be between 0 and 255"));
  EXPECT_TRUE(dg::parse_finished_body(parse(R"({"rc":0})"), r));
}

TEST(GatewayClaim, AppIsResolvedAsTheDaemonDoes) {
  auto apps = descprod::parse_apps(R"(
apps:
  - name: tool
    command: ["/usr/bin/tool", "--run"]
    args: ["--id={id}", "{config}", "{howfig}"]
    env: {A: "1"}
    time_limit_s: 30
    login_shell: true
)",
                                   "apps.yaml");
  descprod::job_record job = {{"config", "c1"}, {"howfig", ""}, {"jobtype", "tool"}};
  auto o = dg::claim_app_json(*apps.find("tool"), job, 17);
  EXPECT_EQ(json::serialize(o.at("argv")), R"(["/usr/bin/tool","--run","--id=17","c1"])");
  EXPECT_EQ(json::serialize(o.at("env")), R"({"A":"1"})");
  EXPECT_DOUBLE_EQ(o.at("time_limit_s").as_double(), 30.0);
  EXPECT_TRUE(o.at("login_shell").as_bool());
  EXPECT_EQ(o.size(), 4u);
}

// ---- answers -------------------------------------------------------------------------------

TEST(GatewayAnswers, ErrorJsonHasExactlyErrorAndDetail) {
  auto o = dg::error_json(dg::not_found("job 5 not found"));
  EXPECT_EQ(o.size(), 2u);
  EXPECT_EQ(o.at("error").as_string(), "not_found");
  EXPECT_EQ(o.at("detail").as_string(), "job 5 not found");
}

TEST(GatewayAnswers, EventsJsonTypesAttemptAndTime) {
  descprod::redis_reply fields;
  fields.type = descprod::redis_reply::kind::array;
  for (const char* s : {"type", "transition", "state", "ready", "progress", "Ready.", "attempt",
                        "1", "time", "1700000000.250000"}) {
    descprod::redis_reply e;
    e.type = descprod::redis_reply::kind::string;
    e.str = s;
    fields.elements.push_back(e);
  }
  descprod::redis_reply id;
  id.type = descprod::redis_reply::kind::string;
  id.str = "1700000000250-0";
  descprod::redis_reply entry;
  entry.type = descprod::redis_reply::kind::array;
  entry.elements.push_back(id);
  entry.elements.push_back(fields);
  descprod::redis_reply all;
  all.type = descprod::redis_reply::kind::array;
  all.elements.push_back(entry);

  auto o = dg::events_json(all);
  const auto& ev = o.at("events").as_array();
  ASSERT_EQ(ev.size(), 1u);
  const auto& e = ev[0].as_object();
  EXPECT_EQ(e.at("stream_id").as_string(), "1700000000250-0");
  EXPECT_EQ(e.at("type").as_string(), "transition");
  EXPECT_EQ(e.at("state").as_string(), "ready");
  EXPECT_EQ(e.at("progress").as_string(), "Ready.");
  EXPECT_EQ(e.at("attempt").as_int64(), 1);
  EXPECT_DOUBLE_EQ(e.at("time").as_double(), 1700000000.25);
}

TEST(GatewayAnswers, SubmittedNoticeListsIdPriorityAndOwner) {
  std::vector<dg::job_request> reqs(3);
  reqs[1].priority = 9;
  reqs[2].priority = -3;
  std::vector<descprod::job_id> ids = {101, 102};
  auto o = dg::submitted_body(ids, reqs, 1, "alice");
  EXPECT_EQ(json::serialize(o), R"({"jobs":[[101,9,"alice"],[102,-3,"alice"]]})");
}

namespace {
descprod::redis_reply str_reply(const std::string& s) {
  descprod::redis_reply r;
  r.type = descprod::redis_reply::kind::string;
  r.str = s;
  return r;
}
descprod::redis_reply array_reply(std::vector<descprod::redis_reply> v) {
  descprod::redis_reply r;
  r.type = descprod::redis_reply::kind::array;
  r.elements = std::move(v);
  return r;
}
// One stream entry [id, [k, v, ...]].
descprod::redis_reply entry_reply(const std::string& id, const std::vector<std::string>& kv) {
  std::vector<descprod::redis_reply> fields;
  for (const auto& x : kv) fields.push_back(str_reply(x));
  std::vector<descprod::redis_reply> e;
  e.push_back(str_reply(id));
  e.push_back(array_reply(std::move(fields)));
  return array_reply(std::move(e));
}
descprod::redis_reply global_entry(const std::string& sid, const std::string& job,
                                   const std::string& owner, const std::string& state,
                                   const std::string& time = "1700000000.500000") {
  return entry_reply(sid, {"id", job, "owner", owner, "type", "transition", "state", state,
                           "progress", "Ready.", "attempt", "1", "time", time});
}
}  // namespace

TEST(GatewayAnswers, LogJsonIsOldestFirstFromANewestFirstReply) {
  std::vector<descprod::redis_reply> entries;
  entries.push_back(entry_reply("3-0", {"line", "third"}));
  entries.push_back(entry_reply("2-0", {"stream", "out", "line", "second"}));
  entries.push_back(entry_reply("1-0", {"line", "first"}));
  auto o = dg::log_json(array_reply(std::move(entries)));
  EXPECT_EQ(json::serialize(o), R"({"lines":["first","second","third"]})");
  descprod::redis_reply nil;
  EXPECT_EQ(json::serialize(dg::log_json(nil)), R"({"lines":[]})");
}

TEST(GatewayAnswers, ChildrenRollUpCountsEveryStateAboveZero) {
  auto o = dg::children_json({"ready", "done", "done", "", "running", "failed"}, false);
  EXPECT_EQ(json::serialize(o), R"({"total":5,"ready":1,"running":1,"done":2,"failed":1})");
  auto t = dg::children_json({"ready"}, true);
  EXPECT_TRUE(t.at("truncated").as_bool());
}

// ---- Server-Sent Events -------------------------------------------------------------------------

TEST(GatewaySse, StreamIdsParseAndOrderAsRedisDoes) {
  auto a = dg::parse_stream_id("1700000000000-5");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->ms, 1700000000000u);
  EXPECT_EQ(a->seq, 5u);
  EXPECT_EQ(a->str(), "1700000000000-5");
  auto b = dg::parse_stream_id("1700000000000");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->seq, 0u);
  EXPECT_LT(*b, *a);
  EXPECT_LT(*dg::parse_stream_id("9-99"), *dg::parse_stream_id("10-0"));
  for (const char* bad :
       {"", "-", "1-", "-1", "a-1", "1-b", "1-2-3", "1 -2", "99999999999999999999999"})
    EXPECT_FALSE(dg::parse_stream_id(bad)) << bad;
}

TEST(GatewaySse, LastEventIdHeader) {
  std::optional<dg::stream_id> id;
  ASSERT_FALSE(dg::parse_last_event_id("", id));
  EXPECT_FALSE(id);
  ASSERT_FALSE(dg::parse_last_event_id(" 12-3 ", id));
  ASSERT_TRUE(id);
  EXPECT_EQ(id->str(), "12-3");
  auto e = dg::parse_last_event_id("abc", id);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status, 400u);
  EXPECT_TRUE(contains(e->detail, "malformed Last-Event-ID 'abc'")) << e->detail;
}

TEST(GatewaySse, EventFormatIsIdEventAndOneLineOfJson) {
  auto ev = dg::parse_stream_event(entry_reply(
      "1700000000500-0",
      {"id", "42", "owner", "alice", "type", "progress", "state", "running", "progress",
       "Running. line one\nline \"two\"", "attempt", "2", "time", "1700000000.500000"}));
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->id, 42);
  EXPECT_EQ(ev->owner, "alice");
  EXPECT_EQ(dg::format_sse_event(*ev),
            "id: 1700000000500-0\nevent: job\n"
            R"(data: {"id":42,"state":"running","progress":"Running. line one\nline \"two\"",)"
            R"("attempt":2,"time":1.7000000005E9,"type":"progress"})"
            "\n\n");
  EXPECT_EQ(dg::sse_preamble, "retry: 1000\n\n");
  EXPECT_EQ(dg::sse_keepalive, ": keepalive\n\n");
}

TEST(GatewaySse, JobStreamEntriesTakeTheJobAndOwnerGiven) {
  auto ev =
      dg::parse_stream_event(entry_reply("5-1", {"type", "transition", "state", "ready", "progress",
                                                 "Ready.", "attempt", "1", "time", "1.5"}),
                             9, "bob");
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->id, 9);
  EXPECT_EQ(ev->owner, "bob");
  EXPECT_DOUBLE_EQ(ev->time_s(), 1.5);
  EXPECT_FALSE(dg::parse_stream_event(entry_reply("5-1", {"type", "transition"})));  // no job id
  EXPECT_FALSE(dg::parse_stream_event(entry_reply("x", {"id", "1"})));  // bad stream id
  // The same change read from the job stream and from the global stream has the same key.
  auto global = dg::parse_stream_event(global_entry("7-0", "9", "bob", "ready", "1.5"));
  EXPECT_EQ(global->dedupe_key(), ev->dedupe_key());
}

TEST(GatewaySse, FilterByOwnerAndJob) {
  auto e = *dg::parse_stream_event(global_entry("1-0", "3", "alice", "ready"));
  dg::event_filter all;
  EXPECT_TRUE(all.matches(e));
  dg::event_filter alice;
  alice.owner = "alice";
  EXPECT_TRUE(alice.matches(e));
  dg::event_filter bob;
  bob.owner = "bob";
  EXPECT_FALSE(bob.matches(e));
  dg::event_filter job4;
  job4.job = 4;
  EXPECT_FALSE(job4.matches(e));
  job4.job = 3;
  EXPECT_TRUE(job4.matches(e));
}

namespace {
descprod::redis_reply entries_of(std::vector<descprod::redis_reply> v) {
  return array_reply(std::move(v));
}
}  // namespace

TEST(GatewaySse, HubFansOutToMatchingSubscriptionsOnly) {
  net::io_context ioc;
  descprod::redis_endpoint ep;
  ep.unix_path = "/nonexistent/redis.sock";
  dg::event_hub hub(ioc.get_executor(), ep, "descprod:");
  dg::event_filter alice_f;
  alice_f.owner = "alice";
  dg::event_filter admin_f;
  auto alice = hub.subscribe(alice_f);
  auto admin = hub.subscribe(admin_f);
  std::vector<descprod::redis_reply> v;
  v.push_back(global_entry("1-0", "1", "alice", "ready"));
  v.push_back(global_entry("2-0", "2", "bob", "ready"));
  v.push_back(entry_reply("3-0", {"garbage", "x"}));
  v.push_back(global_entry("4-0", "1", "alice", "dispatched"));
  hub.deliver(entries_of(std::move(v)));
  std::string a, b;
  EXPECT_EQ(alice->take(a, 1 << 20), 2u);
  EXPECT_EQ(admin->take(b, 1 << 20), 3u);
  EXPECT_TRUE(contains(a, "id: 1-0\n"));
  EXPECT_TRUE(contains(a, "id: 4-0\n"));
  EXPECT_FALSE(contains(a, "\"id\":2"));
  EXPECT_EQ(hub.subscribers(), 2u);
  alice.reset();
  EXPECT_EQ(hub.subscribers(), 1u);
  hub.stop();
  EXPECT_TRUE(admin->closed());
}

TEST(GatewaySse, SlowSubscriberIsClosedAndOthersKeepReceiving) {
  net::io_context ioc;
  descprod::redis_endpoint ep;
  ep.unix_path = "/nonexistent/redis.sock";
  dg::event_hub hub(ioc.get_executor(), ep, "descprod:");
  auto slow = hub.subscribe(dg::event_filter{}, 3);
  auto fast = hub.subscribe(dg::event_filter{}, 100);
  std::string out;
  for (int i = 1; i <= 5; ++i) {
    std::vector<descprod::redis_reply> v;
    v.push_back(global_entry(std::to_string(i) + "-0", "1", "alice", "ready"));
    hub.deliver(entries_of(std::move(v)));
    fast->take(out, 1 << 20);
  }
  EXPECT_TRUE(slow->closed());
  EXPECT_TRUE(contains(slow->close_reason(), "slow subscriber")) << slow->close_reason();
  EXPECT_FALSE(fast->closed());
  EXPECT_TRUE(contains(out, "id: 5-0\n"));
  EXPECT_EQ(hub.overflows(), 1u);
}

TEST(GatewaySse, ReplayedEventsAreNotSentTwice) {
  net::io_context ioc;
  dg::event_subscription resume(ioc.get_executor(), dg::event_filter{}, 100);
  resume.skip_through(*dg::parse_stream_id("5-0"));
  auto push = [](dg::event_subscription& s, descprod::redis_reply entry) {
    auto le = std::make_shared<dg::live_event>();
    le->event = *dg::parse_stream_event(entry);
    le->text = dg::format_sse_event(le->event);
    s.push(le);
  };
  push(resume, global_entry("4-0", "1", "alice", "ready"));
  push(resume, global_entry("5-0", "1", "alice", "dispatched"));
  push(resume, global_entry("6-0", "1", "alice", "running"));
  std::string out;
  EXPECT_EQ(resume.take(out, 1 << 20), 1u);
  EXPECT_TRUE(contains(out, "id: 6-0\n")) << out;

  // Job history: the same change comes back from the global stream with another stream id.
  dg::event_subscription job(ioc.get_executor(), dg::event_filter{}, 100);
  auto hist = *dg::parse_stream_event(
      entry_reply("7-0", {"type", "transition", "state", "running", "progress", "Ready.", "attempt",
                          "1", "time", "100.5"}),
      1, "alice");
  std::set<std::string> keys;
  keys.insert(hist.dedupe_key());
  job.skip_seen(keys, 100.5);
  push(job, global_entry("8-3", "1", "alice", "dispatched", "99.0"));  // older than the history
  push(job, global_entry("8-4", "1", "alice", "running", "100.5"));    // the history's last
  push(job, global_entry("8-5", "1", "alice", "done", "101.0"));       // new
  out.clear();
  EXPECT_EQ(job.take(out, 1 << 20), 1u);
  EXPECT_TRUE(contains(out, "id: 8-5\n")) << out;
}

// ---- handle_request without Redis ---------------------------------------------------------

namespace {

class GatewayHandler : public ::testing::Test {
 protected:
  GatewayHandler() {
    descprod::redis_endpoint ep;
    ep.unix_path = "/nonexistent/redis.sock";  // never connected
    redis_ = std::make_unique<descprod::redis_client>(ioc_.get_executor(), ep);
    store_ = std::make_unique<descprod::store>(*redis_, "descprod:");
    ctx_.apps = test_apps();
    ctx_.redis = redis_.get();
    ctx_.jobs = store_.get();
    ctx_.on_redis_failure = [this] { ++redis_failures_; };
    ctx_.send_to_daemon = [this](const std::vector<std::string>&) {
      ++daemon_notices_;
      return true;
    };
  }

  dg::response run(http::verb method, const std::string& target, const std::string& auth = "",
                   const std::string& body = "") {
    dg::request req(method, target, 11);
    if (!auth.empty()) req.set(http::field::authorization, auth);
    req.body() = body;
    req.prepare_payload();
    auto fut = net::co_spawn(ioc_, dg::handle_request(ctx_, std::move(req)), net::use_future);
    ioc_.restart();
    ioc_.run();
    return fut.get();
  }

  static json::object body_of(const dg::response& res) {
    return json::parse(res.body()).as_object();
  }

  net::io_context ioc_;
  std::unique_ptr<descprod::redis_client> redis_;
  std::unique_ptr<descprod::store> store_;
  dg::gateway_context ctx_;
  int redis_failures_ = 0;
  int daemon_notices_ = 0;
};

}  // namespace

TEST_F(GatewayHandler, UnknownPathAnswers404Json) {
  auto res = run(http::verb::get, "/nope");
  EXPECT_EQ(res.result_int(), 404u);
  EXPECT_EQ(res[http::field::content_type], "application/json");
  EXPECT_EQ(res[http::field::cache_control], "no-store");
  EXPECT_EQ(body_of(res).at("error").as_string(), "not_found");
}

TEST_F(GatewayHandler, UnknownApiPathAnswers404JsonWithoutAuthentication) {
  auto res = run(http::verb::get, "/api/jobs/abc");
  EXPECT_EQ(res.result_int(), 404u);
  EXPECT_EQ(body_of(res).at("error").as_string(), "not_found");
  EXPECT_EQ(body_of(res).at("detail").as_string(), "no such API route");
}

TEST_F(GatewayHandler, WrongMethodAnswers405WithAllow) {
  auto res = run(http::verb::delete_, "/api/jobs");
  EXPECT_EQ(res.result_int(), 405u);
  EXPECT_EQ(res[http::field::allow], "GET, POST");
  EXPECT_EQ(body_of(res).at("error").as_string(), "method_not_allowed");
  res = run(http::verb::get, "/api/jobs/bulk");
  EXPECT_EQ(res.result_int(), 405u);
  EXPECT_EQ(res[http::field::allow], "POST");
}

TEST_F(GatewayHandler, HealthzAnswers503WhenRedisIsNotConnected) {
  auto res = run(http::verb::get, "/healthz");
  EXPECT_EQ(res.result_int(), 503u);
  EXPECT_EQ(body_of(res).at("status").as_string(), "redis unavailable");
  EXPECT_EQ(res[http::field::content_type], "application/json");
}

TEST_F(GatewayHandler, ReadyzAnswers503WithTheReason) {
  auto res = run(http::verb::get, "/readyz");
  EXPECT_EQ(res.result_int(), 503u);
  EXPECT_EQ(res[http::field::retry_after], "1");
  auto b = body_of(res);
  EXPECT_EQ(b.at("status").as_string(), "not ready");
  EXPECT_EQ(b.at("detail").as_string(), "the gateway is not connected to Redis");
}

TEST_F(GatewayHandler, NewRoutesNeedATokenAndTheirMethod) {
  EXPECT_EQ(run(http::verb::get, "/api/events").result_int(), 401u);
  EXPECT_EQ(run(http::verb::get, "/api/jobs/1/events?follow=1").result_int(), 401u);
  EXPECT_EQ(run(http::verb::delete_, "/api/jobs/1").result_int(), 401u);
  EXPECT_EQ(run(http::verb::post, "/api/jobs/1/cancel").result_int(), 401u);
  auto res = run(http::verb::get, "/api/jobs/1/cancel");
  EXPECT_EQ(res.result_int(), 405u);
  EXPECT_EQ(res[http::field::allow], "POST");
  res = run(http::verb::put, "/api/jobs/1");
  EXPECT_EQ(res.result_int(), 405u);
  EXPECT_EQ(res[http::field::allow], "GET, DELETE");
}

TEST_F(GatewayHandler, ApiWithoutTokenAnswers401WithWwwAuthenticate) {
  auto res = run(http::verb::get, "/api/jobs");
  EXPECT_EQ(res.result_int(), 401u);
  EXPECT_EQ(res[http::field::www_authenticate], "Bearer");
  auto b = body_of(res);
  EXPECT_EQ(b.at("error").as_string(), "unauthorized");
  EXPECT_TRUE(contains(std::string(b.at("detail").as_string()), "Authorization")) << res.body();
}

TEST_F(GatewayHandler, MalformedAuthorizationAnswers401) {
  auto res = run(http::verb::get, "/api/version", "Basic dXNlcjpwdw==");
  EXPECT_EQ(res.result_int(), 401u);
  EXPECT_EQ(body_of(res).at("error").as_string(), "unauthorized");
}

TEST_F(GatewayHandler, RedisDownDuringRequestAnswers503WithRetryAfter) {
  auto res =
      run(http::verb::post, "/api/jobs", "Bearer dp_x", R"({"jobtype":"mysleep","config":"1"})");
  EXPECT_EQ(res.result_int(), 503u);
  EXPECT_EQ(res[http::field::retry_after], "1");
  EXPECT_EQ(body_of(res).at("error").as_string(), "unavailable");
  EXPECT_EQ(redis_failures_, 1);
  EXPECT_EQ(daemon_notices_, 0);
}

TEST_F(GatewayHandler, ResponseFollowsRequestVersionAndKeepAlive) {
  dg::request req(http::verb::get, "/nope", 10);
  auto fut = net::co_spawn(ioc_, dg::handle_request(ctx_, std::move(req)), net::use_future);
  ioc_.run();
  auto res = fut.get();
  EXPECT_EQ(res.version(), 10u);
  EXPECT_FALSE(res.keep_alive());
  EXPECT_EQ(res[http::field::content_length], std::to_string(res.body().size()));
}

// ---- the HTTP session over loopback (no Redis) ----------------------------------------------

namespace {

class GatewayServer : public GatewayHandler {
 protected:
  void SetUp() override {
    ctx_.config.max_body_bytes = 1024;
    ctx_.config.idle_timeout = std::chrono::milliseconds(2000);
    server_ = std::make_unique<dg::server>(ioc_.get_executor(), ctx_);
    port_ = server_->bind("127.0.0.1", 0);
    server_->start();
    thread_ = std::thread([this] { ioc_.run(); });
  }
  void TearDown() override {
    auto done = net::co_spawn(ioc_, server_->async_shutdown(std::chrono::milliseconds(500)),
                              net::use_future);
    done.get();
    ioc_.stop();
    thread_.join();
  }

  // Sends raw bytes on a fresh connection and returns everything the server sends back before it
  // closes the connection.
  std::string exchange(const std::string& raw) {
    net::io_context io;
    net::ip::tcp::socket s(io);
    s.connect(net::ip::tcp::endpoint(net::ip::address_v4::loopback(), port_));
    boost::system::error_code ec;
    net::write(s, net::buffer(raw), ec);
    std::string out;
    char buf[4096];
    while (true) {
      auto n = s.read_some(net::buffer(buf), ec);
      if (ec) break;
      out.append(buf, n);
    }
    return out;
  }

  std::unique_ptr<dg::server> server_;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

}  // namespace

TEST_F(GatewayServer, OversizedBodyAnswers413AndCloses) {
  auto out = exchange("POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 65536\r\n\r\n" +
                      std::string(65536, 'x'));
  EXPECT_EQ(out.rfind("HTTP/1.1 413 ", 0), 0u) << out;
  EXPECT_TRUE(contains(out, "Connection: close")) << out;
  EXPECT_TRUE(contains(
      out, R"({"error":"payload_too_large","detail":"request body is larger than 1024 bytes"})"))
      << out;
}

TEST_F(GatewayServer, OversizedHeaderAnswers431) {
  auto out = exchange("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + std::string(20000, 'y') +
                      "\r\n\r\n");
  EXPECT_EQ(out.rfind("HTTP/1.1 431 ", 0), 0u) << out.substr(0, 200);
  EXPECT_TRUE(contains(out, "header_too_large")) << out.substr(0, 400);
}

TEST_F(GatewayServer, MalformedRequestAnswers400Json) {
  auto out = exchange("BLAH\x01 / HTTP/9\r\n\r\n");
  EXPECT_EQ(out.rfind("HTTP/1.1 400 ", 0), 0u) << out;
  EXPECT_TRUE(contains(out, "Content-Type: application/json")) << out;
  EXPECT_TRUE(contains(out, "malformed HTTP request")) << out;
}

TEST_F(GatewayServer, KeepAliveServesSeveralRequestsOnOneConnection) {
  auto out = exchange(
      "GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
      "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(out.rfind("HTTP/1.1 404 ", 0), 0u) << out;
  EXPECT_TRUE(contains(out, "HTTP/1.1 503 ")) << out;
  EXPECT_TRUE(contains(out, R"("status":"redis unavailable")")) << out;
}

// ---- accounts, sessions and pages without Redis (issue 4) ------------------------------------

TEST(GatewayRoutes, AccountTokenAndAdminRoutes) {
  EXPECT_EQ(dg::match_route("/api/register").kind, dg::route_kind::register_);
  EXPECT_EQ(dg::match_route("/api/login").kind, dg::route_kind::login);
  EXPECT_EQ(dg::match_route("/api/logout").kind, dg::route_kind::logout);
  EXPECT_EQ(dg::match_route("/api/session").kind, dg::route_kind::session);
  EXPECT_EQ(dg::match_route("/api/tokens").kind, dg::route_kind::tokens);
  std::string hash(64, 'a');
  auto t = dg::match_route("/api/tokens/" + hash);
  EXPECT_EQ(t.kind, dg::route_kind::token);
  EXPECT_EQ(t.name, hash);
  EXPECT_EQ(dg::match_route("/api/tokens/xyz").kind, dg::route_kind::not_found);
  EXPECT_EQ(dg::match_route("/api/tokens/" + std::string(64, 'A')).kind, dg::route_kind::not_found);
  auto u = dg::match_route("/api/admin/users/carol/approve");
  EXPECT_EQ(u.kind, dg::route_kind::admin_user);
  EXPECT_EQ(u.name, "carol");
  EXPECT_EQ(u.action, "approve");
  EXPECT_EQ(dg::match_route("/api/admin/users/carol/make-admin").kind, dg::route_kind::admin_user);
  EXPECT_EQ(dg::match_route("/api/admin/users/carol/explode").kind, dg::route_kind::not_found);
  EXPECT_EQ(dg::match_route("/api/admin/users/Carol/approve").kind, dg::route_kind::not_found);
  EXPECT_EQ(dg::match_route("/api/admin/users").kind, dg::route_kind::admin_users);
  EXPECT_EQ(dg::match_route("/api/admin/overview").kind, dg::route_kind::admin_overview);
  EXPECT_EQ(dg::allowed_methods(dg::route_kind::tokens), "GET, POST");
  EXPECT_EQ(dg::allowed_methods(dg::route_kind::token), "DELETE");
  EXPECT_EQ(dg::allowed_methods(dg::route_kind::login), "POST");
  EXPECT_TRUE(dg::is_public(dg::route_kind::register_));
  EXPECT_TRUE(dg::is_public(dg::route_kind::login));
  EXPECT_FALSE(dg::is_public(dg::route_kind::tokens));
  EXPECT_FALSE(dg::is_public(dg::route_kind::admin_users));
}

TEST(GatewayJobToken, AccountRoutesAreForbidden) {
  dg::principal who;
  who.name = "alice";
  who.only_job = 5;
  for (auto path : {"/api/tokens", "/api/session", "/api/admin/users", "/api/admin/overview"}) {
    auto e = dg::check_job_token_scope(who, dg::match_route(path), "GET");
    ASSERT_TRUE(e) << path;
    EXPECT_EQ(e->status, 403u) << path;
  }
}

TEST(GatewayQueries, EventsSinceIsAnEventId) {
  std::optional<descprod::job_id> job;
  std::optional<dg::stream_id> since;
  ASSERT_FALSE(dg::parse_events_query("since=1795625968202-3&job=4", job, since));
  ASSERT_TRUE(since);
  EXPECT_EQ(since->ms, 1795625968202u);
  EXPECT_EQ(since->seq, 3u);
  EXPECT_EQ(*job, 4);
  EXPECT_TRUE(dg::parse_events_query("since=yesterday", job, since));
  EXPECT_TRUE(dg::parse_events_query("since=1-1", job)) << "the two-argument form refuses since";
}

TEST_F(GatewayHandler, CrossOriginPostIsRefusedBeforeAuthentication) {
  dg::request req(http::verb::post, "/api/jobs", 11);
  req.set(http::field::host, "127.0.0.1:8080");
  req.set(http::field::origin, "http://127.0.0.1:9999");
  req.body() = R"({"jobtype":"mysleep","config":"1"})";
  req.prepare_payload();
  auto fut = net::co_spawn(ioc_, dg::handle_request(ctx_, std::move(req)), net::use_future);
  ioc_.run();
  auto res = fut.get();
  EXPECT_EQ(res.result_int(), 403u);
  EXPECT_TRUE(contains(res.body(), "cross-origin")) << res.body();
  EXPECT_EQ(redis_failures_, 0) << "refused before any Redis call";
}

TEST_F(GatewayHandler, PagesWithoutASessionRedirectToLogin) {
  auto res = run(http::verb::get, "/");
  EXPECT_EQ(res.result_int(), 303u);
  EXPECT_EQ(res[http::field::location], "/login");
  res = run(http::verb::get, "/jobs/12");
  EXPECT_EQ(res.result_int(), 303u);
  res = run(http::verb::get, "/admin");
  EXPECT_EQ(res.result_int(), 303u);
}

TEST_F(GatewayHandler, LoginPageSetsTheFormCsrfCookieAndSecurityHeaders) {
  auto res = run(http::verb::get, "/login");
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(res[http::field::content_type], "text/html; charset=utf-8");
  std::string cookie(res[http::field::set_cookie]);
  EXPECT_EQ(cookie.rfind("descprod_csrf=", 0), 0u) << cookie;
  EXPECT_TRUE(contains(cookie, "HttpOnly")) << cookie;
  EXPECT_TRUE(contains(cookie, "SameSite=Strict")) << cookie;
  EXPECT_FALSE(contains(cookie, "Secure")) << "plain HTTP: no Secure";
  auto value = cookie.substr(14, 64);
  EXPECT_TRUE(contains(res.body(), "name=\"csrf\" value=\"" + value + "\"")) << res.body();
  EXPECT_TRUE(contains(std::string(res["Content-Security-Policy"]), "script-src 'self'"));
  EXPECT_EQ(res["X-Frame-Options"], "DENY");
  ctx_.tls = true;
  res = run(http::verb::get, "/register");
  EXPECT_TRUE(contains(std::string(res[http::field::set_cookie]), "; Secure")) << "TLS: Secure";
}

TEST_F(GatewayHandler, LoginFormWithoutTheCsrfCookieIsRefused) {
  dg::request req(http::verb::post, "/login", 11);
  req.set(http::field::content_type, "application/x-www-form-urlencoded");
  req.body() = "username=alice&password=secret123&csrf=abc";
  req.prepare_payload();
  auto fut = net::co_spawn(ioc_, dg::handle_request(ctx_, std::move(req)), net::use_future);
  ioc_.run();
  auto res = fut.get();
  EXPECT_EQ(res.result_int(), 403u);
  EXPECT_TRUE(contains(res.body(), "CSRF")) << res.body();
  EXPECT_EQ(redis_failures_, 0);
}

TEST_F(GatewayHandler, RegistrationIsValidatedBeforeRedis) {
  auto res = run(http::verb::post, "/api/register", "",
                 R"({"username":"Bad Name","password":"secret123","email":"a@b.c"})");
  EXPECT_EQ(res.result_int(), 400u);
  res = run(http::verb::post, "/api/register", "",
            R"({"username":"carol","password":"short","email":"a@b.c"})");
  EXPECT_EQ(res.result_int(), 400u);
  EXPECT_TRUE(contains(body_of(res).at("detail").as_string().c_str(), "at least 8"));
  res = run(http::verb::post, "/api/register", "",
            R"({"username":"carol","password":"secret123","email":"nope"})");
  EXPECT_EQ(res.result_int(), 400u);
  res = run(http::verb::post, "/api/register", "", R"({"username":"carol","password":"secret123"})");
  EXPECT_EQ(res.result_int(), 400u);
  EXPECT_TRUE(contains(body_of(res).at("detail").as_string().c_str(), "email"));
  res = run(http::verb::post, "/api/login", "", R"({"username":"carol","password":"x","extra":1})");
  EXPECT_EQ(res.result_int(), 400u);
  EXPECT_EQ(redis_failures_, 0);
}

TEST_F(GatewayHandler, StaticAssetsAreServedWithoutASession) {
  auto res = run(http::verb::get, "/static/app.js");
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(res[http::field::content_type], "text/javascript; charset=utf-8");
  EXPECT_TRUE(contains(res.body(), "EventSource"));
  res = run(http::verb::get, "/static/app.css");
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(run(http::verb::get, "/static/nope.js").result_int(), 404u);
  EXPECT_EQ(run(http::verb::post, "/static/app.js").result_int(), 405u);
}

// ---- the submit path's shortcuts (docs/performance.md) ---------------------------------------

#include "core/job.hpp"
#include "gateway/auth_cache.hpp"
#include "gateway/handler_detail.hpp"
#include "gateway/notices.hpp"
#include "gateway/services.hpp"

namespace {
// The job hash exactly as core/store.cpp's create script writes it.
descprod::job_record as_created(descprod::job_id id, const dg::job_request& r,
                                const std::string& owner, const std::string& t) {
  descprod::job_record rec;
  rec["id"] = std::to_string(id);
  rec["descname"] = owner;
  rec["jobtype"] = r.jobtype;
  rec["config"] = r.config;
  rec["howfig"] = r.howfig;
  rec["priority"] = std::to_string(r.priority);
  rec["max_attempts"] = std::to_string(r.max_attempts);
  rec["archive"] = "0";
  rec["attempt"] = "1";
  rec["state"] = "ready";
  rec["progress"] = "Ready.";
  rec["create_time"] = t;
  rec["update_time"] = t;
  rec["queued_time"] = t;
  if (r.parent) rec["parent"] = std::to_string(*r.parent);
  return rec;
}
}  // namespace

TEST(GatewayAnswers, CreatedJobAnswerEqualsTheRenderedJobHash) {
  dg::job_request a;
  a.jobtype = "mysleep";
  a.config = "30";
  a.priority = 5;
  a.max_attempts = 3;
  dg::job_request b = a;
  b.howfig = "fast-2:x";
  b.parent = 7;
  b.priority = -1000;
  b.max_attempts = 1;
  for (const auto& r : {a, b}) {
    for (std::string t : {"1795625968.202900", "1795625968.000000", "1700000000.999999"}) {
      auto res = dg::detail::created_job_response(41, r, "alice", t);
      auto expected = descprod::job_to_json(as_created(41, r, "alice", t));
      EXPECT_EQ(res.result_int(), 201u);
      EXPECT_EQ(res[http::field::location], "/api/jobs/41");
      EXPECT_EQ(res[http::field::content_type], "application/json");
      EXPECT_EQ(res.body(), json::serialize(expected) + "\n") << t;
    }
  }
}

TEST(AuthCache, RemembersForTheTtlOnlyAndHonoursExpiryAndClear) {
  using clock = dg::auth_cache::clock;
  dg::auth_cache c(std::chrono::milliseconds(1000), 2);
  dg::principal p;
  p.name = "alice";
  p.only_job = 9;
  auto t0 = clock::now();
  EXPECT_FALSE(c.find("h1", 100.0, t0));
  c.remember("h1", p, 0, t0);
  auto hit = c.find("h1", 100.0, t0 + std::chrono::milliseconds(999));
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->name, "alice");
  EXPECT_EQ(hit->only_job, std::optional<descprod::job_id>(9));
  EXPECT_FALSE(c.find("h1", 100.0, t0 + std::chrono::milliseconds(1000))) << "stale after the ttl";
  EXPECT_EQ(c.size(), 0u);
  // The token's own expiry counts on every use.
  c.remember("h2", p, 150.0, t0);
  EXPECT_TRUE(c.find("h2", 149.9, t0));
  EXPECT_FALSE(c.find("h2", 150.0, t0));
  // clear() forgets everything; the size stays bounded.
  c.remember("a", p, 0, t0);
  c.remember("b", p, 0, t0);
  c.remember("c", p, 0, t0);
  EXPECT_LE(c.size(), 2u);
  EXPECT_TRUE(c.find("c", 100.0, t0));
  c.clear();
  EXPECT_FALSE(c.find("c", 100.0, t0));
  // A ttl of 0 turns it off.
  dg::auth_cache off(std::chrono::milliseconds(0));
  off.remember("h", p, 0, t0);
  EXPECT_FALSE(off.find("h", 100.0, t0));
}

TEST(SubmitNotices, OneMessagePerEventLoopTurnAndAtMostMaxJobsEach) {
  net::io_context ioc;
  std::vector<std::vector<std::string>> sent;
  dg::submit_notices n(ioc.get_executor(), [&](const std::vector<std::string>& frames) {
    sent.push_back(frames);
    return true;
  });
  n.add(1, 5, "alice");
  n.add(2, 0, "bob");
  EXPECT_TRUE(sent.empty()) << "nothing before the turn ends";
  ioc.run();
  ASSERT_EQ(sent.size(), 1u);
  ASSERT_EQ(sent[0].size(), 2u);
  EXPECT_EQ(sent[0][0], "submitted");
  EXPECT_EQ(sent[0][1], R"({"jobs":[[1,5,"alice"],[2,0,"bob"]]})");
  sent.clear();
  for (descprod::job_id id = 1; id <= 2500; ++id) n.add(id, 0, "alice");
  EXPECT_EQ(sent.size(), 2u) << "a full batch goes at once";
  ioc.restart();
  ioc.run();
  ASSERT_EQ(sent.size(), 3u);
  std::size_t jobs = 0;
  for (const auto& m : sent) {
    auto a = json::parse(m[1]).at("jobs").as_array();
    EXPECT_LE(a.size(), dg::submit_notices::max_jobs);
    jobs += a.size();
  }
  EXPECT_EQ(jobs, 2500u);
  EXPECT_EQ(n.jobs_sent(), 2502u);
  // A refused send is logged, not retried (the daemon reconciles from Redis), and flush() sends
  // what is pending at once.
  dg::submit_notices refused(ioc.get_executor(), [](const std::vector<std::string>&) { return false; });
  refused.add(1, 0, "alice");
  refused.flush();
  EXPECT_EQ(refused.pending(), 0u);
  EXPECT_EQ(refused.messages_sent(), 0u);
}
