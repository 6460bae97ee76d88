// Text from applications is safe to print (issue #13, items 8 and 9): control characters in an
// app's status line, log and finished message are replaced by U+FFFD where they enter the service
// (core/text.hpp), on the daemon's path (a real worker runs a real app) and on the gateway's report
// routes (a claimed job reports with its job token); progress counts with done > total, or
// negative, are refused (gateway: 400 with a JSON reason) or dropped (daemon: logged).
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "core/accounts.hpp"
#include "core/redis.hpp"
#include "tests/security/trust_peer.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

const std::string P = "descprod:";
const std::string fffd = "\xEF\xBF\xBD";

// No C0 control (but tab), no DEL, no C1 control (as UTF-8) in s.
::testing::AssertionResult printable(const std::string& s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if ((c < 0x20 && c != '\t') || c == 0x7F)
      return ::testing::AssertionFailure()
             << "control byte " << int(c) << " at " << i << " in " << json::serialize(json::value(s));
    if (c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0x80 &&
        static_cast<unsigned char>(s[i + 1]) <= 0x9F)
      return ::testing::AssertionFailure() << "C1 control at " << i;
  }
  return ::testing::AssertionSuccess();
}

std::string str(const json::object& o, const char* k) {
  auto it = o.find(k);
  return it == o.end() || !it->value().is_string() ? std::string() : std::string(it->value().as_string());
}

TEST(AppText, AnAppsEscapesReachTheApiReplacedThroughTheDaemon) {
  service_options o;
  o.workers = 1;
  o.apps =
      "  - name: noisy\n"
      "    command: [\"/bin/sh\", \"{markers}/noisy.sh\"]\n"
      "    args: []\n";
  service s(o);
  // Status line: ESC[31m, BEL, CR, DEL; its log: an OSC title change and a screen clear; the last
  // status line (the finished message) a cursor move.
  write_file(s.markers + "/noisy.sh",
             "printf 'red \\033[31mALERT\\007 back\\rover \\177del [3/5]\\n' > current-status.txt\n"
             "printf 'log \\033]0;owned\\007 and \\033[2J clear\\n'\n"
             "sleep 1\n"
             "printf 'ended \\033[10;10H here\\n' > current-status.txt\n");
  auto id = s.submit(R"({"jobtype":"noisy","config":"x"})");
  // While it runs: the progress as the API shows it.
  std::string running_progress;
  ASSERT_TRUE(wait_until(
      [&] {
        running_progress = str(s.job(id), "progress");
        return running_progress.find("ALERT") != std::string::npos;
      },
      20s))
      << running_progress;
  EXPECT_TRUE(printable(running_progress));
  EXPECT_EQ(running_progress,
            "Running. red " + fffd + "[31mALERT" + fffd + " back" + fffd + "over " + fffd + "del [3/5]");
  ASSERT_TRUE(wait_until([&] { return service::terminal(s.state(id)); }, 20s));
  auto j = s.job(id);
  EXPECT_EQ(str(j, "state"), "done");
  EXPECT_EQ(str(j, "progress"), "Done. ended " + fffd + "[10;10H here");
  EXPECT_TRUE(printable(str(j, "message")));
  // The log as the API shows it.
  auto log = s.call("GET", "/api/jobs/" + std::to_string(id) + "/log");
  ASSERT_EQ(log.status, 200) << log.body;
  EXPECT_NE(log.body.find("owned"), std::string::npos) << log.body;
  auto text = json::serialize(log.json());
  EXPECT_EQ(text.find("\\u001b"), std::string::npos) << text;
  EXPECT_EQ(text.find("\\u0007"), std::string::npos) << text;
  auto lj = log.json();
  std::function<void(const json::value&)> walk = [&](const json::value& v) {
    if (v.is_string()) {
      EXPECT_TRUE(printable(std::string(v.as_string())));
    }
    if (v.is_array())
      for (const auto& e : v.as_array()) walk(e);
    if (v.is_object())
      for (const auto& kv : v.as_object()) walk(kv.value());
  };
  walk(lj);
  // And the events.
  auto ev = s.call("GET", "/api/jobs/" + std::to_string(id) + "/events");
  ASSERT_EQ(ev.status, 200);
  walk(ev.json());
  // Nothing raw in Redis either: the hash holds what the API shows.
  redis_sync r(s.redis.endpoint());
  EXPECT_TRUE(printable(hget(r, P + "job:" + std::to_string(id), "progress")));
}

