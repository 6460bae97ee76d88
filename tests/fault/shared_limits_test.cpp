// The rate limits shared through Redis by several gateways (issue 15 item 3; gateway/guard.hpp,
// docs/security.md "Limits against floods"), with the real binaries: one redis-server, one daemon
// and two descprod-gateway processes on the same config (the second started here, by PID, on its
// own free port). Password guesses, registrations and OpenID Connect login starts spread over the
// two gateways are refused after the same number in total as on one gateway; and while Redis
// refuses writes (OOM under maxmemory), each gateway still throttles logins on its own counts and
// says so once in its log. Clients on other loopback addresses (127.0.x.y) stand for other
// machines. Every loop is bounded in count, every wait in time.
#include <gtest/gtest.h>

#include <filesystem>
#include <iostream>

#include "core/accounts.hpp"
#include "tests/security/gateway_limits_support.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

using namespace limits;
namespace fs = std::filesystem;

// Cheap hashing (the throttle is under test, not Argon2id), 4 registrations per address, and an
// OpenID Connect provider whose issuer nothing answers: a start is counted before the provider is
// asked, so each allowed start answers 503 and a throttled one 429.
service_options limit_options(const std::string& secret_file) {
  service_options o;
  o.workers = 0;
  o.gateway_extra =
      "  password_opslimit: 1\n  password_memlimit_kib: 8\n  register_per_address: 4\n"
      "  oidc:\n    - name: dead\n      issuer: http://127.0.0.1:1\n      client_id: descprod\n"
      "      client_secret_file: " +
      secret_file + "\n";
  return o;
}

// The fixture's service plus a second gateway on the same config (the same Redis and daemon).
struct two_gateways {
  temp_dir secrets{"descprod-limits-"};
  std::unique_ptr<service> s;
  std::unique_ptr<process> second;
  int ports[2] = {0, 0};

  two_gateways() {
    write_file(secrets.file("secret"), "not-a-real-secret\n");
    s = std::make_unique<service>(limit_options(secrets.file("secret")));
    ports[0] = s->port();
    auto port_file = s->dir.file("gateway-2.port");
    second = std::make_unique<process>(std::vector<std::string>{s->bin("descprod-gateway"), "--config",
                                                                s->config_file, "--port-file", port_file},
                                       s->env(), s->dir.file("gateway-2.log"));
    if (!wait_until([&] { return fs::exists(port_file) && fs::file_size(port_file) > 0; }, 20s))
      throw std::runtime_error("the second gateway did not write its port: " + second->output());
    ports[1] = std::stoi(read_file(port_file));
  }
  ~two_gateways() {
    if (second) second->stop();
  }
  void give_password(const std::string& user, const std::string& password) {
    redis_sync r(s->redis.endpoint());
    ASSERT_TRUE(set_password(r, "descprod:", user, password, password_cost{1, 8 * 1024}));
  }
  raw_response login(int gateway, const std::string& source, const std::string& user,
                     const std::string& password) {
    return raw_request(source, ports[gateway], "POST", "/api/login", {},
                       R"({"username":")" + user + R"(","password":")" + password + R"("})");
  }
  raw_response register_user(int gateway, const std::string& source, const std::string& user) {
    return raw_request(
        source, ports[gateway], "POST", "/api/register", {},
        R"({"username":")" + user + R"(","password":"some-secret-1","email":")" + user + R"(@example.org"})");
  }
  raw_response oidc_start(int gateway, const std::string& source) {
    return raw_request(source, ports[gateway], "GET", "/login/oidc/dead");
  }
};

long long retry_after(const raw_response& r) {
  auto v = r.header("retry-after");
  return v.empty() ? -1 : std::stoll(v);
}

// Bad passwords until the first 429 (at most `limit` attempts), the gateway of attempt i being
// `pick(i)`; returns the attempt number of the first 429 (0: none) and that answer.
template <class Send>
std::pair<int, raw_response> attempts_until_429(int limit, Send send) {
  for (int i = 0; i < limit; ++i) {
    auto r = send(i);
    if (r.status == 429) return {i + 1, r};
    EXPECT_EQ(r.status, 401) << "attempt " << i + 1 << ": " << r.body;
  }
  return {0, raw_response()};
}

}  // namespace

// One account guessed on one gateway, another account guessed alternately on two: the first 429
// comes at the same attempt (5 free failures, the 6th starts the wait, the 7th is refused), and
// then both gateways refuse that account, even with the right password, with Retry-After.
TEST(SharedLimitsAcrossGateways, PasswordFailuresOnTwoGatewaysLockTheAccountOnBoth) {
  two_gateways g;
  g.give_password("alice", "alice-secret");
  g.give_password("bob", "bob-secret-1");
  auto [one, one_r] = attempts_until_429(
      20, [&](int i) { return g.login(0, "127.0.7.1", "alice", "wrong-" + std::to_string(i)); });
  auto [two, two_r] = attempts_until_429(
      20, [&](int i) { return g.login(i % 2, "127.0.7.2", "bob", "wrong-" + std::to_string(i)); });
  std::cout << "[figure] first 429 for an account: attempt " << one << " on one gateway, " << two
            << " alternating over two\n";
  EXPECT_EQ(one, 7);
  EXPECT_EQ(two, one) << "spreading guesses over two gateways must not buy more of them";
  EXPECT_EQ(retry_after(two_r), 1);
  EXPECT_NE(two_r.body.find("too_many_requests"), std::string::npos) << two_r.body;
  for (int gw = 0; gw < 2; ++gw) {
    auto r = g.login(gw, "127.0.7.3", "bob", "bob-secret-1");
    EXPECT_EQ(r.status, 429) << "gateway " << gw + 1 << ": " << r.body;
    EXPECT_GE(retry_after(r), 1);
  }
  // Once the wait is over, the right password works on either gateway and clears the count.
  int status = 0;
  EXPECT_TRUE(wait_until(
      [&] {
        status = g.login(1, "127.0.7.3", "bob", "bob-secret-1").status;
        return status != 429;
      },
      20s, 100ms));
  EXPECT_EQ(status, 200);
  EXPECT_EQ(g.login(0, "127.0.7.3", "bob", "wrong-again").status, 401) << "the count was reset on both";
}

