// The worker's session with the daemon and its bookkeeping of jobs; see worker.hpp for the rules.
// Three kinds of coroutine share the state on one thread: run() (session loop: connect, receive,
// back off), cron() (heartbeats and the liveness check, every heartbeat interval) and one run_job()
// per job. A session ends by closing its socket, which makes its receive loop return.
#include "workers/worker.hpp"

#include <boost/asio/as_tuple.hpp>
#include <csignal>
#include <filesystem>

#include "core/config.hpp"
#include "core/curve.hpp"
#include "core/log.hpp"
#include "core/protocol.hpp"
#include "workers/run_files.hpp"

namespace descprod::workers {

namespace fs = std::filesystem;

namespace {
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Completion handler for co_spawn: an exception escaping a task is logged once, here.
struct log_failure {
  const char* task;
  void operator()(std::exception_ptr e) const {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log::error("task failed task={} error={}", task, ex.what());
    }
  }
};

boost::json::object job_ref(job_id id, int attempt) {
  boost::json::object o;
  o["job"] = id;
  o["attempt"] = attempt;
  return o;
}

long long ms(milliseconds d) { return static_cast<long long>(d.count()); }

double epoch_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// How often an unhealthy worker tries to create a run directory again.
constexpr milliseconds probe_interval{1000};

// Bounds for the daemon's timing values, in ms: below 10 ms we would spin, above an hour is a typo.
constexpr long long min_interval_ms = 10;
constexpr long long max_interval_ms = 3600 * 1000;
}  // namespace

worker::worker(net::any_io_executor ex, zmq::context_t& ctx, worker_options opts)
    : ex_(std::move(ex)),
      ctx_(ctx),
      opts_(std::move(opts)),
      drain_timer_(ex_),
      ack_timer_(ex_),
      heartbeat_(opts_.heartbeat),
      lease_timeout_(opts_.lease_timeout),
      backoff_(opts_.reconnect_min),
      cron_timer_(ex_),
      backoff_timer_(ex_) {
  if (opts_.slots < 1) opts_.slots = 1;
  if (opts_.prefetch < 0) opts_.prefetch = 0;
  if (!opts_.containment.empty() && !opts_.run.contain)
    opts_.run.contain = std::make_shared<containment>(opts_.containment, opts_.reap_orphans);
  // The worker's own token never reaches a job: not in its environment, not in the
  // descprod-env.log a login shell writes into its run directory.
  if (!opts_.run.environment)
    opts_.run.environment =
        std::make_shared<const environment_template>(std::vector<std::string>{"DESCPROD_WORKER_TOKEN"});
}

worker::~worker() {
  if (socket_) socket_->close();
}

net::awaitable<void> worker::run() {
  log::info(
      "worker starting worker={} endpoint={} slots={} prefetch={} output_dir={} pool={} owner={} token={} curve={}",
      opts_.id, opts_.endpoint, opts_.slots, opts_.prefetch, opts_.run.output_dir.string(), opts_.pool,
      opts_.owner, opts_.token.empty() ? "none" : "set", opts_.curve_server_key.empty() ? "off" : "on");
  if (opts_.walltime_end > 0 || opts_.idle_timeout.count() > 0)
    log::info(
        "worker limits walltime_end={:.0f} walltime_left_s={:.0f} walltime_margin_s={} idle_timeout_ms={}",
        opts_.walltime_end, opts_.walltime_end > 0 ? opts_.walltime_end - epoch_now() : 0.0,
        opts_.walltime_margin_s, ms(opts_.idle_timeout));
  if (opts_.run.contain)
    log::info("job containment mode={} detail={}", opts_.run.contain->mode(), opts_.run.contain->detail());
  idle_since_ = steady::now();
  last_turn_ = idle_since_;
  net::co_spawn(ex_, cron(), log_failure{"cron"});
  while (!done_) {
    auto sock = open_session();
    co_await receive_loop(sock);
    if (done_) break;
    log::info("reconnecting to daemon in_ms={}", ms(backoff_));
    backoff_timer_.expires_after(backoff_);
    co_await backoff_timer_.async_wait(net::as_tuple(net::use_awaitable));
    backoff_ = std::min(backoff_ * 2, opts_.reconnect_max);
  }
  cron_timer_.cancel();
  log::info("worker stopped worker={} exit_code={} jobs_received={} jobs_finished={} jobs_failed={}",
            opts_.id, exit_code_, jobs_received_, jobs_finished_, jobs_failed_);
}

void worker::start(std::function<void(std::exception_ptr)> done) {
  net::co_spawn(ex_, run(), std::move(done));
}

