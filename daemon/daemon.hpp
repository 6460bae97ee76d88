// The queue daemon (DESIGN §2, §4): holds the ready queue in memory (priority, then FIFO), leases
// jobs to workers that ask for work (credit-based pull), tracks heartbeats both ways, requeues the
// jobs of lost workers, forwards cancels, and writes every transition through the store's Lua
// scripts. Its memory is a cache of Redis: it is rebuilt at start and reconciled periodically.
// Workers in Slurm allocations announce their walltime; jobs that would outrun it go elsewhere
// (docs/protocol.md, Walltime). With pilots enabled, a pilot_manager (pilots.hpp) submits Slurm
// allocations when ready jobs outnumber free slots.
//
// Thread-safety: none; everything runs on one io_context thread.
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <zmq.hpp>

#include "core/config.hpp"
#include "core/protocol.hpp"
#include "core/redis.hpp"
#include "core/store.hpp"
#include "core/zmq_asio.hpp"
#include "daemon/pilots.hpp"
#include "daemon/ready_queue.hpp"
#include "daemon/worker_auth.hpp"

namespace descprod {

using clock_type = std::chrono::steady_clock;

struct daemon_stats {
  std::uint64_t leased = 0;
  std::uint64_t finished = 0;
  std::uint64_t requeued = 0;
  std::uint64_t stale_events = 0;
  std::uint64_t malformed = 0;
  std::uint64_t handed_back = 0;
  std::uint64_t walltime_refusals = 0;  // jobs kept from a worker whose allocation ends too soon
  std::uint64_t lease_expiries = 0;     // workers declared lost for silence
  std::uint64_t workers_refused = 0;    // hellos refused (bad token, protocol, another worker's id)
  std::uint64_t reports_refused = 0;    // job reports for a job the connection does not hold
};

class queue_daemon {
 public:
  queue_daemon(net::io_context& io, descprod_config cfg, app_registry apps);
  ~queue_daemon();

  // Binds the sockets, connects Redis, rebuilds the queue, and runs until stop().
  net::awaitable<void> run();
  void stop();
  // SIGTERM: takes no new work (no dispatch, no hello, gateway notices ignored), goes on taking
  // worker reports, and writes the outbox to Redis until it is empty or daemon.stop_deadline has
  // passed; then stop(). Workers re-send whatever was not acknowledged to the next daemon.
  net::awaitable<void> drain_and_stop();

  const daemon_stats& stats() const { return stats_; }
  std::size_t queued() const { return ready_.size(); }

 private:
  struct running_job {
    job_id id;
    long long attempt;
    bool started = false;
  };
  struct worker_state {
    std::string routing;  // ZeroMQ routing id of its current connection
    std::string id;
    std::string owner;
    std::string host;
    std::string pool;
    int slots = 0;
    int prefetch = 0;  // from hello: jobs it queues beyond its slots (credits may reach slots + prefetch)
    int credits = 0;
    bool draining = false;  // sent `drain`: gets no more jobs
    clock_type::time_point last_seen;
    std::map<job_id, running_job> jobs;
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
    // Its worker:<id> hash in Redis: what was last written and when (cron() rewrites the record
    // when these change, and otherwise only refreshes last_heartbeat every few heartbeats).
    bool record_written = false;
    clock_type::time_point record_time;
    std::size_t record_running = 0;
    bool record_draining = false, record_revoked = false;
  };
  struct lease_info {
    std::string worker;  // worker id
    long long attempt;
  };
  // A lease found in Redis at start whose worker has not said hello yet.
  // A hello adopts only its own leases (id and attempt), of owners its token may run.
  struct orphan_lease {
    clock_type::time_point deadline;  // requeued then if still unclaimed
    std::string worker;               // the worker it was leased to ("" when unknown)
    long long attempt = 0;            // the attempt Redis says it runs
    std::string owner;                // the job's owner (descname)
  };
  // A Redis write that must not be lost: kept in the outbox until Redis has taken it.
  struct pending_write {
    enum class kind { report, requeue, orphan, commands };
    explicit pending_write(kind k) : what(k) {}
    kind what;
    std::string worker;
    std::string command;  // report: started/progress/finished
    boost::json::object body;
    job_id id = 0;
    long long attempt = 0;
    store::requeue_mode mode = store::requeue_mode::plain;
    std::string reason;
    std::vector<std::vector<std::string>> commands;
    // A worker's report or handback that asked for an acknowledgement ("ack": true): sent as
    // [job, attempt, ack_command] once Redis has answered (applied or refused), to the worker's
    // current connection, else to `routing`, the one it came on.
    std::string ack_command;
    std::string routing;
  };

