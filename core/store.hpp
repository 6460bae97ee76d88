// The Redis store: every job transition is one atomic Lua script that checks the job's current
// state (against the table in job.cpp), its attempt number and its worker, and refuses an illegal
// transition or a stale event. Values always travel as script arguments, never pasted into code.
//
// Keys: every key is built by core/keys.hpp (the layout is written there and in
// docs/architecture.md, Redis layout); the scripts get the keys the caller knows as KEYS and build
// the ones they derive from data they read with the prelude keys::lua_prelude() renders. The
// scripts' convention (KEYS, ARGV, answers) is written at the top of store_scripts.cpp.
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <functional>
#include <iosfwd>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <fmt/format.h>

#include "core/job.hpp"
#include "core/keys.hpp"
#include "core/redis.hpp"

namespace descprod {

// An owner's find index (<prefix>user:<name>:find, keys.hpp): job ID → these fields of the job's
// hash, in this order, joined by US (\x1f; a missing field is empty). The scripts write an entry
// whenever they change the job; GET /api/jobs scans an owner's jobs from it. Only the last field
// (progress, an application's text) may hold US: the others have it replaced by a space.
inline constexpr std::string_view find_fields[] = {
    "state", "jobtype", "archive", "create_time", "start_time", "stop_time", "config", "howfig", "progress"};
inline constexpr char find_separator = '\x1f';

// A dependency of a new job: an existing job (id), or the k-th job of the same create call
// (local_index, 1-based, below the job's own place); after_any: met when it ends whatever its
// state, else only when it is done (docs/api.md, Dependencies).
struct job_dependency {
  job_id id = 0;
  std::size_t local_index = 0;
  bool any = false;
};

struct new_job {
  std::string jobtype;
  std::string config;
  std::string howfig;
  int priority = 0;  // -1000..1000, higher runs first
  std::optional<job_id> parent;
  int max_attempts = 3;
  std::string session;
  bool hold = false;  // held: no worker takes it until it is released or claimed
  std::vector<job_dependency> after;
  // A job of an array: its index, and the array's ID (its first job's; 0: the first job of this
  // create call, which is then the array's first job).
  std::optional<long long> array_index;
  job_id array = 0;
  std::string sites;  // the sites it may run at, sorted, comma-separated ("": any)
};

// Why a script refused. Each name is the word the scripts answer with ({'err', <name>, state});
// parse_refusal reads it (in one place, store.cpp) and an unknown word is an error, not a refusal.
enum class refusal {
  none,        // not refused
  missing,     // no such job
  illegal,     // the transition is not legal from the job's current state
  stale,       // a worker event for another attempt or another worker
  terminal,    // cancel of a job already in a terminal state
  bad_parent,  // create: a parent the owner does not own (or none)
  active,      // delete of a job not in a terminal state
  error,       // batch scripts: this job's keys are broken; `state` holds Redis's message
  bad_op,      // reports: an operation the script does not know (a store bug)
  bad_dep,     // create: a dependency that is not one of the owner's jobs (or a bad '#k')
};
std::string_view to_string(refusal r);
std::optional<refusal> parse_refusal(std::string_view s);
std::ostream& operator<<(std::ostream& os, refusal r);

// The answer of a transition script. ok=false carries the reason and the job's current state.
struct transition_result {
  bool ok = false;
  std::string state;  // the new state when ok, else the current one
  refusal reason = refusal::none;
  long long attempt = 0;
  std::string worker;
  job_record record;  // lease: the job as leased
};

// The answer of async_create.
struct create_result {
  bool ok = false;
  refusal reason = refusal::none;  // bad_parent, bad_dep
  std::string parent;              // bad_parent: the parent refused; bad_dep: the dependency
  std::vector<job_id> ids;         // ok: the jobs' IDs, consecutive, in the order given
  std::vector<job_state> states;   // ok: each job's state (ready, held, waiting or cancelled)
  std::string time;                // ok: the script's Redis time, the jobs' create_time
};

// The answer of async_deps_release: jobs made ready (to be queued by the daemon), how many
// dependents were handled, and whether ended jobs with dependents remain.
struct deps_release_result {
  struct ready_job {
    job_id id = 0;
    int priority = 0;
    std::string owner;
    std::string sites;  // the sites it asked for ("": any)
  };
  std::vector<ready_job> ready;
  long long handled = 0;
  bool more = false;
};

// Where a recount stands after one step.
struct recount_progress {
  bool done = false;   // the recount is complete (or none was under way)
  long long upto = 0;  // the last job ID counted
};

// Reads a transition script's answer (store_scripts.cpp, "Answer"). Throws std::runtime_error on
// a Redis error reply, a malformed answer, or a refusal word refusal does not know.
transition_result to_transition_result(const redis_reply& answer);

// Queue score: priority first (higher first), then ID (lower first).
double queue_score(int priority, job_id id);

// A job's own stream (P job:<id>:events) is created at the job's first event after its submission,
// with the submission's event written first (script helper open_stream): a queued job has none.
// A reader that finds no stream shows that one event, built from the job's create_time ("<s>.<us>")
// exactly as open_stream writes it: the stream entry [ID, [field, value, ...]] with ID "<ms>-0".
// nullopt when create_time is malformed (no job).
std::optional<redis_reply> submit_event_entry(std::string_view create_time);

// A script refused because the caller's fence is not the stored epoch: another daemon has taken
// the lead since (store::set_fence). Nothing was changed.
struct fenced_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class store {
 public:
  store(redis_client& redis, std::string prefix);

