// The real CLI against a real service whose Redis holds hostile text (issue #13 item 8): a job's
// progress, host and config with ESC[31m, CR, BEL, an OSC title, DEL and a C1 CSI, and a user's
// role with a cursor movement, written straight into Redis with redis-cli HSET (past whatever the
// gateway and daemon clean on ingest). descprod-get-job, descprod-list-jobs (table and --json),
// descprod-watch, descprod-cancel-job's error and descprod-admin list-users print them without a
// raw control byte, as visible escapes.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <string>

#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

using namespace std::chrono_literals;

const std::string hostile_progress =
    "Running. \x1b[31mRED\x1b[0m\rOVERWRITE\a \x1b]0;title\x07 \x7f \xc2\x9b"
    "2J";

// The first raw control byte in `s` (C0 but newline, and tab when allowed; DEL; C1 raw or UTF-8
// encoded), or -1.
int first_control(const std::string& s, bool allow_tab = false) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '\n' || (c == '\t' && allow_tab)) continue;
    if (c < 0x20 || c == 0x7F) return static_cast<int>(i);
    if (c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) < 0xA0)
      return static_cast<int>(i);
    if (c >= 0x80 && c < 0xA0 && (i == 0 || static_cast<unsigned char>(s[i - 1]) < 0x80))
      return static_cast<int>(i);
  }
  return -1;
}

struct cli_result {
  int code = -1000;
  std::string out;
};

// A client command with the service's URL and alice's token; stdout and stderr in one file.
cli_result run(service& s, const std::string& name, std::vector<std::string> args) {
  static int n = 0;
  std::string out = s.dir.file("cli-" + std::to_string(++n) + ".out");
  args.insert(args.begin(), s.bin(name));
  auto env = s.env();
  env.emplace_back("DESCPROD_URL", "http://127.0.0.1:" + std::to_string(s.port()));
  env.emplace_back("DESCPROD_TOKEN", s.alice_token);
  env.emplace_back("HOME", s.dir.path());
  process p(args, env, out);
  auto rc = p.wait_exit(60s);
  EXPECT_TRUE(rc) << name << " did not finish";
  return {rc.value_or(-1000), p.output()};
}

void redis_cli(service& s, std::vector<std::string> args) {
  std::vector<std::string> argv = {"redis-cli", "-s", s.redis.socket_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  process p(argv, {}, s.dir.file("redis-cli.out"));
  ASSERT_EQ(p.wait_exit(20s).value_or(-1), 0) << p.output();
}

TEST(ClientEscape, TheCliPrintsHostileServerTextWithoutRawControlBytes) {
  service_options o;
  o.workers = 0;  // the job stays as the test writes it
  service s(o);
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  ASSERT_GT(id, 0);
  const std::string key = "descprod:job:" + std::to_string(id);
  redis_cli(s, {"HSET", key, "progress", hostile_progress, "host", "node\x1b[1A\x1b[2K", "state", "done",
                "return_status", "0"});
  redis_cli(s, {"HSET", "descprod:user:alice", "role", "user\x1b[1Aadmin"});
  ASSERT_EQ(s.job(id)["progress"].as_string(), hostile_progress);  // it did get past ingest

  auto get = run(s, "descprod-get-job", {std::to_string(id)});
  EXPECT_EQ(get.code, 0) << get.out;
  EXPECT_EQ(first_control(get.out), -1) << get.out;
  EXPECT_NE(get.out.find("progress: Running. \\x1b[31mRED\\x1b[0m\\x0dOVERWRITE\\x07"), std::string::npos)
      << get.out;
  EXPECT_NE(get.out.find("\\u009b2J"), std::string::npos) << get.out;
  EXPECT_NE(get.out.find("host: node\\x1b[1A\\x1b[2K"), std::string::npos) << get.out;

  auto json = run(s, "descprod-get-job", {"--json", std::to_string(id)});
  EXPECT_EQ(json.code, 0) << json.out;
  EXPECT_EQ(first_control(json.out), -1) << json.out;
  auto parsed = boost::json::parse(json.out).as_object();
  EXPECT_EQ(parsed["progress"].as_string(), hostile_progress);  // the same text, JSON-escaped

  auto list = run(s, "descprod-list-jobs", {});
  EXPECT_EQ(list.code, 0) << list.out;
  EXPECT_EQ(first_control(list.out), -1) << list.out;
  EXPECT_NE(list.out.find("\\x1b[31mRED"), std::string::npos) << list.out;

  auto list_json = run(s, "descprod-list-jobs", {"--json"});
  EXPECT_EQ(list_json.code, 0) << list_json.out;
  EXPECT_EQ(first_control(list_json.out), -1) << list_json.out;

  auto watch = run(s, "descprod-watch", {"--plain", std::to_string(id)});
  EXPECT_EQ(watch.code, 0) << watch.out;
  EXPECT_EQ(first_control(watch.out), -1) << watch.out;
  EXPECT_NE(watch.out.find("\\x1b[31mRED"), std::string::npos) << watch.out;

  // An error reason from the server goes through the same defence (here the gateway's own).
  auto cancel = run(s, "descprod-cancel-job", {std::to_string(id)});
  EXPECT_EQ(cancel.code, 1) << cancel.out;
  EXPECT_EQ(first_control(cancel.out), -1) << cancel.out;

  process admin({s.bin("descprod-admin"), "--config", s.config_file, "list-users"}, {},
                s.dir.file("admin.out"));
  ASSERT_EQ(admin.wait_exit(30s).value_or(-1), 0) << admin.output();
  EXPECT_EQ(first_control(admin.output(), true), -1) << admin.output();  // tab-separated columns
  EXPECT_NE(admin.output().find("alice\tuser\\x1b[1Aadmin\t"), std::string::npos) << admin.output();
}

}  // namespace
}  // namespace descprod::test
