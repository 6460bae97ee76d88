// The daemon's samples for the status plots (stats_sampler.hpp).
#include "daemon/stats_sampler.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>

#include "core/log.hpp"
#include "core/redis.hpp"

namespace descprod {

namespace {
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// Counters only grow; a difference that would be negative (never expected) is 0.
std::uint64_t growth(std::uint64_t now, std::uint64_t then) { return now >= then ? now - then : 0; }
}  // namespace

stats_sampler::stats_sampler(daemon_context& ctx, gauges_fn gauges)
    : ctx_(ctx), gauges_(std::move(gauges)), last_(ctx.stats), last_time_(clock_type::now()) {}

stats_sample stats_sampler::make(const daemon_stats& now, const daemon_stats& last, double interval_s,
                                 const stats_gauges& gauges) {
  stats_sample s;
  s.interval_s = interval_s;
  s.done = growth(now.jobs_done, last.jobs_done);
  s.failed = growth(now.jobs_failed, last.jobs_failed);
  s.cancelled = growth(now.jobs_cancelled, last.jobs_cancelled);
  s.now = gauges;
  return s;
}

std::size_t stats_sampler::entries_kept(std::chrono::seconds period) {
  const long long every = std::max<long long>(1, period.count());
  return static_cast<std::size_t>(std::max<long long>(10, (65 * 60 + every - 1) / every));
}

std::vector<std::string> stats_sampler::xadd_command(const keys& k, const stats_sample& s,
                                                     std::chrono::seconds period, std::size_t keep) {
  auto u = [](std::uint64_t v) { return std::to_string(v); };
  return redis_cmd("XADD", k.stats_samples(), "MAXLEN", "~", std::to_string(keep), "*", "interval_s",
                   fmt_double(s.interval_s), "period_s", std::to_string(period.count()), "done", u(s.done),
                   "failed", u(s.failed), "cancelled", u(s.cancelled), "queue", u(s.now.queue), "running",
                   u(s.now.running), "workers", u(s.now.workers), "slots", u(s.now.slots), "busy",
                   u(s.now.busy));
}

bool stats_sampler::sample(clock_type::time_point now) {
  if (!ctx_.redis_ready()) return false;  // the counts go into the next sample
  const double interval_s = std::chrono::duration<double>(now - last_time_).count();
  const auto period = ctx_.cfg.daemon.stats_interval;
  auto s = make(ctx_.stats, last_, interval_s, gauges_ ? gauges_() : stats_gauges{});
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(xadd_command(ctx_.k, s, period, entries_kept(period)));
  ctx_.write_detached(std::move(cmds), "stats_sample");
  last_ = ctx_.stats;
  last_time_ = now;
  log::debug("stats sample interval_s={:.3f} done={} failed={} cancelled={} queue={} running={} workers={}",
             s.interval_s, s.done, s.failed, s.cancelled, s.now.queue, s.now.running, s.now.workers);
  return true;
}

net::awaitable<void> stats_sampler::run() {
  net::steady_timer timer(ctx_.io);
  const auto period = std::chrono::duration_cast<clock_type::duration>(ctx_.cfg.daemon.stats_interval);
  last_ = ctx_.stats;
  last_time_ = clock_type::now();
  auto next = last_time_ + period;
  while (!ctx_.stopping) {
    timer.expires_at(next);
    co_await timer.async_wait(use_tuple);
    if (ctx_.stopping) break;
    auto now = clock_type::now();
    sample(now);
    // The next tick on the grid; a tick missed (a long stall) is skipped, not caught up.
    next += period;
    if (next <= now) next = now + period;
  }
}

}  // namespace descprod
