// The daemon's samples of itself for the status plots (docs/architecture.md, Daemon; GET
// /api/status in docs/api.md; the /status page in docs/web.md). Every daemon.stats_interval_s
// (10 s by default) one entry goes into the stream <prefix>stats:samples, trimmed to about 65
// minutes of entries. The entry's ID is Redis's time of the write; its fields:
//
//   interval_s  the time (s) the counts below cover: since the previous sample written
//   period_s    the configured sampling interval (the pages poll this often)
//   done        jobs that ended done in that time
//   failed      jobs that ended failed, timeout, killed or lost
//   cancelled   jobs that ended cancelled
//   queue       ready jobs in the daemon's queue now
//   running     jobs leased to connected workers now (dispatched or running)
//   workers     connected workers now;  slots: their slots;  busy: slots running a job
//
// Counts per interval, not totals since the daemon started, so that a daemon restart needs no
// care by the reader. The counts are the jobs that ended through this daemon (workers' `finished`
// reports and requeues that made a job `lost`): a job run by descprod-start-job (which reports
// through a gateway) and a ready job cancelled at a gateway are not in them.
//
// Writes go through the daemon's shared Redis connection without waiting (write_detached). While
// Redis does not serve, no sample is written and the counts go on adding up: the first sample
// after the outage covers the whole gap (its interval_s says how long). A sample whose write fails
// on the way (the connection drops under it) is lost with its counts.
//
// Thread-safety: none; runs on the daemon's io_context thread.
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/keys.hpp"
#include "daemon/context.hpp"

namespace descprod {

// What the daemon holds now (queue_daemon::gauges).
struct stats_gauges {
  std::uint64_t queue = 0;
  std::uint64_t running = 0;
  std::uint64_t workers = 0;
  std::uint64_t slots = 0;
  std::uint64_t busy = 0;
};

struct stats_sample {
  double interval_s = 0;
  std::uint64_t done = 0;
  std::uint64_t failed = 0;
  std::uint64_t cancelled = 0;
  stats_gauges now;
};

class stats_sampler {
 public:
  using gauges_fn = std::function<stats_gauges()>;
  stats_sampler(daemon_context& ctx, gauges_fn gauges);

  // Samples every daemon.stats_interval until the daemon stops.
  net::awaitable<void> run();
  // One sample at `now`: the counts since the last sample written and the gauges now, written to
  // Redis. False (nothing written, the counts kept for the next one) when Redis does not serve.
  bool sample(clock_type::time_point now);

  // The figures of a sample from the counters now and at the last sample.
  static stats_sample make(const daemon_stats& now, const daemon_stats& last, double interval_s,
                           const stats_gauges& gauges);
  // XADD <prefix>stats:samples MAXLEN ~ keep * field value ... (values as arguments).
  static std::vector<std::string> xadd_command(const keys& k, const stats_sample& s,
                                               std::chrono::seconds period, std::size_t keep);
  // How many entries to keep: 65 minutes of samples (at least 10), so that a full hour is there
  // whatever the interval.
  static std::size_t entries_kept(std::chrono::seconds period);

 private:
  daemon_context& ctx_;
  gauges_fn gauges_;
  daemon_stats last_;
  clock_type::time_point last_time_;
};

}  // namespace descprod
