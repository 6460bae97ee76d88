// End-to-end tests of bad input (docs/security.md: "Bad input gets a clear 4xx and never takes a
// process down") against the real binaries: redis-server, descprod-daemon, descprod-gateway and a
// worker. HTTP: malformed JSON, wrong types, unknown fields, invalid UTF-8, shell metacharacters in
// config strings, a 100 MB body, 10,000 headers and a slow client (the gateway's idle timeout is
// 2 s here so that case takes seconds). ZeroMQ: a rogue DEALER on the daemon's worker and gateway
// sockets sending garbage. After every case the gateway still answers GET /healthz with 200.
//
// The byte-level clients use plain POSIX sockets with poll() deadlines; a slow client's pace of one
// byte a second is the behaviour under test, and it waits for the server's close, not a sleep.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "core/protocol.hpp"
#include "core/redis.hpp"
#include "tests/support/service.hpp"
#include "tests/support/support.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// The gateway's idle (and slow-header) timeout in this test's config.
constexpr auto idle_timeout = 2000ms;
// The most resident memory the gateway may reach while refusing bad input.
constexpr long max_gateway_rss_kb = 200 * 1024;

// The shared e2e service (tests/support/service.hpp) with a 2 s idle timeout and two more apps:
// echoarg (printf "%s" {config}: prints its one argument) and bracketarg (printf "<%s>" {config}:
// one "<...>" per argument it receives). Neither has a pattern: any config check_config passes.
service_options bad_input_options() {
  service_options o;
  o.apps =
      "  - name: echoarg\n"
      "    command: [\"/usr/bin/printf\"]\n"
      "    args: [\"%s\", \"{config}\"]\n"
      "  - name: bracketarg\n"
      "    command: [\"/usr/bin/printf\"]\n"
      "    args: [\"<%s>\", \"{config}\"]\n"
      "  - name: howfigarg\n"
      "    command: [\"/usr/bin/printf\"]\n"
      "    args: [\"<%s>\", \"{howfig}\"]\n";
  o.gateway_extra = "  idle_timeout_ms: " + std::to_string(idle_timeout.count()) + "\n";
  return o;
}

// The gateway is up and serving: GET /healthz answers 200.
void expect_serving(service& s, const std::string& after) {
  EXPECT_TRUE(s.gateway->running()) << "gateway exited after " << after;
  EXPECT_EQ(http_request("127.0.0.1", s.port(), "GET", "/healthz").status, 200) << "after " << after;
}

// A /proc/<gateway>/status field in kB (VmRSS: now; VmHWM: the peak); -1 when absent.
long gateway_kb(service& s, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(s.gateway->pid()) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

std::string daemon_log(service& s) { return read_file(s.dir.file("daemon.log")); }

std::size_t count(const std::string& hay, const std::string& needle) {
  std::size_t n = 0;
  for (auto p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + needle.size())) ++n;
  return n;
}

// ---- a raw TCP client ---------------------------------------------------------------------------

class raw_client {
 public:
  explicit raw_client(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error("socket failed");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      throw std::runtime_error(std::string("connect failed: ") + std::strerror(errno));
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
  }
  ~raw_client() {
    if (fd_ >= 0) ::close(fd_);
  }
  raw_client(const raw_client&) = delete;
  raw_client& operator=(const raw_client&) = delete;

