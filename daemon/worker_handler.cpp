// The worker side of the daemon (see worker_handler.hpp). Handlers update the in-memory view at
// once and hand Redis writes to the outbox; the Lua scripts are the arbiters (a refused event is
// logged and dropped).
#include "daemon/worker_handler.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <cstdlib>
#include <optional>
#include <set>

#include "core/crypto.hpp"
#include "core/log.hpp"
#include "core/text.hpp"

namespace descprod {

namespace {
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// A worker's report carries text an application wrote (status line, finished message) and the
// run's host and directory: each is made safe to print (core/text.hpp) before it goes anywhere.
// Progress counts must come as a pair of integers with 0 <= done <= total; otherwise both are
// dropped (the message still applies) and the line says why.
void clean_report(std::string_view command, boost::json::object& body, const std::string& worker) {
  auto clean = [&](const char* field, std::size_t max) {
    auto it = body.find(field);
    if (it == body.end() || !it->value().is_string()) return;
    const auto& v = it->value().as_string();
    it->value() = sanitize_app_text(std::string_view(v.data(), v.size()), max);
  };
  if (command == protocol::progress) {
    clean("message", 1000);
    bool has_done = body.contains("done"), has_total = body.contains("total");
    if (!has_done && !has_total) return;
    auto done = protocol::get_int(body, "done");
    auto total = protocol::get_int(body, "total");
    if (done && total && *done >= 0 && *total >= 0 && *done <= *total) return;
    log::warn("progress counts dropped worker={} job_id={} done={} total={} reason={}", worker,
              protocol::get_int(body, "job").value_or(0),
              has_done ? boost::json::serialize(body.at("done")) : std::string("-"),
              has_total ? boost::json::serialize(body.at("total")) : std::string("-"),
              !done || !total             ? "done and total must both be integers"
              : (*done < 0 || *total < 0) ? "negative"
                                          : "done exceeds total");
    body.erase("done");
    body.erase("total");
  } else if (command == protocol::finished) {
    clean("message", 1000);
  } else if (command == protocol::started) {
    clean("host", 255);
    clean("rundir", 4096);
  }
}

// The jobs a hello lists in `running`.
std::set<job_id> listed_jobs(const boost::json::object& body) {
  std::set<job_id> listed;
  if (auto it = body.find("running"); it != body.end() && it->value().is_array())
    for (const auto& e : it->value().as_array())
      if (e.is_object())
        if (auto jid = protocol::get_int(e.as_object(), "job")) listed.insert(*jid);
  return listed;
}
}  // namespace

worker_handler::worker_handler(daemon_context& ctx, worker_table& workers, lease_table& leases,
                               dispatcher& disp, outbox& out)
    : ctx_(ctx), workers_(workers), leases_(leases), disp_(disp), out_(out) {}

void worker_handler::on_hello(const std::string& routing, const boost::json::object& body) {
  auto proto = protocol::get_int(body, "protocol");
  auto id = protocol::get_string(body, "worker");
  auto slots = protocol::get_int(body, "slots");
  if (!proto || *proto != protocol::version || !id || id->empty() || !slots || *slots < 0 ||
      *slots > 100000) {
    refuse_worker(routing,
                  (!proto || *proto != protocol::version)
                      ? "protocol version mismatch: daemon speaks " + std::to_string(protocol::version)
                      : std::string("hello needs worker (string) and slots (integer)"),
                  false);
    return;
  }
  if (!ctx_.token_mode) {
    worker_grant open;
    open.ok = true;
    open.any_owner = true;
    open.owner = protocol::get_string(body, "owner").value_or("");
    return accept_hello(routing, body, open);
  }
  auto token = protocol::get_string(body, "token");
  if (!token || token->empty()) {
    refuse_worker(routing, "a worker token is required (descprod-admin worker-token; worker.token_file)",
                  false);
    return;
  }
  ctx_.spawn(authenticate(routing, body), "authenticate");
}

void worker_handler::refuse_worker(const std::string& routing, const std::string& reason, bool retry) {
  ++ctx_.stats.workers_refused;
  boost::json::object reply;
  reply["reason"] = reason;
  if (retry) reply["retry"] = true;
  ctx_.send_worker(routing, protocol::reject, reply);
  log::warn("worker refused peer={} reason={}", hex_id(routing), reason);
}

net::awaitable<void> worker_handler::authenticate(std::string routing, boost::json::object body) {
  auto sha = sha256_hex(*protocol::get_string(body, "token"));
  worker_grant g;
  // While Redis is unavailable the hello waits (up to half a lease period, within the worker's
  // wait for welcome) rather than being refused at once: a refused worker backs off for seconds.
  auto give_up = clock_type::now() + ctx_.cfg.daemon.lease_timeout / 2;
  net::steady_timer timer(ctx_.io);
  for (bool checked = false; !checked;) {
    try {
      g = co_await check_worker_token(ctx_.redis, ctx_.cfg.redis.prefix, sha);
      checked = true;
    } catch (const boost::system::system_error& e) {
      ctx_.redis_failed(e);
    }
    if (checked) break;
    while (!ctx_.stopping && !ctx_.redis_ready() && clock_type::now() < give_up) {
      timer.expires_after(std::chrono::milliseconds(50));
      co_await timer.async_wait(use_tuple);
    }
    if (ctx_.stopping || !ctx_.redis_ready()) {
      refuse_worker(routing, "the daemon cannot check worker tokens now (Redis unavailable); retry", true);
      co_return;
    }
  }
  if (!g.ok) {
    refuse_worker(routing, "worker token refused: " + g.reason, false);
    co_return;
  }
  // A worker id is bound to the token it said hello with (token_sha, in memory and in its
  // worker:<id> record): while the id is connected or holds leases, a hello under it with another
  // token is refused, or any worker token could take over another's jobs (adopt them, report
  // them finished, burn their attempts with repeated hellos). A free id (no connection, no
  // lease) may be taken by a new token: its old binding has nothing left to protect.
  const auto id = *protocol::get_string(body, "worker");
  std::string recorded;
  try {
    auto r = co_await ctx_.redis.async_exec(redis_cmd("HGET", ctx_.k.worker(id), "token_sha"));
    if (!r.is_error() && !r.is_nil()) recorded = r.str;
  } catch (const boost::system::system_error&) {
    refuse_worker(routing, "the daemon cannot check worker tokens now (Redis unavailable); retry", true);
    co_return;
  }
  {
    auto* w = workers_.find(id);  // looked up after the awaits: another hello may have come meanwhile
    bool connected = w != nullptr;
    const std::string& bound = connected && !w->token_sha.empty() ? w->token_sha : recorded;
    bool holds_leases = leases_.has_orphans(id);
    if ((connected || holds_leases) && !bound.empty() && bound != sha) {
      log::warn(
          "worker identity refused worker={} peer={} token_owner={} connected={} holds_leases={} "
          "reason=the id is bound to another worker token",
          id, hex_id(routing), g.owner, connected, holds_leases);
      refuse_worker(routing, "worker id '" + id + "' is in use with another worker token", false);
      co_return;
    }
  }
  auto claimed = protocol::get_string(body, "owner").value_or("");
  if (!claimed.empty() && claimed != g.owner)
    log::info("worker owner taken from its token worker={} configured_owner={} token_owner={}", id, claimed,
              g.owner);
  accept_hello(routing, body, g);
  if (auto* w = workers_.find(id)) {
    w->token_sha = sha;
    // The binding goes to Redis at once, not with cron's next record: a daemon that restarts
    // right after this hello must still know whose id this is.
    auto key = ctx_.k.worker(id);
    if (ctx_.redis.connected())
      ctx_.write_detached({redis_cmd("HSET", key, "id", id, "owner", g.owner, "token_sha", sha),
                           redis_cmd("EXPIRE", key, ctx_.worker_record_ttl())},
                          "worker_binding");
  }
}

void worker_handler::accept_hello(const std::string& routing, const boost::json::object& body,
                                  const worker_grant& g) {
  const std::string id = *protocol::get_string(body, "worker");
  auto slots = protocol::get_int(body, "slots");
  auto& w = workers_.connect(id, routing);
  // Jobs we leased to this worker that its hello does not list are gone with its old process
  // (a restart) or were never delivered (the old connection): requeue them. A lease still being
  // leased (attempt 0) is left to the dispatcher.
  {
    auto listed = listed_jobs(body);
    const auto& held = leases_.jobs_of(id);
    std::vector<job_id> gone;
    for (job_id jid : held) {
      const lease* l = leases_.find(jid);
      if (!listed.count(jid) && l && l->attempt != 0) gone.push_back(jid);
    }
    for (job_id jid : gone) {
      auto l = leases_.release(jid);
      ++ctx_.stats.requeued;
      out_.requeue_later(jid, l->attempt, id, store::requeue_mode::lost, "worker restarted without the job");
    }
  }
  w.record_written = false;  // host, slots, walltime may differ from its last connection
  worker_table::set_grant(w, g, disp_.queue());
  w.revoked = false;
  w.host = protocol::get_string(body, "host").value_or("");
  w.pool = protocol::get_string(body, "pool").value_or("default");
  w.site = protocol::get_string(body, "site").value_or("");
  if (!w.site.empty() && !valid_site_name(w.site)) {
    log::warn("worker site ignored worker={} site={} reason=not a site name", id, w.site.substr(0, 64));
    w.site.clear();
  }
  w.slots = static_cast<int>(*slots);
  w.prefetch = worker_table::prefetch_of(protocol::get_int(body, "prefetch").value_or(0));
  w.credits = 0;
  w.walltime_end = std::max(0.0, protocol::get_number(body, "walltime_end").value_or(0));
  w.walltime_margin_s = std::max(0.0, protocol::get_number(body, "walltime_margin_s").value_or(0));
  worker_table::note_health(w, body);
  w.last_seen = clock_type::now();
  // Jobs the worker still runs (a reconnect or a daemon restart): adopt those whose lease is its
  // own; tell it to stop any other (the job was requeued meanwhile, so it must not run twice).
  if (auto it = body.find("running"); it != body.end() && it->value().is_array()) {
    for (const auto& e : it->value().as_array()) {
      if (!e.is_object()) continue;
      auto jid = protocol::get_int(e.as_object(), "job");
      auto att = protocol::get_int(e.as_object(), "attempt");
      if (!jid || !att) continue;
      // Ours: leased to this id at this attempt (by this daemon, or in Redis before a restart),
      // and of an owner its token may run.
      const lease* l = leases_.find(*jid);
      const orphan_lease* o = leases_.find_orphan(*jid);
      bool ours =
          l ? l->worker == id && l->attempt == *att
            : o && o->worker == id && o->attempt == *att && worker_table::may_run(w, o->owner, disp_.queue());
      if (ours) {
        // An adopted orphan lease counts toward its owner's share from now on.
        auto owner = !l && o ? disp_.queue().intern(o->owner) : no_owner;
        leases_.hold(*jid, id, *att, true, owner);
      } else {
        boost::json::object c;
        c["job"] = *jid;
        c["attempt"] = *att;
        ctx_.send_worker(routing, protocol::cancel, c);
        log::warn("worker runs a job it does not hold; cancelling job_id={} attempt={} worker={}", *jid, *att,
                  id);
      }
    }
  }
  // Leases from before a daemon restart that Redis holds for this worker and its hello does not
  // list: the worker restarted without them (or ran and reported them to a daemon that stopped
  // before writing it — then its re-sent `finished` is refused as stale): requeue them now, not
  // one lease period later.
  for (job_id jid : leases_.take_orphans_of(id)) {
    ++ctx_.stats.requeued;
    out_.requeue_orphan(jid, id, "worker restarted without the job");
  }
  boost::json::object reply;
  reply["protocol"] = protocol::version;
  reply["minor"] = protocol::minor;
  reply["heartbeat_ms"] = ctx_.cfg.daemon.heartbeat_interval.count();
  reply["lease_timeout_ms"] = ctx_.cfg.daemon.lease_timeout.count();
  reply["acks"] = true;  // reports that carry "ack": true are acknowledged (`ack`)
  ctx_.send_worker(routing, protocol::welcome, reply);
  resync_logs(id);
  std::string may_run = w.any_owner ? std::string("*") : std::string();
  if (!w.any_owner)
    for (auto o : w.owners) may_run += (may_run.empty() ? "" : ",") + disp_.queue().owner_name(o);
  log::info(
      "worker connected worker={} host={} slots={} owner={} may_run={} running={} walltime_left_s={:.0f}",
      w.id, w.host, w.slots, w.owner, may_run, leases_.count(id),
      w.walltime_end > 0 ? w.walltime_end - epoch_now() : 0.0);
  for (auto* p : pilots_) p->on_worker_hello(w.id);
}

void worker_handler::on_message(const std::string& routing, protocol::message msg) {
  if (msg.command == protocol::hello) {
    if (ctx_.draining) return refuse_worker(routing, "the daemon is stopping; say hello again", true);
    return on_hello(routing, msg.body);
  }
  // A worker that wants its report acknowledged says so in it (workers/worker.cpp); an older one
  // does not, and gets no ack.
  const bool wants_ack = protocol::get_bool(msg.body, "ack").value_or(false);
  auto* w = workers_.by_routing(routing);
  if (!w) return on_unknown(routing, msg, wants_ack);
  w->last_seen = clock_type::now();
  const auto& c = msg.command;
  if (c == protocol::heartbeat) {
    // A worker's heartbeat: {running, healthy?, health_reason?}; only its health is read here
    // (its jobs are checked at hello).
    worker_table::note_health(*w, msg.body);
    if (!w->unhealthy) disp_.serve(*w);
    return;
  }
  if (c == protocol::ready) {
    auto n = protocol::get_int(msg.body, "credits");
    if (!n || *n < 0) throw std::invalid_argument("ready: credits must be a non-negative integer");
    if (w->draining || w->revoked || ctx_.draining) return;
    worker_table::add_credits(*w, *n, leases_.count(w->id));
    disp_.serve(*w);
    return;
  }
  if (c == protocol::bye) {
    worker_lost(w->id, "worker said bye");
    return;
  }
  if (c == protocol::drain) {
    w->draining = true;
    w->credits = 0;
    log::info("worker draining worker={} jobs={}", w->id, leases_.count(w->id));
    return;
  }
  if (c == protocol::handback) return on_handback(*w, routing, msg.body, wants_ack);
  if (c == protocol::started || c == protocol::progress || c == protocol::finished ||
      c == protocol::log_lines)
    return on_report(*w, routing, msg, wants_ack);
  log::warn("unexpected worker command dropped worker={} command={}", w->id, c);
}

void worker_handler::on_handback(worker_state& w, const std::string& routing, const boost::json::object& body,
                                 bool wants_ack) {
  auto id = protocol::get_int(body, "job");
  auto attempt = protocol::get_int(body, "attempt");
  if (!id || !attempt) throw std::invalid_argument("handback: job and attempt must be integers");
  if (!leases_.holds(w.id, *id, *attempt))
    return refuse_report(w, routing, protocol::handback, *id, *attempt, "not held", wants_ack);
  leases_.release(*id);
  ++ctx_.stats.handed_back;
  auto reason = protocol::get_string(body, "reason").value_or("handed back by a draining worker");
  if (protocol::get_bool(body, "walltime").value_or(false)) {
    // The worker's allocation ends before the job's time limit would: never offer it this job
    // again, and keep the limit so other short-lived workers are skipped too.
    ++ctx_.stats.walltime_refusals;
    worker_table::refuse(w, *id);
    if (auto limit = protocol::get_number(body, "time_limit_s"); limit && *limit > 0)
      disp_.remember_limit(*id, *limit);
    log::info("job refused by worker for walltime job_id={} worker={} reason={}", *id, w.id, reason);
  }
  pending_write pw{pending_write::kind::requeue};
  pw.id = *id;
  pw.attempt = *attempt;
  pw.worker = w.id;
  pw.mode = store::requeue_mode::handback;
  pw.reason = std::move(reason);
  pw.routing = routing;
  if (wants_ack) pw.ack_command = protocol::handback;
  out_.submit(std::move(pw));
}

void worker_handler::on_report(worker_state& w, const std::string& routing, protocol::message& msg,
                               bool wants_ack) {
  const auto& c = msg.command;
  auto id = protocol::get_int(msg.body, "job");
  auto attempt = protocol::get_int(msg.body, "attempt");
  if (!id || !attempt) throw std::invalid_argument(c + ": job and attempt must be integers");
  // Only the connection that holds the job at that attempt reports on it (a worker cannot
  // write another's job, its log, or a job that does not exist).
  if (!leases_.holds(w.id, *id, *attempt))
    return refuse_report(w, routing, c, *id, *attempt, "not held", wants_ack);
  if (c == protocol::log_lines) return on_log(w, msg.body);
  if (c == protocol::finished) {
    leases_.release(*id);
    log_resync_.erase(*id);
  } else if (c == protocol::started) leases_.mark_started(*id);
  clean_report(c, msg.body, w.id);
  pending_write pw{pending_write::kind::report};
  pw.worker = w.id;
  pw.command = c;
  pw.body = std::move(msg.body);
  pw.routing = routing;
  if (wants_ack) pw.ack_command = c;
  out_.submit(std::move(pw));
}

void worker_handler::refuse_report(const worker_state& w, const std::string& routing,
                                   std::string_view command, job_id id, long long attempt, const char* why,
                                   bool wants_ack) {
  ++ctx_.stats.reports_refused;
  log::warn("report refused command={} job_id={} attempt={} worker={} reason={}", command, id, attempt, w.id,
            why);
  if (!wants_ack) return;
  // Nothing will ever be written for it (a re-sent report the daemon already took, or one for a
  // job this worker no longer holds): acknowledge it, else the worker would send it again after
  // every reconnect.
  pending_write pw{pending_write::kind::requeue};
  pw.id = id;
  pw.attempt = attempt;
  pw.worker = w.id;
  pw.routing = routing;
  pw.ack_command = std::string(command);
  out_.ack(pw);
}

void worker_handler::on_unknown(const std::string& routing, protocol::message& msg, bool wants_ack) {
  // A worker the daemon does not know (it restarted, or declared the worker lost). Job events it
  // sent before learning that are still facts: apply them (the scripts check worker and attempt,
  // so a stale one is refused) — dropping a `finished` here would make the job run again. Then
  // ask the worker to say hello.
  // In token mode the report must carry the worker's token, and the token must be the one the
  // worker said hello with (apply_unknown_report).
  const auto& c = msg.command;
  auto sender = protocol::get_string(msg.body, "worker");
  auto token = protocol::get_string(msg.body, "token").value_or("");
  auto id = protocol::get_int(msg.body, "job");
  auto attempt = protocol::get_int(msg.body, "attempt");
  std::optional<pending_write> pw;
  if (sender && !sender->empty() && id && attempt &&
      (c == protocol::started || c == protocol::progress || c == protocol::finished)) {
    pw.emplace(pending_write::kind::report);
    pw->command = c;
    clean_report(c, msg.body, *sender);
    pw->body = std::move(msg.body);
  } else if (sender && !sender->empty() && id && attempt && c == protocol::handback) {
    pw.emplace(pending_write::kind::requeue);
    pw->id = *id;
    pw->attempt = *attempt;
    pw->mode = store::requeue_mode::handback;
    pw->reason = "handed back by a draining worker";
  }
  if (pw) {
    pw->worker = *sender;
    pw->routing = routing;
    if (wants_ack) pw->ack_command = c;
    if (!ctx_.token_mode) apply_unknown_report_now(std::move(*pw));
    else if (!token.empty())
      ctx_.spawn(apply_unknown_report(std::move(*pw), std::move(token)), "unknown_report");
    else
      log::warn("report without a token from an unknown connection dropped worker={} command={}", *sender, c);
  }
  boost::json::object reply;
  reply["reason"] = "unknown worker: send hello";
  reply["retry"] = true;
  ctx_.send_worker(routing, protocol::reject, reply);
}

void worker_handler::apply_unknown_report_now(pending_write pw) {
  // A finished report or a handback ends the sender's lease here too (if it holds it).
  if (pw.what != pending_write::kind::report || pw.command == protocol::finished)
    leases_.release(pw.job(), pw.worker);
  out_.submit(std::move(pw));
}

net::awaitable<void> worker_handler::apply_unknown_report(pending_write pw, std::string token) {
  // Applied only when (1) the token is a valid worker token, (2) it is the token the worker id
  // said hello with, and (3) it may run the job's owner; the Lua scripts then check that the job is
  // leased to that worker id at that attempt (stale() in every report and requeue script).
  auto sha = sha256_hex(token);
  job_id id = pw.job();
  // While Redis is unavailable the token cannot be checked: the report waits for Redis (held, not
  // dropped; at most max_unknown_waiting of them — beyond that a worker that asked for an ack
  // re-sends it after its next hello).
  net::steady_timer timer(ctx_.io);
  bool counted = false;
  while (!ctx_.stopping) {
    try {
      auto g = co_await check_worker_token(ctx_.redis, ctx_.cfg.redis.prefix, sha);
      auto bound = co_await ctx_.redis.async_exec(redis_cmd("HGET", ctx_.k.worker(pw.worker), "token_sha"));
      auto owner = co_await ctx_.redis.async_exec(redis_cmd("HGET", ctx_.k.job(id), "descname"));
      bool owner_ok = !owner.is_error() && !owner.is_nil() &&
                      (g.any_owner || std::binary_search(g.owners.begin(), g.owners.end(), owner.str));
      if (!g.ok || bound.is_nil() || bound.str != sha || !owner_ok) {
        ++ctx_.stats.reports_refused;
        log::warn("report from an unknown connection dropped worker={} command={} job_id={} reason={}",
                  pw.worker, pw.command.empty() ? std::string("handback") : pw.command, id,
                  !g.ok ? g.reason
                  : bound.is_nil() || bound.str != sha
                      ? std::string("the token is not the one this worker said hello with")
                      : std::string("the token may not run this job's owner"));
        break;
      }
      if (counted) --unknown_waiting_;
      apply_unknown_report_now(std::move(pw));
      co_return;
    } catch (const boost::system::system_error& e) {
      ctx_.redis_failed(e);
    }
    if (!counted) {
      if (unknown_waiting_ >= max_unknown_waiting) {
        log::warn("report from an unknown connection dropped (Redis unavailable, too many waiting) worker={}",
                  pw.worker);
        co_return;
      }
      counted = true;
      ++unknown_waiting_;
    }
    while (!ctx_.stopping && !ctx_.redis_ready()) {
      timer.expires_after(std::chrono::milliseconds(100));
      co_await timer.async_wait(use_tuple);
    }
  }
  if (counted) --unknown_waiting_;
}

void worker_handler::on_log(const worker_state& w, boost::json::object& body) {
  // A piece of the job's log goes through the outbox with the job's other reports, so it lands in
  // order and before the job's `finished`. Not kept while Redis is away or the outbox is long:
  // the worker's file has the lines, and the stored log notes the gap when the next piece comes.
  constexpr std::size_t max_outbox_for_logs = 50000;
  auto it = body.find("lines");
  if (it == body.end() || !it->value().is_array()) throw std::invalid_argument("log: lines must be an array");
  auto offset = protocol::get_int(body, "offset");
  auto next = protocol::get_int(body, "next");
  if (body.contains("offset") && (!offset || !next || *offset < 0 || *next < *offset))
    throw std::invalid_argument("log: offset and next must be integers, 0 <= offset <= next");
  const job_id id = *protocol::get_int(body, "job");
  if (!ctx_.redis_ready() || out_.size() > max_outbox_for_logs) {
    // Lost here: the job's log is sent again from what Redis holds once it serves (log_from).
    ++ctx_.stats.log_pieces_dropped;
    log_resync_.try_emplace(id, log_resync{-1, clock_type::now()});
    return;
  }
  if (auto r = log_resync_.find(id); r != log_resync_.end()) {
    if (clock_type::now() - r->second.since > log_resync_timeout) {
      log_resync_.erase(r);
    } else if (offset && *offset == r->second.offset) {
      log_resync_.erase(r);  // the first piece from where Redis's copy ends
    } else {
      ++ctx_.stats.log_pieces_dropped;  // sent before the worker rewound: it comes again
      return;
    }
  }
  std::string text;
  for (const auto& l : it->value().as_array()) {
    if (!l.is_string()) continue;
    const auto& raw = l.as_string();
    text += sanitize_app_text(std::string_view(raw.data(), raw.size()), 4000);
    text += '\n';
  }
  boost::json::object piece;
  piece["job"] = body.at("job");
  piece["attempt"] = body.at("attempt");
  if (offset) {
    piece["offset"] = *offset;
    piece["next"] = *next;
  }
  // The lines' end offsets (a piece sent again after a log_from): kept only when they are one
  // increasing integer per line within [offset, next]; otherwise the piece goes as a plain one.
  if (auto e = body.find("ends"); offset && e != body.end() && e->value().is_array()) {
    const auto& ends = e->value().as_array();
    std::size_t string_lines = 0;
    for (const auto& l : it->value().as_array()) string_lines += l.is_string() ? 1 : 0;
    bool ok = ends.size() == string_lines;
    long long last = *offset;
    boost::json::array kept;
    kept.reserve(ends.size());
    for (const auto& v : ends) {
      if (!ok) break;
      ok = v.is_int64() && v.as_int64() >= last && v.as_int64() <= *next;
      if (ok) last = v.as_int64();
      kept.emplace_back(last);
    }
    if (ok) piece["ends"] = std::move(kept);
  }
  if (protocol::get_bool(body, "capped").value_or(false)) piece["capped"] = true;
  piece["cap"] = ctx_.cfg.daemon.job_log_max_bytes;
  piece["text"] = std::move(text);
  pending_write pw{pending_write::kind::report};
  pw.worker = w.id;
  pw.command = protocol::log_lines;
  pw.body = std::move(piece);
  out_.submit(std::move(pw));
}

void worker_handler::resync_logs(const std::string& worker_id) {
  if (!ctx_.redis_ready()) return;  // again when Redis serves (resync_all_logs)
  std::vector<std::pair<job_id, long long>> jobs;
  for (job_id id : leases_.jobs_of(worker_id))
    if (const lease* l = leases_.find(id); l && l->attempt > 0) {
      jobs.emplace_back(id, l->attempt);
      log_resync_.insert_or_assign(id, log_resync{-1, clock_type::now()});
    }
  if (jobs.empty()) return;
  ctx_.spawn(send_log_from(worker_id, std::move(jobs)), "log_from");
}

void worker_handler::resync_all_logs() {
  for (const auto& [id, w] : workers_.all()) resync_logs(id);
}

net::awaitable<void> worker_handler::send_log_from(std::string worker_id,
                                                   std::vector<std::pair<job_id, long long>> jobs) {
  std::vector<std::vector<std::string>> cmds;
  cmds.reserve(jobs.size());
  for (const auto& j : jobs)
    cmds.push_back(redis_cmd("HMGET", ctx_.k.job(j.first), "log_attempt", "log_next", "log_capped"));
  auto replies = co_await ctx_.redis.async_pipeline(std::move(cmds));
  const worker_state* w = workers_.find(worker_id);
  for (std::size_t i = 0; i < jobs.size() && i < replies.size(); ++i) {
    const auto& r = replies[i];
    if (!w || r.elements.size() != 3 || r.elements[2].str == "1") {  // gone, or capped
      log_resync_.erase(jobs[i].first);
      continue;
    }
    long long offset = 0;
    if (r.elements[0].str == std::to_string(jobs[i].second))
      offset = std::strtoll(r.elements[1].str.c_str(), nullptr, 10);
    boost::json::object body;
    body["job"] = jobs[i].first;
    body["attempt"] = jobs[i].second;
    body["offset"] = offset;
    if (auto it = log_resync_.find(jobs[i].first); it != log_resync_.end()) it->second.offset = offset;
    ctx_.send_worker(w->routing, protocol::log_from, body);
  }
}

void worker_handler::worker_lost(const std::string& id_ref, const std::string& why) {
  const std::string worker_id = id_ref;  // id_ref may be the table entry's own id, erased below
  if (!workers_.remove(worker_id)) return;
  auto jobs = leases_.release_worker(worker_id);
  for (const auto& j : jobs) log_resync_.erase(j.first);
  for (auto* p : pilots_) p->on_worker_left(worker_id);
  log::warn("worker lost worker={} reason={} jobs={}", worker_id, why, jobs.size());
  for (const auto& [id, l] : jobs) {
    // Still being leased: the dispatcher (after_lease) finds the worker gone and requeues it.
    if (l.attempt == 0) continue;
    ++ctx_.stats.requeued;
    out_.requeue_later(id, l.attempt, worker_id, store::requeue_mode::lost, why);
  }
}

}  // namespace descprod
