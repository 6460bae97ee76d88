// Backups and restores (issue 15 item 5; core/backup.hpp): the real descprod-admin takes a
// snapshot of a running service's real redis-server while jobs are submitted, and a fresh instance
// started from the restored directory finishes the jobs the snapshot holds. Label `ha`.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/json.hpp>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "core/redis.hpp"
#include "tests/support/fill.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

using namespace std::chrono_literals;

TEST(Backup, ASnapshotTakenUnderSubmissionsRestoresIntoAFreshInstanceThatFinishesItsQueuedJobs) {
  temp_dir work{"descprod-backup-"};
  std::string backup_dir = work.file("backup"), restored = work.file("redis");
  std::vector<long long> before;
  std::atomic<long long> during_max{0};
  {
    service_options o;
    o.workers = 0;  // the jobs stay queued
    o.redis_appendonly = true;
    service a(o);
    for (int i = 0; i < 300; ++i)
      before.push_back(a.submit(R"({"jobtype":"marker","config":")" + std::to_string(i) + R"("})"));
    // Submissions go on while the snapshot is taken: it holds each job whole or not at all.
    std::atomic<bool> stop{false};
    std::thread submitter([&] {
      for (int i = 0; i < 2000 && !stop.load(); ++i) {
        long long id = a.submit(R"({"jobtype":"marker","config":"d)" + std::to_string(i) + R"("})");
        during_max = std::max(during_max.load(), id);
      }
    });
    std::this_thread::sleep_for(100ms);
    std::string out = a.run_admin({"backup", backup_dir});
    stop = true;
    submitter.join();
    EXPECT_NE(out.find("dump.rdb"), std::string::npos) << out;
    // A second backup into the same directory is refused and changes nothing.
    auto sha = boost::json::parse(read_file(backup_dir + "/backup.json")).as_object().at("sha256");
    std::string again = a.run_admin({"backup", backup_dir}, 1);
    EXPECT_NE(again.find("holds a backup already"), std::string::npos) << again;
    EXPECT_EQ(boost::json::parse(read_file(backup_dir + "/backup.json")).as_object().at("sha256"), sha);
    EXPECT_TRUE(std::filesystem::exists(backup_dir + "/descprod.yaml"));
    EXPECT_TRUE(std::filesystem::exists(backup_dir + "/apps.yaml"));

    // Refusals of restore: a corrupted snapshot, a directory holding data.
    std::filesystem::copy(backup_dir, work.file("corrupt"), std::filesystem::copy_options::recursive);
    {
      std::string dump = read_file(work.file("corrupt") + "/dump.rdb");
      dump[dump.size() / 2] ^= 1;
      write_file(work.file("corrupt") + "/dump.rdb", dump);
    }
    std::string bad = a.run_admin({"restore", work.file("corrupt"), work.file("other")}, 1);
    EXPECT_NE(bad.find("does not match backup.json"), std::string::npos) << bad;
    EXPECT_FALSE(std::filesystem::exists(work.file("other") + "/appendonlydir"));
    std::string busy = a.run_admin({"restore", backup_dir, a.redis.dir()}, 1);
    EXPECT_NE(busy.find("holds Redis data already"), std::string::npos) << busy;

    std::string ok = a.run_admin({"restore", backup_dir, restored});
    EXPECT_NE(ok.find("appendonlydir"), std::string::npos) << ok;
  }

  // A fresh instance on the restored directory, with a worker.
  service_options o;
  o.workers = 1;
  o.slots = 4;
  o.redis_options.extra_args = {"--dir", restored, "--appendonly", "yes"};
  service b(o);
  redis_sync r(b.redis.endpoint());
  long long last = std::stoll(r.exec({"GET", "descprod:next_job_id"}).as_string());
  EXPECT_GE(last, before.back());
  // Every job of the snapshot is there whole: its hash, its owner's index, its count.
  long long jobs = 0;
  for (long long id = 1; id <= last; ++id) {
    auto state = r.exec({"HGET", "descprod:job:" + std::to_string(id), "state"});
    ASSERT_FALSE(state.is_nil()) << "job " << id << " is in next_job_id but not whole";
    EXPECT_EQ(r.exec({"ZSCORE", "descprod:user:alice:jobs", std::to_string(id)}).is_nil(), false) << id;
    ++jobs;
  }
  EXPECT_EQ(sum_of_counts(r), jobs);
  EXPECT_LT(last, during_max.load()) << "the submissions after the snapshot are not in it";
  // The jobs the snapshot held run to the end on the new instance; none of the later ones exists.
  for (long long id = 1; id <= last; ++id)
    ASSERT_TRUE(b.wait_terminal(id, 120s)) << "job " << id << " did not finish: " << b.state(id);
  for (long long id = 1; id <= last; ++id) EXPECT_EQ(b.state(id), "done") << id;
  EXPECT_EQ(r.exec({"EXISTS", "descprod:job:" + std::to_string(last + 1)}).integer, 0);
  std::cout << "[ha] restored " << jobs << " jobs (300 before the snapshot, " << jobs - 300
            << " submitted while it was taken), all done\n";
}

