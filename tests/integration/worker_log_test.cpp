// The worker ships a job's whole log (issue #17 item 5): in order, without gaps, each `log`
// message carrying the byte offsets of the file it covers; long lines in pieces; the last
// unterminated line at the end; everything before `finished`; and no more than the job's cap
// (`log_max`). Against a real worker process and the test's fake daemon (worker_fixture.hpp).
#include <numeric>

#include "tests/integration/worker_fixture.hpp"

namespace {

struct shipped {
  std::vector<std::string> lines;
  std::vector<std::pair<long long, long long>> ranges;  // offset, next of each message
  bool capped = false;
  bool finished_after_every_log = true;
};

// Collects the job's `log` messages until its `finished`.
shipped collect(fake_daemon& d, long long id) {
  shipped out;
  bool finished = false;
  auto deadline = steady::now() + 30s;
  while (!finished && steady::now() < deadline) {
    auto m = d.recv(1000ms);
    if (!m || !m->body.contains("job") || m->body.at("job").as_int64() != id) continue;
    if (m->command == "finished") finished = true;
    if (m->command != "log") continue;
    if (finished) out.finished_after_every_log = false;
    for (const auto& l : m->body.at("lines").as_array()) out.lines.emplace_back(l.as_string());
    out.ranges.emplace_back(m->body.at("offset").as_int64(), m->body.at("next").as_int64());
    if (m->body.contains("capped")) out.capped = m->body.at("capped").as_bool();
  }
  EXPECT_TRUE(finished) << "no finished for job " << id;
  return out;
}

TEST_F(Worker, ShipsTheWholeLogInOrderWithContiguousOffsetsBeforeFinished) {
  start_worker();
  auto route = handshake();
  ASSERT_TRUE(daemon_->expect("ready"));
  // 20,000 numbered lines (about 250 KB: several chunks of 64 KiB, written faster than one poll
  // ships), a 10,000-byte line, an empty line, and a last line without a newline.
  const std::string script =
      "i=1; while [ $i -le 20000 ]; do echo \"line $i of the log\"; i=$((i+1)); done; "
      "head -c 10000 /dev/zero | tr '\\0' x; echo; echo; printf 'no newline at the end'";
  daemon_->send(route, "job", job_body(50, {"/bin/sh", "-c", script}));
  auto got = collect(*daemon_, 50);
  EXPECT_TRUE(got.finished_after_every_log) << "a log message came after finished";
  EXPECT_FALSE(got.capped);
  ASSERT_FALSE(got.ranges.empty());
  EXPECT_EQ(got.ranges.front().first, 0);
  for (std::size_t i = 1; i < got.ranges.size(); ++i)
    EXPECT_EQ(got.ranges[i].first, got.ranges[i - 1].second) << "gap or overlap before message " << i;
  auto file = slurp(dir_.path / "out" / "jobs" / "job000050" / "job000050.log");
  EXPECT_EQ(static_cast<std::size_t>(got.ranges.back().second), file.size());
  EXPECT_GT(got.ranges.size(), 4u) << "expected several chunks";

  std::vector<std::string> want;
  for (int i = 1; i <= 20000; ++i) want.push_back("line " + std::to_string(i) + " of the log");
  want.push_back(std::string(4000, 'x'));  // the long line, in pieces of at most 4000 bytes
  want.push_back(std::string(4000, 'x'));
  want.push_back(std::string(2000, 'x'));
  want.push_back("");
  want.push_back("no newline at the end");
  ASSERT_EQ(got.lines.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got.lines[i], want[i]) << "line " << i + 1;
  EXPECT_EQ(stop_worker(), 0);
}

TEST_F(Worker, ALogWrittenAllAtOnceIsShippedWholeAtTheEndWithoutCutLines) {
  // `seq` writes ~2 MB and exits before the worker has read it: the drain after the app ends reads
  // several chunks, and only the last one's unterminated tail may be taken as a line (a bug once
  // cut a line at every chunk boundary there).
  start_worker();
  auto route = handshake();
  ASSERT_TRUE(daemon_->expect("ready"));
  daemon_->send(route, "job", job_body(54, {"/bin/sh", "-c", "seq 1 300000; printf tail"}));
  auto got = collect(*daemon_, 54);
  ASSERT_EQ(got.lines.size(), 300001u);
  for (int i = 1; i <= 300000; ++i) ASSERT_EQ(got.lines[i - 1], std::to_string(i)) << "line " << i;
  EXPECT_EQ(got.lines.back(), "tail");
  for (std::size_t i = 1; i < got.ranges.size(); ++i)
    EXPECT_EQ(got.ranges[i].first, got.ranges[i - 1].second);
  EXPECT_EQ(stop_worker(), 0);
}

TEST_F(Worker, StopsShippingAtTheJobsLogCapAndSaysSo) {
  start_worker();
  auto route = handshake();
  ASSERT_TRUE(daemon_->expect("ready"));
  auto body = job_body(51, {"/bin/sh", "-c", "head -c 2000000 /dev/zero | tr '\\0' y | fold -w 99"});
  body["log_max"] = 100000;
  daemon_->send(route, "job", body);
  auto got = collect(*daemon_, 51);
  EXPECT_TRUE(got.capped);
  ASSERT_FALSE(got.ranges.empty());
  EXPECT_LE(got.ranges.back().second, 100000);
  EXPECT_GE(got.ranges.back().second, 100000 - 100);
  std::size_t bytes = 0;
  for (const auto& l : got.lines) bytes += l.size() + 1;
  EXPECT_LE(bytes, 100000u + 100);
  // The file keeps all of it.
  EXPECT_EQ(fs::file_size(dir_.path / "out" / "jobs" / "job000051" / "job000051.log"),
            2000000u + 2000000u / 99);
  EXPECT_EQ(stop_worker(), 0);
}

TEST_F(Worker, DropsAJobWhoseLogCapIsNotANonNegativeInteger) {
  start_worker();
  auto route = handshake();
  ASSERT_TRUE(daemon_->expect("ready"));
  auto body = job_body(52, {"/bin/true"});
  body["log_max"] = "lots";
  daemon_->send(route, "job", body);
  // A malformed job message is dropped (the daemon's lease runs out), never run; the worker goes on.
  daemon_->send(route, "job", job_body(53, {"/bin/true"}));
  ASSERT_TRUE(daemon_->expect("finished", for_job(53)));
  for (const auto& m : daemon_->history)
    EXPECT_FALSE(m.body.contains("job") && m.body.at("job").as_int64() == 52) << m.command << " for job 52";
  EXPECT_FALSE(fs::exists(dir_.path / "out" / "jobs" / "job000052"));
  EXPECT_EQ(stop_worker(), 0);
}

}  // namespace
