// The queue daemon: the sockets, the receive loops, the Redis reconnect, the cron and the stop;
// the work is done by its parts (daemon.hpp).
#include "daemon/daemon.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>

#include "core/async_util.hpp"
#include "core/curve.hpp"
#include "core/log.hpp"

namespace descprod {

namespace {
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
}  // namespace

queue_daemon::queue_daemon(net::io_context& io, descprod_config cfg, app_registry apps)
    : ctx_(io, std::move(cfg), std::move(apps)),
      leader_(ctx_),
      out_(ctx_, workers_,
           [this](job_id id, int priority, const std::string& owner, const std::string& sites) {
             // A requeue put the job back to ready: queue it and offer it at once.
             disp_.enqueue(id, priority, owner, sites);
             disp_.dispatch();
           }),
      disp_(ctx_, workers_, leases_, out_),
      recon_(ctx_, workers_, leases_, disp_, out_),
      deps_(ctx_, disp_, recon_),
      handler_(ctx_, workers_, leases_, disp_, out_),
      sampler_(ctx_, [this] { return gauges(); }),
      sites_(ctx_, ctx_.cfg.site_status) {
  ctx_.redis_failed = [this](const std::exception& e) { redis_failed(e); };
  ctx_.send_frames = [this](const std::vector<std::string>& frames) {
    return workers_sock_ && workers_sock_->send(frames);
  };
  ctx_.job_ended = [this] { deps_.wake(); };
  // A transition refused by the fence: another daemon leads; this one must not write again.
  ctx_.st.on_fenced = [this](const std::string& why) { leader_.deposed("a write was fenced: " + why); };
  disp_.worker_lost = [this](const std::string& id, const std::string& why) {
    handler_.worker_lost(id, why);
  };
}

queue_daemon::~queue_daemon() { stop(); }

void queue_daemon::stop() {
  stop_work();
  ctx_.redis.close();
}

void queue_daemon::stop_work() {
  if (ctx_.stopping) return;
  ctx_.stopping = true;
  for (auto& p : pilots_) p->stop();
  leader_.remove_leader_file();
  deps_.wake();  // its wait ends; it sees the daemon stopping
  out_.flush_acks();
  // The last acknowledgements get a moment to leave (a worker re-sends what it did not hear of).
  if (workers_sock_ && ctx_.draining) workers_sock_->raw().set(zmq::sockopt::linger, 500);
  if (workers_sock_) workers_sock_->close();
  if (gateways_sock_) gateways_sock_->close();
}

net::awaitable<void> queue_daemon::connect_redis() {
  // Redis that accepts the connection may still refuse to serve (LOADING its data set after a
  // restart, BUSY with a script, MISCONF when it cannot persist): PING answers with exactly those
  // errors, so the daemon is ready only once PING says PONG. Retries are quick (at most 1 s apart)
  // so that dispatch resumes within about a second of Redis being ready.
  backoff wait(std::chrono::milliseconds(100),
               reconnect_backoff_max(ctx_.cfg.redis.endpoint, std::chrono::milliseconds(1000)));
  net::steady_timer timer(ctx_.io);
  std::string last;
  while (!ctx_.stopping) {
    std::string why;
    try {
      if (!ctx_.redis.connected()) co_await ctx_.redis.async_connect();
      co_await ctx_.st.async_load_scripts();
      co_await ctx_.redis.async_exec(redis_cmd("PING"));
      // The lease first: the writes below are fenced by its epoch (after an outage longer than its
      // TTL it is taken back, or this daemon learns it was deposed and exits).
      co_await leader_.reassert();
      // Before any held write or dispatch: what Redis lost of the daemon's leases goes back. A
      // refused script (not an outage) is logged and does not keep the daemon from Redis.
      try {
        co_await recon_.restore_leases();
      } catch (const boost::system::system_error&) {
        throw;
      } catch (const std::exception& e) {
        log::error("lease restore failed error={}", e.what());
      }
      ctx_.redis_refusing = false;
      log::info("redis connected");
      co_return;
    } catch (const boost::system::system_error& e) {
      why = e.what();
      // Refusing but connected: keep the connection and ask again; anything else reconnects.
      if (e.code() != make_error_code(redis_errc::unavailable)) ctx_.redis.close();
    } catch (const std::exception& e) {
      why = e.what();
      ctx_.redis.close();
    }
    ctx_.redis_refusing = true;
    auto delay = wait.next();
    if (why != last) log::warn("redis unavailable error={} retry_ms={}", why, delay.count());
    last = why;
    timer.expires_after(delay);
    co_await timer.async_wait(use_tuple);
  }
}

void queue_daemon::redis_failed(const std::exception& e) {
  if (ctx_.stopping) return;
  if (!ctx_.redis_refusing) log::warn("redis unavailable: holding writes and dispatch error={}", e.what());
  ctx_.redis_refusing = true;
  start_reconnect();
}

void queue_daemon::start_reconnect() {
  if (reconnecting_ || ctx_.stopping) return;
  reconnecting_ = true;
  ctx_.spawn(
      [](queue_daemon* self) -> net::awaitable<void> {
        co_await self->connect_redis();
        self->reconnecting_ = false;
        if (self->ctx_.stopping) co_return;
        log::info("redis serving again: writing held writes outbox={}", self->out_.size());
        self->out_.wake();
        self->disp_.dispatch();
        self->handler_.resync_all_logs();  // log pieces dropped while Redis was away
        // The queue may have changed meanwhile, and token checks that failed for want of Redis are
        // done now rather than at the next reconcile interval.
        self->recon_.mark_done();
        co_await self->recon_.reconcile();
        if (self->ctx_.token_mode) co_await self->recon_.recheck_tokens();
      }(this),
      "redis_reconnect");
}

net::awaitable<void> queue_daemon::run() {
  auto ex = ctx_.io.get_executor();
  const auto& dc = ctx_.cfg.daemon;
  workers_sock_ = std::make_unique<zmq_socket>(ex, zctx_, zmq::socket_type::router);
  gateways_sock_ = std::make_unique<zmq_socket>(ex, zctx_, zmq::socket_type::router);
  // Sending to a peer that is gone must fail loudly, not vanish: the job is then requeued.
  workers_sock_->raw().set(zmq::sockopt::router_mandatory, 1);
  if (!dc.curve_secret_key_file.empty()) {
    if (!curve_available())
      throw std::runtime_error("CURVE keys are configured but this libzmq has no CURVE");
    auto secret = read_curve_key_file(dc.curve_secret_key_file);
    zap_ = std::make_unique<zap_handler>(zctx_, dc.curve_authorized_keys_dir);
    auto& raw = workers_sock_->raw();
    raw.set(zmq::sockopt::zap_domain, worker_zap_domain);
    raw.set(zmq::sockopt::curve_server, 1);
    auto key = curve_decode(secret);
    raw.set(zmq::sockopt::curve_secretkey, zmq::const_buffer(key.data(), key.size()));
    log::info("curve on the worker socket public_key={} authorized_keys={} dir={}", curve_public_of(secret),
              zap_->allowed_keys(), dc.curve_authorized_keys_dir);
  }
  log::info("worker authentication mode={}", ctx_.token_mode ? "token" : "open");
  // A standby binds nothing: the endpoints are the leader's (with ipc:// every daemon of a machine
  // shares them; the new leader's bind takes the path over and the peers reconnect to it).
  bool leads = co_await leader_.acquire();
  if (!leads) co_return;
  ctx_.spawn(leader_.keep(), "leader_lease");
  try {
    workers_sock_->raw().bind(dc.worker_endpoint);
    gateways_sock_->raw().bind(dc.gateway_endpoint);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error(std::string("cannot bind ZeroMQ endpoint: ") + e.what());
  }
  log::info("daemon listening workers={} gateways={}", dc.worker_endpoint, dc.gateway_endpoint);
  // The workers of the leases found in Redis get one lease period to say hello; two after a
  // takeover from a leader that may have frozen rather than died: its workers notice its silence
  // only after a lease period, then say hello here.
  const auto orphan_grace = leader_.took_over() ? 2 * dc.lease_timeout : dc.lease_timeout;
  // Redis may go away (or start refusing) while the queue is read: read it again once it serves.
  for (bool built = false; !built && !ctx_.stopping;) {
    co_await connect_redis();
    try {
      co_await recon_.rebuild(orphan_grace);
      built = true;
    } catch (const boost::system::system_error& e) {
      log::warn("queue rebuild interrupted, redis unavailable error={}", e.what());
      ctx_.redis_refusing = true;
    }
  }
  if (ctx_.stopping) co_return;
  ctx_.spawn(receive_loop(workers_sock_.get(), true), "worker_loop");
  ctx_.spawn(receive_loop(gateways_sock_.get(), false), "gateway_loop");
  ctx_.spawn(out_.run(), "outbox");
  ctx_.spawn(sampler_.run(), "stats_sampler");
  ctx_.spawn(deps_.run(), "dependencies");
  sites_.start();
  start_pilots(ex);
  co_await cron();
}

void queue_daemon::start_pilots(net::any_io_executor ex) {
  // One pilot manager per site with pilots (pilots: a mapping, or a list of them); pinned pilots
  // (howfig pmb) are the first site's.
  std::vector<pilots_config> sites = ctx_.cfg.pilot_sites;
  if (sites.empty()) sites.push_back(ctx_.cfg.pilots);
  for (std::size_t i = 0; i < sites.size(); ++i) {
    if (!sites[i].enabled) continue;
    const double pilot_s = 60.0 * sites[i].walltime_minutes;
    const std::string site = sites[i].site;
    auto p = std::make_unique<pilot_manager>(ex, sites[i], ctx_.redis, ctx_.cfg.redis.prefix,
                                             [this, pilot_s, site] { return disp_.demand(pilot_s, site); });
    if (i == 0) p->adopt_unlabelled_pilots();
    p->set_site_down([this](const std::string& s) { return sites_.down_reason(s); });
    if (i == 0)
      p->set_pinned([this](std::size_t max) { return disp_.pinned_queued(max); },
                    [this](job_id id) { return disp_.queue().contains(id); },
                    [this](job_id id, int rc, std::string message) {
                      ctx_.spawn(disp_.fail_queued(id, rc, std::move(message)), "fail_queued");
                    });
    handler_.add_pilots(p.get());
    ctx_.spawn(p->run(), "pilots");
    pilots_.push_back(std::move(p));
  }
}

net::awaitable<void> queue_daemon::receive_loop(zmq_socket* sock, bool from_workers) {
  // One loop per ROUTER socket: [routing][command][json] in, checked, handed to its handler. A
  // malformed message or one its handler refuses is logged with the peer's id and dropped.
  const char* peer_kind = from_workers ? "worker" : "gateway";
  while (!ctx_.stopping) {
    std::vector<zmq::message_t> frames;
    try {
      frames = co_await sock->async_recv();
    } catch (const boost::system::system_error&) {
      if (ctx_.stopping) co_return;
      continue;
    }
    if (frames.empty()) continue;
    std::string routing = frames[0].to_string();
    std::string why;
    auto msg = protocol::decode(frames, 1, why);
    if (!msg) {
      ++ctx_.stats.malformed;
      log::warn("malformed {} message dropped peer={} reason={}", peer_kind, hex_id(routing), why);
      continue;
    }
    try {
      if (from_workers) handler_.on_message(routing, std::move(*msg));
      else on_gateway_message(routing, std::move(*msg));
    } catch (const std::exception& e) {
      ++ctx_.stats.malformed;
      log::warn("{} message failed peer={} error={}", peer_kind, hex_id(routing), e.what());
    }
  }
}

void queue_daemon::on_gateway_message(const std::string& routing, protocol::message msg) {
  if (msg.command == protocol::hello) {
    auto v = protocol::get_int(msg.body, "protocol");
    boost::json::object reply;
    if (!v || *v != protocol::version) {
      reply["reason"] = "protocol version mismatch: daemon speaks " + std::to_string(protocol::version);
      gateways_sock_->send({routing, std::string(protocol::reject), boost::json::serialize(reply)});
      return;
    }
    reply["protocol"] = protocol::version;
    reply["minor"] = protocol::minor;
    gateways_sock_->send({routing, std::string(protocol::welcome), boost::json::serialize(reply)});
    // No minor: a gateway of minor 0 (before minors were sent).
    log::info("gateway connected peer={} minor={}", hex_id(routing),
              protocol::get_int(msg.body, "minor").value_or(0));
  } else if (msg.command == protocol::submitted) {
    if (ctx_.draining) return;  // in Redis already: the next daemon reads them there
    auto it = msg.body.find("jobs");
    if (it == msg.body.end() || !it->value().is_array())
      throw std::invalid_argument("submitted: no jobs array");
    std::vector<std::pair<job_id, double>> unknown_owner;
    const auto owners_before = disp_.queue().owner_count();
    for (const auto& e : it->value().as_array()) {
      // [id, priority, owner] or [id, priority, owner, sites] ("nersc,slac": the sites the job
      // asked for); an older gateway sends [id, priority] and the owner is looked up.
      const auto* a = e.if_array();
      if (!a || a->size() < 2 || a->size() > 4 || !(*a)[0].is_int64() || !(*a)[1].is_int64() ||
          (a->size() >= 3 && !(*a)[2].is_string()) || (a->size() == 4 && !(*a)[3].is_string()))
        throw std::invalid_argument("submitted: expected [id, priority, owner(, sites)] arrays");
      job_id id = (*a)[0].as_int64();
      int priority = static_cast<int>((*a)[1].as_int64());
      if (a->size() >= 3)
        disp_.enqueue(id, priority, std::string((*a)[2].as_string()),
                      a->size() == 4 ? std::string_view((*a)[3].as_string()) : std::string_view());
      else if (!disp_.queue().contains(id) && !leases_.contains(id))
        unknown_owner.emplace_back(id, queue_score(priority, id));
    }
    if (!unknown_owner.empty())
      ctx_.spawn(
          [](queue_daemon* self, std::vector<std::pair<job_id, double>> jobs) -> net::awaitable<void> {
            co_await self->recon_.take_in(std::move(jobs));
            self->disp_.dispatch();
          }(this, std::move(unknown_owner)),
          "take_in");
    if (disp_.queue().owner_count() != owners_before) {
      // An owner the daemon had not seen: its quota (max_running, share) is read before its jobs go.
      ctx_.spawn(
          [](queue_daemon* self) -> net::awaitable<void> {
            try {
              co_await self->recon_.read_quotas();
            } catch (const boost::system::system_error& e) {
              self->ctx_.redis_failed(e);
            }
            self->disp_.dispatch();
          }(this),
          "read_quotas");
      return;
    }
    disp_.dispatch();
  } else if (msg.command == protocol::cancel) {
    auto id = protocol::get_int(msg.body, "job");
    if (!id) throw std::invalid_argument("cancel: no job");
    disp_.cancel(*id);
  } else {
    log::warn("unexpected gateway command dropped peer={} command={}", hex_id(routing), msg.command);
  }
}

net::awaitable<void> queue_daemon::drain_and_stop() {
  if (ctx_.draining || ctx_.stopping) {
    stop();  // a second signal: at once
    co_return;
  }
  ctx_.draining = true;
  for (auto& p : pilots_) p->stop();
  auto start = clock_type::now();
  auto deadline = start + ctx_.cfg.daemon.stop_deadline;
  log::info("daemon draining: no new work, writing the outbox outbox={} deadline_ms={}", out_.size(),
            ctx_.cfg.daemon.stop_deadline.count());
  // Leases on their way to Redis first (their answers may requeue jobs through the outbox), then
  // the outbox.
  net::steady_timer timer(ctx_.io);
  while (!ctx_.stopping && clock_type::now() < deadline && !disp_.idle()) {
    timer.expires_after(std::chrono::milliseconds(10));
    co_await timer.async_wait(use_tuple);
  }
  if (co_await out_.drain(deadline))
    log::info("daemon drained ms={}",
              std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - start).count());
  else
    log::warn(
        "daemon stopping with writes not done (the workers send their reports again) outbox={} in_flight={}",
        out_.size(), out_.in_flight());
  // The sockets are closed before the lease is given up (a standby then takes over at once
  // rather than when the lease lapses): with ipc:// the new leader binds the same path, and a
  // close after its bind would remove its socket file.
  stop_work();
  co_await leader_.resign();
  stop();
}