std::shared_ptr<zmq_socket> worker::open_session() {
  auto sock = std::make_shared<zmq_socket>(ex_, ctx_, zmq::socket_type::dealer);
  if (!opts_.curve_server_key.empty()) {
    auto set_key = [&](auto opt, const std::string& z85) {
      auto k = curve_decode(z85);
      sock->raw().set(opt, zmq::const_buffer(k.data(), k.size()));
    };
    set_key(zmq::sockopt::curve_serverkey, opts_.curve_server_key);
    set_key(zmq::sockopt::curve_publickey, opts_.curve_public_key);
    set_key(zmq::sockopt::curve_secretkey, opts_.curve_secret_key);
  }
  // Several endpoints (daemons on other hosts standing by): connected to all; only the leader
  // binds, and with immediate set messages go only to connections that are up.
  const auto endpoints = endpoint_list(opts_.endpoint);
  if (endpoints.size() > 1) sock->raw().set(zmq::sockopt::immediate, 1);
  for (const auto& ep : endpoints) sock->raw().connect(ep);
  socket_ = sock;
  welcomed_ = false;
  hello_sent_ = steady::now();
  last_heard_ = hello_sent_;
  hello_queued_ = send(protocol::hello, hello_body(), endpoints.size() > 1);
  if (hello_queued_)
    log::info("hello sent worker={} endpoint={} holding={}", opts_.id, opts_.endpoint, held_jobs().size());
  else log::info("hello waits for a daemon worker={} endpoint={}", opts_.id, opts_.endpoint);
  return sock;
}

void worker::drop_session() {
  welcomed_ = false;
  if (socket_) {
    socket_->close();  // its receive loop sees operation_aborted and returns
    socket_.reset();
  }
}

net::awaitable<void> worker::receive_loop(std::shared_ptr<zmq_socket> sock) {
  while (sock == socket_) {
    std::vector<zmq::message_t> frames;
    try {
      frames = co_await sock->async_recv();
    } catch (const boost::system::system_error&) {
      co_return;  // the session was closed
    }
    if (sock != socket_) co_return;
    handle(frames);
  }
}

net::awaitable<void> worker::cron() {
  while (!done_) {
    cron_timer_.expires_after(heartbeat_);
    co_await cron_timer_.async_wait(net::as_tuple(net::use_awaitable));
    if (done_) break;
    if (fence_if_frozen()) continue;
    auto now = steady::now();
    if (!health_reason_.empty() && now >= next_probe_) probe_output_dir();
    // Orphans of jobs that ended on their own are reaped; with no job, nothing may be left below.
    if (opts_.run.contain) opts_.run.contain->sweep(running_.empty() && queued_.empty());
    log_job_counts(now);
    if (opts_.idle_timeout.count() > 0 && !stopping_ && running_.empty() && queued_.empty() &&
        now - idle_since_ >= opts_.idle_timeout) {
      // Pilots: an allocation without work is given back to the batch system.
      log::info("idle timeout: draining worker={} idle_ms={}", opts_.id,
                ms(std::chrono::duration_cast<milliseconds>(now - idle_since_)));
      stop();
      continue;
    }
    if (!socket_) continue;  // backing off between sessions
    if (welcomed_) {
      auto silent = std::chrono::duration_cast<milliseconds>(now - last_heard_);
      if (silent > lease_timeout_) {
        log::warn("daemon silent, reconnecting silent_ms={} lease_timeout_ms={}", ms(silent),
                  ms(lease_timeout_));
        drop_session();
        continue;
      }
      boost::json::object body;
      body["running"] = held_jobs();
      body["healthy"] = health_reason_.empty();
      if (!health_reason_.empty()) body["health_reason"] = health_reason_;
      send(protocol::heartbeat, body);
    } else if (!hello_queued_) {
      // No connection was up for the hello (several endpoints, none bound yet): try again.
      hello_queued_ = send(protocol::hello, hello_body(), true);
      if (hello_queued_) {
        hello_sent_ = now;
        last_heard_ = now;
        log::info("hello sent worker={} endpoint={} holding={}", opts_.id, opts_.endpoint,
                  held_jobs().size());
      }
    } else {
      auto waited = std::chrono::duration_cast<milliseconds>(now - hello_sent_);
      if (waited > lease_timeout_) {
        log::warn("no answer to hello, reconnecting waited_ms={}{}", ms(waited),
                  opts_.curve_server_key.empty()
                      ? ""
                      : " (CURVE: is this worker's public key authorized by the daemon?)");
        drop_session();
      }
    }
  }
}

