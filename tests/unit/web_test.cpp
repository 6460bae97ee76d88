// Unit tests of the web pages' pure parts (gateway/web.hpp): escaping, forms, cookies, CSRF and
// Origin checks, redirect targets, formatting, page routing, and the rendered HTML (every dynamic
// value escaped, every form carrying the CSRF token, no inline script). Also the password and
// account helpers of core/accounts.hpp that need no Redis.
#include <gtest/gtest.h>

#include <regex>
#include <string>

#include "core/accounts.hpp"
#include "gateway/web.hpp"

namespace web = descprod::gateway::web;
using descprod::job_record;

namespace {

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

const std::string evil = "<script>alert(1)</script>\"'&";

job_record evil_job() {
  job_record j;
  j["id"] = "42";
  j["parent"] = "7";
  j["descname"] = "alice";
  j["jobtype"] = "mysleep";
  j["config"] = evil;
  j["howfig"] = evil;
  j["state"] = "running";
  j["progress"] = "Running. " + evil;
  j["message"] = evil;
  j["host"] = evil;
  j["rundir"] = "/out/" + evil;
  j["create_time"] = "1795625968.5";
  j["start_time"] = "1795625970.25";
  j["done_count"] = "3";
  j["total_count"] = "10";
  return j;
}

web::page_user user() {
  web::page_user u;
  u.name = "alice";
  u.csrf = std::string(64, 'c');
  return u;
}

// Every <form method="post"> in `html` has the hidden csrf field with `csrf`.
void expect_forms_carry_csrf(const std::string& html, const std::string& csrf) {
  std::regex form(R"(<form method="post"[^>]*>(.*?)</form>)");
  int n = 0;
  for (auto it = std::sregex_iterator(html.begin(), html.end(), form); it != std::sregex_iterator(); ++it) {
    ++n;
    EXPECT_TRUE(contains((*it)[1].str(), "name=\"csrf\" value=\"" + csrf + "\"")) << (*it)[0].str();
  }
  EXPECT_GT(n, 0) << "no post form found";
}

// No raw markup from the data: the evil string appears only escaped.
void expect_escaped(const std::string& html) {
  EXPECT_FALSE(contains(html, "<script>alert(1)")) << html;
  EXPECT_TRUE(contains(html, "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
}

}  // namespace

TEST(WebEscape, EscapesMarkupQuotesAndAmpersands) {
  EXPECT_EQ(web::html_escape(evil), "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;");
  EXPECT_EQ(web::html_escape("plain text"), "plain text");
  EXPECT_EQ(web::html_escape(std::string("a\xff") + "b"),
            "a\xEF\xBF\xBD"
            "b")
      << "invalid UTF-8 replaced";
}

TEST(WebForms, ParsesUrlEncodedBodies) {
  auto f = web::parse_form("username=carol&password=a%26b+c&empty=&flag");
  ASSERT_TRUE(f);
  EXPECT_EQ((*f)["username"], "carol");
  EXPECT_EQ((*f)["password"], "a&b c");
  EXPECT_EQ((*f)["empty"], "");
  EXPECT_EQ((*f)["flag"], "");
  EXPECT_FALSE(web::parse_form("a=%zz"));
  EXPECT_TRUE(web::parse_form("")->empty());
}

TEST(WebCookies, FindsTheNamedCookie) {
  std::string h = "theme=dark; descprod_session=dp_abc; other=\"quoted\"";
  EXPECT_EQ(web::cookie_value(h, "descprod_session"), "dp_abc");
  EXPECT_EQ(web::cookie_value(h, "other"), "quoted");
  EXPECT_EQ(web::cookie_value(h, "descprod"), "");
  EXPECT_EQ(web::cookie_value("", "x"), "");
}

TEST(WebCookies, SessionCookieAttributes) {
  EXPECT_EQ(web::set_cookie("s", "v", false), "s=v; Path=/; HttpOnly; SameSite=Strict");
  EXPECT_EQ(web::set_cookie("s", "v", true), "s=v; Path=/; HttpOnly; SameSite=Strict; Secure");
  EXPECT_EQ(web::set_cookie("s", "", false, 0), "s=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
}

TEST(WebCsrf, TokensCompareExactlyAndNeverEmpty) {
  EXPECT_TRUE(web::tokens_equal("abc", "abc"));
  EXPECT_FALSE(web::tokens_equal("abc", "abd"));
  EXPECT_FALSE(web::tokens_equal("abc", "abcd"));
  EXPECT_FALSE(web::tokens_equal("", ""));
}

TEST(WebCsrf, OriginMustMatchHost) {
  EXPECT_TRUE(web::origin_allowed("", "127.0.0.1:8080")) << "non-browser clients send none";
  EXPECT_TRUE(web::origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080"));
  EXPECT_TRUE(web::origin_allowed("https://Example.org", "example.org"));
  EXPECT_FALSE(web::origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8080"));
  EXPECT_FALSE(web::origin_allowed("http://evil.example", "127.0.0.1:8080"));
  EXPECT_FALSE(web::origin_allowed("null", "127.0.0.1:8080"));
  EXPECT_FALSE(web::origin_allowed("http://127.0.0.1:8080", ""));
  EXPECT_FALSE(web::origin_allowed("ftp://127.0.0.1:8080", "127.0.0.1:8080"));
}

TEST(WebRedirects, NextMustBeALocalPath) {
  EXPECT_EQ(web::safe_next("/jobs/5", "/"), "/jobs/5");
  EXPECT_EQ(web::safe_next("/?view=all&page=2", "/"), "/?view=all&page=2");
  EXPECT_EQ(web::safe_next("//evil.example/", "/"), "/");
  EXPECT_EQ(web::safe_next("/\\evil.example", "/"), "/");
  EXPECT_EQ(web::safe_next("https://evil.example/", "/"), "/");
  EXPECT_EQ(web::safe_next("/a\r\nSet-Cookie: x", "/"), "/");
  EXPECT_EQ(web::safe_next("", "/tokens"), "/tokens");
}

TEST(WebFormat, TimesAndDurations) {
  EXPECT_EQ(web::format_time("0"), "1970-01-01 00:00:00");
  EXPECT_EQ(web::format_time("1795625968.9"), "2026-11-25 16:59:28");
  EXPECT_EQ(web::format_time(""), "");
  EXPECT_EQ(web::format_time("soon"), "");
  EXPECT_EQ(web::format_duration(5), "0:05");
  EXPECT_EQ(web::format_duration(125), "2:05");
  EXPECT_EQ(web::format_duration(3725), "1:02:05");
  job_record j;
  EXPECT_EQ(web::job_duration(j, 100), "") << "not started";
  j["start_time"] = "100";
  j["state"] = "running";
  EXPECT_EQ(web::job_duration(j, 161), "1:01") << "running: until now";
  j["stop_time"] = "130";
  j["state"] = "done";
  EXPECT_EQ(web::job_duration(j, 9999), "0:30") << "finished: until stop";
}

TEST(WebRoutes, PagesAndTheirMethods) {
  EXPECT_EQ(web::match_page("/").kind, web::page_kind::home);
  EXPECT_EQ(web::match_page("/login").kind, web::page_kind::login);
  EXPECT_EQ(web::match_page("/register").kind, web::page_kind::register_);
  EXPECT_EQ(web::match_page("/help").kind, web::page_kind::help);
  EXPECT_EQ(web::match_page("/admin").kind, web::page_kind::admin);
  EXPECT_EQ(web::match_page("/tokens").kind, web::page_kind::tokens);
  auto j = web::match_page("/jobs/17");
  EXPECT_EQ(j.kind, web::page_kind::job);
  EXPECT_EQ(j.id, 17);
  EXPECT_EQ(web::match_page("/jobs/17/row").kind, web::page_kind::job_row);
  EXPECT_EQ(web::match_page("/jobs/17/fields").kind, web::page_kind::job_fields);
  auto a = web::match_page("/jobs/17/archive");
  EXPECT_EQ(a.kind, web::page_kind::job_action);
  EXPECT_EQ(a.action, "archive");
  EXPECT_EQ(web::match_page("/jobs/17/explode").kind, web::page_kind::none);
  EXPECT_EQ(web::match_page("/jobs/0").kind, web::page_kind::none);
  EXPECT_EQ(web::match_page("/jobs/x").kind, web::page_kind::none);
  auto u = web::match_page("/admin/users/carol/reject");
  EXPECT_EQ(u.kind, web::page_kind::admin_action);
  EXPECT_EQ(u.name, "carol");
  EXPECT_EQ(web::match_page("/admin/users/../approve").kind, web::page_kind::none);
  EXPECT_EQ(web::match_page("/tokens/" + std::string(64, 'f') + "/revoke").kind,
            web::page_kind::token_revoke);
  EXPECT_EQ(web::match_page("/tokens/abc/revoke").kind, web::page_kind::none);
  EXPECT_EQ(web::match_page("/static/app.js").kind, web::page_kind::asset);
  EXPECT_EQ(web::match_page("/static/../etc/passwd").kind, web::page_kind::none);
  EXPECT_TRUE(web::page_method_allowed(web::page_kind::login, "POST"));
  EXPECT_FALSE(web::page_method_allowed(web::page_kind::job_action, "GET"));
  EXPECT_FALSE(web::page_method_allowed(web::page_kind::home, "POST"));
  EXPECT_TRUE(web::page_is_public(web::page_kind::help));
  EXPECT_FALSE(web::page_is_public(web::page_kind::home));
  EXPECT_FALSE(web::page_is_public(web::page_kind::job_row));
}

TEST(WebPages, JobRowEscapesEveryValueAndShowsProgress) {
  auto html = web::job_row(evil_job(), user(), 1795625980, "/?view=all");
  expect_escaped(html);
  expect_forms_carry_csrf(html, user().csrf);
  EXPECT_TRUE(contains(html, "<progress value=\"3\" max=\"10\">"));
  EXPECT_TRUE(contains(html, "action=\"/jobs/42/cancel\"")) << "a running job can be cancelled";
  EXPECT_FALSE(contains(html, "/jobs/42/delete")) << "only finished jobs can be deleted";
  EXPECT_TRUE(contains(html, "href=\"/jobs/7\"")) << "parent link";
  EXPECT_TRUE(contains(html, "name=\"next\" value=\"/?view=all\""));
  EXPECT_TRUE(contains(html, "href=\"/?copy=42#create\""));
}

TEST(WebPages, FinishedJobRowOffersDeleteWithAConfirmation) {
  auto j = evil_job();
  j["state"] = "done";
  j["archive"] = "1";
  auto html = web::job_row(j, user(), 0, "/");
  EXPECT_TRUE(contains(html, "action=\"/jobs/42/delete\" class=\"inline\" data-confirm=\"Delete job 42?"));
  EXPECT_TRUE(contains(html, "/jobs/42/unarchive"));
  EXPECT_FALSE(contains(html, "/jobs/42/cancel"));
}

TEST(WebPages, HomePageEscapesAndCarriesCsrfEverywhere) {
  descprod::app_registry apps = descprod::parse_apps(
      "apps:\n  - name: mysleep\n    help: \"<b>sleeps</b>\"\n    pattern: \"^[0-9]+$\"\n", "apps.yaml");
  web::home_view v;
  v.user = user();
  v.apps = &apps;
  v.jobs.push_back(evil_job());
  v.total = 120;
  v.page = 2;
  v.form.jobtype = "mysleep";
  v.form.config = evil;
  v.message.text = evil;
  v.since = "1795625968202-0";
  auto html = web::home_page(v);
  expect_escaped(html);
  expect_forms_carry_csrf(html, user().csrf);
  EXPECT_TRUE(contains(html, "&lt;b&gt;sleeps&lt;/b&gt;"));
  EXPECT_TRUE(contains(html, "Jobs 51–100 of 120"));
  EXPECT_TRUE(contains(html, "rel=\"prev\"")) << "page 2 links back";
  EXPECT_TRUE(contains(html, "rel=\"next\"")) << "more jobs follow";
  EXPECT_TRUE(contains(html, "data-since=\"1795625968202-0\""));
  EXPECT_TRUE(contains(html, "<meta name=\"csrf-token\" content=\"" + user().csrf + "\">"));
  // No inline script: only the external theme.js (in <head>, applies a stored theme before the
  // first paint) and app.js.
  std::regex script("<script[^>]*>");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), script); it != std::sregex_iterator(); ++it)
    EXPECT_TRUE((*it).str() == "<script src=\"/static/app.js\" defer>" ||
                (*it).str() == "<script src=\"/static/theme.js\">")
        << (*it).str();
  EXPECT_FALSE(contains(html, " onclick=")) << "no inline handlers (CSP)";
  EXPECT_FALSE(contains(html, " style=")) << "no inline styles (CSP)";
}

TEST(WebPages, JobPageShowsFieldsEventsLogAndChildren) {
  web::job_view v;
  v.user = user();
  v.job = evil_job();
  descprod::gateway::stream_event e;
  e.sid = "1-0";
  e.type = "progress";
  e.state = "running";
  e.progress = "Running. " + evil;
  e.time = "1795625970";
  v.events.push_back(e);
  v.log_lines.push_back(evil);
  auto child = evil_job();
  child["id"] = "43";
  child["parent"] = "42";
  child["state"] = "done";
  v.children.push_back(child);
  v.children_total = 1;
  v.rollup["done"] = 1;
  auto html = web::job_page(v);
  expect_escaped(html);
  expect_forms_carry_csrf(html, user().csrf);
  EXPECT_TRUE(contains(html, "<pre class=\"log\" id=\"log\">&lt;script&gt;"));
  EXPECT_TRUE(contains(html, "1 child, 1 done"));
  EXPECT_TRUE(contains(html, "data-job=\"42\""));
  EXPECT_TRUE(contains(html, "<th>rundir</th>"));
  EXPECT_TRUE(contains(html, "2026-11-25 16:59:30 UTC")) << "start time shown in UTC";
}

TEST(WebPages, AdminPageListsPendingUsersWorkersAndQueue) {
  web::admin_view v;
  v.user = user();
  v.user.admin = true;
  job_record pending;
  pending["name"] = "dave";
  pending["status"] = "pending";
  pending["role"] = "user";
  pending["email"] = evil;
  pending["oidc_provider"] = "nersc";
  pending["oidc_iss"] = evil;
  pending["oidc_sub"] = evil;
  job_record self;
  self["name"] = "alice";
  self["status"] = "active";
  self["role"] = "admin";
  v.users.push_back(pending);
  v.users.push_back(self);
  job_record w;
  w["id"] = "node1-42";
  w["host"] = "node1";
  w["slots"] = "8";
  w["running"] = "3";
  w["last_heartbeat"] = "100";
  v.workers.push_back(w);
  v.queue_depth = 17;
  v.finished_last_minute = 5;
  v.now_s = 102;
  auto html = web::admin_page(v);
  expect_escaped(html);
  expect_forms_carry_csrf(html, v.user.csrf);
  EXPECT_TRUE(contains(html, "action=\"/admin/users/dave/approve\""));
  EXPECT_TRUE(contains(html, "action=\"/admin/users/dave/reject\""));
  EXPECT_TRUE(contains(html, ">via nersc</small>")) << "an OpenID Connect account says how it logs in";
  EXPECT_FALSE(contains(html, "via </small>")) << "a password account says nothing";
  EXPECT_FALSE(contains(html, "/admin/users/alice/disable")) << "no self-disable button";
  EXPECT_TRUE(contains(html, "id=\"queue-depth\">17<"));
  EXPECT_TRUE(contains(html, "id=\"throughput\">5<"));
  EXPECT_TRUE(contains(html, "node1-42"));
  EXPECT_TRUE(contains(html, "(0:02 ago)"));
}

TEST(WebPages, TokensPageShowsANewTokenOnce) {
  web::tokens_view v;
  v.user = user();
  job_record t;
  t["id"] = std::string(64, 'e');
  t["label"] = evil;
  t["created"] = "0";
  v.tokens.push_back(t);
  auto html = web::tokens_page(v);
  expect_escaped(html);
  expect_forms_carry_csrf(html, user().csrf);
  EXPECT_FALSE(contains(html, "id=\"new-token\""));
  EXPECT_TRUE(contains(html, "/tokens/" + std::string(64, 'e') + "/revoke"));
  v.new_token = "dp_" + std::string(64, '1');
  html = web::tokens_page(v);
  EXPECT_TRUE(contains(html, "<code id=\"new-token\">dp_111"));
}

TEST(WebPages, TokensPageShowsTheAccountsQuota) {
  web::tokens_view v;
  v.user = user();
  auto html = web::tokens_page(v);
  EXPECT_TRUE(contains(html, "<h2>Your quota</h2>"));
  EXPECT_TRUE(contains(html, "Share of the workers: <strong>1</strong>"));
  EXPECT_TRUE(contains(html, "no limit on jobs running at once"));
  v.quota.share = 2.5;
  v.quota.max_running = 200;
  v.quota.submit_per_minute = 600;
  html = web::tokens_page(v);
  EXPECT_TRUE(contains(html, "<strong>2.5</strong>"));
  EXPECT_TRUE(contains(html, "at most 200 jobs running at once"));
  EXPECT_TRUE(contains(html, "no limit on jobs waiting to run: ready, held or waiting"));
  EXPECT_TRUE(contains(html, "at most 600 jobs submitted per minute"));
}

TEST(WebPages, LoginRegisterAndHelp) {
  web::flash f;
  f.text = evil;
  f.error = true;
  std::vector<web::login_button> buttons(1);
  buttons[0].name = "nersc";
  buttons[0].label = evil;
  auto login = web::login_page(std::string(64, 'x'), f, evil, buttons);
  expect_escaped(login);
  EXPECT_TRUE(contains(login, "<a class=\"button oidc-login\" href=\"/login/oidc/nersc\">"));
  EXPECT_FALSE(contains(web::login_page(std::string(64, 'x'), f, "carol"), "oidc-login"));
  EXPECT_TRUE(contains(login, "name=\"csrf\" value=\"" + std::string(64, 'x') + "\""));
  EXPECT_TRUE(contains(login, "class=\"flash error\""));
  auto reg = web::register_page(std::string(64, 'x'), web::flash{}, "carol", "c@x.org");
  EXPECT_TRUE(contains(reg, "name=\"email\""));
  EXPECT_TRUE(contains(reg, "value=\"carol\""));
  descprod::app_registry apps =
      descprod::parse_apps("apps:\n  - name: mysleep\n    help: \"sleeps\"\n", "apps.yaml");
  auto help = web::help_page(nullptr, apps);
  for (auto s : {"current-status.txt", "config.json", "[done/total]", "descprod-closeout", "DESCPROD_JOB_ID",
                 "DESCPROD_TOKEN", "runapp-", "cancelled", "timeout"})
    EXPECT_TRUE(contains(help, s)) << s;
  EXPECT_TRUE(contains(help, "<dt>mysleep</dt>"));
}

TEST(WebAssets, ScriptAndStylesheetAreServed) {
  auto js = web::find_asset("app.js");
  ASSERT_TRUE(js);
  EXPECT_EQ(js->content_type, "text/javascript; charset=utf-8");
  EXPECT_TRUE(contains(std::string(js->body), "new EventSource('/api/events'"));
  EXPECT_FALSE(contains(std::string(js->body), "innerHTML = d.")) << "event data only via textContent";
  ASSERT_TRUE(web::find_asset("app.css"));
  EXPECT_FALSE(web::find_asset("../app.js"));
  EXPECT_FALSE(contains(std::string(web::content_security_policy), "unsafe"));
}

TEST(Accounts, PasswordsHashWithArgon2idAndVerify) {
  descprod::password_cost cost;
  cost.opslimit = 1;
  cost.memlimit_bytes = 8192;
  auto h = descprod::hash_password("correct horse", cost);
  EXPECT_EQ(h.rfind("$argon2id$", 0), 0u) << h;
  EXPECT_TRUE(descprod::verify_password(h, "correct horse"));
  EXPECT_FALSE(descprod::verify_password(h, "correct horse!"));
  EXPECT_FALSE(descprod::verify_password("", "x"));
  EXPECT_FALSE(descprod::verify_password("$argon2id$garbage", "x"));
  EXPECT_NE(descprod::hash_password("correct horse", cost), h) << "salted";
}

TEST(Accounts, EmailsActionsAndCommands) {
  EXPECT_TRUE(descprod::valid_email("carol@example.org"));
  EXPECT_FALSE(descprod::valid_email("carol"));
  EXPECT_FALSE(descprod::valid_email("@example.org"));
  EXPECT_FALSE(descprod::valid_email("a b@example.org"));
  EXPECT_FALSE(descprod::valid_email("<a>@example.org"));
  EXPECT_EQ(descprod::parse_account_action("make-admin"), descprod::account_action::make_admin);
  EXPECT_EQ(descprod::parse_account_action("approve"), descprod::account_action::approve);
  EXPECT_FALSE(descprod::parse_account_action("delete"));
  auto cmd = descprod::account_action_cmd("P:", "carol", descprod::account_action::reject, 5.0);
  ASSERT_EQ(cmd.size(), 6u);
  EXPECT_EQ(cmd[0], "EVAL");
  EXPECT_EQ(cmd[3], "P:user:carol");
  EXPECT_EQ(cmd[4], "reject");
  auto reg = descprod::register_user_cmd("P:", "carol", "c@x.org", "$argon2id$h", 5.0);
  EXPECT_EQ(reg[3], "P:user:carol");
  EXPECT_EQ(reg[4], "P:users");
  descprod::redis_reply r;
  r.type = descprod::redis_reply::kind::array;
  for (auto s : {"err", "illegal", "active", "user"}) {
    descprod::redis_reply e;
    e.type = descprod::redis_reply::kind::string;
    e.str = s;
    r.elements.push_back(e);
  }
  auto c = descprod::parse_account_change(r);
  EXPECT_FALSE(c.ok);
  EXPECT_EQ(c.reason, "illegal");
  EXPECT_EQ(c.status, "active");
}

TEST(WebPages, StatusPageAndAdminCarryThePlotsWithExternalCodeOnly) {
  auto html = web::status_page(user());
  EXPECT_TRUE(contains(html, "<a href=\"/status\" aria-current=\"page\">Status</a>")) << "linked, current";
  EXPECT_TRUE(contains(html, "id=\"status-panel\""));
  EXPECT_TRUE(contains(html, "<h1 class=\"page-title\">Service status</h1>"));
  std::regex script("<script[^>]*>");
  int status_scripts = 0;
  for (auto it = std::sregex_iterator(html.begin(), html.end(), script); it != std::sregex_iterator(); ++it) {
    status_scripts += (*it).str() == "<script src=\"/static/status.js\" defer>";
    EXPECT_TRUE((*it).str() == "<script src=\"/static/app.js\" defer>" ||
                (*it).str() == "<script src=\"/static/theme.js\">" ||
                (*it).str() == "<script src=\"/static/status.js\" defer>")
        << (*it).str();
  }
  EXPECT_EQ(status_scripts, 1);
  EXPECT_FALSE(contains(html, " style=")) << "no inline styles (CSP)";
  web::admin_view v;
  v.user = user();
  v.user.admin = true;
  auto admin = web::admin_page(v);
  EXPECT_TRUE(contains(admin, "id=\"status-panel\"")) << "the same plots on /admin";
  EXPECT_TRUE(contains(admin, "<script src=\"/static/status.js\" defer>"));
  // The script: served as JavaScript; text only through textContent, plots as labelled images.
  auto js = web::find_asset("status.js");
  ASSERT_TRUE(js);
  EXPECT_EQ(js->content_type, "text/javascript; charset=utf-8");
  std::string body(js->body);
  EXPECT_TRUE(contains(body, "fetch('/api/status'"));
  EXPECT_TRUE(contains(body, "role: 'img', 'aria-label'"));
  EXPECT_FALSE(contains(body, "innerHTML"));
  EXPECT_FALSE(contains(body, "setAttribute('style'")) << "no inline styles (CSP)";
}

// ---- held jobs and dependencies ---------------------------------------------------------------

namespace {

job_record job_in(const std::string& state) {
  auto j = evil_job();
  j["state"] = state;
  return j;
}

web::graph_node node(long long id, const std::string& kind, const std::string& state) {
  web::graph_node n;
  n.id = id;
  n.kind = kind;
  n.state = state;
  return n;
}

}  // namespace

TEST(WebPages, HeldJobOffersReleaseAndCancelOnItsPageAndRow) {
  auto held = job_in("held");
  held["hold"] = "1";
  auto detail = web::job_detail(held, user(), 0);
  EXPECT_TRUE(contains(detail, "action=\"/jobs/42/release\"")) << detail;
  EXPECT_TRUE(contains(detail, ">Release</button>"));
  EXPECT_TRUE(contains(detail, "action=\"/jobs/42/cancel\"")) << "a held job can be cancelled";
  EXPECT_FALSE(contains(detail, "/jobs/42/delete")) << "a held job is active";
  EXPECT_TRUE(contains(detail, "<span class=\"state s-held\">held</span>"));
  expect_forms_carry_csrf(detail, user().csrf);
  auto row = web::job_row(held, user(), 0, "/");
  EXPECT_TRUE(contains(row, "action=\"/jobs/42/release\""));
  EXPECT_TRUE(contains(row, "aria-label=\"Release job 42\""));
  EXPECT_TRUE(contains(row, "/jobs/42/cancel"));

  // Waiting for its dependencies: Cancel; Release only when it was submitted held.
  auto waiting = job_in("waiting");
  detail = web::job_detail(waiting, user(), 0);
  EXPECT_FALSE(contains(detail, "/release")) << detail;
  EXPECT_TRUE(contains(detail, "action=\"/jobs/42/cancel\""));
  waiting["hold"] = "1";
  EXPECT_TRUE(contains(web::job_detail(waiting, user(), 0), "action=\"/jobs/42/release\""));
  // Anything else: no Release.
  for (const char* st : {"ready", "running", "done", "cancelled"}) {
    auto j = job_in(st);
    j["hold"] = "1";  // a released job keeps no hold, but even so
    EXPECT_FALSE(contains(web::job_detail(j, user(), 0), "/release")) << st;
    EXPECT_FALSE(contains(web::job_row(j, user(), 0, "/"), "/release")) << st;
  }
}

TEST(WebPages, WaitingJobPageDrawsItsDependenciesWithStatesAndLinks) {
  web::job_view v;
  v.user = user();
  v.job = job_in("waiting");
  v.job["after"] = "12,13,15";
  v.job["after_any"] = "14";
  v.job["waiting_for"] = "1";
  v.dependencies.push_back(node(12, "after", "done"));
  v.dependencies.push_back(node(13, "after", "running"));
  v.dependencies.push_back(node(15, "after", ""));  // deleted
  v.dependencies.push_back(node(14, "after_any", "failed"));
  v.since = "1-0";
  v.max_id = "99";
  auto html = web::job_page(v);
  expect_escaped(html);
  expect_forms_carry_csrf(html, user().csrf);
  EXPECT_TRUE(
      contains(html, "<section class=\"card\" id=\"dependencies\" aria-labelledby=\"deps-heading\">"));
  EXPECT_TRUE(contains(html, "<h2 id=\"deps-heading\">Dependencies</h2>"));
  EXPECT_TRUE(contains(html, "Job 42 depends on 4 jobs."));
  auto before = html.substr(html.find("<ul class=\"dg-list dg-before\""));
  before = before.substr(0, before.find("</ul>"));
  ASSERT_FALSE(before.empty());
  EXPECT_TRUE(contains(before,
                       "<li class=\"dg-edge k-after\" data-node=\"12\"><span class=\"dg-node\"><a "
                       "href=\"/jobs/12\">Job 12</a> <span class=\"state s-done\">done</span>"))
      << before;
  EXPECT_TRUE(
      contains(before, "<a href=\"/jobs/13\">Job 13</a> <span class=\"state s-running\">running</span>"));
  EXPECT_TRUE(contains(before,
                       "data-node=\"14\"><span class=\"dg-node\"><a href=\"/jobs/14\">Job 14</a> <span "
                       "class=\"state s-failed\">failed</span> <span class=\"dg-kind\""));
  EXPECT_TRUE(contains(before, "k-after_any"));
  EXPECT_TRUE(contains(before, ">after_any</span>"));
  EXPECT_TRUE(contains(before, "Job 15 <small class=\"gone\">(deleted)</small>"))
      << "no link to a deleted job";
  EXPECT_FALSE(contains(before, "href=\"/jobs/15\""));
  EXPECT_FALSE(contains(before, "more")) << "every dependency is shown";
  // The job in the middle, with its state; no dependents.
  EXPECT_TRUE(
      contains(html, "<div class=\"dg-self has-before\" role=\"group\" aria-labelledby=\"dg-self\">"));
  EXPECT_TRUE(contains(
      html, "data-node=\"42\"><strong>Job 42</strong> <span class=\"state s-waiting\">waiting</span>"));
  EXPECT_TRUE(contains(html, "Depended on by <small>(0)</small>"));
  EXPECT_TRUE(contains(html, "<li class=\"dg-none\">none</li>"));
  // Lists a screen reader can walk, named by their headings; the live part says when it waits.
  EXPECT_TRUE(contains(html, "<ul class=\"dg-list dg-before\" aria-labelledby=\"dg-before\">"));
  EXPECT_TRUE(
      contains(html, "<h3 class=\"dg-h-before\" id=\"dg-before\">Depends on <small>(4)</small></h3>"));
  EXPECT_TRUE(contains(html, "data-maxid=\"99\""));
  EXPECT_FALSE(contains(html, " style=")) << "no inline styles (CSP)";
  EXPECT_TRUE(html.find("id=\"dependencies\"") < html.find("id=\"logsection\"")) << "right under the job";

  // Neither dependencies nor dependents: no section.
  web::job_view plain;
  plain.user = user();
  plain.job = evil_job();
  EXPECT_FALSE(contains(web::job_page(plain), "id=\"dependencies\""));
  EXPECT_EQ(web::dependency_graph(plain), "");
}

TEST(WebPages, DependentsShowTheFirstPageAndAndNMore) {
  web::job_view v;
  v.user = user();
  v.job = job_in("held");
  for (long long i = 0; i < 200; ++i)
    v.dependents.push_back(node(1000 + i, i % 2 ? "after_any" : "after", "waiting"));
  v.dependents_total = 250;
  auto html = web::job_page(v);
  EXPECT_TRUE(contains(html, "250 jobs depend on job 42."));
  EXPECT_TRUE(contains(html, "Depended on by <small>(250)</small>"));
  EXPECT_TRUE(contains(html, "Depends on <small>(0)</small>"));
  EXPECT_TRUE(contains(html, "<div class=\"dg-self has-after\""));
  auto after = html.substr(html.find("<ul class=\"dg-list dg-after\" aria-labelledby=\"dg-after\">"));
  after = after.substr(0, after.find("</ul>"));
  EXPECT_TRUE(
      contains(after, "<a href=\"/jobs/1000\">Job 1000</a> <span class=\"state s-waiting\">waiting</span>"));
  EXPECT_TRUE(contains(after, "<a href=\"/jobs/1199\">Job 1199</a>"));
  std::regex link("href=\"/jobs/\\d+\"");
  EXPECT_EQ(std::distance(std::sregex_iterator(after.begin(), after.end(), link), std::sregex_iterator()),
            200);
  EXPECT_TRUE(contains(after, "<li class=\"dg-more\"><span class=\"dg-node\">… and 50 more</span></li>"));
  // A held job with dependents: Release is there, the dependents wait for it.
  EXPECT_TRUE(contains(html, "action=\"/jobs/42/release\""));
  // All of them shown: no "more".
  v.dependents.resize(3);
  v.dependents_total = 3;
  html = web::job_page(v);
  EXPECT_TRUE(contains(html, "3 jobs depend on job 42."));
  EXPECT_FALSE(contains(html, "more</span>"));
  // Both ways: one sentence.
  v.job["after"] = "7";
  v.dependencies.push_back(node(7, "after", "done"));
  EXPECT_TRUE(contains(web::job_page(v), "Job 42 depends on 1 job; 3 jobs depend on it."));
}

TEST(WebPages, CreateFormHasHoldAndAfterAndTheTableOffersTheNewStates) {
  descprod::app_registry apps =
      descprod::parse_apps("apps:\n  - name: mysleep\n    help: \"sleeps\"\n", "apps.yaml");
  web::home_view v;
  v.user = user();
  v.apps = &apps;
  v.form.jobtype = "mysleep";
  v.max_id = "1234";
  auto html = web::home_page(v);
  EXPECT_TRUE(contains(html, "<input type=\"checkbox\" name=\"hold\" value=\"1\" id=\"hold\">"));
  EXPECT_TRUE(contains(html, "> Hold until I release it</label>"));
  EXPECT_TRUE(contains(html, "<label>After (job IDs, comma-separated) <input name=\"after\""));
  EXPECT_TRUE(contains(html, "data-maxid=\"1234\""));
  // After a refused submission the form comes back as it was sent.
  v.form.hold = true;
  v.form.after = evil;
  html = web::home_page(v);
  expect_escaped(html);
  EXPECT_TRUE(contains(html, "id=\"hold\" checked>"));
  // The state menu offers waiting and held; the selection form releases.
  EXPECT_TRUE(contains(html, "<option value=\"waiting\">waiting</option>"));
  EXPECT_TRUE(contains(html, "<option value=\"held\">held</option>"));
  EXPECT_TRUE(contains(html, "<button type=\"submit\" name=\"action\" value=\"release\">Release</button>"));
  v.state = "held";
  EXPECT_TRUE(contains(web::home_page(v), "<option value=\"held\" selected>held</option>"));
  EXPECT_EQ(web::actions_message("release", 2, "", 0, false), "Released 2 jobs.");
  EXPECT_EQ(web::actions_message("release", 1, "job 9 is running, not held", 1, false),
            "Released 1 job. 1 job could not be: job 9 is running, not held.");
}

TEST(WebForms, AfterFieldTakesJobIdsSeparatedByCommas) {
  std::string error;
  auto ids = web::parse_after_field("12, 15,16  17", error);
  ASSERT_TRUE(ids) << error;
  EXPECT_EQ(*ids, (std::vector<descprod::job_id>{12, 15, 16, 17}));
  ids = web::parse_after_field("", error);
  ASSERT_TRUE(ids);
  EXPECT_TRUE(ids->empty());
  EXPECT_TRUE(web::parse_after_field(" , ", error)->empty());
  for (const char* bad : {"12, abc", "0", "-3", "12;13", "1234567890123456789", "#0"}) {
    error.clear();
    EXPECT_FALSE(web::parse_after_field(bad, error)) << bad;
    EXPECT_TRUE(contains(error, "is not a job ID")) << bad << ": " << error;
  }
  web::parse_after_field("12, abc", error);
  EXPECT_EQ(
      error,
      "After: “abc” is not a job ID. Give the IDs of the jobs to wait for, separated by commas (e.g. 12, 15).");
}

TEST(WebPages, HelpAndAssetsKnowWaitingAndHeld) {
  descprod::app_registry apps = descprod::parse_apps("apps:\n  - name: mysleep\n", "apps.yaml");
  auto help = web::help_page(nullptr, apps);
  EXPECT_TRUE(contains(help,
                       "<span class=\"state s-waiting\">waiting</span></td><td>waits for its dependencies "
                       "(after / after_any)</td>"));
  EXPECT_TRUE(contains(help,
                       "<span class=\"state s-held\">held</span></td><td>held until you release it or start "
                       "it with descprod-start-job</td>"));
  EXPECT_TRUE(help.find("s-waiting") < help.find("s-ready")) << "in the order of all_job_states";
  std::string js(web::find_asset("app.js")->body);
  EXPECT_TRUE(contains(js, "const STATES = ['waiting', 'held', 'ready',"));
  EXPECT_TRUE(contains(js, "dataset.maxid"));
  std::string css(web::find_asset("app.css")->body);
  for (const char* s : {".s-waiting {", ".s-held {", "--b-waiting:", "--b-held:", ".depgraph {"})
    EXPECT_TRUE(contains(css, s)) << s;
  // Both dark blocks (the toggle's and the system's) carry the new badge colours.
  std::regex dark_held("--b-held:#3a2f12");
  EXPECT_EQ(std::distance(std::sregex_iterator(css.begin(), css.end(), dark_held), std::sregex_iterator()),
            2);
}

// ---- arrays and sites ---------------------------------------------------------------------------

namespace {

// Job `id` of array 21 at `index` (the array's first job is 21, at index 10).
job_record array_job(const std::string& id, const std::string& index, const std::string& state) {
  auto j = job_in(state);
  j["id"] = id;
  j.erase("parent");
  j["array"] = "21";
  j["array_index"] = index;
  return j;
}

// The text of the element with `id` (from its id attribute to its closing tag `close`).
std::string element(const std::string& html, const std::string& id, const std::string& close = "</p>") {
  auto at = html.find("id=\"" + id + "\"");
  if (at == std::string::npos) return {};
  return html.substr(at, html.find(close, at) - at);
}

}  // namespace

TEST(WebPages, ArrayFirstJobShowsTheRollUpWithCountsAndTheFilteredTableLink) {
  web::job_view v;
  v.user = user();
  v.job = array_job("21", "10", "done");
  v.array_jobs = 5;
  v.array_rollup["total"] = 5;
  v.array_rollup["done"] = 2;
  v.array_rollup["running"] = 1;
  v.array_rollup["ready"] = 2;
  auto html = web::job_page(v);
  expect_escaped(html);
  expect_forms_carry_csrf(html, user().csrf);
  EXPECT_TRUE(contains(html,
                       "<section class=\"card\" id=\"array\" aria-labelledby=\"array-heading\"><h2 "
                       "id=\"array-heading\">Array</h2>"));
  // The total, then each state's count in the states' order.
  EXPECT_TRUE(contains(html,
                       "<p id=\"array-rollup\" data-array=\"21\" data-total=\"5\">5 jobs, 2 ready, 1 "
                       "running, 2 done</p>"))
      << element(html, "array-rollup");
  EXPECT_TRUE(contains(html,
                       "<a href=\"/?view=all&amp;array=21\" id=\"array-link\">Show the array's jobs in "
                       "the jobs table</a>"));
  EXPECT_FALSE(contains(html, "The counts are of the first")) << "not a sample";
  // Right under the job, before its log; the children's roll-up is another section.
  EXPECT_TRUE(html.find("id=\"array\"") < html.find("id=\"logsection\""));
  EXPECT_TRUE(contains(html, "<p id=\"rollup\" data-total=\"0\">0 children</p>"));
  // The first job is a job of the array too: its line says so, without a link to itself.
  auto member = element(html, "array-member");
  EXPECT_TRUE(contains(member, "Array 21 <small>(this is its first job)</small>, index 10")) << member;
  EXPECT_FALSE(contains(member, "href=\"/jobs/21\""));
  EXPECT_TRUE(contains(member, "<a href=\"/?view=all&amp;array=21\">the array's jobs</a>")) << member;
  EXPECT_EQ(web::array_section(v),
            html.substr(html.find("<section class=\"card\" id=\"array\""), web::array_section(v).size()));

  // One job: singular. A roll-up that is a sample says so.
  v.array_jobs = 1;
  v.array_rollup.clear();
  v.array_rollup["total"] = 1;
  v.array_rollup["held"] = 1;
  EXPECT_TRUE(contains(web::array_section(v), ">1 job, 1 held</p>"));
  v.array_jobs = 100005;
  v.array_rollup["truncated"] = 1;
  EXPECT_TRUE(contains(web::array_section(v), "The counts are of the first 100000 jobs of 100005."));

  // A job that is not an array's first has no section.
  v.array_jobs = 0;
  EXPECT_EQ(web::array_section(v), "");
  EXPECT_FALSE(contains(web::job_page(v), "id=\"array\""));
}

TEST(WebPages, ArrayMemberPageNamesItsArrayAndIndexWithLinks) {
  web::job_view v;
  v.user = user();
  v.job = array_job("23", "30", "running");
  auto html = web::job_page(v);
  expect_escaped(html);
  EXPECT_TRUE(contains(html,
                       "<p class=\"jobmeta\" id=\"array-member\">Array <a href=\"/jobs/21\">21</a>, "
                       "index 30 · <a href=\"/?view=all&amp;array=21\">the array's jobs</a></p>"))
      << element(html, "array-member");
  EXPECT_FALSE(contains(html, "id=\"array\"")) << "the roll-up is on the first job's page only";
  // Under the heading, outside the live part (#jobdetail is replaced by live updates).
  EXPECT_TRUE(html.find("id=\"array-member\"") > html.find("<h1>"));
  EXPECT_TRUE(html.find("id=\"array-member\"") < html.find("id=\"jobdetail\""));

  // The array's first job deleted: its ID without a link; the table still lists the array.
  v.array_gone = true;
  auto gone = element(web::job_page(v), "array-member");
  EXPECT_TRUE(contains(gone,
                       "Array 21 <small class=\"gone\" title=\"its first job was deleted\">(first job "
                       "deleted)</small>, index 30"))
      << gone;
  EXPECT_FALSE(contains(gone, "href=\"/jobs/21\""));
  EXPECT_TRUE(contains(gone, "href=\"/?view=all&amp;array=21\""));

  // A job of no array: no line. A stored value is escaped.
  v.array_gone = false;
  EXPECT_FALSE(contains(web::job_page(web::job_view{}), "array-member"));
  v.job["array"] = evil;
  v.job["array_index"] = evil;
  expect_escaped(element(web::job_page(v), "array-member"));
}

TEST(WebPages, JobPageShowsItsSites) {
  web::job_view v;
  v.user = user();
  v.job = evil_job();
  v.job["sites"] = "alpha,beta";
  auto html = web::job_page(v);
  EXPECT_TRUE(contains(html, "<p class=\"jobmeta\" id=\"sites\">Sites: alpha, beta</p>")) << html;
  EXPECT_TRUE(html.find("id=\"sites\"") < html.find("id=\"jobdetail\""));
  v.job["sites"] = "alpha";
  EXPECT_TRUE(contains(web::job_page(v), ">Sites: alpha</p>"));
  v.job["sites"] = evil;
  expect_escaped(web::job_page(v));
  // No sites (any site will do): no line.
  v.job.erase("sites");
  EXPECT_FALSE(contains(web::job_page(v), "Sites:"));
}

TEST(WebPages, AdminWorkersTableHasASiteColumn) {
  web::admin_view v;
  v.user = user();
  v.user.admin = true;
  job_record at_site;
  at_site["id"] = "node1-1";
  at_site["host"] = "node1";
  at_site["site"] = "alpha";
  at_site["pool"] = "p1";
  job_record anywhere;
  anywhere["id"] = "node2-1";
  anywhere["host"] = "node2";
  anywhere["pool"] = "p2";
  job_record evil_site;
  evil_site["id"] = "node3-1";
  evil_site["site"] = evil;
  v.workers = {at_site, anywhere, evil_site};
  auto html = web::admin_page(v);
  expect_escaped(html);
  EXPECT_TRUE(
      contains(html,
               "<th scope=\"col\">Worker</th><th scope=\"col\">Host</th><th scope=\"col\">Site</th><th "
               "scope=\"col\">Owner</th>"));
  EXPECT_TRUE(contains(html,
                       "<td data-label=\"Host\">node1</td><td data-label=\"Site\">alpha</td><td "
                       "data-label=\"Owner\"></td><td data-label=\"Pool\">p1</td>"));
  EXPECT_TRUE(contains(html,
                       "<td data-label=\"Host\">node2</td><td data-label=\"Site\"></td><td "
                       "data-label=\"Owner\"></td><td data-label=\"Pool\">p2</td>"))
      << "empty when the worker has none";
}

TEST(WebPages, HomeTableFilteredToAnArrayKeepsTheFilterEverywhere) {
  web::home_view v;
  v.user = user();
  v.array = 21;
  v.all = true;
  v.total = 3;
  for (auto [id, index] : {std::pair{"23", "30"}, std::pair{"22", "20"}, std::pair{"21", "10"}})
    v.jobs.push_back(array_job(id, index, "done"));
  auto html = web::home_page(v);
  expect_escaped(html);
  expect_forms_carry_csrf(html, user().csrf);
  EXPECT_TRUE(contains(html, "Jobs 1–3 of 3 in array 21</p>")) << element(html, "jobcount");
  EXPECT_TRUE(contains(html,
                       "<p class=\"arrayfilter\" id=\"arrayfilter\">The jobs of array <a "
                       "href=\"/jobs/21\">21</a> · <a href=\"/?view=all\">every job</a></p>"));
  // The filter form, the Active/All links and the sort headers keep it; Clear drops it.
  EXPECT_TRUE(contains(html, "<input type=\"hidden\" name=\"array\" value=\"21\">"));
  EXPECT_TRUE(contains(html, "href=\"/?array=21\"")) << "Active";
  EXPECT_TRUE(contains(html, "href=\"/?view=all&amp;array=21&amp;sort=id\"")) << "the ID header";
  EXPECT_TRUE(contains(html, "href=\"/?view=all\" class=\"clear\">Clear</a>"));
  // Acting on every job of the view acts on the array's.
  EXPECT_TRUE(contains(html, "name=\"query\" value=\"array=21\""));
  // No job made later is one of the array's: none is put into the table or counted as new.
  EXPECT_TRUE(contains(html, "data-live-insert=\"0\""));
  EXPECT_TRUE(contains(html, " data-array=\"21\""));
  EXPECT_TRUE(contains(std::string(web::find_asset("app.js")->body), "if (t.dataset.array) return;"));
  for (const char* id : {"21", "22", "23"}) EXPECT_TRUE(contains(html, "<tr data-job=\"" + std::string(id)));

  // Without the filter: none of it.
  v.array = 0;
  auto plain = web::home_page(v);
  EXPECT_FALSE(contains(plain, "arrayfilter"));
  EXPECT_FALSE(contains(plain, "array=21"));
  EXPECT_FALSE(contains(plain, "data-array="));
}
