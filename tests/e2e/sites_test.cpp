// Sites end to end (docs/operators.md, Sites): real Redis, daemon, gateway and two workers at two
// "sites" of this machine (descprod-worker --site alpha / --site beta), plus one without a site.
//  - a job that asks for sites runs only on a worker of one of them; a job that asks for none runs
//    anywhere;
//  - a backlog for a site with no worker (300 jobs for "gamma", queued first) neither runs nor
//    holds back the other sites' jobs;
//  - a bad site list is refused.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/api_support.hpp"

namespace descprod::test::api {
namespace {

namespace json = boost::json;

std::vector<long long> bulk(service& s, const std::string& job, int n) {
  std::string body = R"({"jobs":[)";
  for (int i = 0; i < n; ++i) body += std::string(i ? "," : "") + job;
  body += "]}";
  auto r = s.call("POST", "/api/jobs/bulk", body);
  EXPECT_EQ(r.status, 201) << r.body;
  std::vector<long long> ids;
  if (r.status != 201) return ids;
  auto answer = r.json();
  for (const auto& v : answer.as_object().at("ids").as_array()) ids.push_back(v.as_int64());
  return ids;
}

TEST(Sites, JobsRunOnlyAtTheSitesTheyAskForAndABacklogElsewhereHoldsNothingBack) {
  service_options o = api_options(0);
  o.slots = 2;
  o.gateway_extra = "  sites: [alpha, beta, gamma]\n";
  service s(o);
  // A backlog for a site no worker is at, queued before everything else.
  auto gamma = bulk(s, R"({"jobtype":"mysleep","config":"0","sites":["gamma"]})", 300);
  auto alpha = bulk(s, R"({"jobtype":"mysleep","config":"0","sites":["alpha"]})", 6);
  auto beta = bulk(s, R"({"jobtype":"mysleep","config":"0","sites":["beta"]})", 6);
  auto either = bulk(s, R"({"jobtype":"mysleep","config":"0","sites":["beta","alpha"]})", 4);
  auto any = bulk(s, R"({"jobtype":"mysleep","config":"0"})", 4);
  // Released by its dependency (the daemon's release path), it keeps its site.
  long long after = s.submit(R"({"jobtype":"mysleep","config":"0","sites":["beta"],"after":[)" +
                             std::to_string(alpha.back()) + "]}");
  auto job = s.job(either.front());
  ASSERT_TRUE(job.at("sites").is_array()) << json::serialize(job);
  EXPECT_EQ(json::serialize(job.at("sites")), R"(["alpha","beta"])") << "kept sorted";
  int wa = s.add_worker(0, {"--site", "alpha"});
  int wb = s.add_worker(0, {"--site", "beta"});
  int wn = s.add_worker(0);
  const std::map<int, std::string> worker_of = {
      {wa, "w" + std::to_string(wa)}, {wb, "w" + std::to_string(wb)}, {wn, "w" + std::to_string(wn)}};
  auto ran_on = [&](long long id) {
    EXPECT_TRUE(s.wait_terminal(id, 60s)) << "job " << id;
    auto j = s.job(id);
    EXPECT_EQ(str(j, "state"), "done") << json::serialize(j);
    return str(j, "worker");
  };
  for (auto id : alpha) EXPECT_EQ(ran_on(id), worker_of.at(wa)) << "job " << id;
  for (auto id : beta) EXPECT_EQ(ran_on(id), worker_of.at(wb)) << "job " << id;
  for (auto id : either) {
    auto w = ran_on(id);
    EXPECT_TRUE(w == worker_of.at(wa) || w == worker_of.at(wb)) << "job " << id << " on " << w;
  }
  for (auto id : any) ran_on(id);
  EXPECT_EQ(ran_on(after), worker_of.at(wb));
  // Nothing ran the backlog: no worker is at gamma.
  EXPECT_EQ(s.state(gamma.front()), "ready");
  EXPECT_EQ(s.state(gamma.back()), "ready");
  auto ready = s.call("GET", "/api/jobs?state=ready&limit=1");
  EXPECT_EQ(ready.json().as_object().at("total").as_int64(), 300);
  // The worker records say where each worker is.
  // (written with the daemon's next worker records: waited for, at most 10 s)
  std::string overview;
  for (int i = 0; i < 100 && overview.find("\"site\":\"alpha\"") == std::string::npos; ++i) {
    overview = s.call("GET", "/api/admin/overview", "", s.admin_token()).body;
    if (overview.find("\"site\":\"alpha\"") == std::string::npos) std::this_thread::sleep_for(100ms);
  }
  EXPECT_NE(overview.find("\"site\":\"alpha\""), std::string::npos) << overview;
  EXPECT_NE(overview.find("\"site\":\"beta\""), std::string::npos) << overview;
}

// Every path that puts a job on the daemon's queue carries its sites: a held job released by its
// owner (the gateway's release path) runs only at its site, though a worker elsewhere is idle.
TEST(Sites, AReleasedHeldJobKeepsItsSite) {
  service_options o = api_options(0);
  o.gateway_extra = "  sites: [alpha, beta]\n";
  service s(o);
  int wn = s.add_worker(0);  // no site: may run only jobs that ask for none
  long long held = s.submit(R"({"jobtype":"mysleep","config":"0","sites":["alpha"],"hold":true})");
  long long any = s.submit(R"({"jobtype":"mysleep","config":"0","hold":true})");
  for (long long id : {held, any}) {
    auto r = s.call("POST", "/api/jobs/" + std::to_string(id) + "/release");
    EXPECT_EQ(r.status, 200) << r.body;
  }
  ASSERT_TRUE(s.wait_terminal(any, 30s));
  EXPECT_EQ(str(s.job(any), "worker"), "w" + std::to_string(wn));
  // The worker without a site has been idle since; the alpha job is still waiting for alpha.
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(s.state(held), "ready") << json::serialize(s.job(held));
  int wa = s.add_worker(0, {"--site", "alpha"});
  ASSERT_TRUE(s.wait_terminal(held, 30s));
  EXPECT_EQ(str(s.job(held), "worker"), "w" + std::to_string(wa));
}

TEST(Sites, BadSiteListsAreRefused) {
  service_options o = api_options(0);
  o.gateway_extra = "  sites: [alpha, beta]\n";
  service s(o);
  // Only the service's sites (gateway.sites): a closed list keeps the daemon's lanes few.
  auto unknown =
      s.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":"0","sites":["alpha","delta"]})");
  EXPECT_EQ(unknown.status, 400) << unknown.body;
  EXPECT_NE(unknown.body.find("site 'delta' is not one of this service's sites (alpha, beta)"),
            std::string::npos)
      << unknown.body;
  auto in_bulk =
      s.call("POST", "/api/jobs/bulk", R"({"jobs":[{"jobtype":"mysleep","config":"0","sites":["x1"]}]})");
  EXPECT_EQ(in_bulk.status, 400) << in_bulk.body;
  EXPECT_NE(in_bulk.body.find("jobs[0]: site 'x1'"), std::string::npos) << in_bulk.body;
  for (const char* bad :
       {R"("sites":[])", R"("sites":"alpha")", R"("sites":["Alpha"])", R"("sites":["a b"])", R"("sites":[1])",
        R"("sites":["a","b","c","d","e","f","g","h","i","j","k","l","m","n","o","p","q"])"}) {
    auto r = s.call("POST", "/api/jobs", std::string(R"({"jobtype":"mysleep","config":"0",)") + bad + "}");
    EXPECT_EQ(r.status, 400) << bad << " -> " << r.body;
    EXPECT_NE(r.body.find("sites"), std::string::npos) << r.body;
  }
}

}  // namespace
}  // namespace descprod::test::api
