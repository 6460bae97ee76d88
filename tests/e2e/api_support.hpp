// What the API tests (api_jobs_test, api_claim_test, api_events_test) share: the service they run
// against and readers of the JSON answers' fields.
#pragma once

#include <boost/json.hpp>
#include <string>

#include "tests/support/service.hpp"

namespace descprod::test::api {

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

}  // namespace descprod::test::api
