// The sites' status end to end (docs/operators.md, Site status): the real daemon polls a local
// HTTP server (below; NERSC's status API cannot be reached from here, so its answers are served
// from loopback in the form that API has) for five sites answering active, degraded, down, a
// malformed document, and nothing (a closed port). GET /api/sites shows what the daemon last
// learnt: the last good answer kept with its age when a later poll fails, the failure named. A
// pilot is not submitted to a site reported down (its sbatch, a fake that counts its calls, is
// never run), and is once the site is active again.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sys/stat.h>
#include <atomic>
#include <boost/json.hpp>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "tests/e2e/api_support.hpp"

namespace descprod::test::api {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

// A loopback HTTP/1.1 server answering GET <path> with the answer set for it (404 otherwise),
// one request per connection. Its thread polls a stop flag every 50 ms.
class status_server {
 public:
  status_server() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 16) != 0)
      throw std::runtime_error("status_server: bind/listen failed");
    socklen_t n = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &n);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~status_server() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  int port() const { return port_; }
  std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  void set(const std::string& path, int status, std::string body) {
    std::lock_guard<std::mutex> l(m_);
    answers_[path] = {status, std::move(body)};
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      std::string req;
      char buf[4096];
      for (int i = 0; i < 100 && req.find("\r\n\r\n") == std::string::npos; ++i) {
        pollfd q{c, POLLIN, 0};
        if (::poll(&q, 1, 50) <= 0) continue;
        auto r = ::read(c, buf, sizeof buf);
        if (r <= 0) break;
        req.append(buf, static_cast<std::size_t>(r));
      }
      std::string path;
      if (req.rfind("GET ", 0) == 0) path = req.substr(4, req.find(' ', 4) - 4);
      int status = 404;
      std::string body = "{}";
      {
        std::lock_guard<std::mutex> l(m_);
        if (auto it = answers_.find(path); it != answers_.end()) std::tie(status, body) = it->second;
      }
      std::string out = "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: application/json\r\n" +
                        "Content-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
                        body;
      (void)!::write(c, out.data(), out.size());
      ::close(c);
    }
  }
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex m_;
  std::map<std::string, std::pair<int, std::string>> answers_;
  std::thread thread_;
};

// NERSC's status API's document for a system (https://api.nersc.gov/api/v1.2/status/<system>).
std::string nersc_status(const std::string& name, const std::string& status, const std::string& description) {
  return R"({"name":")" + name + R"(","full_name":")" + name + R"( system","description":")" + description +
         R"(","system_type":"compute","notes":["maintenance at 08:00","scratch degraded"],"status":")" +
         status + R"(","updated_at":"2026-12-07T10:00:00-08:00"})";
}

// A loopback port nothing listens on.
int closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t n = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  ::close(fd);
  return ntohs(a.sin_port);
}

std::map<std::string, json::object> sites_of(service& s) {
  std::map<std::string, json::object> out;
  auto r = s.call("GET", "/api/sites");
  if (r.status != 200) return out;
  auto v = r.json();
  for (const auto& e : v.as_object().at("sites").as_array()) {
    const auto& o = e.as_object();
    out[std::string(o.at("name").as_string())] = o;
  }
  return out;
}

std::string field(const std::map<std::string, json::object>& m, const std::string& site, const char* key) {
  auto it = m.find(site);
  if (it == m.end() || !it->second.contains(key) || !it->second.at(key).is_string()) return "";
  return std::string(it->second.at(key).as_string());
}