void worker::log_job_counts(steady::time_point now) {
  // One line a minute while jobs come and go (none while idle): what a line per job used to say.
  if (now - counts_logged_ < std::chrono::seconds(60)) return;
  if (jobs_received_ != logged_received_ || jobs_finished_ != logged_finished_) {
    log::info("jobs received={} finished={} failed={} running={} queued={} since_s={}",
              jobs_received_ - logged_received_, jobs_finished_ - logged_finished_,
              jobs_failed_ - logged_failed_, running_.size(), queued_.size(),
              std::chrono::duration_cast<std::chrono::seconds>(now - counts_logged_).count());
    logged_received_ = jobs_received_;
    logged_finished_ = jobs_finished_;
    logged_failed_ = jobs_failed_;
  }
  counts_logged_ = now;
}

void worker::handle(const std::vector<zmq::message_t>& frames) {
  // Before anything of this message counts (it may be a job or heartbeat queued while we were
  // frozen): fence first.
  if (fence_if_frozen()) return;
  last_heard_ = steady::now();
  // Tolerate an empty delimiter frame, as a REQ-style peer would send.
  std::size_t first = (frames.size() == 3 && frames[0].size() == 0) ? 1 : 0;
  std::string why;
  auto msg = protocol::decode(frames, first, why);
  if (!msg) {
    log::warn("malformed message from daemon dropped reason={}", why);
    return;
  }
  const auto& cmd = msg->command;
  if (cmd == protocol::welcome) on_welcome(msg->body);
  else if (cmd == protocol::reject) on_reject(msg->body);
  else if (cmd == protocol::job) on_job(msg->body);
  else if (cmd == protocol::cancel) on_cancel(msg->body);
  else if (cmd == protocol::log_from) on_log_from(msg->body);
  else if (cmd == protocol::ack) on_ack(msg->body);
  else if (cmd == protocol::heartbeat) {
  }  // liveness only
  else
    log::warn("unexpected command from daemon dropped command={}", cmd);
}

void worker::on_welcome(const boost::json::object& body) {
  if (auto proto = protocol::get_int(body, "protocol"); proto && *proto != protocol::version) {
    log::error("daemon speaks another protocol version ours={} theirs={}", protocol::version, *proto);
    begin_stop(false, opts_.shutdown_grace);
    exit_code_ = 1;
    return;
  }
  auto hb = protocol::get_int(body, "heartbeat_ms");
  if (hb && *hb >= min_interval_ms && *hb <= max_interval_ms) heartbeat_ = milliseconds(*hb);
  else if (body.contains("heartbeat_ms"))
    log::warn("welcome heartbeat_ms ignored: not an integer in [10, 3600000]");
  auto lt = protocol::get_int(body, "lease_timeout_ms");
  if (lt && *lt >= min_interval_ms && *lt <= max_interval_ms) lease_timeout_ = milliseconds(*lt);
  else if (body.contains("lease_timeout_ms"))
    log::warn("welcome lease_timeout_ms ignored: not an integer in [10, 3600000]");

  welcomed_ = true;
  backoff_ = opts_.reconnect_min;
  credits_outstanding_ = 0;  // a new session starts with no credits on the daemon's side
  daemon_acks_ = protocol::get_bool(body, "acks").value_or(false);
  log::info("welcomed by daemon worker={} minor={} heartbeat_ms={} lease_timeout_ms={} resending={} acks={}",
            opts_.id, protocol::get_int(body, "minor").value_or(0), ms(heartbeat_), ms(lease_timeout_),
            unacked_.size(), daemon_acks_);

  // Every report the daemon has not acknowledged, in the order they were made: a daemon that
  // restarted may never have written them. One it wrote already is refused as stale and
  // acknowledged. Without acks (an older daemon) a report sent now is forgotten, as before.
  for (auto it = unacked_.begin(); it != unacked_.end();) {
    if (!send(it->second.command, it->second.body)) break;
    if (daemon_acks_) ++it;
    else forget_report(it++);
  }
  for (const auto& [key, run] : running_)
    if (run->started() && !run->message().empty()) send(protocol::progress, progress_body(*run));
  if (draining_) send(protocol::drain, boost::json::object());  // a new daemon must know too
  else if (stopping_) send(protocol::bye, boost::json::object());
  else grant_credits();
  cron_timer_.cancel();  // restart the cron with the daemon's heartbeat interval
}

