// Configuration parsing (config/descprod.yaml) and the application registry
// (docs/architecture.md#app-contract): defaults, every key, and errors that name file:line:column
// and the key.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <string>

#include "core/config.hpp"
#include "tests/support/support.hpp"

namespace descprod {
namespace {

using namespace std::chrono_literals;

// The message of the config_error that parsing `text` throws ("" when it does not throw).
std::string config_error_of(const std::string& text, const std::string& file = "test.yaml") {
  try {
    parse_config(text, file);
  } catch (const config_error& e) {
    return e.what();
  }
  return "";
}

std::string apps_error_of(const std::string& text, const std::string& file = "apps.yaml") {
  try {
    parse_apps(text, file);
  } catch (const config_error& e) {
    return e.what();
  }
  return "";
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

TEST(ParseConfig, EmptyFileGivesDefaults) {
  auto c = parse_config("", "test.yaml");
  EXPECT_EQ(c.file, "test.yaml");
  EXPECT_EQ(c.log_level, "info");
  EXPECT_EQ(c.apps_file, "config/apps.yaml");
  EXPECT_EQ(c.redis.endpoint.unix_path, "");
  EXPECT_EQ(c.redis.endpoint.host, "127.0.0.1");
  EXPECT_EQ(c.redis.endpoint.port, 6379);
  EXPECT_EQ(c.redis.endpoint.password, "");
  EXPECT_EQ(c.redis.prefix, "descprod:");
  EXPECT_EQ(c.gateway.address, "127.0.0.1");
  EXPECT_EQ(c.gateway.port, 8080);
  EXPECT_EQ(c.gateway.daemon_endpoint, "ipc://var/daemon-gateways.ipc");
  EXPECT_EQ(c.gateway.max_body_bytes, 1u << 20);
  EXPECT_EQ(c.gateway.max_bulk_jobs, 100000u);
  EXPECT_EQ(c.gateway.idle_timeout, 30000ms);
  EXPECT_EQ(c.gateway.public_url, "");
  EXPECT_EQ(c.daemon.worker_endpoint, "ipc://var/daemon-workers.ipc");
  EXPECT_EQ(c.daemon.gateway_endpoint, "ipc://var/daemon-gateways.ipc");
  EXPECT_EQ(c.daemon.dispatch_policy, "fair_share");
  EXPECT_EQ(c.daemon.heartbeat_interval, 1000ms);
  EXPECT_EQ(c.daemon.lease_timeout, 10000ms);
  EXPECT_EQ(c.daemon.reconcile_interval, 5000ms);
  EXPECT_EQ(c.daemon.stats_interval, 10s);
  EXPECT_EQ(c.worker.daemon_endpoint, "ipc://var/daemon-workers.ipc");
  EXPECT_EQ(c.worker.slots, 0);
  EXPECT_EQ(c.worker.prefetch, 0);
  EXPECT_EQ(c.worker.output_dir, "");
  EXPECT_EQ(c.worker.owner, "admin");
  EXPECT_EQ(c.worker.pool, "default");
  EXPECT_EQ(c.worker.id, "");
  EXPECT_EQ(c.worker.gateway_url, "http://127.0.0.1:8080");
  EXPECT_EQ(c.worker.status_poll, 200ms);
}

TEST(ParseConfig, EmptySectionsKeepDefaults) {
  auto c = parse_config("redis:\ngateway:\ndaemon:\nworker:\n", "test.yaml");
  EXPECT_EQ(c.redis.prefix, "descprod:");
  EXPECT_EQ(c.gateway.port, 8080);
  EXPECT_EQ(c.daemon.lease_timeout, 10000ms);
  EXPECT_EQ(c.worker.owner, "admin");
}

TEST(ParseConfig, ReadsEveryKeyOfEverySection) {
  auto c = parse_config(R"(log_level: debug
apps: apps.yaml
redis:
  path: /run/redis.sock
  host: redis.example
  port: 6380
  password: s3cret
  prefix: "dp:"
gateway:
  address: 0.0.0.0
  port: 0
  daemon_endpoint: tcp://127.0.0.1:5555
  max_body_bytes: 4096
  max_bulk_jobs: 50
  idle_timeout_ms: 1500
  public_url: https://descprod.example
daemon:
  worker_endpoint: ipc:///tmp/w.ipc
  gateway_endpoint: inproc://gw
  heartbeat_interval_ms: 200
  lease_timeout_ms: 2000
  reconcile_interval_ms: 700
  dispatch_policy: fifo
worker:
  daemon_endpoint: tcp://daemon:5556
  slots: 8
  prefetch: 3
  output_dir: /scratch/out
  owner: alice
  pool: gpu
  id: w-1
  gateway_url: http://gw:9000
  status_poll_ms: 50
)",
                        "/etc/descprod/all.yaml");
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.apps_file, "/etc/descprod/apps.yaml");  // relative to the config file's folder
  EXPECT_EQ(c.redis.endpoint.unix_path, "/run/redis.sock");
  EXPECT_EQ(c.redis.endpoint.host, "redis.example");
  EXPECT_EQ(c.redis.endpoint.port, 6380);
  EXPECT_EQ(c.redis.endpoint.password, "s3cret");
  EXPECT_EQ(c.redis.prefix, "dp:");
  EXPECT_EQ(c.gateway.address, "0.0.0.0");
  EXPECT_EQ(c.gateway.port, 0);
  EXPECT_EQ(c.gateway.daemon_endpoint, "tcp://127.0.0.1:5555");
  EXPECT_EQ(c.gateway.max_body_bytes, 4096u);
  EXPECT_EQ(c.gateway.max_bulk_jobs, 50u);
  EXPECT_EQ(c.gateway.idle_timeout, 1500ms);
  EXPECT_EQ(c.gateway.public_url, "https://descprod.example");
  EXPECT_EQ(c.daemon.worker_endpoint, "ipc:///tmp/w.ipc");
  EXPECT_EQ(c.daemon.gateway_endpoint, "inproc://gw");
  EXPECT_EQ(c.daemon.heartbeat_interval, 200ms);
  EXPECT_EQ(c.daemon.lease_timeout, 2000ms);
  EXPECT_EQ(c.daemon.reconcile_interval, 700ms);
  EXPECT_EQ(c.daemon.dispatch_policy, "fifo");
  EXPECT_EQ(c.worker.daemon_endpoint, "tcp://daemon:5556");
  EXPECT_EQ(c.worker.slots, 8);
  EXPECT_EQ(c.worker.prefetch, 3);
  EXPECT_EQ(c.worker.output_dir, "/scratch/out");
  EXPECT_EQ(c.worker.owner, "alice");
  EXPECT_EQ(c.worker.pool, "gpu");
  EXPECT_EQ(c.worker.id, "w-1");
  EXPECT_EQ(c.worker.gateway_url, "http://gw:9000");
  EXPECT_EQ(c.worker.status_poll, 50ms);
}

TEST(ParseConfig, AbsoluteAppsPathIsKept) {
  EXPECT_EQ(parse_config("apps: /opt/apps.yaml\n", "/etc/d.yaml").apps_file, "/opt/apps.yaml");
}

TEST(ParseConfig, UnknownKeyInASectionNamesFileLineColumnAndKey) {
  auto err = config_error_of("redis:\n  path: /tmp/r.sock\n  colour: blue\n");
  EXPECT_EQ(err, "test.yaml:3:3: redis.colour: unknown key");
}

TEST(ParseConfig, UnknownTopLevelKeyNamesItsLine) {
  auto err = config_error_of("log_level: info\n\n# a comment\nworker:\n  slots: 2\nbogus: 1\n");
  EXPECT_EQ(err, "test.yaml:6:1: bogus: unknown key");
}

TEST(ParseConfig, MisspelledKeyDeepInTheFileNamesItsLine) {
  auto err = config_error_of(
      "daemon:\n  heartbeat_interval_ms: 100\n  lease_timeout_ms: 500\n"
      "worker:\n  slots: 2\n  ownr: bob\n");
  EXPECT_TRUE(starts_with(err, "test.yaml:6:3: ")) << err;
  EXPECT_NE(err.find("worker.ownr"), std::string::npos) << err;
}

TEST(ParseConfig, BadValueTypeNamesItsLine) {
  auto err = config_error_of("gateway:\n  port: eighty\n");
  EXPECT_EQ(err, "test.yaml:2:9: gateway.port: expected an integer");
  err = config_error_of("worker:\n  owner: [a, b]\n");
  EXPECT_TRUE(starts_with(err, "test.yaml:2:")) << err;
  EXPECT_NE(err.find("worker.owner: expected a string"), std::string::npos) << err;
  err = config_error_of("log_level: info\ndaemon:\n  heartbeat_interval_ms: 1.5\n");
  EXPECT_TRUE(starts_with(err, "test.yaml:3:")) << err;
  EXPECT_NE(err.find("daemon.heartbeat_interval_ms"), std::string::npos) << err;
}

TEST(ParseConfig, SectionThatIsNotAMappingIsRejected) {
  auto err = config_error_of("redis: localhost\n");
  EXPECT_TRUE(starts_with(err, "test.yaml:1:")) << err;
  EXPECT_NE(err.find("redis: expected a mapping"), std::string::npos) << err;
}

TEST(ParseConfig, OutOfRangeValuesAreRejected) {
  auto err = config_error_of("redis:\n  port: 70000\n");
  EXPECT_TRUE(starts_with(err, "test.yaml:2:")) << err;
  EXPECT_NE(err.find("redis.port: must be between 1 and 65535"), std::string::npos) << err;
  err = config_error_of("worker:\n  status_poll_ms: -5\n");
  EXPECT_TRUE(starts_with(err, "test.yaml:2:")) << err;
  EXPECT_NE(err.find("must not be negative"), std::string::npos) << err;
  err = config_error_of("daemon:\n  heartbeat_interval_ms: 5\n");
  EXPECT_NE(err.find("daemon.heartbeat_interval_ms: must be at least 10"), std::string::npos) << err;
  err = config_error_of("daemon:\n  stats_interval_s: 0\n");
  EXPECT_NE(err.find("daemon.stats_interval_s: must be between 1 and 3600"), std::string::npos) << err;
}

TEST(ParseConfig, BadLogLevelAndEndpointAreRejected) {
  auto err = config_error_of("log_level: loud\n");
  EXPECT_TRUE(starts_with(err, "test.yaml:1:")) << err;
  EXPECT_NE(err.find("log_level"), std::string::npos) << err;
  err = config_error_of("worker:\n  daemon_endpoint: http://daemon\n");
  EXPECT_TRUE(starts_with(err, "test.yaml:2:")) << err;
  EXPECT_NE(err.find("worker.daemon_endpoint: expected ZeroMQ endpoints"), std::string::npos) << err;
  err = config_error_of("daemon:\n  dispatch_policy: lottery\n");
  EXPECT_TRUE(starts_with(err, "test.yaml:2:")) << err;
  EXPECT_NE(err.find("daemon.dispatch_policy: expected fair_share or fifo"), std::string::npos) << err;
}

TEST(ParseConfig, SentinelsNameTheMasterAndOneReplicaIsWaitedForByDefault) {
  auto c = parse_config(
      "redis:\n  sentinels: [\"10.0.0.1:26379\", \"sentinel-2.example.org:26380\"]\n  master_name: "
      "descprod\n  sentinel_password: s3cret\n",
      "t.yaml");
  ASSERT_EQ(c.redis.endpoint.sentinels.size(), 2u);
  EXPECT_EQ(c.redis.endpoint.sentinels[1].host, "sentinel-2.example.org");
  EXPECT_EQ(c.redis.endpoint.sentinels[1].port, 26380);
  EXPECT_EQ(c.redis.endpoint.master_name, "descprod");
  EXPECT_EQ(c.redis.endpoint.sentinel_password, "s3cret");
  EXPECT_EQ(c.redis.wait_replicas, 1);
  EXPECT_EQ(c.redis.wait_timeout_ms, 100);
  EXPECT_EQ(c.redis.endpoint.describe(), "sentinel:descprod@10.0.0.1:26379,sentinel-2.example.org:26380");
  EXPECT_EQ(parse_config("redis:\n  path: /r.sock\n", "t.yaml").redis.wait_replicas, 0);
  EXPECT_EQ(parse_config("redis:\n  sentinels: [\"a:1\"]\n  master_name: m\n  wait_replicas: 0\n", "t.yaml")
                .redis.wait_replicas,
            0);
  for (const auto& [text, why] : std::vector<std::pair<std::string, std::string>>{
           {"redis:\n  sentinels: [\"a:1\"]\n", "master_name is needed"},
           {"redis:\n  master_name: m\n", "goes with sentinels"},
           {"redis:\n  sentinels: [\"a\"]\n  master_name: m\n", "is not host:port"},
           {"redis:\n  sentinels: [\"a:0\"]\n  master_name: m\n", "is not host:port"},
           {"redis:\n  sentinels: [\"a:99999\"]\n  master_name: m\n", "is not host:port"},
           {"redis:\n  sentinels: [\":5\"]\n  master_name: m\n", "is not host:port"},
           {"redis:\n  sentinels: [\"a:1\"]\n  master_name: \"m x\"\n", "1 to 64 of"},
           {"redis:\n  path: /r.sock\n  sentinels: [\"a:1\"]\n  master_name: m\n", "exclude each other"},
           {"redis:\n  host: r.example.org\n  sentinels: [\"a:1\"]\n  master_name: m\n",
            "exclude each other"},
           {"redis:\n  sentinels: [\"a:1\"]\n  master_name: m\n  wait_replicas: 17\n", "between 0 and 16"},
           {"redis:\n  wait_timeout_ms: 0\n", "between 1 and 60000"},
       }) {
    try {
      parse_config(text, "t.yaml");
      ADD_FAILURE() << "accepted: " << text;
    } catch (const config_error& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  }
}

TEST(ParseConfig, LeaderKeysAndEndpointListsAreReadAndChecked) {
  auto c = parse_config(
      "daemon:\n  leader_ttl_ms: 5000\n  leader_file: /run/descprod/leader\n"
      "worker:\n  daemon_endpoint: \"tcp://d1:5601, tcp://d2:5601,\"\n"
      "gateway:\n  daemon_endpoint: ipc:///a.ipc,tcp://d2:5600\n",
      "test.yaml");
  EXPECT_EQ(c.daemon.leader_ttl, 5000ms);
  EXPECT_EQ(c.daemon.leader_file, "/run/descprod/leader");
  EXPECT_EQ(endpoint_list(c.worker.daemon_endpoint),
            (std::vector<std::string>{"tcp://d1:5601", "tcp://d2:5601"}));
  EXPECT_EQ(endpoint_list(c.gateway.daemon_endpoint),
            (std::vector<std::string>{"ipc:///a.ipc", "tcp://d2:5600"}));
  EXPECT_EQ(parse_config("", "test.yaml").daemon.leader_ttl, 2000ms);
  EXPECT_TRUE(parse_config("", "test.yaml").daemon.leader_file.empty());
  auto err = config_error_of("daemon:\n  leader_ttl_ms: 100\n");
  EXPECT_TRUE(starts_with(err, "test.yaml:2:")) << err;
  EXPECT_NE(err.find("daemon.leader_ttl_ms: must be in [300, 600000]"), std::string::npos) << err;
  err = config_error_of("worker:\n  daemon_endpoint: tcp://d1:5601,http://d2\n");
  EXPECT_NE(err.find("worker.daemon_endpoint: expected ZeroMQ endpoints"), std::string::npos) << err;
  EXPECT_NE(err.find("'http://d2'"), std::string::npos) << err;
  err = config_error_of("gateway:\n  daemon_endpoint: \" , \"\n");
  EXPECT_NE(err.find("gateway.daemon_endpoint: expected a ZeroMQ endpoint"), std::string::npos) << err;
  // The daemon binds one endpoint of each kind: no list there.
  err = config_error_of("daemon:\n  worker_endpoint: tcp://a:1,tcp://b:2\n");
  EXPECT_NE(err.find("daemon.worker_endpoint"), std::string::npos) << err;
}

TEST(ParseConfig, LeaseTimeoutNotLongerThanHeartbeatIsRejected) {
  auto err = config_error_of("daemon:\n  heartbeat_interval_ms: 1000\n  lease_timeout_ms: 1000\n");
  EXPECT_TRUE(starts_with(err, "test.yaml:3:")) << err;
  EXPECT_NE(err.find("daemon.lease_timeout_ms: must be longer than heartbeat_interval_ms"), std::string::npos)
      << err;
  err = config_error_of("daemon:\n  lease_timeout_ms: 500\n");  // default heartbeat 1000
  EXPECT_TRUE(starts_with(err, "test.yaml:2:")) << err;
  EXPECT_NE(err.find("lease_timeout_ms"), std::string::npos) << err;
}

TEST(ParseConfig, HeartbeatLongerThanTheDefaultLeaseTimeoutIsRejected) {
  auto err = config_error_of("daemon:\n  heartbeat_interval_ms: 20000\n");  // default lease 10000
  EXPECT_TRUE(starts_with(err, "test.yaml:2:")) << err;
  EXPECT_NE(err.find("heartbeat_interval_ms"), std::string::npos) << err;
}

TEST(ParseConfig, YamlSyntaxErrorNamesItsLine) {
  auto err = config_error_of("redis:\n  path: [unclosed\n");
  EXPECT_TRUE(starts_with(err, "test.yaml:")) << err;
  EXPECT_FALSE(err.empty());
}

TEST(LoadConfig, ReadsAFileAndResolvesAppsNextToIt) {
  test::temp_dir dir;
  test::write_file(dir.file("daemon.yaml"), "apps: my-apps.yaml\nworker:\n  slots: 3\n");
  auto c = load_config(dir.file("daemon.yaml"));
  EXPECT_EQ(c.worker.slots, 3);
  EXPECT_EQ(c.apps_file, dir.file("my-apps.yaml"));
}

TEST(LoadConfig, MissingFileIsAConfigError) {
  test::temp_dir dir;
  EXPECT_THROW(load_config(dir.file("absent.yaml")), config_error);
}

TEST(MergeConfig, MappingsMergeKeyByKeyAndAnythingElseReplaces) {
  const std::string base =
      "log_level: info\n"
      "gateway:\n  port: 8080\n  sites: [a]\n"
      "worker:\n  owner: admin\n  site: x\n";
  const std::string overlay =
      "log_level: debug\n"
      "gateway:\n  sites: [nersc, slac]\n"
      "worker:\n  site: ~\n"
      "pilots:\n  enabled: true\n";
  auto merged = YAML::Load(merge_config_yaml(base, overlay, "overlay.yaml"));
  EXPECT_EQ(merged["log_level"].as<std::string>(), "debug");
  EXPECT_EQ(merged["gateway"]["port"].as<int>(), 8080) << "kept from the base";
  EXPECT_EQ(merged["gateway"]["sites"].as<std::vector<std::string>>(),
            (std::vector<std::string>{"nersc", "slac"}))
      << "a list is replaced, not appended to";
  EXPECT_EQ(merged["worker"]["owner"].as<std::string>(), "admin");
  EXPECT_TRUE(merged["worker"]["site"].IsNull()) << "null removes a value";
  EXPECT_TRUE(merged["pilots"]["enabled"].as<bool>());
  // An empty overlay changes nothing; an overlay that is not a mapping or not YAML is refused.
  EXPECT_EQ(YAML::Load(merge_config_yaml(base, "", "o"))["gateway"]["port"].as<int>(), 8080);
  EXPECT_THROW(merge_config_yaml(base, "- a\n- b\n", "o"), config_error);
  EXPECT_THROW(merge_config_yaml(base, "gateway: [unclosed\n", "o"), config_error);
}

TEST(ParseApps, AGivenCommandRunsWithoutALoginShellUnlessAskedAndTheDefaultCanBeTurnedOff) {
  auto reg = parse_apps(
      "apps:\n  - name: a\n    command: [\"/bin/true\"]\n"
      "  - name: b\n    command: [\"/bin/true\"]\n    login_shell: true\n"
      "  - name: c\n    login_shell: false\n",
      "apps.yaml");
  EXPECT_FALSE(reg.find("a")->login_shell);
  EXPECT_TRUE(reg.find("b")->login_shell);
  EXPECT_FALSE(reg.find("c")->login_shell);
  EXPECT_EQ(reg.find("c")->command, std::vector<std::string>{"runapp-c"});
}

TEST(ParseApps, DefaultsFollowDescprod) {
  auto reg = parse_apps("apps:\n  - name: mysleep\n", "apps.yaml");
  ASSERT_EQ(reg.apps.size(), 1u);
  const auto* a = reg.find("mysleep");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->name, "mysleep");
  EXPECT_EQ(a->command, std::vector<std::string>{"runapp-mysleep"});
  EXPECT_EQ(a->args, (std::vector<std::string>{"{config}", "{howfig}"}));
  EXPECT_TRUE(a->env.empty());
  EXPECT_TRUE(a->login_shell) << "runapp-<name> runs in a login shell, as DESCprod ran it";
  EXPECT_EQ(a->cores, 1);
  EXPECT_EQ(a->time_limit_s, 0);
  EXPECT_EQ(a->max_attempts, 3);
  EXPECT_EQ(a->pattern, "");
  EXPECT_FALSE(a->compiled_pattern);
  EXPECT_EQ(reg.find("parsltest"), nullptr);
}

TEST(ParseApps, ReadsEveryKey) {
  auto reg = parse_apps(R"(apps:
  - name: parsltest
    command: [/opt/bin/runapp-parsltest, --verbose]
    args: ["{config}", "--id={id}"]
    env: {OMP_NUM_THREADS: "4"}
    login_shell: true
    cores: 4
    time_limit_s: 90.5
    max_attempts: 1
    pattern: "sleep(-[a-z]+[0-9]+)*"
    howfig_pattern: "[a-z]*"
    help: Runs test tasks.
  - name: mysleep
)",
                        "apps.yaml");
  ASSERT_EQ(reg.apps.size(), 2u);
  const auto& a = reg.apps.at("parsltest");
  EXPECT_EQ(a.command, (std::vector<std::string>{"/opt/bin/runapp-parsltest", "--verbose"}));
  EXPECT_EQ(a.args, (std::vector<std::string>{"{config}", "--id={id}"}));
  EXPECT_EQ(a.env, (std::map<std::string, std::string>{{"OMP_NUM_THREADS", "4"}}));
  EXPECT_TRUE(a.login_shell);
  EXPECT_EQ(a.cores, 4);
  EXPECT_DOUBLE_EQ(a.time_limit_s, 90.5);
  EXPECT_EQ(a.max_attempts, 1);
  EXPECT_EQ(a.help, "Runs test tasks.");
  ASSERT_TRUE(a.compiled_pattern);
  EXPECT_TRUE(std::regex_match(std::string("sleep-ttsk2-ntsk20"), *a.compiled_pattern));
  EXPECT_FALSE(std::regex_match(std::string("rm-rf"), *a.compiled_pattern));
  ASSERT_TRUE(a.compiled_howfig_pattern);
  EXPECT_EQ(reg.apps.at("mysleep").command, std::vector<std::string>{"runapp-mysleep"});
}