  // Connects (when not connected), loads the scripts and checks that Redis serves (PING: refused
  // with LOADING, BUSY or MISCONF while it cannot); retries until it does or the daemon stops.
  net::awaitable<void> connect_redis();
  // Redis is connected and serving: the daemon leases, writes its outbox, checks tokens.
  bool redis_ready() const { return redis_.connected() && !redis_refusing_; }
  // A Redis call failed because Redis is unavailable (connection lost, or LOADING, BUSY, MISCONF:
  // redis.hpp): hold everything and start the reconnect (connect_redis, then dispatch, reconcile
  // and the token recheck).
  void redis_failed(const std::exception& e);
  void start_reconnect();
  net::awaitable<void> rebuild();
  net::awaitable<void> receive_loop(zmq_socket* sock, bool from_workers);
  net::awaitable<void> cron();
  net::awaitable<void> reconcile();

  void on_worker_message(const std::string& routing, protocol::message msg);
  void on_hello(const std::string& routing, const boost::json::object& body);
  // Token mode: checks the hello's worker token in Redis, then accepts or refuses the worker.
  net::awaitable<void> authenticate(std::string routing, boost::json::object body);
  void accept_hello(const std::string& routing, const boost::json::object& body, const worker_grant& g);
  void refuse_worker(const std::string& routing, const std::string& reason, bool retry);
  void set_grant(worker_state& w, const worker_grant& g);
  // Whether w's token admits jobs of `owner`.
  bool may_run(const worker_state& w, const std::string& owner) const;
  // Whether the worker holds `id` at `attempt` (leased to it and sent): only then are its reports
  // on that job applied.
  static bool holds(const worker_state& w, job_id id, long long attempt);
  // Drops a job report of a job the sender does not hold (logged, counted; acknowledged when the
  // worker asked for an ack, since nothing will ever apply it).
  void refuse_report(const worker_state& w, const std::string& routing, std::string_view command, job_id id,
                     long long attempt, const char* why, bool wants_ack);
  // Every reconcile interval: re-reads each worker's token, owner and pools (revocation, pools).
  net::awaitable<void> recheck_tokens();
  // A job report from a connection the daemon does not know: applied once its token checks out
  // (token mode) — the Lua scripts then check worker and attempt as always.
  net::awaitable<void> apply_unknown_report(pending_write pw, std::string token);
  std::size_t unknown_waiting_ = 0;  // unknown-connection reports waiting for Redis (bounded)
  static constexpr std::size_t max_unknown_waiting = 10000;
  void apply_unknown_report_now(pending_write pw);
  void write_stats();
  void on_gateway_message(const std::string& routing, protocol::message msg);
  void enqueue(job_id id, int priority, const std::string& owner);
  // Takes ready jobs in Redis that the daemon does not hold: (id, score) pairs, owners looked up.
  net::awaitable<std::size_t> take_in(std::vector<std::pair<job_id, double>> jobs);
  // Gives jobs to every worker with credits, round robin; dispatch_to serves one worker.
  void dispatch();
  bool dispatch_to(worker_state& w, double now);
  // Reads `healthy` / `health_reason` of a hello or heartbeat (issue #13: a worker that cannot
  // create run directories says so and gets no jobs until it is healthy again).
  void note_health(worker_state& w, const boost::json::object& body);
  // The walltime rule (docs/slurm.md): a job whose time limit the daemon knows (job_limits_) goes
  // only to a worker whose allocation outlasts it; a job a worker refused never goes back to it.
  bool fits(const worker_state& w, job_id id, double now) const;
  void remember_limit(job_id id, double time_limit_s);
  pilot_demand demand() const;
  // Dispatch leases in batches: dispatch_to() queues a lease, and once per turn of the event loop
  // the queued leases go to Redis as one script call per lease_batch_max (store::async_claim_many);
  // each result then goes on as one lease did (after_lease).
  struct lease_request {
    job_id id;
    double score;
    ready_queue::owner_id owner;
    std::string worker;
    std::string token;
  };
  static constexpr std::size_t lease_batch_max = 256;
  void queue_lease(lease_request r);
  void flush_leases();
  net::awaitable<void> lease_batch(std::vector<lease_request> batch);
  void after_lease(lease_request& q, transition_result& r);
  std::vector<lease_request> lease_queue_;
  bool lease_flush_posted_ = false;
  // The outbox: worker events, requeues and token writes go through it in order; while Redis is
  // away they wait (in memory) and are written when it returns.
  void submit(pending_write w);
  net::awaitable<void> outbox_loop();
  net::awaitable<void> apply(pending_write& w);  // w stays intact for a retry when Redis is away
  struct write_batch;
  net::awaitable<void> apply_one(std::shared_ptr<write_batch> b, std::size_t i);
  // Writes [from, to) of a batch, all worker reports: one script call (store::async_reports).
  net::awaitable<void> apply_reports(std::shared_ptr<write_batch> b, std::size_t from, std::size_t to);
  static constexpr std::size_t reports_per_call = 256;
  static store::report to_report(const pending_write& w);
  void report_applied(const pending_write& w, const transition_result& r);
  // Acknowledges a report or handback that asked for it (queued; sent once per event-loop turn).
  void ack(const pending_write& w);
  void flush_acks();
  std::unordered_map<std::string, boost::json::array> acks_;  // by routing id
  bool acks_posted_ = false;
  void erase_orphan(job_id id);
  void requeue_later(job_id id, long long attempt, std::string worker, store::requeue_mode mode, std::string reason);
  void worker_lost(const std::string& id_ref, const std::string& why);
  void send_worker(const std::string& routing, std::string_view command, const boost::json::object& body);
  worker_state* worker_by_routing(const std::string& routing);
  void spawn(net::awaitable<void> task, const char* what);
  void store_log_lines(job_id id, const boost::json::object& body);
  // Sends commands on the shared connection without waiting for their replies (logged on error).
  void write_detached(std::vector<std::vector<std::string>> cmds, const char* what);
  static constexpr std::chrono::hours job_token_ttl{24 * 7};

