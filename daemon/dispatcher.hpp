// The dispatcher (docs/architecture.md, Daemon; docs/protocol.md, Credits and prefetch, Walltime):
// takes ready jobs from the ready queue (priority, then FIFO, per owner) to workers with credits,
// round robin, by the rules of fit (owner, walltime, a job the worker refused); leases them in
// batches (one store::async_claim_many script call per lease_batch_max, once per turn of the
// event loop) and sends each leased job to its worker.
//
// Thread-safety: none; the daemon's io_context thread.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/job.hpp"
#include "daemon/context.hpp"
#include "daemon/lease_table.hpp"
#include "daemon/outbox.hpp"
#include "daemon/pilots.hpp"
#include "daemon/ready_queue.hpp"
#include "daemon/worker_table.hpp"

namespace descprod {

class dispatcher {
 public:
  static constexpr std::size_t lease_batch_max = 256;
  // Jobs dispatch() looks past at the queue's front when they fit no worker with credits.
  static constexpr std::size_t dispatch_scan = 128;
  static constexpr std::size_t max_job_limits = 100000;
  static constexpr std::chrono::hours job_token_ttl{24 * 7};

  dispatcher(daemon_context& ctx, worker_table& workers, lease_table& leases, outbox& out);

  // Set by the daemon: a worker the job socket cannot reach is lost (worker_handler::worker_lost).
  std::function<void(const std::string& worker, const std::string& why)> worker_lost;

  ready_queue& queue() { return ready_; }
  const ready_queue& queue() const { return ready_; }
  // A ready job (not when it is leased: a late notice).
  // `sites`: the sites the job asked for (sorted, comma-separated; "": any).
  void enqueue(job_id id, int priority, const std::string& owner, std::string_view sites = {});
  // A cancelled job leaves the ready queue (true when it was there).
  bool cancel_ready(job_id id);
  // The gateway's cancel notice: the job leaves the ready queue; a job leased and sent gets a
  // `cancel` to its worker; one Redis is leasing right now gets it right after the job (the lease
  // script read the job before the cancel, so the job message does not say so).
  void cancel(job_id id);

  // Gives jobs to every worker with credits, round robin.
  void dispatch();
  // As many jobs as `w` has credits for (a `ready` or a heartbeat).
  void serve(worker_state& w);
  // One job for `w`: false when it gets none.
  bool dispatch_to(worker_state& w, double now);

  // The walltime rule (docs/slurm.md): a job whose time limit the daemon knows (`limits`) goes
  // only to a worker whose allocation outlasts it; a job a worker refused never goes back to it.
  static bool fits(const worker_state& w, const std::map<job_id, double>& limits, job_id id, double now);
  bool fits(const worker_state& w, job_id id, double now) const { return fits(w, job_limits_, id, now); }
  // A job's time limit, learnt when a worker could not fit it (bounded: the lowest IDs go first).
  void remember_limit(job_id id, double time_limit_s);

  // What pilots could take (pilots.hpp).
  // For pilots whose workers are at `site` ("": none): the ready jobs they could run.
  pilot_demand demand(double pilot_walltime_s, std::string_view site = {}) const;
  // Up to `max` queued jobs pinned to an allocation of their own (howfig pmb; pilots.hpp).
  std::vector<job_id> pinned_queued(std::size_t max);
  // A queued job that cannot run (Slurm refused its allocation): taken off the queue, leased to
  // the daemon and finished `failed` with `rc` and progress "Failed. <message>". Nothing when it
  // is no longer queued; when Redis fails the reconciler queues it again and it is tried again.
  net::awaitable<void> fail_queued(job_id id, int rc, std::string message);
  // No lease waiting to go to Redis or waiting for its answer.
  bool idle() const { return leases_in_flight_ == 0 && lease_queue_.empty(); }

 private:
  struct lease_request {
    job_id id;
    double score;
    ready_queue::owner_id owner;
    std::string worker;
    std::string token;
    ready_queue::lane_id lane = 0;
  };
  void queue_lease(lease_request r);
  void flush_leases();
  net::awaitable<void> lease_batch(std::vector<lease_request> batch);
  void after_lease(lease_request& q, transition_result& r);
  // A lease that will not be sent: released, and the worker's credit given back.
  void undo_lease(job_id id, const std::string& worker);
  void send_cancel(job_id id, const std::string& worker, long long attempt);

  daemon_context& ctx_;
  worker_table& workers_;
  lease_table& leases_;
  outbox& out_;
  ready_queue ready_;
  bool fair_share_ = true;  // daemon.dispatch_policy
  std::map<job_id, double> job_limits_;
  std::string rr_;  // round-robin cursor over workers: the last one served
  std::vector<lease_request> lease_queue_;
  bool lease_flush_posted_ = false;
  std::size_t leases_in_flight_ = 0;     // lease batches sent to Redis, not yet answered
  std::set<job_id> cancel_after_lease_;  // cancelled while being leased
};

}  // namespace descprod
