// Redis ACL and passwords end to end (docs/security.md, docs/operators.md *Redis ACL*): a real
// redis-server whose default user is off and whose `descprod` user may touch only `descprod:*`
// keys and no @dangerous command. The gateway and the daemon log in with `redis.username` and
// `redis.password_file` and run a job to done; the workers never connect to Redis; nothing the
// service does is refused by the ACL. With a wrong password the gateway stops with an error
// naming AUTH, and the daemon keeps retrying, saying why, until the user exists.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "core/redis.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// The operators' user (all commands), used by the test to look at the server.
const std::vector<std::string> ops_user = {"--user", "ops", "on", ">ops-secret", "~*", "&*", "+@all"};

std::vector<std::string> acl_args(bool with_descprod_user) {
  std::vector<std::string> a = {"--user", "default", "off"};
  if (with_descprod_user) {
    for (const char* s :
         {"--user", "descprod", "on", ">s3cret pass", "~descprod:*", "&*", "+@all", "-@dangerous"})
      a.emplace_back(s);
  }
  a.insert(a.end(), ops_user.begin(), ops_user.end());
  return a;
}

redis_endpoint as_ops(redis_endpoint ep) {
  ep.username = "ops";
  ep.password = "ops-secret";
  return ep;
}

// Clients connected as `user` (CLIENT LIST).
int clients_of(redis_sync& ops, const std::string& user) {
  auto list = ops.exec({"CLIENT", "LIST"}).str;
  int n = 0;
  for (std::size_t pos = 0; (pos = list.find(" user=" + user + " ", pos)) != std::string::npos; ++pos) ++n;
  return n;
}

TEST(RedisAcl, GatewayAndDaemonLogInAsAnAclUserAndRunAJobToDone) {
  temp_dir secrets;
  write_file(secrets.file("redis-password"), "s3cret pass\n");
  service_options o;
  o.redis_options.extra_args = acl_args(true);
  o.redis_options.username = "descprod";
  o.redis_options.password = "s3cret pass";
  o.redis_extra = "  username: descprod\n  password_file: " + secrets.file("redis-password") + "\n";
  service s(o);
  redis_sync ops(as_ops(s.redis.endpoint()));
  ASSERT_EQ(ops.exec({"ACL", "LOG", "RESET"}).str, "OK");

  // The default user is off: without credentials nothing works.
  redis_endpoint anonymous = s.redis.endpoint();
  anonymous.username.clear();
  anonymous.password.clear();
  redis_sync anon(anonymous);
  auto refused = anon.exec({"GET", "descprod:next_job_id"});
  EXPECT_TRUE(refused.is_error());
  EXPECT_NE(refused.str.find("NOAUTH"), std::string::npos) << refused.str;

  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  ASSERT_GT(id, 0);
  ASSERT_TRUE(wait_until([&] { return s.state(id) == "done"; }, 30s)) << s.state(id);
  auto ev = s.call("GET", "/api/jobs/" + std::to_string(id) + "/events");
  EXPECT_EQ(ev.status, 200);
  auto log = s.call("GET", "/api/jobs/" + std::to_string(id) + "/log");
  EXPECT_EQ(log.status, 200);
  EXPECT_NE(log.body.find("awake"), std::string::npos) << log.body;
  EXPECT_EQ(http_request("127.0.0.1", s.port(), "GET", "/metrics").status, 200);
  EXPECT_EQ(http_request("127.0.0.1", s.port(), "GET", "/readyz").status, 200);

  // Nothing the service did was refused by the ACL (a refused command or key is logged there).
  auto denied = ops.exec({"ACL", "LOG"});
  EXPECT_EQ(denied.elements.size(), 0u) << "the ACL refused something the service does";

  // Who is connected as descprod: the gateway (requests and the event tail) and the daemon. The
  // workers hold no Redis connection: stopping them changes nothing; stopping the gateway and
  // then the daemon takes the count to zero.
  int with_workers = clients_of(ops, "descprod");
  EXPECT_GE(with_workers, 3);
  for (auto& w : s.workers) ASSERT_TRUE(w->stop(10s));
  EXPECT_EQ(clients_of(ops, "descprod"), with_workers);
  s.gateway->stop();
  ASSERT_TRUE(wait_until([&] { return clients_of(ops, "descprod") < with_workers; }, 5s));
  s.daemon->stop();
  EXPECT_TRUE(wait_until([&] { return clients_of(ops, "descprod") == 0; }, 5s))
      << clients_of(ops, "descprod");
}

