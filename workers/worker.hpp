// The worker daemon's protocol side (docs/protocol.md): one DEALER session with the daemon — hello,
// welcome, credit-based pull of jobs, started/progress/finished reports, heartbeats both ways,
// reconnect with backoff when the daemon falls silent — and the set of job_runs it holds.
//
// Session rules (ZeroMQ Guide, Paranoid Pirate):
//  - anything from the daemon counts as a sign of life; silence for lease_timeout (or no answer to
//    hello within it) closes the socket and, after a backoff of 1 s doubling to 32 s, opens a new
//    one and says hello again, listing the jobs it still holds. Jobs keep running meanwhile.
//  - `started`, `finished` and `handback` are never dropped: each is kept until the daemon
//    acknowledges it (`ack` [job, attempt, command], sent once Redis has the write or refused it as
//    stale), and every one not acknowledged is sent again, in order, after the next welcome. A
//    daemon that does not announce acks in its welcome (an older one) gets each once per welcomed
//    session, as before: kept only while no session is welcomed. `progress` is not kept; the latest
//    message of each job is re-sent after a welcome instead.
//  - credits: the worker asks for as many jobs as it has free slots plus `prefetch`, counting the
//    jobs it already holds and the credits not yet used. Jobs beyond the free slots wait locally
//    (started in arrival order when a slot frees), so a slot does not idle for the round trip
//    ready → daemon → lease → job after each job. Queued jobs are held like running ones: listed
//    in hello and heartbeats, handed back unstarted on a drain, answered `finished` with SIGTERM
//    ("cancelled before it started") on a cancel, checked against the walltime when they start.
//    hello carries `prefetch` so the daemon lets the credits exceed the free slots; a daemon that
//    does not know the field caps them at the free slots (the old behaviour). Should the daemon
//    send more than asked, the extra jobs queue too.
//  - a `reject` answering hello ends the worker with exit code 1; a `reject` with "retry": true, or
//    one during a welcomed session (a daemon that restarted and forgot us), makes it say hello
//    again after the backoff. While stopping, rejects are only logged.
//  - walltime (Slurm pilots, docs/slurm.md): with walltime_end set, a job whose time limit would end
//    after walltime_end - walltime_margin_s is handed back unstarted (`handback` with walltime:
//    true), and a drain's grace is cut so running jobs are handed back before the end.
//  - idle_timeout: with no job for that long the worker drains itself and run() ends with 0.
//
// Thread-safety: none; construct, run() and stop() on the io_context's one thread.
#pragma once

#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include "core/zmq_asio.hpp"
#include "workers/job_run.hpp"

namespace descprod::workers {

struct worker_options {
  std::string endpoint;  // the daemon's worker ROUTER
  std::string id;        // worker id (default <hostname>-<pid>)
  std::string owner = "admin";
  std::string pool = "default";
  std::string site;  // worker.site, --site ("": none)
  std::string host;  // FQDN when known
  int slots = 1;
  // Jobs asked for beyond the free slots, queued here until a slot frees (0: only free slots).
  // The configuration's default is 0 too (worker.prefetch, --prefetch).
  int prefetch = 0;
  run_settings run;                                 // output dir, status poll, kill grace, closeout bound
  std::chrono::milliseconds shutdown_grace{10000};  // SIGTERM → SIGKILL of jobs stopped at exit
  std::chrono::milliseconds drain_grace{30000};     // stop(): running jobs may finish for this long
  // Used until a welcome gives the daemon's values; lease_timeout also bounds the wait for welcome.
  std::chrono::milliseconds heartbeat{1000};
  std::chrono::milliseconds lease_timeout{10000};
  std::chrono::milliseconds reconnect_min{1000};   // backoff after a lost session, doubling …
  std::chrono::milliseconds reconnect_max{32000};  // … up to this
  std::chrono::milliseconds linger_on_exit{2000};  // to deliver the last finished/bye messages
  // With no job for this long, drain and exit 0 (pilots free their allocation); 0: never.
  std::chrono::milliseconds idle_timeout{0};
  // The allocation's end (Unix epoch seconds; 0: none). A job whose app time_limit_s would end
  // later than walltime_end - walltime_margin is handed back (reason "walltime: ..."), and the
  // drain grace is cut so running jobs are handed back before Slurm kills them.
  double walltime_end = 0;
  double walltime_margin_s = 0;
  // The worker token presented in hello and with every message (daemon.worker_auth: token).
  std::string token;
  // CURVE (all three set, Z85): the daemon's public key, this worker's key pair.
  std::string curve_server_key, curve_public_key, curve_secret_key;
  // Job containment (containment.hpp): auto, cgroup or subreaper; "" leaves run.contain as given.
  std::string containment = "auto";
  // The worker is the whole program (descprod-worker): orphans below it are its jobs' (reaped,
  // and killed when it holds no job). Off when embedded in another program (tests).
  bool reap_orphans = false;
};

class worker {
 public:
  // `ctx` must outlive the worker.
  worker(net::any_io_executor ex, zmq::context_t& ctx, worker_options opts);
  ~worker();
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;