  net::io_context& io_;
  descprod_config cfg_;
  app_registry apps_;
  zmq::context_t zctx_{1};
  std::unique_ptr<zap_handler> zap_;  // CURVE (before the sockets: destroyed after them)
  std::unique_ptr<zmq_socket> workers_sock_;
  std::unique_ptr<zmq_socket> gateways_sock_;
  redis_client redis_;
  store store_;
  bool stopping_ = false;
  bool draining_ = false;        // drain_and_stop(): no new work
  bool reconnecting_ = false;
  bool redis_refusing_ = true;   // until connect_redis has seen Redis serve
  std::size_t writes_in_flight_ = 0;  // outbox writes sent to Redis, not yet answered
  std::size_t leases_in_flight_ = 0;  // lease batches sent to Redis, not yet answered

  // Ready queue: per owner, ordered by score (priority then ID).
  ready_queue ready_;
  std::map<std::string, worker_state> workers_;              // by worker id
  std::unordered_map<std::string, std::string> routing_to_id_;
  std::unordered_map<job_id, lease_info> leases_;
  // Leases found in Redis at start whose worker has not said hello yet (see orphan_lease).
  std::unordered_map<job_id, orphan_lease> orphans_;
  std::unordered_map<std::string, std::set<job_id>> orphans_by_worker_;
  std::string rr_;  // round-robin cursor over workers: the last one served
  // Time limits of ready jobs that some worker could not fit (learnt at lease or handback time;
  // the queue itself holds only IDs). Bounded: the lowest IDs go first when it is full.
  std::map<job_id, double> job_limits_;
  static constexpr std::size_t max_job_limits = 100000;
  static constexpr std::size_t max_refused_per_worker = 10000;
  static constexpr long long max_prefetch = 4096;  // a larger prefetch in hello is ignored (0)
  // Jobs dispatch() looks past at the queue's front when they fit no worker with credits.
  static constexpr std::size_t dispatch_scan = 128;
  std::unique_ptr<pilot_manager> pilots_;
  std::deque<pending_write> outbox_;
  net::steady_timer outbox_wake_{io_};
  daemon_stats stats_;
  clock_type::time_point last_reconcile_;
  clock_type::time_point last_heartbeat_sent_;
  bool token_mode_ = true;
};

}  // namespace descprod
