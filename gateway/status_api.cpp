// GET /api/sites (docs/api.md): the sites' status as the daemon last polled it.
// GET /api/status (docs/api.md): the service's figures of the last hour for the status plots of
// /status and /admin, read from the daemon's samples (<prefix>stats:samples, written by
// daemon/stats_sampler.cpp) and its current gauges (<prefix>daemon:stats, rewritten every
// heartbeat). Any logged-in user may read it: aggregate numbers only, no user names, no job IDs.
// One pipeline of two reads; the JSON is built by the plain functions below (GCC 12 coroutine
// rules, docs/building.md#conventions).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/keys.hpp"
#include "core/redis.hpp"
#include "gateway/handler_detail.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // see handler.cpp
#endif

namespace descprod::gateway::detail {

namespace {

namespace json = boost::json;

// The window the plots show, and the most samples read (65 minutes at the shortest interval, 1 s).
constexpr double window_s = 3600;
constexpr int max_samples = 4000;
// The sampling interval reported when there is no sample yet (the daemon's default).
constexpr long long default_period_s = 10;

// The counts (per interval) and the gauges (at the sample's time) of a sample, in the order of
// the answer's arrays.
constexpr std::string_view count_fields[] = {"done", "failed", "cancelled"};
constexpr std::string_view gauge_fields[] = {"queue", "running", "workers", "slots", "busy"};

double to_number(std::string_view s) {
  std::string text(s);  // strtod needs a terminated string
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  return end == text.c_str() || !std::isfinite(v) ? 0.0 : v;
}

// "1795625968123-0" → 1795625968.123 (the stream ID's milliseconds); nullopt when malformed.
std::optional<double> id_time(std::string_view id) {
  long long ms = 0;
  auto [p, ec] = std::from_chars(id.data(), id.data() + id.size(), ms);
  if (ec != std::errc() || p == id.data()) return std::nullopt;
  return static_cast<double>(ms) / 1000.0;
}

std::vector<std::vector<std::string>> status_reads(const keys& k, double now) {
  const long long since_ms = static_cast<long long>((now - window_s) * 1000.0);
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(redis_cmd("XRANGE", k.stats_samples(), std::to_string(since_ms), "+", "COUNT",
                           std::to_string(max_samples)));
  cmds.push_back(redis_cmd("HGETALL", k.daemon_stats()));
  return cmds;
}

// A flat [field, value, field, value, ...] reply's value of `name` ("" when absent).
std::string_view pair_value(const redis_reply& flat, std::string_view name) {
  const auto& e = flat.elements;
  for (std::size_t i = 0; i + 1 < e.size(); i += 2)
    if (e[i].str == name) return e[i + 1].str;
  return {};
}

// Whatever Redis holds (an operator may have edited it): not finite → 0; integers as integers.
json::value integer_or_number(double v) {
  if (!std::isfinite(v)) return json::value(0);
  if (std::fabs(v) < 9e15 && v == std::trunc(v)) return json::value(static_cast<long long>(v));
  return json::value(v);
}

json::object status_json(const std::vector<redis_reply>& replies, double now) {
  json::array t, interval;
  json::array counts[std::size(count_fields)];
  json::array gauges[std::size(gauge_fields)];
  double totals[std::size(count_fields)] = {};
  long long period = default_period_s;
  if (!replies.empty() && !replies[0].is_error()) {
    for (const auto& entry : replies[0].elements) {
      if (entry.elements.size() != 2) continue;
      auto when = id_time(entry.elements[0].str);
      if (!when) continue;
      const auto& fields = entry.elements[1];
      t.push_back(json::value(*when));
      interval.push_back(json::value(to_number(pair_value(fields, "interval_s"))));
      for (std::size_t i = 0; i < std::size(count_fields); ++i) {
        double v = to_number(pair_value(fields, count_fields[i]));
        totals[i] += v;
        counts[i].push_back(integer_or_number(v));
      }
      for (std::size_t i = 0; i < std::size(gauge_fields); ++i)
        gauges[i].push_back(integer_or_number(to_number(pair_value(fields, gauge_fields[i]))));
      auto p = static_cast<long long>(to_number(pair_value(fields, "period_s")));
      if (p > 0) period = p;  // the newest sample's
    }
  }
  json::object samples;
  samples["t"] = std::move(t);
  samples["interval_s"] = std::move(interval);
  for (std::size_t i = 0; i < std::size(count_fields); ++i) samples[count_fields[i]] = std::move(counts[i]);
  for (std::size_t i = 0; i < std::size(gauge_fields); ++i) samples[gauge_fields[i]] = std::move(gauges[i]);
  json::object total;
  for (std::size_t i = 0; i < std::size(count_fields); ++i)
    total[count_fields[i]] = integer_or_number(totals[i]);

  json::object out;
  out["now"] = now;
  out["window_s"] = static_cast<long long>(window_s);
  out["period_s"] = period;
  out["samples"] = std::move(samples);
  out["totals"] = std::move(total);
  // The daemon's gauges as of its last heartbeat (null when it has never written them).
  json::value current = nullptr;
  if (replies.size() > 1 && !replies[1].is_error() && !replies[1].elements.empty()) {
    const auto& h = replies[1];
    json::object cur;
    cur["time"] = to_number(pair_value(h, "updated"));
    cur["queue"] = integer_or_number(to_number(pair_value(h, "queue_depth")));
    cur["running"] = integer_or_number(to_number(pair_value(h, "running")));
    cur["workers"] = integer_or_number(to_number(pair_value(h, "workers")));
    cur["slots"] = integer_or_number(to_number(pair_value(h, "slots")));
    cur["busy"] = integer_or_number(to_number(pair_value(h, "busy_slots")));
    current = std::move(cur);
  }
  out["current"] = std::move(current);
  return out;
}

// GET /api/sites: the records of <prefix>sites:status (daemon/site_status.hpp), by name, each
// with `age_s`: how old its last good answer is (absent before any). A record that is not a
// JSON object (edited by hand) is shown as its name with status "unknown".
json::object sites_json(const redis_reply& flat, double now) {
  std::map<std::string, json::object> by_name;
  const auto& e = flat.elements;
  for (std::size_t i = 0; i + 1 < e.size(); i += 2) {
    boost::system::error_code ec;
    auto v = json::parse(e[i + 1].str, ec);
    json::object o;
    if (!ec && v.is_object()) o = std::move(v.as_object());
    o["name"] = e[i].str;
    if (!o.contains("status") || !o.at("status").is_string()) o["status"] = "unknown";
    if (auto* g = o.if_contains("good_at"); g && g->is_number())
      o["age_s"] = std::max(0.0, now - g->to_number<double>());
    by_name[e[i].str] = std::move(o);
  }
  json::array sites;
  for (auto& [name, o] : by_name) sites.push_back(std::move(o));
  json::object out;
  out["now"] = now;
  out["sites"] = std::move(sites);
  return out;
}

}  // namespace

net::awaitable<handler_result> sites_get(call& c) {
  const double now = now_s(c.ctx);
  auto reply = co_await c.ctx.redis->async_exec(redis_cmd("HGETALL", keys_of(c.ctx).site_status()));
  auto body = sites_json(reply, now);
  co_return json_answer(http::status::ok, body);
}

net::awaitable<handler_result> status_get(call& c) {
  const double now = now_s(c.ctx);
  auto cmds = status_reads(keys_of(c.ctx), now);
  auto replies = co_await c.ctx.redis->async_pipeline(std::move(cmds));
  auto body = status_json(replies, now);
  co_return json_answer(http::status::ok, body);
}

}  // namespace descprod::gateway::detail
