// The rate limits every gateway shares through Redis (gateway/guard.hpp, issue 15 item 3), in
// process against a real redis-server: two gateway contexts, each with its own Redis client and its
// own request_guard, stand for two gateways on one Redis. Login failures, registrations and OpenID
// Connect starts add up across them; every key they leave has a TTL and a short name; without
// Redis (stopped, or refusing writes with OOM) each falls back to its own counts.
#include <gtest/gtest.h>

#include <memory>

#include "core/keys.hpp"
#include "core/redis.hpp"
#include "gateway/guard.hpp"
#include "gateway/handler.hpp"
#include "tests/support/support.hpp"

namespace descprod::test {
namespace {

namespace dg = descprod::gateway;
using std::chrono::milliseconds;

const std::string prefix = "lim:";

// One "gateway": its context, its Redis client and its guard.
struct gateway_double {
  gateway_double(net::io_context& ioc, const redis_server& redis, const gateway_config& cfg)
      : client(ioc.get_executor(), redis.endpoint()), guard(cfg, 2) {
    ctx.config = cfg;
    ctx.prefix = prefix;
    ctx.redis = &client;
    ctx.guard = &guard;
    run_async(ioc, client.async_connect());
  }
  redis_client client;
  dg::request_guard guard;
  dg::gateway_context ctx;
};

class SharedLimits : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg.register_per_address = 3;
    a = std::make_unique<gateway_double>(ioc, redis, cfg);
    b = std::make_unique<gateway_double>(ioc, redis, cfg);
  }
  std::optional<dg::api_error> refusal(gateway_double& g, const std::string& name, const std::string& peer) {
    return run_async(ioc, dg::login_refusal(g.ctx, name, peer));
  }
  void fail(gateway_double& g, const std::string& name, const std::string& peer) {
    run_async(ioc, dg::login_failed(g.ctx, name, peer));
  }
  std::optional<dg::api_error> take_register(gateway_double& g, const std::string& peer) {
    return run_async(ioc, dg::register_take(g.ctx, peer));
  }
  redis_reply exec(const std::vector<std::string>& cmd) {
    redis_sync r(redis.endpoint());
    return r.exec(cmd);
  }
  // Every key under the prefix, with its PTTL.
  std::map<std::string, long long> keys_with_ttl() {
    redis_sync r(redis.endpoint());
    std::map<std::string, long long> out;
    std::string cursor = "0";
    for (int round = 0; round < 1000; ++round) {
      auto page = r.exec({"SCAN", cursor, "MATCH", prefix + "*", "COUNT", "1000"});
      if (page.elements.size() != 2) break;
      cursor = page.elements[0].as_string();
      for (const auto& k : page.elements[1].elements) out[k.str] = r.exec({"PTTL", k.str}).integer;
      if (cursor == "0") break;
    }
    return out;
  }

  redis_server redis;
  net::io_context ioc;
  gateway_config cfg;
  std::unique_ptr<gateway_double> a, b;
  const keys k{prefix};
};

// 5 free failures per account, alternating between the gateways: the 6th (on either) blocks the
// account on both, for the first wait (1 s); a success on one clears the count for both.
TEST_F(SharedLimits, LoginFailuresOnTwoGatewaysAddUpAndBlockBoth) {
  for (int i = 0; i < 5; ++i) {
    auto& g = i % 2 ? *b : *a;
    ASSERT_FALSE(refusal(g, "ann", "10.1.1." + std::to_string(i))) << i;
    fail(g, "ann", "10.1.1." + std::to_string(i));
  }
  EXPECT_FALSE(refusal(*a, "ann", "10.1.1.9"));
  EXPECT_FALSE(refusal(*b, "ann", "10.1.1.9"));
  EXPECT_EQ(exec({"GET", k.limit_fail_account("ann")}).as_string(), "5");
  fail(*b, "ann", "10.1.1.5");  // the 6th: both gateways refuse now
  for (auto* g : {a.get(), b.get()}) {
    auto r = refusal(*g, "ann", "10.1.1.9");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->code, dg::errc::too_many_requests);
    EXPECT_EQ(r->retry_after_s, 1);
    EXPECT_NE(r->detail.find("account"), std::string::npos) << r->detail;
  }
  auto block = exec({"PTTL", k.limit_block_account("ann")}).integer;
  EXPECT_GT(block, 0);
  EXPECT_LE(block, 1000);
  auto count = exec({"PTTL", k.limit_fail_account("ann")}).integer;
  EXPECT_GT(count, 890000);
  EXPECT_LE(count, 900000);
  // A success (on b) clears the account on a too, though a's memory counted 3 of the failures.
  run_async(ioc, dg::login_succeeded(b->ctx, "ann"));
  EXPECT_FALSE(refusal(*a, "ann", "10.1.1.9"));
  EXPECT_EQ(exec({"EXISTS", k.limit_fail_account("ann"), k.limit_block_account("ann")}).integer, 0);
  EXPECT_FALSE(a->guard.redis_failed_at);
  EXPECT_FALSE(b->guard.redis_failed_at);
}

// One address, many names: 20 free failures in all, then both gateways refuse the address for any
// name; the waits grow (1 s, 2 s) whichever gateway counted the failure.
TEST_F(SharedLimits, AnAddressIsThrottledAcrossGatewaysAndAccounts) {
  for (int i = 0; i < 20; ++i) fail(i % 2 ? *b : *a, "name" + std::to_string(i), "10.2.2.2");
  EXPECT_FALSE(refusal(*a, "other", "10.2.2.2"));
  fail(*b, "name20", "10.2.2.2");
  auto first = refusal(*a, "other", "10.2.2.2");
  ASSERT_TRUE(first);
  EXPECT_NE(first->detail.find("address"), std::string::npos) << first->detail;
  EXPECT_EQ(first->retry_after_s, 1);
  fail(*a, "name21", "10.2.2.2");  // as if two gateways let two guesses through at once
  auto second = refusal(*b, "other", "10.2.2.2");
  ASSERT_TRUE(second);
  EXPECT_EQ(second->retry_after_s, 2);
  EXPECT_FALSE(refusal(*b, "other", "10.2.2.3")) << "another address is not affected";
}

