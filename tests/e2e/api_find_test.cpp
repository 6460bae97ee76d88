// End-to-end tests of finding jobs with GET /api/jobs: filters (state, jobtype, text, time ranges,
// owner for admins), sorts (id, created, started, duration, state) and cursor paging, against the
// real binaries and a real redis-server (tests/support/service.hpp). Every expectation is computed
// from the jobs' own fields as GET /api/jobs/<id> shows them, not from assumed timings.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/job.hpp"
#include "core/redis.hpp"
#include "tests/e2e/api_support.hpp"

namespace descprod::test {
namespace {

using namespace api;
namespace json = boost::json;
using namespace std::chrono_literals;

double field_time(const json::object& j, const char* k) {
  auto it = j.find(k);
  return it == j.end() || !it->value().is_number() ? -1 : it->value().to_number<double>();
}

struct page {
  int status = 0;
  std::vector<json::object> jobs;
  std::optional<long long> total;
  std::string next;
  std::string body;
};

page get_page(service& s, const std::string& query, const std::string& token = "") {
  page p;
  auto r = s.call("GET", "/api/jobs?" + query, "", token);
  p.status = r.status;
  p.body = r.body;
  if (r.status != 200) return p;
  auto o = r.json().as_object();
  for (const auto& j : o.at("jobs").as_array()) p.jobs.push_back(j.as_object());
  if (o.contains("total")) p.total = o.at("total").as_int64();
  if (o.contains("next")) p.next = std::string(o.at("next").as_string());
  return p;
}

std::vector<long long> ids_of(const std::vector<json::object>& jobs) {
  std::vector<long long> out;
  for (const auto& j : jobs) out.push_back(num(j, "id"));
  return out;
}

// Every page of a query, following "next": the IDs in order (a runaway loop fails). `totals`: whether
// later pages say the total too (all but a filtered scan by ID, which stops once a page is full).
std::vector<long long> walk(service& s, const std::string& query, int limit, bool totals,
                            const std::string& token = "") {
  std::vector<long long> out;
  std::string cursor;
  for (int pages = 0; pages < 200; ++pages) {
    auto p = get_page(
        s, query + "&limit=" + std::to_string(limit) + (cursor.empty() ? "" : "&cursor=" + cursor), token);
    EXPECT_EQ(p.status, 200) << p.body;
    if (p.status != 200) break;
    EXPECT_LE(p.jobs.size(), static_cast<std::size_t>(limit));
    EXPECT_EQ(p.total.has_value(), cursor.empty() || totals) << query << " " << p.body;
    for (auto id : ids_of(p.jobs)) out.push_back(id);
    if (p.next.empty()) return out;
    cursor = p.next;
  }
  ADD_FAILURE() << "more than 200 pages for " << query;
  return out;
}

// Whether the list holds each ID once.
bool distinct(const std::vector<long long>& v) {
  return std::set<long long>(v.begin(), v.end()).size() == v.size();
}

TEST(ApiFind, FiltersSortsAndCursorPagesAgreeWithTheJobsFields) {
  service s(api_options(1));
  // Batch 1 runs to the end: six marker jobs (done) and three that fail.
  std::vector<long long> first;
  for (int i = 1; i <= 6; ++i)
    first.push_back(s.submit(R"({"jobtype":"marker","config":"alpha)" + std::to_string(i) + "\"}"));
  for (int i = 1; i <= 3; ++i)
    first.push_back(s.submit(R"({"jobtype":"fail","config":"Beta)" + std::to_string(i) + "\"}"));
  for (auto id : first) ASSERT_TRUE(s.wait_terminal(id, 60s)) << id << " " << s.state(id);
  // Batch 2: two long jobs hold the worker's two slots, so two more stay ready; one has a howfig.
  long long run1 = s.submit(R"({"jobtype":"mysleep","config":"60"})");
  long long run2 = s.submit(R"({"jobtype":"mysleep","config":"60"})");
  ASSERT_TRUE(wait_until([&] { return s.state(run1) == "running" && s.state(run2) == "running"; }, 30s));
  long long ready1 = s.submit(R"({"jobtype":"marker","config":"gamma1","howfig":"with-NEEDLE-inside"})");
  long long ready2 = s.submit(R"({"jobtype":"marker","config":"gamma2"})");
  long long bobs = s.submit(R"({"jobtype":"marker","config":"alpha1"})", s.bob_token);
  ASSERT_GT(bobs, 0);