TEST(ParseApps, DuplicateNameIsRejectedAtItsLine) {
  auto err = apps_error_of("apps:\n  - name: mysleep\n  - name: other\n  - name: mysleep\n");
  EXPECT_TRUE(starts_with(err, "apps.yaml:4:")) << err;
  EXPECT_NE(err.find("duplicate application mysleep"), std::string::npos) << err;
}

TEST(ParseApps, BadRegexIsRejectedAtItsLine) {
  auto err = apps_error_of("apps:\n  - name: x\n    pattern: \"a(\"\n");
  EXPECT_TRUE(starts_with(err, "apps.yaml:3:")) << err;
  EXPECT_NE(err.find("pattern: invalid regular expression"), std::string::npos) << err;
  err = apps_error_of("apps:\n  - name: x\n    howfig_pattern: \"[\"\n");
  EXPECT_TRUE(starts_with(err, "apps.yaml:3:")) << err;
  EXPECT_NE(err.find("howfig_pattern"), std::string::npos) << err;
}

TEST(ParseApps, BadEntriesAreRejected) {
  EXPECT_NE(apps_error_of("apps:\n  - name: My App\n").find("apps[].name"), std::string::npos);
  EXPECT_NE(apps_error_of("apps:\n  - command: [x]\n").find("apps[].name: missing"), std::string::npos);
  auto err = apps_error_of("apps:\n  - name: x\n    colour: red\n");
  EXPECT_EQ(err, "apps.yaml:3:5: apps[].colour: unknown key");
  EXPECT_NE(apps_error_of("apps:\n  - name: x\n    command: []\n").find("must not be empty"),
            std::string::npos);
  EXPECT_NE(apps_error_of("apps:\n  - name: x\n    login_shell: maybe\n").find("expected true or false"),
            std::string::npos);
  EXPECT_NE(apps_error_of("other: 1\n").find("unknown key"), std::string::npos);
  EXPECT_NE(apps_error_of("").find("apps: missing"), std::string::npos);
  EXPECT_NE(apps_error_of("apps: mysleep\n").find("expected a list"), std::string::npos);
}