// Registrations per address (3 here) are counted across the gateways; a refused one is not
// counted; another address has its own allowance; the set holds at most the limit and has a TTL.
TEST_F(SharedLimits, RegistrationsPerAddressAreCountedAcrossGateways) {
  EXPECT_FALSE(take_register(*a, "10.3.3.3"));
  EXPECT_FALSE(take_register(*b, "10.3.3.3"));
  EXPECT_FALSE(take_register(*a, "10.3.3.3"));
  for (auto* g : {b.get(), a.get()}) {
    auto r = take_register(*g, "10.3.3.3");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->code, dg::errc::too_many_requests);
    EXPECT_GE(r->retry_after_s, 3599);
    EXPECT_LE(r->retry_after_s, 3600);
  }
  EXPECT_EQ(exec({"ZCARD", k.limit_register("10.3.3.3")}).integer, 3);
  auto ttl = exec({"PTTL", k.limit_register("10.3.3.3")}).integer;
  EXPECT_GT(ttl, 3590000);
  EXPECT_LE(ttl, 3600000);
  EXPECT_FALSE(take_register(*b, "10.3.3.4"));
  // OpenID Connect starts: 30 per address per minute, across both.
  for (int i = 0; i < 30; ++i)
    ASSERT_FALSE(run_async(ioc, dg::oidc_start_take((i % 2 ? *b : *a).ctx, "10.3.3.5"))) << i;
  auto r = run_async(ioc, dg::oidc_start_take(a->ctx, "10.3.3.5"));
  ASSERT_TRUE(r);
  EXPECT_LE(r->retry_after_s, 60);
  EXPECT_EQ(exec({"ZCARD", k.limit_oidc("10.3.3.5")}).integer, 30);
}

// Hostile names and addresses make short keys, and every key the limits leave expires.
TEST_F(SharedLimits, EveryKeyIsShortAndExpires) {
  std::string huge(100000, 'z');
  fail(*a, huge, huge);
  fail(*a, "Upper-Case", "fe80::1%eth0");
  take_register(*b, huge);
  for (int i = 0; i < 6; ++i) fail(*b, "ann", "10.4.4.4");
  auto all = keys_with_ttl();
  EXPECT_EQ(all.size(), 8u) << "fail keys of 3 names and 3 addresses, 1 block, 1 set";
  for (const auto& [key, ttl] : all) {
    EXPECT_LE(key.size(), prefix.size() + 20 + 71) << key;
    EXPECT_GT(ttl, 0) << key << " has no TTL";
  }
  EXPECT_TRUE(all.count(k.limit_fail_account(dg::limit_subject(huge))));
  EXPECT_TRUE(all.count(k.limit_block_account("ann")));
}

// Redis gone: each gateway counts in its own memory (the throttle stays, per gateway, instead of
// locking everyone out or letting guesses through), and once Redis is back the blocks counted
// meanwhile still hold for the longest window.
TEST_F(SharedLimits, WithoutRedisEachGatewayFallsBackToItsOwnCounts) {
  redis.stop();
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(refusal(*a, "bea", "10.5.5.5")) << i;
    fail(*a, "bea", "10.5.5.5");
  }
  ASSERT_TRUE(a->guard.redis_failed_at);
  EXPECT_EQ(a->guard.redis_failures, 10u);  // 5 checks and 5 failures, one warning
  EXPECT_FALSE(refusal(*a, "bea", "10.5.5.5"));
  fail(*a, "bea", "10.5.5.5");
  auto local = refusal(*a, "bea", "10.5.5.5");
  ASSERT_TRUE(local) << "the 6th failure blocks the account in a's memory";
  EXPECT_EQ(local->retry_after_s, 1);
  EXPECT_FALSE(refusal(*b, "bea", "10.5.5.5")) << "b counted none of them";
  // Registrations: 3 per address in each gateway's memory.
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(take_register(*a, "10.5.5.6")) << i;
  EXPECT_TRUE(take_register(*a, "10.5.5.6"));

  redis.start();
  run_async(ioc, a->client.async_connect());
  EXPECT_TRUE(refusal(*a, "bea", "10.5.5.5")) << "the block counted without Redis still holds";
  EXPECT_TRUE(take_register(*a, "10.5.5.6")) << "so do the registrations counted without Redis";
  EXPECT_TRUE(a->guard.redis_failed_at) << "until the longest window has passed";
}

// Redis refusing writes with an error reply (OOM under maxmemory): the failure script's error
// falls back to the local counts, while the checks (PTTL, a read) still reach Redis.
TEST_F(SharedLimits, AnOomErrorReplyFallsBackToTheLocalCounts) {
  ASSERT_FALSE(exec({"CONFIG", "SET", "maxmemory", "1"}).is_error());
  for (int i = 0; i < 6; ++i) fail(*a, "cid", "10.6.6.6");
  EXPECT_TRUE(a->guard.redis_failed_at);
  EXPECT_EQ(exec({"EXISTS", k.limit_fail_account("cid")}).integer, 0);
  EXPECT_TRUE(refusal(*a, "cid", "10.6.6.6")) << "a's own count blocks";
  EXPECT_FALSE(refusal(*b, "cid", "10.6.6.6"));
  ASSERT_FALSE(exec({"CONFIG", "SET", "maxmemory", "0"}).is_error());
}

}  // namespace
}  // namespace descprod::test