// At a real size: 200,000 jobs (20,000 of them done, with their event streams), backed up while
// the service runs, restored, and loaded by a fresh redis-server: the same keys and counts. Prints
// the figures.
TEST(Backup, TwoHundredThousandJobsAreBackedUpWhileTheServiceRunsAndRestoredWhole) {
  temp_dir work{"descprod-backup-"};
  service_options o;
  o.workers = 0;
  o.redis_appendonly = true;
  service a(o);
  fill(a.redis.endpoint(), 200000, 20000);
  redis_sync r(a.redis.endpoint());
  // Not counted: the daemon's leader lease (a TTL of 2 s, which may lapse before the restored copy
  // is loaded; a new daemon takes the lead with the next epoch).
  auto without_lease = [](redis_sync& c) {
    return c.exec({"DBSIZE"}).integer - c.exec({"EXISTS", "descprod:daemon:leader"}).integer;
  };
  long long keys = without_lease(r);
  auto counts = r.exec({"HGETALL", "descprod:stats:jobs_by_state"});
  auto t0 = std::chrono::steady_clock::now();
  a.run_admin({"backup", work.file("backup")});
  auto t1 = std::chrono::steady_clock::now();
  EXPECT_EQ(a.readyz().status, 200) << "the service kept running";
  a.run_admin({"restore", work.file("backup"), work.file("redis")});
  auto t2 = std::chrono::steady_clock::now();
  redis_server_options ro;
  ro.extra_args = {"--dir", work.file("redis"), "--appendonly", "yes"};
  redis_server fresh(ro);
  auto t3 = std::chrono::steady_clock::now();
  redis_sync f(fresh.endpoint());
  EXPECT_EQ(without_lease(f), keys);
  EXPECT_EQ(f.exec({"GET", "descprod:daemon:epoch"}).str, r.exec({"GET", "descprod:daemon:epoch"}).str);
  EXPECT_EQ(sum_of_counts(f), 200000);
  auto restored_counts = f.exec({"HGETALL", "descprod:stats:jobs_by_state"});
  ASSERT_EQ(restored_counts.elements.size(), counts.elements.size());
  for (std::size_t i = 0; i < counts.elements.size(); ++i)
    EXPECT_EQ(restored_counts.elements[i].str, counts.elements[i].str);
  EXPECT_EQ(f.exec({"HGET", "descprod:job:1", "state"}).str, "done");
  EXPECT_EQ(f.exec({"HGET", "descprod:job:200000", "state"}).str, "ready");
  EXPECT_EQ(f.exec({"ZCARD", "descprod:queue"}).integer, 180000);
  EXPECT_EQ(f.exec({"XLEN", "descprod:job:1:events"}).integer,
            r.exec({"XLEN", "descprod:job:1:events"}).integer);
  auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  std::cout << "[ha] 200,000 jobs, " << keys << " keys: dump.rdb "
            << std::filesystem::file_size(work.file("backup") + "/dump.rdb") << " bytes; backup "
            << ms(t1 - t0) << " ms, restore " << ms(t2 - t1) << " ms, fresh redis-server loaded it in "
            << ms(t3 - t2) << " ms\n";
}

// The service's own ACL user may not SYNC (it has no @dangerous commands): a backup with its config
// is refused with the reason; one with a backup user's (+sync +replconf +info) works.
TEST(Backup, TheServicesAclUserIsRefusedWithTheReasonAndABackupUserTakesIt) {
  temp_dir work{"descprod-backup-"};
  write_file(work.file("redis-password"), "s3cret pass\n");
  write_file(work.file("backup-password"), "backup-secret\n");
  service_options o;
  o.workers = 0;
  o.redis_options.extra_args = {"--user",      "default",      "off",         "--user", "descprod",
                                "on",          ">s3cret pass", "~descprod:*", "&*",     "+@all",
                                "-@dangerous", "--user",       "backup",      "on",     ">backup-secret",
                                "+sync",       "+replconf",    "+info",       "+ping"};
  o.redis_options.username = "descprod";
  o.redis_options.password = "s3cret pass";
  o.redis_extra = "  username: descprod\n  password_file: " + work.file("redis-password") + "\n";
  service s(o);
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  ASSERT_GT(id, 0);
  std::string refused = s.run_admin({"backup", work.file("b1")}, 1);
  EXPECT_NE(refused.find("Redis refused the snapshot"), std::string::npos) << refused;
  EXPECT_NE(refused.find("needs +sync and +replconf"), std::string::npos) << refused;
  EXPECT_FALSE(std::filesystem::exists(work.file("b1") + "/dump.rdb"));
  EXPECT_FALSE(std::filesystem::exists(work.file("b1") + "/dump.rdb.partial"));

  std::string config = read_file(s.config_file);
  auto at = config.find("  username: descprod\n");
  ASSERT_NE(at, std::string::npos);
  config.replace(at, config.find('\n', config.find("password_file:", at)) + 1 - at,
                 "  username: backup\n  password_file: " + work.file("backup-password") + "\n");
  write_file(work.file("backup.yaml"), config);
  std::vector<std::string> argv = {s.bin("descprod-admin"), "--config", work.file("backup.yaml"), "backup",
                                   work.file("b2")};
  process p(argv, {}, work.file("admin.out"));
  auto rc = p.wait_exit(60s);
  EXPECT_TRUE(rc && *rc == 0) << p.output();
  EXPECT_TRUE(std::filesystem::exists(work.file("b2") + "/dump.rdb")) << p.output();
}

}  // namespace
}  // namespace descprod::test