TEST(RedisAcl, AWrongPasswordIsNamedTheGatewayStopsAndTheDaemonRetriesUntilTheUserExists) {
  redis_server_options ro;
  ro.extra_args = acl_args(false);
  ro.username = "ops";
  ro.password = "ops-secret";
  redis_server redis(ro);
  temp_dir dir;
  write_file(dir.file("apps.yaml"), "apps:\n  - name: mysleep\n");
  auto config = dir.file("descprod.yaml");
  write_file(config,
             "log_level: info\n"
             "apps: " +
                 dir.file("apps.yaml") +
                 "\n"
                 "redis:\n  path: " +
                 redis.socket_path() +
                 "\n  username: late\n  password: pw-late\n"
                 "gateway:\n  port: 0\n  daemon_endpoint: ipc://" +
                 dir.file("gw.ipc") +
                 "\n"
                 "daemon:\n  worker_endpoint: ipc://" +
                 dir.file("w.ipc") +
                 "\n"
                 "  gateway_endpoint: ipc://" +
                 dir.file("gw.ipc") + "\n");
  std::string bin = DESCPROD_BIN_DIR;

  // The gateway gives up after its start-up deadline (10 s) and says why.
  process gateway({bin + "/descprod-gateway", "--config", config, "--port-file", dir.file("port")}, {},
                  dir.file("gateway.log"));
  auto rc = gateway.wait_exit(20s);
  ASSERT_TRUE(rc) << "the gateway still runs";
  EXPECT_EQ(*rc, 1);
  auto glog = gateway.output();
  EXPECT_NE(glog.find("fatal: cannot connect to Redis at unix:" + redis.socket_path()), std::string::npos)
      << glog;
  EXPECT_NE(glog.find("redis AUTH: WRONGPASS"), std::string::npos) << glog;
  EXPECT_FALSE(fs::exists(dir.file("port")));

  // The daemon keeps trying, logging the failure with Redis's answer (once per distinct error, not
  // at every try).
  process daemon({bin + "/descprod-daemon", "--config", config}, {}, dir.file("daemon.log"));
  auto count = [&](const std::string& what) {
    auto text = daemon.output();
    int n = 0;
    for (std::size_t pos = 0; (pos = text.find(what, pos)) != std::string::npos; ++pos) ++n;
    return n;
  };
  ASSERT_TRUE(wait_until([&] { return count("redis AUTH: WRONGPASS") >= 1; }, 15s)) << daemon.output();
  // Several tries (100 ms doubling to 1 s) go by without a new line and without giving up.
  std::this_thread::sleep_for(2500ms);
  EXPECT_TRUE(daemon.running());
  EXPECT_EQ(count("redis AUTH: WRONGPASS"), 1) << daemon.output();
  EXPECT_EQ(count("redis connected"), 0);

  // The operator creates the user; the daemon gets in at its next try (backoff at most 1 s).
  redis_sync ops(redis.endpoint());
  auto made =
      ops.exec({"ACL", "SETUSER", "late", "on", ">pw-late", "~descprod:*", "&*", "+@all", "-@dangerous"});
  ASSERT_EQ(made.str, "OK") << made.str;
  auto made_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_until([&] { return count("redis connected") >= 1; }, 40s)) << daemon.output();
  EXPECT_LT(std::chrono::steady_clock::now() - made_at, 5s) << "the retry backoff is at most 1 s";
  EXPECT_TRUE(daemon.running());

  // A gateway started now gets in and is welcomed by the daemon.
  process gateway2({bin + "/descprod-gateway", "--config", config, "--port-file", dir.file("port")}, {},
                   dir.file("gateway2.log"));
  ASSERT_TRUE(
      wait_until([&] { return fs::exists(dir.file("port")) && fs::file_size(dir.file("port")) > 0; }, 20s))
      << gateway2.output();
  int port = std::stoi(read_file(dir.file("port")));
  EXPECT_TRUE(
      wait_until([&] { return http_request("127.0.0.1", port, "GET", "/readyz").status == 200; }, 10s));
  EXPECT_EQ(http_request("127.0.0.1", port, "GET", "/healthz").status, 200);
}

}  // namespace
}  // namespace descprod::test
