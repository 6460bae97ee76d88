// Unit tests of the gateway's authentication checks, claim and report bodies, the JSON shapes
// of its answers (jobs_api.hpp) and the Server-Sent Events helpers. Pure functions, no Redis.
#include <set>
#include <string>
#include <thread>

#include "gateway/api.hpp"
#include "gateway/events.hpp"
#include "gateway/handler.hpp"
#include "gateway/jobs_api.hpp"
#include "gateway/server.hpp"
#include "tests/unit/gateway_test_support.hpp"

// ---- authentication -----------------------------------------------------------------------

TEST(GatewayAuth, BearerTokenIsExtractedCaseInsensitively) {
  EXPECT_EQ(dg::bearer_token("Bearer dp_abc").value_or(""), "dp_abc");
  EXPECT_EQ(dg::bearer_token("  bearer   dp_abc  ").value_or(""), "dp_abc");
}

TEST(GatewayAuth, MalformedAuthorizationYieldsNoToken) {
  for (const char* h : {"", "Bearer", "Bearer ", "Basic dXNlcjpwdw==", "Bearerdp_abc", "Bearer a b"})
    EXPECT_FALSE(dg::bearer_token(h)) << h;
  EXPECT_FALSE(dg::bearer_token("Bearer " + std::string(300, 'x')));
}

TEST(GatewayAuth, UnknownTokenIsUnauthorized) {
  dg::principal who;
  auto e = dg::check_token({}, 1000, who);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status(), 401u);
  EXPECT_EQ(e->name(), "unauthorized");
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
  auto e = dg::check_token({{"owner", "alice"}, {"scope", "user"}, {"expires", "1000"}}, 1000.5, who);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status(), 401u);
  EXPECT_EQ(e->detail, "token expired");
  EXPECT_FALSE(dg::check_token({{"owner", "alice"}, {"scope", "user"}, {"expires", "1000"}}, 999, who));
}

// A job token reads every job of its owner (issue #16 item 2) and changes none through may_change.
TEST(GatewayAuth, JobTokenReadsItsOwnersJobsAndChangesNone) {
  dg::principal who;
  ASSERT_FALSE(dg::check_token({{"owner", "alice"}, {"scope", "job:42"}, {"expires", "0"}}, 1, who));
  ASSERT_TRUE(who.only_job);
  EXPECT_EQ(*who.only_job, 42);
  EXPECT_TRUE(dg::may_read(who, 42, "alice"));
  EXPECT_TRUE(dg::may_read(who, 43, "alice"));
  EXPECT_FALSE(dg::may_read(who, 44, "bob"));
  EXPECT_FALSE(dg::may_read(who, 45, ""));
  EXPECT_FALSE(dg::may_change(who, "alice"));
}

TEST(GatewayAuth, UnknownScopeIsUnauthorized) {
  dg::principal who;
  auto e = dg::check_token({{"owner", "alice"}, {"scope", "admin"}}, 1, who);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status(), 401u);
  EXPECT_TRUE(contains(e->detail, "scope 'admin'")) << e->detail;
}

TEST(GatewayAuth, InactiveAccountIsUnauthorized) {
  dg::principal who;
  who.name = "bob";
  auto e = dg::check_user({{"role", "user"}, {"status", "pending"}}, who);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->status(), 401u);
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
  return e->status();
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

// Another job: its reads pass the scope (the handler then checks the owner) and so does a claim
// (the handler checks it is a child); writes and reports are not found.
TEST(GatewayJobToken, OtherJobsAreReadByTheOwnerRuleAndNotWritten) {
  auto who = job_token_of(5);
  for (const char* p : {"/api/jobs/6", "/api/jobs/6/events", "/api/jobs/6/log"})
    EXPECT_FALSE(scope_status(who, p, "GET")) << p;
  EXPECT_FALSE(scope_status(who, "/api/jobs/6/claim", "POST"));
  for (const char* p :
       {"/api/jobs/6/cancel", "/api/jobs/6/started", "/api/jobs/6/archive", "/api/jobs/6/release"})
    EXPECT_EQ(scope_status(who, p, "POST").value_or(0), 404u) << p;
  EXPECT_EQ(scope_status(who, "/api/jobs/6", "DELETE").value_or(0), 404u);
  // Once its job is being cancelled the token starts no child.
  who.read_only = true;
  EXPECT_EQ(scope_status(who, "/api/jobs/6/claim", "POST").value_or(0), 403u);
  EXPECT_FALSE(scope_status(who, "/api/jobs/6", "GET"));
}