  // Sends `data`, reading whatever the server answers meanwhile. Stops when all is sent, when the
  // server closed or reset the connection, or at the deadline. Returns the bytes sent.
  std::size_t send_all(std::string_view data, clock_type::time_point deadline) {
    std::size_t sent = 0;
    while (sent < data.size() && !closed_ && clock_type::now() < deadline) {
      pollfd p{fd_, POLLIN | POLLOUT, 0};
      ::poll(&p, 1, remaining_ms(deadline));
      if (p.revents & (POLLIN | POLLHUP | POLLERR)) drain();
      if (closed_) break;
      if (p.revents & POLLOUT) {
        auto n = ::send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
        if (n > 0) sent += static_cast<std::size_t>(n);
        else if (errno != EAGAIN && errno != EWOULDBLOCK) closed_ = true;
      }
    }
    return sent;
  }
  // Reads until the server closes the connection or the deadline passes; true when it closed.
  bool read_until_closed(clock_type::time_point deadline) {
    while (!closed_ && clock_type::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, remaining_ms(deadline)) > 0) drain();
    }
    return closed_;
  }
  // Waits up to `timeout` for the server to close; false when it is still open then.
  bool closed_within(std::chrono::milliseconds timeout) {
    return read_until_closed(clock_type::now() + timeout);
  }
  bool closed() const { return closed_; }
  const std::string& received() const { return in_; }
  // The status of the response received so far, 0 when none.
  int status() const {
    if (in_.rfind("HTTP/1.", 0) != 0 || in_.size() < 12) return 0;
    return std::atoi(in_.substr(9, 3).c_str());
  }
  // Sends one byte (a slow client); false when the connection is gone.
  bool send_byte(char c) {
    auto n = ::send(fd_, &c, 1, MSG_NOSIGNAL);
    if (n != 1 && errno != EAGAIN) closed_ = true;
    return !closed_;
  }

 private:
  static int remaining_ms(clock_type::time_point deadline) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock_type::now()).count();
    return static_cast<int>(std::clamp<long long>(ms, 0, 1000));
  }
  void drain() {
    char buf[65536];
    while (true) {
      auto n = ::recv(fd_, buf, sizeof buf, 0);
      if (n > 0) {
        if (in_.size() < (1 << 20)) in_.append(buf, static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) closed_ = true;
      return;
    }
  }
  int fd_ = -1;
  bool closed_ = false;
  std::string in_;
};

// ---- HTTP bodies ------------------------------------------------------------------------------

TEST(BadInput, MalformedJsonWrongTypesAndUnknownFieldsGetClear400s) {
  service s(bad_input_options());
  struct bad {
    std::string target, body, error, detail_has;
  };
  std::vector<bad> cases = {
      {"/api/jobs", "{not json", "bad_json", "malformed JSON"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"1")", "bad_json", "malformed JSON"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"1"} trailing)", "bad_json", ""},
      {"/api/jobs", "", "bad_json", "empty"},
      {"/api/jobs", "[]", "bad_request", "object"},
      {"/api/jobs", "null", "bad_request", "object"},
      {"/api/jobs", "\"mysleep\"", "bad_request", "object"},
      {"/api/jobs", std::string(100, '[') + std::string(100, ']'), "bad_json", ""},
      {"/api/jobs", R"({"jobtype":7,"config":"1"})", "bad_request", "jobtype"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":1})", "bad_request", "config"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":["1"]})", "bad_request", "config"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"1","priority":"high"})", "bad_request", "priority"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"1","priority":1.5})", "bad_request", "priority"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"1","priority":99999999999999999999})", "bad_request",
       "priority"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"1","parent":-4})", "bad_request", "parent"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"1","howfig":null})", "bad_request", "howfig"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"1","colour":"red"})", "bad_request", "colour"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":"1","__proto__":{}})", "bad_request", "__proto__"},
      {"/api/jobs", R"({"jobtype":"nosuchapp","config":"1"})", "unknown_jobtype", "nosuchapp"},
      {"/api/jobs", R"({"jobtype":"mysleep","config":")" + std::string(600, '1') + "\"}", "bad_request",
       "longer"},
      {"/api/jobs/bulk", R"({"jobs":{}})", "bad_request", "array"},
      {"/api/jobs/bulk", R"({"jobs":[]})", "bad_request", "at least one"},
      {"/api/jobs/bulk", R"({"jobs":[{"jobtype":"mysleep","config":"1"},7]})", "bad_request", "jobs[1]"},
      {"/api/jobs/bulk", R"({"jobs":[{"jobtype":"mysleep","config":"1"}],"extra":1})", "bad_request",
       "extra"},
  };
  for (const auto& c : cases) {
    auto r = s.call("POST", c.target, c.body);
    EXPECT_EQ(r.status, 400) << c.body.substr(0, 200) << " -> " << r.body;
    boost::json::value j;
    ASSERT_NO_THROW(j = r.json()) << r.body;
    EXPECT_EQ(j.as_object().at("error").as_string(), c.error) << c.body.substr(0, 200) << " -> " << r.body;
    if (!c.detail_has.empty()) {
      EXPECT_NE(r.body.find(c.detail_has), std::string::npos) << c.body.substr(0, 200) << " -> " << r.body;
    }
    EXPECT_LE(r.body.size(), 2048u) << "an error answer must not grow with the request";
    expect_serving(s, c.body.substr(0, 80));
  }
  // Report bodies with the wrong types, on a job that does not exist (validation or 404 first,
  // never a 5xx).
  for (const char* body : {R"({"attempt":"1"})", R"([1])", R"({"attempt":1,"rc":"x"})"}) {
    auto r = s.call("POST", "/api/jobs/999/finished", body);
    EXPECT_TRUE(r.status == 400 || r.status == 403 || r.status == 404)
        << body << " -> " << r.status << " " << r.body;
  }
  // Malformed queries.
  for (const char* q :
       {"/api/jobs?limit=abc", "/api/jobs?limit=0", "/api/jobs?limit=%zz", "/api/jobs?state=nope",
        "/api/jobs?limit=1&limit=2", "/api/jobs?colour=red", "/api/jobs?%ff%fe=1"}) {
    auto r = s.call("GET", q);
    EXPECT_EQ(r.status, 400) << q << " -> " << r.body;
    EXPECT_NO_THROW(r.json()) << q << " -> " << r.body;  // valid JSON, even for %ff%fe
  }
  redis_sync rs(s.redis.endpoint());
  EXPECT_TRUE(rs.exec({"GET", "descprod:next_job_id"}).is_nil()) << "a refused request created a job";
  expect_serving(s, "malformed bodies");
}

