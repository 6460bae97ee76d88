// Unit tests of finding jobs (gateway/job_filter.hpp and parse_list_query in api.hpp): the query's
// parameters, which fields a scan reads, matching, the order of sorted answers and cursors. Pure
// functions, no Redis: HMGET replies are built by hand.
#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "gateway/api.hpp"
#include "gateway/job_filter.hpp"

namespace dg = descprod::gateway;
using descprod::redis_reply;

namespace {

// An HMGET reply: one element per value, nullopt for a nil (absent field).
redis_reply hmget(const std::vector<std::optional<std::string>>& values) {
  redis_reply r;
  r.type = redis_reply::kind::array;
  for (const auto& v : values) {
    redis_reply e;
    if (v) {
      e.type = redis_reply::kind::string;
      e.str = *v;
    } else {
      e.type = redis_reply::kind::nil;
    }
    r.elements.push_back(e);
  }
  return r;
}

dg::list_query parsed(const std::string& text) {
  dg::list_query q;
  auto e = dg::parse_list_query(text, q);
  EXPECT_FALSE(e) << text << ": " << (e ? e->detail : "");
  return q;
}

}  // namespace

TEST(GatewayFind, QueryParametersParse) {
  auto q =
      parsed("owner=*&q=Needle&created_after=2026-12-06T10:00:00Z&created_before=1800000000.5&sort=-started");
  EXPECT_EQ(q.owner, "*");
  EXPECT_EQ(q.text, "Needle");
  ASSERT_TRUE(q.created.after && q.created.before);
  EXPECT_DOUBLE_EQ(*q.created.after, 1796551200.0);  // 2026-12-06 10:00:00 UTC
  EXPECT_DOUBLE_EQ(*q.created.before, 1800000000.5);
  EXPECT_EQ(q.sort, dg::list_sort::started);
  EXPECT_TRUE(q.descending);
  EXPECT_TRUE(q.filtered());
  EXPECT_EQ(dg::sort_text(q), "-started");
  EXPECT_DOUBLE_EQ(*parsed("ended_after=2026-12-06").ended.after, 1796515200.0);  // a date: its midnight
  auto asc = parsed("sort=duration");
  EXPECT_FALSE(asc.descending);
  EXPECT_FALSE(asc.filtered());  // a sort alone filters nothing
  EXPECT_EQ(parsed("").sort, dg::list_sort::id);
  EXPECT_TRUE(parsed("").descending);
}

TEST(GatewayFind, CursorsRoundTripAndBelongToOneSort) {
  auto q = parsed("sort=started");
  dg::list_cursor c;
  c.value = 1796551200.25;
  c.id = 42;
  auto text = dg::cursor_text(q, c);
  EXPECT_EQ(text, "started~1796551200.25~42");
  auto again = parsed("sort=started&cursor=" + text);
  ASSERT_TRUE(again.cursor);
  EXPECT_EQ(again.cursor->id, 42);
  EXPECT_DOUBLE_EQ(*again.cursor->value, 1796551200.25);
  c.value.reset();
  EXPECT_EQ(dg::cursor_text(q, c), "started~~42");  // a job without the value
  EXPECT_FALSE(parsed("sort=started&cursor=started~~42").cursor->value);
  dg::list_query bad;
  EXPECT_NE(dg::parse_list_query("cursor=started~~42", bad)->detail.find("sorted by 'started', not '-id'"),
            std::string::npos);
  EXPECT_TRUE(dg::parse_list_query("cursor=-id~nan~4", bad));
  EXPECT_TRUE(dg::parse_list_query("cursor=-id~~", bad));
  EXPECT_TRUE(dg::parse_list_query("cursor=-id~~4~5", bad));
}

TEST(GatewayFind, AScanReadsOnlyTheFieldsItNeedsStateFirst) {
  EXPECT_EQ(dg::field_plan(parsed("")).names(), std::vector<std::string>{"state"});
  EXPECT_EQ(dg::field_plan(parsed("state=done&archived=0")).names(),
            (std::vector<std::string>{"state", "archive"}));
  EXPECT_EQ(dg::field_plan(parsed("q=x&sort=duration")).names(),
            (std::vector<std::string>{"state", "config", "howfig", "progress", "start_time", "stop_time"}));
  EXPECT_EQ(dg::field_plan(parsed("started_after=1&sort=started")).names(),
            (std::vector<std::string>{"state", "start_time"}));
}