void worker::on_reject(const boost::json::object& body) {
  auto reason = protocol::get_string(body, "reason").value_or("(no reason given)");
  bool retry = protocol::get_bool(body, "retry").value_or(false);
  if (stopping_ && !(ack_waiting_ && retry)) {
    // After bye the daemon no longer knows us; the drain goes on regardless.
    log::info("daemon rejected a stopping worker reason={}", reason);
    return;
  }
  // (A drain waiting for acknowledgements says hello again, so its reports can go.)
  if (!welcomed_ && !retry) {
    log::error("daemon rejected worker worker={} reason={}", opts_.id, reason);
    exit_code_ = 1;
    begin_stop(false, opts_.shutdown_grace);
    return;
  }
  // A daemon that restarted (or declared us lost) asks for a new hello.
  log::warn("daemon asks for a new hello reason={}", reason);
  drop_session();
}

void worker::on_job(const boost::json::object& body) {
  std::string why;
  auto spec = parse_job_message(body, why);
  if (!spec) {
    log::warn("malformed job message dropped reason={}", why);
    return;
  }
  if (stopping_) {
    // It crossed our drain (or stop) on the wire: give it straight back so it runs elsewhere.
    log::warn("job refused, worker is stopping job_id={} attempt={}", spec->id, spec->attempt);
    hand_back(spec->id, spec->attempt, "arrived while the worker was stopping");
    return;
  }
  if (!health_reason_.empty()) {
    // Sent before the daemon learnt we are unhealthy: back at once, it would fail here.
    if (credits_outstanding_ > 0) --credits_outstanding_;
    hand_back(spec->id, spec->attempt, "worker unhealthy: " + health_reason_);
    return;
  }
  job_key key{spec->id, spec->attempt};
  bool duplicate = running_.count(key) > 0;
  for (const auto& q : queued_) duplicate = duplicate || (q.id == spec->id && q.attempt == spec->attempt);
  if (duplicate) {
    log::warn("duplicate job message dropped job_id={} attempt={}", spec->id, spec->attempt);
    return;
  }
  if (credits_outstanding_ > 0) --credits_outstanding_;
  log::debug("job received job_id={} attempt={} program={}", spec->id, spec->attempt, spec->argv.front());
  ++jobs_received_;
  if (static_cast<int>(running_.size()) < opts_.slots) {
    start_or_refuse(std::move(*spec));
  } else {
    // Prefetched (asked for ahead): waits for a slot. More than that is the daemon's doing.
    if (static_cast<int>(queued_.size()) < opts_.prefetch)
      log::debug("job queued for a free slot job_id={} attempt={} queued={}", spec->id, spec->attempt,
                 queued_.size() + 1);
    else
      log::warn(
          "daemon sent more jobs than asked for, queueing job_id={} attempt={} running={} slots={} queued={}",
          spec->id, spec->attempt, running_.size(), opts_.slots, queued_.size());
    queued_.push_back(std::move(*spec));
  }
}

void worker::on_log_from(const boost::json::object& body) {
  auto id = protocol::get_int(body, "job");
  auto attempt = protocol::get_int(body, "attempt");
  auto offset = protocol::get_int(body, "offset");
  if (!id || !attempt || !offset || *offset < 0) {
    log::warn("malformed log_from message dropped reason=job, attempt and offset must be integers");
    return;
  }
  auto it = running_.find(job_key{*id, static_cast<int>(*attempt)});
  if (it != running_.end()) it->second->rewind_log(static_cast<std::uintmax_t>(*offset));
}

void worker::on_cancel(const boost::json::object& body) {
  auto id = protocol::get_int(body, "job");
  if (!id) {
    log::warn("malformed cancel message dropped reason=job: missing or not an integer");
    return;
  }
  auto attempt = protocol::get_int(body, "attempt");
  bool found = false;
  for (auto& [key, run] : running_) {
    if (key.first != *id || (attempt && key.second != *attempt)) continue;
    log::info("cancel job_id={} attempt={}", key.first, key.second);
    run->terminate(opts_.run.kill_grace);
    found = true;
  }
  for (auto it = queued_.begin(); it != queued_.end();) {
    if (it->id != *id || (attempt && it->attempt != *attempt)) {
      ++it;
      continue;
    }
    // It never ran: report it ended by the SIGTERM it would have received.
    log::info("cancel of a queued job job_id={} attempt={}", it->id, it->attempt);
    auto msg = job_ref(it->id, it->attempt);
    msg["rc"] = 0;
    msg["signal"] = SIGTERM;
    msg["timed_out"] = false;
    msg["message"] = "cancelled before it started";
    send_reliably(protocol::finished, std::move(msg));
    it = queued_.erase(it);
    found = true;
  }
  if (!found) log::info("cancel for a job not held here job_id={}", *id);
  else grant_credits();
}

