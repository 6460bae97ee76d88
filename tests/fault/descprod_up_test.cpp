// scripts/descprod-up, the real script (issue #13 items 9 and 10): it restarts an instance that
// holds 200,000 jobs (Redis answers -LOADING while it reads its append-only file, and the script
// must wait for PONG, not for redis-cli's exit code); every error path stops every process it
// started (a gateway port already taken); the orphans of a descprod-up killed with SIGKILL are
// stopped by the next start; and its Redis requires a password (var/ 0700, secrets 0600, an
// older var/ without a password is taken over with its data).
//
// The script runs with --no-setup (the binaries of this build, never apt-get or a build) and
// --var in a temporary directory, on a free loopback port. Processes are found by PID: the PIDs
// the script records in var/descprod-up.pids, and a bounded scan of /proc for any process whose
// command line, output or working directory is in the test's var/ (which catches what a pids
// file would miss).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "client/http.hpp"
#include "core/redis.hpp"
#include "core/store.hpp"
#include "tests/support/fill.hpp"
#include "tests/support/support.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

const std::string script = std::string(DESCPROD_SOURCE_DIR) + "/scripts/descprod-up";

int free_port() {
  net::io_context ioc;
  net::ip::tcp::acceptor a(ioc, net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

int mode_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int>(st.st_mode & 07777);
}

// Every live process (PID) that refers to `dir`: in its command line, its working directory or an
// open file. Bounded: one pass over /proc.
std::set<pid_t> processes_using(const std::string& dir) {
  std::set<pid_t> found;
  std::error_code ec;
  int scanned = 0;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    if (++scanned > 100000) break;
    const std::string name = e.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t pid = std::stoi(name);
    if (pid == ::getpid()) continue;
    bool uses = false;
    try {
      std::string cmd = read_file(e.path().string() + "/cmdline");
      if (cmd.find(dir) != std::string::npos) uses = true;
    } catch (const std::exception&) {
      continue;  // gone meanwhile
    }
    std::error_code lec;
    auto cwd = fs::read_symlink(e.path() / "cwd", lec);
    if (!lec && cwd.string().rfind(dir, 0) == 0) uses = true;
    int fds = 0;
    for (const auto& fd : fs::directory_iterator(e.path() / "fd", lec)) {
      if (uses || ++fds > 4096) break;
      std::error_code fec;
      auto target = fs::read_symlink(fd.path(), fec);
      if (!fec && target.string().rfind(dir, 0) == 0) uses = true;
    }
    // A zombie has no command line and no files: it counts as gone.
    if (uses) found.insert(pid);
  }
  return found;
}

bool alive(pid_t pid) {
  // A zombie (exited, not yet reaped by its parent) is not running.
  try {
    auto stat = read_file("/proc/" + std::to_string(pid) + "/stat");
    auto close = stat.rfind(')');
    return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
  } catch (const std::exception&) {
    return false;
  }
}

