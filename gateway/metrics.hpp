// GET /metrics (docs/operators.md#metrics): the Prometheus text exposition format 0.0.4, and the gateway's own
// HTTP request metrics. The pure parts live here (the text renderer, the route classes, the
// request histogram, and the rendering of a snapshot of the service's state read from Redis), so
// unit tests call them directly; metrics_handler.cpp reads Redis and answers the request.
//
// Every metric name starts with "descprod_". Label values are bounded: a route *class* (never a
// raw path), an HTTP method from a fixed list, a status class, a job or pilot state. No user
// name, job ID or host name is ever a label, so the page reveals nothing but aggregate numbers;
// it is served without authentication (see docs/operators.md, *Metrics*).
//
// Thread-safety: http_metrics is not synchronised. The gateway runs one io_context on one thread
// (gateway/app.cpp; the password-hashing pool never touches it), and every request is observed
// on that thread.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace descprod::gateway::metrics {

// The Content-Type of the exposition format 0.0.4.
inline constexpr std::string_view content_type = "text/plain; version=0.0.4; charset=utf-8";

using labels = std::vector<std::pair<std::string, std::string>>;

// A label value with \ " and newline escaped as the format requires.
std::string escape_label_value(std::string_view v);
// A HELP text with \ and newline escaped.
std::string escape_help(std::string_view v);
// A sample value: integers without a fraction, others in the shortest form that reads back
// exactly; +Inf, -Inf, NaN.
std::string format_value(double v);

// Builds the exposition text. Each metric family is opened once with its HELP and TYPE lines,
// and its samples follow it directly (the format wants a family's lines together).
class exposition {
 public:
  // type: "counter", "gauge", "histogram", "summary" or "untyped".
  void family(std::string_view name, std::string_view type, std::string_view help);
  void sample(std::string_view name, const labels& l, double value);
  void sample(std::string_view name, double value) { sample(name, {}, value); }
  // family + one unlabelled sample.
  void single(std::string_view name, std::string_view type, std::string_view help, double value);
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

// ---- HTTP request metrics ---------------------------------------------------------------

// The route class of a request path: api_jobs (/api/jobs), api_bulk, api_job (/api/jobs/<id>
// and its sub-routes), events (/api/events), api_account (register, login, logout, session,
// tokens), api_admin, api_other (/api/version and unknown /api/ paths), api_legacy (DESCprod's
// /get_job, /update_job, /add_child_job), health (/healthz,
// /readyz), metrics, static (/static/*, /favicon.ico), pages (the web pages and their forms),
// other (anything else).
std::string_view route_class(std::string_view path);
// GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS as they are; anything else "OTHER".
std::string_view method_label(std::string_view method);
// "1xx" .. "5xx" ("other" outside 100..599).
std::string_view status_class(unsigned status);

// Upper bounds (s) of the request duration histogram's buckets (+Inf is implied).
inline constexpr std::array<double, 12> duration_buckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                            0.05,   0.1,   0.25,   0.5,   1,    2.5};

// descprod_http_request_duration_seconds{method,route} (histogram) and
// descprod_http_requests_total{code} (counter, by status class) of one gateway process.
class http_metrics {
 public:
  // One answered request: its method, route class (route_class()), status and duration (from
  // the request's header read to its answer written; for an event stream, to its header).
  void observe(std::string_view method, std::string_view route, unsigned status, double seconds);
  void render(exposition& out) const;
  std::uint64_t requests() const;

 private:
  struct series {
    std::array<std::uint64_t, duration_buckets.size()> counts{};  // per bucket, not cumulative
    std::uint64_t count = 0;
    double sum = 0;
  };
  std::map<std::pair<std::string, std::string>, series> series_;  // (method, route)
  std::map<std::string, std::uint64_t> by_code_;                  // status class → answers
};

// ---- the service's state ------------------------------------------------------------------

// What one scrape read from Redis; a missing part is not exported.
struct service_snapshot {
  bool redis_up = false;
  // P stats:jobs_by_state (nullopt: absent, or a recount is under way).
  std::optional<std::map<std::string, long long>> jobs_by_state;
  bool jobs_recounting = false;
  std::optional<long long> queue_depth;  // ZCARD P queue
  std::optional<long long> leases;       // ZCARD P leases
  // Jobs that reached a terminal state in the last minute (the P events stream) and whether the
  // bounded read saw the whole minute.
  std::optional<long long> finished_last_minute;
  bool finished_last_minute_truncated = false;
  // P daemon:stats (nullopt: absent).
  std::optional<std::map<std::string, std::string>> daemon_stats;
  std::optional<std::map<std::string, long long>> pilots_by_state;  // the live pilots (P pilots)
  double now_s = 0;
};

// The daemon's stats are "up" when written at most this long ago.
inline constexpr double daemon_stats_fresh_s = 30;

// Appends the snapshot's metrics. Job states with no count are exported as 0 (every state of
// core/job.hpp appears); daemon counters become counters, the rest gauges.
void render_service(exposition& out, const service_snapshot& s);

// The gateway process's own gauges.
struct gateway_snapshot {
  std::string version;
  double start_time_s = 0;
  std::size_t connections = 0;
  bool redis_up = false;
  bool daemon_ready = false;
  bool event_tail_up = false;
  std::size_t event_streams = 0;
  std::size_t events_delivered = 0;
  std::size_t slow_stream_closes = 0;
};
void render_gateway(exposition& out, const gateway_snapshot& g);

}  // namespace descprod::gateway::metrics
