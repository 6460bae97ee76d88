// The lease table (docs/architecture.md, Daemon): which worker holds which job at which attempt.
// It is the one owner of three views that must agree — by job (who holds it), by worker (what it
// holds), and the orphan leases (leases Redis held at start whose worker has not said hello yet) —
// and the one place a lease is released (release()).
//
// A job is held by at most one worker, at one attempt; a held job is never also an orphan.
// Attempt 0 means "sent to Redis for leasing, attempt not known yet" (dispatcher.hpp): such a
// lease holds the job (it is not offered again) but no report on it is accepted.
//
// Thread-safety: none; the daemon's io_context thread.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/job.hpp"
#include "daemon/context.hpp"

namespace descprod {

// The job's owner as the ready queue numbers owners (ready_queue::owner_id); no_owner: unknown.
using lease_owner = std::uint32_t;
inline constexpr lease_owner no_owner = UINT32_MAX;

struct lease {
  std::string worker;     // the worker id
  long long attempt = 0;  // 0: being leased (the attempt comes with Redis's answer)
  bool started = false;   // the worker said `started` (or listed it in hello)
  lease_owner owner = no_owner;
};

// A lease found in Redis at start whose worker has not said hello yet. A hello adopts only its
// own leases (id and attempt), of owners its token may run; unclaimed, it is requeued at deadline.
struct orphan_lease {
  clock_type::time_point deadline;  // requeued then if still unclaimed
  std::string worker;               // the worker it was leased to ("" when unknown)
  long long attempt = 0;            // the attempt Redis says it runs
  std::string owner;                // the job's owner (descname)
};

class lease_table {
 public:
  // ---- leases of connected workers ----
  const lease* find(job_id id) const {
    auto it = by_job_.find(id);
    return it == by_job_.end() ? nullptr : &it->second;
  }
  bool contains(job_id id) const { return by_job_.count(id) > 0; }
  // Whether `worker` holds `id` at `attempt` (leased and sent): only then are its reports on the
  // job applied.
  bool holds(std::string_view worker, job_id id, long long attempt) const {
    auto it = by_job_.find(id);
    return it != by_job_.end() && it->second.attempt > 0 && it->second.attempt == attempt &&
           it->second.worker == worker;
  }
  // The jobs `worker` holds (in ID order); empty when none.
  const std::set<job_id>& jobs_of(const std::string& worker) const;
  std::size_t count(const std::string& worker) const { return jobs_of(worker).size(); }
  std::size_t size() const { return by_job_.size(); }
  // Every lease of a connected worker, in no particular order.
  const std::unordered_map<job_id, lease>& all() const { return by_job_; }

  // `worker` holds `id` at `attempt` (0: being leased). A job held by another worker moves (a job
  // is held by one worker only); an orphan lease of the job is dropped (it is claimed). `owner`
  // (the job's, for fair share) is kept from an earlier hold when given as no_owner.
  void hold(job_id id, const std::string& worker, long long attempt, bool started = false,
            lease_owner owner = no_owner);
  // Leases held of jobs of `owner` (fair share and max_running: ready_queue::fair).
  std::uint32_t held_of(lease_owner owner) const {
    return owner < held_by_owner_.size() ? held_by_owner_[owner] : 0;
  }
  void mark_started(job_id id) {
    if (auto it = by_job_.find(id); it != by_job_.end()) it->second.started = true;
  }
  // THE release of a lease: the job leaves every view (by job, by worker, orphans). With
  // `only_worker` set, a lease held by another worker stays (its orphan lease goes all the same).
  // Returns the lease released, if there was one.
  std::optional<lease> release(job_id id, std::string_view only_worker = {});
  // Releases every lease of `worker` (it is gone): the jobs it held, with their attempts.
  std::vector<std::pair<job_id, lease>> release_worker(const std::string& worker);

  // ---- orphan leases (from Redis at start) ----
  void clear_orphans();
  void add_orphan(job_id id, orphan_lease o);
  const orphan_lease* find_orphan(job_id id) const {
    auto it = orphans_.find(id);
    return it == orphans_.end() ? nullptr : &it->second;
  }
  bool has_orphans(const std::string& worker) const { return orphans_by_worker_.count(worker) > 0; }
  // The orphan leases Redis holds for `worker`, released here (the caller requeues them).
  std::vector<job_id> take_orphans_of(const std::string& worker);
  // The orphan leases whose deadline has passed, released here (the caller requeues them).
  std::vector<job_id> take_expired_orphans(clock_type::time_point now);
  std::size_t orphan_count() const { return orphans_.size(); }

 private:
  void erase_orphan(job_id id);
  void count_owner(lease_owner owner, int delta);
  std::unordered_map<job_id, lease> by_job_;
  std::vector<std::uint32_t> held_by_owner_;
  // A worker's entry stays while it is connected, even when empty: dispatching to a one-slot
  // worker must not allocate a new entry per job.
  std::unordered_map<std::string, std::set<job_id>> by_worker_;
  std::unordered_map<job_id, orphan_lease> orphans_;
  std::unordered_map<std::string, std::set<job_id>> orphans_by_worker_;
};

}  // namespace descprod
