// A full or read-only output disk fails no job (issue #13, item 13). The worker's output directory
// is a tiny tmpfs this test mounts (it runs as root) and then fills up, or remounts read-only.
// Queued jobs must not fail: the worker hands each back (no attempt used), stops asking for jobs,
// shows itself unhealthy (its worker:<id> record in Redis, /metrics, the admin page) and probes;
// once space is back every job ends done with attempt 1.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/accounts.hpp"
#include "core/redis.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

int run_cmd(const std::vector<std::string>& argv) {
  process p(argv);
  return p.wait_exit(20s).value_or(-1000);
}

// A tmpfs mounted on `dir` for the test's lifetime (unmounted, lazily, in the destructor).
struct tiny_tmpfs {
  std::string dir;
  bool mounted = false;
  tiny_tmpfs(std::string d, const std::string& size) : dir(std::move(d)) {
    fs::create_directories(dir);
    mounted = run_cmd({"mount", "-t", "tmpfs", "-o", "size=" + size + ",mode=0755", "tmpfs", dir}) == 0;
  }
  ~tiny_tmpfs() {
    if (mounted) run_cmd({"umount", "-l", dir});
  }
};

// Fills the file system holding `dir` with one file; returns its path.
std::string fill(const std::string& dir) {
  std::string path = dir + "/filler";
  std::ofstream out(path, std::ios::binary);
  std::string block(64 * 1024, 'f');
  for (int i = 0; i < 100000 && out.write(block.data(), block.size()); ++i) {
  }
  return path;
}

bool can_write(const std::string& dir) {
  std::string p = dir + "/probe-test";
  std::ofstream out(p, std::ios::binary);
  std::string block(8192, 'p');
  bool ok = static_cast<bool>(out.write(block.data(), block.size())) && static_cast<bool>(out.flush());
  out.close();
  fs::remove(p);
  return ok;
}

std::string metric_line(service& c, const std::string& name) {
  auto r = http_request("127.0.0.1", c.port(), "GET", "/metrics");
  std::istringstream in(r.body);
  for (std::string l; std::getline(in, l);)
    if (l.rfind(name + " ", 0) == 0) return l;
  return "";
}

void check_unhealthy_then_done(service& c, const std::function<void()>& break_disk,
                               const std::function<void()>& repair) {
  break_disk();
  c.start_worker(0);
  std::vector<long long> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(c.submit(R"({"jobtype":"marker","config":"x"})"));
  redis_sync r(c.redis.endpoint());
  auto hget = [&](const std::string& f) { return r.exec({"HGET", "descprod:worker:w0", f}).str; };
  ASSERT_TRUE(wait_until([&] { return hget("health") == "unhealthy"; }, 20s)) << "health=" << hget("health");
  EXPECT_NE(hget("health_reason").find("cannot create run directories"), std::string::npos)
      << hget("health_reason");
  EXPECT_TRUE(wait_until(
      [&] {
        return metric_line(c, "descprod_daemon_workers_unhealthy") == "descprod_daemon_workers_unhealthy 1";
      },
      10s))
      << metric_line(c, "descprod_daemon_workers_unhealthy");
  // The admin page's worker list shows it.
  auto admin = c.call("GET", "/api/admin/overview", "", issue_token(r, "descprod:", "ops"));
  EXPECT_NE(admin.body.find("unhealthy"), std::string::npos)
      << admin.status << " " << admin.body.substr(0, 500);
  // A while unhealthy: no job failed, none ran.
  std::this_thread::sleep_for(1500ms);  // several probe rounds: nothing may fail meanwhile
  for (auto id : ids) {
    auto st = c.state(id);
    EXPECT_TRUE(st == "ready" || st == "dispatched") << "job " << id << " is " << st;
    EXPECT_EQ(c.marker(id), "") << "job " << id << " ran";
  }
  repair();
  for (auto id : ids) {
    std::string st;
    wait_until(
        [&] {
          st = c.state(id);
          return service::terminal(st);
        },
        30s, 50ms);
    EXPECT_EQ(st, "done") << "job " << id;
    EXPECT_EQ(c.job(id)["attempt"].as_int64(), 1) << "job " << id;
    EXPECT_EQ(c.marker(id), "1\n") << "job " << id;
  }
  EXPECT_TRUE(wait_until([&] { return hget("health") == "ok"; }, 10s)) << hget("health");
  EXPECT_EQ(metric_line(c, "descprod_daemon_workers_unhealthy"), "descprod_daemon_workers_unhealthy 0");
}

TEST(DiskFull, FullOutputDiskFailsNoJobAndTheyRunOnceSpaceIsBack) {
  service_options o;
  o.workers = 0;
  o.slots = 2;
  service c(o);
  tiny_tmpfs disk(c.out_dir, "512k");
  ASSERT_TRUE(disk.mounted) << "mount tmpfs on " << c.out_dir;
  std::string filler;
  check_unhealthy_then_done(
      c,
      [&] {
        filler = fill(c.out_dir);
        ASSERT_FALSE(can_write(c.out_dir)) << "the tmpfs is not full";
      },
      [&] { fs::remove(filler); });
}

TEST(DiskFull, ReadOnlyOutputDiskFailsNoJobAndTheyRunOnceItIsWritable) {
  service_options o;
  o.workers = 0;
  o.slots = 2;
  service c(o);
  tiny_tmpfs disk(c.out_dir, "4m");
  ASSERT_TRUE(disk.mounted) << "mount tmpfs on " << c.out_dir;
  check_unhealthy_then_done(
      c,
      [&] {
        ASSERT_EQ(run_cmd({"mount", "-o", "remount,ro", c.out_dir}), 0);
      },
      [&] {
        ASSERT_EQ(run_cmd({"mount", "-o", "remount,rw", c.out_dir}), 0);
      });
}

}  // namespace
}  // namespace descprod::test
