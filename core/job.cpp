// Job states, transitions, DESCprod's progress strings and config-string rules.
// The transition table here is the single source: store.cpp renders it into the Lua scripts.
#include "core/job.hpp"

#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <set>

#include "core/text.hpp"

namespace descprod {

namespace {
constexpr std::array<std::string_view, 11> state_names = {"waiting", "held",      "ready",  "dispatched",
                                                          "running", "done",      "failed", "timeout",
                                                          "killed",  "cancelled", "lost"};
constexpr std::array<std::string_view, 9> event_names = {"lease",  "claim", "start",   "finish", "requeue",
                                                         "cancel", "lose",  "release", "unblock"};
}  // namespace

std::string_view to_string(job_state s) { return state_names[static_cast<std::size_t>(s)]; }
std::string_view to_string(job_event e) { return event_names[static_cast<std::size_t>(e)]; }

bool valid_site_name(std::string_view s) {
  if (s.empty() || s.size() > 32) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return false;
  return true;
}

std::optional<job_state> parse_job_state(std::string_view s) {
  for (std::size_t i = 0; i < state_names.size(); ++i)
    if (state_names[i] == s) return static_cast<job_state>(i);
  return std::nullopt;
}

const std::vector<job_state>& all_job_states() {
  static const std::vector<job_state> all = {job_state::waiting,    job_state::held,    job_state::ready,
                                             job_state::dispatched, job_state::running, job_state::done,
                                             job_state::failed,     job_state::timeout, job_state::killed,
                                             job_state::cancelled,  job_state::lost};
  return all;
}

bool is_terminal(job_state s) {
  return s != job_state::waiting && s != job_state::held && s != job_state::ready &&
         s != job_state::dispatched && s != job_state::running;
}

std::optional<job_state> next_state(job_state from, job_event e, std::optional<job_state> finish_target) {
  if (is_terminal(from)) return std::nullopt;  // the first terminal event wins
  switch (e) {
    case job_event::lease:
      if (from == job_state::ready) return job_state::dispatched;
      return std::nullopt;
    case job_event::claim:
      if (from == job_state::ready || from == job_state::held) return job_state::dispatched;
      return std::nullopt;
    case job_event::release:
      if (from == job_state::held) return job_state::ready;
      return std::nullopt;
    case job_event::unblock:
      if (from == job_state::waiting) return job_state::ready;
      return std::nullopt;
    case job_event::start:
      if (from == job_state::dispatched) return job_state::running;
      return std::nullopt;
    case job_event::finish:
      // A job may finish straight from dispatched: a process so short that its start and finish
      // reports arrive together, or one that could not be spawned at all.
      if (from != job_state::running && from != job_state::dispatched) return std::nullopt;
      if (!finish_target) return std::nullopt;
      switch (*finish_target) {
        case job_state::done:
        case job_state::failed:
        case job_state::timeout:
        case job_state::killed:
        case job_state::cancelled: return finish_target;
        default: return std::nullopt;
      }
    case job_event::requeue:
      if (from == job_state::dispatched || from == job_state::running) return job_state::ready;
      return std::nullopt;
    case job_event::cancel: return job_state::cancelled;  // from any non-terminal state
    case job_event::lose:
      if (from == job_state::dispatched || from == job_state::running) return job_state::lost;
      return std::nullopt;
  }
  return std::nullopt;
}

exit_outcome classify_exit(int exit_code, int signal, bool timed_out) {
  if (timed_out) return {job_state::timeout, 124, "Timeout"};
  if (signal > 0) return {job_state::killed, -signal, "Process received signal " + std::to_string(signal)};
  if (exit_code == 0) return {job_state::done, 0, "Done"};
  if (exit_code == 124) return {job_state::timeout, 124, "Timeout"};
  return {job_state::failed, exit_code, "Failed"};
}

std::string progress_string(std::string_view prefix, std::string_view message) {
  std::string out(prefix);
  out += '.';
  if (!message.empty()) {
    out += ' ';
    out += message;
  }
  return out;
}

std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = len > 0 && i + len <= s.size();
    unsigned cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (std::size_t k = 1; ok && k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Reject overlong forms, surrogates and values past U+10FFFF.
    if (ok && ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
               (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF))
      ok = false;
    if (ok) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

std::string job_name(job_id id) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "job%06lld", static_cast<long long>(id));
  return buf;
}

namespace {
std::vector<std::string> split_on(std::string_view s, std::string_view sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    auto pos = s.find(sep, start);
    if (pos == std::string_view::npos) {
      out.emplace_back(s.substr(start));
      return out;
    }
    out.emplace_back(s.substr(start, pos - start));
    start = pos + sep.size();
  }
}
bool allowed_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == ':';
}
bool allowed_service_char(char c) { return allowed_char(c) || c == '_' || c == '.'; }