// One address guessing many names, alternately on two gateways: the first 429 at attempt 22 (20
// free failures per address, as on one gateway), then that address is refused on both, for any
// name; another address is not affected.
TEST(SharedLimitsAcrossGateways, AnAddressIsThrottledAcrossGateways) {
  two_gateways g;
  auto [first, refused] = attempts_until_429(40, [&](int i) {
    return g.login(i % 2, "127.0.8.1", "nobody" + std::to_string(i), "guess-" + std::to_string(i));
  });
  std::cout << "[figure] one address over two gateways: first 429 at attempt " << first << "\n";
  EXPECT_EQ(first, 22);
  EXPECT_NE(refused.body.find("address"), std::string::npos) << refused.body;
  for (int gw = 0; gw < 2; ++gw) EXPECT_EQ(g.login(gw, "127.0.8.1", "carl", "x-secret-x").status, 429) << gw;
  EXPECT_EQ(g.login(1, "127.0.8.2", "dora", "guess-guess").status, 401);
}

// register_per_address 4: four registrations from one address spread over the gateways, then 429
// (with Retry-After) on both; another address still registers.
TEST(SharedLimitsAcrossGateways, RegistrationsPerAddressAreCountedAcrossGateways) {
  two_gateways g;
  int created = 0;
  raw_response refused;
  for (int i = 0; i < 10; ++i) {
    auto r = g.register_user(i % 2, "127.0.9.1", "flood" + std::to_string(i));
    if (r.status == 429) {
      refused = r;
      break;
    }
    EXPECT_EQ(r.status, 201) << r.body;
    ++created;
  }
  std::cout << "[figure] registrations from one address over two gateways before 429: " << created
            << ", Retry-After " << refused.header("retry-after") << " s\n";
  EXPECT_EQ(created, 4);
  EXPECT_EQ(refused.status, 429);
  EXPECT_GE(retry_after(refused), 3500);
  EXPECT_EQ(g.register_user(1, "127.0.9.1", "late").status, 429);
  EXPECT_EQ(g.register_user(0, "127.0.9.2", "ivy").status, 201);
}

// 30 OpenID Connect login starts per address per minute, counted over both gateways.
TEST(SharedLimitsAcrossGateways, OidcStartsPerAddressAreCountedAcrossGateways) {
  two_gateways g;
  int allowed = 0;
  raw_response refused;
  for (int i = 0; i < 70; ++i) {
    auto r = g.oidc_start(i % 2, "127.0.10.1");
    if (r.status == 429) {
      refused = r;
      break;
    }
    EXPECT_EQ(r.status, 503) << "the provider is away: " << r.body;
    ++allowed;
  }
  std::cout << "[figure] OpenID Connect starts from one address over two gateways before 429: " << allowed
            << "\n";
  EXPECT_EQ(allowed, 30);
  EXPECT_GE(retry_after(refused), 1);
  EXPECT_LE(retry_after(refused), 60);
  EXPECT_EQ(g.oidc_start(0, "127.0.10.2").status, 503) << "another address is not affected";
}

// Redis refuses writes (maxmemory reached, OOM): the failure script cannot count, so each gateway
// throttles on its own memory (the 7th attempt on gateway 1 is refused; gateway 2, which counted
// none, still checks the password), and gateway 1 says so once in its log. Neither fails closed.
TEST(SharedLimitsAcrossGateways, WhenRedisRefusesWritesEachGatewayThrottlesOnItsOwn) {
  two_gateways g;
  redis_sync r(g.s->redis.endpoint());
  ASSERT_FALSE(r.exec({"CONFIG", "SET", "maxmemory", "1"}).is_error());
  auto [first, refused] = attempts_until_429(
      20, [&](int i) { return g.login(0, "127.0.11.1", "erin", "wrong-" + std::to_string(i)); });
  auto other = g.login(1, "127.0.11.2", "erin", "wrong-x");
  ASSERT_FALSE(r.exec({"CONFIG", "SET", "maxmemory", "0"}).is_error());
  EXPECT_EQ(first, 7);
  EXPECT_EQ(retry_after(refused), 1);
  EXPECT_EQ(other.status, 401) << "gateway 2 has no count of its own: " << other.body;
  std::string log = g.s->gateway->output();
  std::size_t warnings = 0;
  for (auto at = log.find("limits: Redis cannot keep the shared counts"); at != std::string::npos;
       at = log.find("limits: Redis cannot keep the shared counts", at + 1))
    ++warnings;
  EXPECT_EQ(warnings, 1u) << log;
}

}  // namespace descprod::test