// One run of scripts/descprod-up on `var`, its output in `out`.
struct up {
  up(const std::string& var, const std::string& out, int port, int workers,
     std::vector<std::string> extra = {})
      : var_(var), out_(out) {
    std::vector<std::string> argv = {"bash",
                                     script,
                                     "--no-setup",
                                     "--var",
                                     var,
                                     "--bin",
                                     DESCPROD_BIN_DIR,
                                     "--port",
                                     std::to_string(port),
                                     "--workers",
                                     std::to_string(workers)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    started_ = clock_type::now();
    // The jobs' login shells read an empty profile, not the machine's (tests/support/service.cpp
    // says why).
    const std::string home =
        (std::filesystem::path(out).parent_path() / "home").string();  // the scratch dir's
    std::filesystem::create_directories(home);
    proc = std::make_unique<process>(argv, std::vector<std::pair<std::string, std::string>>{{"HOME", home}},
                                     out);
  }
  ~up() {
    if (!proc) return;
    // SIGTERM is the script's own stop (it stops its children by PID); the fixture then makes
    // sure nothing it recorded is left, by PID.
    auto recorded = recorded_pids();
    proc->stop(120s);
    for (pid_t p : recorded)
      if (alive(p)) ::kill(p, SIGKILL);
  }

  std::string output() const { return proc->output(); }
  // Waits for "Logs:", the last line the script prints once ready (after "URL:", the other
  // gateways, the admin token). false when the script exits or the deadline passes first.
  bool wait_ready(std::chrono::milliseconds timeout) {
    bool ok = wait_until([&] { return output().find("Logs: ") != std::string::npos || !proc->running(); },
                         timeout, 20ms);
    ready_after = clock_type::now() - started_;
    return ok && output().find("Logs: ") != std::string::npos && proc->running();
  }
  std::set<pid_t> recorded_pids() const {
    std::set<pid_t> pids;
    try {
      std::istringstream in(read_file(var_ + "/descprod-up.pids"));
      long long pid;
      std::string name;
      while (in >> pid >> name) pids.insert(static_cast<pid_t>(pid));
    } catch (const std::exception&) {
    }
    return pids;
  }
  std::string token() const { return trim(read_file(var_ + "/admin-token")); }
  int port() const { return std::stoi(trim(read_file(var_ + "/gateway.port"))); }

  std::string var_, out_;
  clock_type::time_point started_;
  clock_type::duration ready_after{};
  std::unique_ptr<process> proc;
};

// A Redis client of the services' ACL user, with the secret descprod-up made.
redis_endpoint service_endpoint(const std::string& var) {
  redis_endpoint ep;
  ep.unix_path = var + "/redis.sock";
  ep.username = "descprod";
  ep.password = trim(read_file(var + "/redis-password"));
  return ep;
}

// redis-cli, as an operator would run it; its output (stdout and stderr).
std::string redis_cli(const temp_dir& scratch, const std::string& var, std::vector<std::string> args,
                      std::vector<std::pair<std::string, std::string>> env = {}) {
  static int n = 0;
  std::string out = scratch.file("redis-cli-" + std::to_string(++n) + ".out");
  std::vector<std::string> argv = {"redis-cli", "-s", var + "/redis.sock"};
  argv.insert(argv.end(), args.begin(), args.end());
  process p(argv, env, out);
  EXPECT_TRUE(p.wait_exit(20s)) << "redis-cli did not finish";
  return trim(p.output());
}

std::map<std::string, std::string> hgetall(redis_sync& r, const std::string& key) {
  auto reply = r.exec({"HGETALL", key});
  std::map<std::string, std::string> m;
  for (std::size_t i = 0; i + 1 < reply.elements.size(); i += 2)
    m[reply.elements[i].str] = reply.elements[i + 1].str;
  return m;
}

// Jobs 1..n whose hash exists with the owner, type and create_time it had (ARGV only).
long long intact_jobs(redis_sync& r, long long n) {
  static const char* lua = R"(
local n = tonumber(ARGV[1]); local ok = 0
for id = 1, n do
  local f = redis.call('HMGET', 'descprod:job:' .. id, 'descname', 'jobtype', 'create_time')
  if f[1] == ARGV[2] and f[2] == ARGV[3] and f[3] then ok = ok + 1 end
end
return ok)";
  auto reply = r.exec({"EVAL", lua, "0", std::to_string(n), "admin", "mysleep"});
  EXPECT_FALSE(reply.is_error()) << reply.str;
  return reply.integer;
}

long long submit(int port, const std::string& token, const std::string& body) {
  auto r = http_request("127.0.0.1", port, "POST", "/api/jobs", body, {{"authorization", "Bearer " + token}});
  EXPECT_EQ(r.status, 201) << r.body;
  if (r.status != 201) return -1;
  return r.json().as_object().at("id").as_int64();
}

std::string job_state(int port, const std::string& token, long long id) {
  auto r = http_request("127.0.0.1", port, "GET", "/api/jobs/" + std::to_string(id), "",
                        {{"authorization", "Bearer " + token}});
  if (r.status != 200) return "";
  return std::string(r.json().as_object().at("state").as_string());
}

