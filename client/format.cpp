// The client's text formats (see format.hpp). DESCprod's get_job.py printed
//   for key in JobData.data_names: if key in jdat: val = jdat[key]
//       if key[-5:] == '_time': val = f"{descprod.sdate(val)} UTC"
//       print(f"{key:>16}: {val}")
// and this file keeps exactly that, with this project's added fields after DESCprod's 18.
#include "client/format.hpp"

#include <algorithm>
#include <cmath>
#include <ctime>

#include <spdlog/fmt/fmt.h>

#include "client/common.hpp"
#include "client/terminal_text.hpp"
#include "core/job.hpp"
#include "workers/run_files.hpp"

namespace descprod::client {

namespace {
constexpr std::size_t descprod_field_count = 18;

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Python's str() of a float, close enough for the few non-time numbers that may carry one.
std::string number_text(double d) {
  if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 1e16) return fmt::format("{:.1f}", d);
  return fmt::format("{}", d);
}

std::string plain_value(const boost::json::value& v) {
  if (v.is_string()) return std::string(v.as_string());
  if (v.is_int64()) return std::to_string(v.as_int64());
  if (v.is_uint64()) return std::to_string(v.as_uint64());
  if (v.is_double()) return number_text(v.as_double());
  if (v.is_bool()) return v.as_bool() ? "True" : "False";
  if (v.is_null()) return "None";
  return boost::json::serialize(v);
}

std::string json_quoted(std::string_view s) { return boost::json::serialize(boost::json::string(s)); }
}  // namespace

std::string utc_time_text(double epoch_seconds) {
  std::time_t t = static_cast<std::time_t>(std::floor(epoch_seconds));
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return std::string(buf) + " UTC";
}

std::string field_value_text(std::string_view key, const boost::json::value& v, time_style style) {
  if (ends_with(key, "_time")) {
    if (auto d = json_value_number(v)) {
      if (style == time_style::utc) return utc_time_text(*d);
      return std::to_string(static_cast<long long>(std::floor(*d)));
    }
  }
  return plain_value(v);
}

std::vector<std::string> job_field_lines(const boost::json::object& job, time_style style,
                                         std::string_view prefix, bool all) {
  std::vector<std::string> lines;
  auto line = [&](std::string_view key, const std::string& val) {
    // Values are the server's (a job's progress, config, host, ...): never raw controls.
    lines.push_back(fmt::format("{}{:>16}: {}", prefix, key, terminal_safe(val)));
  };
  const auto& order = job_field_order();
  const std::size_t shown = all ? order.size() : std::min<std::size_t>(order.size(), 18);
  for (std::size_t i = 0; i < shown; ++i) {
    const auto& key = order[i];
    auto it = job.find(key);
    if (it != job.end() && !it->value().is_null()) {
      line(key, field_value_text(key, it->value(), style));
    } else if (key == "howfig" && job.contains("jobtype")) {
      line(key, "");
    }
  }
  if (auto it = job.find("children"); all && it != job.end() && it->value().is_object())
    line("children", children_summary(it->value().as_object()));
  return lines;
}

std::string children_summary(const boost::json::object& children) {
  long long total = json_int(children, "total").value_or(0);
  std::string out = std::to_string(total);
  std::string parts;
  // States in the order a job goes through them, then any the gateway adds.
  std::vector<std::string> names;
  for (auto s : all_job_states()) names.emplace_back(to_string(s));
  for (const auto& kv : children) {
    std::string k(kv.key());
    if (k != "total" && std::find(names.begin(), names.end(), k) == names.end()) names.push_back(k);
  }
  for (const auto& name : names) {
    auto n = json_int(children, name);
    if (!n || *n == 0) continue;
    if (!parts.empty()) parts += ", ";
    parts += name + " " + std::to_string(*n);
  }
  if (!parts.empty()) out += " (" + parts + ")";
  return out;
}

std::string outjson_text(const boost::json::object& job) {
  std::string out = "{";
  bool first = true;
  const auto& order = job_field_order();
  for (std::size_t i = 0; i < descprod_field_count && i < order.size(); ++i) {
    const auto& key = order[i];
    auto it = job.find(key);
    std::string val;
    if (it != job.end() && !it->value().is_null()) val = field_value_text(key, it->value(), time_style::utc);
    else if (key == "howfig" && job.contains("jobtype")) val = "";
    else continue;
    out += first ? "\n" : ",\n";
    first = false;
    // The key right-aligned as DESCprod's listings align it ({key:>16}), quoted: still JSON.
    std::string quoted_key = json_quoted(key);
    if (quoted_key.size() < 18) out.append(18 - quoted_key.size(), ' ');
    out += quoted_key + ": " + json_quoted(val);
  }
  out += first ? "}\n" : "\n}\n";
  return out;
}

