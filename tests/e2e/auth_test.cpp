// Worker authentication, end to end (docs/protocol.md#worker-authentication; docs/operators.md,
// Workers): real Redis, daemon, gateway and workers; tokens, pools and CURVE keys made with the
// real descprod-admin.
//  - a worker without a token, or with an unknown one, is refused and exits 1;
//  - a worker of user B never receives user A's job; admitted to a pool A is in, it does;
//  - a token revoked while its worker runs stops that worker's dispatch;
//  - with CURVE keys, only workers whose public key the daemon lists can connect.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <filesystem>
#include <regex>
#include <set>

#include "core/redis.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

service_options auth_options() {
  service_options o;
  o.workers = 0;
  o.reconcile_ms = 300;  // token re-checks ride on the reconcile interval
  return o;
}

// Runs descprod-admin with the service's config; returns its stdout+stderr, failing the test
// unless it exits with `want_rc`.
std::string admin(service& s, const std::vector<std::string>& args, int want_rc = 0) {
  return s.run_admin(args, want_rc);
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// A worker token for `owner` (pools optional), written to a file for --token-file.
std::string worker_token_file(service& s, const std::string& owner,
                              const std::vector<std::string>& pools = {}) {
  std::vector<std::string> args{"worker-token", owner};
  for (const auto& p : pools) {
    args.push_back("--pool");
    args.push_back(p);
  }
  auto token = trim(admin(s, args));
  EXPECT_EQ(token.rfind("dp_", 0), 0u) << token;
  static int n = 0;
  auto file = s.dir.file("token-" + owner + "-" + std::to_string(++n));
  write_file(file, token + "\n");
  return file;
}

std::string field(service& s, long long id, const char* name) {
  auto j = s.job(id);
  auto it = j.find(name);
  if (it == j.end() || !it->value().is_string()) return "";
  return std::string(it->value().as_string());
}

bool all_in(service& s, const std::vector<long long>& ids, const std::string& state,
            const std::string& token = "") {
  for (auto id : ids)
    if (s.state(id, token) != state) return false;
  return true;
}

std::vector<long long> submit_n(service& s, int n, const std::string& token) {
  std::vector<long long> ids;
  for (int i = 0; i < n; ++i) ids.push_back(s.submit(R"({"jobtype":"mysleep","config":"0"})", token));
  return ids;
}

TEST(WorkerAuth, WorkerWithoutTokenOrWithUnknownTokenIsRefused) {
  service s(auth_options());
  // No token at all: a config without token_file.
  auto text = read_file(s.config_file);
  auto no_token = std::regex_replace(text, std::regex("  token_file: [^\n]*\n"), "");
  ASSERT_NE(no_token, text);
  write_file(s.dir.file("no-token.yaml"), no_token);
  process bare({s.bin("descprod-worker"), "--config", s.dir.file("no-token.yaml"), "--id", "bare"}, s.env(),
               s.dir.file("worker-bare.log"));
  EXPECT_EQ(bare.wait_exit(20s), 1) << bare.output();
  EXPECT_NE(bare.output().find("a worker token is required"), std::string::npos) << bare.output();

  auto forged = s.dir.file("forged-token");
  write_file(forged, "dp_" + std::string(64, 'a') + "\n");
  s.start_worker(0, "forged", forged);
  EXPECT_EQ(s.workers[0]->wait_exit(20s), 1) << s.workers[0]->output();
  EXPECT_NE(s.workers[0]->output().find("unknown or revoked worker token"), std::string::npos)
      << s.workers[0]->output();

  // An API token is not a worker token.
  auto api = s.dir.file("api-token");
  write_file(api, s.bob_token + "\n");
  s.start_worker(1, "api", api);
  EXPECT_EQ(s.workers[1]->wait_exit(20s), 1) << s.workers[1]->output();
  EXPECT_NE(s.workers[1]->output().find("not 'worker'"), std::string::npos) << s.workers[1]->output();

  // Nothing ran: a job submitted meanwhile stays ready.
  auto id = s.submit(R"({"jobtype":"mysleep","config":"0"})");
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(s.state(id), "ready");
  EXPECT_NE(read_file(s.daemon->output_file()).find("worker refused"), std::string::npos);
}

TEST(WorkerAuth, WorkerOfBobNeverReceivesAlicesJobsUnlessAdmittedToHerPool) {
  service s(auth_options());
  // Bob's worker, not in any pool.
  s.start_worker(0, "bob-w", worker_token_file(s, "bob"));
  auto alice_jobs = submit_n(s, 6, s.alice_token);
  auto bob_jobs = submit_n(s, 4, s.bob_token);
  ASSERT_TRUE(wait_until([&] { return all_in(s, bob_jobs, "done", s.bob_token); }, 60s))
      << s.workers[0]->output();
  // Bob's worker has been idle with credits for a while: Alice's jobs must still wait.
  std::this_thread::sleep_for(1500ms);
  for (auto id : alice_jobs) {
    EXPECT_EQ(s.state(id), "ready") << "job " << id;
    EXPECT_EQ(field(s, id, "worker"), "") << "job " << id;
  }
  for (auto id : bob_jobs) {
    auto j = s.job(id, s.bob_token);
    ASSERT_TRUE(j.contains("worker")) << json::serialize(j);
    EXPECT_EQ(j.at("worker"), "bob-w");
  }

  // Bob's second worker is admitted to pool "prod"; Alice joins "prod": it runs her jobs.
  s.start_worker(1, "bob-prod", worker_token_file(s, "bob", {"prod"}));
  std::this_thread::sleep_for(800ms);
  for (auto id : alice_jobs) EXPECT_EQ(s.state(id), "ready") << "alice is not in prod yet";
  EXPECT_NE(admin(s, {"pool", "add", "prod", "alice"}).find("added 1 to pool prod"), std::string::npos);
  EXPECT_EQ(trim(admin(s, {"pool", "list", "prod"})), "alice");
  ASSERT_TRUE(wait_until([&] { return all_in(s, alice_jobs, "done"); }, 60s)) << s.workers[1]->output();
  for (auto id : alice_jobs) EXPECT_EQ(field(s, id, "worker"), "bob-prod") << "job " << id;

  // Alice's own worker (no pool) runs only hers: Bob's new job waits for a Bob worker.
  s.workers[0]->stop(10s);
  s.workers[1]->stop(10s);
  s.start_worker(2, "alice-w", worker_token_file(s, "alice"));
  auto bob_late = s.submit(R"({"jobtype":"mysleep","config":"0"})", s.bob_token);
  auto alice_late = s.submit(R"({"jobtype":"mysleep","config":"0"})", s.alice_token);
  ASSERT_TRUE(wait_until([&] { return s.state(alice_late) == "done"; }, 60s));
  std::this_thread::sleep_for(800ms);
  EXPECT_EQ(s.state(bob_late, s.bob_token), "ready");
}

TEST(WorkerAuth, TokenRevokedWhileTheWorkerRunsStopsItsDispatch) {
  service s(auth_options());
  auto file = s.dir.file("alice-token");
  auto token = trim(admin(s, {"worker-token", "alice", "--label", "laptop"}));
  write_file(file, token + "\n");
  s.start_worker(0, "alice-w", file);
  auto first = s.submit(R"({"jobtype":"mysleep","config":"0"})");
  ASSERT_TRUE(wait_until([&] { return s.state(first) == "done"; }, 60s)) << s.workers[0]->output();
  EXPECT_NE(admin(s, {"worker-tokens", "alice"}).find("label=laptop"), std::string::npos);

  EXPECT_EQ(trim(admin(s, {"revoke", token})), "revoked");
  ASSERT_TRUE(wait_until(
      [&] {
        return read_file(s.daemon->output_file())
                   .find("worker token no longer valid: dispatch stopped worker=alice-w") !=
               std::string::npos;
      },
      10s))
      << read_file(s.daemon->output_file());
  auto second = s.submit(R"({"jobtype":"mysleep","config":"0"})");
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(s.state(second), "ready") << "a revoked worker got a job";
  redis_sync r(s.redis.endpoint());
  EXPECT_EQ(r.exec({"HGET", "descprod:worker:alice-w", "revoked"}).str, "1");
  EXPECT_EQ(admin(s, {"worker-tokens", "alice"}).find("label=laptop"), std::string::npos)
      << "listed after revoke";
  admin(s, {"revoke", token}, 1);  // a second revoke: no such token

  // A new token: a new worker runs the job.
  s.start_worker(1, "alice-w2", worker_token_file(s, "alice"));
  ASSERT_TRUE(wait_until([&] { return s.state(second) == "done"; }, 60s)) << s.workers[1]->output();
  EXPECT_EQ(field(s, second, "worker"), "alice-w2");
}

TEST(WorkerAuth, WithCurveOnlyWorkersWhoseKeyTheDaemonListsConnect) {
  // Keys first (descprod-admin keys needs no Redis), then a service configured with them.
  temp_dir keys("descprod-keys-");
  auto make_keys = [&](const std::string& name, const std::string& dir) {
    process p({std::string(DESCPROD_BIN_DIR) + "/descprod-admin", "keys", name, "--dir", dir}, {},
              keys.file(name + ".out"));
    EXPECT_EQ(p.wait_exit(20s), 0) << p.output();
    return p.output();
  };
  make_keys("daemon", keys.path());
  make_keys("good", keys.path());
  make_keys("bad", keys.path());
  fs::create_directories(keys.file("authorized"));
  fs::copy_file(keys.file("good.pub"), keys.file("authorized/good.pub"));
  EXPECT_EQ(fs::status(keys.file("good.key")).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  // A second `keys` for the same name never overwrites a key.
  process again({std::string(DESCPROD_BIN_DIR) + "/descprod-admin", "keys", "good", "--dir", keys.path()}, {},
                keys.file("again.out"));
  EXPECT_EQ(again.wait_exit(20s), 1);
  EXPECT_NE(again.output().find("not overwriting"), std::string::npos) << again.output();

  auto o = auth_options();
  o.workers = 0;
  o.daemon_extra = "  curve_secret_key_file: " + keys.file("daemon.key") +
                   "\n  curve_authorized_keys_dir: " + keys.file("authorized") + "\n";
  o.worker_extra = "  curve_server_key_file: " + keys.file("daemon.pub") +
                   "\n  curve_secret_key_file: " + keys.file("good.key") + "\n";
  service s(o);
  s.start_worker(0, "good");
  auto id = s.submit(R"({"jobtype":"mysleep","config":"0"})");
  ASSERT_TRUE(wait_until([&] { return s.state(id) == "done"; }, 60s)) << s.workers[0]->output();
  EXPECT_EQ(field(s, id, "worker"), "good");

  // The same config with an unlisted key, and one without CURVE at all: never welcomed.
  auto text = read_file(s.config_file);
  write_file(s.dir.file("bad.yaml"), std::regex_replace(text, std::regex("good\\.key"), "bad.key"));
  write_file(
      s.dir.file("plain.yaml"),
      std::regex_replace(
          text, std::regex("  curve_server_key_file: [^\n]*\n  curve_secret_key_file: [^\n]*good\\.key\n"),
          ""));
  ASSERT_NE(read_file(s.dir.file("plain.yaml")), text);
  process bad({s.bin("descprod-worker"), "--config", s.dir.file("bad.yaml"), "--id", "bad"}, s.env(),
              s.dir.file("worker-bad.log"));
  process plain({s.bin("descprod-worker"), "--config", s.dir.file("plain.yaml"), "--id", "plain"}, s.env(),
                s.dir.file("worker-plain.log"));
  ASSERT_TRUE(wait_until(
      [&] {
        return read_file(s.daemon->output_file()).find("curve: worker connection refused") !=
               std::string::npos;
      },
      10s))
      << read_file(s.daemon->output_file());
  s.workers[0]->stop(10s);  // only the bad and plain workers are left
  auto queued = s.submit(R"({"jobtype":"mysleep","config":"0"})");
  std::this_thread::sleep_for(2s);
  EXPECT_EQ(s.state(queued), "ready");
  EXPECT_EQ(bad.output().find("welcomed by daemon"), std::string::npos) << bad.output();
  EXPECT_EQ(plain.output().find("welcomed by daemon"), std::string::npos) << plain.output();
  EXPECT_TRUE(bad.running());
  EXPECT_TRUE(plain.running());
  redis_sync r(s.redis.endpoint());
  EXPECT_EQ(r.exec({"EXISTS", "descprod:worker:bad"}).integer, 0);
  EXPECT_EQ(r.exec({"EXISTS", "descprod:worker:plain"}).integer, 0);
  // Authorizing the key (no restart) lets the bad worker in on its next attempt.
  fs::copy_file(keys.file("bad.pub"), keys.file("authorized/bad.pub"));
  ASSERT_TRUE(wait_until([&] { return s.state(queued) == "done"; }, 60s)) << bad.output();
  EXPECT_EQ(field(s, queued, "worker"), "bad");
  bad.stop(10s);
  plain.stop(10s);
}

}  // namespace
}  // namespace descprod::test
