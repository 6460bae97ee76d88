// End-to-end tests of acting on many jobs (POST /api/jobs/actions) and of resubmitting one (POST
// /api/jobs/<id>/resubmit), against the real binaries and a real redis-server.
#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "tests/e2e/api_support.hpp"

namespace descprod::test {
namespace {

using namespace api;
namespace json = boost::json;
using namespace std::chrono_literals;

std::vector<long long> ints(const json::object& o, const char* k) {
  std::vector<long long> out;
  if (auto it = o.find(k); it != o.end() && it->value().is_array())
    for (const auto& v : it->value().as_array()) out.push_back(v.as_int64());
  return out;
}

TEST(ApiActions, ResubmitMakesALikeJobOnlyOfAnEndedJobOfOnesOwn) {
  service s(api_options(1));
  long long parent = s.submit(R"({"jobtype":"marker","config":"p"})");
  long long id = s.submit(R"({"jobtype":"marker","config":"c7","howfig":"h-1","priority":5,"parent":)" +
                          std::to_string(parent) + "}");
  ASSERT_TRUE(s.wait_terminal(id, 60s));
  auto r = s.call("POST", path_of(id, "/resubmit"));
  ASSERT_EQ(r.status, 201) << r.body;
  auto j = r.json().as_object();
  long long again = num(j, "id");
  EXPECT_GT(again, id);
  EXPECT_EQ(num(j, "resubmitted_from"), id);
  EXPECT_EQ(str(j, "jobtype"), "marker");
  EXPECT_EQ(str(j, "config"), "c7");
  EXPECT_EQ(str(j, "howfig"), "h-1");
  EXPECT_EQ(num(j, "priority"), 5);
  EXPECT_EQ(num(j, "parent"), parent);
  ASSERT_TRUE(s.wait_terminal(again, 60s));
  EXPECT_EQ(s.state(again), "done");
  EXPECT_EQ(s.marker(again), "1\n") << "the new job ran once, as attempt 1";

  long long running = s.submit(R"({"jobtype":"mysleep","config":"60"})");
  ASSERT_TRUE(wait_until([&] { return s.state(running) == "running"; }, 30s));
  auto busy = s.call("POST", path_of(running, "/resubmit"));
  EXPECT_EQ(busy.status, 409) << busy.body;
  EXPECT_NE(busy.body.find("only an ended job can be resubmitted"), std::string::npos) << busy.body;
  EXPECT_EQ(s.call("POST", path_of(id, "/resubmit"), "", s.bob_token).status, 404);  // not bob's
  auto by_admin = s.call("POST", path_of(id, "/resubmit"), "", s.admin_token());
  EXPECT_EQ(by_admin.status, 403) << by_admin.body;
  EXPECT_EQ(s.call("POST", path_of(999999, "/resubmit")).status, 404);
  s.call("POST", path_of(running, "/cancel"));
}

TEST(ApiActions, OneActionOnManyJobsByIdsOrByQuerySaysWhatFailed) {
  service s(api_options(0));  // no worker: the jobs stay ready
  std::vector<long long> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(s.submit(R"({"jobtype":"marker","config":"batch)" + std::to_string(i) + "\"}"));
  long long other = s.submit(R"({"jobtype":"marker","config":"keep"})");
  long long bobs = s.submit(R"({"jobtype":"marker","config":"batch9"})", s.bob_token);

  // Cancel three by ID, one of them bob's (not found for alice) and one twice (counted once).
  std::string body = R"({"action":"cancel","ids":[)" + std::to_string(ids[0]) + "," + std::to_string(ids[1]) +
                     "," + std::to_string(bobs) + "," + std::to_string(ids[0]) + "]}";
  auto r = s.call("POST", "/api/jobs/actions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = r.json().as_object();
  EXPECT_EQ(ints(j, "done"), (std::vector<long long>{ids[0], ids[1]}));
  ASSERT_EQ(j.at("failed").as_array().size(), 1u);
  auto f = j.at("failed").as_array()[0].as_object();
  EXPECT_EQ(num(f, "id"), bobs);
  EXPECT_EQ(str(f, "error"), "not_found");
  EXPECT_EQ(s.state(ids[0]), "cancelled");
  EXPECT_EQ(s.state(bobs, s.bob_token), "ready");

  // Cancel every ready job matching a query: the three left of the batch, not "keep".
  r = s.call("POST", "/api/jobs/actions", R"({"action":"cancel","query":"state=ready&q=batch"})");
  ASSERT_EQ(r.status, 200) << r.body;
  j = r.json().as_object();
  auto done = ints(j, "done");
  EXPECT_EQ(std::set<long long>(done.begin(), done.end()), (std::set<long long>{ids[2], ids[3], ids[4]}));
  EXPECT_TRUE(j.at("failed").as_array().empty());
  EXPECT_EQ(s.state(other), "ready");

  // Resubmit all five (now cancelled): five new jobs; then delete the old ones by query.
  r = s.call("POST", "/api/jobs/actions", R"({"action":"resubmit","query":"state=cancelled"})");
  ASSERT_EQ(r.status, 200) << r.body;
  j = r.json().as_object();
  auto created = ints(j, "created");
  EXPECT_EQ(created.size(), 5u);
  for (auto c : created) EXPECT_EQ(s.state(c), "ready");
  r = s.call("POST", "/api/jobs/actions", R"({"action":"delete","query":"state=cancelled"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(ints(r.json().as_object(), "done").size(), 5u);
  EXPECT_EQ(s.call("GET", path_of(ids[0])).status, 404);
  // Deleting an active job fails, with the reason.
  r = s.call("POST", "/api/jobs/actions", R"({"action":"delete","ids":[)" + std::to_string(other) + "]}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(ints(r.json().as_object(), "done").empty());
  EXPECT_EQ(str(r.json().as_object().at("failed").as_array()[0].as_object(), "error"), "conflict");

  // Bad requests: a 400 with the reason, nothing done.
  std::string many = R"({"action":"archive","ids":[)";
  for (int i = 1; i <= 1001; ++i) many += (i > 1 ? "," : "") + std::to_string(i);
  many += "]}";
  struct bad {
    std::string body, detail;
  };
  for (const auto& b : std::vector<bad>{
           {R"({"action":"explode","ids":[1]})",
            "is not one of cancel, release, archive, unarchive, delete, resubmit"},
           {R"({"action":"archive"})", "give either 'ids'"},
           {R"({"action":"archive","ids":[1],"query":"state=ready"})", "give either 'ids'"},
           {R"({"action":"archive","ids":[]})", "1 to 1000 job IDs"},
           {many, "1 to 1000 job IDs"},
           {R"({"action":"archive","ids":["1"]})", "positive integers"},
           {R"({"action":"archive","query":"state=nope"})", "query: unknown state"},
           {R"({"action":"archive","query":"state=ready&limit=5"})", "limit, offset and cursor do not apply"},
           {R"({"action":"archive","ids":[1],"extra":1})", "unknown field 'extra'"},
       }) {
    auto res = s.call("POST", "/api/jobs/actions", b.body);
    EXPECT_EQ(res.status, 400) << b.body << " " << res.body;
    EXPECT_NE(res.body.find(b.detail), std::string::npos) << b.body << " " << res.body;
  }
  EXPECT_EQ(s.state(other), "ready");
}

}  // namespace
}  // namespace descprod::test
