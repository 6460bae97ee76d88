// The notifier's mail text (notifier/mail.hpp): dot-stuffing, header values kept on one line,
// the coalesced failure mail, and which stream entries count as failures.
#include <gtest/gtest.h>

#include "core/redis.hpp"
#include "notifier/mail.hpp"

namespace descprod::notify {
namespace {

TEST(NotifyMail, OneLineStripsCrLfAndControls) {
  EXPECT_EQ(one_line("a\r\nBcc: x@y"), "a  Bcc: x@y");
  EXPECT_EQ(one_line("\n\tx\x7f"
                     "y\x01 "),
            "x y");
  EXPECT_EQ(one_line("\r\n"), "");
  EXPECT_EQ(one_line(std::string(300, 'a')).size(), 200u);
  // Never cut inside a UTF-8 sequence: "é" is 2 bytes; 3 bytes fit one and a half of them.
  EXPECT_EQ(one_line("\xc3\xa9\xc3\xa9", 3), "\xc3\xa9");
}

TEST(NotifyMail, DotStuffing) {
  EXPECT_EQ(dot_stuff("a\r\n.\r\nb"), "a\r\n..\r\nb\r\n");
  EXPECT_EQ(dot_stuff(".x\n..y\rz"), "..x\r\n...y\r\nz\r\n");
  EXPECT_EQ(dot_stuff("a.b\r\n"), "a.b\r\n");
  EXPECT_EQ(dot_stuff(""), "\r\n");
  // A lone "." line can never end the DATA early.
  std::string stuffed = dot_stuff("x\r\n.\r\nQUIT\r\n");
  EXPECT_EQ(stuffed.find("\r\n.\r\n"), std::string::npos) << stuffed;
}

TEST(NotifyMail, HeadersCannotBeInjected) {
  mail m;
  m.from = "descprod@example.org";
  m.to = "alice@example.org\r\nBcc: victim@example.org";
  m.subject = "job 1\r\nX-Injected: 1\nY: 2";
  m.body = "line one\r\n.\nline three";
  std::string text = render_message(m, 0, "1.abc@example.org\r\nX-Id: 1");
  std::string headers = text.substr(0, text.find("\r\n\r\n") + 2);
  EXPECT_EQ(headers,
            "From: descprod@example.org\r\n"
            "To: alice@example.org  Bcc: victim@example.org\r\n"
            "Subject: job 1  X-Injected: 1 Y: 2\r\n"
            "Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"
            "Message-ID: <1.abc@example.org  X-Id: 1>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n"
            "Auto-Submitted: auto-generated\r\n");
  EXPECT_EQ(text.substr(headers.size()), "\r\nline one\r\n.\r\nline three\r\n");
  EXPECT_EQ(dot_stuff(text).find("\r\n.\r\n"), std::string::npos);
}

std::vector<failed_job> jobs(int n) {
  std::vector<failed_job> out;
  for (int i = 1; i <= n; ++i) {
    failed_job j;
    j.id = std::to_string(i);
    j.jobtype = "fail";
    j.config = "c" + std::to_string(i);
    j.state = "failed";
    j.progress = "Failed. it broke";
    out.push_back(j);
  }
  return out;
}

TEST(NotifyMail, OneFailureNamesTheJob) {
  auto m = failure_mail("d@example.org", "a@example.org", "alice", jobs(1), 1, "https://x.example", 20);
  EXPECT_EQ(m.subject, "DESCprod: job 1 (fail) failed");
  EXPECT_NE(m.body.find("Job 1 fail c1: failed - Failed. it broke\n  https://x.example/jobs/1\n"),
            std::string::npos)
      << m.body;
  EXPECT_EQ(m.body.find("more"), std::string::npos) << m.body;
}

TEST(NotifyMail, ABurstIsOneMailWithTheFirstTwentyAndACount) {
  // The intake keeps at most max_listed IDs and counts the rest: 1,000 failures, 20 named.
  auto m = failure_mail("d@example.org", "a@example.org", "alice", jobs(20), 1000, "https://x.example", 20);
  EXPECT_EQ(m.subject, "DESCprod: 1000 of your jobs failed");
  std::size_t links = 0;
  for (auto at = m.body.find("https://x.example/jobs/"); at != std::string::npos;
       at = m.body.find("https://x.example/jobs/", at + 1))
    ++links;
  EXPECT_EQ(links, 20u);
  EXPECT_NE(m.body.find("and 980 more"), std::string::npos) << m.body;
  // More listed than allowed: only max_listed are named.
  auto capped = failure_mail("d@example.org", "a@example.org", "alice", jobs(30), 30, "https://x.example", 5);
  EXPECT_NE(capped.body.find("and 25 more"), std::string::npos) << capped.body;
  EXPECT_EQ(capped.body.find("/jobs/6\n"), std::string::npos) << capped.body;
}

TEST(NotifyMail, JobTextStaysOnItsLine) {
  auto js = jobs(1);
  js[0].jobtype = "fail\r\nBcc: v@example.org";
  js[0].progress = "x\n.\nQUIT";
  auto m = failure_mail("d@example.org", "a@example.org", "alice", js, 1, "https://x.example", 20);
  EXPECT_EQ(m.subject.find('\n'), std::string::npos);
  EXPECT_EQ(m.subject.find('\r'), std::string::npos);
  EXPECT_EQ(m.body.find("\n.\n"), std::string::npos) << m.body;
  EXPECT_EQ(m.body.find("\nQUIT"), std::string::npos) << m.body;
}

redis_reply str(const std::string& s) {
  redis_reply r;
  r.type = redis_reply::kind::string;
  r.str = s;
  return r;
}
redis_reply entry(const std::string& id, const std::vector<std::string>& fields) {
  redis_reply e;
  e.type = redis_reply::kind::array;
  e.elements.push_back(str(id));
  redis_reply f;
  f.type = redis_reply::kind::array;
  for (const auto& x : fields) f.elements.push_back(str(x));
  e.elements.push_back(f);
  return e;
}

TEST(NotifyMail, FailuresByOwnerPicksFailedTransitions) {
  redis_reply entries;
  entries.type = redis_reply::kind::array;
  entries.elements.push_back(
      entry("1-0", {"id", "5", "owner", "alice", "type", "transition", "state", "failed"}));
  entries.elements.push_back(
      entry("2-0", {"id", "6", "owner", "alice", "type", "transition", "state", "done"}));
  entries.elements.push_back(
      entry("3-0", {"id", "7", "owner", "bob", "type", "transition", "state", "timeout"}));
  entries.elements.push_back(
      entry("4-0", {"id", "8", "owner", "alice", "type", "progress", "state", "failed"}));
  entries.elements.push_back(
      entry("5-0", {"id", "9", "owner", "alice", "type", "transition", "state", "cancelled"}));
  entries.elements.push_back(
      entry("6-0", {"id", "10", "owner", "alice", "type", "transition", "state", "killed"}));
  std::string last = "0-0";
  auto by = failures_by_owner(entries, last);
  EXPECT_EQ(last, "6-0");
  ASSERT_EQ(by.size(), 2u);
  EXPECT_EQ(by["alice"], (std::vector<std::string>{"5", "10"}));
  EXPECT_EQ(by["bob"], (std::vector<std::string>{"7"}));
}

}  // namespace
}  // namespace descprod::notify