  std::map<long long, json::object> all;
  for (auto id : first) all[id] = s.job(id);
  for (auto id : {run1, run2, ready1, ready2}) all[id] = s.job(id);
  ASSERT_EQ(all.size(), 13u);

  // Plain list: newest first, every one of alice's jobs, and the cursor walk gives the same.
  auto plain = get_page(s, "limit=1000");
  ASSERT_EQ(plain.status, 200) << plain.body;
  ASSERT_EQ(plain.total, 13);
  auto newest_first = ids_of(plain.jobs);
  EXPECT_TRUE(std::is_sorted(newest_first.rbegin(), newest_first.rend()));
  EXPECT_EQ(walk(s, "", 4, true), newest_first);
  auto oldest_first = ids_of(get_page(s, "limit=1000&sort=id").jobs);
  EXPECT_EQ(oldest_first, std::vector<long long>(newest_first.rbegin(), newest_first.rend()));
  EXPECT_EQ(walk(s, "sort=id", 5, true), oldest_first);

  // Filters, each checked against the jobs' fields.
  auto failed = get_page(s, "state=failed");
  EXPECT_EQ(failed.total, 3);
  for (const auto& j : failed.jobs) EXPECT_EQ(str(j, "state"), "failed");
  auto markers = get_page(s, "jobtype=marker");
  EXPECT_EQ(markers.total, 8);
  for (const auto& j : markers.jobs) EXPECT_EQ(str(j, "jobtype"), "marker");
  EXPECT_EQ(ids_of(get_page(s, "q=beta").jobs).size(), 3u);                         // config, case ignored
  EXPECT_EQ(ids_of(get_page(s, "q=needle").jobs), std::vector<long long>{ready1});  // howfig
  EXPECT_EQ(get_page(s, "q=it%20broke").total, 3);  // progress of the failed jobs
  EXPECT_EQ(get_page(s, "q=zzz-nothing").total, 0);

  // Time ranges: created_after is inclusive, created_before exclusive, on create_time.
  double split = field_time(all[run1], "create_time");
  ASSERT_GT(split, 0);
  char t[64];
  std::snprintf(t, sizeof t, "%.6f", split);
  auto later = ids_of(get_page(s, std::string("created_after=") + t).jobs);
  EXPECT_EQ(std::set<long long>(later.begin(), later.end()),
            (std::set<long long>{run1, run2, ready1, ready2}));
  EXPECT_EQ(get_page(s, std::string("created_before=") + t).total, 9);
  EXPECT_EQ(get_page(s, "created_after=2000-01-01T00:00:00Z&created_before=2000-01-02").total, 0);
  EXPECT_EQ(get_page(s, "created_after=2000-01-01").total, 13);
  // Started and ended ranges leave out the jobs without the time (ready ones; running for ended;
  // a job that ended before it could report its start has no start time).
  long long with_start = 0, with_stop = 0, with_both = 0;
  for (const auto& [id, j] : all) {
    with_start += field_time(j, "start_time") > 0;
    with_stop += field_time(j, "stop_time") > 0;
    with_both += field_time(j, "start_time") > 0 && field_time(j, "stop_time") > 0;
  }
  EXPECT_GE(with_start, 2);  // the running ones at least
  EXPECT_EQ(with_stop, 9);
  EXPECT_EQ(get_page(s, "started_after=0").total, with_start);
  EXPECT_EQ(get_page(s, "ended_after=0").total, with_stop);
  // Filters combine.
  EXPECT_EQ(get_page(s, "jobtype=marker&state=ready").total, 2);

