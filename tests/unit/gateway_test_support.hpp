// Shared by the gateway's unit tests (gateway_*_test.cpp): the application registry they
// validate against and small helpers. Header-only; each test file is its own executable.
#pragma once

#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <optional>
#include <string>

#include "gateway/api.hpp"

namespace dg = descprod::gateway;
namespace json = boost::json;
namespace net = boost::asio;
namespace http = boost::beast::http;
using descprod::job_state;

namespace {

constexpr const char* apps_yaml = R"(
apps:
  - name: mysleep
    help: "sleeps N seconds"
    pattern: "^[0-9]+$"
    max_attempts: 2
  - name: anything
    help: "no pattern"
  - name: howapp
    help: "howfig restricted"
    howfig_pattern: "^(fast|slow)$"
)";

inline descprod::app_registry test_apps() { return descprod::parse_apps(apps_yaml, "apps.yaml"); }

inline json::value parse(const std::string& s) { return json::parse(s); }

// Validates one job body text end to end (JSON parse, then field checks).
inline std::optional<dg::api_error> check_body(const std::string& body, dg::job_request* out = nullptr) {
  json::value v;
  if (auto e = dg::parse_json_body(body, v)) return e;
  dg::job_request r;
  auto e = dg::validate_job(v, test_apps(), r);
  if (out) *out = r;
  return e;
}

inline bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

}  // namespace
