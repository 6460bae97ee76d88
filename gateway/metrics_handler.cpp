// GET /metrics: reads the service's state from Redis in one pipeline and renders it with this
// gateway's own state and request metrics (metrics.hpp). Cost per scrape: a few O(1) reads
// (HGETALL of two small hashes, two ZCARDs, SMEMBERS of the live pilots and one HGET per pilot)
// and one bounded XREVRANGE of the last minute of the global event stream (at most
// finished_scan entries). Nothing scans the keyspace: the worker count comes from the daemon's
// stats, and job counts from the hash the store's scripts keep.
//
// GCC 12 coroutine rules (docs/building.md#conventions): commands are built by the plain helpers at the top.
#include <charconv>

#include "core/job.hpp"
#include "core/keys.hpp"
#include "core/log.hpp"
#include "gateway/handler_detail.hpp"
#include "gateway/metrics.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace descprod::gateway::detail {

namespace {

// Global-stream entries looked at for descprod_jobs_finished_last_minute.
constexpr std::size_t finished_scan = 10000;
// Live pilots whose state is read (the set holds at most pilots.max of them in practice).
constexpr std::size_t max_pilots = 1000;

std::vector<std::vector<std::string>> snapshot_commands(const keys& k, double now_s) {
  long long since_ms = static_cast<long long>((now_s - 60.0) * 1000.0);
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(redis_cmd("HGETALL", k.jobs_by_state()));
  cmds.push_back(redis_cmd("ZCARD", k.queue()));
  cmds.push_back(redis_cmd("ZCARD", k.leases()));
  cmds.push_back(redis_cmd("HGETALL", k.daemon_stats()));
  cmds.push_back(redis_cmd("SMEMBERS", k.pilots()));
  cmds.push_back(redis_cmd("XREVRANGE", k.events(), "+", std::to_string(since_ms), "COUNT",
                           std::to_string(finished_scan)));
  return cmds;
}

// Fills `s` from the replies of snapshot_commands; returns the pilot IDs whose state to read.
std::vector<std::string> apply_snapshot(metrics::service_snapshot& s, const std::vector<redis_reply>& r) {
  auto counts = record_from_reply(r.at(0));
  if (counts.count("_rebuild_upto")) {
    s.jobs_recounting = true;
  } else if (counts.count("ready")) {
    std::map<std::string, long long> by_state;
    for (const auto& [k, v] : counts) {
      if (k.rfind('_', 0) == 0) continue;
      long long n = 0;
      std::from_chars(v.data(), v.data() + v.size(), n);
      by_state[k] = n;
    }
    s.jobs_by_state = std::move(by_state);
  }
  if (!r.at(1).is_error()) s.queue_depth = r.at(1).as_integer();
  if (!r.at(2).is_error()) s.leases = r.at(2).as_integer();
  auto daemon = record_from_reply(r.at(3));
  if (!daemon.empty()) s.daemon_stats = std::move(daemon);
  std::vector<std::string> pilots;
  for (const auto& e : r.at(4).elements) {
    if (pilots.size() >= max_pilots) break;
    pilots.push_back(e.as_string());
  }
  if (!r.at(5).is_error()) {
    long long finished = 0;
    for (const auto& e : parse_stream_events(r.at(5))) {
      auto st = parse_job_state(e.state);
      if (e.type == "transition" && st && is_terminal(*st)) ++finished;
    }
    s.finished_last_minute = finished;
    s.finished_last_minute_truncated = r.at(5).elements.size() >= finished_scan;
  }
  return pilots;
}

std::vector<std::vector<std::string>> pilot_state_commands(const keys& k,
                                                           const std::vector<std::string>& ids) {
  std::vector<std::vector<std::string>> cmds;
  for (const auto& id : ids) cmds.push_back(redis_cmd("HGET", k.pilot(id), "state"));
  return cmds;
}

std::map<std::string, long long> pilot_counts(const std::vector<redis_reply>& replies) {
  std::map<std::string, long long> out;
  for (const auto& r : replies) {
    if (r.is_nil() || r.is_error()) continue;  // ended meanwhile (or malformed): not alive
    ++out[r.as_string()];
  }
  return out;
}

std::string render(const gateway_context& ctx, const metrics::service_snapshot& s) {
  metrics::exposition out;
  metrics::render_service(out, s);
  if (ctx.gateway_state) metrics::render_gateway(out, ctx.gateway_state());
  if (ctx.http_metrics) ctx.http_metrics->render(out);
  return out.text();
}

response text_response(std::string body) {
  response res(http::status::ok, 11);
  res.set(http::field::server, "descprod-gateway/" DESCPROD_VERSION);
  res.set(http::field::content_type, metrics::content_type);
  res.set(http::field::cache_control, "no-store");
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

}  // namespace

net::awaitable<response> metrics_response(gateway_context& ctx) {
  metrics::service_snapshot snap;
  snap.now_s = now_s(ctx);
  bool failed = false;
  if (ctx.redis && ctx.redis->connected()) {
    try {
      auto replies =
          co_await ctx.redis->async_pipeline(snapshot_commands(ctx.jobs->redis_keys(), snap.now_s));
      auto pilots = apply_snapshot(snap, replies);
      auto states = co_await ctx.redis->async_pipeline(pilot_state_commands(ctx.jobs->redis_keys(), pilots));
      snap.pilots_by_state = pilot_counts(states);
      snap.redis_up = true;
    } catch (const boost::system::system_error& e) {
      log::warn("metrics: Redis unavailable error={}", e.code().message());
      failed = true;
    }
  }
  if (failed) {
    if (ctx.on_redis_failure) ctx.on_redis_failure();
    double now = snap.now_s;
    snap = metrics::service_snapshot();
    snap.now_s = now;
  }
  co_return text_response(render(ctx, snap));
}

}  // namespace descprod::gateway::detail