  // Sorts: by start time (newest first; jobs never started last), duration, state.
  auto by_started = get_page(s, "sort=-started&limit=1000");
  ASSERT_EQ(by_started.jobs.size(), 13u);
  for (std::size_t i = 0; i + 1 < by_started.jobs.size(); ++i) {
    double a = field_time(by_started.jobs[i], "start_time"),
           b = field_time(by_started.jobs[i + 1], "start_time");
    if (a < 0) {
      EXPECT_LT(b, 0) << "a job without a start time came before one with it";
    } else if (b >= 0) {
      EXPECT_GE(a, b);
    }
  }
  EXPECT_EQ(walk(s, "sort=-started", 3, true), ids_of(by_started.jobs));
  auto by_duration = get_page(s, "sort=duration&ended_after=0&limit=1000");
  ASSERT_EQ(by_duration.jobs.size(), 9u);
  // Shortest first; the jobs without a start time (no duration) last.
  for (long long i = 0; i + 1 < with_both; ++i) {
    const auto &a = by_duration.jobs[static_cast<std::size_t>(i)],
               &b = by_duration.jobs[static_cast<std::size_t>(i + 1)];
    EXPECT_LE(field_time(a, "stop_time") - field_time(a, "start_time"),
              field_time(b, "stop_time") - field_time(b, "start_time") + 1e-6);
  }
  for (auto i = static_cast<std::size_t>(with_both); i < by_duration.jobs.size(); ++i)
    EXPECT_LT(field_time(by_duration.jobs[i], "start_time"), 0);
  auto by_state = get_page(s, "sort=state&limit=1000");
  ASSERT_EQ(by_state.jobs.size(), 13u);
  std::vector<int> order;
  for (const auto& j : by_state.jobs) order.push_back(static_cast<int>(*parse_job_state(str(j, "state"))));
  EXPECT_TRUE(std::is_sorted(order.begin(), order.end()));
  EXPECT_EQ(str(by_state.jobs.front(), "state"), "ready");
  EXPECT_EQ(walk(s, "sort=state", 2, true), ids_of(by_state.jobs));
  // A filtered walk by ID stops each page once it is full: total on the first page only.
  auto marker_ids = walk(s, "jobtype=marker", 3, false);
  EXPECT_EQ(marker_ids, ids_of(markers.jobs));
  EXPECT_TRUE(distinct(marker_ids));

  // Owners: a user sees only their own; an admin names a user, or everyone with *.
  EXPECT_EQ(get_page(s, "owner=bob").status, 403);
  EXPECT_EQ(get_page(s, "owner=alice").total, 13);
  const auto& admin = s.admin_token();
  EXPECT_EQ(ids_of(get_page(s, "owner=bob", admin).jobs), std::vector<long long>{bobs});
  auto everyone = walk(s, "owner=*", 4, false, admin);
  EXPECT_EQ(everyone.size(), 14u);
  EXPECT_TRUE(distinct(everyone));
  EXPECT_EQ(everyone.front(), bobs);
  EXPECT_EQ(get_page(s, "owner=*&q=alpha1", admin).total, 2);  // alice's and bob's
  EXPECT_EQ(get_page(s, "owner=*&sort=id&limit=1", admin).jobs.front().at("id").as_int64(), first.front());

  s.call("POST", path_of(run1, "/cancel"));
  s.call("POST", path_of(run2, "/cancel"));
}

