// core/keys.hpp: every key of the Redis layout under a prefix.
#include <gtest/gtest.h>

#include "core/keys.hpp"

namespace descprod {
namespace {

TEST(Keys, BuildTheDocumentedLayoutUnderThePrefix) {
  keys k("p:");
  EXPECT_EQ(k.prefix(), "p:");
  EXPECT_EQ(k.next_job_id(), "p:next_job_id");
  EXPECT_EQ(k.job(42), "p:job:42");
  EXPECT_EQ(k.job("42"), "p:job:42");
  EXPECT_EQ(k.job_events(7), "p:job:7:events");
  EXPECT_EQ(k.job_log(7), "p:job:7:log");
  EXPECT_EQ(k.job_children(7), "p:job:7:children");
  EXPECT_EQ(k.queue(), "p:queue");
  EXPECT_EQ(k.leases(), "p:leases");
  EXPECT_EQ(k.events(), "p:events");
  EXPECT_EQ(k.users(), "p:users");
  EXPECT_EQ(k.user("ann"), "p:user:ann");
  EXPECT_EQ(k.user_jobs("ann"), "p:user:ann:jobs");
  EXPECT_EQ(k.user_active("ann"), "p:user:ann:active");
  EXPECT_EQ(k.user_find("ann"), "p:user:ann:find");
  EXPECT_EQ(k.site_status(), "p:sites:status");
  EXPECT_EQ(k.user_tokens("ann"), "p:user:ann:tokens");
  EXPECT_EQ(k.user_worker_tokens("ann"), "p:user:ann:worker_tokens");
  EXPECT_EQ(k.user_quota("ann"), "p:user:ann:quota");
  EXPECT_EQ(k.user_submits("ann"), "p:user:ann:submits");
  EXPECT_EQ(k.token("ab"), "p:token:ab");
  EXPECT_EQ(k.session("cd"), "p:session:cd");
  EXPECT_EQ(k.worker("w1"), "p:worker:w1");
  EXPECT_EQ(k.worker_pattern(), "p:worker:*");
  EXPECT_EQ(k.pool("gpu"), "p:pool:gpu");
  EXPECT_EQ(k.pool_pattern(), "p:pool:*");
  EXPECT_EQ(k.pool_shares(), "p:pool_shares");  // not matched by pool_pattern
  EXPECT_EQ(k.pilots(), "p:pilots");
  EXPECT_EQ(k.pilot("x"), "p:pilot:x");
  EXPECT_EQ(k.daemon_stats(), "p:daemon:stats");
  EXPECT_EQ(k.jobs_by_state(), "p:stats:jobs_by_state");
  EXPECT_EQ(k.stats_samples(), "p:stats:samples");
}

TEST(Keys, DefaultPrefixIsDescprod) { EXPECT_EQ(keys().job(1), "descprod:job:1"); }

}  // namespace
}  // namespace descprod