TEST(BadInput, InvalidUtf8InJsonStringIsRefusedWith400) {
  service s(bad_input_options());
  for (std::string bad : {std::string("\xff\xfe"), std::string("\xc0\x80"), std::string("\xed\xa0\x80"),
                          std::string("\xf4\x90\x80\x80"), std::string("ok\xe2\x82")}) {
    auto r = s.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":")" + bad + "\"}");
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_EQ(r.json().as_object().at("error").as_string(), "bad_json") << r.body;
    // As a key too; the answer never echoes the invalid bytes.
    r = s.call("POST", "/api/jobs", "{\"" + bad + R"(":1,"jobtype":"mysleep","config":"1"})");
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_NO_THROW(r.json()) << r.body;
    expect_serving(s, "invalid UTF-8");
  }
  // An escaped lone surrogate is not a character either.
  auto r = s.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":"\ud800"})");
  EXPECT_EQ(r.status, 400) << r.body;
  expect_serving(s, "invalid UTF-8");
}

// ---- config strings ---------------------------------------------------------------------------

TEST(BadInput, ShellMetacharactersInConfigAreRefusedByCheckConfig) {
  // check_config's rules with '_' and '.' also allowed (check_service_config): every character a
  // shell or a path would give meaning to is refused.
  service s(bad_input_options());
  struct bad {
    std::string config;
    int code;
  };
  std::vector<bad> cases = {
      {"; rm -rf ~", 1},
      {"$(id)", 1},
      {"`id`", 1},
      {"\"quoted\"", 1},
      {"'single'", 1},
      {"<script>alert(1)</script>", 1},
      {"a b", 1},
      {"a\nb", 1},
      {"a|b", 1},
      {"a&&b", 1},
      {"../../etc/passwd", 1},
      {"a,b", 1},
      {"x----y", 2},
      {"x--y", 3},
      {"-x", 4},
      {"x-", 4},
      {":x", 5},
      {"x:", 5},
      {"", 9},
  };
  for (const std::string app : {"echoarg", "mysleep"}) {
    for (const auto& c : cases) {
      boost::json::object job;
      job["jobtype"] = app;
      job["config"] = c.config;
      auto r = s.call("POST", "/api/jobs", boost::json::serialize(job));
      EXPECT_EQ(r.status, 400) << app << " " << c.config << " -> " << r.body;
      auto j = r.json();
      EXPECT_EQ(j.as_object().at("error").as_string(), "invalid_config") << c.config << " -> " << r.body;
      EXPECT_NE(r.body.find("check_config code " + std::to_string(c.code)), std::string::npos)
          << c.config << " -> " << r.body;
      expect_serving(s, app + " config " + c.config);
    }
    // A howfig is free text (DESC's compound howfigs), but never holds a control character.
    for (const std::string howfig : {"a\nb", "a\rb", "a\tb", "a\x1b[31mb", "x\x7f"}) {
      boost::json::object job;
      job["jobtype"] = app;
      job["config"] = app == "mysleep" ? "1" : "ok";
      job["howfig"] = howfig;
      auto r = s.call("POST", "/api/jobs", boost::json::serialize(job));
      EXPECT_EQ(r.status, 400) << "howfig " << howfig << " -> " << r.body;
      EXPECT_NE(r.body.find("without control characters"), std::string::npos) << r.body;
    }
  }
  redis_sync rs(s.redis.endpoint());
  EXPECT_TRUE(rs.exec({"GET", "descprod:next_job_id"}).is_nil()) << "a refused config created a job";
  expect_serving(s, "shell metacharacters");
}