// A job's entry in its owner's find index reads as the HMGET of the plan's fields: empty fields
// are nil, the progress keeps separators of its own, and a short entry leaves the rest nil.
TEST(GatewayFind, AFindIndexEntryReadsAsTheJobsFields) {
  auto q = parsed("state=failed&q=it%20broke&sort=duration");
  dg::field_plan plan(q);
  ASSERT_EQ(plan.names(),
            (std::vector<std::string>{"state", "config", "howfig", "progress", "start_time", "stop_time"}));
  auto r = plan.from_find(
      "failed\x1f"
      "fail\x1f"
      "0\x1f"
      "100.5\x1f"
      "101\x1f"
      "103\x1f"
      "cfg\x1f"
      "\x1f"
      "Failed. it\x1f"
      "broke");
  ASSERT_EQ(r.elements.size(), 6u);
  EXPECT_EQ(r.elements[0].str, "failed");
  EXPECT_EQ(r.elements[1].str, "cfg");
  EXPECT_TRUE(r.elements[2].is_nil()) << "an empty howfig";
  EXPECT_EQ(r.elements[3].str,
            "Failed. it\x1f"
            "broke");
  EXPECT_EQ(r.elements[4].str, "101");
  EXPECT_EQ(r.elements[5].str, "103");
  EXPECT_FALSE(plan.match(9, r)) << "the text spans a separator";
  auto m = plan.match(9, plan.from_find("failed\x1f"
                                        "fail\x1f"
                                        "0\x1f"
                                        "1\x1f"
                                        "101\x1f"
                                        "103\x1f"
                                        "x\x1f"
                                        "\x1f"
                                        "it BROKE"));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->key, 2.0) << "the duration";
  auto cut = plan.from_find(
      "ready\x1f"
      "fail");
  EXPECT_EQ(cut.elements[0].str, "ready");
  for (std::size_t i = 1; i < cut.elements.size(); ++i) EXPECT_TRUE(cut.elements[i].is_nil()) << i;
  EXPECT_TRUE(plan.from_find("").elements[0].is_nil());
  EXPECT_FALSE(plan.match(9, plan.from_find(""))) << "an empty entry is no job";
}

TEST(GatewayFind, MatchingChecksEveryFilterAndTheTextIgnoresCase) {
  auto q = parsed("state=failed&jobtype=fail&q=BROKE&started_after=100&started_before=200");
  dg::field_plan plan(q);
  ASSERT_EQ(plan.names(),
            (std::vector<std::string>{"state", "jobtype", "config", "howfig", "progress", "start_time"}));
  auto m = plan.match(7, hmget({"failed", "fail", "c", std::nullopt, "Failed. it broke", "150"}));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->id, 7);
  EXPECT_FALSE(plan.match(7, hmget({"done", "fail", "c", "", "it broke", "150"})));      // state
  EXPECT_FALSE(plan.match(7, hmget({"failed", "marker", "c", "", "it broke", "150"})));  // jobtype
  EXPECT_FALSE(plan.match(7, hmget({"failed", "fail", "c", "", "fine", "150"})));        // text
  EXPECT_FALSE(plan.match(7, hmget({"failed", "fail", "c", "", "it broke", "200"})));    // before: exclusive
  EXPECT_TRUE(plan.match(7, hmget({"failed", "fail", "c", "", "it broke", "100"})));     // after: inclusive
  EXPECT_FALSE(plan.match(7, hmget({"failed", "fail", "c", "", "it broke", std::nullopt})));  // no start
  EXPECT_FALSE(plan.match(7, hmget({std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt,
                                    std::nullopt})));  // deleted
  EXPECT_FALSE(plan.match(7, hmget({"failed"})));      // a short reply is no match
  EXPECT_TRUE(dg::contains_ignoring_case("pmbs-30-auto-CPU,ptenv", "cpu,PT"));
  EXPECT_FALSE(dg::contains_ignoring_case("abc", "abcd"));
}

TEST(GatewayFind, SortedAnswersPutJobsWithoutTheValueLastAndCursorsContinueAfterThem) {
  auto q = parsed("sort=-duration");
  dg::field_plan plan(q);
  std::vector<dg::field_plan::scanned> v;
  v.push_back(*plan.match(1, hmget({"done", "10", "15"})));             // 5 s
  v.push_back(*plan.match(2, hmget({"running", "10", std::nullopt})));  // none yet
  v.push_back(*plan.match(3, hmget({"done", "10", "30"})));             // 20 s
  v.push_back(*plan.match(4, hmget({"done", "20", "25"})));             // 5 s, a tie with job 1
  v.push_back(*plan.match(5, hmget({"ready", std::nullopt, std::nullopt})));
  std::sort(v.begin(), v.end(), [&](const auto& a, const auto& b) { return dg::sorts_before(q, a, b); });
  std::vector<long long> order;
  for (const auto& j : v) order.push_back(j.id);
  EXPECT_EQ(order, (std::vector<long long>{3, 4, 1, 5, 2}));  // ties and no-value jobs by ID, newest first
  // A cursor at job 4 (5 s) continues with 1, 5, 2.
  auto next = parsed("sort=-duration&cursor=-duration~5~4");
  std::vector<long long> rest;
  for (const auto& j : v)
    if (dg::after_cursor(next, j)) rest.push_back(j.id);
  EXPECT_EQ(rest, (std::vector<long long>{1, 5, 2}));
  auto in_no_value = parsed("sort=-duration&cursor=-duration~~5");
  rest.clear();
  for (const auto& j : v)
    if (dg::after_cursor(in_no_value, j)) rest.push_back(j.id);
  EXPECT_EQ(rest, (std::vector<long long>{2}));
  // By state: the lifecycle order (ready first).
  auto st = parsed("sort=state");
  dg::field_plan sp(st);
  EXPECT_LT(*sp.match(1, hmget({"ready"}))->key, *sp.match(2, hmget({"running"}))->key);
  EXPECT_LT(*sp.match(2, hmget({"running"}))->key, *sp.match(3, hmget({"failed"}))->key);
}