TEST(DescprodUp, RestartsWith200000JobsWaitingForPongAndEverythingIsThere) {
  temp_dir var("dpup-");
  temp_dir scratch("dpup-out-");
  const long long jobs = 200000, done_jobs = 20000;
  int port = free_port();
  std::map<std::string, std::string> done_before, queued_before;
  std::string next_id_before;
  {
    // The first start makes the account, the tokens and Redis's secrets; no workers, so that
    // the filled jobs stay as written.
    up first(var.path(), scratch.file("first.out"), port, 0);
    ASSERT_TRUE(first.wait_ready(120s)) << first.output();
    auto t0 = clock_type::now();
    fill(service_endpoint(var.path()), jobs, done_jobs);
    std::cout << "[ figure ] filled " << jobs << " jobs (" << done_jobs << " run to done) in "
              << std::chrono::duration<double>(clock_type::now() - t0).count() << " s" << std::endl;
    redis_sync r(service_endpoint(var.path()));
    done_before = hgetall(r, "descprod:job:1234");
    queued_before = hgetall(r, "descprod:job:150000");
    ASSERT_EQ(done_before["state"], "done");
    ASSERT_EQ(queued_before["state"], "ready");
    next_id_before = r.exec({"GET", "descprod:next_job_id"}).str;
    ASSERT_EQ(next_id_before, std::to_string(jobs));
    ASSERT_EQ(sum_of_counts(r), jobs);
    ASSERT_EQ(r.exec({"ZCARD", "descprod:queue"}).integer, jobs - done_jobs);
    auto recorded = first.recorded_pids();
    EXPECT_EQ(recorded.size(), 3u);  // redis, daemon, gateway
    for (pid_t p : recorded) EXPECT_TRUE(alive(p)) << p;
    // Stopped as an operator does (Ctrl-C / SIGTERM): everything it started is gone.
    first.proc->signal(SIGTERM);
    auto rc = first.proc->wait_exit(120s);
    ASSERT_TRUE(rc) << first.output();
    EXPECT_EQ(*rc, 0) << first.output();
    for (pid_t p : recorded) EXPECT_FALSE(alive(p)) << "pid " << p << " left running";
    EXPECT_TRUE(processes_using(var.path()).empty());
  }
  auto aof = var.path() + "/appendonlydir";
  std::uintmax_t aof_bytes = 0;
  for (const auto& e : fs::directory_iterator(aof)) aof_bytes += fs::file_size(e.path());
  std::cout << "[ figure ] append-only files: " << aof_bytes / (1024 * 1024) << " MiB" << std::endl;

  // The restart: Redis loads the append-only file (answering -LOADING meanwhile); the script
  // waits for PONG, then runs descprod-admin and starts daemon, gateway and a worker.
  up second(var.path(), scratch.file("second.out"), port, 1);
  ASSERT_TRUE(second.wait_ready(300s)) << second.output() << "\nredis log:\n"
                                       << [&] {
                                            try {
                                              return read_file(var.file("log/redis.log"));
                                            } catch (...) {
                                              return std::string();
                                            }
                                          }();
  std::cout << "[ figure ] restart with " << jobs << " jobs: ready (URL printed, /readyz 200) after "
            << std::chrono::duration<double>(second.ready_after).count() << " s" << std::endl;
  auto out = second.output();
  std::cout << out;
  auto rlog = read_file(var.file("log/redis.log"));
  EXPECT_NE(rlog.find("DB loaded from append only file"), std::string::npos) << rlog;
  // How much of the restart was Redis reading its files.
  for (std::size_t pos = 0; (pos = rlog.find("DB loaded from", pos)) != std::string::npos; ++pos)
    std::cout << "[ figure ] redis: " << rlog.substr(pos, rlog.find('\n', pos) - pos) << std::endl;

  // Everything is there: every job hash, the ID counter, the counts by state, a finished job
  // exactly as it was, a queued one with its submission unchanged.
  redis_sync r(service_endpoint(var.path()));
  EXPECT_EQ(r.exec({"GET", "descprod:next_job_id"}).str, next_id_before);
  EXPECT_EQ(intact_jobs(r, jobs), jobs);
  EXPECT_EQ(hgetall(r, "descprod:job:1234"), done_before);
  auto queued_after = hgetall(r, "descprod:job:150000");
  for (const char* k : {"descname", "jobtype", "config", "howfig", "create_time", "priority"})
    EXPECT_EQ(queued_after[k], queued_before[k]) << k;
  EXPECT_GE(r.exec({"ZCARD", "descprod:user:admin:jobs"}).integer, jobs);

  // A new job runs to done (first in the queue: priority 1000).
  auto token = second.token();
  long long id = submit(second.port(), token, R"({"jobtype":"mysleep","config":"0","priority":1000})");
  ASSERT_EQ(id, jobs + 1);
  EXPECT_TRUE(wait_until([&] { return job_state(second.port(), token, id) == "done"; }, 60s))
      << job_state(second.port(), token, id) << "\n"
      << second.output();
  EXPECT_EQ(sum_of_counts(r), jobs + 1);
}

