// The Prometheus exposition renderer, the request histogram and the rendering of the service's
// state (see metrics.hpp).
#include "gateway/metrics.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "core/job.hpp"
#include "gateway/api.hpp"
#include "gateway/web.hpp"

namespace descprod::gateway::metrics {

namespace {

std::optional<double> parse_double(const std::string& s) {
  if (s.empty()) return std::nullopt;
  double d = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
  if (ec != std::errc() || p != s.data() + s.size() || !std::isfinite(d)) return std::nullopt;
  return d;
}

// A field name usable in a metric name: [a-z0-9_], 1..64 bytes, not starting with a digit.
bool simple_name(const std::string& s) {
  if (s.empty() || s.size() > 64 || (s[0] >= '0' && s[0] <= '9')) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

// The daemon's counters (P daemon:stats field → metric name without the prefix, help).
struct daemon_field {
  const char* field;
  const char* name;
  const char* help;
};

constexpr daemon_field daemon_counters[] = {
    {"leased_total", "descprod_daemon_jobs_leased_total", "Jobs the daemon leased to workers."},
    {"finished_total", "descprod_daemon_jobs_finished_total",
     "Jobs whose finished report the daemon applied (any terminal state)."},
    {"requeued_total", "descprod_daemon_jobs_requeued_total",
     "Jobs the daemon put back to ready (lost workers, restarts)."},
    {"lease_expiries_total", "descprod_daemon_lease_expiries_total",
     "Leases that expired because their worker went silent."},
    {"stale_events_total", "descprod_daemon_stale_events_total",
     "Worker reports refused as stale (old attempt or another worker)."},
    {"malformed_total", "descprod_daemon_malformed_messages_total", "ZeroMQ messages dropped as malformed."},
    {"handed_back_total", "descprod_daemon_jobs_handed_back_total", "Jobs handed back by draining workers."},
    {"walltime_refusals_total", "descprod_daemon_walltime_refusals_total",
     "Jobs not started on a worker because they would outrun its Slurm allocation."},
};

constexpr daemon_field daemon_gauges[] = {
    {"queue_depth", "descprod_daemon_queue_depth", "Ready jobs in the daemon's in-memory queue."},
    {"workers", "descprod_daemon_workers", "Workers connected to the daemon."},
    {"slots", "descprod_daemon_slots", "Job slots of the connected workers."},
    {"busy_slots", "descprod_daemon_busy_slots", "Job slots in use."},
    {"workers_unhealthy", "descprod_daemon_workers_unhealthy",
     "Connected workers that report themselves unhealthy (e.g. cannot create run directories) and get no jobs."},
    {"outbox", "descprod_daemon_outbox", "Redis writes the daemon holds while Redis is unreachable."},
};

}  // namespace

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string escape_help(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  // Shortest form that reads back exactly; fixed notation where it stays short (0.0005, not
  // 5e-04).
  char buf[400];
  auto fmt = std::fabs(v) >= 1e-4 ? std::chars_format::fixed : std::chars_format::general;
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v, fmt);
  if (ec != std::errc()) return "NaN";
  return std::string(buf, p);
}

void exposition::family(std::string_view name, std::string_view type, std::string_view help) {
  text_ += "# HELP ";
  text_ += name;
  text_ += ' ';
  text_ += escape_help(help);
  text_ += "\n# TYPE ";
  text_ += name;
  text_ += ' ';
  text_ += type;
  text_ += '\n';
}

void exposition::sample(std::string_view name, const labels& l, double value) {
  text_ += name;
  if (!l.empty()) {
    text_ += '{';
    bool first = true;
    for (const auto& [k, v] : l) {
      if (!first) text_ += ',';
      first = false;
      text_ += k;
      text_ += "=\"";
      text_ += escape_label_value(v);
      text_ += '"';
    }
    text_ += '}';
  }
  text_ += ' ';
  text_ += format_value(value);
  text_ += '\n';
}

void exposition::single(std::string_view name, std::string_view type, std::string_view help, double value) {
  family(name, type, help);
  sample(name, value);
}

// ---- HTTP request metrics ---------------------------------------------------------------

std::string_view method_label(std::string_view method) {
  for (std::string_view m : {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
    if (method == m) return m;
  return "OTHER";
}

std::string_view status_class(unsigned status) {
  switch (status / 100) {
    case 1: return "1xx";
    case 2: return "2xx";
    case 3: return "3xx";
    case 4: return "4xx";
    case 5: return "5xx";
    default: return "other";
  }
}

void http_metrics::observe(std::string_view method, std::string_view route, unsigned status, double seconds) {
  if (!(seconds >= 0)) seconds = 0;
  auto& s = series_[{std::string(method_label(method)), std::string(route)}];
  for (std::size_t i = 0; i < duration_buckets.size(); ++i) {
    if (seconds <= duration_buckets[i]) {
      ++s.counts[i];
      break;
    }
  }
  ++s.count;
  s.sum += seconds;
  ++by_code_[std::string(status_class(status))];
}

std::uint64_t http_metrics::requests() const {
  std::uint64_t n = 0;
  for (const auto& [k, v] : by_code_) n += v;
  return n;
}

void http_metrics::render(exposition& out) const {
  out.family("descprod_http_request_duration_seconds", "histogram",
             "Time from reading a request's header to writing its answer (an event stream: its "
             "header), by method and route class.");
  for (const auto& [key, s] : series_) {
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < duration_buckets.size(); ++i) {
      cumulative += s.counts[i];
      out.sample("descprod_http_request_duration_seconds_bucket",
                 {{"method", key.first}, {"route", key.second}, {"le", format_value(duration_buckets[i])}},
                 static_cast<double>(cumulative));
    }
    out.sample("descprod_http_request_duration_seconds_bucket",
               {{"method", key.first}, {"route", key.second}, {"le", "+Inf"}}, static_cast<double>(s.count));
    out.sample("descprod_http_request_duration_seconds_sum", {{"method", key.first}, {"route", key.second}},
               s.sum);
    out.sample("descprod_http_request_duration_seconds_count", {{"method", key.first}, {"route", key.second}},
               static_cast<double>(s.count));
  }
  out.family("descprod_http_requests_total", "counter",
             "HTTP requests answered by this gateway, by status class.");
  for (const auto& [code, n] : by_code_)
    out.sample("descprod_http_requests_total", {{"code", code}}, static_cast<double>(n));
}

// ---- the service's state ------------------------------------------------------------------

void render_service(exposition& out, const service_snapshot& s) {
  out.single("descprod_redis_up", "gauge", "Whether this scrape could read Redis (1) or not (0).",
             s.redis_up ? 1 : 0);
  if (s.jobs_by_state) {
    out.family("descprod_jobs", "gauge",
               "Jobs by state (the hash <prefix>stats:jobs_by_state, kept by the store's scripts).");
    for (auto st : all_job_states()) {
      std::string name(to_string(st));
      auto it = s.jobs_by_state->find(name);
      out.sample("descprod_jobs", {{"state", name}},
                 static_cast<double>(it == s.jobs_by_state->end() ? 0 : it->second));
    }
  }
  if (s.redis_up)
    out.single("descprod_jobs_recount_running", "gauge",
               "1 while the job counts by state are being rebuilt (descprod_jobs is then absent).",
               s.jobs_recounting ? 1 : 0);
  if (s.queue_depth)
    out.single("descprod_queue_depth", "gauge", "Ready jobs queued (ZCARD <prefix>queue).",
               static_cast<double>(*s.queue_depth));
  if (s.leases)
    out.single("descprod_leases", "gauge",
               "Jobs leased to a worker or a claim: dispatched or running (ZCARD <prefix>leases).",
               static_cast<double>(*s.leases));
  if (s.finished_last_minute) {
    out.single("descprod_jobs_finished_last_minute", "gauge",
               "Jobs that reached a terminal state in the last 60 s (from the <prefix>events "
               "stream; for rates prefer rate(descprod_daemon_jobs_finished_total[5m])).",
               static_cast<double>(*s.finished_last_minute));
    out.single("descprod_jobs_finished_last_minute_truncated", "gauge",
               "1 when the events of the last minute were more than one read looks at, so "
               "descprod_jobs_finished_last_minute is a lower bound.",
               s.finished_last_minute_truncated ? 1 : 0);
  }
  if (s.redis_up) {
    bool up = false;
    if (s.daemon_stats) {
      const auto& d = *s.daemon_stats;
      auto get = [&](const char* f) -> std::optional<double> {
        auto it = d.find(f);
        if (it == d.end()) return std::nullopt;
        return parse_double(it->second);
      };
      auto updated = get("updated");
      double age = updated ? s.now_s - *updated : std::nan("");
      up = updated && age <= daemon_stats_fresh_s;
      if (updated)
        out.single("descprod_daemon_stats_age_seconds", "gauge",
                   "Seconds since the daemon last wrote <prefix>daemon:stats (every heartbeat).",
                   age < 0 ? 0 : std::round(age * 1000) / 1000);
      for (const auto& f : daemon_counters)
        if (auto v = get(f.field)) out.single(f.name, "counter", f.help, *v);
      for (const auto& f : daemon_gauges)
        if (auto v = get(f.field)) out.single(f.name, "gauge", f.help, *v);
      // Fields added to the daemon later: descprod_daemon_<field>, a counter when it ends in
      // _total. Field names come from the daemon (never from users); odd ones are skipped.
      for (const auto& [field, text] : d) {
        if (field == "updated" || !simple_name(field)) continue;
        bool known = false;
        for (const auto& f : daemon_counters) known = known || field == f.field;
        for (const auto& f : daemon_gauges) known = known || field == f.field;
        auto v = parse_double(text);
        if (known || !v) continue;
        bool counter = field.size() > 6 && field.compare(field.size() - 6, 6, "_total") == 0;
        out.single("descprod_daemon_" + field, counter ? "counter" : "gauge",
                   "The daemon's " + field + " (<prefix>daemon:stats).", *v);
      }
    }
    out.single("descprod_daemon_up", "gauge",
               "1 when the daemon wrote <prefix>daemon:stats within the last 30 s.", up ? 1 : 0);
  }
  if (s.pilots_by_state) {
    out.family("descprod_pilots", "gauge", "Slurm pilots alive (the set <prefix>pilots), by state.");
    for (const char* st : {"submitted", "running"}) {
      auto it = s.pilots_by_state->find(st);
      out.sample("descprod_pilots", {{"state", st}},
                 static_cast<double>(it == s.pilots_by_state->end() ? 0 : it->second));
    }
    for (const auto& [st, n] : *s.pilots_by_state) {
      if (st == "submitted" || st == "running") continue;
      out.sample("descprod_pilots", {{"state", st}}, static_cast<double>(n));
    }
  }
}

void render_gateway(exposition& out, const gateway_snapshot& g) {
  out.family("descprod_build_info", "gauge", "The gateway's version (always 1).");
  out.sample("descprod_build_info", {{"version", g.version}}, 1);
  out.single("descprod_gateway_start_time_seconds", "gauge",
             "When this gateway process started (Unix epoch seconds).", g.start_time_s);
  out.single("descprod_gateway_connections", "gauge", "Open HTTP connections.",
             static_cast<double>(g.connections));
  out.single("descprod_gateway_redis_connected", "gauge",
             "Whether the gateway's request connection to Redis is up.", g.redis_up ? 1 : 0);
  out.single("descprod_gateway_daemon_ready", "gauge",
             "Whether the daemon has welcomed this gateway (as GET /readyz).", g.daemon_ready ? 1 : 0);
  out.single("descprod_gateway_event_tail_connected", "gauge",
             "Whether the event tail (Server-Sent Events) is connected to Redis.", g.event_tail_up ? 1 : 0);
  out.single("descprod_gateway_event_streams", "gauge", "Open Server-Sent Event streams.",
             static_cast<double>(g.event_streams));
  out.single("descprod_gateway_events_delivered_total", "counter",
             "Job events delivered to at least one event stream.", static_cast<double>(g.events_delivered));
  out.single("descprod_gateway_event_streams_dropped_total", "counter",
             "Event streams closed because their client did not keep up.",
             static_cast<double>(g.slow_stream_closes));
}

}  // namespace descprod::gateway::metrics