stats_gauges queue_daemon::gauges() const {
  stats_gauges g;
  g.queue = disp_.queue().size();
  g.running = leases_.size();
  g.workers = workers_.size();
  for (const auto& [id, w] : workers_.all()) {
    g.slots += static_cast<std::uint64_t>(std::max(0, w.slots));
    // Not counting prefetched jobs.
    g.busy += static_cast<std::uint64_t>(std::min(std::max(0, w.slots), static_cast<int>(leases_.count(id))));
  }
  return g;
}

void queue_daemon::write_stats() {
  int unhealthy = 0;
  for (const auto& [id, w] : workers_.all()) unhealthy += w.unhealthy ? 1 : 0;
  const auto g = gauges();
  const auto& s = ctx_.stats;
  auto u = [](std::uint64_t v) { return std::to_string(v); };
  ctx_.write_detached(
      {redis_cmd("HSET", ctx_.k.daemon_stats(), "updated", fmt_double(epoch_now()), "queue_depth", u(g.queue),
                 "running", u(g.running), "workers", u(g.workers), "slots", u(g.slots), "busy_slots",
                 u(g.busy), "workers_unhealthy", std::to_string(unhealthy), "outbox", u(out_.size()),
                 "leased_total", u(s.leased), "finished_total", u(s.finished), "requeued_total",
                 u(s.requeued), "lease_expiries_total", u(s.lease_expiries), "stale_events_total",
                 u(s.stale_events), "malformed_total", u(s.malformed), "handed_back_total", u(s.handed_back),
                 "walltime_refusals_total", u(s.walltime_refusals), "workers_refused_total",
                 u(s.workers_refused), "reports_refused_total", u(s.reports_refused),
                 "log_pieces_dropped_total", u(s.log_pieces_dropped), "dependents_handled_total",
                 u(deps_.handled()), "dependents_released_total", u(deps_.released()))},
      "stats");
}

