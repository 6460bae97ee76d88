// The gateway's errors (errors.hpp).
#include "gateway/errors.hpp"

namespace descprod::gateway {

unsigned status_of(errc code) {
  switch (code) {
    case errc::bad_request:
    case errc::bad_json:
    case errc::invalid_config:
    case errc::unknown_jobtype: return 400;
    case errc::unauthorized: return 401;
    case errc::forbidden: return 403;
    case errc::not_found: return 404;
    case errc::method_not_allowed: return 405;
    case errc::conflict: return 409;
    case errc::payload_too_large: return 413;
    case errc::too_many_requests:
    case errc::too_many_connections: return 429;
    case errc::header_too_large: return 431;
    case errc::internal: return 500;
    case errc::unavailable: return 503;
  }
  return 500;
}

std::string_view name_of(errc code) {
  switch (code) {
    case errc::bad_request: return "bad_request";
    case errc::bad_json: return "bad_json";
    case errc::invalid_config: return "invalid_config";
    case errc::unknown_jobtype: return "unknown_jobtype";
    case errc::unauthorized: return "unauthorized";
    case errc::forbidden: return "forbidden";
    case errc::not_found: return "not_found";
    case errc::method_not_allowed: return "method_not_allowed";
    case errc::conflict: return "conflict";
    case errc::payload_too_large: return "payload_too_large";
    case errc::header_too_large: return "header_too_large";
    case errc::too_many_requests: return "too_many_requests";
    case errc::too_many_connections: return "too_many_connections";
    case errc::internal: return "internal";
    case errc::unavailable: return "unavailable";
  }
  return "internal";
}

api_error make_error(errc code, std::string detail) {
  api_error e;
  e.code = code;
  e.detail = std::move(detail);
  return e;
}

api_error bad_request(std::string detail) { return make_error(errc::bad_request, std::move(detail)); }
api_error not_found(std::string detail) { return make_error(errc::not_found, std::move(detail)); }
api_error unauthorized(std::string detail) { return make_error(errc::unauthorized, std::move(detail)); }
api_error forbidden(std::string detail) { return make_error(errc::forbidden, std::move(detail)); }
api_error conflict(std::string detail) { return make_error(errc::conflict, std::move(detail)); }
api_error unavailable(std::string detail) { return make_error(errc::unavailable, std::move(detail)); }
api_error internal_error(std::string detail) { return make_error(errc::internal, std::move(detail)); }

boost::json::object error_json(const api_error& e) {
  boost::json::object o;
  o["error"] = name_of(e.code);
  o["detail"] = e.detail;
  return o;
}

}  // namespace descprod::gateway