TEST(BadInput, ConfigThatPassesReachesTheAppAsExactlyOneArgument) {
  service s(bad_input_options());
  // The characters check_config lets through, in every position it allows.
  const std::vector<std::string> configs = {"a",
                                            "sleep-ttsk2-ntsk20-nwrk4",
                                            "nam1:v11-nam2-nam3:v31:v32",
                                            "a-b:c---d:e-f",
                                            "X9:0-Zz",
                                            "w2316-visit:1234_5",
                                            "v1.2-x_y:3.5"};
  for (const auto& c : configs) {
    for (const std::string app : {"echoarg", "bracketarg"}) {
      long long id = s.submit(R"({"jobtype":")" + app + R"(","config":")" + c + "\"}");
      ASSERT_GT(id, 0);
      ASSERT_TRUE(wait_until([&] { return s.terminal(s.state(id)); }, 30s)) << "state " << s.state(id);
      ASSERT_EQ(s.state(id), "done");
      char name[32];
      std::snprintf(name, sizeof name, "job%06lld", id);
      auto rec = s.call("GET", "/api/jobs/" + std::to_string(id)).json();
      std::string rundir(rec.as_object().at("rundir").as_string());
      std::string log = read_file(rundir + "/" + name + ".log");
      // printf "%s" prints its one argument verbatim; "<%s>" repeats once per argument.
      EXPECT_EQ(log, app == "echoarg" ? c : "<" + c + ">") << app << " config " << c;
    }
  }
  expect_serving(s, "echoarg jobs");
}

TEST(BadInput, FreeTextHowfigReachesTheAppAsExactlyOneArgument) {
  // DESC's compound howfigs, and text a shell would act on: accepted (the app declares no
  // howfig_pattern) and given to the app as one argument, never through a shell.
  service s(bad_input_options());
  const std::vector<std::string> howfigs = {"pmbs-30-auto-cpu,ptenv:00:hom", "pmbs-600,tmax:12.5",
                                            "a; rm -rf ~ $(id) `id` | x && y > /tmp/z",
                                            "'quoted' \"double\" \\", "caf\xc3\xa9 \xe2\x82\xac"};
  for (const auto& h : howfigs) {
    boost::json::object job;
    job["jobtype"] = "howfigarg";
    job["config"] = "ok";
    job["howfig"] = h;
    long long id = s.submit(boost::json::serialize(job));
    ASSERT_GT(id, 0) << h;
    ASSERT_TRUE(wait_until([&] { return s.terminal(s.state(id)); }, 30s)) << "state " << s.state(id);
    ASSERT_EQ(s.state(id), "done") << h;
    auto rec = s.job(id);
    EXPECT_EQ(std::string(rec.at("howfig").as_string()), h);
    char name[32];
    std::snprintf(name, sizeof name, "job%06lld", id);
    std::string rundir(rec.at("rundir").as_string());
    EXPECT_EQ(read_file(rundir + "/" + name + ".log"), "<" + h + ">") << h;
  }
  expect_serving(s, "howfig jobs");
}

// ---- limits -----------------------------------------------------------------------------------

