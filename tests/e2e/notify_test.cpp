// End-to-end tests of e-mail on failure (descprod-notifier, docs/operators.md#e-mail-on-failure):
// the real binaries and redis-server (tests/support/service.hpp), the real descprod-notifier, and a
// real SMTP server as the relay (tests/support/smtp_sink.py on Debian's python3-aiosmtpd), which
// writes every message it accepts to a folder. Every wait is bounded; the sink is stopped by PID.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "core/redis.hpp"
#include "tests/e2e/api_support.hpp"

namespace descprod::test {
namespace {

using namespace api;
namespace fs = std::filesystem;

// A TCP port nothing listens on now (bound to 0 and released).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    throw std::runtime_error("no free port");
  int port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

struct mail_file {
  std::string envelope;
  std::string text;
};

// The service, the notifier and the sink of one test.
struct mail_setup {
  explicit mail_setup(int slots = 2, int delay_ms = 300, int interval_ms = 1500)
      : svc(options(slots)), port(free_port()), maildir(svc.dir.file("mail")) {
    fs::create_directories(maildir);
    redis_sync r(svc.redis.endpoint());
    r.exec(redis_cmd("HSET", "descprod:user:alice", "email", "alice@example.org"));
    r.exec(redis_cmd("HSET", "descprod:user:bob", "email", "bob@example.org"));
    std::ofstream(svc.config_file, std::ios::app)
        << "notify:\n  smtp_host: 127.0.0.1\n  smtp_port: " << port
        << "\n  from: descprod@example.org\n  base_url: http://descprod.example.org/\n  interval_ms: "
        << interval_ms << "\n  delay_ms: " << delay_ms
        << "\n  timeout_ms: 2000\n  backoff_initial_ms: 100\n  backoff_max_ms: 400\n";
  }
  static service_options options(int slots) {
    auto o = api_options(1);
    o.slots = slots;
    return o;
  }
  // Starts the notifier and waits until it follows the stream (it starts at the stream's end).
  void start_notifier() {
    notifier = std::make_unique<process>(
        std::vector<std::string>{svc.bin("descprod-notifier"), "--config", svc.config_file}, svc.env(),
        svc.dir.file("notifier.log"));
    ASSERT_TRUE(
        wait_until([&] { return notifier->output().find("notifier leading") != std::string::npos; }, 15s))
        << notifier->output();
  }
  void start_sink() {
    sink = std::make_unique<process>(
        std::vector<std::string>{"/usr/bin/python3",
                                 std::string(DESCPROD_SOURCE_DIR) + "/tests/support/smtp_sink.py",
                                 std::to_string(port), maildir},
        std::vector<std::pair<std::string, std::string>>{}, svc.dir.file("sink.log"));
    ASSERT_TRUE(wait_until([&] { return fs::exists(maildir + "/ready"); }, 15s)) << sink->output();
  }
  void opt_in(const std::string& token, bool on) {
    auto r = svc.call("POST", "/api/session/preferences",
                      std::string("{\"email_on_failure\":") + (on ? "true" : "false") + "}", token);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.json().as_object().at("email_on_failure").as_bool(), on);
  }
  std::vector<mail_file> mails() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(maildir))
      if (e.path().extension() == ".eml") names.push_back(e.path().string());
    std::sort(names.begin(), names.end());
    std::vector<mail_file> out;
    for (const auto& n : names) {
      mail_file m;
      m.text = read_file(n);
      m.envelope = read_file(n.substr(0, n.size() - 4) + ".env");
      out.push_back(std::move(m));
    }
    return out;
  }
  long long submit_fail(const std::string& token = "") {
    return svc.submit("{\"jobtype\":\"fail\",\"config\":\"x\",\"howfig\":\"\"}", token);
  }
  ~mail_setup() {
    if (notifier) notifier->stop();
    if (sink) sink->stop();
  }

  service svc;
  int port;
  std::string maildir;
  std::unique_ptr<process> notifier, sink;
};

// The header block of a received message (up to the first empty line), and its body.
std::string headers_of(const std::string& text) { return text.substr(0, text.find("\r\n\r\n") + 2); }
std::string body_of(const std::string& text) {
  auto at = text.find("\r\n\r\n");
  return at == std::string::npos ? "" : text.substr(at + 4);
}
bool has_header_line(const std::string& text, const std::string& start) {
  std::string h = "\r\n" + headers_of(text);
  return h.find("\r\n" + start) != std::string::npos;
}

