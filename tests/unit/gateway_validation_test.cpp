// Unit tests of the gateway's request validation (api.hpp): job and bulk bodies, routing and
// queries. Pure functions, no Redis.
#include <set>
#include <string>
#include <thread>

#include "gateway/api.hpp"
#include "gateway/events.hpp"
#include "gateway/handler.hpp"
#include "gateway/jobs_api.hpp"
#include "gateway/server.hpp"
#include "tests/unit/gateway_test_support.hpp"

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
  auto e =
      check_body(R"({"jobtype":"howapp","config":"a-b:c","howfig":"fast","priority":-7,"parent":12})", &r);
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
  EXPECT_EQ(e->status(), 400u);
  EXPECT_EQ(e->name(), "bad_json");
  EXPECT_TRUE(contains(e->detail, "malformed JSON")) << e->detail;
}

TEST(GatewayValidation, TrailingGarbageAfterJsonIsBadJson) {
  auto e = check_body(R"({"jobtype":"mysleep","config":"1"} x)");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->name(), "bad_json");
}

TEST(GatewayValidation, EmptyBodyIsBadJson) {
  auto e = check_body("");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status(), 400u);
  EXPECT_EQ(e->name(), "bad_json");
  EXPECT_TRUE(contains(e->detail, "empty"));
}

TEST(GatewayValidation, BodyThatIsNotAnObjectIsRefused) {
  auto e = check_body(R"(["mysleep","1"])");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status(), 400u);
  EXPECT_EQ(e->name(), "bad_request");
  EXPECT_TRUE(contains(e->detail, "JSON object")) << e->detail;
}

