// The gateway's errors: what went wrong as an enum (errc), a human reason, and the one map from an
// error to its HTTP status and its machine-readable name. The services (jobs_service.hpp,
// accounts_service.hpp, admin_service.hpp) return result<T>, a value or an api_error, and know
// nothing of HTTP; the JSON API answers an error as {"error": name, "detail": detail} with
// status_of(code), the pages as an HTML page or a flash message with the same status.
//
// Thread-safety: values only.
#pragma once

#include <boost/json/object.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace descprod::gateway {

enum class errc : std::uint8_t {
  bad_request,           // 400: a malformed or invalid request
  bad_json,              // 400: the body is not the JSON asked for
  invalid_config,        // 400: a config or howfig the application refuses
  unknown_jobtype,       // 400: no such application
  unauthorized,          // 401: no valid credentials
  forbidden,             // 403: valid credentials, not allowed
  not_found,             // 404: no such thing, or not the caller's to see
  method_not_allowed,    // 405: the path exists, the method does not
  conflict,              // 409: the thing is not in a state that allows this
  payload_too_large,     // 413
  header_too_large,      // 431
  too_many_requests,     // 429: a throttle (retry_after_s says when to come back)
  too_many_connections,  // 429: the connection limit of one client
  internal,              // 500: a defect or a refusal that should not happen
  unavailable,           // 503: Redis or another part is unavailable; try again
};

// The one map from an error to its HTTP status code.
unsigned status_of(errc code);
// The error's name in an API answer ("bad_request", "not_found", ...).
std::string_view name_of(errc code);

// An error: what (code), why (detail), and for some the answer's extra header.
struct api_error {
  errc code = errc::bad_request;
  std::string detail;
  std::string allow;            // method_not_allowed: the value of the Allow header
  long long retry_after_s = 0;  // > 0: the Retry-After header (429, 503: when to try again)

  unsigned status() const { return status_of(code); }
  std::string_view name() const { return name_of(code); }
};

api_error make_error(errc code, std::string detail);
api_error bad_request(std::string detail);
api_error not_found(std::string detail);
api_error unauthorized(std::string detail);
api_error forbidden(std::string detail);
api_error conflict(std::string detail);
api_error unavailable(std::string detail);
api_error internal_error(std::string detail);

// {"error": name, "detail": detail}
boost::json::object error_json(const api_error& e);

// What a service returns: the value, or why there is none.
template <class T>
class result {
 public:
  result(T value) : v_(std::in_place_index<0>, std::move(value)) {}          // NOLINT
  result(api_error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const api_error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, api_error> v_;
};

// A service call that has no value to return: done, or why not.
struct done {};
using status = result<done>;

}  // namespace descprod::gateway