bool worker::fits_walltime(const job_spec& spec, std::string& why) const {
  if (opts_.walltime_end <= 0 || spec.time_limit_s <= 0) return true;  // unknown length: the drain copes
  double left = opts_.walltime_end - opts_.walltime_margin_s - epoch_now();
  if (spec.time_limit_s <= left) return true;
  char buf[160];
  std::snprintf(buf, sizeof buf, "walltime: time limit %.0f s, %.0f s left in the allocation",
                spec.time_limit_s, std::max(0.0, left));
  why = buf;
  return false;
}

void worker::start_or_refuse(job_spec spec) {
  std::string why;
  if (fits_walltime(spec, why)) {
    start_job(std::move(spec));
    return;
  }
  // Hand it back unstarted: the daemon requeues it as it was and remembers not to send it here.
  boost::json::object extra;
  extra["walltime"] = true;
  extra["time_limit_s"] = spec.time_limit_s;
  hand_back(spec.id, spec.attempt, why, std::move(extra));
  grant_credits();
}

void worker::start_job(job_spec spec) {
  job_key key{spec.id, spec.attempt};
  job_observer obs;
  obs.on_started = [this](const job_run& r) {
    auto body = job_ref(r.spec().id, r.spec().attempt);
    body["pid"] = r.pid();
    body["host"] = opts_.host;
    body["rundir"] = r.rundir().string();
    send_reliably(protocol::started, std::move(body));
  };
  obs.on_progress = [this](const job_run& r) {
    if (welcomed_) send(protocol::progress, progress_body(r));  // re-sent after the next welcome
  };
  obs.on_log = [this](const job_run& r, log_chunk chunk) {
    // Not while the daemon is away: the log file keeps the lines, offered again after the next
    // welcome. A chunk lost with a connection shows in the stored log as a noted gap.
    if (!welcomed_) return false;
    auto body = job_ref(r.spec().id, r.spec().attempt);
    boost::json::array arr;
    arr.reserve(chunk.lines.size());
    for (auto& l : chunk.lines) arr.emplace_back(std::move(l));
    body["lines"] = std::move(arr);
    body["offset"] = chunk.offset;
    body["next"] = chunk.next;
    if (!chunk.ends.empty()) {
      boost::json::array ends;
      ends.reserve(chunk.ends.size());
      for (auto e : chunk.ends) ends.emplace_back(e);
      body["ends"] = std::move(ends);
    }
    if (chunk.capped) body["capped"] = true;
    send(protocol::log_lines, std::move(body));
    return true;
  };
  auto run = std::make_shared<job_run>(ex_, std::move(spec), opts_.run, std::move(obs));
  running_[key] = run;
  if (stopping_) run->terminate(opts_.shutdown_grace);
  net::co_spawn(ex_, run_job(run), log_failure{"job"});
}

net::awaitable<void> worker::run_job(std::shared_ptr<job_run> run) {
  job_result res;
  try {
    res = co_await run->run();
  } catch (const std::exception& e) {
    log::error("job runner failed job_id={} attempt={} error={}", run->spec().id, run->spec().attempt,
               e.what());
    res.rc = 127;
    res.message = std::string("worker error: ") + e.what();
  }
  const auto id = run->spec().id;
  const auto attempt = run->spec().attempt;
  running_.erase(job_key{id, attempt});
  if (running_.empty() && queued_.empty()) idle_since_ = steady::now();
  log::debug("job finished job_id={} attempt={} rc={} signal={} timed_out={}", id, attempt, res.rc,
             res.signal, res.timed_out);
  ++jobs_finished_;
  if (res.rc != 0 || res.signal != 0 || res.timed_out) ++jobs_failed_;
  if (handed_back_.erase(job_key{id, attempt})) {
    hand_back(id, attempt,
              fenced_.erase(job_key{id, attempt}) ? "stopped by a worker that was frozen past its lease"
                                                  : "stopped by a draining worker after its drain grace");
  } else if (res.prepare_failed) {
    // The disk, not the job: back to the queue without using an attempt, and no more jobs here
    // until a probe shows run directories can be made again.
    hand_back(id, attempt, "cannot create a run directory: " + res.prepare_error.message());
    become_unhealthy("cannot create run directories in " + opts_.run.output_dir.string() + ": " +
                     res.prepare_error.message());
  } else {
    auto body = job_ref(id, attempt);
    body["rc"] = res.rc;
    body["signal"] = res.signal;
    body["timed_out"] = res.timed_out;
    body["message"] = res.message;
    send_reliably(protocol::finished, std::move(body));
  }
  after_slot_freed();
}