TEST(BadInput, HundredMegabyteBodyIsRefusedEarlyAndTheGatewayDoesNotGrow) {
  service s(bad_input_options());
  const std::size_t total = 100u << 20;
  const std::string chunk(1 << 16, 'x');
  long rss_before = gateway_kb(s, "VmRSS");
  ASSERT_GT(rss_before, 0);

  // With Content-Length: refused from the header, before any of the body is read.
  {
    raw_client c(s.port());
    std::string head = "POST /api/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + s.alice_token +
                       "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(total) +
                       "\r\n\r\n";
    auto deadline = clock_type::now() + 60s;
    c.send_all(head, deadline);
    std::size_t sent = 0;
    while (sent < total && !c.closed() && clock_type::now() < deadline && c.status() == 0)
      sent += c.send_all(std::string_view(chunk).substr(0, std::min(chunk.size(), total - sent)), deadline);
    c.read_until_closed(clock_type::now() + 10s);
    std::cout << "[ figures  ] Content-Length 100 MB: status " << c.status() << " after " << (sent >> 10)
              << " KiB sent; connection closed: " << c.closed() << "\n";
    EXPECT_TRUE(c.status() == 413 || (c.status() == 0 && c.closed())) << c.received().substr(0, 300);
    EXPECT_LT(sent, total / 4) << "the gateway read far into a body it had refused";
  }
  // Chunked, so no length up front: refused once the body passes max_body_bytes.
  {
    raw_client c(s.port());
    std::string head = "POST /api/jobs/bulk HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + s.alice_token +
                       "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    auto deadline = clock_type::now() + 60s;
    c.send_all(head, deadline);
    char size_line[32];
    std::snprintf(size_line, sizeof size_line, "%zx\r\n", chunk.size());
    std::string framed = size_line + chunk + "\r\n";
    std::size_t sent = 0;
    while (sent < total && !c.closed() && clock_type::now() < deadline && c.status() == 0)
      sent += c.send_all(framed, deadline);
    c.read_until_closed(clock_type::now() + 10s);
    std::cout << "[ figures  ] chunked 100 MB: status " << c.status() << " after " << (sent >> 10)
              << " KiB sent; connection closed: " << c.closed() << "\n";
    EXPECT_TRUE(c.status() == 413 || (c.status() == 0 && c.closed())) << c.received().substr(0, 300);
    EXPECT_LT(sent, total / 4) << "the gateway read far into a body it had refused";
  }
  long rss_after = gateway_kb(s, "VmRSS"), peak = gateway_kb(s, "VmHWM");
  std::cout << "[ figures  ] gateway RSS " << rss_before / 1024 << " MB before, " << rss_after / 1024
            << " MB after, peak " << peak / 1024 << " MB\n";
  EXPECT_LT(rss_after, max_gateway_rss_kb);
  EXPECT_LT(peak, max_gateway_rss_kb);
  expect_serving(s, "100 MB bodies");
}

TEST(BadInput, TenThousandHeadersAreRefusedWith431) {
  service s(bad_input_options());
  std::string req = "GET /api/jobs HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 10000; ++i) req += "X-Header-" + std::to_string(i) + ": v\r\n";
  req += "\r\n";
  raw_client c(s.port());
  auto deadline = clock_type::now() + 30s;
  c.send_all(req, deadline);
  c.read_until_closed(deadline);
  EXPECT_TRUE(c.status() == 431 || c.status() == 400) << c.received().substr(0, 300);
  EXPECT_TRUE(c.closed());
  // One huge header line as well.
  raw_client c2(s.port());
  c2.send_all("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(1 << 20, 'a') + "\r\n\r\n",
              deadline);
  c2.read_until_closed(deadline);
  EXPECT_TRUE(c2.status() == 431 || c2.status() == 400) << c2.received().substr(0, 300);
  EXPECT_LT(gateway_kb(s, "VmHWM"), max_gateway_rss_kb);
  expect_serving(s, "10,000 headers");
}

