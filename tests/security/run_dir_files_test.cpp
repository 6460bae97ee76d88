// Hostile run directories (issue #13, items 2 and 9): the files a worker reads from a job's run
// directory are the app's to make, so the app can make them anything. A FIFO named
// current-status.txt once blocked the worker's event loop for good; a symlink to a 0600 file
// elsewhere made that file's last line the job's progress. Here a real service (redis, daemon,
// gateway, one worker with two slots) runs apps that plant such files; the worker must keep
// heartbeating and running other jobs, never show the linked file's content, read a 2 GB sparse
// file only in part, and say in the job's log what it ignored. The run directory is 0750 and the
// app's files follow its umask (027 unless apps.yaml says otherwise).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "core/redis.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string sh_app(const std::string& name, const std::string& script, const std::string& extra = "") {
  std::string quoted;
  for (char c : script) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return "  - name: " + name + "\n    command: [\"/bin/sh\", \"-c\", \"" + quoted + "\"]\n    args: []\n" +
         extra;
}

struct hostile_service {
  temp_dir outside{"descprod-secret-"};
  std::string secret;
  std::unique_ptr<service> svc;

  hostile_service() {
    secret = outside.file("secret.txt");
    write_file(secret, "first\nSECRET-LINE-7f3a\n");
    ::chmod(secret.c_str(), 0600);
    service_options o;
    o.workers = 1;
    o.slots = 2;
    o.apps =
        sh_app("fifo", "rm -f current-status.txt; mkfifo current-status.txt; sleep 3; echo fifo-app-done") +
        sh_app("symlink", "ln -s " + secret + " current-status.txt; sleep 1") +
        sh_app("sparse",
               "truncate -s 2G current-status.txt; printf '\\ntail line\\n' >> current-status.txt; sleep 1") +
        sh_app("directory", "mkdir current-status.txt; sleep 1") +
        sh_app("logfifo",
               "echo 'status one' > current-status.txt; sleep 0.5; rm -f progress.log; mkfifo progress.log; "
               "ln -s " +
                   secret + " wrapper-status.json.tmp; sleep 1") +
        sh_app("quick", "echo quick-status > current-status.txt") + sh_app("files", "echo x > out.txt") +
        sh_app("files022", "echo x > out.txt", "    umask: \"022\"\n");
    svc = std::make_unique<service>(o);
  }

  std::string log_of(long long id) {
    auto job = svc->job(id);
    auto rundir = std::string(job["rundir"].as_string());
    auto log = rundir + "/" + fs::path(rundir).filename().string() + ".log";
    return fs::exists(log) ? read_file(log) : std::string();
  }
  std::string wait_done(long long id, std::chrono::milliseconds timeout = 30s) {
    std::string st;
    wait_until(
        [&] {
          st = svc->state(id);
          return service::terminal(st);
        },
        timeout, 50ms);
    return st;
  }
};

TEST(RunDirFiles, FifoStatusFileNeverBlocksTheWorker) {
  hostile_service h;
  auto& c = *h.svc;
  redis_sync r(c.redis.endpoint());
  auto fifo = c.submit(R"({"jobtype":"fifo","config":"x"})");
  ASSERT_TRUE(wait_until([&] { return c.state(fifo) == "running"; }, 20s)) << c.state(fifo);
  // Let the worker poll the FIFO a few times (status_poll 100 ms).
  auto hb0 = r.exec({"HGET", "descprod:worker:w0", "last_heartbeat"}).str;
  // Another job on the same worker runs meanwhile.
  auto quick = c.submit(R"({"jobtype":"quick","config":"x"})");
  EXPECT_EQ(h.wait_done(quick, 10s), "done");
  EXPECT_EQ(c.state(fifo), "running") << "the quick job must have run while the FIFO job was running";
  // The worker keeps heartbeating: its record's last_heartbeat moves on.
  EXPECT_TRUE(wait_until(
      [&] {
        return r.exec({"HGET", "descprod:worker:w0", "last_heartbeat"}).str != hb0;
      },
      5s));
  EXPECT_EQ(h.wait_done(fifo, 20s), "done");
  auto job = c.job(fifo);
  EXPECT_EQ(job["attempt"].as_int64(), 1) << "the job was requeued: the worker stopped heartbeating";
  auto log = h.log_of(fifo);
  EXPECT_NE(log.find("descprod-worker: current-status.txt ignored: it is a FIFO"), std::string::npos) << log;
  EXPECT_NE(log.find("fifo-app-done"), std::string::npos) << log;
}