TEST(SiteStatus, TheDaemonPollsEachSiteKeepsTheLastGoodAnswerAndSendsNoPilotToASiteThatIsDown) {
  status_server web;
  web.set("/status/alpha", 200, nersc_status("alpha", "active", "System available."));
  web.set("/status/beta", 200, nersc_status("beta", "degraded", "Scratch is slow."));
  web.set("/status/gamma", 200, nersc_status("gamma", "down", "Scheduled maintenance."));
  web.set("/status/delta", 200, "<html>not JSON</html>");
  // zeta answers a document of 200 KiB: refused unread (at most 64 KiB).
  web.set("/status/zeta", 200, nersc_status("zeta", "active", std::string(200 * 1024, 'x')));
  temp_dir fake("descprod-fake-sbatch-");
  const std::string calls = fake.file("calls");
  auto sbatch = fake.file("sbatch");
  // Counts its calls and refuses (no pilot is ever made): only whether it is run matters here.
  write_file(sbatch,
             "#!/bin/sh\necho x >> '" + calls + "'\necho 'sbatch: error: test refuses' >&2\nexit 1\n");
  ::chmod(sbatch.c_str(), 0755);

  service_options o = api_options(0);
  o.daemon_extra =
      "sites:\n"
      "  - {name: alpha, status_url: '" +
      web.url("/status/alpha") +
      "', poll_s: 1, timeout_s: 2}\n"
      "  - {name: beta, status_url: '" +
      web.url("/status/beta") +
      "', poll_s: 1}\n"
      "  - {name: gamma, status_url: '" +
      web.url("/status/gamma") +
      "', poll_s: 1}\n"
      "  - {name: delta, status_url: '" +
      web.url("/status/delta") +
      "', poll_s: 1}\n"
      "  - {name: epsilon, status_url: 'http://127.0.0.1:" +
      std::to_string(closed_port()) +
      "/status/epsilon', poll_s: 1, timeout_s: 1}\n"
      "  - {name: zeta, status_url: '" +
      web.url("/status/zeta") +
      "', poll_s: 1}\n"
      "pilots:\n  enabled: true\n  site: gamma\n  min: 1\n  max: 1\n  script: " DESCPROD_SOURCE_DIR
      "/scripts/slurm/descprod-pilot.sbatch\n  sbatch: " +
      sbatch + "\n  log_dir: " + fake.file("pilots") +
      "\n  check_interval_ms: 100\n  backoff_min_ms: 200\n  backoff_max_ms: 400\n";
  service s(o);

  std::map<std::string, json::object> m;
  ASSERT_TRUE(wait_until(
      [&] {
        m = sites_of(s);
        return field(m, "alpha", "status") == "active" && field(m, "beta", "status") == "degraded" &&
               field(m, "gamma", "status") == "down" && !field(m, "delta", "error").empty() &&
               !field(m, "epsilon", "error").empty() && !field(m, "zeta", "error").empty();
      },
      20s))
      << s.call("GET", "/api/sites").body;
  EXPECT_EQ(m.size(), 6u);
  EXPECT_EQ(field(m, "zeta", "status"), "unknown") << "an answer over 64 KiB is refused";
  EXPECT_NE(field(m, "zeta", "error").find("body limit"), std::string::npos) << field(m, "zeta", "error");
  EXPECT_EQ(field(m, "alpha", "description"), "System available.");
  EXPECT_EQ(field(m, "alpha", "notes"), "maintenance at 08:00; scratch degraded");
  EXPECT_EQ(field(m, "alpha", "updated_at"), "2026-12-07T10:00:00-08:00");
  EXPECT_EQ(field(m, "alpha", "error"), "");
  EXPECT_TRUE(m["alpha"].contains("age_s"));
  EXPECT_EQ(field(m, "delta", "status"), "unknown") << "a malformed answer is no status";
  EXPECT_NE(field(m, "delta", "error").find("not JSON"), std::string::npos) << field(m, "delta", "error");
  EXPECT_EQ(field(m, "epsilon", "status"), "unknown");
  EXPECT_NE(field(m, "epsilon", "error").find("unreachable"), std::string::npos)
      << field(m, "epsilon", "error");
  EXPECT_FALSE(m["epsilon"].contains("age_s"));

  // The site that is down gets no pilot: its sbatch is never run, the reason is in the log.
  std::this_thread::sleep_for(1500ms);
  EXPECT_FALSE(std::filesystem::exists(calls)) << read_file(calls);
  EXPECT_NE(s.daemon->output().find("pilots not submitted site=gamma reason=site gamma is down"),
            std::string::npos)
      << s.daemon->output();

  // alpha now answers junk, then an error status: its last good answer stays, aging, the failure named.
  web.set("/status/alpha", 200, R"({"status": 42})");
  ASSERT_TRUE(wait_until([&] { return !field(sites_of(s), "alpha", "error").empty(); }, 10s));
  m = sites_of(s);
  EXPECT_EQ(field(m, "alpha", "status"), "active");
  EXPECT_NE(field(m, "alpha", "error").find("no status string"), std::string::npos)
      << field(m, "alpha", "error");
  web.set("/status/alpha", 503, "{}");
  ASSERT_TRUE(wait_until([&] { return field(sites_of(s), "alpha", "error") == "HTTP status 503"; }, 10s));
  EXPECT_EQ(field(sites_of(s), "alpha", "status"), "active");
  double age = sites_of(s)["alpha"].at("age_s").to_number<double>();
  EXPECT_GT(age, 0.5);

  // gamma is active again: its pilot is submitted (the fake sbatch is run).
  web.set("/status/gamma", 200, nersc_status("gamma", "active", "Back."));
  ASSERT_TRUE(wait_until([&] { return std::filesystem::exists(calls); }, 15s)) << s.daemon->output();
  EXPECT_EQ(field(sites_of(s), "gamma", "status"), "active");
  EXPECT_NE(s.daemon->output().find("site status site=gamma status=active was=down"), std::string::npos);
}

}  // namespace
}  // namespace descprod::test::api