TEST(DescprodUp, AGatewayPortAlreadyTakenFailsAndLeavesNoProcessBehind) {
  temp_dir var("dpup-");
  temp_dir scratch("dpup-out-");
  net::io_context ioc;
  net::ip::tcp::acceptor taken(ioc, net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  int port = taken.local_endpoint().port();

  up u(var.path(), scratch.file("up.out"), port, 2);
  // While it starts, the processes it runs are seen (so the scan below can see them).
  std::set<pid_t> seen;
  auto rc = [&] {
    std::optional<int> st;
    wait_until(
        [&] {
          for (pid_t p : u.recorded_pids()) seen.insert(p);
          return (st = u.proc->wait_exit(0ms)).has_value();
        },
        120s, 5ms);
    return st;
  }();
  ASSERT_TRUE(rc) << "descprod-up still runs with its port taken\n" << u.output();
  EXPECT_EQ(*rc, 1) << u.output();
  EXPECT_NE(u.output().find("gateway exited while starting"), std::string::npos) << u.output();
  EXPECT_EQ(u.output().find("URL: "), std::string::npos) << u.output();
  EXPECT_GE(seen.size(), 4u) << "redis, daemon, gateway and two workers were started";
  for (pid_t p : seen) EXPECT_FALSE(alive(p)) << "pid " << p << " left running\n" << u.output();
  auto left = processes_using(var.path());
  EXPECT_TRUE(left.empty()) << left.size() << " processes still use " << var.path();
  EXPECT_FALSE(fs::exists(var.file("descprod-up.pids")));

  // With the port free it starts on the same var/.
  taken.close();
  up again(var.path(), scratch.file("again.out"), port, 1);
  ASSERT_TRUE(again.wait_ready(120s)) << again.output();
}

// Runs descprod-up to its end (it must fail) and checks that nothing it started is left.
void expect_fails_leaving_nothing(up& u, const std::string& var, const std::string& why) {
  std::set<pid_t> seen;
  std::optional<int> rc;
  wait_until(
      [&] {
        for (pid_t p : u.recorded_pids()) seen.insert(p);
        return (rc = u.proc->wait_exit(0ms)).has_value();
      },
      120s, 5ms);
  ASSERT_TRUE(rc) << "descprod-up still runs\n" << u.output();
  EXPECT_EQ(*rc, 1) << u.output();
  EXPECT_NE(u.output().find(why), std::string::npos) << u.output();
  EXPECT_EQ(u.output().find("URL: "), std::string::npos) << u.output();
  for (pid_t p : seen) EXPECT_FALSE(alive(p)) << "pid " << p << " left running\n" << u.output();
  auto left = processes_using(var);
  EXPECT_TRUE(left.empty()) << left.size() << " processes still use " << var;
}

TEST(DescprodUp, ADaemonThatExitsAtOnceOrARedisThatCannotStartLeavesNoProcessBehind) {
  temp_dir var("dpup-");
  temp_dir scratch("dpup-out-");
  // A broken daemon (a real one cannot be made to fail on demand): the other binaries are the
  // build's own.
  temp_dir bin("dpup-bin-");
  for (const char* b : {"descprod-gateway", "descprod-worker", "descprod-admin"})
    fs::create_symlink(std::string(DESCPROD_BIN_DIR) + "/" + b, bin.file(b));
  write_file(bin.file("descprod-daemon"), "#!/bin/sh\necho 'daemon fatal: broken on purpose' >&2\nexit 3\n");
  fs::permissions(bin.file("descprod-daemon"), fs::perms::owner_all);
  {
    up u(var.path(), scratch.file("daemon.out"), free_port(), 1, {"--bin", bin.path()});
    expect_fails_leaving_nothing(u, var.path(), "daemon exited while starting");
    EXPECT_NE(u.output().find("broken on purpose"), std::string::npos) << u.output();  // its log's tail
  }
  // A Redis that cannot start: its append-only file's manifest is damaged.
  fs::create_directories(var.file("appendonlydir"));
  write_file(var.file("appendonlydir/appendonly.aof.manifest"), "this is not a manifest\n");
  {
    up u(var.path(), scratch.file("redis.out"), free_port(), 1);
    expect_fails_leaving_nothing(u, var.path(), "redis-server exited while starting");
  }
}

// --config-overlay (issue #18 item 3): a YAML file merged over the configuration descprod-up
// writes. An unknown key in it is refused as in any configuration, before anything starts; a good
// one is in the configuration every component reads (here: the sites jobs may ask for, which the
// gateway then accepts).
TEST(DescprodUp, AConfigOverlayIsMergedAndAnUnknownKeyInItStartsNothing) {
  temp_dir var("dpup-");
  temp_dir scratch("dpup-out-");
  int port = free_port();
  write_file(scratch.file("bad.yaml"), "gateway:\n  sitez: [nersc]\n");
  {
    up u(var.path(), scratch.file("bad.out"), port, 1, {"--config-overlay", scratch.file("bad.yaml")});
    expect_fails_leaving_nothing(u, var.path(), "gateway.sitez: unknown key");
  }
  write_file(scratch.file("good.yaml"), "gateway:\n  sites: [nersc, slac]\nlog_level: debug\n");
  up u(var.path(), scratch.file("good.out"), port, 1, {"--config-overlay", scratch.file("good.yaml")});
  ASSERT_TRUE(u.wait_ready(120s)) << u.output();
  auto config = read_file(var.file("descprod.yaml"));
  EXPECT_NE(config.find("nersc"), std::string::npos) << config;
  EXPECT_NE(config.find("daemon_endpoint"), std::string::npos) << "the script's own keys stay";
  EXPECT_EQ(mode_of(var.file("descprod.yaml")), 0600);
  // The sites the overlay named are the ones a job may ask for.
  auto token = u.token();
  EXPECT_GT(submit(u.port(), token, R"({"jobtype":"mysleep","config":"1","sites":["slac"]})"), 0);
  auto refused = http_request("127.0.0.1", u.port(), "POST", "/api/jobs",
                              R"({"jobtype":"mysleep","config":"1","sites":["cern"]})",
                              {{"authorization", "Bearer " + token}});
  EXPECT_EQ(refused.status, 400) << refused.body;
}

TEST(DescprodUp, TheOrphansOfAKilledRunAreStoppedByTheNextStart) {
  temp_dir var("dpup-");
  temp_dir scratch("dpup-out-");
  int port = free_port();
  std::set<pid_t> orphans;
  {
    up first(var.path(), scratch.file("first.out"), port, 1);
    ASSERT_TRUE(first.wait_ready(120s)) << first.output();
    orphans = first.recorded_pids();
    ASSERT_EQ(orphans.size(), 4u);
    // SIGKILL: no trap runs; its Redis, daemon, gateway and worker live on.
    first.proc->signal(SIGKILL);
    ASSERT_TRUE(first.proc->wait_exit(10s));
    for (pid_t p : orphans) EXPECT_TRUE(alive(p)) << p;
    first.proc.reset();
  }
  up second(var.path(), scratch.file("second.out"), port, 1);
  bool ready = second.wait_ready(120s);
  for (pid_t p : orphans)
    if (alive(p)) ::kill(p, SIGKILL);  // never leave them, whatever the outcome
  ASSERT_TRUE(ready) << second.output();
  EXPECT_NE(second.output().find("left by an earlier descprod-up that was killed"), std::string::npos)
      << second.output();
  for (pid_t p : orphans) EXPECT_EQ(second.recorded_pids().count(p), 0u);
  auto token = second.token();
  long long id = submit(second.port(), token, R"({"jobtype":"mysleep","config":"0"})");
  EXPECT_TRUE(wait_until([&] { return job_state(second.port(), token, id) == "done"; }, 60s));

  // A second descprod-up on the same var/ while one runs is refused and stops nothing.
  up third(var.path(), scratch.file("third.out"), port, 1);
  auto rc = third.proc->wait_exit(30s);
  ASSERT_TRUE(rc) << third.output();
  EXPECT_EQ(*rc, 1);
  EXPECT_NE(third.output().find("another descprod-up is running"), std::string::npos) << third.output();
  for (pid_t p : second.recorded_pids()) EXPECT_TRUE(alive(p)) << p;
  third.proc.reset();
}

TEST(DescprodUp, RedisRequiresAPasswordSecretsArePrivateAndAnOldVarIsTakenOver) {
  temp_dir var("dpup-");
  temp_dir scratch("dpup-out-");
  // A var/ of an older descprod-up: Redis's append-only file with a job in it, no password.
  {
    redis_server_options o;
    o.appendonly = true;
    redis_server old(o);
    redis_sync c(old.endpoint());
    ASSERT_EQ(c.exec({"HSET", "descprod:job:7", "id", "7", "state", "done", "descname", "admin"}).integer, 3);
    ASSERT_EQ(c.exec({"SET", "descprod:next_job_id", "7"}).str, "OK");
    old.stop();
    fs::copy(fs::path(old.dir()) / "appendonlydir", var.file("appendonlydir"), fs::copy_options::recursive);
  }
  ASSERT_EQ(::chmod(var.path().c_str(), 0755), 0);
  up u(var.path(), scratch.file("up.out"), free_port(), 1);
  ASSERT_TRUE(u.wait_ready(120s)) << u.output();

  EXPECT_EQ(mode_of(var.path()), 0700);
  EXPECT_EQ(mode_of(var.file("redis-password")), 0600);
  EXPECT_EQ(mode_of(var.file("redis-admin-password")), 0600);
  EXPECT_EQ(mode_of(var.file("admin-token")), 0600);
  EXPECT_EQ(mode_of(var.file("descprod.yaml")), 0600);
  EXPECT_GE(trim(read_file(var.file("redis-password"))).size(), 32u);
  // The secrets are not on any command line.
  auto secret = trim(read_file(var.file("redis-password")));
  auto admin_secret = trim(read_file(var.file("redis-admin-password")));
  for (pid_t p : u.recorded_pids()) {
    auto cmd = read_file("/proc/" + std::to_string(p) + "/cmdline");
    EXPECT_EQ(cmd.find(secret), std::string::npos);
    EXPECT_EQ(cmd.find(admin_secret), std::string::npos);
  }

  // redis-cli without the password is refused; with the operators' secret every recipe works;
  // the services' user sees only its keys and no dangerous command.
  EXPECT_NE(redis_cli(scratch, var.path(), {"HGETALL", "descprod:job:7"}).find("NOAUTH"), std::string::npos);
  EXPECT_NE(redis_cli(scratch, var.path(), {"PING"}).find("NOAUTH"), std::string::npos);
  std::vector<std::pair<std::string, std::string>> ops = {{"REDISCLI_AUTH", admin_secret}};
  EXPECT_EQ(redis_cli(scratch, var.path(), {"PING"}, ops), "PONG");
  EXPECT_EQ(redis_cli(scratch, var.path(), {"HGET", "descprod:job:7", "state"}, ops), "done");
  EXPECT_NE(redis_cli(scratch, var.path(), {"INFO", "persistence"}, ops).find("aof_enabled:1"),
            std::string::npos);
  redis_sync svc(service_endpoint(var.path()));
  EXPECT_EQ(svc.exec({"HGET", "descprod:job:7", "state"}).str, "done");
  EXPECT_TRUE(svc.exec({"SET", "other", "1"}).is_error());
  EXPECT_TRUE(svc.exec({"KEYS", "*"}).is_error());

  // The older data is there and the service goes on numbering after it.
  auto token = u.token();
  long long id = submit(u.port(), token, R"({"jobtype":"mysleep","config":"0"})");
  EXPECT_EQ(id, 8);
  EXPECT_TRUE(wait_until([&] { return job_state(u.port(), token, id) == "done"; }, 60s));
}

// --gateways 3 (issue 15 item 3, in part): three gateways on one Redis and one daemon. A session
// made on one works on the others, an API token revoked on one stops working on the others within
// the token cache's second, and the live event feed of one shows a job submitted on another.
TEST(DescprodUp, SeveralGatewaysShareSessionsTokensAndTheLiveFeed) {
  temp_dir var("dpup-");
  temp_dir scratch("dpup-out-");
  up u(var.path(), scratch.file("up.out"), free_port(), 1, {"--gateways", "3"});
  ASSERT_TRUE(u.wait_ready(120s)) << u.output();
  std::vector<int> ports = {u.port(), std::stoi(trim(read_file(var.path() + "/gateway-2.port"))),
                            std::stoi(trim(read_file(var.path() + "/gateway-3.port")))};
  EXPECT_NE(u.output().find("Gateway 3: http://"), std::string::npos) << u.output();
  EXPECT_NE(ports[0], ports[1]);
  EXPECT_NE(ports[1], ports[2]);
  const std::string admin = u.token();
  http_headers as_admin = {{"authorization", "Bearer " + admin}};

  // A registration on gateway 1, approved on gateway 3, a login on gateway 2: its session works
  // on gateway 3.
  auto reg = http_request("127.0.0.1", ports[0], "POST", "/api/register",
                          R"({"username":"gina","password":"gina-password-1","email":"gina@example.org"})");
  ASSERT_EQ(reg.status, 201) << reg.body;
  auto ok = http_request("127.0.0.1", ports[2], "POST", "/api/admin/users/gina/approve", "{}", as_admin);
  ASSERT_EQ(ok.status, 200) << ok.body;
  auto login = http_request("127.0.0.1", ports[1], "POST", "/api/login",
                            R"({"username":"gina","password":"gina-password-1"})");
  ASSERT_EQ(login.status, 200) << login.body;
  std::string set = login.header("set-cookie");
  std::string cookie = set.substr(0, set.find(';'));
  std::string csrf(login.json().as_object().at("csrf_token").as_string());
  http_headers as_session = {{"cookie", cookie}, {"x-csrf-token", csrf}};
  auto who = http_request("127.0.0.1", ports[2], "GET", "/api/session", "", as_session);
  ASSERT_EQ(who.status, 200) << who.body;
  EXPECT_EQ(who.json().as_object().at("user").as_string(), "gina");

  // An API token made on gateway 1 works on gateway 2 until gateway 3 revokes it.
  auto made = http_request("127.0.0.1", ports[0], "POST", "/api/tokens", R"({"label":"multi"})", as_session);
  ASSERT_EQ(made.status, 201) << made.body;
  std::string token(made.json().as_object().at("token").as_string());
  std::string sha(made.json().as_object().at("id").as_string());
  http_headers as_token = {{"authorization", "Bearer " + token}};
  EXPECT_EQ(http_request("127.0.0.1", ports[1], "GET", "/api/jobs", "", as_token).status, 200);
  auto revoked = http_request("127.0.0.1", ports[2], "DELETE", "/api/tokens/" + sha, "", as_session);
  EXPECT_EQ(revoked.status / 100, 2) << revoked.body;
  EXPECT_TRUE(wait_until(
      [&] { return http_request("127.0.0.1", ports[1], "GET", "/api/jobs", "", as_token).status == 401; }, 5s,
      100ms))
      << "gateway 2 still takes a token gateway 3 revoked";

  // Gateway 2's live feed shows a job submitted on gateway 1 to its end.
  auto url = descprod::client::parse_url("http://127.0.0.1:" + std::to_string(ports[1]));
  ASSERT_TRUE(url);
  descprod::client::header_list h = {{"Authorization", "Bearer " + admin}};
  descprod::client::sse_stream feed(*url, "/api/events", h);
  ASSERT_EQ(feed.status(), 200) << feed.error_body();
  long long id = submit(ports[0], admin, R"({"jobtype":"mysleep","config":"0"})");
  ASSERT_GT(id, 0);
  bool seen_done = false;
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!seen_done && feed.open() && std::chrono::steady_clock::now() < deadline) {
    for (const auto& e : feed.next(1s)) {
      if (e.data.find("\"id\":" + std::to_string(id)) != std::string::npos &&
          e.data.find("\"state\":\"done\"") != std::string::npos)
        seen_done = true;
    }
  }
  EXPECT_TRUE(seen_done) << "gateway 2's feed did not show job " << id << " (submitted on gateway 1) done";
  EXPECT_EQ(job_state(ports[2], admin, id), "done");
}

}  // namespace
}  // namespace descprod::test
