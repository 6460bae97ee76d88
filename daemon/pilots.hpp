// Elastic pilots (docs/slurm.md): the daemon's component that submits Slurm allocations running
// scripts/slurm/descprod-pilot.sbatch when ready jobs outnumber free slots, keeps between `min` and
// `max` of them alive (pending or running), backs off when sbatch fails, follows their state with
// squeue, and mirrors every pilot into Redis:
//   <prefix>pilot:<slurm id>  hash: id, state (submitted/running/ended), slurm_state, reason,
//                             submitted_time, started_time, ended_time, nodes, walltime_minutes,
//                             slots, workers (comma-separated worker ids), output
//   <prefix>pilots            set: the IDs of the pilots alive (submitted or running)
// An ended pilot leaves the set; its hash stays for ended_ttl.
//
// sbatch and squeue run as child processes (posix_spawn, no shell) awaited through a pidfd, each
// killed after command_timeout: nothing here blocks the io_context, whatever Slurm does.
// A pilot's workers are recognised by their id, slurm-<job id>-<node> (the sbatch script's).
//
// Pinned pilots (howfig pmb-TMIN-QOS-CONS, docs/slurm.md#jobs-in-an-allocation-of-their-own): for
// each queued job pinned to an allocation of its own, one pilot sized by its howfig (one node, its
// time, QOS, constraint and account) whose worker has the site pin-<job id> and runs that job
// only. They count neither toward min/max nor as slots for other jobs (at most pinned_max alive);
// the pilot hash has `pin` = the job. An sbatch that Slurm refuses (a non-zero exit) fails the
// job with Slurm's answer; one that could not run (timeout, no sbatch) is tried again later.
//
// Thread-safety: none; everything runs on the daemon's io_context thread.
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/job.hpp"
#include "core/keys.hpp"
#include "core/redis.hpp"

namespace descprod {

namespace net = boost::asio;

// What the queue asks of the pilots, computed by the daemon at each check.
struct pilot_demand {
  std::size_t ready = 0;     // ready jobs a pilot could run
  long long free_slots = 0;  // credits of connected workers that are not draining
};

// The outcome of a program run with a deadline.
struct command_result {
  int exit_code = 0;
  int signal = 0;
  bool timed_out = false;  // killed (SIGKILL to its process group) at the deadline
  std::string output;      // stdout and stderr, merged
  std::string error;       // it could not be started (e.g. no such program)
  bool ok() const { return error.empty() && !timed_out && signal == 0 && exit_code == 0; }
};

// Runs argv (no shell; argv[0] looked up in PATH) with `env` as its whole environment; after
// `timeout` its process group is killed. Output goes through a file in `scratch_dir`, removed
// afterwards. Never throws for the program's failures: they are in the result.
net::awaitable<command_result> async_run_command(net::any_io_executor ex, std::vector<std::string> argv,
                                                 std::vector<std::string> env,
                                                 std::chrono::milliseconds timeout, std::string scratch_dir);

class pilot_manager {
 public:
  // `demand` is called at each check; `redis` must outlive the manager.
  pilot_manager(net::any_io_executor ex, pilots_config cfg, redis_client& redis, std::string prefix,
                std::function<pilot_demand()> demand);

  // Loads the pilots alive from Redis (a daemon restart), then checks demand every
  // check_interval and squeue every squeue_interval until stop().
  net::awaitable<void> run();
  void stop();

  // A worker said hello / left. Ids of the form slurm-<job id>-<node> belong to that pilot.
  void on_worker_hello(const std::string& worker_id);
  void on_worker_left(const std::string& worker_id);

  // The Slurm job id in a pilot worker's id, if it has the form slurm-<digits>-<node>.
  static std::optional<std::string> pilot_of(const std::string& worker_id);