TEST(AppArgv, SubstitutesConfigHowfigAndId) {
  auto reg = parse_apps(
      "apps:\n  - name: a\n    args: [\"{config}\", \"{howfig}\", \"--id={id}\", \"{config}:{howfig}\"]\n",
      "apps.yaml");
  EXPECT_EQ(reg.apps.at("a").argv_for("sleep-ttsk2", "fast", 81),
            (std::vector<std::string>{"runapp-a", "sleep-ttsk2", "fast", "--id=81", "sleep-ttsk2:fast"}));
}

TEST(AppArgv, BatchHowfigsGiveThePmbRestOrRunDescprodPmbs) {
  auto reg = parse_apps("apps:\n  - name: mysleep\n", "apps.yaml");
  const auto& a = reg.apps.at("mysleep");
  EXPECT_EQ(a.job_argv("10", "pmb-30-debug-cpu,fast", 1, true),
            (std::vector<std::string>{"runapp-mysleep", "10", "fast"}));
  EXPECT_EQ(a.job_argv("10", "pmb-30-debug-cpu", 1, true),
            (std::vector<std::string>{"runapp-mysleep", "10"}));
  EXPECT_EQ(a.job_argv("10", "pmbs-30,fast", 1, true), (std::vector<std::string>{"descprod-pmbs"}));
  // Without pilots a batch howfig is text for the app, as any howfig.
  EXPECT_EQ(a.job_argv("10", "pmbs-30,fast", 1, false),
            (std::vector<std::string>{"runapp-mysleep", "10", "pmbs-30,fast"}));
  EXPECT_EQ(a.job_argv("10", "fast", 1, true), (std::vector<std::string>{"runapp-mysleep", "10", "fast"}));
  EXPECT_EQ(a.job_argv("10", "pmb-30-debug,ptenv:00:hom", 1, false),
            (std::vector<std::string>{"runapp-mysleep", "10", "pmb-30-debug,ptenv:00:hom"}));
  // Malformed: refused at submit, never pinned; given whole, as any howfig.
  EXPECT_EQ(a.job_argv("10", "pmb-0,x", 1, true),
            (std::vector<std::string>{"runapp-mysleep", "10", "pmb-0,x"}));
}