TEST(AppText, TheGatewaysReportRoutesReplaceControlsAndRefuseBadCounts) {
  service_options o;
  o.workers = 0;  // the job is claimed and reported on through the gateway
  service s(o);
  auto id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  auto claim = s.call("POST", "/api/jobs/" + std::to_string(id) + "/claim", R"({"host":"h1"})");
  ASSERT_EQ(claim.status, 200) << claim.body;
  auto token = std::string(claim.json().as_object().at("token").as_string());
  std::string j = "/api/jobs/" + std::to_string(id);
  json::object started{{"attempt", 1}, {"pid", 42}, {"host", "h\x1b[1m"}, {"rundir", "/tmp/r\x07"}};
  ASSERT_EQ(s.call("POST", j + "/started", json::serialize(started), token).status, 200);
  EXPECT_TRUE(printable(str(s.job(id), "host")));
  EXPECT_TRUE(printable(str(s.job(id), "rundir")));
  json::object p{{"attempt", 1},
                 {"message",
                  "red \x1b[31mALERT\x07 back\rover \x7f"
                  "del"},
                 {"done", 3},
                 {"total", 5}};
  auto pr = s.call("POST", j + "/progress", json::serialize(p), token);
  ASSERT_EQ(pr.status, 200) << pr.body;
  auto jj = s.job(id);
  EXPECT_EQ(str(jj, "progress"),
            "Running. red " + fffd + "[31mALERT" + fffd + " back" + fffd + "over " + fffd + "del");
  EXPECT_EQ(jj.at("done_count").as_int64(), 3);
  // done > total, and negative counts: 400 with a JSON reason; nothing changes.
  for (auto [done, total] : {std::pair{7, 5}, std::pair{-1, 5}, std::pair{1, -5}}) {
    json::object bad{{"attempt", 1}, {"message", "bad counts"}, {"done", done}, {"total", total}};
    auto res = s.call("POST", j + "/progress", json::serialize(bad), token);
    EXPECT_EQ(res.status, 400) << done << "/" << total << ": " << res.body;
    auto body = res.json().as_object();
    EXPECT_TRUE(body.contains("error")) << res.body;
  }
  jj = s.job(id);
  EXPECT_EQ(jj.at("done_count").as_int64(), 3);
  EXPECT_EQ(jj.at("total_count").as_int64(), 5);
  EXPECT_EQ(str(jj, "progress").find("bad counts"), std::string::npos);
  json::object fin{{"attempt", 1}, {"rc", 0}, {"message", "bye\x1b]0;t\x07"}};
  ASSERT_EQ(s.call("POST", j + "/finished", json::serialize(fin), token).status, 200);
  EXPECT_EQ(str(s.job(id), "progress"), "Done. bye" + fffd + "]0;t" + fffd);
}

TEST(AppText, TheDaemonDropsProgressCountsBeyondTheTotalOrNegative) {
  service_options o;
  o.workers = 0;  // the worker is played by the test
  service s(o);
  redis_sync r(s.redis.endpoint());
  zmq::context_t ctx(1);
  hostile_peer w(ctx, "ipc://" + s.dir.file("w.ipc"));
  auto token = read_file(s.worker_token_file);
  token = token.substr(0, token.find('\n'));
  w.send("hello", hostile_peer::hello("counter", token));
  ASSERT_TRUE(w.expect({"welcome"}, 10s));
  w.send("ready", json::object{{"credits", 1}});
  auto id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  auto job = w.expect({"job"}, 10s);
  ASSERT_TRUE(job);
  ASSERT_EQ(job->second.at("job").as_object().at("id").as_int64(), id);
  long long attempt = job->second.at("attempt").as_int64();
  auto rep = [&](json::object extra) {
    return hostile_peer::report("counter", token, id, attempt, std::move(extra));
  };
  w.send("started", rep({{"pid", 1}, {"host", "h"}, {"rundir", "/tmp/x"}}));
  w.send("progress", rep({{"message", "good"}, {"done", 2}, {"total", 5}}));
  const std::string key = P + "job:" + std::to_string(id);
  ASSERT_TRUE(wait_until([&] { return hget(r, key, "done_count") == "2"; }, 10s)) << hget(r, key, "progress");
  w.send("progress", rep({{"message", "too many"}, {"done", 7}, {"total", 5}}));
  w.send("progress", rep({{"message", "negative"}, {"done", -1}, {"total", 5}}));
  w.send("progress", rep({{"message", "last \x1b[2J"}, {"done", 3}, {"total", -4}}));
  ASSERT_TRUE(wait_until([&] { return hget(r, key, "progress").find("last") != std::string::npos; }, 10s))
      << hget(r, key, "progress");
  EXPECT_EQ(hget(r, key, "progress"), "Running. last " + fffd + "[2J");
  EXPECT_EQ(hget(r, key, "done_count"), "2");
  EXPECT_EQ(hget(r, key, "total_count"), "5");
  EXPECT_GE(count_of(read_file(s.dir.file("daemon.log")), "progress counts dropped"), 3u);
  w.send("finished", rep({{"rc", 0}, {"signal", 0}, {"timed_out", false}, {"message", "ok"}}));
  ASSERT_TRUE(wait_until([&] { return hget(r, key, "state") == "done"; }, 10s));
}

}  // namespace
}  // namespace descprod::test