  // Connects and serves until stopped: completes after stop() once every job has ended and been
  // reported, or after the daemon rejected the worker (see exit_code()). Throws only for
  // programming errors (e.g. an endpoint ZeroMQ refuses). Call once.
  net::awaitable<void> run();
  // Spawns run() on the worker's executor; `done` gets its exception (null when it ended normally).
  void start(std::function<void(std::exception_ptr)> done);
  // The process exit code run() ended with: 0 after stop(), 1 after a reject.
  int exit_code() const { return exit_code_; }

  // Drain (SIGINT/SIGTERM; Slurm sends it before the walltime ends): send `drain` so the daemon
  // sends no more jobs, hand back the jobs not yet started, let running jobs finish for up to
  // drain_grace, then stop the rest (SIGTERM, SIGKILL after shutdown_grace) and hand them back
  // (`handback`: requeued without using up an attempt); finally `bye`, and run() returns with 0.
  // A second call stops the running jobs at once (still handing them back).
  void stop();

  // The jobs this worker holds, for tests and logs.
  std::size_t running_count() const { return running_.size(); }
  // False while the worker cannot create run directories (full or read-only output disk).
  bool healthy() const { return health_reason_.empty(); }

 private:
  using job_key = std::pair<job_id, int>;  // job id, attempt
  struct outgoing {
    std::string command;
    boost::json::object body;
  };

  std::shared_ptr<zmq_socket> open_session();
  void drop_session();
  net::awaitable<void> receive_loop(std::shared_ptr<zmq_socket> sock);
  net::awaitable<void> cron();
  net::awaitable<void> run_job(std::shared_ptr<job_run> run);

  void handle(const std::vector<zmq::message_t>& frames);
  void on_welcome(const boost::json::object& body);
  void on_reject(const boost::json::object& body);
  void on_job(const boost::json::object& body);
  void on_cancel(const boost::json::object& body);
  void on_log_from(const boost::json::object& body);
  void on_ack(const boost::json::object& body);

  void start_job(job_spec spec);
  // False (and the reason) when the job's time limit would outrun the allocation's walltime.
  bool fits_walltime(const job_spec& spec, std::string& why) const;
  // Starts the job, or hands it back when it does not fit the walltime.
  void start_or_refuse(job_spec spec);

  void after_slot_freed();
  void grant_credits();
  void begin_stop(bool say_bye, std::chrono::milliseconds grace);
  void check_done();

  // quiet: a message not queued is not logged (the hello before any connection is up).
  bool send(std::string_view command, const boost::json::object& body, bool quiet = false);
  void send_reliably(std::string_view command, boost::json::object body);
  boost::json::object hello_body() const;
  boost::json::array held_jobs() const;
  boost::json::object progress_body(const job_run& run) const;

