// The pure parts of the rate limits every gateway shares through Redis (gateway/guard.hpp, issue 15
// item 3): their keys under the prefix, the subject a name or an address becomes in a key (short
// and plain, or hashed), and the commands the scripts run with (every key a KEYS, every value an
// ARGV, never in the script's text).
#include <gtest/gtest.h>

#include "core/crypto.hpp"
#include "core/keys.hpp"
#include "gateway/guard.hpp"

namespace descprod {
namespace {

namespace dg = descprod::gateway;

TEST(SharedLimitKeys, EveryLimitKeyIsUnderThePrefix) {
  keys k("p:");
  EXPECT_EQ(k.limit_fail_account("ann"), "p:limit:fail:acct:ann");
  EXPECT_EQ(k.limit_block_account("ann"), "p:limit:block:acct:ann");
  EXPECT_EQ(k.limit_fail_address("10.0.0.1"), "p:limit:fail:addr:10.0.0.1");
  EXPECT_EQ(k.limit_block_address("::1"), "p:limit:block:addr:::1");
  EXPECT_EQ(k.limit_register("10.0.0.1"), "p:limit:register:10.0.0.1");
  EXPECT_EQ(k.limit_oidc("10.0.0.1"), "p:limit:oidc:10.0.0.1");
}

TEST(SharedLimitSubject, NamesAndAddressesStayReadable) {
  EXPECT_EQ(dg::limit_subject("alice"), "alice");
  EXPECT_EQ(dg::limit_subject("a.b_c-9"), "a.b_c-9");
  EXPECT_EQ(dg::limit_subject("127.0.4.1"), "127.0.4.1");
  EXPECT_EQ(dg::limit_subject("2001:db8::1"), "2001:db8::1");
  EXPECT_EQ(dg::limit_subject("::ffff:192.0.2.1"), "::ffff:192.0.2.1");
  std::string longest(dg::max_plain_subject, 'a');
  EXPECT_EQ(dg::limit_subject(longest), longest);
}

TEST(SharedLimitSubject, HugeOddOrEmptyValuesAreHashedToAShortKey) {
  std::string huge(1 << 20, 'x');
  auto h = dg::limit_subject(huge);
  EXPECT_EQ(h, "sha256=" + sha256_hex(huge));
  EXPECT_EQ(h.size(), 7u + 64u);
  EXPECT_EQ(dg::limit_subject(std::string(dg::max_plain_subject + 1, 'a')).size(), 71u);
  // Upper case, a scope, a space, control bytes, a key separator trick: hashed, not folded.
  std::vector<std::string> odds = {"Alice",  "fe80::1%eth0", "a b", std::string("a\0b", 3),
                                   "a\r\nb", "x*",           ""};
  for (const auto& odd : odds) {
    auto s = dg::limit_subject(odd);
    EXPECT_EQ(s, "sha256=" + sha256_hex(odd)) << odd;
  }
  EXPECT_NE(dg::limit_subject("Alice"), dg::limit_subject("alice"));
  // No plain subject looks like a hashed one ('=' is not in the plain alphabet).
  EXPECT_NE(dg::limit_subject("sha256=" + sha256_hex("x")), "sha256=" + sha256_hex("x"));
}

TEST(SharedLimitCommands, KeysTravelAsKeysAndValuesAsArgv) {
  dg::failure_throttle::policy p;
  p.free = 5;
  p.initial = std::chrono::milliseconds(1000);
  p.max = std::chrono::milliseconds(300000);
  p.window = std::chrono::seconds(900);
  auto fail = dg::limit_fail_command("P:limit:fail:acct:ann", "P:limit:block:acct:ann", p);
  ASSERT_EQ(fail.size(), 9u);
  EXPECT_EQ(fail[0], "EVAL");
  EXPECT_EQ(fail[2], "2");
  EXPECT_EQ(fail[3], "P:limit:fail:acct:ann");
  EXPECT_EQ(fail[4], "P:limit:block:acct:ann");
  EXPECT_EQ(fail[5], "5");
  EXPECT_EQ(fail[6], "1000");
  EXPECT_EQ(fail[7], "300000");
  EXPECT_EQ(fail[8], "900000");
  EXPECT_EQ(fail[1].find("ann"), std::string::npos);
  EXPECT_NE(fail[1].find("KEYS[2]"), std::string::npos);
  EXPECT_NE(fail[1].find("'PX'"), std::string::npos);

  auto take = dg::limit_take_command("P:limit:register:1.2.3.4", 10, std::chrono::seconds(3600), "u1");
  ASSERT_EQ(take.size(), 7u);
  EXPECT_EQ(take[0], "EVAL");
  EXPECT_EQ(take[2], "1");
  EXPECT_EQ(take[3], "P:limit:register:1.2.3.4");
  EXPECT_EQ(take[4], "10");
  EXPECT_EQ(take[5], "3600000");
  EXPECT_EQ(take[6], "u1");
  EXPECT_EQ(take[1].find("1.2.3.4"), std::string::npos);
  for (const char* step : {"ZREMRANGEBYSCORE", "ZCARD", "ZADD", "PEXPIRE", "TIME"})
    EXPECT_NE(take[1].find(step), std::string::npos) << step;
}

}  // namespace
}  // namespace descprod