TEST(Notify, OptedInOwnerGetsOneMailWithTheLinkOthersNone) {
  mail_setup m;
  m.start_sink();
  m.start_notifier();
  m.opt_in(m.svc.alice_token, true);
  // The preference shows in GET /api/session.
  auto sess = m.svc.call("GET", "/api/session");
  ASSERT_EQ(sess.status, 200);
  EXPECT_TRUE(sess.json().as_object().at("email_on_failure").as_bool()) << sess.body;
  EXPECT_EQ(str(sess.json().as_object(), "email"), "alice@example.org");

  long long failed = m.submit_fail();
  long long done = m.svc.submit("{\"jobtype\":\"mysleep\",\"config\":\"0\",\"howfig\":\"\"}");
  long long bobs = m.submit_fail(m.svc.bob_token);  // bob has an e-mail address but did not opt in
  ASSERT_TRUE(m.svc.wait_terminal(failed));
  ASSERT_TRUE(m.svc.wait_terminal(done));
  ASSERT_TRUE(m.svc.wait_terminal(bobs, 60s, m.svc.bob_token));
  EXPECT_EQ(m.svc.state(failed), "failed");
  EXPECT_EQ(m.svc.state(done), "done");
  ASSERT_TRUE(wait_until([&] { return !m.mails().empty(); }, 15s)) << m.notifier->output();
  // Nothing more comes (bob's failure, alice's done job): wait past the interval.
  std::this_thread::sleep_for(3s);
  auto mails = m.mails();
  ASSERT_EQ(mails.size(), 1u);
  const auto& mail = mails[0];
  EXPECT_EQ(mail.envelope, "descprod@example.org\nalice@example.org\n");
  EXPECT_TRUE(has_header_line(mail.text, "To: alice@example.org\r\n")) << mail.text;
  EXPECT_TRUE(has_header_line(mail.text, "From: descprod@example.org\r\n")) << mail.text;
  EXPECT_TRUE(
      has_header_line(mail.text, "Subject: DESCprod: job " + std::to_string(failed) + " (fail) failed\r\n"))
      << mail.text;
  EXPECT_TRUE(has_header_line(mail.text, "Date: ")) << mail.text;
  EXPECT_TRUE(has_header_line(mail.text, "Message-ID: <")) << mail.text;
  std::string body = body_of(mail.text);
  EXPECT_NE(body.find("http://descprod.example.org/jobs/" + std::to_string(failed) + "\r\n"),
            std::string::npos)
      << body;
  EXPECT_NE(body.find("it broke"), std::string::npos) << body;
  EXPECT_EQ(body.find("/jobs/" + std::to_string(done) + "\r\n"), std::string::npos) << body;
  EXPECT_EQ(body.find("/jobs/" + std::to_string(bobs) + "\r\n"), std::string::npos) << body;

  // Opted out again: the next failure sends nothing.
  m.opt_in(m.svc.alice_token, false);
  long long later = m.submit_fail();
  ASSERT_TRUE(m.svc.wait_terminal(later));
  std::this_thread::sleep_for(3500ms);
  EXPECT_EQ(m.mails().size(), 1u);
}