// check_config's rules with a given set of characters.
template <class Allowed>
int check_config_with(std::string_view s, Allowed allowed) {
  if (s.empty()) return 9;
  for (char c : s)
    if (!allowed(c)) return 1;
  if (s.find("----") != std::string_view::npos) return 2;
  for (const auto& part : split_on(s, "---")) {
    if (part.find("--") != std::string::npos) return 3;
    if (part.empty() || part.front() == '-' || part.back() == '-') return 4;
    if (part.front() == ':' || part.back() == ':') return 5;
  }
  return 0;
}
}  // namespace

int check_config(std::string_view s) { return check_config_with(s, allowed_char); }

int check_service_config(std::string_view s) { return check_config_with(s, allowed_service_char); }

bool valid_howfig_text(std::string_view s) {
  for (unsigned char c : s)
    if (c < 0x20 || c == 0x7f) return false;
  return sanitize_utf8(s) == s;
}

std::string_view check_config_reason(int code) {
  switch (code) {
    case 0: return "ok";
    case 1: return "only letters, digits, '-' and ':' are allowed";
    case 2: return "contains '----'";
    case 3: return "a constituent contains '--'";
    case 4: return "starts or ends with '-'";
    case 5: return "starts or ends with ':'";
    case 9: return "is empty";
    default: return "is invalid";
  }
}

std::vector<std::string> split_config(std::string_view s) { return split_on(s, "-"); }
namespace {
bool batch_word(std::string_view s, std::size_t max) {
  if (s.size() > max) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  return true;
}
}  // namespace

std::optional<batch_howfig> parse_batch_howfig(std::string_view howfig, std::string& error) {
  error.clear();
  auto comma = howfig.find(',');
  std::string_view head = howfig.substr(0, comma);
  auto fields = split(std::string(head), '-');
  if (fields.empty() || (fields[0] != "pmb" && fields[0] != "pmbs")) return std::nullopt;
  batch_howfig b;
  b.subjob = fields[0] == "pmbs";
  b.head = std::string(head);
  if (comma != std::string_view::npos) b.rest = std::string(howfig.substr(comma + 1));
  const std::string name = fields[0] + "-TMIN[-QOS[-CONS[-ACCT]]]";
  if (fields.size() > 5) {
    error = "howfig '" + b.head + "': " + name + " has at most 5 fields, this has " +
            std::to_string(fields.size());
    return std::nullopt;
  }
  const std::string& t = fields.size() > 1 ? fields[1] : std::string();
  if (t.empty() || t.size() > 5 || t.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(t) < 1 || std::stoi(t) > 10080) {
    error = "howfig '" + b.head + "': the time limit TMIN must be minutes from 1 to 10080, not '" + t + "'";
    return std::nullopt;
  }
  b.minutes = std::stoi(t);
  b.qos = fields.size() > 2 && !fields[2].empty() ? fields[2] : "auto";
  if (b.qos == "auto") b.qos = b.minutes <= 30 ? "debug" : "regular";
  if (b.qos != "local" && b.qos != "regular" && b.qos != "debug") {
    error = "howfig '" + b.head + "': QOS must be local, regular, debug or auto, not '" + b.qos + "'";
    return std::nullopt;
  }
  b.constraint = fields.size() > 3 && !fields[3].empty() ? fields[3] : "cpu";
  if (!batch_word(b.constraint, 32)) {
    error = "howfig '" + b.head + "': the constraint must be 1 to 32 of A-Z a-z 0-9 _, not '" + b.constraint +
            "'";
    return std::nullopt;
  }
  b.account = fields.size() > 4 ? fields[4] : "";
  if (!batch_word(b.account, 32)) {
    error = "howfig '" + b.head + "': the account must be up to 32 of A-Z a-z 0-9 _, not '" + b.account + "'";
    return std::nullopt;
  }
  return b;
}

std::vector<std::string> split_config_field(std::string_view s) { return split_on(s, ":"); }
std::vector<std::string> split_compound_config(std::string_view s) { return split_on(s, "---"); }

const std::vector<std::string>& job_field_order() {
  static const std::vector<std::string> order = {
      // DESCprod's 18 fields, in its order.
      "id", "parent", "descname", "jobtype", "config", "howfig", "session", "archive", "host", "rundir",
      "pid", "create_time", "start_time", "update_time", "stop_time", "return_status", "port", "progress",
      // Added by this project.
      "state", "message", "priority", "attempt", "max_attempts", "worker", "cancel_requested", "done_count",
      "total_count", "queued_time", "dispatch_time", "hold", "after", "after_any", "waiting_for", "array",
      "array_index", "sites"};
  return order;
}

bool is_integer_field(std::string_view f) {
  static const std::set<std::string_view> ints = {
      "id",          "parent",  "session",      "archive",    "pid",         "return_status",    "port",
      "priority",    "attempt", "max_attempts", "done_count", "total_count", "cancel_requested", "hold",
      "waiting_for", "array",   "array_index"};
  return ints.count(f) > 0;
}

bool is_time_field(std::string_view f) {
  static const std::set<std::string_view> times = {"create_time", "start_time",  "update_time",
                                                   "stop_time",   "queued_time", "dispatch_time"};
  return times.count(f) > 0;
}