TEST(BadInput, SlowClientIsClosedAfterTheIdleTimeoutWhileOthersAreServed) {
  service s(bad_input_options());
  // Slow clients send one byte a second of a request header that never ends.
  const std::string request = "GET /api/jobs HTTP/1.1\r\nHost: x\r\nX-Slow: " + std::string(64, 'z');
  constexpr int slow_clients = 20;
  std::vector<std::future<double>> slow;
  std::atomic<bool> give_up{false};
  for (int i = 0; i < slow_clients; ++i) {
    slow.push_back(std::async(std::launch::async, [&] {
      raw_client c(s.port());
      auto start = clock_type::now();
      for (std::size_t k = 0; k < request.size() && !give_up; ++k) {
        if (!c.send_byte(request[k])) break;
        // Waits for the server's close; one second without it paces the next byte.
        if (c.closed_within(1000ms)) break;
      }
      return c.closed() ? std::chrono::duration<double>(clock_type::now() - start).count() : -1.0;
    }));
  }
  // Meanwhile normal requests are answered at once.
  double worst_ms = 0;
  auto until = clock_type::now() + idle_timeout;
  int served = 0;
  while (clock_type::now() < until || served < 5) {
    auto t0 = clock_type::now();
    auto r = s.call("GET", "/api/version");
    double ms = std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
    worst_ms = std::max(worst_ms, ms);
    EXPECT_EQ(r.status, 200) << r.body;
    ++served;
  }
  std::cout << "[ figures  ] " << served << " normal requests during " << slow_clients
            << " slow clients, slowest " << worst_ms << " ms\n";
  EXPECT_LT(worst_ms, 1000.0) << "a normal request waited behind the slow clients";
  double timeout_s = std::chrono::duration<double>(idle_timeout).count();
  double first = 1e9, last = 0;
  for (auto& f : slow) {
    if (f.wait_for(timeout_s * 1s + 20s) != std::future_status::ready) {
      give_up = true;  // the client stops within a second; its future's destructor waits for it
      ADD_FAILURE() << "a slow client is still connected long after the idle timeout";
      continue;
    }
    double closed_after = f.get();
    EXPECT_GT(closed_after, 0) << "a slow client was never closed";
    EXPECT_GE(closed_after, timeout_s * 0.8);
    EXPECT_LT(closed_after, timeout_s + 3.0) << "the gateway kept a slow client past its idle timeout";
    first = std::min(first, closed_after);
    last = std::max(last, closed_after);
  }
  std::cout << "[ figures  ] slow clients closed after " << first << " to " << last << " s (idle timeout "
            << timeout_s << " s)\n";
  expect_serving(s, "slow clients");
}

// ---- a rogue ZeroMQ peer --------------------------------------------------------------------

// Sends frames (a DEALER's view: no routing frame) and gives the daemon a moment to answer.
void send_frames(zmq::socket_t& sock, const std::vector<std::string>& frames) {
  for (std::size_t i = 0; i < frames.size(); ++i) {
    auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
    sock.send(zmq::buffer(frames[i]), flags);
  }
}

// The next message on `sock` within `timeout`, empty when none came.
std::vector<std::string> recv_frames(zmq::socket_t& sock, std::chrono::milliseconds timeout) {
  std::vector<std::string> out;
  zmq::pollitem_t item{sock.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, timeout) <= 0) return out;
  zmq::message_t m;
  do {
    if (!sock.recv(m, zmq::recv_flags::dontwait)) break;
    out.push_back(m.to_string());
  } while (m.more());
  return out;
}