  net::any_io_executor ex_;
  zmq::context_t& ctx_;
  worker_options opts_;
  std::shared_ptr<zmq_socket> socket_;  // null between sessions
  bool welcomed_ = false;
  // The session's hello is queued. With several endpoints (ZMQ_IMMEDIATE) nothing is queued until
  // a connection is up: the cron sends it again each heartbeat until one is.
  bool hello_queued_ = false;
  bool stopping_ = false;
  bool draining_ = false;                         // stop() began a drain (bye comes at its end)
  std::set<std::pair<job_id, int>> handed_back_;  // stopped by the drain: report handback, not finished
  std::set<std::pair<job_id, int>> fenced_;       // of those, stopped by a fence (frozen worker)
  net::steady_timer drain_timer_;
  // A drain whose jobs are done waits for the daemon to acknowledge the reports it still holds,
  // reconnecting at once if it has no session: a worker stopped while its daemon changed must not
  // take a job's `finished` with it (the job would run again). It waits until the drain's
  // deadline (SIGTERM + drain_grace), and at least min(drain_grace, 5 s).
  net::steady_timer ack_timer_;
  std::chrono::steady_clock::time_point drain_deadline_{};
  bool ack_waiting_ = false;
  bool ack_wait_over_ = false;
  void end_drain_grace();
  void hand_back(job_id id, int attempt, const std::string& reason, boost::json::object extra = {});
  bool done_ = false;
  int exit_code_ = 0;
  std::chrono::milliseconds heartbeat_;
  std::chrono::milliseconds lease_timeout_;
  std::chrono::milliseconds backoff_;
  std::chrono::steady_clock::time_point last_heard_;
  std::chrono::steady_clock::time_point hello_sent_;
  std::chrono::steady_clock::time_point idle_since_;  // when the worker last became empty
  int credits_outstanding_ = 0;                       // granted in this session, not yet used by a job
  std::map<job_key, std::shared_ptr<job_run>> running_;
  std::deque<job_spec> queued_;  // sent beyond our credits; started when a slot frees
  // started/finished/handback reports not acknowledged yet (or not sent yet), by the order they
  // were made; indexed by (job, attempt, command), which names one report of one run.
  std::map<std::uint64_t, outgoing> unacked_;
  std::map<std::tuple<job_id, long long, std::string>, std::uint64_t> unacked_index_;
  std::uint64_t next_report_ = 0;
  bool daemon_acks_ = false;  // the daemon of this session acknowledges reports
  // Bound on kept reports (a daemon that says it acks but never does): the oldest go first.
  static constexpr std::size_t max_unacked = 100000;
  void forget_report(std::map<std::uint64_t, outgoing>::iterator it);
  net::steady_timer cron_timer_;
  net::steady_timer backoff_timer_;

  // Health (issue #13): a run directory that cannot be made (ENOSPC, EROFS, EDQUOT, EACCES, …)
  // makes the worker hand the job back (no attempt used), stop asking for jobs, say so in its
  // heartbeats and probe the output directory until it works again.
  std::string health_reason_;  // empty: healthy
  std::chrono::steady_clock::time_point next_probe_;
  void become_unhealthy(const std::string& reason);
  void probe_output_dir();
  // Fencing (issue #13): the worker's own clock jumped past the lease timeout since it last heard
  // the daemon (it was frozen: SIGSTOP, a VM pause). The daemon has declared it lost and
  // requeued its jobs, so they are killed before anything else is done or sent. True when fenced.
  std::chrono::steady_clock::time_point last_turn_;
  bool fence_if_frozen();
  // Job counts (issue #20: no log line per job at info), logged once a minute when they change.
  std::uint64_t jobs_received_ = 0, jobs_finished_ = 0, jobs_failed_ = 0;
  std::uint64_t logged_received_ = 0, logged_finished_ = 0, logged_failed_ = 0;
  std::chrono::steady_clock::time_point counts_logged_ = std::chrono::steady_clock::now();
  void log_job_counts(std::chrono::steady_clock::time_point now);
};

}  // namespace descprod::workers
