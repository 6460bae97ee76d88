// Pure request logic of the gateway (see api.hpp). Every user-supplied string quoted in an error
// detail is cut to a bounded length, so an error answer never grows with the request.
#include "gateway/api.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <limits>
#include <set>

namespace descprod::gateway {

namespace {

// Bytes of user input quoted back in an error detail.
constexpr std::size_t max_quoted = 80;

std::string quoted(std::string_view s) {
  std::string out = "'";
  if (s.size() > max_quoted) {
    out.append(s.substr(0, max_quoted));
    out += "...";
  } else {
    out.append(s);
  }
  out += "'";
  return out;
}

api_error make_error(unsigned status, std::string error, std::string detail) {
  api_error e;
  e.status = status;
  e.error = std::move(error);
  e.detail = std::move(detail);
  return e;
}

template <class T>
std::optional<T> parse_integer(std::string_view s) {
  T v{};
  if (s.empty()) return std::nullopt;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<double> parse_double(std::string_view s) {
  if (s.empty()) return std::nullopt;
  try {
    std::size_t used = 0;
    std::string copy(s);
    double d = std::stod(copy, &used);
    if (used != copy.size()) return std::nullopt;
    return d;
  } catch (...) {
    return std::nullopt;
  }
}

std::string_view kind_name(const boost::json::value& v) {
  switch (v.kind()) {
    case boost::json::kind::null: return "null";
    case boost::json::kind::bool_: return "a boolean";
    case boost::json::kind::int64:
    case boost::json::kind::uint64: return "an integer";
    case boost::json::kind::double_: return "a number";
    case boost::json::kind::string: return "a string";
    case boost::json::kind::array: return "an array";
    case boost::json::kind::object: return "an object";
  }
  return "a value";
}

std::optional<api_error> read_string(const boost::json::object& o, std::string_view field,
                                     bool required, std::size_t max_bytes, std::string& out) {
  auto it = o.find(field);
  if (it == o.end()) {
    if (required) return bad_request("missing field '" + std::string(field) + "'");
    return std::nullopt;
  }
  if (!it->value().is_string())
    return bad_request("field '" + std::string(field) + "' must be a string, not " +
                       std::string(kind_name(it->value())));
  const auto& s = it->value().as_string();
  if (s.size() > max_bytes)
    return bad_request("field '" + std::string(field) + "' is longer than " +
                       std::to_string(max_bytes) + " bytes");
  out.assign(s.data(), s.size());
  return std::nullopt;
}

// An integer JSON value in [lo, hi]; doubles are refused even when whole (5.0), so that a
// client bug sending floats is visible.
std::optional<api_error> read_integer(const boost::json::object& o, std::string_view field,
                                      long long lo, long long hi, std::optional<long long>& out) {
  auto it = o.find(field);
  if (it == o.end()) return std::nullopt;
  const auto& v = it->value();
  std::string range = " between " + std::to_string(lo) + " and " + std::to_string(hi);
  if (v.is_int64()) {
    auto n = v.as_int64();
    if (n < lo || n > hi) return bad_request("field '" + std::string(field) + "' must be" + range);
    out = n;
    return std::nullopt;
  }
  if (v.is_uint64()) return bad_request("field '" + std::string(field) + "' must be" + range);
  return bad_request("field '" + std::string(field) + "' must be an integer" + range + ", not " +
                     std::string(kind_name(v)));
}

std::string known_types(const app_registry& apps) {
  if (apps.apps.empty()) return "(none)";
  std::string out;
  for (const auto& [name, app] : apps.apps) {
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

std::optional<api_error> check_config_string(std::string_view field, const std::string& value,
                                             const std::optional<std::regex>& pattern,
                                             const std::string& pattern_text,
                                             const std::string& app_name) {
  int code = check_config(value);
  if (code != 0) {
    auto e = bad_request(std::string(field) + " " + quoted(value) + " " +
                         std::string(check_config_reason(code)) + " (check_config code " +
                         std::to_string(code) + ")");
    e.error = "invalid_config";
    return e;
  }
  if (pattern && !std::regex_match(value, *pattern)) {
    auto e =
        bad_request(std::string(field) + " " + quoted(value) +
                    " does not match the pattern of application " + app_name + ": " + pattern_text);
    e.error = "invalid_config";
    return e;
  }
  return std::nullopt;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

api_error bad_request(std::string detail) {
  return make_error(400, "bad_request", std::move(detail));
}
api_error not_found(std::string detail) { return make_error(404, "not_found", std::move(detail)); }
api_error unauthorized(std::string detail) {
  return make_error(401, "unauthorized", std::move(detail));
}
api_error forbidden(std::string detail) { return make_error(403, "forbidden", std::move(detail)); }
api_error unavailable(std::string detail) {
  return make_error(503, "unavailable", std::move(detail));
}
api_error internal_error(std::string detail) {
  return make_error(500, "internal", std::move(detail));
}

boost::json::object error_json(const api_error& e) {
  boost::json::object o;
  o["error"] = e.error;
  o["detail"] = e.detail;
  return o;
}

// ---- routing --------------------------------------------------------------------------------

route match_route(std::string_view path) {
  route r;
  if (path == "/healthz") {
    r.kind = route_kind::healthz;
    return r;
  }
  if (path == "/api/version") {
    r.kind = route_kind::version;
    return r;
  }
  if (path == "/api/jobs") {
    r.kind = route_kind::jobs;
    return r;
  }
  if (path == "/api/jobs/bulk") {
    r.kind = route_kind::jobs_bulk;
    return r;
  }
  constexpr std::string_view jobs_prefix = "/api/jobs/";
  if (path.substr(0, jobs_prefix.size()) != jobs_prefix) return r;
  auto rest = path.substr(jobs_prefix.size());
  auto slash = rest.find('/');
  auto id_text = rest.substr(0, slash);
  if (id_text.empty() || id_text.size() > 18 ||
      id_text.find_first_not_of("0123456789") != std::string_view::npos)
    return r;
  auto id = parse_integer<job_id>(id_text);
  if (!id || *id <= 0) return r;
  if (slash == std::string_view::npos) {
    r.kind = route_kind::job;
  } else if (rest.substr(slash) == "/events") {
    r.kind = route_kind::job_events;
  } else {
    return r;
  }
  r.id = *id;
  return r;
}

std::string_view allowed_methods(route_kind k) {
  switch (k) {
    case route_kind::jobs: return "GET, POST";
    case route_kind::jobs_bulk: return "POST";
    case route_kind::not_found: return "";
    default: return "GET";
  }
}

bool method_allowed(route_kind k, std::string_view method) {
  switch (k) {
    case route_kind::jobs: return method == "GET" || method == "POST";
    case route_kind::jobs_bulk: return method == "POST";
    case route_kind::not_found: return false;
    default: return method == "GET";
  }
}

target_parts split_target(std::string_view target) {
  target_parts t;
  auto q = target.find('?');
  t.path = std::string(target.substr(0, q));
  if (q != std::string_view::npos) t.query = std::string(target.substr(q + 1));
  return t;
}

std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '+') {
      out += ' ';
    } else if (c == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      auto hex = [](char h) -> int {
        if (h >= '0' && h <= '9') return h - '0';
        if (h >= 'a' && h <= 'f') return h - 'a' + 10;
        if (h >= 'A' && h <= 'F') return h - 'A' + 10;
        return -1;
      };
      int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

std::optional<api_error> parse_list_query(std::string_view query, list_query& out) {
  std::set<std::string> seen;
  while (!query.empty()) {
    auto amp = query.find('&');
    auto part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (part.empty()) continue;
    auto eq = part.find('=');
    auto key = percent_decode(part.substr(0, eq));
    auto value =
        percent_decode(eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1));
    if (!key || !value) return bad_request("malformed %-escape in query " + quoted(part));
    if (!seen.insert(*key).second) return bad_request("query parameter '" + *key + "' given twice");
    if (*key == "limit") {
      auto n = parse_integer<int>(*value);
      if (!n || *n < 1 || *n > max_list_limit)
        return bad_request("limit must be an integer between 1 and " +
                           std::to_string(max_list_limit));
      out.limit = *n;
    } else if (*key == "offset") {
      auto n = parse_integer<long long>(*value);
      if (!n || *n < 0 || *n > max_list_offset)
        return bad_request("offset must be an integer between 0 and " +
                           std::to_string(max_list_offset));
      out.offset = *n;
    } else if (*key == "state") {
      auto s = parse_job_state(*value);
      if (!s) {
        std::string known;
        for (auto st : all_job_states()) {
          if (!known.empty()) known += ", ";
          known += std::string(to_string(st));
        }
        return bad_request("unknown state " + quoted(*value) + "; known: " + known);
      }
      out.state = s;
    } else if (*key == "jobtype") {
      if (value->empty() || value->size() > max_jobtype_bytes)
        return bad_request("jobtype must be 1 to " + std::to_string(max_jobtype_bytes) + " bytes");
      out.jobtype = *value;
    } else {
      return bad_request("unknown query parameter " + quoted(*key) +
                         "; known: limit, offset, state, jobtype");
    }
  }
  return std::nullopt;
}

// ---- request bodies -------------------------------------------------------------------------

std::optional<api_error> parse_json_body(std::string_view body, boost::json::value& out) {
  if (body.empty()) {
    auto e = bad_request("request body is empty; expected a JSON object");
    e.error = "bad_json";
    return e;
  }
  boost::json::stream_parser p;
  boost::system::error_code ec;
  std::size_t used = p.write(body.data(), body.size(), ec);
  if (!ec) p.finish(ec);
  if (ec) {
    auto e = bad_request("malformed JSON near byte " + std::to_string(used) + ": " + ec.message());
    e.error = "bad_json";
    return e;
  }
  out = p.release();
  return std::nullopt;
}

std::optional<api_error> validate_job(const boost::json::value& v, const app_registry& apps,
                                      job_request& out) {
  if (!v.is_object())
    return bad_request("a job must be a JSON object, not " + std::string(kind_name(v)));
  const auto& o = v.as_object();
  static const std::set<std::string_view> allowed = {"jobtype", "config", "howfig", "priority",
                                                     "parent"};
  for (const auto& kv : o) {
    if (!allowed.count(kv.key()))
      return bad_request("unknown field " + quoted(kv.key()) +
                         "; allowed: jobtype, config, howfig, priority, parent");
  }
  job_request r;
  if (auto e = read_string(o, "jobtype", true, max_jobtype_bytes, r.jobtype)) return e;
  if (auto e = read_string(o, "config", true, max_config_bytes, r.config)) return e;
  if (auto e = read_string(o, "howfig", false, max_config_bytes, r.howfig)) return e;
  std::optional<long long> priority, parent;
  if (auto e = read_integer(o, "priority", -1000, 1000, priority)) return e;
  if (auto e = read_integer(o, "parent", 1, std::numeric_limits<job_id>::max(), parent)) return e;
  if (priority) r.priority = static_cast<int>(*priority);
  if (parent) r.parent = *parent;

  const app_def* app = apps.find(r.jobtype);
  if (!app) {
    auto e = bad_request("unknown jobtype " + quoted(r.jobtype) + "; known: " + known_types(apps));
    e.error = "unknown_jobtype";
    return e;
  }
  if (auto e =
          check_config_string("config", r.config, app->compiled_pattern, app->pattern, app->name))
    return e;
  if (!r.howfig.empty()) {
    if (auto e = check_config_string("howfig", r.howfig, app->compiled_howfig_pattern,
                                     app->howfig_pattern, app->name))
      return e;
  }
  r.max_attempts = app->max_attempts;
  out = std::move(r);
  return std::nullopt;
}

std::optional<api_error> validate_bulk(const boost::json::value& v, const app_registry& apps,
                                       std::size_t max_jobs, std::vector<job_request>& out) {
  if (!v.is_object())
    return bad_request("request body must be a JSON object {\"jobs\": [...]}, not " +
                       std::string(kind_name(v)));
  const auto& o = v.as_object();
  for (const auto& kv : o) {
    if (kv.key() != "jobs")
      return bad_request("unknown field " + quoted(kv.key()) + "; allowed: jobs");
  }
  auto it = o.find("jobs");
  if (it == o.end()) return bad_request("missing field 'jobs'");
  if (!it->value().is_array())
    return bad_request("field 'jobs' must be an array, not " + std::string(kind_name(it->value())));
  const auto& arr = it->value().as_array();
  if (arr.empty()) return bad_request("field 'jobs' must hold at least one job");
  if (arr.size() > max_jobs)
    return bad_request("field 'jobs' holds " + std::to_string(arr.size()) + " jobs; at most " +
                       std::to_string(max_jobs) + " are allowed per request");
  std::vector<job_request> jobs;
  jobs.reserve(arr.size());
  for (std::size_t i = 0; i < arr.size(); ++i) {
    job_request r;
    if (auto e = validate_job(arr[i], apps, r)) {
      e->detail = "jobs[" + std::to_string(i) + "]: " + e->detail;
      return e;
    }
    jobs.push_back(std::move(r));
  }
  out = std::move(jobs);
  return std::nullopt;
}

// ---- authentication -------------------------------------------------------------------------

std::optional<std::string> bearer_token(std::string_view h) {
  auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
  };
  h = trim(h);
  constexpr std::string_view scheme = "bearer";
  if (h.size() <= scheme.size() || !iequals(h.substr(0, scheme.size()), scheme))
    return std::nullopt;
  if (h[scheme.size()] != ' ' && h[scheme.size()] != '\t') return std::nullopt;
  auto token = trim(h.substr(scheme.size()));
  // Tokens are "dp_" + 64 hex digits; allow some slack but never whitespace or huge values.
  if (token.empty() || token.size() > 256) return std::nullopt;
  for (char c : token) {
    if (c <= ' ' || c == 0x7f) return std::nullopt;
  }
  return std::string(token);
}

std::optional<api_error> check_token(const job_record& token, double now_s, principal& who) {
  auto field = [&](const char* k) -> std::string {
    auto it = token.find(k);
    return it == token.end() ? std::string() : it->second;
  };
  if (token.empty()) return unauthorized("unknown or revoked token");
  std::string owner = field("owner");
  if (owner.empty()) return unauthorized("token has no owner");
  std::string expires = field("expires");
  if (!expires.empty()) {
    auto t = parse_double(expires);
    if (!t) return unauthorized("token has an unreadable expiry");
    if (*t > 0 && now_s >= *t) return unauthorized("token expired");
  }
  std::string scope = field("scope");
  principal p;
  p.name = owner;
  if (scope == "user") {
    // full access as the owner
  } else if (scope.rfind("job:", 0) == 0) {
    auto id = parse_integer<job_id>(std::string_view(scope).substr(4));
    if (!id || *id <= 0) return unauthorized("token has an unreadable scope");
    p.only_job = *id;
  } else {
    return unauthorized("token scope " + quoted(scope) + " is not accepted here");
  }
  who = std::move(p);
  return std::nullopt;
}

std::optional<api_error> check_user(const job_record& user, principal& who) {
  if (user.empty()) return unauthorized("the token's account no longer exists");
  auto status = user.find("status");
  if (status == user.end() || status->second != "active")
    return unauthorized("account " + who.name + " is " +
                        (status == user.end() ? std::string("not active") : status->second));
  auto role = user.find("role");
  // A job token never carries admin rights, whoever owns it.
  who.admin = role != user.end() && role->second == "admin" && !who.only_job;
  return std::nullopt;
}

bool may_read(const principal& who, job_id id, const std::string& owner) {
  if (who.only_job && *who.only_job != id) return false;
  if (who.admin) return true;
  return !owner.empty() && owner == who.name;
}

// ---- answers --------------------------------------------------------------------------------

job_record record_from_reply(const redis_reply& r) {
  job_record out;
  if (r.type != redis_reply::kind::array) return out;
  for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2)
    out[r.elements[i].as_string()] = r.elements[i + 1].as_string();
  return out;
}

boost::json::object events_json(const redis_reply& xrange) {
  boost::json::array events;
  if (xrange.type == redis_reply::kind::array) {
    for (const auto& entry : xrange.elements) {
      if (entry.type != redis_reply::kind::array || entry.elements.size() != 2) continue;
      boost::json::object e;
      e["stream_id"] = entry.elements[0].as_string();
      auto fields = record_from_reply(entry.elements[1]);
      for (const auto& [k, v] : fields) {
        if (k == "attempt") {
          if (auto n = parse_integer<long long>(v)) {
            e[k] = *n;
            continue;
          }
        } else if (k == "time") {
          if (auto d = parse_double(v)) {
            e[k] = *d;
            continue;
          }
        }
        e[k] = v;
      }
      events.push_back(std::move(e));
    }
  }
  boost::json::object o;
  o["events"] = std::move(events);
  return o;
}

boost::json::object submitted_body(const std::vector<job_id>& ids,
                                   const std::vector<job_request>& jobs, std::size_t first) {
  boost::json::array list;
  list.reserve(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    boost::json::array pair;
    pair.push_back(ids[i]);
    pair.push_back(first + i < jobs.size() ? jobs[first + i].priority : 0);
    list.push_back(std::move(pair));
  }
  boost::json::object o;
  o["jobs"] = std::move(list);
  return o;
}

}  // namespace descprod::gateway