TEST(ParseConfig, PinnedPilotKeys) {
  auto c = parse_config(
      "pilots:\n  pinned_max: 3\n  pinned_idle_timeout_s: 7\n  pinned_qos: {debug: \"\", regular: shared}\n"
      "  pinned_constraints: {cpu: \"\"}\n",
      "x.yaml");
  EXPECT_EQ(c.pilots.pinned_max, 3);
  EXPECT_EQ(c.pilots.pinned_idle_timeout_s, 7);
  EXPECT_EQ(c.pilots.pinned_qos, (std::map<std::string, std::string>{{"debug", ""}, {"regular", "shared"}}));
  EXPECT_EQ(c.pilots.pinned_constraints, (std::map<std::string, std::string>{{"cpu", ""}}));
  EXPECT_EQ(parse_config("", "x.yaml").pilots.pinned_max, 20);
}

TEST(ParseConfig, PilotsForSeveralSitesAsAList) {
  auto c = parse_config(
      "pilots:\n  - {enabled: true, site: nersc, job_name: p-nersc, max: 3}\n"
      "  - {enabled: true, site: slac, job_name: p-slac, partition: roma}\n",
      "x.yaml");
  ASSERT_EQ(c.pilot_sites.size(), 2u);
  EXPECT_EQ(c.pilot_sites[0].site, "nersc");
  EXPECT_EQ(c.pilot_sites[0].max, 3);
  EXPECT_EQ(c.pilot_sites[1].partition, "roma");
  EXPECT_EQ(c.pilots.site, "nersc") << "the first site's are `pilots`";
  EXPECT_EQ(parse_config("pilots:\n  enabled: true\n", "x.yaml").pilot_sites.size(), 1u);
  auto error_of = [](const std::string& text) {
    try {
      parse_config(text, "x.yaml");
    } catch (const config_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of("pilots:\n  - {site: a, job_name: x}\n  - {job_name: y}\n")
                .find("pilots[1]: site: required when there are pilots for several sites"),
            std::string::npos);
  EXPECT_NE(error_of("pilots:\n  - {site: a, job_name: x}\n  - {site: a, job_name: y}\n")
                .find("pilots[1]: site: 'a' has pilots already"),
            std::string::npos);
  EXPECT_NE(error_of("pilots:\n  - {site: a, job_name: x}\n  - {site: b, job_name: x}\n")
                .find("pilots[1]: job_name: 'x' is another site's"),
            std::string::npos);
  EXPECT_NE(error_of("pilots:\n  - {site: a, sitez: b}\n").find("pilots[0].sitez: unknown key"),
            std::string::npos)
      << error_of("pilots:\n  - {site: a, sitez: b}\n");
}

TEST(AppArgv, DefaultArgsDropAnEmptyHowfig) {
  auto reg = parse_apps("apps:\n  - name: mysleep\n", "apps.yaml");
  const auto& a = reg.apps.at("mysleep");
  EXPECT_EQ(a.argv_for("10", "", 1), (std::vector<std::string>{"runapp-mysleep", "10"}));
  EXPECT_EQ(a.argv_for("10", "h", 1), (std::vector<std::string>{"runapp-mysleep", "10", "h"}));
}

TEST(AppArgv, ValuesAreNeverSplitOrInterpreted) {
  auto reg = parse_apps("apps:\n  - name: a\n", "apps.yaml");
  EXPECT_EQ(reg.apps.at("a").argv_for("$(id); rm -rf x", "a b", 1),
            (std::vector<std::string>{"runapp-a", "$(id); rm -rf x", "a b"}));
}

}  // namespace
}  // namespace descprod