  // Fencing (docs/architecture.md, Daemon: leader and standby). Once set, every script this store
  // runs carries `epoch` and the epoch key, and changes nothing unless the stored epoch
  // (<prefix>daemon:epoch) is still `epoch`: a daemon that was deposed (frozen, cut off) cannot
  // write a transition after another daemon took the lead. Such a refusal throws fenced_error,
  // after calling `on_fenced` with Redis's message. Empty (the default: the gateway, the admin
  // tool): no fence.
  void set_fence(std::string epoch) { fence_ = std::move(epoch); }
  const std::string& fence() const { return fence_; }
  std::function<void(const std::string&)> on_fenced;

  // Replication (config redis.wait_replicas, wait_timeout_ms): once set with replicas > 0, every
  // script this store runs (a create, a transition) is followed on its connection by
  // WAIT <replicas> <timeout>, and answered only after it: a write acknowledged to a user or a
  // worker is then on a replica, and survives the master's loss (a Sentinel failover). WAIT
  // blocks the connection, so when it comes back short (the replicas are down or behind) this
  // store stops waiting for `pause` before it tries again; short_waits() counts them.
  void set_replication(int replicas, std::chrono::milliseconds timeout,
                       std::chrono::milliseconds pause = std::chrono::seconds(1));
  long long short_waits() const { return short_waits_; }

  const std::string& prefix() const { return keys_.prefix(); }
  const keys& redis_keys() const { return keys_; }
  std::string job_key(job_id id) const { return keys_.job(id); }

  // Creates jobs for `owner` atomically (one script per call); the result holds their IDs,
  // consecutive. A parent not owned by `owner` refuses the whole call: ok=false, reason
  // refusal::bad_parent, parent = the one refused; nothing is created.
  net::awaitable<create_result> async_create(std::string owner, std::vector<new_job> jobs);
  net::awaitable<transition_result> async_lease(job_id id, std::string worker, double lease_s);
  net::awaitable<transition_result> async_start(job_id id, long long attempt, std::string worker,
                                                std::string host, std::string rundir, long long pid);
  net::awaitable<transition_result> async_progress(job_id id, long long attempt, std::string worker,
                                                   std::string message, std::optional<long long> done,
                                                   std::optional<long long> total);
  net::awaitable<transition_result> async_finish(job_id id, long long attempt, std::string worker,
                                                 job_state target, int return_status, std::string prefix,
                                                 std::string message);
  // Back to ready. requeue_mode::lost: a running job uses up its attempt (out of attempts → lost),
  // a dispatched one (it may have started) gets a new attempt number without using one up;
  // handback: a running job gets a new attempt number without using one up; plain: as is.
  // An empty worker matches any worker.
  enum class requeue_mode { plain = 0, lost = 1, handback = 2 };
  net::awaitable<transition_result> async_requeue(job_id id, long long attempt, std::string worker,
                                                  requeue_mode mode, std::string reason);
  // ready → cancelled at once; dispatched/running → cancel_requested=1 (ok, state
  // "cancel_requested"); terminal → ok=false reason "terminal".
  net::awaitable<transition_result> async_cancel(job_id id, std::string by);