  // Pinned pilots: `queued` lists the queued jobs pinned to an allocation of their own (at most
  // the number given); `is_queued(job)` says whether one is; `refused(job, exit code, Slurm's
  // answer)` fails one whose sbatch Slurm refused. Without them no pinned pilot is submitted.
  void set_pinned(std::function<std::vector<job_id>(std::size_t)> queued,
                  std::function<bool(job_id)> is_queued,
                  std::function<void(job_id, int, std::string)> refused);
  // `why_down(site)`: why no pilot may be submitted to the site now ("" when one may: the site
  // status, site_status.hpp). Without it pilots are submitted whatever the site's status.
  void set_site_down(std::function<std::string(const std::string&)> why_down) {
    why_down_ = std::move(why_down);
  }
  // This manager takes back, at start, the pilots in Redis whose hash has no `site` (written
  // before pilots had one, or with no site configured): the first site's does.
  void adopt_unlabelled_pilots() { adopts_unlabelled_ = true; }
  // The site of the worker of the pilot pinned to `job`, and the job such a site is pinned to.
  static std::string pin_site(job_id job);
  static std::optional<job_id> pinned_job(std::string_view site);
  // The sbatch command line of the pilot of one pinned job (its howfig parsed).
  std::vector<std::string> pinned_sbatch_argv(const batch_howfig& b) const;

  // Pilots alive (submitted or running) but pinned ones, counting an sbatch in flight.
  std::size_t alive() const { return pilots_.size() - pinned_alive() + (submitting_ ? 1 : 0); }
  // Pinned pilots alive.
  std::size_t pinned_alive() const;
  // Slots expected from pilots whose workers have not connected yet.
  long long pending_slots() const;
  // The sbatch command line for one pilot (for the log and the tests).
  std::vector<std::string> sbatch_argv() const;

  static constexpr std::chrono::hours ended_ttl{24};

 private:
  struct pilot {
    std::string id;
    std::string state = "submitted";  // submitted, running, ended
    std::string slurm_state;          // as squeue last said (PENDING, RUNNING, ...)
    std::string reason;
    double submitted_time = 0, started_time = 0, ended_time = 0;
    int nodes = 1;
    int walltime_minutes = 0;
    int slots = 0;
    job_id pin = 0;                 // pinned: the one job it runs (0: a pilot for any job)
    bool cancelled = false;         // pinned: scancel sent (its job ended before it started)
    std::set<std::string> workers;  // connected now
    std::set<std::string> seen;     // ever connected
  };

  net::awaitable<void> load();
  net::awaitable<void> check();
  // The environment sbatch passes on to a pilot's workers (descprod-pilot.sbatch reads it).
  std::vector<std::pair<std::string, std::string>> pilot_vars(double idle_timeout_s,
                                                              const std::string& site) const;
  // How long to wait after `failures` failed sbatch runs in a row (backoff_min doubling, to backoff_max).
  std::chrono::milliseconds backoff_after(int failures) const;
  // Why an sbatch run gave no job id, for the log.
  std::string failure_of(const command_result& r) const;
  // A pilot sbatch has just accepted: remembered, written to Redis, returned.
  const pilot& add_pilot(const std::string& id, job_id pin, int nodes, int minutes, int slots);
  net::awaitable<bool> submit_one();
  net::awaitable<void> check_pinned();
  net::awaitable<void> submit_pinned(job_id job);
  net::awaitable<void> cancel_orphaned_pinned();
  net::awaitable<void> refresh();
  void mark_running(pilot& p, const char* why);
  void mark_ended(const std::string& id, std::string slurm_state, std::string reason);
  // Writes the pilot's hash (all fields) and its set membership; best effort (Redis may be away:
  // the next change writes the whole hash again).
  void write(const pilot& p);

  net::any_io_executor ex_;
  pilots_config cfg_;
  redis_client& redis_;
  keys keys_;  // Redis keys (core/keys.hpp)
  std::function<pilot_demand()> demand_;
  std::function<std::vector<job_id>(std::size_t)> pinned_queued_;
  std::function<bool(job_id)> pinned_is_queued_;
  std::function<void(job_id, int, std::string)> pinned_refused_;
  bool adopts_unlabelled_ = false;
  std::function<std::string(const std::string&)> why_down_;
  std::string down_;         // why the site is down, as last logged ("" when it was not)
  int pinned_failures_ = 0;  // pinned sbatch runs that failed in a row (not refusals)
  std::chrono::steady_clock::time_point pinned_backoff_until_{};
  std::map<std::string, pilot> pilots_;  // alive, by Slurm job id
  bool stopping_ = false;
  bool submitting_ = false;
  int failures_ = 0;  // sbatch failures in a row
  std::chrono::steady_clock::time_point backoff_until_{};
  std::chrono::steady_clock::time_point next_squeue_{};
  net::steady_timer timer_;
};

}  // namespace descprod
