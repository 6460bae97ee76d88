// The reconciler (docs/architecture.md, Daemon): the daemon's memory is a cache of Redis. At start
// it is rebuilt from Redis (the ready queue; the leases held before a restart become orphan
// leases, lease_table.hpp); every reconcile interval the ready jobs Redis holds that the daemon
// does not are taken in (a lost `submitted` notice), leases Redis holds that the daemon does not
// become orphan leases (a lost claim answer), orphan leases whose worker never came back
// are requeued, and in token mode every connected worker's token is checked again.
//
// Thread-safety: none; the daemon's io_context thread.
#pragma once

#include <utility>
#include <vector>

#include "core/job.hpp"
#include "daemon/context.hpp"
#include "daemon/dispatcher.hpp"
#include "daemon/lease_table.hpp"
#include "daemon/outbox.hpp"
#include "daemon/worker_table.hpp"

namespace descprod {

class reconciler {
 public:
  reconciler(daemon_context& ctx, worker_table& workers, lease_table& leases, dispatcher& disp, outbox& out);

  // Reads the queue and the leases from Redis (throws system_error when Redis goes away). The
  // leases' workers get `orphan_grace` to say hello and claim them; beyond, they are requeued.
  net::awaitable<void> rebuild(std::chrono::milliseconds orphan_grace);
  // Takes in the ready jobs near the front of Redis's queue that the daemon does not hold.
  net::awaitable<void> reconcile();
  // Takes ready jobs in Redis that the daemon does not hold: (id, score) pairs, owners looked up.
  // Returns how many were added.
  net::awaitable<std::size_t> take_in(std::vector<std::pair<job_id, double>> jobs);
  // Redis serves again after an outage: the leases the daemon holds that Redis lost (it came back
  // from an older data set) are written again, and its job ID counter is raised past every job
  // the daemon has queued (store::async_restore_leases). Throws system_error when Redis goes away.
  net::awaitable<void> restore_leases();
  // Reads every known owner's quota (share, max_running: fair-share dispatch) from Redis.
  net::awaitable<void> read_quotas();
  // Leases in Redis that the daemon does not know (a claim written whose answer was lost) become
  // orphan leases with a lease period's grace (part of reconcile()).
  net::awaitable<void> adopt_stray_leases();
  // Orphan leases whose worker did not return within a lease period: requeued.
  void expire_orphans(clock_type::time_point now);
  // Re-reads each worker's token, owner and pools (revocation, pool changes).
  net::awaitable<void> recheck_tokens();

  // Whether the periodic reconcile is due at `now` (and, if so, notes it as done).
  bool due(clock_type::time_point now);
  // The reconcile runs now (a reconnect): the next one is a full interval away.
  void mark_done() { last_reconcile_ = clock_type::now(); }

 private:
  // Makes the leases of `ids` orphans until `deadline` (their worker, attempt and owner read
  // from Redis).
  net::awaitable<void> add_orphans(std::vector<job_id> ids, clock_type::time_point deadline);
  daemon_context& ctx_;
  worker_table& workers_;
  lease_table& leases_;
  dispatcher& disp_;
  outbox& out_;
  clock_type::time_point last_reconcile_;
};

}  // namespace descprod
