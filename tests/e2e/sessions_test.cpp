// Session IDs (issue #16 item 7), as DESCprod kept them: every login and every API token is a
// session with a number from one counter; a job gets its creator's session, and a child its
// parent's (also when a job token creates it); descprod-get-job prints it.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <set>
#include <string>

#include "tests/e2e/api_support.hpp"

namespace descprod::test::api {
namespace {

TEST(Sessions, EachLoginAndTokenIsASessionAndChildrenInheritTheirParents) {
  service s(api_options(0));
  web_client first(s), second(s);
  approved_login(s, first, "carol", "carol-secret-1");
  ASSERT_EQ(second.login("carol", "carol-secret-1").status, 200);
  auto a = first.post("/api/jobs", R"({"jobtype":"mysleep","config":"1"})");
  auto b = second.post("/api/jobs", R"({"jobtype":"mysleep","config":"1"})");
  ASSERT_EQ(a.status, 201) << a.body;
  ASSERT_EQ(b.status, 201) << b.body;
  auto a_id = a.json().as_object().at("id").as_int64(), b_id = b.json().as_object().at("id").as_int64();
  auto a_session = num(s.job(a_id, s.admin_token()), "session");
  auto b_session = num(s.job(b_id, s.admin_token()), "session");
  EXPECT_GT(a_session, 0);
  EXPECT_GT(b_session, 0);
  EXPECT_NE(a_session, b_session) << "two logins, two sessions";
  // The same session for every job it creates, bulk included.
  auto more = first.post("/api/jobs/bulk", R"({"jobs":[{"jobtype":"mysleep","config":"2"}]})");
  ASSERT_EQ(more.status, 201) << more.body;
  auto more_id = more.json().as_object().at("ids").as_array().at(0).as_int64();
  EXPECT_EQ(num(s.job(more_id, s.admin_token()), "session"), a_session);

  // An API token is a session of its own.
  auto made = first.post("/api/tokens", R"({"label":"laptop"})");
  ASSERT_EQ(made.status, 201) << made.body;
  std::string token(made.json().as_object().at("token").as_string());
  long long by_token = s.submit(R"({"jobtype":"mysleep","config":"3"})", token);
  auto token_session = num(s.job(by_token, token), "session");
  EXPECT_GT(token_session, 0);
  std::set<long long> all{a_session, b_session, token_session};
  EXPECT_EQ(all.size(), 3u);

  // A child gets its parent's session: with a user token of another session, and with the job
  // token of its running parent.
  long long child =
      s.submit(R"({"jobtype":"mysleep","config":"4","parent":)" + std::to_string(a_id) + "}", token);
  EXPECT_EQ(num(s.job(child, token), "session"), a_session);
  auto claim = s.call("POST", path_of(by_token, "/claim"), R"({"host":"h1"})", token);
  ASSERT_EQ(claim.status, 200) << claim.body;
  std::string job_token(claim.json().as_object().at("token").as_string());
  long long grandchild =
      s.submit(R"({"jobtype":"mysleep","config":"5","parent":)" + std::to_string(by_token) + "}", job_token);
  EXPECT_EQ(num(s.job(grandchild, token), "session"), token_session);

  // descprod-admin's tokens are sessions too, and get-job shows the number as DESCprod did.
  auto out = s.run_admin({"token", "carol"});
  std::string admin_token = out.substr(out.rfind(' ') + 1);
  while (!admin_token.empty() && (admin_token.back() == '\n' || admin_token.back() == '\r'))
    admin_token.pop_back();
  long long by_admin_token = s.submit(R"({"jobtype":"mysleep","config":"6"})", admin_token);
  auto admin_session = num(s.job(by_admin_token, admin_token), "session");
  EXPECT_GT(admin_session, token_session);
}

}  // namespace
}  // namespace descprod::test::api
