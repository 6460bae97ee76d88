// What the parts of the queue daemon share (docs/architecture.md, Daemon): the configuration, the
// Redis connection and store, the keys, the counters, whether the daemon is stopping or draining,
// and the few actions a part asks of the whole (report Redis unavailable, send to a worker). The
// parts (worker_table, lease_table, dispatcher, outbox, reconciler, worker_handler) each hold a
// reference to one daemon_context; queue_daemon owns it and sets its actions.
//
// Thread-safety: none; everything runs on one io_context thread.
#pragma once

#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.hpp"
#include "core/keys.hpp"
#include "core/redis.hpp"
#include "core/store.hpp"

namespace descprod {

using clock_type = std::chrono::steady_clock;

struct daemon_stats {
  std::uint64_t leased = 0;
  std::uint64_t finished = 0;
  std::uint64_t requeued = 0;
  std::uint64_t stale_events = 0;
  std::uint64_t malformed = 0;
  std::uint64_t handed_back = 0;
  std::uint64_t walltime_refusals = 0;   // jobs kept from a worker whose allocation ends too soon
  std::uint64_t lease_expiries = 0;      // workers declared lost for silence
  std::uint64_t workers_refused = 0;     // hellos refused (bad token, protocol, another worker's id)
  std::uint64_t reports_refused = 0;     // job reports for a job the connection does not hold
  std::uint64_t log_pieces_dropped = 0;  // log pieces not kept: Redis away or the outbox long
  // Jobs that ended through this daemon (a worker's `finished`, a requeue that made a job `lost`),
  // by outcome: done; failed, timeout, killed or lost; cancelled (count_job_end).
  std::uint64_t jobs_done = 0;
  std::uint64_t jobs_failed = 0;
  std::uint64_t jobs_cancelled = 0;
};

// Counts a job that reached terminal `state` through this daemon in its outcome's counter.
void count_job_end(daemon_stats& s, std::string_view state);

// Wall-clock seconds since the epoch (walltimes, lease deadlines, worker records).
double epoch_now();
// "%.3f": the daemon's format for times written to Redis.
std::string fmt_double(double d);
// A ZeroMQ routing id as hex, for logs.
std::string hex_id(const std::string& routing);

// A store refusal as the daemon takes it: the one place that reads a refusal (store.hpp's
// transition_result), so that a change of its type is a change here only. `broken`: the job's
// keys are broken (the script answered "error"; an operator needs to hear of it); otherwise an
// ordinary refusal (cancelled, already leased, gone, stale), logged and dropped.
struct refusal_view {
  bool broken = false;
  std::string reason;
};
refusal_view interpret_refusal(const transition_result& r);
inline std::string refusal_reason(const transition_result& r) { return interpret_refusal(r).reason; }

struct daemon_context {
  daemon_context(net::io_context& io, descprod_config cfg, app_registry apps);

  net::io_context& io;
  descprod_config cfg;
  app_registry apps;
  redis_client redis;
  store st;
  keys k;
  daemon_stats stats;
  bool token_mode;             // worker_auth: token (the default) or open
  bool stopping = false;       // stop(): everything ends
  bool draining = false;       // drain_and_stop(): no new work
  bool redis_refusing = true;  // until connect_redis has seen Redis serve

  // Redis is connected and serving: the daemon leases, writes its outbox, checks tokens.
  bool redis_ready() const { return redis.connected() && !redis_refusing; }

  // Set by queue_daemon. A Redis call failed because Redis is unavailable: hold everything and
  // reconnect. `send_frames` sends [routing, command, body] on the worker socket (false: the peer
  // is gone or its queue is full).
  std::function<void(const std::exception&)> redis_failed;
  std::function<bool(const std::vector<std::string>&)> send_frames;
  // A job reached a terminal state through this daemon (its dependents may be released now).
  std::function<void()> job_ended;

  // A job reached `state` through this daemon: counted (count_job_end) and, when it is terminal,
  // job_ended told.
  void ended(std::string_view state);

  // Sends a command to a worker; a failed send is logged (the worker's silence then ends it).
  void send_worker(const std::string& routing, std::string_view command, const boost::json::object& body);
  // Runs a task detached; its failure is logged unless the daemon is stopping.
  void spawn(net::awaitable<void> task, const char* what);
  // Sends commands on the shared connection without waiting for the caller (errors logged; Redis
  // unavailable reported): heartbeats, records, stats, log tails, written again next time.
  void write_detached(std::vector<std::vector<std::string>> cmds, const char* what);
  // The TTL of a worker's worker:<id> record: three lease periods (seconds, at least 1).
  std::string worker_record_ttl() const;
};

}  // namespace descprod
