// The queue daemon (docs/architecture.md, Daemon): holds the ready queue in memory (priority, then
// FIFO), leases jobs to workers that ask for work (credit-based pull), tracks heartbeats both ways,
// requeues the jobs of lost workers, forwards cancels, and writes every transition through the
// store's Lua scripts. Its memory is a cache of Redis: it is rebuilt at start and reconciled
// periodically. Workers in Slurm allocations announce their walltime; jobs that would outrun it go
// elsewhere (docs/protocol.md, Walltime). With pilots enabled, a pilot_manager (pilots.hpp) submits
// Slurm allocations when ready jobs outnumber free slots.
//
// queue_daemon wires the parts, each with one job:
//   worker_table   (worker_table.hpp)   the connected workers, their credits, health and grants
//   lease_table    (lease_table.hpp)    who holds which job at which attempt; orphan leases
//   dispatcher     (dispatcher.hpp)     ready queue → workers with credits; the lease batches
//   outbox         (outbox.hpp)         the ordered Redis writes that must not be lost
//   reconciler     (reconciler.hpp)     rebuild at start, periodic reconcile, token recheck
//   worker_handler (worker_handler.hpp) the worker protocol's messages
//   stats_sampler  (stats_sampler.hpp)  a sample of its figures every stats_interval (status plots)
//   site_monitor   (site_status.hpp)    the sites' status, polled; pilots wait while a site is down
//   leadership     (leadership.hpp)     the leader lease and fencing epoch: a standby waits for it
// and owns the sockets, the receive loops, the Redis reconnect, the cron and the stop.
//
// Thread-safety: none; everything runs on one io_context thread.
#pragma once

#include <boost/asio.hpp>
#include <memory>
#include <string>
#include <zmq.hpp>

#include "core/config.hpp"
#include "core/protocol.hpp"
#include "core/zmq_asio.hpp"
#include "daemon/context.hpp"
#include "daemon/dependencies.hpp"
#include "daemon/dispatcher.hpp"
#include "daemon/leadership.hpp"
#include "daemon/lease_table.hpp"
#include "daemon/outbox.hpp"
#include "daemon/pilots.hpp"
#include "daemon/reconciler.hpp"
#include "daemon/site_status.hpp"
#include "daemon/stats_sampler.hpp"
#include "daemon/worker_auth.hpp"
#include "daemon/worker_handler.hpp"
#include "daemon/worker_table.hpp"

namespace descprod {

class queue_daemon {
 public:
  queue_daemon(net::io_context& io, descprod_config cfg, app_registry apps);
  ~queue_daemon();

  // Connects Redis, waits as a standby until it leads (leadership.hpp), then binds the sockets,
  // rebuilds the queue, and runs until stop().
  net::awaitable<void> run();
  void stop();
  // SIGTERM: takes no new work (no dispatch, no hello, gateway notices ignored), goes on taking
  // worker reports, and writes the outbox to Redis until it is empty or daemon.stop_deadline has
  // passed; then stop(). Workers re-send whatever was not acknowledged to the next daemon.
  net::awaitable<void> drain_and_stop();

  const daemon_stats& stats() const { return ctx_.stats; }
  std::size_t queued() const { return disp_.queue().size(); }

 private:
  // stop() but for the Redis connection (drain_and_stop gives the lease up after it).
  void stop_work();
  // Connects (when not connected), loads the scripts and checks that Redis serves (PING: refused
  // with LOADING, BUSY or MISCONF while it cannot); retries until it does or the daemon stops.
  net::awaitable<void> connect_redis();
  // A Redis call failed because Redis is unavailable (connection lost, or LOADING, BUSY, MISCONF:
  // redis.hpp): hold everything and start the reconnect (connect_redis, then dispatch, reconcile
  // and the token recheck).
  void redis_failed(const std::exception& e);
  void start_reconnect();
  net::awaitable<void> receive_loop(zmq_socket* sock, bool from_workers);
  void on_gateway_message(const std::string& routing, protocol::message msg);
  // Every heartbeat interval: heartbeats to workers, the liveness check, orphan expiry, worker
  // records and lease deadlines, stats, and the periodic reconcile.
  net::awaitable<void> cron();
  // Starts a pilot manager for each site whose pilots are enabled.
  void start_pilots(net::any_io_executor ex);
  void write_stats();
  // What the daemon holds now: queue, leases, workers, their slots (daemon:stats and the samples).
  stats_gauges gauges() const;

  daemon_context ctx_;
  leadership leader_;
  zmq::context_t zctx_{1};
  std::unique_ptr<zap_handler> zap_;  // CURVE (before the sockets: destroyed after them)
  std::unique_ptr<zmq_socket> workers_sock_;
  std::unique_ptr<zmq_socket> gateways_sock_;
  bool reconnecting_ = false;
  worker_table workers_;
  lease_table leases_;
  outbox out_;
  dispatcher disp_;
  reconciler recon_;
  dependency_releaser deps_;
  worker_handler handler_;
  std::vector<std::unique_ptr<pilot_manager>> pilots_;  // one per site with pilots enabled
  stats_sampler sampler_;
  site_monitor sites_;  // the sites: of the config (none: it polls nothing)
  clock_type::time_point last_heartbeat_sent_;
};

}  // namespace descprod