std::string duration_text(double seconds) {
  if (seconds <= 0.0) return "0:00";
  long long rem = static_cast<long long>(seconds);
  long long h = rem / 3600;
  rem -= h * 3600;
  long long m = rem / 60;
  long long s = rem - m * 60;
  if (h > 0) return fmt::format("{}:{:02}:{:02}", h, m, s);
  return fmt::format("{}:{:02}", m, s);
}

std::string job_duration(const boost::json::object& job, double now) {
  auto start = json_number(job, "start_time");
  if (!start) return "";
  double stop = json_number(job, "stop_time").value_or(now);
  return duration_text(stop - *start);
}

std::string cut_utf8(std::string_view s, std::size_t width) {
  if (s.size() <= width) return std::string(s);
  std::size_t n = width;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return std::string(s.substr(0, n));
}

std::string render_table(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& raw_rows, std::size_t max_width) {
  // Cells hold the server's text: made terminal-safe before they are measured and printed.
  std::vector<std::vector<std::string>> rows;
  rows.reserve(raw_rows.size());
  for (const auto& r : raw_rows) {
    std::vector<std::string> safe;
    safe.reserve(r.size());
    for (const auto& cell : r) safe.push_back(terminal_safe(cell));
    rows.push_back(std::move(safe));
  }
  std::vector<std::size_t> widths(header.size(), 0);
  auto measure = [&](const std::vector<std::string>& r) {
    for (std::size_t i = 0; i < r.size() && i < widths.size(); ++i)
      widths[i] = std::max(widths[i], r[i].size());
  };
  measure(header);
  for (const auto& r : rows) measure(r);
  std::string out;
  auto emit = [&](const std::vector<std::string>& r) {
    std::string line;
    for (std::size_t i = 0; i < widths.size(); ++i) {
      std::string cell = i < r.size() ? r[i] : std::string();
      line += cell;
      if (i + 1 < widths.size()) line += std::string(widths[i] - cell.size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    if (max_width > 0) line = cut_utf8(line, max_width);
    out += line + "\n";
  };
  emit(header);
  for (const auto& r : rows) emit(r);
  return out;
}

std::string progress_message(std::string_view progress) {
  static const char* const prefixes[] = {"Ready.",   "Running.",   "Done.", "Failed.",
                                         "Timeout.", "Cancelled.", "Lost.", "Created."};
  for (const char* p : prefixes) {
    std::string_view pv(p);
    if (progress.substr(0, pv.size()) == pv) {
      auto rest = progress.substr(pv.size());
      if (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
      return std::string(rest);
    }
  }
  constexpr std::string_view sig = "Process received signal ";
  if (progress.substr(0, sig.size()) == sig) {
    auto dot = progress.find('.', sig.size());
    if (dot != std::string_view::npos) {
      auto rest = progress.substr(dot + 1);
      if (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
      return std::string(rest);
    }
  }
  return std::string(progress);
}

std::optional<done_total> message_counts(std::string_view message) {
  auto c = workers::parse_progress_counts(message);
  if (!c) return std::nullopt;
  return done_total{c->done, c->total};
}

std::string watch_line(long long id, std::string_view state, std::optional<done_total> counts,
                       std::string_view message, std::size_t width) {
  constexpr int bar_cells = 24;
  std::string line = fmt::format("{:>8} {:<10}", id, terminal_safe(state));
  if (counts && counts->total > 0) {
    long long done = std::min(std::max(counts->done, 0LL), counts->total);
    int filled = static_cast<int>(done * bar_cells / counts->total);
    int pct = static_cast<int>(done * 100 / counts->total);
    line += " [" + std::string(filled, '#') + std::string(bar_cells - filled, '-') + "] " +
            fmt::format("{:>3}% {}/{}", pct, counts->done, counts->total);
    // The message repeats the counts at its start; show only what follows them.
    auto close = message.find(']');
    if (!message.empty() && message.front() == '[' && close != std::string_view::npos) {
      message = message.substr(close + 1);
      while (!message.empty() && message.front() == ' ') message.remove_prefix(1);
    }
  }
  if (!message.empty()) line += " " + terminal_safe(message);
  while (!line.empty() && line.back() == ' ') line.pop_back();
  if (width > 0) line = cut_utf8(line, width);
  return line;
}

}  // namespace descprod::client