TEST(RunDirFiles, SymlinkSparseFileAndDirectoryAreIgnoredWithALineInTheLog) {
  hostile_service h;
  auto& c = *h.svc;
  auto link = c.submit(R"({"jobtype":"symlink","config":"x"})");
  auto sparse = c.submit(R"({"jobtype":"sparse","config":"x"})");
  auto dir = c.submit(R"({"jobtype":"directory","config":"x"})");
  auto planted = c.submit(R"({"jobtype":"logfifo","config":"x"})");
  for (auto id : {link, sparse, dir, planted}) EXPECT_EQ(h.wait_done(id), "done") << id;

  // The linked 0600 file's content never shows as progress, in the record or its history.
  redis_sync r(c.redis.endpoint());
  auto events = r.exec({"XRANGE", "descprod:job:" + std::to_string(link) + ":events", "-", "+"});
  std::string history;
  for (const auto& e : events.elements)
    for (const auto& f : e.elements[1].elements) history += f.str + "\n";
  EXPECT_EQ(history.find("SECRET-LINE"), std::string::npos) << history;
  EXPECT_EQ(std::string(c.job(link)["progress"].as_string()).find("SECRET"), std::string::npos);
  auto link_log = h.log_of(link);
  EXPECT_NE(link_log.find("current-status.txt ignored: it is a symbolic link"), std::string::npos)
      << link_log;

  // The 2 GB sparse file: only its tail is read (its last line is the progress) and the log says so.
  EXPECT_NE(std::string(c.job(sparse)["progress"].as_string()).find("tail line"), std::string::npos)
      << c.job(sparse)["progress"];
  auto sparse_log = h.log_of(sparse);
  // The size seen at the first poll: before or after the app's append.
  EXPECT_NE(sparse_log.find("current-status.txt is 21474836"), std::string::npos) << sparse_log;
  EXPECT_NE(sparse_log.find(" bytes: only its last 65536 are read"), std::string::npos) << sparse_log;

  auto dir_log = h.log_of(dir);
  EXPECT_NE(dir_log.find("current-status.txt ignored: it is a directory"), std::string::npos) << dir_log;

  // Files the worker writes: a FIFO progress.log is not written through (the job still ends), a
  // planted wrapper-status.json.tmp symlink is replaced, never followed: the secret is intact.
  auto planted_log = h.log_of(planted);
  EXPECT_NE(planted_log.find("run directory file not written"), std::string::npos) << planted_log;
  EXPECT_EQ(read_file(h.secret), "first\nSECRET-LINE-7f3a\n");
  auto rundir = std::string(c.job(planted)["rundir"].as_string());
  EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(rundir + "/wrapper-status.json")));
}

TEST(RunDirFiles, RunDirectoriesAreNotWorldReadableAndTheAppUmaskIsApplied) {
  hostile_service h;
  auto& c = *h.svc;
  auto def = c.submit(R"({"jobtype":"files","config":"x"})");
  auto open = c.submit(R"({"jobtype":"files022","config":"x"})");
  EXPECT_EQ(h.wait_done(def), "done");
  EXPECT_EQ(h.wait_done(open), "done");
  auto mode = [](const std::string& p) {
    struct stat st {};
    EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
    return st.st_mode & 07777;
  };
  auto d1 = std::string(c.job(def)["rundir"].as_string());
  auto d2 = std::string(c.job(open)["rundir"].as_string());
  EXPECT_EQ(mode(d1), 0750u);
  EXPECT_EQ(mode(d1 + "/out.txt"), 0640u) << "default umask 027";
  EXPECT_EQ(mode(d2), 0750u);
  EXPECT_EQ(mode(d2 + "/out.txt"), 0644u) << "apps.yaml umask 022";
}

}  // namespace
}  // namespace descprod::test
