// Validation of what a request carries (api.hpp): targets, query strings, JSON bodies, the job
// requests and the workers' reports. Pure. Every user-supplied string quoted in an error detail
// is cut to a bounded length, so an error answer never grows with the request.
#include "gateway/api.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <ctime>
#include <limits>
#include <map>
#include <set>

#include "core/accounts.hpp"
#include "core/text.hpp"

namespace descprod::gateway {

namespace {

// Bytes of user input quoted back in an error detail.
constexpr std::size_t max_quoted = 80;

// The length of s cut to at most max bytes without splitting a UTF-8 sequence.
std::size_t utf8_cut(std::string_view s, std::size_t max) {
  if (s.size() <= max) return s.size();
  std::size_t n = max;
  for (int k = 0; k < 3 && n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80; ++k) --n;
  return n;
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

std::optional<api_error> read_string(const boost::json::object& o, std::string_view field, bool required,
                                     std::size_t max_bytes, std::string& out) {
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
    return bad_request("field '" + std::string(field) + "' is longer than " + std::to_string(max_bytes) +
                       " bytes");
  out.assign(s.data(), s.size());
  return std::nullopt;
}

// An integer JSON value in [lo, hi]; doubles are refused even when whole (5.0), so that a
// client bug sending floats is visible.
std::optional<api_error> read_integer(const boost::json::object& o, std::string_view field, long long lo,
                                      long long hi, std::optional<long long>& out) {
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

api_error invalid_config(std::string detail) {
  auto e = bad_request(std::move(detail));
  e.code = errc::invalid_config;
  return e;
}

// The app's pattern for a config or howfig, when it declares one.
std::optional<api_error> check_app_pattern(std::string_view field, const std::string& value,
                                           const std::optional<std::regex>& pattern,
                                           const std::string& pattern_text, const std::string& app_name) {
  if (pattern && !std::regex_match(value, *pattern))
    return invalid_config(std::string(field) + " " + quoted(value) +
                          " does not match the pattern of application " + app_name + ": " + pattern_text);
  return std::nullopt;
}

// A config: check_service_config (check_config's rules, '_' and '.' allowed too), then the app's
// pattern.
std::optional<api_error> check_config_field(const std::string& value, const app_def& app) {
  if (int code = check_service_config(value); code != 0) {
    std::string why = code == 1 ? "only letters, digits, '-', ':', '_' and '.' are allowed"
                                : std::string(check_config_reason(code));
    return invalid_config("config " + quoted(value) + " " + why + " (check_config code " +
                          std::to_string(code) + ")");
  }
  return check_app_pattern("config", value, app.compiled_pattern, app.pattern, app.name);
}

// A howfig: text without control characters, then the app's howfig_pattern.
std::optional<api_error> check_howfig_field(const std::string& value, const app_def& app) {
  if (!valid_howfig_text(value))
    return invalid_config("howfig " + quoted(value) +
                          " must be text without control characters (tabs, newlines, ...) in valid UTF-8");
  return check_app_pattern("howfig", value, app.compiled_howfig_pattern, app.howfig_pattern, app.name);
}

// Splits a query string into decoded (key, value) pairs; refuses malformed %-escapes and a key
// given twice.
std::optional<api_error> split_query(std::string_view query, urlencoded_pairs& out) {
  auto pairs = parse_urlencoded(query);
  if (!pairs) return pairs.error();
  std::set<std::string> seen;
  for (auto& kv : *pairs) {
    if (!seen.insert(kv.first).second)
      return bad_request("query parameter " + quoted(kv.first) + " given twice");
    out.push_back(std::move(kv));
  }
  return std::nullopt;
}

std::optional<api_error> unknown_parameter(const std::string& key, std::string_view known) {
  return bad_request("unknown query parameter " + quoted(key) + "; known: " + std::string(known));
}

std::optional<api_error> refuse_unknown_fields(const boost::json::object& o,
                                               std::initializer_list<std::string_view> allowed) {
  for (const auto& kv : o) {
    bool ok = false;
    for (auto a : allowed) ok = ok || kv.key() == a;
    if (!ok) {
      std::string list;
      for (auto a : allowed) {
        if (!list.empty()) list += ", ";
        list += std::string(a);
      }
      return bad_request("unknown field " + quoted(kv.key()) + "; allowed: " + list);
    }
  }
  return std::nullopt;
}

std::optional<api_error> read_bool(const boost::json::object& o, std::string_view field, bool& out) {
  auto it = o.find(field);
  if (it == o.end()) return std::nullopt;
  if (!it->value().is_bool())
    return bad_request("field '" + std::string(field) + "' must be a boolean, not " +
                       std::string(kind_name(it->value())));
  out = it->value().as_bool();
  return std::nullopt;
}

// A required "attempt" (1..1e9).
std::optional<api_error> read_attempt(const boost::json::object& o, long long& out) {
  if (!o.contains("attempt")) return bad_request("missing field 'attempt'");
  std::optional<long long> a;
  if (auto e = read_integer(o, "attempt", 1, 1'000'000'000, a)) return e;
  out = *a;
  return std::nullopt;
}

// A string field cut (not refused) to max_message_bytes; refused beyond the request body limit
// only.
std::optional<api_error> read_message(const boost::json::object& o, std::string& out) {
  if (auto e = read_string(o, "message", false, std::numeric_limits<std::size_t>::max(), out)) return e;
  // An application's text: control characters (terminal escapes) replaced, then cut.
  out = sanitize_app_text(out, max_message_bytes);
  return std::nullopt;
}

std::optional<api_error> body_object(const boost::json::value& v, const char* what) {
  if (!v.is_object())
    return bad_request(std::string(what) + " must be a JSON object, not " + std::string(kind_name(v)));
  return std::nullopt;
}

}  // namespace

// User input quoted in an error detail (api.hpp): cut at a character boundary and with invalid UTF-8 (a
// %-decoded query may hold any byte) replaced, so that the answer stays valid JSON text (both
// found by fuzz/).
std::string quoted(std::string_view s) {
  std::string out = "'";
  out += sanitize_utf8(s.substr(0, utf8_cut(s, max_quoted)));
  if (s.size() > max_quoted) out += "...";
  out += "'";
  return out;
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

std::optional<job_id> parse_job_id_text(std::string_view s) {
  if (s.empty() || s.size() > 18 || s.find_first_not_of("0123456789") != std::string_view::npos)
    return std::nullopt;
  auto id = parse_integer<job_id>(s);
  if (!id || *id <= 0) return std::nullopt;
  return id;
}

// ---- routing --------------------------------------------------------------------------------

bool method_in_list(std::string_view allowed, std::string_view method) {
  while (!allowed.empty()) {
    auto comma = allowed.find(',');
    if (allowed.substr(0, comma) == method) return true;
    if (comma == std::string_view::npos) break;
    allowed.remove_prefix(comma + 1);
    while (!allowed.empty() && allowed.front() == ' ') allowed.remove_prefix(1);
  }
  return false;
}

target_parts split_target(std::string_view target) {
  target_parts t;
  auto q = target.find('?');
  t.path = std::string(target.substr(0, q));
  if (q != std::string_view::npos) t.query = std::string(target.substr(q + 1));
  return t;
}

result<urlencoded_pairs> parse_urlencoded(std::string_view text) {
  urlencoded_pairs out;
  while (!text.empty()) {
    auto amp = text.find('&');
    auto part = text.substr(0, amp);
    text = amp == std::string_view::npos ? std::string_view() : text.substr(amp + 1);
    if (part.empty()) continue;
    auto eq = part.find('=');
    auto key = percent_decode(part.substr(0, eq));
    auto value = percent_decode(eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1));
    if (!key || !value) return bad_request("malformed %-escape in query " + quoted(part));
    out.emplace_back(std::move(*key), std::move(*value));
  }
  return out;
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

namespace {

constexpr std::string_view list_parameters =
    "limit, offset, cursor, state, jobtype, archived, parent, owner, q, created_after, created_before, "
    "started_after, started_before, ended_after, ended_before, sort";

// Epoch seconds (a number) or a UTC time YYYY-MM-DDTHH:MM:SSZ (or a date YYYY-MM-DD: its midnight).
std::optional<double> parse_time_value(std::string_view s) {
  if (s.empty() || s.size() > 32) return std::nullopt;
  if (s.find_first_not_of("0123456789.") == std::string_view::npos) {
    auto d = parse_double(s);
    if (!d || *d < 0 || *d > 1e11) return std::nullopt;
    return d;
  }
  auto digits = [&](std::size_t at, std::size_t n) -> std::optional<int> {
    if (at + n > s.size()) return std::nullopt;
    return parse_integer<int>(s.substr(at, n));
  };
  std::tm tm{};
  auto y = digits(0, 4), mo = digits(5, 2), d = digits(8, 2);
  if (!y || !mo || !d || s[4] != '-' || s[7] != '-') return std::nullopt;
  if (*y < 1970 || *y > 9999 || *mo < 1 || *mo > 12 || *d < 1 || *d > 31) return std::nullopt;
  tm.tm_year = *y - 1900;
  tm.tm_mon = *mo - 1;
  tm.tm_mday = *d;
  if (s.size() != 10) {
    auto h = digits(11, 2), mi = digits(14, 2), se = digits(17, 2);
    if (s.size() != 20 || (s[10] != 'T' && s[10] != ' ') || s[13] != ':' || s[16] != ':' || s[19] != 'Z' ||
        !h || !mi || !se || *h > 23 || *mi > 59 || *se > 60)
      return std::nullopt;
    tm.tm_hour = *h;
    tm.tm_min = *mi;
    tm.tm_sec = *se;
  }
  std::time_t t = timegm(&tm);
  if (t < 0) return std::nullopt;
  return static_cast<double>(t);
}

std::optional<std::pair<list_sort, bool>> parse_sort(std::string_view s) {
  bool descending = !s.empty() && s.front() == '-';
  if (descending) s.remove_prefix(1);
  static const std::pair<std::string_view, list_sort> names[] = {{"id", list_sort::id},
                                                                 {"created", list_sort::created},
                                                                 {"started", list_sort::started},
                                                                 {"duration", list_sort::duration},
                                                                 {"state", list_sort::state}};
  for (const auto& [name, sort] : names)
    if (s == name) return std::make_pair(sort, descending);
  return std::nullopt;
}

std::string_view sort_name(list_sort s) {
  switch (s) {
    case list_sort::id: return "id";
    case list_sort::created: return "created";
    case list_sort::started: return "started";
    case list_sort::duration: return "duration";
    case list_sort::state: return "state";
  }
  return "id";
}

std::string number_text(double d) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d);
  return std::string(buf, r.ptr);
}

}  // namespace

std::string sort_text(const list_query& q) {
  return (q.descending ? "-" : "") + std::string(sort_name(q.sort));
}

std::string cursor_text(const list_query& q, const list_cursor& c) {
  return sort_text(q) + "~" + (c.value ? number_text(*c.value) : std::string()) + "~" + std::to_string(c.id);
}

std::optional<api_error> parse_list_query(std::string_view query, list_query& out) {
  std::vector<std::pair<std::string, std::string>> params;
  if (auto e = split_query(query, params)) return e;
  std::string cursor;
  for (const auto& [key, value] : params) {
    if (key == "limit") {
      auto n = parse_integer<int>(value);
      if (!n || *n < 1 || *n > max_list_limit)
        return bad_request("limit must be an integer between 1 and " + std::to_string(max_list_limit));
      out.limit = *n;
    } else if (key == "offset") {
      auto n = parse_integer<long long>(value);
      if (!n || *n < 0 || *n > max_list_offset)
        return bad_request("offset must be an integer between 0 and " + std::to_string(max_list_offset));
      out.offset = *n;
    } else if (key == "cursor") {
      cursor = value;
    } else if (key == "state") {
      auto st = parse_job_state(value);
      if (!st) {
        std::string known;
        for (auto state : all_job_states()) {
          if (!known.empty()) known += ", ";
          known += std::string(to_string(state));
        }
        return bad_request("unknown state " + quoted(value) + "; known: " + known);
      }
      out.state = st;
    } else if (key == "jobtype") {
      if (value.empty() || value.size() > max_jobtype_bytes)
        return bad_request("jobtype must be 1 to " + std::to_string(max_jobtype_bytes) + " bytes");
      out.jobtype = value;
    } else if (key == "archived") {
      if (value != "0" && value != "1") return bad_request("archived must be 0 or 1");
      out.archived = value == "1";
    } else if (key == "parent") {
      auto id = parse_job_id_text(value);
      if (!id) return bad_request("parent must be a job id (a positive integer)");
      out.parent = id;
    } else if (key == "array") {
      auto id = parse_job_id_text(value);
      if (!id) return bad_request("array must be an array's ID (its first job's ID)");
      out.array = id;
    } else if (key == "owner") {
      if (value != "*" && !valid_user_name(value))
        return bad_request("owner must be a user name or * (everyone's jobs)");
      out.owner = value;
    } else if (key == "q") {
      if (value.size() > max_text_query_bytes)
        return bad_request("q must be at most " + std::to_string(max_text_query_bytes) + " bytes");
      out.text = value;
    } else if (key.size() > 6 && (key.ends_with("_after") || key.ends_with("_before"))) {
      bool after = key.ends_with("_after");
      std::string_view which = std::string_view(key).substr(0, key.size() - (after ? 6 : 7));
      time_range* r = which == "created"   ? &out.created
                      : which == "started" ? &out.started
                      : which == "ended"   ? &out.ended
                                           : nullptr;
      if (!r) return unknown_parameter(key, list_parameters);
      auto t = parse_time_value(value);
      if (!t) return bad_request(key + " must be epoch seconds or a UTC time YYYY-MM-DDTHH:MM:SSZ");
      (after ? r->after : r->before) = *t;
    } else if (key == "sort") {
      auto s = parse_sort(value);
      if (!s)
        return bad_request(
            "sort must be one of id, created, started, duration, state, with - first for "
            "descending (e.g. -started)");
      out.sort = s->first;
      out.descending = s->second;
    } else {
      return unknown_parameter(key, list_parameters);
    }
  }
  if (!cursor.empty()) {
    // "<sort>~<value>~<id>": the sort must be this query's, so a page never continues another order.
    auto a = cursor.find('~');
    auto b = a == std::string::npos ? std::string::npos : cursor.find('~', a + 1);
    if (b == std::string::npos) return bad_request("cursor must be a previous answer's \"next\"");
    if (std::string_view(cursor).substr(0, a) != sort_text(out))
      return bad_request("cursor is from a list sorted by " + quoted(cursor.substr(0, a)) + ", not " +
                         quoted(sort_text(out)));
    list_cursor c;
    std::string_view value = std::string_view(cursor).substr(a + 1, b - a - 1);
    if (!value.empty()) {
      c.value = parse_double(value);
      if (!c.value || !std::isfinite(*c.value))
        return bad_request("cursor must be a previous answer's \"next\"");
    }
    auto id = parse_job_id_text(std::string_view(cursor).substr(b + 1));
    if (!id) return bad_request("cursor must be a previous answer's \"next\"");
    c.id = *id;
    if (out.offset != 0) return bad_request("give cursor or offset, not both");
    out.cursor = c;
  }
  return std::nullopt;
}

std::optional<api_error> parse_log_query(std::string_view query, log_query& out) {
  std::vector<std::pair<std::string, std::string>> params;
  if (auto e = split_query(query, params)) return e;
  out = log_query{};
  for (const auto& [key, value] : params) {
    if (key == "lines") {
      if (value == "all") {
        out.all = true;
        continue;
      }
      auto n = parse_integer<int>(value);
      if (!n || *n < 1 || *n > max_log_lines)
        return bad_request("lines must be all or an integer between 1 and " + std::to_string(max_log_lines));
      out.lines = *n;
      out.all = false;
    } else if (key == "q") {
      if (value.empty() || value.size() > max_log_search_bytes)
        return bad_request("q must be 1 to " + std::to_string(max_log_search_bytes) + " bytes");
      out.q = value;
    } else if (key == "format") {
      if (value != "json" && value != "text") return bad_request("format must be json or text");
      out.text = value == "text";
    } else {
      return unknown_parameter(key, "lines, q, format");
    }
  }
  if (out.text && !out.q.empty()) return bad_request("format=text is for the log itself, not a search (q)");
  return std::nullopt;
}

std::optional<api_error> parse_job_events_query(std::string_view query, bool& follow) {
  std::vector<std::pair<std::string, std::string>> params;
  if (auto e = split_query(query, params)) return e;
  follow = false;
  for (const auto& [key, value] : params) {
    if (key != "follow") return unknown_parameter(key, "follow");
    if (value == "1" || value == "true") follow = true;
    else if (value == "0" || value == "false") follow = false;
    else return bad_request("follow must be 1, 0, true or false");
  }
  return std::nullopt;
}

std::optional<api_error> parse_events_query(std::string_view query, std::optional<job_id>& job) {
  std::optional<stream_id> since;
  if (auto e = parse_events_query(query, job, since)) return e;
  if (since) return unknown_parameter("since", "job");
  return std::nullopt;
}

std::optional<api_error> parse_events_query(std::string_view query, std::optional<job_id>& job,
                                            std::optional<stream_id>& since) {
  std::vector<std::pair<std::string, std::string>> params;
  if (auto e = split_query(query, params)) return e;
  job.reset();
  since.reset();
  for (const auto& [key, value] : params) {
    if (key == "job") {
      auto id = parse_job_id_text(value);
      if (!id) return bad_request("job must be a job id (a positive integer)");
      job = id;
    } else if (key == "since") {
      auto id = parse_stream_id(value);
      if (!id) return bad_request("since must be an event id (<ms>-<seq>)");
      since = id;
    } else {
      return unknown_parameter(key, "job, since");
    }
  }
  return std::nullopt;
}

bool is_event_stream(const route& r, std::string_view method, std::string_view query) {
  if (method != "GET") return false;
  if (r.kind == route_kind::events) return true;
  if (r.kind != route_kind::job_events) return false;
  bool follow = false;
  return !parse_job_events_query(query, follow) && follow;
}

// ---- request bodies -------------------------------------------------------------------------

std::optional<api_error> parse_json_body(std::string_view body, boost::json::value& out) {
  if (body.empty()) {
    auto e = bad_request("request body is empty; expected a JSON object");
    e.code = errc::bad_json;
    return e;
  }
  boost::json::stream_parser p;
  boost::system::error_code ec;
  std::size_t used = p.write(body.data(), body.size(), ec);
  if (!ec) p.finish(ec);
  if (ec) {
    auto e = bad_request("malformed JSON near byte " + std::to_string(used) + ": " + ec.message());
    e.code = errc::bad_json;
    return e;
  }
  out = p.release();
  return std::nullopt;
}

namespace {
// after / after_any of a job: job IDs, or "#k" (an earlier job of the same bulk request). Each job
// once: named twice in one list it counts once; in both lists it is refused.
std::optional<api_error> read_dependencies(const boost::json::object& o, std::optional<std::size_t> entry,
                                           std::vector<dependency_ref>& out) {
  std::set<job_id> ids;
  std::set<std::size_t> entries;
  std::set<job_id> any_ids;
  std::set<std::size_t> any_entries;
  for (const char* field : {"after", "after_any"}) {
    auto it = o.find(field);
    if (it == o.end()) continue;
    const bool any = std::string_view(field) == "after_any";
    if (!it->value().is_array())
      return bad_request("field '" + std::string(field) + "' must be an array of job IDs, not " +
                         std::string(kind_name(it->value())));
    for (const auto& item : it->value().as_array()) {
      dependency_ref d;
      d.any = any;
      if (item.is_int64() && item.as_int64() > 0) {
        d.id = item.as_int64();
      } else if (item.is_uint64() && item.as_uint64() <= static_cast<std::uint64_t>(INT64_MAX)) {
        d.id = static_cast<job_id>(item.as_uint64());
      } else if (item.is_string()) {
        std::string_view text = item.as_string();
        std::size_t k = 0;
        auto digits = text.substr(text.empty() ? 0 : 1);
        auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), k);
        if (text.empty() || text[0] != '#' || digits.empty() || ec != std::errc() ||
            p != digits.data() + digits.size())
          return bad_request("field '" + std::string(field) + "': " + quoted(text) +
                             " is not a job ID nor \"#k\" (an earlier job of the same bulk request)");
        if (!entry)
          return bad_request("field '" + std::string(field) + "': " + quoted(text) +
                             " names a job of a bulk request; use POST /api/jobs/bulk");
        if (k >= *entry)
          return bad_request("field '" + std::string(field) + "': " + quoted(text) +
                             " must name an earlier job of the request (jobs[0] to jobs[" +
                             std::to_string(*entry) + "-1])");
        d.entry = k;
      } else {
        return bad_request("field '" + std::string(field) + "' must hold job IDs (positive integers), not " +
                           std::string(kind_name(item)));
      }
      auto& mine_ids = any ? any_ids : ids;
      auto& mine_entries = any ? any_entries : entries;
      auto& other_ids = any ? ids : any_ids;
      auto& other_entries = any ? entries : any_entries;
      std::string name = d.entry ? "#" + std::to_string(*d.entry) : std::to_string(d.id);
      if (d.entry ? other_entries.count(*d.entry) > 0 : other_ids.count(d.id) > 0)
        return bad_request("job " + name + " is in both after and after_any; name it in one");
      if (!(d.entry ? mine_entries.insert(*d.entry).second : mine_ids.insert(d.id).second)) continue;
      if (out.size() >= max_dependencies)
        return bad_request("at most " + std::to_string(max_dependencies) +
                           " dependencies (after and after_any together) per job");
      out.push_back(d);
    }
  }
  return std::nullopt;
}

// "sites": ["nersc", ...]: 1 to max_job_sites site names, kept sorted and once each.
std::optional<api_error> read_sites(const boost::json::object& o, std::string& out) {
  auto it = o.find("sites");
  if (it == o.end()) return std::nullopt;
  if (!it->value().is_array() || it->value().as_array().empty() ||
      it->value().as_array().size() > max_job_sites)
    return bad_request("field 'sites' must be an array of 1 to " + std::to_string(max_job_sites) +
                       " site names");
  std::set<std::string> sites;
  for (const auto& v : it->value().as_array()) {
    if (!v.is_string() || !valid_site_name(v.as_string()))
      return bad_request(
          "field 'sites': " + (v.is_string() ? quoted(v.as_string()) : std::string(kind_name(v))) +
          " is not a site name (1 to 32 of a-z, 0-9, '-', '_')");
    sites.emplace(v.as_string());
  }
  for (const auto& s : sites) out += (out.empty() ? "" : ",") + s;
  return std::nullopt;
}

// "array": N (indexes 0..N-1) or {"from": A, "to": B, "step": S} (A..B inclusive, by S).
std::optional<api_error> read_array(const boost::json::object& o, std::optional<array_range>& out) {
  auto it = o.find("array");
  if (it == o.end()) return std::nullopt;
  const auto& v = it->value();
  array_range r;
  const std::string limit = std::to_string(max_array_jobs);
  if (v.is_int64() || v.is_uint64()) {
    long long n = v.is_int64() ? v.as_int64() : -1;
    if (n < 1 || n > max_array_jobs) return bad_request("field 'array' must be between 1 and " + limit);
    r.to = n - 1;
  } else if (v.is_object()) {
    const auto& a = v.as_object();
    if (auto e = refuse_unknown_fields(a, {"from", "to", "step"})) {
      e->detail = "field 'array': " + e->detail;
      return e;
    }
    std::optional<long long> from, to, step;
    if (auto e = read_integer(a, "from", 0, 1'000'000'000, from)) return e;
    if (auto e = read_integer(a, "to", 0, 1'000'000'000, to)) return e;
    if (auto e = read_integer(a, "step", 1, 1'000'000'000, step)) return e;
    if (!from || !to) return bad_request("field 'array' needs 'from' and 'to' (and optionally 'step')");
    if (*to < *from) return bad_request("field 'array': 'to' must not be below 'from'");
    r.from = *from;
    r.to = *to;
    r.step = step.value_or(1);
    if (r.count() > max_array_jobs)
      return bad_request("field 'array' makes " + std::to_string(r.count()) + " jobs; at most " + limit);
  } else {
    return bad_request("field 'array' must be a number of jobs or {\"from\", \"to\", \"step\"}, not " +
                       std::string(kind_name(v)));
  }
  out = r;
  return std::nullopt;
}

std::string with_index(const std::string& text, long long index) {
  static const std::string mark = "{index}";
  std::string out;
  std::size_t start = 0;
  for (auto at = text.find(mark); at != std::string::npos; at = text.find(mark, start)) {
    out.append(text, start, at - start);
    out += std::to_string(index);
    start = at + mark.size();
  }
  out.append(text, start, std::string::npos);
  return out;
}
}  // namespace

std::optional<api_error> expand_array(const job_request& tmpl, const app_registry& apps,
                                      std::vector<job_request>& out) {
  out.clear();
  if (!tmpl.array) return bad_request("not an array");
  const app_def* app = apps.find(tmpl.jobtype);
  if (!app) return bad_request("unknown jobtype " + quoted(tmpl.jobtype));
  out.reserve(static_cast<std::size_t>(tmpl.array->count()));
  for (long long i = tmpl.array->from; i <= tmpl.array->to; i += tmpl.array->step) {
    job_request r = tmpl;
    r.array.reset();
    r.array_index = i;
    r.config = with_index(tmpl.config, i);
    r.howfig = with_index(tmpl.howfig, i);
    std::optional<api_error> e;
    if (r.config.size() > max_config_bytes || r.howfig.size() > max_config_bytes)
      e = bad_request("config and howfig must be at most " + std::to_string(max_config_bytes) + " bytes");
    if (!e) e = check_config_field(r.config, *app);
    if (!e && !r.howfig.empty()) e = check_howfig_field(r.howfig, *app);
    if (e) {
      e->detail = "array index " + std::to_string(i) + ": " + e->detail;
      return e;
    }
    out.push_back(std::move(r));
  }
  return std::nullopt;
}

std::optional<api_error> validate_job(const boost::json::value& v, const app_registry& apps, job_request& out,
                                      std::optional<std::size_t> entry) {
  if (!v.is_object()) return bad_request("a job must be a JSON object, not " + std::string(kind_name(v)));
  const auto& o = v.as_object();
  static const std::set<std::string_view> allowed = {"jobtype", "config", "howfig",    "priority", "parent",
                                                     "hold",    "after",  "after_any", "array",    "sites"};
  for (const auto& kv : o) {
    if (!allowed.count(kv.key()))
      return bad_request(
          "unknown field " + quoted(kv.key()) +
          "; allowed: jobtype, config, howfig, priority, parent, hold, after, after_any, array, sites");
  }
  if (entry && o.contains("array"))
    return bad_request("field 'array' is for POST /api/jobs; a bulk request lists its jobs");
  job_request r;
  if (auto e = read_string(o, "jobtype", true, max_jobtype_bytes, r.jobtype)) return e;
  if (auto e = read_string(o, "config", true, max_config_bytes, r.config)) return e;
  if (auto e = read_string(o, "howfig", false, max_config_bytes, r.howfig)) return e;
  std::optional<long long> priority, parent;
  if (auto e = read_integer(o, "priority", -1000, 1000, priority)) return e;
  if (auto e = read_integer(o, "parent", 1, std::numeric_limits<job_id>::max(), parent)) return e;
  if (priority) r.priority = static_cast<int>(*priority);
  if (parent) r.parent = *parent;
  if (auto e = read_bool(o, "hold", r.hold)) return e;
  if (auto e = read_dependencies(o, entry, r.after)) return e;
  if (auto e = read_array(o, r.array)) return e;
  if (auto e = read_sites(o, r.sites)) return e;

  const app_def* app = apps.find(r.jobtype);
  if (!app) {
    auto e = bad_request("unknown jobtype " + quoted(r.jobtype) + "; known: " + known_types(apps));
    e.code = errc::unknown_jobtype;
    return e;
  }
  // An array's config and howfig are checked for each index, once "{index}" is replaced
  // (expand_array).
  if (!r.array) {
    if (auto e = check_config_field(r.config, *app)) return e;
    if (!r.howfig.empty()) {
      if (auto e = check_howfig_field(r.howfig, *app)) return e;
    }
  }
  r.max_attempts = app->max_attempts;
  if (app->manual_dispatch) r.hold = true;
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
    if (kv.key() != "jobs") return bad_request("unknown field " + quoted(kv.key()) + "; allowed: jobs");
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
    if (auto e = validate_job(arr[i], apps, r, i)) {
      e->detail = "jobs[" + std::to_string(i) + "]: " + e->detail;
      return e;
    }
    jobs.push_back(std::move(r));
  }
  out = std::move(jobs);
  return std::nullopt;
}

std::optional<api_error> parse_claim_body(const boost::json::value& v, std::string& host) {
  if (auto e = body_object(v, "a claim")) return e;
  const auto& o = v.as_object();
  if (auto e = refuse_unknown_fields(o, {"host"})) return e;
  std::string h;
  if (auto e = read_string(o, "host", true, max_host_bytes, h)) return e;
  if (h.empty()) return bad_request("field 'host' must not be empty");
  for (char c : h) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_'))
      return bad_request("field 'host' " + quoted(h) + " may hold only letters, digits, '.', '-' and '_'");
  }
  host = std::move(h);
  return std::nullopt;
}

bool is_job_action(std::string_view a) {
  return a == "cancel" || a == "archive" || a == "unarchive" || a == "delete" || a == "resubmit" ||
         a == "release";
}

std::optional<api_error> parse_actions_body(const boost::json::value& v, std::string& action,
                                            std::vector<job_id>& ids, std::optional<list_query>& query) {
  if (auto e = body_object(v, "an action")) return e;
  const auto& o = v.as_object();
  if (auto e = refuse_unknown_fields(o, {"action", "ids", "query"})) return e;
  if (auto e = read_string(o, "action", true, 16, action)) return e;
  if (!is_job_action(action))
    return bad_request("action " + quoted(action) +
                       " is not one of cancel, release, archive, unarchive, delete, resubmit");
  const auto* list = o.if_contains("ids");
  const auto* q = o.if_contains("query");
  if ((list != nullptr) == (q != nullptr))
    return bad_request("give either 'ids' (a list of job IDs) or 'query'");
  if (list) {
    if (!list->is_array() || list->as_array().empty() || list->as_array().size() > max_action_ids)
      return bad_request("field 'ids' must be a list of 1 to " + std::to_string(max_action_ids) + " job IDs");
    for (const auto& e : list->as_array()) {
      if (!e.is_int64() || e.as_int64() <= 0)
        return bad_request("field 'ids' must hold job IDs (positive integers)");
      if (std::find(ids.begin(), ids.end(), e.as_int64()) == ids.end()) ids.push_back(e.as_int64());
    }
    return std::nullopt;
  }
  // A query as GET /api/jobs takes it ("state=failed&q=pmbs"); paging parameters are not allowed.
  if (!q->is_string()) return bad_request("field 'query' must be a GET /api/jobs query string");
  list_query lq;
  std::string text(q->as_string());
  if (auto e = parse_list_query(text, lq)) {
    e->detail = "query: " + e->detail;
    return e;
  }
  urlencoded_pairs params;
  if (auto e = split_query(text, params)) return e;
  for (const auto& [key, value] : params)
    if (key == "limit" || key == "offset" || key == "cursor")
      return bad_request(
          "query: limit, offset and cursor do not apply: the action takes every match (at most " +
          std::to_string(max_action_jobs) + ")");
  query = std::move(lq);
  return std::nullopt;
}

std::optional<api_error> parse_started_body(const boost::json::value& v, started_report& out) {
  if (auto e = body_object(v, "a started report")) return e;
  const auto& o = v.as_object();
  if (auto e = refuse_unknown_fields(o, {"attempt", "pid", "host", "rundir"})) return e;
  started_report r;
  if (auto e = read_attempt(o, r.attempt)) return e;
  std::optional<long long> pid;
  if (auto e = read_integer(o, "pid", 0, std::numeric_limits<std::int32_t>::max(), pid)) return e;
  r.pid = pid.value_or(0);
  if (auto e = read_string(o, "host", false, max_host_bytes, r.host)) return e;
  if (auto e = read_string(o, "rundir", false, max_rundir_bytes, r.rundir)) return e;
  r.host = sanitize_app_text(r.host, max_host_bytes);
  r.rundir = sanitize_app_text(r.rundir, max_rundir_bytes);
  out = std::move(r);
  return std::nullopt;
}

std::optional<api_error> parse_progress_body(const boost::json::value& v, progress_report& out) {
  if (auto e = body_object(v, "a progress report")) return e;
  const auto& o = v.as_object();
  if (auto e = refuse_unknown_fields(o, {"attempt", "message", "done", "total"})) return e;
  progress_report r;
  if (auto e = read_attempt(o, r.attempt)) return e;
  if (auto e = read_message(o, r.message)) return e;
  constexpr long long max_count = 1'000'000'000'000;
  if (auto e = read_integer(o, "done", 0, max_count, r.done)) return e;
  if (auto e = read_integer(o, "total", 0, max_count, r.total)) return e;
  if (r.done.has_value() != r.total.has_value()) return bad_request("fields 'done' and 'total' go together");
  if (r.done && *r.done > *r.total)
    return bad_request("field 'done' (" + std::to_string(*r.done) + ") exceeds 'total' (" +
                       std::to_string(*r.total) + ")");
  out = std::move(r);
  return std::nullopt;
}

std::optional<api_error> parse_finished_body(const boost::json::value& v, finished_report& out) {
  if (auto e = body_object(v, "a finished report")) return e;
  const auto& o = v.as_object();
  if (auto e = refuse_unknown_fields(o, {"attempt", "rc", "signal", "timed_out", "message"})) return e;
  finished_report r;
  if (auto e = read_attempt(o, r.attempt)) return e;
  std::optional<long long> rc, sig;
  if (auto e = read_integer(o, "rc", std::numeric_limits<std::int32_t>::min(),
                            std::numeric_limits<std::int32_t>::max(), rc))
    return e;
  if (auto e = read_integer(o, "signal", 0, 255, sig)) return e;
  r.rc = static_cast<int>(rc.value_or(0));
  r.signal = static_cast<int>(sig.value_or(0));
  if (auto e = read_bool(o, "timed_out", r.timed_out)) return e;
  if (auto e = read_message(o, r.message)) return e;
  out = std::move(r);
  return std::nullopt;
}

}  // namespace descprod::gateway