  // Sets the job's `archive` field to 1 or 0 and, when it changes, emits an `archive` or
  // `unarchive` event (job and global streams). Refused: "missing".
  net::awaitable<transition_result> async_set_archive(job_id id, bool archived);
  // A held job handed to the workers (held -> ready, on the queue); a waiting job created held
  // loses its hold (state stays "waiting"). Refused: "missing", "illegal" (state = the current).
  // On success record holds "priority" and "descname" (for the daemon's notice).
  net::awaitable<transition_result> async_release(job_id id, std::string by);
  // Releases the dependents of ended jobs, at most `budget` of them (the daemon calls it until
  // `more` is false, letting other work run between calls): see the deps_release script.
  net::awaitable<deps_release_result> async_deps_release(std::size_t budget);
  // Deletes a job in a terminal state: its hash and its :events, :log and :children keys, its
  // entry in the owner's jobs set and in its parent's children set; emits a `deleted` event on the
  // global stream. Refused: "missing", or "active" (state = the current, non-terminal state).
  net::awaitable<transition_result> async_delete(job_id id);
  // The daemon's dispatch and descprod-start-job's claim: the lease transition (ready → dispatched, off the queue, into the
  // leases set with deadline now + lease_s) for `worker`, and in the same script a job token
  // (hash P token:<token_sha256>: owner = the job's owner, scope "job:<id>", expires, with a Redis
  // TTL of token_ttl_s; the job's hash keeps its sha in field token_sha). The token lives as long
  // as the attempt: finish, requeue, lost, cancel of a ready job and delete delete it; a cancel
  // request of a dispatched or running job marks it read_only=1 (the gateway then lets it read
  // the job and report the run's end, nothing else). Refused: "missing", "illegal" (state = the current state). On success
  // `record` is the job as claimed.
  net::awaitable<transition_result> async_claim(job_id id, std::string worker, double lease_s,
                                                std::string token_sha256, long long token_ttl_s);

  // ---- many transitions in one script call (the daemon's hot path) ----
  // Each element as async_claim would do it, one Redis time for all; a result per request, in
  // order. Throws boost::system::system_error when Redis is unreachable (none applied).
  struct claim_request {
    job_id id = 0;
    std::string worker;
    std::string token_sha256;  // empty: no token
  };
  net::awaitable<std::vector<transition_result>> async_claim_many(std::vector<claim_request> requests,
                                                                  double lease_s, long long token_ttl_s);
  // The daemon's leases written again into a Redis that lost them (the restore_leases script):
  // each job Redis has as ready at `attempt` is leased to `worker` again, and next_job_id is
  // raised to `top`. A result per lease, in order: ok (restored), missing, illegal (nothing to
  // restore). Throws boost::system::system_error when Redis is unreachable or refusing.
  struct held_lease {
    job_id id = 0;
    std::string worker;
    long long attempt = 0;
  };
  net::awaitable<std::vector<transition_result>> async_restore_leases(std::vector<held_lease> leases,
                                                                      double lease_s, job_id top);
  // A worker's reports, one struct per kind, applied as async_start / async_progress /
  // async_finish would (the same Lua functions); each names the job, its attempt and the worker.
  struct start_report {
    job_id id = 0;
    long long attempt = 0;
    std::string worker;
    std::string host;
    std::string rundir;
    long long pid = 0;
  };
  struct progress_report {
    job_id id = 0;
    long long attempt = 0;
    std::string worker;
    std::string message;
    std::optional<long long> done;
    std::optional<long long> total;
  };
  struct finish_report {
    job_id id = 0;
    long long attempt = 0;
    std::string worker;
    job_state target = job_state::done;
    int return_status = 0;
    std::string prefix;  // of the progress string: "Done", "Failed", ...
    std::string message;
  };
  // A piece of the job's log (a worker's `log`): lines each ending in '\n', in `text`; `offset`
  // and `next` the worker's file offsets it covers (absent from an older worker: appended as
  // is); `capped` the worker stopped at the cap. Stored in order in the job's :log stream, at
  // most `cap` bytes a job (docs/architecture.md, Job log).
  struct log_report {
    job_id id = 0;
    long long attempt = 0;
    std::string worker;
    std::optional<long long> offset;
    long long next = 0;
    bool capped = false;
    long long cap = 0;
    std::string text;
    // Each line's end offset, when the worker sent them (a piece after a rewind): lines the
    // stored log already has are dropped from a piece that overlaps it.
    std::vector<long long> ends;
  };
  using report = std::variant<start_report, progress_report, finish_report, log_report>;
  // A run of reports of any kinds in one script call, in order; a result per report.
  net::awaitable<std::vector<transition_result>> async_reports(std::vector<report> reports);