void worker::after_slot_freed() {
  if (stopping_) {
    check_done();
    return;
  }
  if (!health_reason_.empty()) {
    for (const auto& q : queued_) hand_back(q.id, q.attempt, "worker unhealthy: " + health_reason_);
    queued_.clear();
  }
  while (static_cast<int>(running_.size()) < opts_.slots && !queued_.empty()) {
    auto spec = std::move(queued_.front());
    queued_.pop_front();
    start_or_refuse(std::move(spec));
  }
  grant_credits();
}

void worker::grant_credits() {
  if (!welcomed_ || stopping_ || !health_reason_.empty()) return;
  int want = opts_.slots + opts_.prefetch - static_cast<int>(running_.size()) -
             static_cast<int>(queued_.size()) - credits_outstanding_;
  if (want <= 0) return;
  boost::json::object body;
  body["credits"] = want;
  if (send(protocol::ready, body)) credits_outstanding_ += want;
}

void worker::stop() {
  if (stopping_) {
    log::warn("second stop request: stopping jobs now");
    if (draining_) end_drain_grace();
    for (auto& [key, run] : running_) run->terminate(milliseconds(0));
    return;
  }
  auto grace = opts_.drain_grace;
  if (opts_.walltime_end > 0) {
    // Running jobs must be handed back before Slurm kills the allocation, with time to stop them.
    double left = opts_.walltime_end - opts_.walltime_margin_s - epoch_now() -
                  std::chrono::duration<double>(opts_.shutdown_grace).count();
    grace = std::min(grace, milliseconds(static_cast<long long>(std::max(0.0, left) * 1000)));
  }
  log::info("worker draining worker={} running={} queued={} drain_grace_ms={}", opts_.id, running_.size(),
            queued_.size(), ms(grace));
  stopping_ = true;
  draining_ = true;
  drain_deadline_ = steady::now() + grace;
  if (welcomed_) send(protocol::drain, boost::json::object());
  for (const auto& q : queued_) hand_back(q.id, q.attempt, "never started: the worker is draining");
  queued_.clear();
  if (!running_.empty()) {
    drain_timer_.expires_after(grace);
    drain_timer_.async_wait([this](boost::system::error_code ec) {
      if (!ec) end_drain_grace();
    });
  }
  check_done();
}

void worker::end_drain_grace() {
  drain_timer_.cancel();
  if (running_.empty()) return;
  log::info("drain grace over: stopping running jobs to hand them back count={}", running_.size());
  for (auto& [key, run] : running_) {
    handed_back_.insert(key);
    run->terminate(opts_.shutdown_grace);
  }
}

void worker::hand_back(job_id id, int attempt, const std::string& reason, boost::json::object extra) {
  auto body = std::move(extra);
  body["job"] = id;
  body["attempt"] = attempt;
  body["reason"] = reason;
  log::info("job handed back job_id={} attempt={} reason={}", id, attempt, reason);
  send_reliably(protocol::handback, std::move(body));
}

void worker::begin_stop(bool say_bye, milliseconds grace) {
  stopping_ = true;
  if (say_bye && welcomed_) send(protocol::bye, boost::json::object());
  if (!queued_.empty()) {
    // Never started, so nothing to report; the daemon requeues them when it sees we left.
    log::warn("dropping jobs that never started count={}", queued_.size());
    queued_.clear();
  }
  for (auto& [key, run] : running_) run->terminate(grace);
  check_done();
}

void worker::check_done() {
  if (done_ || !stopping_ || !running_.empty()) return;
  if (draining_ && !unacked_.empty() && !ack_wait_over_) {
    if (!ack_waiting_) {
      ack_waiting_ = true;
      drain_timer_.cancel();
      const auto left = std::chrono::duration_cast<milliseconds>(drain_deadline_ - steady::now());
      const auto wait = std::max(left, std::min(opts_.drain_grace, milliseconds(5000)));
      log::info("drain: waiting for the daemon to acknowledge reports count={} wait_ms={}", unacked_.size(),
                ms(wait));
      ack_timer_.expires_after(wait);
      ack_timer_.async_wait([this](boost::system::error_code ec) {
        if (ec) return;
        ack_wait_over_ = true;
        check_done();
      });
      if (!socket_) backoff_timer_.cancel();  // between sessions: reconnect now
    }
    return;
  }
  ack_timer_.cancel();
  if (draining_) {
    drain_timer_.cancel();
    if (welcomed_) send(protocol::bye, boost::json::object());  // the drain's last word
    log::info("drain complete worker={} unacknowledged={}", opts_.id, unacked_.size());
  }
  done_ = true;
  if (!unacked_.empty() && !welcomed_)
    log::warn("messages not delivered, no session with the daemon count={}", unacked_.size());
  if (socket_) {
    // Give the last finished/bye messages time to leave before the socket goes.
    if (welcomed_) socket_->raw().set(zmq::sockopt::linger, static_cast<int>(opts_.linger_on_exit.count()));
    drop_session();
  }
  backoff_timer_.cancel();
  cron_timer_.cancel();
}