net::awaitable<void> queue_daemon::cron() {
  net::steady_timer timer(ctx_.io);
  const auto& dc = ctx_.cfg.daemon;
  const boost::json::object empty_body;  // the daemon's heartbeat is `{}` (docs/protocol.md)
  while (!ctx_.stopping) {
    timer.expires_after(dc.heartbeat_interval);
    co_await timer.async_wait(use_tuple);
    if (ctx_.stopping) break;
    auto now = clock_type::now();
    // Workers heartbeat every interval; the daemon answers less often: a worker only needs to
    // hear from it within lease_timeout (then it reconnects), so every quarter of that is plenty.
    // With 10,000 workers this halves the messages ZeroMQ's I/O thread handles.
    const auto quarter = std::max<clock_type::duration>(dc.heartbeat_interval, dc.lease_timeout / 4);
    bool send_heartbeats = now - last_heartbeat_sent_ >= quarter;
    if (send_heartbeats) last_heartbeat_sent_ = now;
    std::vector<std::string> lost;
    for (auto& [id, w] : workers_.all()) {
      if (now - w.last_seen > dc.lease_timeout) lost.push_back(id);
      else if (send_heartbeats) ctx_.send_worker(w.routing, protocol::heartbeat, empty_body);
    }
    for (const auto& id : lost) {
      ++ctx_.stats.lease_expiries;
      handler_.worker_lost(id, "missed heartbeats");
    }
    if (!ctx_.redis_ready()) {
      start_reconnect();
      continue;
    }
    recon_.expire_orphans(now);
    // Worker records and lease deadlines, one pipeline.
    std::vector<std::vector<std::string>> cmds;
    workers_.append_records(cmds, ctx_.k, now, quarter, ctx_.worker_record_ttl(),
                            [this](const std::string& id) { return leases_.count(id); });
    auto deadline = fmt_double(epoch_now() + std::chrono::duration<double>(dc.lease_timeout).count());
    for (const auto& [id, w] : workers_.all())
      for (job_id jid : leases_.jobs_of(id))
        if (const lease* l = leases_.find(jid); l && l->attempt > 0)
          cmds.push_back(redis_cmd("ZADD", ctx_.k.leases(), "XX", deadline, std::to_string(jid)));
    if (!cmds.empty()) ctx_.write_detached(std::move(cmds), "heartbeat_write");
    write_stats();
    if (recon_.due(now)) {
      ctx_.spawn(recon_.reconcile(), "reconcile");
      if (ctx_.token_mode) ctx_.spawn(recon_.recheck_tokens(), "recheck_tokens");
    }
  }
}

}  // namespace descprod