TEST(BadInput, RogueZeroMqPeerIsLoggedAndIgnoredWhileJobsStillRun) {
  service s(bad_input_options());
  // A job that runs while the rogue is at work: it must end `done` whatever the rogue says.
  long long id = s.submit(R"({"jobtype":"mysleep","config":"3"})");
  ASSERT_GT(id, 0);
  ASSERT_TRUE(wait_until([&] { return s.state(id) == "running"; }, 30s)) << s.state(id);

  zmq::context_t ctx;
  const std::string huge(32 << 20, 'g');
  std::string array_of_zeros = "[0";
  for (int i = 0; i < (1 << 20); ++i) array_of_zeros += ",0";
  array_of_zeros += "]";
  const std::vector<std::vector<std::string>> garbage = {
      {},                                                          // nothing but the routing frame
      {"hello"},                                                   // one frame
      {"ready", "{}", "extra"},                                    // three frames
      {"launch-missiles", "{}"},                                   // unknown command
      {std::string(1000, 'c'), "{}"},                              // long command
      {"ready", "not json"},                                       // non-JSON body
      {"ready", "[1,2,3]"},                                        // JSON array body
      {"ready", "\"text\""},                                       // JSON string body
      {"ready", std::string("{\"credits\":\"\xff\"}")},            // invalid UTF-8
      {"heartbeat", huge},                                         // huge non-JSON frame
      {"heartbeat", array_of_zeros},                               // big JSON array
      {huge, "{}"},                                                // huge command frame
      {"hello", R"({"protocol":99,"worker":"rogue","slots":1})"},  // wrong protocol version
      {"finished", "{\"job\":" + std::to_string(id) + ",\"attempt\":1,\"rc\":3}"},  // before hello
  };

  // The worker socket.
  zmq::socket_t w(ctx, zmq::socket_type::dealer);
  w.set(zmq::sockopt::linger, 0);
  w.set(zmq::sockopt::routing_id, std::string("rogue-worker"));
  w.connect("ipc://" + s.dir.file("w.ipc"));
  for (const auto& g : garbage) {
    if (g.empty()) {
      w.send(zmq::buffer(std::string()), zmq::send_flags::none);  // one empty frame
      continue;
    }
    send_frames(w, g);
  }
  // The wrong protocol version is refused with a clear reason; the finished-before-hello with
  // "send hello". Read replies until both came (the daemon answers in order).
  bool version_refused = false, hello_asked = false;
  auto deadline = clock_type::now() + 20s;
  while (!(version_refused && hello_asked) && clock_type::now() < deadline) {
    auto reply = recv_frames(w, 1000ms);
    if (reply.size() == 2 && reply[0] == "reject") {
      if (reply[1].find("protocol version mismatch") != std::string::npos) version_refused = true;
      if (reply[1].find("send hello") != std::string::npos) hello_asked = true;
    }
  }
  EXPECT_TRUE(version_refused) << "no reject for protocol 99";
  EXPECT_TRUE(hello_asked) << "no reject for a finished before hello";

  // A proper hello with a valid worker token (no slots, so it is never given work), then reports
  // for a job it does not hold: they must be ignored, not applied.
  auto token = read_file(s.worker_token_file);
  token.erase(token.find_last_not_of("\n") + 1);
  send_frames(
      w,
      {"hello",
       R"({"protocol":1,"role":"worker","worker":"rogue","token":")" + token +
           R"(","owner":"alice","host":"evil","slots":0,"pool":"default","version":"x","running":[{"job":)" +
           std::to_string(id) + R"(,"attempt":1},{"job":"x"},7]})"});
  deadline = clock_type::now() + 20s;
  bool welcomed = false;
  while (!welcomed && clock_type::now() < deadline) {
    auto reply = recv_frames(w, 1000ms);
    welcomed = !reply.empty() && reply[0] == "welcome";
  }
  EXPECT_TRUE(welcomed);
  // A worker of a later minor, with a field this daemon does not know, is welcomed too: within a
  // major every change is additive (docs/protocol.md, Versions). The hello above had no minor, as
  // from a worker of before minors were sent.
  {
    zmq::socket_t newer(ctx, zmq::socket_type::dealer);
    newer.set(zmq::sockopt::linger, 0);
    newer.connect("ipc://" + s.dir.file("w.ipc"));
    send_frames(
        newer,
        {"hello",
         R"({"protocol":1,"minor":99,"compression":"zstd","role":"worker","worker":"newer","token":")" +
             token +
             R"(","owner":"alice","host":"h","slots":0,"pool":"default","version":"9.9","running":[]})"});
    std::vector<std::string> answer;
    deadline = clock_type::now() + 20s;
    while (answer.empty() && clock_type::now() < deadline) answer = recv_frames(newer, 1000ms);
    ASSERT_EQ(answer.size(), 2u);
    EXPECT_EQ(answer[0], "welcome") << answer[1];
    EXPECT_NE(answer[1].find("\"minor\":" + std::to_string(protocol::minor)), std::string::npos) << answer[1];
  }
  send_frames(w, {"started", "{\"job\":" + std::to_string(id) + ",\"attempt\":1,\"pid\":1}"});
  send_frames(w, {"progress", "{\"job\":" + std::to_string(id) + ",\"attempt\":1,\"message\":\"pwned\"}"});
  send_frames(w, {"finished", "{\"job\":" + std::to_string(id) +
                                  ",\"attempt\":1,\"rc\":3,\"signal\":0,\"timed_out\":false}"});
  send_frames(w, {"finished", R"({"job":"seven","attempt":[]})"});
  send_frames(w, {"ready", R"({"credits":-5})"});
  send_frames(w, {"ready", R"({"credits":9223372036854775807})"});
  send_frames(w, {"log", "{\"job\":" + std::to_string(id) + ",\"attempt\":1,\"lines\":\"notalist\"}"});

  // The gateway socket: garbage, a wrong version, and submitted notices for jobs that do not
  // exist or have the wrong shape.
  zmq::socket_t g(ctx, zmq::socket_type::dealer);
  g.set(zmq::sockopt::linger, 0);
  g.connect("ipc://" + s.dir.file("gw.ipc"));
  send_frames(g, {"submitted"});
  send_frames(g, {"submitted", "[]"});
  send_frames(g, {"submitted", R"({"jobs":"all"})"});
  send_frames(g, {"submitted", R"({"jobs":[[1],[1,2,3],["a","b"],{}]})"});
  send_frames(g, {"submitted", R"({"jobs":[[999999,0],[-1,5],[0,-9223372036854775808]]})"});
  send_frames(g, {"cancel", R"({"job":"x"})"});
  send_frames(g, {"cancel", R"({"job":999999})"});
  send_frames(g, {"launch-missiles", "{}"});
  send_frames(g, {"heartbeat", huge});
  send_frames(g, {"hello", R"({"protocol":0})"});
  deadline = clock_type::now() + 20s;
  bool gateway_refused = false;
  while (!gateway_refused && clock_type::now() < deadline) {
    auto reply = recv_frames(g, 1000ms);
    gateway_refused = reply.size() == 2 && reply[0] == "reject" &&
                      reply[1].find("protocol version mismatch") != std::string::npos;
  }
  EXPECT_TRUE(gateway_refused) << "no reject for a gateway hello with protocol 0";

  // The daemon logged the garbage and is still up; the real job still ends done, untouched by
  // the rogue's reports.
  EXPECT_TRUE(wait_until([&] { return count(daemon_log(s), "malformed worker message dropped") >= 8; }, 20s))
      << count(daemon_log(s), "malformed worker message dropped");
  EXPECT_TRUE(
      wait_until([&] { return count(daemon_log(s), "malformed gateway message dropped") >= 2; }, 20s));
  // Refused by the daemon before it reaches Redis: the rogue connection does not hold the job
  // (issue 13; before, the Lua script refused it as stale: "event ignored").
  const std::string ignored = "report refused command=finished job_id=" + std::to_string(id);
  EXPECT_TRUE(wait_until([&] { return daemon_log(s).find(ignored) != std::string::npos; }, 20s))
      << "the rogue's finished report was not logged as ignored";
  auto log = daemon_log(s);
  EXPECT_NE(log.find("worker refused"), std::string::npos);
  std::cout << "[ figures  ] daemon log: " << count(log, "malformed worker message dropped")
            << " malformed worker messages, " << count(log, "malformed gateway message dropped")
            << " malformed gateway messages, " << count(log, "message failed") << " refused bodies, "
            << count(log, "event ignored") + count(log, "report refused") << " ignored events\n";
  ASSERT_TRUE(wait_until([&] { return s.terminal(s.state(id)); }, 30s)) << s.state(id);
  EXPECT_EQ(s.state(id), "done");
  auto rec = s.call("GET", "/api/jobs/" + std::to_string(id)).json();
  EXPECT_EQ(rec.as_object().at("worker").as_string(), "w0");
  EXPECT_EQ(rec.as_object().at("return_status").as_int64(), 0);
  EXPECT_EQ(rec.as_object().at("progress").as_string(), "Done. I'm awake now.");
  EXPECT_TRUE(s.daemon->running()) << "the daemon exited";

  // A job submitted after all this still runs to done.
  long long after = s.submit(R"({"jobtype":"mysleep","config":"0"})");
  ASSERT_GT(after, 0);
  ASSERT_TRUE(wait_until([&] { return s.terminal(s.state(after)); }, 30s)) << s.state(after);
  EXPECT_EQ(s.state(after), "done");
  EXPECT_TRUE(s.daemon->running());
  expect_serving(s, "a rogue ZeroMQ peer");
}

}  // namespace
}  // namespace descprod::test