bool worker::send(std::string_view command, const boost::json::object& body, bool quiet) {
  if (!socket_) return false;
  // Every message names its sender, so a daemon that does not know this connection (it restarted)
  // can still apply the job events it carries; the Lua scripts check worker and attempt.
  boost::json::object signed_body = body;
  signed_body["worker"] = opts_.id;
  if (!opts_.token.empty()) signed_body["token"] = opts_.token;
  auto frames = protocol::encode(command, signed_body);
  if (socket_->send(frames)) return true;
  if (!quiet) log::warn("message not queued to daemon command={}", command);
  return false;
}

void worker::send_reliably(std::string_view command, boost::json::object body) {
  body["ack"] = true;  // ask the daemon to acknowledge it (an older daemon ignores the field)
  bool sent = welcomed_ && send(command, body);
  if (sent && !daemon_acks_) return;  // an older daemon: sent once per session, as before
  auto id = protocol::get_int(body, "job").value_or(0);
  auto attempt = protocol::get_int(body, "attempt").value_or(0);
  auto key = std::make_tuple(id, attempt, std::string(command));
  if (auto old = unacked_index_.find(key); old != unacked_index_.end())
    forget_report(unacked_.find(old->second));
  if (unacked_.size() >= max_unacked) {
    log::warn("too many unacknowledged reports, forgetting the oldest command={} job_id={}",
              unacked_.begin()->second.command,
              protocol::get_int(unacked_.begin()->second.body, "job").value_or(0));
    forget_report(unacked_.begin());
  }
  auto seq = ++next_report_;
  unacked_.emplace(seq, outgoing{std::string(command), std::move(body)});
  unacked_index_[key] = seq;
}

void worker::forget_report(std::map<std::uint64_t, outgoing>::iterator it) {
  if (it == unacked_.end()) return;
  auto key = std::make_tuple(protocol::get_int(it->second.body, "job").value_or(0),
                             protocol::get_int(it->second.body, "attempt").value_or(0), it->second.command);
  if (auto i = unacked_index_.find(key); i != unacked_index_.end() && i->second == it->first)
    unacked_index_.erase(i);
  unacked_.erase(it);
}

void worker::on_ack(const boost::json::object& body) {
  // {reports:[[job, attempt, command], ...]}: written (or refused as stale) by the daemon.
  auto it = body.find("reports");
  if (it == body.end() || !it->value().is_array()) {
    log::warn("malformed ack dropped reason=reports: missing or not an array");
    return;
  }
  for (const auto& e : it->value().as_array()) {
    const auto* a = e.if_array();
    if (!a || a->size() != 3 || !(*a)[0].is_int64() || !(*a)[1].is_int64() || !(*a)[2].is_string()) {
      log::warn("malformed ack entry dropped");
      continue;
    }
    auto key = std::make_tuple((*a)[0].as_int64(), (*a)[1].as_int64(), std::string((*a)[2].as_string()));
    if (auto i = unacked_index_.find(key); i != unacked_index_.end()) forget_report(unacked_.find(i->second));
  }
  if (stopping_) check_done();  // a drain may have been waiting for these
}

boost::json::array worker::held_jobs() const {
  // Running, queued, and ended but not yet reported: the daemon must not run any of them again.
  boost::json::array a;
  for (const auto& [key, run] : running_) a.push_back(job_ref(key.first, key.second));
  for (const auto& q : queued_) a.push_back(job_ref(q.id, q.attempt));
  for (const auto& [seq, m] : unacked_) {
    if (m.command != protocol::finished && m.command != protocol::handback) continue;
    auto id = protocol::get_int(m.body, "job");
    auto attempt = protocol::get_int(m.body, "attempt");
    if (id && attempt) a.push_back(job_ref(*id, static_cast<int>(*attempt)));
  }
  return a;
}