TEST(GatewayValidation, MissingJobtypeIsNamed) {
  auto e = check_body(R"({"config":"1"})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status(), 400u);
  EXPECT_EQ(e->detail, "missing field 'jobtype'");
}

TEST(GatewayValidation, MissingConfigIsNamed) {
  auto e = check_body(R"({"jobtype":"mysleep"})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status(), 400u);
  EXPECT_EQ(e->detail, "missing field 'config'");
}

TEST(GatewayValidation, MistypedJobtypeIsNamedWithItsType) {
  auto e = check_body(R"({"jobtype":5,"config":"1"})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status(), 400u);
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
  EXPECT_EQ(e->status(), 400u);
  EXPECT_TRUE(contains(e->detail, "unknown field 'user'")) << e->detail;
}

TEST(GatewayValidation, UnknownJobtypeListsTheKnownTypes) {
  auto e = check_body(R"({"jobtype":"rm","config":"1"})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status(), 400u);
  EXPECT_EQ(e->name(), "unknown_jobtype");
  EXPECT_EQ(e->detail, "unknown jobtype 'rm'; known: anything, howapp, mysleep");
}

TEST(GatewayValidation, ConfigWithSpaceFailsCheckConfig) {
  auto e = check_body(R"({"jobtype":"anything","config":"a b"})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status(), 400u);
  EXPECT_EQ(e->name(), "invalid_config");
  EXPECT_TRUE(contains(e->detail, "check_config code 1")) << e->detail;
  EXPECT_TRUE(contains(e->detail, "only letters, digits")) << e->detail;
}

TEST(GatewayValidation, ConfigWithShellSubstitutionFailsCheckConfig) {
  auto e = check_body(R"j({"jobtype":"anything","config":"$(id)"})j");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status(), 400u);
  EXPECT_EQ(e->name(), "invalid_config");
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
  EXPECT_EQ(e->name(), "invalid_config");
  EXPECT_TRUE(contains(e->detail, "check_config code 9")) << e->detail;
}

TEST(GatewayValidation, ConfigNotMatchingTheAppPatternShowsThePattern) {
  auto e = check_body(R"({"jobtype":"mysleep","config":"abc"})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status(), 400u);
  EXPECT_EQ(e->name(), "invalid_config");
  EXPECT_EQ(e->detail, "config 'abc' does not match the pattern of application mysleep: ^[0-9]+$");
}

TEST(GatewayValidation, EmptyHowfigIsAllowedEvenWithAHowfigPattern) {
  auto e = check_body(R"({"jobtype":"howapp","config":"x","howfig":""})");
  EXPECT_FALSE(e) << e->detail;
}

TEST(GatewayValidation, DescStringsAreAccepted) {
  // DESC's real strings (issue 16): '_' and '.' in configs; compound howfigs with commas, and any
  // text an app without a howfig_pattern takes (it reaches the app as one argument, no shell).
  dg::job_request r;
  EXPECT_FALSE(check_body(R"({"jobtype":"anything","config":"w2316-visit:1234_5"})", &r));
  EXPECT_EQ(r.config, "w2316-visit:1234_5");
  EXPECT_FALSE(check_body(R"({"jobtype":"anything","config":"v1.2-x_y:3.5"})"));
  EXPECT_FALSE(
      check_body(R"({"jobtype":"anything","config":"x","howfig":"pmbs-30-auto-cpu,ptenv:00:hom"})", &r));
  EXPECT_EQ(r.howfig, "pmbs-30-auto-cpu,ptenv:00:hom");
  EXPECT_FALSE(check_body(
      R"({"jobtype":"anything","config":"x","howfig":"pmbs-600,tmax:12.5 a;b $(id) \u00e9"})", &r));
  EXPECT_EQ(r.howfig, "pmbs-600,tmax:12.5 a;b $(id) \xc3\xa9");
}

TEST(GatewayValidation, HowfigWithControlCharactersIsRefused) {
  for (const char* body : {R"({"jobtype":"anything","config":"x","howfig":"a\nb"})",
                           R"({"jobtype":"anything","config":"x","howfig":"a\tb"})",
                           R"({"jobtype":"anything","config":"x","howfig":"a\u001bb"})",
                           R"({"jobtype":"anything","config":"x","howfig":"a\u007fb"})"}) {
    auto e = check_body(body);
    ASSERT_TRUE(e) << body;
    EXPECT_EQ(e->name(), "invalid_config") << body;
    EXPECT_TRUE(contains(e->detail, "without control characters")) << e->detail;
  }
}

TEST(GatewayValidation, ConfigKeepsCheckConfigsStructureWithUnderscoreAndDot) {
  for (const char* config : {"a,b", "a/b", "a b", "x----y"}) {
    auto e = check_body(std::string(R"({"jobtype":"anything","config":")") + config + "\"}");
    ASSERT_TRUE(e) << config;
    EXPECT_EQ(e->name(), "invalid_config") << config;
  }
  auto e = check_body(R"({"jobtype":"anything","config":"a,b"})");
  ASSERT_TRUE(e);
  EXPECT_TRUE(contains(e->detail, "only letters, digits, '-', ':', '_' and '.' are allowed")) << e->detail;
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
    EXPECT_EQ(e->status(), 400u);
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
  EXPECT_EQ(e->status(), 400u);
  EXPECT_EQ(e->detail, "field 'config' is longer than 512 bytes");
}

TEST(GatewayValidation, OversizedHowfigAndJobtypeAreRefused) {
  auto e = check_body(R"({"jobtype":"anything","config":"x","howfig":")" + std::string(600, 'h') + "\"}");
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
      R"({"jobs":[{"jobtype":"mysleep","config":"1"},{"jobtype":"anything","config":"b","priority":5}]})", 10,
      &reqs);
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
  EXPECT_EQ(e->status(), 400u);
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
  EXPECT_EQ(e->status(), 400u);
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
  for (const char* p : {"/api/jobs/abc", "/api/jobs/0", "/api/jobs/-1", "/api/jobs/12a", "/api/jobs/",
                        "/api/jobs/1234567890123456789012", "/api/jobs/12/", "/api/jobs/12/log2",
                        "/api/jobs/12/events/x", "/api/jobs//events"})
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
  for (const auto& t : std::vector<c>{{"/api/jobs/7/log", dg::route_kind::job_log, "GET"},
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
  for (const char* p : {"/api/jobs/7/cancel/", "/api/jobs/7/Cancel", "/api/jobs/x/log", "/api/jobs/7/logs",
                        "/api/jobs/0/claim"})
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
  dg::log_query q;
  ASSERT_FALSE(dg::parse_log_query("", q));
  EXPECT_EQ(q.lines, 100);
  EXPECT_FALSE(q.whole());
  ASSERT_FALSE(dg::parse_log_query("lines=10000", q));
  EXPECT_EQ(q.lines, 10000);
  ASSERT_FALSE(dg::parse_log_query("lines=1", q));
  EXPECT_EQ(q.lines, 1);
  for (const char* text : {"lines=0", "lines=10001", "lines=abc", "lines=", "lines=-3", "lines=ALL"}) {
    auto e = dg::parse_log_query(text, q);
    ASSERT_TRUE(e) << text;
    EXPECT_EQ(e->status(), 400u);
    EXPECT_EQ(e->detail, "lines must be all or an integer between 1 and 10000") << text;
  }
  auto e = dg::parse_log_query("line=5", q);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->detail, "unknown query parameter 'line'; known: lines, q, format");
}

TEST(GatewayQueries, WholeLogSearchAndDownloadParameters) {
  dg::log_query q;
  ASSERT_FALSE(dg::parse_log_query("lines=all&format=text", q));
  EXPECT_TRUE(q.all);
  EXPECT_TRUE(q.text);
  EXPECT_TRUE(q.whole());
  ASSERT_FALSE(dg::parse_log_query("q=Error%3A%20disk", q));
  EXPECT_EQ(q.q, "Error: disk");
  EXPECT_TRUE(q.whole());  // a search reads the whole log
  EXPECT_FALSE(q.text);
  struct bad {
    const char* query;
    const char* detail;
  };
  const std::string long_q = "q=" + std::string(201, 'x');
  for (const auto& b :
       std::vector<bad>{{"q=", "q must be 1 to 200 bytes"},
                        {long_q.c_str(), "q must be 1 to 200 bytes"},
                        {"format=html", "format must be json or text"},
                        {"q=x&format=text", "format=text is for the log itself, not a search (q)"}}) {
    auto e = dg::parse_log_query(b.query, q);
    ASSERT_TRUE(e) << b.query;
    EXPECT_EQ(e->status(), 400u);
    EXPECT_EQ(e->detail, b.detail) << b.query;
  }
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
  EXPECT_EQ(dg::parse_list_query("parent=0", bad)->detail, "parent must be a job id (a positive integer)");
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
    EXPECT_EQ(e->status(), 400u);
    EXPECT_EQ(e->detail, "limit must be an integer between 1 and 1000") << s;
  }
}

TEST(GatewayListQuery, NegativeOrHugeOffsetIsRefused) {
  for (const char* s : {"offset=-1", "offset=9223372036854775807", "offset=x"}) {
    dg::list_query q;
    auto e = dg::parse_list_query(s, q);
    ASSERT_TRUE(e) << s;
    EXPECT_EQ(e->status(), 400u);
    EXPECT_EQ(e->detail, "offset must be an integer between 0 and 1000000000000") << s;
  }
}

TEST(GatewayListQuery, UnknownStateListsTheStates) {
  dg::list_query q;
  auto e = dg::parse_list_query("state=sleeping", q);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status(), 400u);
  EXPECT_TRUE(
      contains(e->detail, "unknown state 'sleeping'; known: waiting, held, ready, dispatched, running"))
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

// The one urlencoded parser (queries and forms): pairs in order, empty parts skipped, a key
// without '=' has an empty value, a malformed escape refused naming its part.
TEST(GatewayUrlencoded, PairsInOrderEmptyPartsSkippedBadEscapesNamed) {
  auto p = dg::parse_urlencoded("b=2&&a=x+y%21&flag&b=3");
  ASSERT_TRUE(p.ok()) << p.error().detail;
  ASSERT_EQ(p->size(), 4u);
  EXPECT_EQ((*p)[0], std::make_pair(std::string("b"), std::string("2")));
  EXPECT_EQ((*p)[1], std::make_pair(std::string("a"), std::string("x y!")));
  EXPECT_EQ((*p)[2], std::make_pair(std::string("flag"), std::string()));
  EXPECT_EQ((*p)[3], std::make_pair(std::string("b"), std::string("3")));
  auto bad = dg::parse_urlencoded("ok=1&k%zz=v");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, dg::errc::bad_request);
  EXPECT_TRUE(contains(bad.error().detail, "'k%zz=v'")) << bad.error().detail;
  EXPECT_TRUE(dg::parse_urlencoded("").ok());
}
