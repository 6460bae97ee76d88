// The daemon's stats sampler (daemon/stats_sampler.hpp) against a real redis-server: each sample
// holds the jobs that ended since the previous one (not totals), and the gauges of the moment; the
// outbox counts finished jobs by outcome; while Redis is away nothing is written and the counts
// go into the first sample after; the stream is trimmed; the timer loop samples on its own.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "core/redis.hpp"
#include "core/store.hpp"
#include "daemon/lease_table.hpp"
#include "daemon/outbox.hpp"
#include "daemon/stats_sampler.hpp"
#include "daemon/worker_table.hpp"
#include "tests/support/support.hpp"

namespace descprod {
namespace {

using namespace std::chrono_literals;
using test::run_async;
using sample_fields = std::map<std::string, std::string>;

class StatsSampler : public ::testing::Test {
 protected:
  static descprod_config config(const test::redis_server& server) {
    descprod_config c;
    c.redis.endpoint = server.endpoint();
    c.redis.prefix = "sampler:";
    c.daemon.lease_timeout = 30s;
    c.daemon.stats_interval = 1s;
    return c;
  }
  void SetUp() override {
    ctx.redis_failed = [this](const std::exception&) { ctx.redis_refusing = true; };
  }
  void TearDown() override {
    ctx.stopping = true;
    out.wake();
    ctx.redis.close();
    ioc.restart();
    ioc.run_for(200ms);
  }
  void connect() {
    run_async(ioc, ctx.redis.async_connect());
    ctx.redis_refusing = false;
  }
  // Every sample in the stream, oldest first, as field → value.
  std::vector<sample_fields> samples() {
    auto r = run_async(ioc, ctx.redis.async_exec(redis_cmd("XRANGE", ctx.k.stats_samples(), "-", "+")));
    std::vector<sample_fields> out;
    for (const auto& e : r.elements) {
      sample_fields f;
      const auto& kv = e.elements.at(1).elements;
      for (std::size_t i = 0; i + 1 < kv.size(); i += 2) f[kv[i].str] = kv[i + 1].str;
      out.push_back(std::move(f));
    }
    return out;
  }
  // The samples once there are at least `n` (the writes are detached), at most 5 s.
  std::vector<sample_fields> wait_samples(std::size_t n) {
    std::vector<sample_fields> s;
    for (int i = 0; i < 100; ++i) {
      s = samples();
      if (s.size() >= n) break;
      ioc.run_for(50ms);
    }
    return s;
  }
  job_id leased_job() {
    new_job j;
    j.jobtype = "mysleep";
    j.config = "1";
    std::vector<new_job> jobs{j};
    auto r = run_async(ioc, ctx.st.async_create("alice", std::move(jobs)));
    EXPECT_TRUE(r.ok);
    job_id id = r.ids.at(0);
    auto l = run_async(ioc, ctx.st.async_lease(id, "w1", 30));
    EXPECT_TRUE(l.ok) << refusal_reason(l);
    attempts[id] = l.attempt;
    return id;
  }
  void finish(job_id id, int rc) {
    pending_write pw{pending_write::kind::report};
    pw.worker = "w1";
    pw.command = "finished";
    pw.body = {{"job", id}, {"attempt", attempts[id]}, {"rc", rc}, {"signal", 0}, {"timed_out", false}};
    out.submit(std::move(pw));
  }

