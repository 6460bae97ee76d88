// The worker side of the daemon (docs/protocol.md): every message a worker sends — hello (with its
// token check in token mode), ready, heartbeat, drain, bye, handback, started, progress, finished,
// log — applied to the worker table, the lease table, the dispatcher and the outbox. Also the loss
// of a worker (silence, bye, unreachable), whose jobs go back to the queue.
//
// Thread-safety: none; the daemon's io_context thread.
#pragma once

#include <boost/json.hpp>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/protocol.hpp"
#include "daemon/context.hpp"
#include "daemon/dispatcher.hpp"
#include "daemon/lease_table.hpp"
#include "daemon/outbox.hpp"
#include "daemon/pilots.hpp"
#include "daemon/worker_table.hpp"

namespace descprod {

class worker_handler {
 public:
  worker_handler(daemon_context& ctx, worker_table& workers, lease_table& leases, dispatcher& disp,
                 outbox& out);

  // Pilots, when enabled: told of hellos and of workers that leave.
  // The pilots of one site more (each is told of every worker's hello and departure; a worker of
  // one of its pilots is its own).
  void add_pilots(pilot_manager* p) { pilots_.push_back(p); }

  // A checked message from the worker socket (throws std::invalid_argument on a malformed body).
  void on_message(const std::string& routing, protocol::message msg);
  // The worker is gone: it leaves the table, and the jobs it held are requeued.
  void worker_lost(const std::string& id, const std::string& why);
  // Tells a worker (or every worker) where Redis's copy of each running job's log ends
  // (`log_from`), so pieces lost with a connection or dropped while Redis was away are shipped
  // again: at every hello, and when Redis serves again.
  void resync_logs(const std::string& worker_id);
  void resync_all_logs();

 private:
  net::awaitable<void> send_log_from(std::string worker_id, std::vector<std::pair<job_id, long long>> jobs);
  // Jobs whose log is being resynchronised: from the moment a piece may have been lost (a hello,
  // a piece dropped while Redis was away) the job's pieces are dropped until one starts at the
  // offset its log_from named (offset -1: not sent yet); after log_resync_timeout, accepted again
  // (a worker that does not know log_from: its gap gets noted).
  struct log_resync {
    long long offset = -1;
    clock_type::time_point since;
  };
  std::map<job_id, log_resync> log_resync_;
  static constexpr std::chrono::seconds log_resync_timeout{10};
  void on_hello(const std::string& routing, const boost::json::object& body);
  // Token mode: checks the hello's worker token in Redis, then accepts or refuses the worker.
  net::awaitable<void> authenticate(std::string routing, boost::json::object body);
  void accept_hello(const std::string& routing, const boost::json::object& body, const worker_grant& g);
  void refuse_worker(const std::string& routing, const std::string& reason, bool retry);
  void on_report(worker_state& w, const std::string& routing, protocol::message& msg, bool wants_ack);
  void on_handback(worker_state& w, const std::string& routing, const boost::json::object& body,
                   bool wants_ack);
  // Drops a job report of a job the sender does not hold (logged, counted; acknowledged when the
  // worker asked for an ack, since nothing will ever apply it).
  void refuse_report(const worker_state& w, const std::string& routing, std::string_view command, job_id id,
                     long long attempt, const char* why, bool wants_ack);
  // A report from a connection the daemon does not know.
  void on_unknown(const std::string& routing, protocol::message& msg, bool wants_ack);
  // Applied once its token checks out (token mode) — the Lua scripts then check worker and
  // attempt as always.
  net::awaitable<void> apply_unknown_report(pending_write pw, std::string token);
  void apply_unknown_report_now(pending_write pw);
  void on_log(const worker_state& w, boost::json::object& body);

  daemon_context& ctx_;
  worker_table& workers_;
  lease_table& leases_;
  dispatcher& disp_;
  outbox& out_;
  std::vector<pilot_manager*> pilots_;
  std::size_t unknown_waiting_ = 0;  // unknown-connection reports waiting for Redis (bounded)
  static constexpr std::size_t max_unknown_waiting = 10000;
};

}  // namespace descprod
