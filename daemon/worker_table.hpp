// The worker table (docs/architecture.md, Daemon): the workers connected to the daemon, by worker
// id and by the routing id of their current connection, with what each said in hello (slots,
// prefetch, walltime), its credits, its health and what its token grants it. The jobs a worker
// holds are the lease table's (lease_table.hpp), not the worker's.
//
// Thread-safety: none; the daemon's io_context thread.
#pragma once

#include <boost/json.hpp>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/job.hpp"
#include "daemon/context.hpp"
#include "daemon/ready_queue.hpp"
#include "daemon/worker_auth.hpp"

namespace descprod {

struct worker_state {
  std::string routing;  // ZeroMQ routing id of its current connection
  std::string id;
  std::string owner;
  std::string host;
  std::string pool;
  std::string site;  // from hello ("": none): it runs only jobs of lanes its site may serve
  int slots = 0;
  int prefetch = 0;  // from hello: jobs it queues beyond its slots (credits may reach slots + prefetch)
  int credits = 0;
  bool draining = false;  // sent `drain`: gets no more jobs
  clock_type::time_point last_seen;
  double walltime_end = 0;       // its allocation's end (epoch s; 0: none), from hello
  double walltime_margin_s = 0;  // from hello: a job must end this long before walltime_end
  std::set<job_id> refused;      // jobs it handed back for walltime: never sent to it again
  // Whose jobs it may run (worker_auth token: its token's owner and pools; open: everyone).
  bool any_owner = false;
  std::vector<ready_queue::owner_id> owners;
  std::vector<std::string> pools;  // as admitted by its token
  std::string token_sha;           // sha256 of its worker token (empty in open mode)
  bool revoked = false;            // its token stopped being valid: no more jobs
  // It says it cannot run jobs now (hello/heartbeat `healthy: false`, e.g. its output disk is
  // full): no jobs until it says it is healthy again.
  bool unhealthy = false;
  std::string health_reason;
  bool record_unhealthy = false;
  // Its worker:<id> hash in Redis: what was last written and when (append_records() rewrites the
  // record when these change, and otherwise only refreshes last_heartbeat every few heartbeats).
  bool record_written = false;
  clock_type::time_point record_time;
  std::size_t record_running = 0;
  bool record_draining = false, record_revoked = false;

  // Whether it takes jobs at all now (credits aside).
  bool takes_jobs() const { return !draining && !revoked && !unhealthy; }
};

class worker_table {
 public:
  static constexpr long long max_prefetch = 4096;  // a larger prefetch in hello is ignored (0)
  static constexpr std::size_t max_refused_per_worker = 10000;

  worker_state* find(const std::string& id) {
    auto it = workers_.find(id);
    return it == workers_.end() ? nullptr : &it->second;
  }
  worker_state* by_routing(const std::string& routing);
  // The current routing id of worker `id`, else `fallback` (the connection a message came on).
  const std::string& routing_of(const std::string& id, const std::string& fallback) const;
  // A hello: the worker's entry (created when new), now reached at `routing`.
  worker_state& connect(const std::string& id, const std::string& routing);
  // The worker is gone: its entry and its routing id go. False when it was not there.
  bool remove(const std::string& id);

  std::map<std::string, worker_state>& all() { return workers_; }
  const std::map<std::string, worker_state>& all() const { return workers_; }
  std::size_t size() const { return workers_.size(); }
  bool empty() const { return workers_.empty(); }

  // ---- rules on one worker ----
  // `ready {credits: n}`: its credits grow by n, up to slots + prefetch less the jobs it holds.
  static void add_credits(worker_state& w, long long n, std::size_t held);
  // A hello's prefetch: absent (an older worker) or out of range is 0 (credits only for free slots).
  static int prefetch_of(long long requested) {
    return requested < 0 || requested > max_prefetch ? 0 : static_cast<int>(requested);
  }
  // Reads `healthy` / `health_reason` of a hello or heartbeat: an unhealthy worker gets no jobs
  // and its credits are void until it says it is healthy again (docs/protocol.md, Unhealthy workers).
  static void note_health(worker_state& w, const boost::json::object& body);
  // A handback for walltime: the job is never offered to this worker again.
  static void refuse(worker_state& w, job_id id);
  // What its token grants (owners interned in the ready queue's owner table).
  static void set_grant(worker_state& w, const worker_grant& g, ready_queue& q);
  // Whether w's token admits jobs of `owner`.
  static bool may_run(const worker_state& w, const std::string& owner, const ready_queue& q);

  // The cron's writes of the worker:<id> records: a record is written in full once, its changing
  // fields when they change, and otherwise only last_heartbeat (with the EXPIRE) every `refresh`:
  // with 10,000 idle workers that is a few thousand small writes a second instead of 10,000 full
  // records. `held(id)` is the number of jobs a worker holds.
  template <class Held>
  void append_records(std::vector<std::vector<std::string>>& cmds, const keys& k, clock_type::time_point now,
                      clock_type::duration refresh, const std::string& ttl, Held held) {
    const std::string now_s = fmt_double(epoch_now());
    for (auto& [id, w] : workers_) append_record(cmds, k, w, held(id), now, refresh, ttl, now_s);
  }

 private:
  static void append_record(std::vector<std::vector<std::string>>& cmds, const keys& k, worker_state& w,
                            std::size_t running, clock_type::time_point now, clock_type::duration refresh,
                            const std::string& ttl, const std::string& now_s);
  std::map<std::string, worker_state> workers_;  // by worker id (ordered: the dispatch round robin)
  std::unordered_map<std::string, std::string> routing_to_id_;
};

}  // namespace descprod