  test::redis_server server;
  net::io_context ioc;
  daemon_context ctx{ioc, config(server), app_registry{}};
  worker_table workers;
  outbox out{ctx, workers, [](job_id, int, const std::string&, const std::string&) {}};
  std::map<job_id, long long> attempts;
  stats_gauges gauges_now;
  stats_sampler sampler{ctx, [this] { return gauges_now; }};
};

TEST_F(StatsSampler, EachSampleHoldsTheJobsEndedSinceThePreviousOneAndTheGaugesNow) {
  connect();
  auto t0 = clock_type::now();
  ctx.stats.jobs_done = 3;
  ctx.stats.jobs_failed = 1;
  ctx.stats.jobs_cancelled = 2;
  gauges_now = {7, 4, 2, 8, 3};
  ASSERT_TRUE(sampler.sample(t0 + 10s));
  ctx.stats.jobs_done = 5;  // two more done, nothing else
  gauges_now = {1, 2, 2, 8, 2};
  ASSERT_TRUE(sampler.sample(t0 + 20s));
  auto s = wait_samples(2);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0]["done"], "3");
  EXPECT_EQ(s[0]["failed"], "1");
  EXPECT_EQ(s[0]["cancelled"], "2");
  EXPECT_EQ(s[0]["queue"], "7");
  EXPECT_EQ(s[0]["running"], "4");
  EXPECT_EQ(s[0]["workers"], "2");
  EXPECT_EQ(s[0]["slots"], "8");
  EXPECT_EQ(s[0]["busy"], "3");
  EXPECT_EQ(s[0]["period_s"], "1");
  EXPECT_EQ(s[1]["done"], "2") << "per interval, not a total";
  EXPECT_EQ(s[1]["failed"], "0");
  EXPECT_EQ(s[1]["cancelled"], "0");
  EXPECT_EQ(s[1]["queue"], "1");
  EXPECT_EQ(s[1]["running"], "2");
  EXPECT_EQ(s[1]["interval_s"], "10.000");
}

TEST_F(StatsSampler, TheOutboxCountsFinishedJobsByOutcome) {
  connect();
  job_id ok = leased_job(), bad = leased_job(), worse = leased_job();
  finish(ok, 0);
  finish(bad, 3);
  finish(worse, 124);  // timeout: a failure too
  ctx.spawn(out.run(), "outbox");
  ASSERT_TRUE(run_async(ioc, out.drain(clock_type::now() + 10s)));
  EXPECT_EQ(ctx.stats.jobs_done, 1u);
  EXPECT_EQ(ctx.stats.jobs_failed, 2u);
  EXPECT_EQ(ctx.stats.jobs_cancelled, 0u);
  ASSERT_TRUE(sampler.sample(clock_type::now()));
  auto s = wait_samples(1);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0]["done"], "1");
  EXPECT_EQ(s[0]["failed"], "2");
}

TEST_F(StatsSampler, WhileRedisIsAwayTheCountsWaitForTheNextSample) {
  // Not connected: nothing is written and nothing is forgotten.
  auto t0 = clock_type::now();
  ctx.stats.jobs_done = 4;
  EXPECT_FALSE(sampler.sample(t0 + 10s));
  ctx.stats.jobs_done = 6;
  connect();
  ASSERT_TRUE(sampler.sample(t0 + 20s));
  auto s = wait_samples(1);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0]["done"], "6") << "the sample after the outage covers the whole gap";
  EXPECT_GE(std::stod(s[0]["interval_s"]), 19.9);
}

TEST_F(StatsSampler, TheStreamKeepsAboutAnHourOfSamples) {
  EXPECT_EQ(stats_sampler::entries_kept(10s), 390u);
  EXPECT_EQ(stats_sampler::entries_kept(1s), 3900u);
  EXPECT_EQ(stats_sampler::entries_kept(7s), 558u);  // 3900 / 7, rounded up
  EXPECT_EQ(stats_sampler::entries_kept(3600s), 10u);
  connect();
  stats_sample one;
  std::vector<std::vector<std::string>> cmds;
  for (int i = 0; i < 2000; ++i) cmds.push_back(stats_sampler::xadd_command(ctx.k, one, 10s, 300));
  run_async(ioc, ctx.redis.async_pipeline(std::move(cmds)));
  auto len = run_async(ioc, ctx.redis.async_exec(redis_cmd("XLEN", ctx.k.stats_samples()))).as_integer();
  EXPECT_GE(len, 300);
  EXPECT_LT(len, 500) << "MAXLEN ~ trims within a node's worth (100 entries) of the bound";
}

TEST_F(StatsSampler, TheLoopSamplesEveryInterval) {
  connect();
  ctx.stats.jobs_done = 1;
  ctx.spawn(sampler.run(), "stats_sampler");
  auto start = clock_type::now();
  auto s = wait_samples(1);
  ASSERT_GE(s.size(), 1u);
  EXPECT_GE(clock_type::now() - start, 900ms) << "the first sample waits one interval";
  ctx.stats.jobs_done = 3;
  s = wait_samples(2);
  ASSERT_GE(s.size(), 2u);
  EXPECT_EQ(s[0]["done"], "0") << "counts start from the loop's start";
  EXPECT_EQ(s[1]["done"], "2");
}

}  // namespace
}  // namespace descprod