TEST(GatewayJobToken, EverythingElseIsForbidden) {
  auto who = job_token_of(5);
  EXPECT_EQ(scope_status(who, "/api/jobs/5", "DELETE").value_or(0), 403u);
  EXPECT_EQ(scope_status(who, "/api/jobs/5/cancel", "POST").value_or(0), 403u);
  EXPECT_EQ(scope_status(who, "/api/jobs/5/archive", "POST").value_or(0), 403u);
  EXPECT_EQ(scope_status(who, "/api/jobs/5/unarchive", "POST").value_or(0), 403u);
  EXPECT_EQ(scope_status(who, "/api/jobs/5/release", "POST").value_or(0), 403u);
  EXPECT_FALSE(scope_status(who, "/api/jobs", "GET")) << "lists its owner's jobs";
  EXPECT_EQ(scope_status(who, "/api/jobs/actions", "POST").value_or(0), 403u);
  EXPECT_EQ(scope_status(who, "/api/events", "GET").value_or(0), 403u);
  auto e = dg::check_job_token_scope(who, dg::match_route("/api/events"), "GET");
  EXPECT_EQ(e->name(), "forbidden");
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
  EXPECT_EQ(e->status(), 403u);
  EXPECT_EQ(e->name(), "forbidden");
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
  EXPECT_EQ(dg::parse_claim_body(parse(R"({"host":""})"), host)->detail, "field 'host' must not be empty");
  EXPECT_TRUE(
      contains(dg::parse_claim_body(parse(R"({"host":"a b"})"), host)->detail, "may hold only letters"));
  EXPECT_TRUE(
      contains(dg::parse_claim_body(parse(R"({"host":"x","pid":1})"), host)->detail, "unknown field 'pid'"));
  EXPECT_TRUE(
      contains(dg::parse_claim_body(parse(R"({"host":")" + std::string(256, 'h') + "\"}"), host)->detail,
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
  EXPECT_TRUE(contains(dg::parse_started_body(parse(R"({"attempt":"1"})"), r)->detail, "must be an integer"));
  EXPECT_TRUE(contains(dg::parse_started_body(parse(R"({"attempt":1,"pid":-1})"), r)->detail, "field 'pid'"));
  EXPECT_TRUE(
      contains(dg::parse_started_body(parse(R"({"attempt":1,"x":1})"), r)->detail, "unknown field 'x'"));
}

TEST(GatewayReports, ProgressDoneAndTotalGoTogetherAndLongMessagesAreCut) {
  dg::progress_report r;
  ASSERT_FALSE(
      dg::parse_progress_body(parse(R"({"attempt":1,"message":"3/10 left","done":7,"total":10})"), r));
  EXPECT_EQ(r.message, "3/10 left");
  EXPECT_EQ(r.done.value_or(-1), 7);
  EXPECT_EQ(r.total.value_or(-1), 10);
  EXPECT_EQ(dg::parse_progress_body(parse(R"({"attempt":1,"done":1})"), r)->detail,
            "fields 'done' and 'total' go together");
  ASSERT_FALSE(
      dg::parse_progress_body(parse(R"({"attempt":1,"message":")" + std::string(5000, 'm') + "\"}"), r));
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
  for (const char* s : {"type", "transition", "state", "ready", "progress", "Ready.", "attempt", "1", "time",
                        "1700000000.250000"}) {
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

  auto o = dg::events_json(dg::jobs_service::events_of(all));
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
descprod::redis_reply global_entry(const std::string& sid, const std::string& job, const std::string& owner,
                                   const std::string& state, const std::string& time = "1700000000.500000") {
  return entry_reply(sid, {"id", job, "owner", owner, "type", "transition", "state", state, "progress",
                           "Ready.", "attempt", "1", "time", time});
}
}  // namespace

TEST(GatewayAnswers, LogJsonIsOldestFirstFromANewestFirstReply) {
  std::vector<descprod::redis_reply> entries;
  entries.push_back(entry_reply("3-0", {"line", "third"}));
  entries.push_back(entry_reply("2-0", {"stream", "out", "line", "second"}));
  entries.push_back(entry_reply("1-0", {"line", "first"}));
  auto o = dg::log_json(dg::jobs_service::log_lines_of(array_reply(std::move(entries))));
  EXPECT_EQ(json::serialize(o), R"({"lines":["first","second","third"]})");
  descprod::redis_reply nil;
  EXPECT_EQ(json::serialize(dg::log_json(dg::jobs_service::log_lines_of(nil))), R"({"lines":[]})");
}

TEST(GatewayAnswers, LogPiecesHoldSeveralLinesAndMixWithOlderOneLineEntries) {
  // The daemon stores a piece per worker message (field text, lines each ending in a newline);
  // entries written before that hold one line each (field line). Empty lines survive.
  std::vector<descprod::redis_reply> entries;
  entries.push_back(entry_reply("3-0", {"text", "d\n\ne\n"}));
  entries.push_back(entry_reply("2-0", {"text", "b\nc\n"}));
  entries.push_back(entry_reply("1-0", {"line", "a"}));
  auto o = dg::log_json(dg::jobs_service::log_lines_of(array_reply(std::move(entries))));
  EXPECT_EQ(json::serialize(o), R"({"lines":["a","b","c","d","","e"]})");
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
  for (const char* bad : {"", "-", "1-", "-1", "a-1", "1-b", "1-2-3", "1 -2", "99999999999999999999999"})
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
  EXPECT_EQ(e->status(), 400u);
  EXPECT_TRUE(contains(e->detail, "malformed Last-Event-ID 'abc'")) << e->detail;
}

TEST(GatewaySse, EventFormatIsIdEventAndOneLineOfJson) {
  auto ev = dg::parse_stream_event(entry_reply(
      "1700000000500-0", {"id", "42", "owner", "alice", "type", "progress", "state", "running", "progress",
                          "Running. line one\nline \"two\"", "attempt", "2", "time", "1700000000.500000"}));
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->id, 42);
  EXPECT_EQ(ev->owner, "alice");
  EXPECT_EQ(dg::format_sse_event(*ev),
            "id: 1700000000500-0\nevent: job\n"
            R"(data: {"id":42,"state":"running","progress":"Running. line one\nline \"two\"",)"
            R"("attempt":2,"time":1.7000000005E9,"type":"progress","owner":"alice"})"
            "\n\n");
  EXPECT_EQ(dg::sse_preamble, "retry: 1000\n\n");
  EXPECT_EQ(dg::sse_keepalive, ": keepalive\n\n");
}

TEST(GatewaySse, JobStreamEntriesTakeTheJobAndOwnerGiven) {
  auto ev = dg::parse_stream_event(entry_reply("5-1", {"type", "transition", "state", "ready", "progress",
                                                       "Ready.", "attempt", "1", "time", "1.5"}),
                                   9, "bob");
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->id, 9);
  EXPECT_EQ(ev->owner, "bob");
  EXPECT_DOUBLE_EQ(ev->time_s(), 1.5);
  EXPECT_FALSE(dg::parse_stream_event(entry_reply("5-1", {"type", "transition"})));  // no job id
  EXPECT_FALSE(dg::parse_stream_event(entry_reply("x", {"id", "1"})));               // bad stream id
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
descprod::redis_reply entries_of(std::vector<descprod::redis_reply> v) { return array_reply(std::move(v)); }
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
  auto hist =
      *dg::parse_stream_event(entry_reply("7-0", {"type", "transition", "state", "running", "progress",
                                                  "Ready.", "attempt", "1", "time", "100.5"}),
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
