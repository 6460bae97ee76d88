// The Redis store: every job transition is one atomic Lua script that checks the job's current
// state (against the table in job.cpp), its attempt number and its worker, and refuses an illegal
// transition or a stale event. Values always travel as script arguments, never pasted into code.
//
// Key layout (DESIGN §3.3), with prefix P (default "descprod:"):
//   P next_job_id, P job:<id>, P job:<id>:events, P job:<id>:log, P job:<id>:children (set),
//   P queue, P leases, P user:<name>:jobs, P user:<name>, P users (set), P token:<sha256>,
//   P worker:<id>, P events.
#pragma once

#include <boost/asio.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/job.hpp"
#include "core/redis.hpp"

namespace descprod {

struct new_job {
  std::string jobtype;
  std::string config;
  std::string howfig;
  int priority = 0;           // -1000..1000, higher runs first
  std::optional<job_id> parent;
  int max_attempts = 3;
  std::string session;
};

// The answer of a transition script. ok=false carries the reason ("missing", "illegal", "stale",
// "terminal", "bad_parent") and the job's current state.
struct transition_result {
  bool ok = false;
  std::string state;   // the new state when ok, else the current one
  std::string reason;
  long long attempt = 0;
  std::string worker;
  job_record record;   // lease: the job as leased
};

// Queue score: priority first (higher first), then ID (lower first).
double queue_score(int priority, job_id id);

class store {
 public:
  store(redis_client& redis, std::string prefix);

  const std::string& prefix() const { return prefix_; }
  std::string key(std::string_view suffix) const { return prefix_ + std::string(suffix); }
  std::string job_key(job_id id) const { return prefix_ + "job:" + std::to_string(id); }

  // Creates jobs for `owner` atomically (one script per call); returns their IDs, consecutive.
  // A parent not owned by `owner` refuses the whole call: result.ok=false, reason "bad_parent".
  net::awaitable<transition_result> async_create(std::string owner, std::vector<new_job> jobs,
                                                 std::vector<job_id>& ids);
  net::awaitable<transition_result> async_lease(job_id id, std::string worker, double lease_s);
  net::awaitable<transition_result> async_start(job_id id, long long attempt, std::string worker,
                                                std::string host, std::string rundir, long long pid);
  net::awaitable<transition_result> async_progress(job_id id, long long attempt, std::string worker,
                                                   std::string message, std::optional<long long> done,
                                                   std::optional<long long> total);
  net::awaitable<transition_result> async_finish(job_id id, long long attempt, std::string worker,
                                                 job_state target, int return_status,
                                                 std::string prefix, std::string message);
  // Back to ready; with bump the attempt number rises, and a job out of attempts becomes lost.
  // An empty worker matches any worker.
  net::awaitable<transition_result> async_requeue(job_id id, long long attempt, std::string worker,
                                                  bool bump, std::string reason);
  // ready → cancelled at once; dispatched/running → cancel_requested=1 (ok, state
  // "cancel_requested"); terminal → ok=false reason "terminal".
  net::awaitable<transition_result> async_cancel(job_id id, std::string by);

  net::awaitable<std::optional<job_record>> async_get(job_id id);
  // Loads every script into Redis (SCRIPT LOAD), so the first calls need no NOSCRIPT round trip.
  net::awaitable<void> async_load_scripts();

 private:
  net::awaitable<redis_reply> eval(int script, std::vector<std::string> args);
  net::awaitable<transition_result> eval_result(int script, std::vector<std::string> args);
  redis_client& redis_;
  std::string prefix_;
  std::vector<std::string> shas_;
};

// The Lua source of each script, for the tests and for operators who want to read them.
const std::vector<std::string>& store_scripts();

}  // namespace descprod
