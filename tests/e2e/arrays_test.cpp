// Job arrays end to end (docs/api.md, Arrays): real Redis, daemon, gateway and worker.
//  - "array": {from, to, step} makes one job per index, "{index}" replaced in config and howfig,
//    DESCPROD_ARRAY_INDEX and DESCPROD_ARRAY_ID in the application's environment;
//  - the array's ID (its first job's) filters GET /api/jobs, and its first job rolls the array up;
//  - one action on the whole array by its query (cancel, resubmit); with hold and after;
//  - a bad range, an index whose config breaks the app's pattern, or an array in a bulk request
//    is refused and creates nothing.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <vector>

#include "tests/e2e/api_support.hpp"

namespace descprod::test::api {
namespace {

namespace json = boost::json;

service_options array_options() {
  service_options o = api_options(1);
  o.apps =
      "  - name: arrayenv\n"
      "    command: [\"/bin/sh\", \"-c\", \"echo \\\"i=$DESCPROD_ARRAY_INDEX a=$DESCPROD_ARRAY_ID c=$0 h=$1\\\" > "
      "current-status.txt\"]\n";
  return o;
}

std::vector<long long> ids_of(const json::object& answer) {
  std::vector<long long> ids;
  for (const auto& v : answer.at("ids").as_array()) ids.push_back(v.as_int64());
  return ids;
}

long long total_of(service& s, const std::string& query) {
  auto r = s.call("GET", "/api/jobs?" + query);
  EXPECT_EQ(r.status, 200) << r.body;
  if (r.status != 200) return -1;
  auto j = r.json();
  return j.as_object().at("total").as_int64();
}

TEST(Arrays, OneJobPerIndexWithTheIndexInConfigHowfigAndEnvironment) {
  service s(array_options());
  auto r = s.call("POST", "/api/jobs",
                  R"({"jobtype":"arrayenv","config":"w{index}","howfig":"h{index}x",)"
                  R"("array":{"from":2,"to":8,"step":3}})");
  ASSERT_EQ(r.status, 201) << r.body;
  auto answer = r.json().as_object();
  auto ids = ids_of(answer);
  ASSERT_EQ(ids.size(), 3u);
  long long array = answer.at("array").as_int64();
  EXPECT_EQ(array, ids[0]) << "an array's ID is its first job's";
  EXPECT_EQ(answer.at("count").as_int64(), 3);
  const long long indexes[] = {2, 5, 8};
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ASSERT_TRUE(s.wait_terminal(ids[i], 30s)) << "job " << ids[i];
    auto j = s.job(ids[i]);
    std::string n = std::to_string(indexes[i]);
    EXPECT_EQ(str(j, "state"), "done") << json::serialize(j);
    EXPECT_EQ(str(j, "config"), "w" + n);
    EXPECT_EQ(str(j, "howfig"), "h" + n + "x");
    EXPECT_EQ(num(j, "array"), array);
    EXPECT_EQ(num(j, "array_index"), indexes[i]);
    EXPECT_EQ(str(j, "progress"),
              "Done. i=" + n + " a=" + std::to_string(array) + " c=w" + n + " h=h" + n + "x");
  }
  EXPECT_EQ(total_of(s, "array=" + std::to_string(array)), 3);
  EXPECT_EQ(total_of(s, "array=" + std::to_string(array) + "&state=done"), 3);
  auto head = s.job(array);
  ASSERT_TRUE(head.contains("array_jobs")) << json::serialize(head);
  EXPECT_EQ(head.at("array_jobs").as_object().at("total").as_int64(), 3);
  EXPECT_EQ(head.at("array_jobs").as_object().at("done").as_int64(), 3);
  EXPECT_EQ(s.call("GET", "/api/jobs?array=" + std::to_string(array), "", s.bob_token).status, 404)
      << "another user's array reads as none";
}

TEST(Arrays, TheWholeArrayIsCancelledOrResubmittedByItsQuery) {
  service s(array_options());
  long long gate = s.submit(R"({"jobtype":"mysleep","config":"0","hold":true})");
  auto r = s.call(
      "POST", "/api/jobs",
      R"({"jobtype":"arrayenv","config":"c{index}","array":5,"after":[)" + std::to_string(gate) + "]}");
  ASSERT_EQ(r.status, 201) << r.body;
  auto answer = r.json().as_object();
  long long array = answer.at("array").as_int64();
  EXPECT_EQ(answer.at("states").as_object().at("waiting").as_int64(), 5);
  auto ids = ids_of(answer);
  EXPECT_EQ(str(s.job(ids[4]), "config"), "c4") << "array: N means indexes 0..N-1";
  auto x = s.call("POST", "/api/jobs/actions",
                  R"({"action":"cancel","query":"array=)" + std::to_string(array) + "\"}");
  ASSERT_EQ(x.status, 200) << x.body;
  auto done = x.json().as_object().at("done").as_array();
  EXPECT_EQ(done.size(), 5u) << x.body;
  for (auto id : ids) EXPECT_EQ(s.state(id), "cancelled");
  auto again = s.call("POST", "/api/jobs/actions",
                      R"({"action":"resubmit","query":"array=)" + std::to_string(array) + "\"}");
  ASSERT_EQ(again.status, 200) << again.body;
  auto created = again.json().as_object().at("created").as_array();
  ASSERT_EQ(created.size(), 5u) << again.body;
  for (const auto& id : created) EXPECT_TRUE(s.wait_terminal(id.as_int64(), 30s));
  EXPECT_EQ(s.state(gate), "held") << "the array's dependency was not touched";
}

TEST(Arrays, BadArraysAreRefusedAndCreateNothing) {
  service s(array_options());
  auto count = [&] { return total_of(s, "limit=1"); };
  const auto before = count();
  struct bad {
    std::string path, body, says;
  };
  const std::vector<bad> cases = {
      {"/api/jobs", R"({"jobtype":"mysleep","config":"1","array":0})", "between 1 and 100000"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"1","array":100001})", "between 1 and 100000"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"1","array":{"from":5,"to":1}})", "must not be below"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"1","array":{"from":0,"to":10,"stride":2}})", "stride"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"1","array":"5"})", "must be a number of jobs"},
      // mysleep's pattern ^[0-9]{1,6}$: index 10 makes a 7-digit config.
      {"/api/jobs", R"({"jobtype":"mysleep","config":"{index}00000","array":11})", "array index 10: config"},
      {"/api/jobs/bulk", R"({"jobs":[{"jobtype":"mysleep","config":"1","array":3}]})",
       "is for POST /api/jobs"},
  };
  for (const auto& c : cases) {
    auto r = s.call("POST", c.path, c.body);
    EXPECT_EQ(r.status, 400) << c.body << " -> " << r.body;
    EXPECT_NE(r.body.find(c.says), std::string::npos) << c.body << " -> " << r.body;
  }
  EXPECT_EQ(count(), before) << "no refused request created a job";
}

}  // namespace
}  // namespace descprod::test::api
