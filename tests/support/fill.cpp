// Large data sets for the tests (fill.hpp).
#include "tests/support/fill.hpp"

#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <string>
#include <vector>

#include "core/store.hpp"
#include "tests/support/support.hpp"

namespace descprod::test {

void fill(const redis_endpoint& ep, long long jobs, long long done_jobs) {
  net::io_context ioc;
  redis_client redis(ioc.get_executor(), ep);
  run_async(ioc, redis.async_connect());
  store st(redis, "descprod:");
  run_async(ioc, st.async_load_scripts());
  const long long batch = 1000;
  for (long long made = 0; made < jobs; made += batch) {
    std::vector<new_job> nj;
    for (long long i = 0; i < batch && made + i < jobs; ++i) {
      new_job j;
      j.jobtype = "mysleep";
      j.config = "0";
      j.howfig = made + i < done_jobs ? "old" : "queued";
      nj.push_back(j);
    }
    auto r = run_async(ioc, st.async_create("admin", std::move(nj)), 120s);
    ASSERT_TRUE(r.ok) << r.reason;
  }
  for (long long from = 1; from <= done_jobs; from += batch) {
    std::vector<store::claim_request> claims;
    for (long long id = from; id < from + batch && id <= done_jobs; ++id)
      claims.push_back({id, "fill-w1", ""});
    auto leased = run_async(ioc, st.async_claim_many(claims, 3600, 0), 120s);
    std::vector<store::report> reports;
    for (std::size_t i = 0; i < leased.size(); ++i) {
      ASSERT_TRUE(leased[i].ok) << leased[i].reason;
      store::start_report s;
      s.id = claims[i].id;
      s.attempt = leased[i].attempt;
      s.worker = "fill-w1";
      s.host = "fillhost";
      s.rundir = "/tmp/out/jobs/job" + std::to_string(s.id);
      s.pid = 4242;
      store::finish_report f;
      f.id = s.id;
      f.attempt = s.attempt;
      f.worker = s.worker;
      f.target = job_state::done;
      f.return_status = 0;
      f.prefix = "Done.";
      f.message = "I'm awake now.";
      reports.push_back(s);
      reports.push_back(f);
    }
    auto applied = run_async(ioc, st.async_reports(std::move(reports)), 120s);
    for (const auto& a : applied) ASSERT_TRUE(a.ok) << a.reason << " " << a.state;
  }
}

long long sum_of_counts(redis_sync& r) {
  auto reply = r.exec({"HGETALL", "descprod:stats:jobs_by_state"});
  long long n = 0;
  for (std::size_t i = 0; i + 1 < reply.elements.size(); i += 2)
    if (reply.elements[i].str.rfind('_', 0) != 0) n += std::stoll(reply.elements[i + 1].str);  // not _derived
  return n;
}

}  // namespace descprod::test