boost::json::object worker::hello_body() const {
  boost::json::object o;
  o["protocol"] = protocol::version;
  o["minor"] = protocol::minor;
  o["role"] = "worker";
  o["worker"] = opts_.id;
  o["owner"] = opts_.owner;
  o["host"] = opts_.host;
  o["slots"] = opts_.slots;
  o["prefetch"] = opts_.prefetch;
  o["pool"] = opts_.pool;
  if (!opts_.site.empty()) o["site"] = opts_.site;
  o["version"] = DESCPROD_VERSION;
  o["walltime_end"] = static_cast<long long>(opts_.walltime_end);
  o["walltime_margin_s"] = opts_.walltime_margin_s;
  o["running"] = held_jobs();
  o["healthy"] = health_reason_.empty();
  if (!health_reason_.empty()) o["health_reason"] = health_reason_;
  return o;
}

void worker::become_unhealthy(const std::string& reason) {
  bool was_healthy = health_reason_.empty();
  health_reason_ = reason.substr(0, 300);
  next_probe_ = steady::now() + probe_interval;
  if (!was_healthy) return;
  log::error("worker unhealthy, taking no jobs reason={}", health_reason_);
  // Tell the daemon now rather than at the next heartbeat, so it sends nothing more meanwhile.
  if (welcomed_) {
    boost::json::object body;
    body["running"] = held_jobs();
    body["healthy"] = false;
    body["health_reason"] = health_reason_;
    send(protocol::heartbeat, body);
  }
}

void worker::probe_output_dir() {
  // What a job needs: a directory and a file with some data in it (a full tmpfs still makes
  // directories). Created and removed at once.
  next_probe_ = steady::now() + probe_interval;
  const fs::path probe = opts_.run.output_dir / "jobs" / (".descprod-probe-" + opts_.id);
  std::error_code ec;
  fs::remove_all(probe, ec);
  try {
    fs::create_directories(opts_.run.output_dir / "jobs");
    fs::create_directory(probe);
    write_file_new(probe / "probe", std::string(4096, 'p'));
    fs::remove_all(probe);
  } catch (const std::exception& e) {
    fs::remove_all(probe, ec);
    log::debug("output directory probe failed error={}", e.what());
    return;
  }
  log::info("worker healthy again: run directories can be created output_dir={}",
            opts_.run.output_dir.string());
  health_reason_.clear();
  if (welcomed_) {
    boost::json::object body;
    body["running"] = held_jobs();
    body["healthy"] = true;
    send(protocol::heartbeat, body);
  }
  grant_credits();
}

bool worker::fence_if_frozen() {
  auto now = steady::now();
  auto gap = now - last_turn_;
  last_turn_ = now;
  // The loop turns at least every heartbeat (cron); a gap past the lease timeout means this
  // process did not run for that long. If the daemon was not heard within the lease either, it
  // has declared us lost and requeued our jobs: they may already run elsewhere.
  if (gap <= lease_timeout_ || now - last_heard_ <= lease_timeout_) return false;
  if (running_.empty() && queued_.empty()) {
    log::warn("worker was frozen past its lease (no job held) gap_ms={}",
              ms(std::chrono::duration_cast<milliseconds>(gap)));
    if (socket_) drop_session();
    return true;
  }
  log::warn(
      "worker was frozen past its lease: stopping its jobs before anything else gap_ms={} lease_timeout_ms={} running={} queued={}",
      ms(std::chrono::duration_cast<milliseconds>(gap)), ms(lease_timeout_), running_.size(), queued_.size());
  for (auto& [key, run] : running_) {
    handed_back_.insert(key);
    fenced_.insert(key);
    run->kill_now("the worker was frozen past its lease; the job was requeued meanwhile");
  }
  // Handed back, not finished: a daemon that requeued them refuses these as stale; one that did
  // not (it was frozen too) requeues them without using an attempt.
  for (const auto& q : queued_) hand_back(q.id, q.attempt, "worker was frozen past its lease");
  queued_.clear();
  // A new session: whatever the old one still holds (jobs sent to us before we were declared
  // lost) is dropped unread.
  if (socket_) drop_session();
  return true;
}

boost::json::object worker::progress_body(const job_run& run) const {
  auto o = job_ref(run.spec().id, run.spec().attempt);
  o["message"] = run.message();
  if (auto counts = parse_progress_counts(run.message())) {
    o["done"] = counts->done;
    o["total"] = counts->total;
  }
  return o;
}

}  // namespace descprod::workers
