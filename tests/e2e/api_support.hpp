// What the API tests (api_jobs_test, api_claim_test, api_events_test) share: the service they run
// against and readers of the JSON answers' fields.
#pragma once

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "tests/support/service.hpp"

namespace descprod::test::api {

using namespace std::chrono_literals;

// The service fixture with `workers` workers (more with add_worker), ready before the test starts.
inline service_options api_options(int workers) {
  service_options o;
  o.workers = workers;
  o.wait_ready = true;
  return o;
}

// A string field ("" when absent or not a string) and an integer field (-1 likewise).
inline std::string str(const boost::json::object& o, const char* k) {
  auto it = o.find(k);
  return it == o.end() || !it->value().is_string() ? "" : std::string(it->value().as_string());
}
inline long long num(const boost::json::object& o, const char* k) {
  auto it = o.find(k);
  return it == o.end() || !it->value().is_int64() ? -1 : it->value().as_int64();
}
inline std::string path_of(long long id, const std::string& sub = "") {
  return "/api/jobs/" + std::to_string(id) + sub;
}

// POST /api/jobs/bulk of n jobs of `jobtype` with configs <prefix>0 .. <prefix>(n-1); returns
// their IDs (none, recording a test failure, when it is not 201).
inline std::vector<long long> submit_bulk(service& s, const std::string& jobtype, const std::string& prefix,
                                          int n) {
  std::string body = R"({"jobs":[)";
  for (int i = 0; i < n; ++i)
    body += std::string(i ? "," : "") + R"({"jobtype":")" + jobtype + R"(","config":")" + prefix +
            std::to_string(i) + "\"}";
  body += "]}";
  auto r = s.call("POST", "/api/jobs/bulk", body);
  EXPECT_EQ(r.status, 201) << r.body;
  std::vector<long long> ids;
  if (r.status != 201) return ids;
  auto answer = r.json();  // kept: a range-for over a temporary's member would dangle
  for (const auto& v : answer.as_object().at("ids").as_array()) ids.push_back(v.to_number<long long>());
  return ids;
}

// A browser's side of the web pages: a session cookie and its CSRF token (web_accounts_test,
// api_log_test).
struct web_client {
  explicit web_client(service& svc) : s(svc) {}
  service& s;
  std::string cookie;  // "descprod_session=..."
  std::string csrf;

  http_response call(const std::string& method, const std::string& target, const std::string& body = "",
                     http_headers h = {}) {
    if (!cookie.empty()) h.emplace_back("Cookie", cookie);
    return http_request("127.0.0.1", s.port(), method, target, body, h);
  }
  // POST with the session's CSRF token.
  http_response post(const std::string& target, const std::string& body) {
    http_headers h;
    h.emplace_back("X-CSRF-Token", csrf);
    return call("POST", target, body, h);
  }
  http_response login(const std::string& user, const std::string& password) {
    auto r = call("POST", "/api/login", R"({"username":")" + user + R"(","password":")" + password + R"("})");
    if (r.status == 200) {
      auto set = r.header("set-cookie");
      cookie = set.substr(0, set.find(';'));
      csrf = std::string(r.json().as_object().at("csrf_token").as_string());
    }
    return r;
  }
};

inline http_response register_user(service& s, const std::string& user, const std::string& password) {
  return http_request("127.0.0.1", s.port(), "POST", "/api/register",
                      R"({"username":")" + user + R"(","password":")" + password + R"(","email":")" + user +
                          R"(@example.org"})");
}

inline int admin_cli(service& s, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {s.bin("descprod-admin"), "--config", s.config_file};
  argv.insert(argv.end(), args.begin(), args.end());
  process p(argv, {}, s.dir.file("admin.log"));
  auto rc = p.wait_exit(10s);
  return rc ? *rc : -1000;
}

// A user registered, approved by the admin and logged in on `c`.
inline void approved_login(service& s, web_client& c, const std::string& name, const std::string& password) {
  ASSERT_EQ(register_user(s, name, password).status, 201);
  ASSERT_EQ(admin_cli(s, {"approve", name}), 0);
  ASSERT_EQ(c.login(name, password).status, 200);
}
}  // namespace descprod::test::api