namespace descprod {
namespace {

// Keys that go together (a certificate and its key, a CURVE key pair): one without the other
// names the one given, with its line.
TEST(ParseConfig, PairedKeysNameTheOneGivenAlone) {
  EXPECT_EQ(config_error_of("gateway:\n  tls_key: /k.pem\n"),
            "test.yaml:2:12: gateway.tls_key: tls_cert and tls_key go together");
  EXPECT_EQ(config_error_of("daemon:\n  curve_secret_key_file: /s\n"),
            "test.yaml:2:26: daemon.curve_secret_key_file: curve_secret_key_file and "
            "curve_authorized_keys_dir go together");
  EXPECT_EQ(config_error_of("worker:\n\n  curve_secret_key_file: /s\n"),
            "test.yaml:3:26: worker.curve_secret_key_file: curve_server_key_file and "
            "curve_secret_key_file go together");
  EXPECT_EQ(config_error_of("worker:\n  curve_server_key_file: /p\n  curve_secret_key_file: /s\n"), "");
}

// gateway.oidc: every key read, the defaults, the secret read from its file (relative to the
// config's directory), and each refusal naming its key.
TEST(ParseConfig, OidcProvidersAreReadAndCheckedKeyByKey) {
  test::temp_dir dir;
  test::write_file(dir.file("secret"), "s3cret \n");
  std::string file = dir.file("descprod.yaml");
  auto c = parse_config(
      "gateway:\n"
      "  oidc:\n"
      "    - name: nersc\n"
      "      issuer: https://iris.example/realm/\n"
      "      client_id: descprod\n"
      "      client_secret_file: secret\n"
      "      token_auth: client_secret_post\n"
      "      scopes: [openid, email]\n"
      "      username_claim: nersc_user\n"
      "      button_label: Log in with NERSC\n"
      "      allowed_email_domains: [LBL.gov, nersc.gov]\n"
      "      auto_approve: true\n"
      "      redirect_uri: https://descprod.example/login/oidc/callback\n"
      "    - name: local\n"
      "      issuer: http://127.0.0.1:9000/api/oidc\n"
      "      client_id: c\n"
      "      client_secret_file: " +
          dir.file("secret") + "\n",
      file);
  ASSERT_EQ(c.gateway.oidc.size(), 2u);
  const auto& n = c.gateway.oidc[0];
  EXPECT_EQ(n.name, "nersc");
  EXPECT_EQ(n.issuer, "https://iris.example/realm");  // a trailing '/' dropped
  EXPECT_EQ(n.client_secret, "s3cret");
  EXPECT_EQ(n.token_auth, "client_secret_post");
  EXPECT_EQ(n.scopes, (std::vector<std::string>{"openid", "email"}));
  EXPECT_EQ(n.username_claim, "nersc_user");
  EXPECT_EQ(n.button_label, "Log in with NERSC");
  EXPECT_EQ(n.allowed_email_domains, (std::vector<std::string>{"lbl.gov", "nersc.gov"}));
  EXPECT_TRUE(n.auto_approve);
  const auto& l = c.gateway.oidc[1];
  EXPECT_EQ(l.token_auth, "client_secret_basic");
  EXPECT_EQ(l.scopes, (std::vector<std::string>{"openid", "profile", "email"}));
  EXPECT_EQ(l.username_claim, "preferred_username");
  EXPECT_EQ(l.button_label, "Log in with local");
  EXPECT_FALSE(l.auto_approve);

  // One provider may go without a name.
  auto one = parse_config(
      "gateway:\n  oidc:\n    - issuer: https://a.example\n      client_id: c\n"
      "      client_secret_file: secret\n",
      file);
  EXPECT_EQ(one.gateway.oidc.at(0).name, "oidc");

  auto err = [&](const std::string& entry) {
    return config_error_of(
        "gateway:\n  oidc:\n    - name: p\n      client_id: c\n      client_secret_file: " +
            dir.file("secret") + "\n" + entry,
        file);
  };
  EXPECT_EQ(err("      issuer: https://a.example\n"), "");
  EXPECT_NE(err("      issuer: http://a.example\n").find("issuer: required: an https:// URL"),
            std::string::npos);
  EXPECT_NE(err("").find("issuer"), std::string::npos);
  EXPECT_NE(err("      issuer: http://127.0.0.1.evil.example\n").find("issuer"), std::string::npos);
  EXPECT_NE(err("      issuer: http://evil@127.0.0.1/o\n").find("issuer"), std::string::npos);
  EXPECT_NE(err("      issuer: http://127.0.0.1:80x/o\n").find("issuer"), std::string::npos);
  EXPECT_EQ(err("      issuer: http://[::1]:9000/o\n"), "");
  EXPECT_EQ(err("      issuer: http://127.0.0.2:9000\n"), "");
  EXPECT_NE(err("      issuer: https://a.example\n      token_auth: private_key_jwt\n").find("token_auth"),
            std::string::npos);
  EXPECT_NE(err("      issuer: https://a.example\n      scopes: [email]\n").find("must hold openid"),
            std::string::npos);
  EXPECT_NE(err("      issuer: https://a.example\n      scopes: [openid, \"a b\"]\n").find("is not a scope"),
            std::string::npos);
  EXPECT_NE(
      err("      issuer: https://a.example\n      allowed_email_domains: [\"a@b\"]\n").find("not a domain"),
      std::string::npos);
  EXPECT_NE(
      err("      issuer: https://a.example\n      redirect_uri: http://a.example/cb\n").find("redirect_uri"),
      std::string::npos);
  EXPECT_NE(err("      issuer: https://a.example\n      colour: blue\n")
                .find("gateway.oidc[0].colour: unknown key"),
            std::string::npos);
  EXPECT_NE(config_error_of(
                "gateway:\n  oidc:\n    - name: p\n      issuer: https://a.example\n      client_id: c\n"
                "      client_secret_file: /nonexistent/secret\n",
                file)
                .find("cannot read /nonexistent/secret"),
            std::string::npos);
  EXPECT_NE(config_error_of("gateway:\n  oidc:\n    - name: callback\n      issuer: https://a.example\n"
                            "      client_id: c\n      client_secret_file: secret\n",
                            file)
                .find("not 'callback'"),
            std::string::npos);
  EXPECT_NE(config_error_of(
                "gateway:\n  oidc:\n"
                "    - {name: a, issuer: 'https://a.example', client_id: c, client_secret_file: secret}\n"
                "    - {name: a, issuer: 'https://b.example', client_id: c, client_secret_file: secret}\n",
                file)
                .find("listed twice"),
            std::string::npos);
  // Beyond loopback without public_url, the provider would send browsers to a Host the gateway
  // cannot vouch for: the redirect URI must be given.
  EXPECT_NE(config_error_of("gateway:\n  address: 0.0.0.0\n  oidc:\n"
                            "    - {issuer: 'https://a.example', client_id: c, client_secret_file: secret}\n",
                            file)
                .find("redirect_uri: required when the gateway listens beyond loopback"),
            std::string::npos);
}

}  // namespace
}  // namespace descprod