  // ---- jobs by state (P stats:jobs_by_state) ----
  // Every script above that changes a job's state moves one count in that hash (create adds,
  // delete subtracts), in the same atomic script. The counts start with a recount over the
  // existing jobs, which runs in batches of job IDs (each batch one short script) while the
  // service runs; a job is counted exactly once whatever transitions happen meanwhile.
  //
  // Starts a recount when the hash does not exist (force: always, from zero). Returns "started",
  // "rebuilding" (one is under way: step it), or "exists".
  net::awaitable<std::string> async_recount_start(bool force);
  // Counts the next `batch` job IDs of a recount under way.
  net::awaitable<recount_progress> async_recount_step(std::size_t batch);
  // recount_start, then steps until done; returns the last job ID counted.
  net::awaitable<long long> async_recount_states(bool force = false, std::size_t batch = 1000);
  // The counts (state → jobs), or nullopt while they do not exist or a recount runs.
  net::awaitable<std::optional<std::map<std::string, long long>>> async_state_counts();

  net::awaitable<std::optional<job_record>> async_get(job_id id);
  // Loads every script into Redis (SCRIPT LOAD), so the first calls need no NOSCRIPT round trip.
  net::awaitable<void> async_load_scripts();

 private:
  // Runs script `script` with KEYS = the keys every script gets (store_scripts.cpp), then `keys`,
  // and ARGV = the prefix, then `args`.
  net::awaitable<redis_reply> eval(int script, std::vector<std::string> keys, std::vector<std::string> args);
  // Runs one script command, followed by WAIT when `wait` (set_replication).
  net::awaitable<redis_reply> run_script(const std::vector<std::string>& cmd, bool wait);
  net::awaitable<transition_result> eval_result(int script, std::vector<std::string> keys,
                                                std::vector<std::string> args);
  // A job's KEYS group: job:<id>, job:<id>:events.
  std::vector<std::string> job_keys(job_id id) const;
  redis_client& redis_;
  keys keys_;
  std::vector<std::string> head_keys_;
  std::vector<std::string> shas_;
  std::string fence_;
  int wait_replicas_ = 0;
  std::chrono::milliseconds wait_timeout_{100}, wait_pause_{1000};
  std::chrono::steady_clock::time_point wait_paused_until_{};
  long long short_waits_ = 0;
};

// descprod-admin import-jobs (core/job_import.hpp): the EVAL command that writes `jobs` (at most a
// few thousand: one script) with the store's import script, for a plain connection
// (redis_sync); and its answer, one "ok" or "exists" per job (throws on an error reply).
struct imported_job;  // core/job_import.hpp
std::vector<std::string> import_command(const keys& k, const std::vector<imported_job>& jobs);
std::vector<std::string> import_answer(const redis_reply& r, std::size_t n);

// The Lua source of each script, for the tests and for operators who want to read them.
const std::vector<std::string>& store_scripts();

}  // namespace descprod

// For the logger (fmt): a refusal formats as its name.
template <>
struct fmt::formatter<descprod::refusal> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(descprod::refusal r, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(descprod::to_string(r), ctx);
  }
};