// A user's scans are admitted two at a time: ten filtered searches at once over 50,000 jobs get
// 200 or 429 with Retry-After (never a 5xx), and once they are over a search is answered again.
TEST(ApiFind, ManySearchesAtOnceAreAdmittedTwoAtATimeAndTheRestToldToRetry) {
  service s(api_options(0));
  for (int chunk = 0; chunk < 5; ++chunk) ASSERT_EQ(submit_bulk(s, "marker", "x", 10000).size(), 10000u);
  std::vector<int> status(10, 0);
  std::vector<std::string> retry(10);
  std::vector<std::thread> threads;
  for (int i = 0; i < 10; ++i) {
    threads.emplace_back([&, i] {
      auto r = s.call("GET", "/api/jobs?state=failed&limit=5");
      status[i] = r.status;
      retry[i] = r.header("retry-after");
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0, told = 0;
  for (int i = 0; i < 10; ++i) {
    if (status[i] == 200) ++ok;
    if (status[i] == 429) {
      ++told;
      EXPECT_EQ(retry[i], "1");
    }
  }
  EXPECT_EQ(ok + told, 10) << "every answer is 200 or 429";
  EXPECT_GE(ok, 1);
  EXPECT_GE(told, 1) << "ten scans of 50,000 jobs at once were all admitted";
  auto after = s.call("GET", "/api/jobs?state=ready&limit=1");
  ASSERT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(after.json().as_object().at("total").as_int64(), 50000);
  EXPECT_EQ(s.call("GET", "/api/jobs?limit=1").status, 200);  // the plain list never waits
}

// The Active view (archived=0, the jobs page's default) is a range of the owner's Active index,
// not a scan: no "scanned" in the answer, and the same jobs, in the same order and pages, as the
// jobs' archive flags give. A store from before the index (no index, counts without their mark)
// is answered right while the gateway rebuilds it, and from the index afterwards.
TEST(ApiFind, TheActiveViewIsARangeOfAnIndexThatAStoreFromBeforeItGets) {
  service s(api_options(0));
  auto ids = submit_bulk(s, "marker", "act", 40);
  ASSERT_EQ(ids.size(), 40u);
  std::set<long long> archived;
  for (int i : {0, 7, 8, 21, 39}) {
    ASSERT_EQ(s.call("POST", path_of(ids[i], "/archive")).status, 200);
    archived.insert(ids[i]);
  }
  ASSERT_EQ(s.call("POST", path_of(ids[7], "/unarchive")).status, 200);
  archived.erase(ids[7]);
  std::vector<long long> want;  // newest first
  for (auto it = ids.rbegin(); it != ids.rend(); ++it)
    if (!archived.count(*it)) want.push_back(*it);
  auto check = [&](const char* when) {
    auto p = get_page(s, "archived=0&limit=1000");
    ASSERT_EQ(p.status, 200) << when << " " << p.body;
    EXPECT_EQ(p.total, static_cast<long long>(want.size())) << when;
    EXPECT_EQ(ids_of(p.jobs), want) << when;
    EXPECT_EQ(walk(s, "archived=0", 6, true), want) << when;
    auto old_first = walk(s, "archived=0&sort=id", 7, true);
    EXPECT_EQ(old_first, std::vector<long long>(want.rbegin(), want.rend())) << when;
    auto found = get_page(s, "archived=0&q=act2&limit=1000");  // act2, act20..act29 less act21
    EXPECT_EQ(found.total, 10) << when << " " << found.body;
    auto arch = ids_of(get_page(s, "archived=1&limit=1000").jobs);
    EXPECT_EQ(std::set<long long>(arch.begin(), arch.end()), archived) << when;
  };
  // Wait (bounded) until the gateway's first check of the counts has found them complete.
  ASSERT_TRUE(wait_until(
      [&] {
        return !get_page(s, "archived=0&limit=1").body.empty() &&
               get_page(s, "archived=0&limit=1").body.find("scanned") == std::string::npos;
      },
      20s))
      << "the Active view is still a scan: " << get_page(s, "archived=0&limit=1").body;
  check("from the index");
  EXPECT_EQ(get_page(s, "archived=0&limit=5").body.find("scanned"), std::string::npos);
  EXPECT_NE(get_page(s, "archived=1&limit=5").body.find("scanned"), std::string::npos)
      << "the archived view is still a scan";

  // A store from before the index, and a gateway started on it.
  redis_sync r(s.redis.endpoint());
  s.gateway->stop();
  r.exec({"DEL", "descprod:user:alice:active"});
  r.exec({"HDEL", "descprod:stats:jobs_by_state", "_derived"});
  s.start_gateway();
  check("while the index is rebuilt");
  ASSERT_TRUE(wait_until(
      [&] {
        return r.exec({"HEXISTS", "descprod:stats:jobs_by_state", "_derived"}).integer == 1;
      },
      20s));
  ASSERT_TRUE(wait_until(
      [&] { return get_page(s, "archived=0&limit=1").body.find("scanned") == std::string::npos; }, 20s));
  check("from the rebuilt index");
  EXPECT_EQ(r.exec({"ZCARD", "descprod:user:alice:active"}).integer, static_cast<long long>(want.size()));
}

// A parent's children page by cursor too, newest or oldest first, also after the job a cursor
// names was deleted.
TEST(ApiFind, ChildrenPageByCursorEvenWhenTheCursorsJobIsGone) {
  service s(api_options(0));
  long long parent = s.submit(R"({"jobtype":"marker","config":"p"})");
  std::vector<long long> kids;
  for (int i = 0; i < 5; ++i)
    kids.push_back(s.submit(R"({"jobtype":"marker","config":"k","parent":)" + std::to_string(parent) + "}"));
  std::string q = "parent=" + std::to_string(parent);
  EXPECT_EQ(walk(s, q, 2, true), std::vector<long long>(kids.rbegin(), kids.rend()));
  EXPECT_EQ(walk(s, q + "&sort=id", 2, true), kids);
  EXPECT_EQ(walk(s, q + "&state=ready", 2, false), std::vector<long long>(kids.rbegin(), kids.rend()));
  // The cursor names kids[3]; it is deleted before the next page is asked for.
  auto first = get_page(s, q + "&limit=2");
  ASSERT_EQ(first.next, "-id~~" + std::to_string(kids[3]));
  ASSERT_EQ(s.call("POST", path_of(kids[3], "/cancel")).status, 200);
  ASSERT_EQ(s.call("DELETE", path_of(kids[3])).status, 204);
  auto second = get_page(s, q + "&limit=2&cursor=" + first.next);
  EXPECT_EQ(ids_of(second.jobs), (std::vector<long long>{kids[2], kids[1]}));
  auto filtered = get_page(s, q + "&state=ready&limit=2&cursor=" + first.next);
  EXPECT_EQ(ids_of(filtered.jobs), (std::vector<long long>{kids[2], kids[1]}));
}

TEST(ApiFind, BadFindQueriesAre400WithAReason) {
  service s(api_options(0));
  long long id = s.submit(R"({"jobtype":"marker","config":"c"})");
  ASSERT_GT(id, 0);
  auto first = get_page(s, "limit=1&sort=-started");
  ASSERT_EQ(first.status, 200);
  const std::string other_sort_cursor = "-started~~" + std::to_string(id);
  struct bad {
    std::string query, detail;
  };
  std::vector<bad> cases = {
      {"sort=size", "sort must be one of id, created, started, duration, state"},
      {"sort=--id", "sort must be one of"},
      {"created_after=yesterday", "created_after must be epoch seconds or a UTC time YYYY-MM-DDTHH:MM:SSZ"},
      {"ended_before=2026-13-01", "ended_before must be"},
      {"started_after=2026-01-01T25:00:00Z", "started_after must be"},
      {"finished_after=1", "unknown query parameter 'finished_after'"},
      {"cursor=abc", "cursor must be a previous answer's"},
      {"cursor=-id~~0", "cursor must be"},
      {"cursor=-id~x~5", "cursor must be"},
      {"cursor=" + other_sort_cursor, "cursor is from a list sorted by '-started', not '-id'"},
      {"cursor=-id~~5&offset=2", "give cursor or offset, not both"},
      {"q=" + std::string(201, 'x'), "q must be at most 200 bytes"},
      {"owner=a%20b", "owner must be a user name or *"},
      {"owner=alice&parent=" + std::to_string(id), "give parent or owner, not both"},
  };
  for (const auto& c : cases) {
    auto r = s.call("GET", "/api/jobs?" + c.query);
    EXPECT_EQ(r.status, 400) << c.query << " " << r.body;
    EXPECT_NE(r.body.find(c.detail), std::string::npos) << c.query << " " << r.body;
  }
  EXPECT_EQ(s.call("GET", "/api/jobs?owner=*").status, 403);
}

}  // namespace
}  // namespace descprod::test