TEST(Notify, FiftyFailuresAtOnceMakeOneMail) {
  mail_setup m(16, 10000, 60000);
  m.start_sink();
  m.start_notifier();
  m.opt_in(m.svc.alice_token, true);
  std::string jobs = "{\"jobs\":[";
  for (int i = 0; i < 50; ++i) jobs += std::string(i ? "," : "") + "{\"jobtype\":\"fail\",\"config\":\"x\"}";
  jobs += "]}";
  auto r = m.svc.call("POST", "/api/jobs/bulk", jobs);
  ASSERT_EQ(r.status, 201) << r.body;
  std::vector<long long> ids;
  auto answer = r.json();  // kept: a range-for over a temporary's member would dangle
  for (const auto& v : answer.as_object().at("ids").as_array()) ids.push_back(v.to_number<long long>());
  ASSERT_EQ(ids.size(), 50u);
  for (auto id : ids) ASSERT_TRUE(m.svc.wait_terminal(id, 60s));
  ASSERT_TRUE(wait_until([&] { return !m.mails().empty(); }, 20s)) << m.notifier->output();
  std::this_thread::sleep_for(2s);
  auto mails = m.mails();
  ASSERT_EQ(mails.size(), 1u) << m.notifier->output();
  const auto& text = mails[0].text;
  EXPECT_TRUE(has_header_line(text, "Subject: DESCprod: 50 of your jobs failed\r\n")) << text;
  std::string body = body_of(text);
  EXPECT_NE(body.find("and 30 more"), std::string::npos) << body;
  // 20 jobs are named, each with its link.
  std::size_t links = 0;
  for (auto at = body.find("http://descprod.example.org/jobs/"); at != std::string::npos;
       at = body.find("http://descprod.example.org/jobs/", at + 1))
    ++links;
  EXPECT_EQ(links, 20u) << body;
  // Nothing is left waiting.
  redis_sync rs(m.svc.redis.endpoint());
  EXPECT_EQ(rs.exec(redis_cmd("ZCARD", "descprod:notify:due")).as_integer(), 0);
  EXPECT_EQ(rs.exec(redis_cmd("HLEN", "descprod:notify:pending")).as_integer(), 0);
}

TEST(Notify, RelayDownThenUpDeliversLater) {
  mail_setup m;
  m.start_notifier();  // no relay listening on the port yet
  m.opt_in(m.svc.alice_token, true);
  long long failed = m.submit_fail();
  ASSERT_TRUE(m.svc.wait_terminal(failed));
  ASSERT_TRUE(wait_until(
      [&] { return m.notifier->output().find("failure mail not sent") != std::string::npos; }, 15s))
      << m.notifier->output();
  EXPECT_TRUE(m.mails().empty());
  // The notifier restarts meanwhile: what waits is in Redis, not in its memory.
  m.notifier->stop();
  m.start_notifier();
  m.start_sink();
  ASSERT_TRUE(wait_until([&] { return !m.mails().empty(); }, 15s)) << m.notifier->output();
  std::this_thread::sleep_for(1s);
  auto mails = m.mails();
  ASSERT_EQ(mails.size(), 1u);
  EXPECT_NE(body_of(mails[0].text).find("http://descprod.example.org/jobs/" + std::to_string(failed)),
            std::string::npos)
      << mails[0].text;
}

TEST(Notify, JobTextCannotInjectHeaders) {
  mail_setup m(2, 2500, 1500);
  m.start_sink();
  m.start_notifier();
  m.opt_in(m.svc.alice_token, true);
  long long failed = m.submit_fail();
  ASSERT_TRUE(m.svc.wait_terminal(failed));
  // The record as a hostile writer could leave it (the API refuses such text; the mail must not
  // trust Redis either): CR/LF in the type (the subject), the config and the progress (the body).
  redis_sync r(m.svc.redis.endpoint());
  r.exec(redis_cmd("HSET", "descprod:job:" + std::to_string(failed), "jobtype",
                   "fail\r\nBcc: victim@example.org\r\nX-Injected: 1", "config",
                   "c\r\n\r\nX-Body-Header: 1\r\n.\r\n", "progress", "p\nX-Progress: 1\r\n.\r\nQUIT"));
  ASSERT_TRUE(wait_until([&] { return !m.mails().empty(); }, 15s)) << m.notifier->output();
  auto mails = m.mails();
  ASSERT_EQ(mails.size(), 1u);
  const auto& text = mails[0].text;
  EXPECT_EQ(mails[0].envelope, "descprod@example.org\nalice@example.org\n");
  EXPECT_FALSE(has_header_line(text, "Bcc:")) << text;
  EXPECT_FALSE(has_header_line(text, "X-Injected:")) << text;
  EXPECT_NE(headers_of(text).find("Subject: DESCprod: job " + std::to_string(failed) +
                                  " (fail  Bcc: victim@example.org  X-Injected: 1) failed\r\n"),
            std::string::npos)
      << text;
  // In the body every value stays on its job's line; the message was not cut by a "." line.
  std::string body = body_of(text);
  EXPECT_EQ(body.find("\r\nX-Body-Header"), std::string::npos) << body;
  EXPECT_EQ(body.find("\r\nX-Progress"), std::string::npos) << body;
  EXPECT_NE(body.find("turn it off on http://descprod.example.org/tokens"), std::string::npos) << body;
}

}  // namespace
}  // namespace descprod::test