namespace {
// Writes a JSON value for a stored field: integers and times as numbers, the rest as strings.
// A value that does not parse as its declared type is kept as a string rather than dropped.
boost::json::value field_value(const std::string& name, const std::string& v, bool integer_times) {
  if (name == "sites") {
    boost::json::array sites;
    for (const auto& site : split(v, ','))
      if (site != pinned_sites) sites.emplace_back(site);  // pinned: the howfig says where
    return sites;
  }
  if (name == "after" || name == "after_any") {
    // Stored as "12,13": a list of job IDs. A malformed list is kept as its text.
    boost::json::array ids;
    for (const auto& part : split(v, ',')) {
      if (part.empty() || part.size() > 18 || part.find_first_not_of("0123456789") != std::string::npos)
        return boost::json::string(v);
      ids.push_back(std::stoll(part));
    }
    return ids;
  }
  if (is_integer_field(name)) {
    try {
      std::size_t used = 0;
      long long n = std::stoll(v, &used);
      if (used == v.size()) return n;
    } catch (...) {
    }
  } else if (is_time_field(name)) {
    try {
      std::size_t used = 0;
      double d = std::stod(v, &used);
      // Only finite values within long long's range are numbers (casting NaN or 1e300 is
      // undefined behaviour; found by fuzz/config_strings.cpp).
      if (used == v.size() && std::isfinite(d) && std::fabs(d) < 9.2e18) {
        if (integer_times) return static_cast<long long>(std::floor(d));
        return d;
      }
    } catch (...) {
    }
  }
  return boost::json::string(v);
}
}  // namespace

boost::json::object job_to_json(const job_record& r) {
  boost::json::object o;
  for (const auto& name : job_field_order()) {
    auto it = r.find(name);
    if (it == r.end() || it->second.empty()) continue;
    o[name] = field_value(name, it->second, false);
  }
  return o;
}

namespace {
// Python json.dumps string escaping with ensure_ascii=True. Invalid UTF-8 becomes U+FFFD first
// (found by fuzz/config_strings.cpp: bytes like 0xFF used to decode into a bogus surrogate pair,
// and the file was no longer JSON), so the decoder below only sees well-formed sequences.
void python_json_string(std::string& out, std::string_view raw) {
  const std::string clean = sanitize_utf8(raw);
  const std::string_view s = clean;
  out += '"';
  for (std::size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    char buf[16];
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (c < 0x20 || c == 0x7f) {  // Python escapes DEL too (only ' '..'~' stay literal)
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      // Decode one UTF-8 sequence; invalid bytes become U+FFFD.
      unsigned cp = 0xFFFD;
      int len = (c >= 0xF0) ? 4 : (c >= 0xE0) ? 3 : (c >= 0xC0) ? 2 : 1;
      if (len > 1 && i + len <= s.size()) {
        cp = c & (0xFF >> (len + 1));
        bool ok = true;
        for (int k = 1; k < len; ++k) {
          unsigned char cc = static_cast<unsigned char>(s[i + k]);
          if ((cc & 0xC0) != 0x80) ok = false;
          cp = (cp << 6) | (cc & 0x3F);
        }
        if (ok) i += len - 1;
        else cp = 0xFFFD;
      }
      if (cp >= 0x10000) {
        cp -= 0x10000;
        std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
      } else {
        std::snprintf(buf, sizeof buf, "\\u%04x", cp);
      }
      out += buf;
    }
  }
  out += '"';
}
}  // namespace

namespace {
// The field of DESCprod's jmap at k (0..17) that `r` has, if any. DESCprod's jmap left out None,
// not empty strings: an empty howfig or config stays, as "".
const std::pair<const std::string, std::string>* descprod_field(const job_record& r, std::size_t k) {
  const auto& name = job_field_order()[k];
  auto it = r.find(name);
  if (it == r.end()) return nullptr;
  if (it->second.empty() && name != "howfig" && name != "config") return nullptr;
  return &*it;
}
constexpr std::size_t descprod_field_count = 18;
}  // namespace

boost::json::object descprod_job_map(const job_record& r) {
  boost::json::object o;
  for (std::size_t k = 0; k < descprod_field_count; ++k)
    if (const auto* f = descprod_field(r, k)) o[f->first] = field_value(f->first, f->second, true);
  return o;
}

std::string descprod_config_json(const job_record& r) {
  std::string out = "{";
  bool first = true;
  for (std::size_t k = 0; k < descprod_field_count; ++k) {
    const auto* f = descprod_field(r, k);
    if (!f) continue;
    out += first ? "\n  " : ",\n  ";
    first = false;
    python_json_string(out, f->first);
    out += ": ";
    auto v = field_value(f->first, f->second, true);
    if (v.is_int64()) out += std::to_string(v.as_int64());
    else python_json_string(out, f->second);
  }
  out += first ? "}" : "\n}";
  return out;
}

}  // namespace descprod
