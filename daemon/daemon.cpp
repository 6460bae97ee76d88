// The queue daemon. Message handlers are plain functions that update the in-memory view at once
// and hand Redis writes to short coroutines; the Lua scripts are the arbiters (a refused event is
// logged and dropped). Heartbeats, lease expiry, worker hashes and reconciliation run in one cron.
#include "daemon/daemon.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <cmath>

#include "core/crypto.hpp"
#include "core/curve.hpp"
#include "core/job.hpp"
#include "core/log.hpp"
#include "core/text.hpp"

namespace descprod {

namespace {
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

std::string hex_id(const std::string& routing) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : routing) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::string join_pools(const std::vector<std::string>& pools) {
  std::string out;
  for (const auto& p : pools) out += (out.empty() ? "" : ",") + p;
  return out;
}

std::string fmt_double(double d) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f", d);
  return buf;
}

double epoch_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

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
              !done || !total ? "done and total must both be integers"
                              : (*done < 0 || *total < 0) ? "negative" : "done exceeds total");
    body.erase("done");
    body.erase("total");
  } else if (command == protocol::finished) {
    clean("message", 1000);
  } else if (command == protocol::started) {
    clean("host", 255);
    clean("rundir", 4096);
  }
}

boost::json::object app_json(const app_def& app, const job_record& r, job_id id) {
  boost::json::object a;
  boost::json::array argv;
  auto get = [&](const char* k) {
    auto it = r.find(k);
    return it == r.end() ? std::string() : it->second;
  };
  for (auto& s : app.argv_for(get("config"), get("howfig"), id)) argv.emplace_back(s);
  a["argv"] = std::move(argv);
  boost::json::object env;
  for (const auto& [k, v] : app.env) env[k] = v;
  a["env"] = std::move(env);
  a["time_limit_s"] = app.time_limit_s;
  a["login_shell"] = app.login_shell;
  a["cores"] = app.cores;
  // The worker's containment of the job (issue #13): the app's umask and its cgroup limits.
  a["umask"] = app.umask;
  if (app.memory_max > 0) a["memory_max"] = app.memory_max;
  if (app.limit_cores) a["limit_cores"] = app.cores;
  return a;
}
}  // namespace

queue_daemon::queue_daemon(net::io_context& io, descprod_config cfg, app_registry apps)
    : io_(io),
      cfg_(std::move(cfg)),
      apps_(std::move(apps)),
      redis_(io.get_executor(), cfg_.redis.endpoint),
      store_(redis_, cfg_.redis.prefix),
      token_mode_(cfg_.daemon.worker_auth != "open") {}

queue_daemon::~queue_daemon() { stop(); }

void queue_daemon::stop() {
  if (stopping_) return;
  stopping_ = true;
  if (pilots_) pilots_->stop();
  flush_acks();
  // The last acknowledgements get a moment to leave (a worker re-sends what it did not hear of).
  if (workers_sock_ && draining_) workers_sock_->raw().set(zmq::sockopt::linger, 500);
  if (workers_sock_) workers_sock_->close();
  if (gateways_sock_) gateways_sock_->close();
  redis_.close();
}

void queue_daemon::spawn(net::awaitable<void> task, const char* what) {
  net::co_spawn(io_, std::move(task), [what, this](std::exception_ptr e) {
    if (!e || stopping_) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log::error("task failed task={} error={}", what, ex.what());
    }
  });
}

net::awaitable<void> queue_daemon::connect_redis() {
  // Redis that accepts the connection may still refuse to serve (LOADING its data set after a
  // restart, BUSY with a script, MISCONF when it cannot persist): PING answers with exactly those
  // errors, so the daemon is ready only once PING says PONG. Retries are quick (at most 1 s apart)
  // so that dispatch resumes within about a second of Redis being ready.
  auto delay = std::chrono::milliseconds(100);
  net::steady_timer timer(io_);
  std::string last;
  while (!stopping_) {
    std::string why;
    try {
      if (!redis_.connected()) co_await redis_.async_connect();
      co_await store_.async_load_scripts();
      co_await redis_.async_exec(redis_cmd("PING"));
      redis_refusing_ = false;
      log::info("redis connected");
      co_return;
    } catch (const boost::system::system_error& e) {
      why = e.what();
      // Refusing but connected: keep the connection and ask again; anything else reconnects.
      if (e.code() != make_error_code(redis_errc::unavailable)) redis_.close();
    } catch (const std::exception& e) {
      why = e.what();
      redis_.close();
    }
    redis_refusing_ = true;
    if (why != last) log::warn("redis unavailable error={} retry_ms={}", why, delay.count());
    last = why;
    timer.expires_after(delay);
    co_await timer.async_wait(use_tuple);
    delay = std::min(delay * 2, std::chrono::milliseconds(1000));
  }
}

void queue_daemon::redis_failed(const std::exception& e) {
  if (stopping_) return;
  if (!redis_refusing_) log::warn("redis unavailable: holding writes and dispatch error={}", e.what());
  redis_refusing_ = true;
  start_reconnect();
}

void queue_daemon::start_reconnect() {
  if (reconnecting_ || stopping_) return;
  reconnecting_ = true;
  spawn([](queue_daemon* self) -> net::awaitable<void> {
    co_await self->connect_redis();
    self->reconnecting_ = false;
    if (self->stopping_) co_return;
    log::info("redis serving again: writing held writes outbox={}", self->outbox_.size());
    self->outbox_wake_.cancel();
    self->dispatch();
    // The queue may have changed meanwhile, and token checks that failed for want of Redis are
    // done now rather than at the next reconcile interval.
    self->last_reconcile_ = clock_type::now();
    co_await self->reconcile();
    if (self->token_mode_) co_await self->recheck_tokens();
  }(this), "redis_reconnect");
}

net::awaitable<void> queue_daemon::run() {
  auto ex = io_.get_executor();
  workers_sock_ = std::make_unique<zmq_socket>(ex, zctx_, zmq::socket_type::router);
  gateways_sock_ = std::make_unique<zmq_socket>(ex, zctx_, zmq::socket_type::router);
  // Sending to a peer that is gone must fail loudly, not vanish: the job is then requeued.
  workers_sock_->raw().set(zmq::sockopt::router_mandatory, 1);
  if (!cfg_.daemon.curve_secret_key_file.empty()) {
    if (!curve_available()) throw std::runtime_error("CURVE keys are configured but this libzmq has no CURVE");
    auto secret = read_curve_key_file(cfg_.daemon.curve_secret_key_file);
    zap_ = std::make_unique<zap_handler>(zctx_, cfg_.daemon.curve_authorized_keys_dir);
    auto& raw = workers_sock_->raw();
    raw.set(zmq::sockopt::zap_domain, worker_zap_domain);
    raw.set(zmq::sockopt::curve_server, 1);
    auto key = curve_decode(secret);
    raw.set(zmq::sockopt::curve_secretkey, zmq::const_buffer(key.data(), key.size()));
    log::info("curve on the worker socket public_key={} authorized_keys={} dir={}", curve_public_of(secret),
              zap_->allowed_keys(), cfg_.daemon.curve_authorized_keys_dir);
  }
  log::info("worker authentication mode={}", token_mode_ ? "token" : "open");
  try {
    workers_sock_->raw().bind(cfg_.daemon.worker_endpoint);
    gateways_sock_->raw().bind(cfg_.daemon.gateway_endpoint);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error(std::string("cannot bind ZeroMQ endpoint: ") + e.what());
  }
  log::info("daemon listening workers={} gateways={}", cfg_.daemon.worker_endpoint, cfg_.daemon.gateway_endpoint);
  // Redis may go away (or start refusing) while the queue is read: read it again once it serves.
  for (bool built = false; !built && !stopping_;) {
    co_await connect_redis();
    try {
      co_await rebuild();
      built = true;
    } catch (const boost::system::system_error& e) {
      log::warn("queue rebuild interrupted, redis unavailable error={}", e.what());
      redis_refusing_ = true;
    }
  }
  if (stopping_) co_return;
  spawn(receive_loop(workers_sock_.get(), true), "worker_loop");
  spawn(receive_loop(gateways_sock_.get(), false), "gateway_loop");
  spawn(outbox_loop(), "outbox");
  if (cfg_.pilots.enabled) {
    pilots_ = std::make_unique<pilot_manager>(ex, cfg_.pilots, redis_, cfg_.redis.prefix, [this] { return demand(); });
    spawn(pilots_->run(), "pilots");
  }
  co_await cron();
}

net::awaitable<void> queue_daemon::rebuild() {
  // The queue: everything in the ready set, in chunks so a deep queue does not build one reply.
  const long long chunk = 10000;
  for (long long start = 0;; start += chunk) {
    auto cmd = redis_cmd("ZRANGE", store_.key("queue"), std::to_string(start),
                                 std::to_string(start + chunk - 1), "WITHSCORES");
    auto r = co_await redis_.async_exec(std::move(cmd));
    std::vector<std::pair<job_id, double>> jobs;
    for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2)
      jobs.emplace_back(r.elements[i].as_integer(), std::stod(r.elements[i + 1].as_string()));
    co_await take_in(std::move(jobs));
    if (r.elements.size() < static_cast<std::size_t>(chunk * 2)) break;
  }
  // Leases held before a restart: their workers get one lease period to say hello and claim them.
  // Claims by descprod-start-job (worker "cli:...") carry deadlines years away and are not ours.
  auto horizon = fmt_double(epoch_now() + 86400.0 * 365);
  auto cmd = redis_cmd("ZRANGE", store_.key("leases"), "-inf", horizon, "BYSCORE");
  auto leases = co_await redis_.async_exec(std::move(cmd));
  auto deadline = clock_type::now() + cfg_.daemon.lease_timeout;
  // Whom each lease is for, at which attempt, and whose job it is: a hello adopts only leases in
  // its own id and attempt, of owners its token may run; a hello that does not list one of its
  // leases has it requeued at once (accept_hello) instead of after the lease period.
  orphans_.clear();
  orphans_by_worker_.clear();
  for (std::size_t from = 0; from < leases.elements.size(); from += 10000) {
    std::size_t to = std::min(leases.elements.size(), from + 10000);
    std::vector<std::vector<std::string>> cmds;
    for (std::size_t i = from; i < to; ++i)
      cmds.push_back(redis_cmd("HMGET", store_.job_key(leases.elements[i].as_integer()), "worker", "attempt",
                               "descname"));
    auto fields = co_await redis_.async_pipeline(std::move(cmds));
    for (std::size_t i = from; i < to; ++i) {
      job_id id = leases.elements[i].as_integer();
      auto& o = orphans_[id];  // (no braced temporary in a coroutine: STYLE.md, GCC 12)
      o.deadline = deadline;
      const auto& f = fields[i - from];
      if (!f.is_error() && f.elements.size() == 3) {
        o.worker = f.elements[0].is_nil() ? std::string() : f.elements[0].str;
        o.attempt = f.elements[1].is_nil() ? 0 : std::atoll(f.elements[1].str.c_str());
        o.owner = f.elements[2].is_nil() ? std::string() : f.elements[2].str;
      }
      if (!o.worker.empty()) orphans_by_worker_[o.worker].insert(id);
    }
  }
  last_reconcile_ = clock_type::now();
  log::info("queue rebuilt ready={} leased={}", ready_.size(), orphans_.size());
  dispatch();
}

net::awaitable<void> queue_daemon::reconcile() {
  // A `submitted` notice can be lost (gateway crash between Redis and ZeroMQ, daemon restart):
  // any ready job near the front of the queue that is not held here is taken in.
  if (!redis_ready() || draining_) co_return;
  std::size_t added = 0;
  try {
    auto cmd = redis_cmd("ZRANGE", store_.key("queue"), "0", "9999", "WITHSCORES");
    auto r = co_await redis_.async_exec(std::move(cmd));
    std::vector<std::pair<job_id, double>> jobs;
    for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
      job_id id = r.elements[i].as_integer();
      if (ready_.contains(id) || leases_.count(id)) continue;
      jobs.emplace_back(id, std::stod(r.elements[i + 1].as_string()));
    }
    added = jobs.empty() ? 0 : co_await take_in(std::move(jobs));
  } catch (const boost::system::system_error& e) {
    redis_failed(e);
    co_return;
  }
  if (added) {
    log::info("reconcile found ready jobs added={}", added);
    dispatch();
  }
}

void queue_daemon::apply_unknown_report_now(pending_write pw) {
  job_id id = pw.what == pending_write::kind::report ? *protocol::get_int(pw.body, "job") : pw.id;
  if (pw.what != pending_write::kind::report || pw.command == protocol::finished) {
    erase_orphan(id);
    if (auto l = leases_.find(id); l != leases_.end() && l->second.worker == pw.worker) leases_.erase(l);
  }
  submit(std::move(pw));
}

net::awaitable<void> queue_daemon::apply_unknown_report(pending_write pw, std::string token) {
  // Applied only when (1) the token is a valid worker token, (2) it is the token the worker id
  // said hello with, and (3) it may run the job's owner; the Lua scripts then check that the job is
  // leased to that worker id at that attempt (stale() in every report and requeue script).
  auto sha = sha256_hex(token);
  job_id id = pw.what == pending_write::kind::report ? *protocol::get_int(pw.body, "job") : pw.id;
  // While Redis is unavailable the token cannot be checked: the report waits for Redis (held, not
  // dropped; at most max_unknown_waiting of them — beyond that a worker that asked for an ack
  // re-sends it after its next hello).
  net::steady_timer timer(io_);
  bool counted = false;
  while (!stopping_) {
    try {
      auto g = co_await check_worker_token(redis_, cfg_.redis.prefix, sha);
      auto bound = co_await redis_.async_exec(redis_cmd("HGET", store_.key("worker:" + pw.worker), "token_sha"));
      auto owner = co_await redis_.async_exec(redis_cmd("HGET", store_.job_key(id), "descname"));
      bool owner_ok = !owner.is_error() && !owner.is_nil() &&
                      (g.any_owner || std::binary_search(g.owners.begin(), g.owners.end(), owner.str));
      if (!g.ok || bound.is_nil() || bound.str != sha || !owner_ok) {
        ++stats_.reports_refused;
        log::warn("report from an unknown connection dropped worker={} command={} job_id={} reason={}", pw.worker,
                  pw.command.empty() ? std::string("handback") : pw.command, id,
                  !g.ok                                ? g.reason
                  : bound.is_nil() || bound.str != sha ? std::string("the token is not the one this worker said hello with")
                                                       : std::string("the token may not run this job's owner"));
        break;
      }
      if (counted) --unknown_waiting_;
      apply_unknown_report_now(std::move(pw));
      co_return;
    } catch (const boost::system::system_error& e) {
      redis_failed(e);
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
    while (!stopping_ && !redis_ready()) {
      timer.expires_after(std::chrono::milliseconds(100));
      co_await timer.async_wait(use_tuple);
    }
  }
  if (counted) --unknown_waiting_;
}

net::awaitable<std::size_t> queue_daemon::take_in(std::vector<std::pair<job_id, double>> jobs) {
  std::vector<std::vector<std::string>> cmds;
  cmds.reserve(jobs.size());
  for (const auto& [id, score] : jobs) cmds.push_back(redis_cmd("HGET", store_.job_key(id), "descname"));
  auto owners = co_await redis_.async_pipeline(std::move(cmds));
  std::size_t added = 0;
  for (std::size_t i = 0; i < jobs.size() && i < owners.size(); ++i) {
    auto [id, score] = jobs[i];
    if (leases_.count(id)) continue;
    if (owners[i].is_error()) {  // its hash is not a hash: nothing to run (operators: see docs)
      log::warn("queued job not taken in job_id={} error={}", id, owners[i].str);
      continue;
    }
    added += ready_.push(id, score, ready_.intern(owners[i].is_nil() ? std::string() : owners[i].str));
  }
  co_return added;
}

net::awaitable<void> queue_daemon::receive_loop(zmq_socket* sock, bool from_workers) {
  // One loop per ROUTER socket: [routing][command][json] in, checked, handed to its handler. A
  // malformed message or one its handler refuses is logged with the peer's id and dropped.
  const char* peer_kind = from_workers ? "worker" : "gateway";
  while (!stopping_) {
    std::vector<zmq::message_t> frames;
    try {
      frames = co_await sock->async_recv();
    } catch (const boost::system::system_error&) {
      if (stopping_) co_return;
      continue;
    }
    if (frames.empty()) continue;
    std::string routing = frames[0].to_string();
    std::string why;
    auto msg = protocol::decode(frames, 1, why);
    if (!msg) {
      ++stats_.malformed;
      log::warn("malformed {} message dropped peer={} reason={}", peer_kind, hex_id(routing), why);
      continue;
    }
    try {
      if (from_workers) on_worker_message(routing, std::move(*msg));
      else on_gateway_message(routing, std::move(*msg));
    } catch (const std::exception& e) {
      ++stats_.malformed;
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
    gateways_sock_->send({routing, std::string(protocol::welcome), boost::json::serialize(reply)});
    log::info("gateway connected peer={}", hex_id(routing));
  } else if (msg.command == protocol::submitted) {
    if (draining_) return;  // in Redis already: the next daemon reads them there
    auto it = msg.body.find("jobs");
    if (it == msg.body.end() || !it->value().is_array()) throw std::invalid_argument("submitted: no jobs array");
    std::vector<std::pair<job_id, double>> unknown_owner;
    for (const auto& e : it->value().as_array()) {
      // [id, priority, owner]; an older gateway sends [id, priority] and the owner is looked up.
      const auto* a = e.if_array();
      if (!a || a->size() < 2 || a->size() > 3 || !(*a)[0].is_int64() || !(*a)[1].is_int64() ||
          (a->size() == 3 && !(*a)[2].is_string()))
        throw std::invalid_argument("submitted: expected [id, priority, owner] triples");
      job_id id = (*a)[0].as_int64();
      int priority = static_cast<int>((*a)[1].as_int64());
      if (a->size() == 3) enqueue(id, priority, std::string((*a)[2].as_string()));
      else if (!ready_.contains(id) && !leases_.count(id)) unknown_owner.emplace_back(id, queue_score(priority, id));
    }
    if (!unknown_owner.empty())
      spawn([](queue_daemon* self, std::vector<std::pair<job_id, double>> jobs) -> net::awaitable<void> {
        co_await self->take_in(std::move(jobs));
        self->dispatch();
      }(this, std::move(unknown_owner)), "take_in");
    dispatch();
  } else if (msg.command == protocol::cancel) {
    auto id = protocol::get_int(msg.body, "job");
    if (!id) throw std::invalid_argument("cancel: no job");
    if (ready_.erase(*id)) job_limits_.erase(*id);
    auto l = leases_.find(*id);
    if (l != leases_.end()) {
      auto w = workers_.find(l->second.worker);
      if (w != workers_.end()) {
        boost::json::object body;
        body["job"] = *id;
        body["attempt"] = l->second.attempt;
        send_worker(w->second.routing, protocol::cancel, body);
        log::info("cancel forwarded job_id={} worker={}", *id, w->first);
      }
    }
  } else {
    log::warn("unexpected gateway command dropped peer={} command={}", hex_id(routing), msg.command);
  }
}

void queue_daemon::enqueue(job_id id, int priority, const std::string& owner) {
  if (leases_.count(id)) return;
  ready_.push(id, queue_score(priority, id), ready_.intern(owner));
}

queue_daemon::worker_state* queue_daemon::worker_by_routing(const std::string& routing) {
  auto it = routing_to_id_.find(routing);
  if (it == routing_to_id_.end()) return nullptr;
  auto w = workers_.find(it->second);
  return w == workers_.end() ? nullptr : &w->second;
}

void queue_daemon::send_worker(const std::string& routing, std::string_view command,
                               const boost::json::object& body) {
  std::vector<std::string> frames{routing, std::string(command), boost::json::serialize(body)};
  if (!workers_sock_->send(frames)) log::warn("send to worker failed peer={} command={}", hex_id(routing), command);
}

void queue_daemon::on_hello(const std::string& routing, const boost::json::object& body) {
  auto proto = protocol::get_int(body, "protocol");
  auto id = protocol::get_string(body, "worker");
  auto slots = protocol::get_int(body, "slots");
  if (!proto || *proto != protocol::version || !id || id->empty() || !slots || *slots < 0 || *slots > 100000) {
    boost::json::object reply;
    reply["reason"] = (!proto || *proto != protocol::version)
                          ? "protocol version mismatch: daemon speaks " + std::to_string(protocol::version)
                          : std::string("hello needs worker (string) and slots (integer)");
    refuse_worker(routing, std::string(reply["reason"].as_string()), false);
    return;
  }
  if (!token_mode_) {
    worker_grant open;
    open.ok = true;
    open.any_owner = true;
    open.owner = protocol::get_string(body, "owner").value_or("");
    return accept_hello(routing, body, open);
  }
  auto token = protocol::get_string(body, "token");
  if (!token || token->empty()) {
    refuse_worker(routing, "a worker token is required (descprod-admin worker-token; worker.token_file)", false);
    return;
  }
  spawn(authenticate(routing, body), "authenticate");
}

void queue_daemon::refuse_worker(const std::string& routing, const std::string& reason, bool retry) {
  ++stats_.workers_refused;
  boost::json::object reply;
  reply["reason"] = reason;
  if (retry) reply["retry"] = true;
  send_worker(routing, protocol::reject, reply);
  log::warn("worker refused peer={} reason={}", hex_id(routing), reason);
}

net::awaitable<void> queue_daemon::authenticate(std::string routing, boost::json::object body) {
  auto sha = sha256_hex(*protocol::get_string(body, "token"));
  worker_grant g;
  // While Redis is unavailable the hello waits (up to half a lease period, within the worker's
  // wait for welcome) rather than being refused at once: a refused worker backs off for seconds.
  auto give_up = clock_type::now() + cfg_.daemon.lease_timeout / 2;
  net::steady_timer timer(io_);
  for (bool checked = false; !checked;) {
    try {
      g = co_await check_worker_token(redis_, cfg_.redis.prefix, sha);
      checked = true;
    } catch (const boost::system::system_error& e) {
      redis_failed(e);
    }
    if (checked) break;
    while (!stopping_ && !redis_ready() && clock_type::now() < give_up) {
      timer.expires_after(std::chrono::milliseconds(50));
      co_await timer.async_wait(use_tuple);
    }
    if (stopping_ || !redis_ready()) {
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
    auto r = co_await redis_.async_exec(redis_cmd("HGET", store_.key("worker:" + id), "token_sha"));
    if (!r.is_error() && !r.is_nil()) recorded = r.str;
  } catch (const boost::system::system_error&) {
    refuse_worker(routing, "the daemon cannot check worker tokens now (Redis unavailable); retry", true);
    co_return;
  }
  {
    auto w = workers_.find(id);  // looked up after the awaits: another hello may have come meanwhile
    bool connected = w != workers_.end();
    const std::string& bound = connected && !w->second.token_sha.empty() ? w->second.token_sha : recorded;
    bool holds_leases = orphans_by_worker_.count(id) > 0;
    if ((connected || holds_leases) && !bound.empty() && bound != sha) {
      log::warn("worker identity refused worker={} peer={} token_owner={} connected={} holds_leases={} "
                "reason=the id is bound to another worker token",
                id, hex_id(routing), g.owner, connected, holds_leases);
      refuse_worker(routing, "worker id '" + id + "' is in use with another worker token", false);
      co_return;
    }
  }
  auto claimed = protocol::get_string(body, "owner").value_or("");
  if (!claimed.empty() && claimed != g.owner)
    log::info("worker owner taken from its token worker={} configured_owner={} token_owner={}",
              protocol::get_string(body, "worker").value_or(""), claimed, g.owner);
  accept_hello(routing, body, g);
  if (auto w = workers_.find(protocol::get_string(body, "worker").value_or("")); w != workers_.end()) {
    w->second.token_sha = sha;
    // The binding goes to Redis at once, not with cron's next record: a daemon that restarts
    // right after this hello must still know whose id this is.
    auto ttl = std::to_string(std::max<long long>(1, 3 * cfg_.daemon.lease_timeout.count() / 1000));
    auto key = store_.key("worker:" + id);
    if (redis_.connected())
      write_detached({redis_cmd("HSET", key, "id", id, "owner", g.owner, "token_sha", sha), redis_cmd("EXPIRE", key, ttl)},
                     "worker_binding");
  }
}

void queue_daemon::set_grant(worker_state& w, const worker_grant& g) {
  if (w.record_written && (w.owner != g.owner || w.pools != g.pools)) w.record_written = false;
  w.owner = g.owner;
  w.pools = g.pools;
  w.any_owner = g.any_owner;
  w.owners.clear();
  for (const auto& o : g.owners) w.owners.push_back(ready_.intern(o));
}

void queue_daemon::accept_hello(const std::string& routing, const boost::json::object& body, const worker_grant& g) {
  auto id = protocol::get_string(body, "worker");
  auto slots = protocol::get_int(body, "slots");
  auto& w = workers_[*id];
  if (!w.routing.empty() && w.routing != routing) routing_to_id_.erase(w.routing);
  // Jobs we leased to this worker that its hello does not list are gone with its old process
  // (a restart) or were never delivered (the old connection): requeue them.
  {
    std::set<job_id> listed;
    if (auto it = body.find("running"); it != body.end() && it->value().is_array())
      for (const auto& e : it->value().as_array())
        if (e.is_object())
          if (auto jid = protocol::get_int(e.as_object(), "job")) listed.insert(*jid);
    for (auto it = w.jobs.begin(); it != w.jobs.end();) {
      if (listed.count(it->first) || it->second.attempt == 0) {
        ++it;
        continue;
      }
      leases_.erase(it->first);
      ++stats_.requeued;
      requeue_later(it->first, it->second.attempt, *id, store::requeue_mode::lost,
                    "worker restarted without the job");
      it = w.jobs.erase(it);
    }
  }
  w.routing = routing;
  w.id = *id;
  w.record_written = false;  // host, slots, walltime may differ from its last connection
  set_grant(w, g);
  w.revoked = false;
  w.host = protocol::get_string(body, "host").value_or("");
  w.pool = protocol::get_string(body, "pool").value_or("default");
  w.slots = static_cast<int>(*slots);
  // Absent (an older worker) or out of range: 0, i.e. credits only for free slots.
  auto prefetch = protocol::get_int(body, "prefetch").value_or(0);
  w.prefetch = prefetch < 0 || prefetch > max_prefetch ? 0 : static_cast<int>(prefetch);
  w.credits = 0;
  w.walltime_end = std::max(0.0, protocol::get_number(body, "walltime_end").value_or(0));
  w.walltime_margin_s = std::max(0.0, protocol::get_number(body, "walltime_margin_s").value_or(0));
  note_health(w, body);
  w.last_seen = clock_type::now();
  routing_to_id_[routing] = *id;
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
      auto l = leases_.find(*jid);
      auto o = orphans_.find(*jid);
      bool ours = l != leases_.end()
                      ? l->second.worker == *id && l->second.attempt == *att
                      : o != orphans_.end() && o->second.worker == *id && o->second.attempt == *att &&
                            may_run(w, o->second.owner);
      if (ours) {
        erase_orphan(*jid);
        leases_[*jid] = {*id, *att};
        w.jobs[*jid] = running_job{*jid, *att, true};
      } else {
        boost::json::object c;
        c["job"] = *jid;
        c["attempt"] = *att;
        send_worker(routing, protocol::cancel, c);
        log::warn("worker runs a job it does not hold; cancelling job_id={} attempt={} worker={}", *jid, *att, *id);
      }
    }
  }
  // Leases from before a daemon restart that Redis holds for this worker and its hello does not
  // list: the worker restarted without them (or ran and reported them to a daemon that stopped
  // before writing it — then its re-sent `finished` is refused as stale): requeue them now, not
  // one lease period later.
  if (auto ow = orphans_by_worker_.find(*id); ow != orphans_by_worker_.end()) {
    std::vector<job_id> gone(ow->second.begin(), ow->second.end());
    for (job_id jid : gone) {
      erase_orphan(jid);
      pending_write pw{pending_write::kind::orphan};
      pw.id = jid;
      pw.worker = *id;
      pw.mode = store::requeue_mode::lost;
      pw.reason = "worker restarted without the job";
      ++stats_.requeued;
      submit(std::move(pw));
    }
  }
  boost::json::object reply;
  reply["protocol"] = protocol::version;
  reply["heartbeat_ms"] = cfg_.daemon.heartbeat_interval.count();
  reply["lease_timeout_ms"] = cfg_.daemon.lease_timeout.count();
  reply["acks"] = true;  // reports that carry "ack": true are acknowledged (`ack`)
  send_worker(routing, protocol::welcome, reply);
  std::string may_run = w.any_owner ? std::string("*") : std::string();
  if (!w.any_owner)
    for (auto o : w.owners) may_run += (may_run.empty() ? "" : ",") + ready_.owner_name(o);
  log::info("worker connected worker={} host={} slots={} owner={} may_run={} running={} walltime_left_s={:.0f}", w.id,
            w.host, w.slots, w.owner, may_run, w.jobs.size(),
            w.walltime_end > 0 ? w.walltime_end - epoch_now() : 0.0);
  if (pilots_) pilots_->on_worker_hello(w.id);
}

void queue_daemon::on_worker_message(const std::string& routing, protocol::message msg) {
  if (msg.command == protocol::hello) {
    if (draining_) return refuse_worker(routing, "the daemon is stopping; say hello again", true);
    return on_hello(routing, msg.body);
  }
  // A worker that wants its report acknowledged says so in it (workers/worker.cpp); an older one
  // does not, and gets no ack.
  const bool wants_ack = protocol::get_bool(msg.body, "ack").value_or(false);
  auto* w = worker_by_routing(routing);
  if (!w) {
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
      if (!token_mode_) apply_unknown_report_now(std::move(*pw));
      else if (!token.empty()) spawn(apply_unknown_report(std::move(*pw), std::move(token)), "unknown_report");
      else log::warn("report without a token from an unknown connection dropped worker={} command={}", *sender, c);
    }
    boost::json::object reply;
    reply["reason"] = "unknown worker: send hello";
    reply["retry"] = true;
    send_worker(routing, protocol::reject, reply);
    return;
  }
  w->last_seen = clock_type::now();
  const auto& c = msg.command;
  if (c == protocol::heartbeat) {
    note_health(*w, msg.body);
    if (!w->unhealthy)
      for (double now = epoch_now(); dispatch_to(*w, now);) {
      }
    return;
  }
  if (c == protocol::ready) {
    auto n = protocol::get_int(msg.body, "credits");
    if (!n || *n < 0) throw std::invalid_argument("ready: credits must be a non-negative integer");
    if (w->draining || w->revoked || draining_) return;
    int cap = std::max(0, w->slots + w->prefetch - static_cast<int>(w->jobs.size()));
    w->credits = static_cast<int>(std::min<long long>(cap, w->credits + *n));
    for (double now = epoch_now(); dispatch_to(*w, now);) {
    }
    return;
  }
  if (c == protocol::bye) {
    worker_lost(w->id, "worker said bye");
    return;
  }
  if (c == protocol::drain) {
    w->draining = true;
    w->credits = 0;
    log::info("worker draining worker={} jobs={}", w->id, w->jobs.size());
    return;
  }
  if (c == protocol::handback) {
    auto id = protocol::get_int(msg.body, "job");
    auto attempt = protocol::get_int(msg.body, "attempt");
    if (!id || !attempt) throw std::invalid_argument("handback: job and attempt must be integers");
    auto j = w->jobs.find(*id);
    if (!holds(*w, *id, *attempt)) return refuse_report(*w, routing, c, *id, *attempt, "not held", wants_ack);
    w->jobs.erase(j);
    leases_.erase(*id);
    ++stats_.handed_back;
    auto reason = protocol::get_string(msg.body, "reason").value_or("handed back by a draining worker");
    if (protocol::get_bool(msg.body, "walltime").value_or(false)) {
      // The worker's allocation ends before the job's time limit would: never offer it this job
      // again, and keep the limit so other short-lived workers are skipped too.
      ++stats_.walltime_refusals;
      if (w->refused.size() >= max_refused_per_worker) w->refused.erase(w->refused.begin());
      w->refused.insert(*id);
      if (auto limit = protocol::get_number(msg.body, "time_limit_s"); limit && *limit > 0) remember_limit(*id, *limit);
      log::info("job refused by worker for walltime job_id={} worker={} reason={}", *id, w->id, reason);
    }
    pending_write pw{pending_write::kind::requeue};
    pw.id = *id;
    pw.attempt = *attempt;
    pw.worker = w->id;
    pw.mode = store::requeue_mode::handback;
    pw.reason = std::move(reason);
    pw.routing = routing;
    if (wants_ack) pw.ack_command = c;
    submit(std::move(pw));
    return;
  }
  if (c == protocol::started || c == protocol::progress || c == protocol::finished || c == protocol::log_lines) {
    auto id = protocol::get_int(msg.body, "job");
    auto attempt = protocol::get_int(msg.body, "attempt");
    if (!id || !attempt) throw std::invalid_argument(c + ": job and attempt must be integers");
    // Only the connection that holds the job at that attempt reports on it (a worker cannot
    // write another's job, its log, or a job that does not exist).
    if (!holds(*w, *id, *attempt)) return refuse_report(*w, routing, c, *id, *attempt, "not held", wants_ack);
    if (c == protocol::log_lines) {
      store_log_lines(*id, msg.body);
      return;
    }
    if (c == protocol::finished) {
      w->jobs.erase(*id);
      leases_.erase(*id);
    } else if (c == protocol::started) {
      w->jobs[*id].started = true;
    }
    clean_report(c, msg.body, w->id);
    pending_write pw{pending_write::kind::report};
    pw.worker = w->id;
    pw.command = c;
    pw.body = std::move(msg.body);
    pw.routing = routing;
    if (wants_ack) pw.ack_command = c;
    submit(std::move(pw));
    return;
  }
  log::warn("unexpected worker command dropped worker={} command={}", w->id, c);
}

bool queue_daemon::may_run(const worker_state& w, const std::string& owner) const {
  if (w.any_owner) return true;
  auto o = ready_.find_owner(owner);
  return o && std::find(w.owners.begin(), w.owners.end(), *o) != w.owners.end();
}

bool queue_daemon::holds(const worker_state& w, job_id id, long long attempt) {
  auto j = w.jobs.find(id);
  return j != w.jobs.end() && j->second.attempt > 0 && j->second.attempt == attempt;
}

void queue_daemon::refuse_report(const worker_state& w, const std::string& routing, std::string_view command,
                                 job_id id, long long attempt, const char* why, bool wants_ack) {
  ++stats_.reports_refused;
  log::warn("report refused command={} job_id={} attempt={} worker={} reason={}", command, id, attempt, w.id, why);
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
  ack(pw);
}

bool queue_daemon::fits(const worker_state& w, job_id id, double now) const {
  if (!w.refused.empty() && w.refused.count(id)) return false;
  if (w.walltime_end <= 0 || job_limits_.empty()) return true;
  auto l = job_limits_.find(id);
  return l == job_limits_.end() || now + l->second <= w.walltime_end - w.walltime_margin_s;
}

void queue_daemon::remember_limit(job_id id, double time_limit_s) {
  if (job_limits_.size() >= max_job_limits && !job_limits_.count(id)) job_limits_.erase(job_limits_.begin());
  job_limits_[id] = time_limit_s;
}

void queue_daemon::note_health(worker_state& w, const boost::json::object& body) {
  // Absent (an older worker): healthy. Unhealthy: no jobs, and its credits are void (it asks
  // again when it is healthy).
  bool healthy = protocol::get_bool(body, "healthy").value_or(true);
  auto raw = protocol::get_string(body, "health_reason").value_or("");
  auto reason = sanitize_app_text(raw, 300);  // a peer's text: safe to print (core/text.hpp)
  if (healthy == !w.unhealthy && reason == w.health_reason) return;
  w.unhealthy = !healthy;
  w.health_reason = healthy ? std::string() : reason;
  if (w.unhealthy) w.credits = 0;
  if (w.unhealthy) log::warn("worker unhealthy: no jobs for it worker={} reason={}", w.id, w.health_reason);
  else log::info("worker healthy again worker={}", w.id);
}

bool queue_daemon::dispatch_to(worker_state& w, double now) {
  // One job for `w`, the best by score among the owners it may serve that fits its walltime.
  if (w.credits <= 0 || w.draining || w.revoked || w.unhealthy || ready_.empty() || !redis_ready() || draining_)
    return false;
  auto pick = ready_.best(w.any_owner ? nullptr : &w.owners, [&](job_id id) { return fits(w, id, now); },
                          dispatch_scan);
  if (!pick) return false;
  auto [score, id] = *pick;
  auto owner = ready_.find(id)->second;
  ready_.erase(id);
  --w.credits;
  w.jobs[id] = running_job{id, 0, false};
  leases_[id] = {w.id, 0};  // attempt known once Redis has leased it
  queue_lease(lease_request{id, score, owner, w.id, new_token()});
  return true;
}

void queue_daemon::dispatch() {
  if (stopping_ || draining_ || workers_.empty() || !redis_ready() || ready_.empty()) return;
  // Round robin: each worker with credits takes one job per pass, starting after the one served
  // last, so one worker does not take everything. A job that fits no worker now (owner, walltime)
  // stays queued for a later one.
  const double now = epoch_now();
  for (bool progress = true; progress && !ready_.empty();) {
    progress = false;
    auto start = workers_.upper_bound(rr_);
    for (std::size_t k = 0, n = workers_.size(); k < n && !ready_.empty(); ++k, ++start) {
      if (start == workers_.end()) start = workers_.begin();
      if (dispatch_to(start->second, now)) {
        rr_ = start->first;
        progress = true;
      }
    }
  }
}

void queue_daemon::queue_lease(lease_request r) {
  lease_queue_.push_back(std::move(r));
  // Posted, never inline: a batch that fails at once (Redis just went away) hands its jobs and
  // credits back, and inside dispatch()'s loop that would take the same jobs again, forever.
  if (!lease_flush_posted_) {
    lease_flush_posted_ = true;
    net::post(io_, [this] { flush_leases(); });
  }
}

void queue_daemon::flush_leases() {
  lease_flush_posted_ = false;
  auto all = std::move(lease_queue_);
  lease_queue_.clear();
  // Batches are pipelined on the one connection; each is one script call.
  for (std::size_t i = 0; i < all.size(); i += lease_batch_max) {
    auto end = std::min(all.size(), i + lease_batch_max);
    std::vector<lease_request> batch(std::make_move_iterator(all.begin() + static_cast<std::ptrdiff_t>(i)),
                                     std::make_move_iterator(all.begin() + static_cast<std::ptrdiff_t>(end)));
    spawn(lease_batch(std::move(batch)), "lease");
  }
}

net::awaitable<void> queue_daemon::lease_batch(std::vector<lease_request> batch) {
  double lease_s = std::chrono::duration<double>(cfg_.daemon.lease_timeout).count();
  // The job's DESCPROD_TOKEN (DESIGN §6.2: it may read its job and add children, nothing more) is
  // written by the same script that leases the job, and exists before the job message leaves. A
  // lease that ends up not sent leaves an unused token that nobody holds; it expires.
  std::vector<store::claim_request> requests;
  requests.reserve(batch.size());
  for (const auto& q : batch) requests.push_back({q.id, q.worker, sha256_hex(q.token)});
  std::vector<transition_result> results;
  ++leases_in_flight_;  // drain_and_stop() waits for the answer
  try {
    results = co_await store_.async_claim_many(std::move(requests), lease_s,
                                               std::chrono::seconds(job_token_ttl).count());
  } catch (const boost::system::system_error& e) {
    --leases_in_flight_;
    redis_failed(e);
    // Redis went away: the jobs stay ready in Redis; hold them again and give the credits back.
    log::warn("lease failed, redis unavailable jobs={} first_job_id={} error={}", batch.size(), batch.front().id,
              e.what());
    for (const auto& q : batch) {
      leases_.erase(q.id);
      auto w = workers_.find(q.worker);
      if (w != workers_.end()) {
        w->second.jobs.erase(q.id);
        ++w->second.credits;
      }
      ready_.push(q.id, q.score, q.owner);
    }
    co_return;
  } catch (const std::exception& e) {
    // The script itself failed (one job's broken keys come back as that job's refusal instead).
    // Not retried: the credits go back, and the reconcile takes in whatever is still ready.
    log::error("lease batch failed jobs={} first_job_id={} error={}", batch.size(), batch.front().id, e.what());
    results.assign(batch.size(), transition_result{});
    for (auto& r : results) r.reason = refusal::error;
  }
  --leases_in_flight_;
  for (std::size_t i = 0; i < batch.size(); ++i) after_lease(batch[i], results[i]);
}

void queue_daemon::after_lease(lease_request& q, transition_result& r) {
  const job_id id = q.id;
  const std::string& worker_id = q.worker;
  auto wit = workers_.find(worker_id);
  if (!r.ok) {
    // Cancelled, already leased, or gone: not an error, just nothing to run. "error": the job's
    // keys are broken; it stays as it was in Redis, and an operator needs to hear of it.
    if (r.reason == refusal::error)
      log::error("lease failed job_id={} worker={} error={}", id, worker_id, r.state);
    else
      log::debug("lease refused job_id={} reason={} state={}", id, r.reason, r.state);
    leases_.erase(id);
    if (wit != workers_.end()) {
      wit->second.jobs.erase(id);
      ++wit->second.credits;
      dispatch();
    }
    return;
  }
  if (wit == workers_.end() || wit->second.draining || wit->second.revoked || draining_) {
    leases_.erase(id);
    if (wit != workers_.end()) wit->second.jobs.erase(id);
    requeue_later(id, r.attempt, worker_id, store::requeue_mode::plain,
                  draining_ ? "the daemon is stopping" : "worker left before dispatch");
    return;
  }
  auto& w = wit->second;
  leases_[id] = {worker_id, r.attempt};
  w.jobs[id] = running_job{id, r.attempt, false};
  const auto& rec = r.record;
  auto jt = rec.find("jobtype");
  const app_def* app = jt == rec.end() ? nullptr : apps_.find(jt->second);
  if (!app) {
    std::string name = jt == rec.end() ? "" : jt->second;
    log::error("job has an unknown application job_id={} jobtype={}", id, name);
    w.jobs.erase(id);
    leases_.erase(id);
    ++w.credits;
    boost::json::object fin;
    fin["job"] = id;
    fin["attempt"] = r.attempt;
    fin["rc"] = 127;
    fin["message"] = "unknown application " + name;
    pending_write pw{pending_write::kind::report};
    pw.worker = worker_id;
    pw.command = std::string(protocol::finished);
    pw.body = std::move(fin);
    submit(std::move(pw));
    dispatch();
    return;
  }
  if (w.walltime_end > 0 && app->time_limit_s > 0 &&
      epoch_now() + app->time_limit_s > w.walltime_end - w.walltime_margin_s) {
    // Now the daemon knows the job's time limit: it would outrun this worker's allocation. Put it
    // back as it was; job_limits_ keeps it from every worker that ends too soon.
    ++stats_.walltime_refusals;
    remember_limit(id, app->time_limit_s);
    w.jobs.erase(id);
    leases_.erase(id);
    ++w.credits;
    char why[160];
    std::snprintf(why, sizeof why, "walltime: time limit %.0f s, %.0f s left in the allocation of %s",
                  app->time_limit_s, std::max(0.0, w.walltime_end - w.walltime_margin_s - epoch_now()),
                  worker_id.c_str());
    log::info("job kept from worker for walltime job_id={} worker={} time_limit_s={:.0f}", id, worker_id,
              app->time_limit_s);
    requeue_later(id, r.attempt, worker_id, store::requeue_mode::plain, why);
    dispatch();
    return;
  }
  job_limits_.erase(id);
  boost::json::object body;
  body["job"] = job_to_json(rec);
  body["attempt"] = r.attempt;
  body["app"] = app_json(*app, rec, id);
  body["token"] = std::move(q.token);
  auto frames = redis_cmd(w.routing, std::string(protocol::job), boost::json::serialize(body));
  ++stats_.leased;
  log::debug("job leased job_id={} worker={} attempt={}", id, worker_id, r.attempt);
  if (!workers_sock_->send(frames)) {
    log::warn("worker unreachable at dispatch worker={} job_id={}", worker_id, id);
    worker_lost(worker_id, "unreachable");
  }
}

void queue_daemon::store_log_lines(job_id id, const boost::json::object& body) {
  auto it = body.find("lines");
  if (it == body.end() || !it->value().is_array()) throw std::invalid_argument("log: lines must be an array");
  std::vector<std::vector<std::string>> cmds;
  auto key = store_.job_key(id) + ":log";
  for (const auto& l : it->value().as_array()) {
    if (!l.is_string()) continue;
    const auto& raw = l.as_string();
    std::string line = sanitize_app_text(std::string_view(raw.data(), raw.size()), 4000);
    cmds.push_back({"XADD", key, "MAXLEN", "~", "1000", "*", "line", std::move(line)});
  }
  if (!cmds.empty() && redis_ready()) write_detached(std::move(cmds), "log");  // a tail: lossy
}

void queue_daemon::write_detached(std::vector<std::vector<std::string>> cmds, const char* what) {
  spawn([](queue_daemon* self, std::vector<std::vector<std::string>> cmds) -> net::awaitable<void> {
    try {
      auto replies = co_await self->redis_.async_pipeline(std::move(cmds));
      for (const auto& r : replies)
        if (r.is_error()) log::warn("redis write failed error={}", r.str);
    } catch (const boost::system::system_error& e) {
      self->redis_failed(e);  // heartbeats, stats, log tails: written again next time
    }
  }(this, std::move(cmds)), what);
}

// One batch of outbox writes in flight: the writes, how many are still running, which failed
// for want of a connection. Shared by the batch's coroutines, so it lives as long as any of them.
struct queue_daemon::write_batch {
  std::vector<pending_write> writes;
  std::size_t remaining = 0;
  std::vector<char> failed;
};

void queue_daemon::submit(pending_write w) {
  outbox_.push_back(std::move(w));
  if (outbox_.size() == 1) outbox_wake_.cancel();
}

void queue_daemon::requeue_later(job_id id, long long attempt, std::string worker, store::requeue_mode mode,
                                 std::string reason) {
  pending_write pw{pending_write::kind::requeue};
  pw.id = id;
  pw.attempt = attempt;
  pw.worker = std::move(worker);
  pw.mode = mode;
  pw.reason = std::move(reason);
  submit(std::move(pw));
}

net::awaitable<void> queue_daemon::outbox_loop() {
  // Takes the outbox in batches; the writes of a batch are pipelined on the one connection (each
  // starts in order and sends its command before the next starts), so Redis applies them in the
  // order they arrived. Up to max_in_flight batches are in flight, so the daemon builds the next
  // batch while Redis runs the last one. Writes that failed for want of a connection go back to
  // the front, in their order, once every batch in flight is back; nothing new starts meanwhile.
  constexpr std::size_t max_batch = 1024;
  constexpr std::size_t max_in_flight = 4;
  std::deque<std::shared_ptr<write_batch>> flying;
  std::vector<pending_write> failed;
  while (!stopping_) {
    if (!flying.empty() && flying.front()->remaining == 0) {
      auto& b = *flying.front();
      for (std::size_t i = 0; i < b.writes.size(); ++i)
        if (b.failed[i]) failed.push_back(std::move(b.writes[i]));
      flying.pop_front();
      if (flying.empty() && !failed.empty()) {
        for (auto it = failed.rbegin(); it != failed.rend(); ++it) outbox_.push_front(std::move(*it));
        log::warn("redis writes held until redis returns count={} outbox={}", failed.size(), outbox_.size());
        failed.clear();
      }
      continue;
    }
    writes_in_flight_ = 0;
    for (const auto& f : flying) writes_in_flight_ += f->writes.size();
    if (failed.empty() && !outbox_.empty() && redis_ready() && flying.size() < max_in_flight) {
      auto b = std::make_shared<write_batch>();
      std::size_t n = std::min(max_batch, outbox_.size());
      b->writes.reserve(n);
      for (std::size_t i = 0; i < n; ++i) {
        b->writes.push_back(std::move(outbox_.front()));
        outbox_.pop_front();
      }
      b->failed.assign(n, 0);
      flying.push_back(b);
      writes_in_flight_ += n;
      // Runs of consecutive worker reports go as one script call each (store::async_reports);
      // anything else (requeues, raw commands) one call of its own, in between, in order.
      std::vector<std::pair<std::size_t, std::size_t>> parts;
      for (std::size_t i = 0; i < n;) {
        std::size_t j = i + 1;
        if (b->writes[i].what == pending_write::kind::report)
          while (j < n && j - i < reports_per_call && b->writes[j].what == pending_write::kind::report) ++j;
        parts.emplace_back(i, j);
        i = j;
      }
      b->remaining = parts.size();
      for (auto [i, j] : parts) {
        if (b->writes[i].what == pending_write::kind::report)
          net::co_spawn(io_, apply_reports(b, i, j), net::detached);
        else
          net::co_spawn(io_, apply_one(b, i), net::detached);
      }
      continue;
    }
    // Woken by submit() (the outbox was empty), by a batch coming back, or by a reconnect.
    bool poll = flying.empty() && !outbox_.empty();  // waiting for Redis to come back
    outbox_wake_.expires_after(poll ? std::chrono::milliseconds(50) : std::chrono::hours(1));
    co_await outbox_wake_.async_wait(use_tuple);
  }
}

net::awaitable<void> queue_daemon::apply_one(std::shared_ptr<write_batch> b, std::size_t i) {
  try {
    co_await apply(b->writes[i]);
    ack(b->writes[i]);
  } catch (const boost::system::system_error& e) {
    b->failed[i] = 1;  // Redis unavailable: keep it for later
    redis_failed(e);
  } catch (const std::exception& e) {
    log::error("redis write dropped error={}", e.what());
    ack(b->writes[i]);  // it would fail the same way again
  }
  if (--b->remaining == 0) outbox_wake_.cancel();
}

store::report queue_daemon::to_report(const pending_write& w) {
  const auto& body = w.body;
  const job_id id = *protocol::get_int(body, "job");
  const long long attempt = *protocol::get_int(body, "attempt");
  auto cut = [](std::string m) {
    if (m.size() > 1000) m.resize(1000);
    return m;
  };
  if (w.command == protocol::started) {
    store::start_report q;
    q.id = id;
    q.attempt = attempt;
    q.worker = w.worker;
    q.host = protocol::get_string(body, "host").value_or("");
    q.rundir = protocol::get_string(body, "rundir").value_or("");
    q.pid = protocol::get_int(body, "pid").value_or(0);
    return q;
  }
  if (w.command == protocol::progress) {
    store::progress_report q;
    q.id = id;
    q.attempt = attempt;
    q.worker = w.worker;
    q.message = cut(protocol::get_string(body, "message").value_or(""));
    q.done = protocol::get_int(body, "done");
    q.total = protocol::get_int(body, "total");
    return q;
  }
  auto out = classify_exit(static_cast<int>(protocol::get_int(body, "rc").value_or(0)),
                           static_cast<int>(protocol::get_int(body, "signal").value_or(0)),
                           protocol::get_bool(body, "timed_out").value_or(false));
  store::finish_report q;
  q.id = id;
  q.attempt = attempt;
  q.worker = w.worker;
  q.target = out.state;
  q.return_status = out.return_status;
  q.prefix = out.prefix;
  q.message = cut(protocol::get_string(body, "message").value_or(""));
  return q;
}

void queue_daemon::report_applied(const pending_write& w, const transition_result& r) {
  ack(w);  // applied or refused, Redis has answered: the worker need not send it again
  job_id id = *protocol::get_int(w.body, "job");
  if (r.ok) {
    if (w.command == protocol::finished) {
      ++stats_.finished;
      log::debug("job finished job_id={} state={} worker={}", id, r.state, w.worker);
    }
    return;
  }
  ++stats_.stale_events;
  log::warn("event ignored command={} job_id={} attempt={} worker={} reason={} state={}", w.command, id,
            *protocol::get_int(w.body, "attempt"), w.worker, r.reason, r.state);
}

net::awaitable<void> queue_daemon::apply_reports(std::shared_ptr<write_batch> b, std::size_t from,
                                                 std::size_t to) {
  std::vector<store::report> reports;
  reports.reserve(to - from);
  for (std::size_t i = from; i < to; ++i) reports.push_back(to_report(b->writes[i]));
  bool one_by_one = false;
  try {
    auto results = co_await store_.async_reports(std::move(reports));
    for (std::size_t i = from; i < to; ++i) report_applied(b->writes[i], results[i - from]);
  } catch (const boost::system::system_error& e) {
    for (std::size_t i = from; i < to; ++i) b->failed[i] = 1;  // Redis unavailable: keep them for later
    redis_failed(e);
  } catch (const std::exception& e) {
    // The script failed, not the connection (a job's keys are broken): apply them one by one, in
    // order, so that only the broken one is dropped.
    log::warn("report batch failed, applying one by one count={} error={}", to - from, e.what());
    one_by_one = to - from > 1;
    if (!one_by_one) {
      log::error("redis write dropped count=1 error={}", e.what());
      ack(b->writes[from]);
    }
  }
  if (one_by_one) {
    for (std::size_t i = from; i < to; ++i) {
      std::vector<store::report> one;
      one.push_back(to_report(b->writes[i]));
      try {
        auto r = co_await store_.async_reports(std::move(one));
        report_applied(b->writes[i], r.front());
      } catch (const boost::system::system_error& e1) {
        b->failed[i] = 1;
        redis_failed(e1);
      } catch (const std::exception& e1) {
        log::error("redis write dropped job_id={} command={} error={}", *protocol::get_int(b->writes[i].body, "job"),
                   b->writes[i].command, e1.what());
        ack(b->writes[i]);  // its keys are broken: sending it again would not help
      }
    }
  }
  if (--b->remaining == 0) outbox_wake_.cancel();
}

net::awaitable<void> queue_daemon::apply(pending_write& w) {
  using kind = pending_write::kind;
  if (w.what == kind::commands) {
    auto replies = co_await redis_.async_pipeline(w.commands);
    for (const auto& r : replies)
      if (r.is_error()) log::warn("redis write failed error={}", r.str);
    co_return;
  }
  if (w.what == kind::requeue || w.what == kind::orphan) {
    if (w.what == kind::orphan) {
      auto cmd = redis_cmd("HGET", store_.job_key(w.id), "attempt");
      w.attempt = (co_await redis_.async_exec(std::move(cmd))).as_integer();
    }
    auto r = co_await store_.async_requeue(w.id, w.attempt, w.worker, w.mode, w.reason);
    if (!r.ok) {
      log::warn("requeue refused job_id={} reason={} state={}", w.id, r.reason, r.state);
      co_return;
    }
    log::info("job requeued job_id={} state={} attempt={} reason={}", w.id, r.state, r.attempt, w.reason);
    if (r.state == "ready") {
      auto cmd = redis_cmd("HMGET", store_.job_key(w.id), "priority", "descname");
      auto p = co_await redis_.async_exec(std::move(cmd));
      if (p.elements.size() == 2)
        enqueue(w.id, static_cast<int>(p.elements[0].as_integer()), p.elements[1].str);
      dispatch();
    }
    co_return;
  }
  // kind::report never comes here: outbox_loop sends every report through apply_reports.
  log::error("outbox write of an unexpected kind dropped worker={} command={}", w.worker, w.command);
}

void queue_daemon::ack(const pending_write& w) {
  if (w.ack_command.empty()) return;
  boost::json::array entry;
  if (w.what == pending_write::kind::report) {
    entry.emplace_back(protocol::get_int(w.body, "job").value_or(0));
    entry.emplace_back(protocol::get_int(w.body, "attempt").value_or(0));
  } else {
    entry.emplace_back(w.id);
    entry.emplace_back(w.attempt);
  }
  entry.emplace_back(w.ack_command);
  auto it = workers_.find(w.worker);
  const std::string& to = it != workers_.end() && !it->second.routing.empty() ? it->second.routing : w.routing;
  if (to.empty()) return;
  acks_[to].push_back(std::move(entry));
  if (!acks_posted_) {
    acks_posted_ = true;
    net::post(io_, [this] { flush_acks(); });
  }
}

void queue_daemon::flush_acks() {
  acks_posted_ = false;
  if (!workers_sock_) return;
  auto all = std::move(acks_);
  acks_.clear();
  for (auto& [routing, reports] : all) {
    boost::json::object body;
    body["reports"] = std::move(reports);
    send_worker(routing, protocol::ack, body);
  }
}

void queue_daemon::erase_orphan(job_id id) {
  auto it = orphans_.find(id);
  if (it == orphans_.end()) return;
  if (auto w = orphans_by_worker_.find(it->second.worker); w != orphans_by_worker_.end()) {
    w->second.erase(id);
    if (w->second.empty()) orphans_by_worker_.erase(w);
  }
  orphans_.erase(it);
}

net::awaitable<void> queue_daemon::drain_and_stop() {
  if (draining_ || stopping_) {
    stop();  // a second signal: at once
    co_return;
  }
  draining_ = true;
  if (pilots_) pilots_->stop();
  auto start = clock_type::now();
  auto deadline = start + cfg_.daemon.stop_deadline;
  log::info("daemon draining: no new work, writing the outbox outbox={} deadline_ms={}", outbox_.size(),
            cfg_.daemon.stop_deadline.count());
  net::steady_timer timer(io_);
  while (!stopping_ && clock_type::now() < deadline &&
         (!outbox_.empty() || writes_in_flight_ > 0 || leases_in_flight_ > 0 || !lease_queue_.empty())) {
    timer.expires_after(std::chrono::milliseconds(10));
    co_await timer.async_wait(use_tuple);
  }
  if (!outbox_.empty() || writes_in_flight_ > 0)
    log::warn("daemon stopping with writes not done (the workers send their reports again) outbox={} in_flight={}",
              outbox_.size(), writes_in_flight_);
  else
    log::info("daemon drained ms={}",
              std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - start).count());
  stop();
}

void queue_daemon::worker_lost(const std::string& id_ref, const std::string& why) {
  const std::string worker_id = id_ref;  // id_ref may be the map entry's own id, erased below
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return;
  auto jobs = std::move(it->second.jobs);
  routing_to_id_.erase(it->second.routing);
  workers_.erase(it);
  if (pilots_) pilots_->on_worker_left(worker_id);
  log::warn("worker lost worker={} reason={} jobs={}", worker_id, why, jobs.size());
  for (const auto& [id, j] : jobs) {
    leases_.erase(id);
    if (j.attempt == 0) continue;  // lease still in flight: lease_and_send requeues it
    ++stats_.requeued;
    requeue_later(id, j.attempt, worker_id, store::requeue_mode::lost, why);
  }
}

net::awaitable<void> queue_daemon::recheck_tokens() {
  // A revoked or expired token, a disabled owner: the worker gets no more jobs (those it runs
  // finish and report). Pool changes apply from here on.
  std::vector<std::pair<std::string, std::string>> checks;  // worker id, token sha
  for (const auto& [id, w] : workers_)
    if (!w.token_sha.empty()) checks.emplace_back(id, w.token_sha);
  for (const auto& [id, sha] : checks) {
    // Redis unavailable (LOADING, BUSY, a lost connection) says nothing about the token: stop
    // here, revoke nobody, and check again once Redis serves (start_reconnect).
    worker_grant g;
    try {
      g = co_await check_worker_token(redis_, cfg_.redis.prefix, sha);
    } catch (const boost::system::system_error& e) {
      redis_failed(e);
      co_return;
    }
    auto it = workers_.find(id);
    if (it == workers_.end() || it->second.token_sha != sha) continue;
    auto& w = it->second;
    if (!g.ok) {
      if (!w.revoked) {
        w.revoked = true;
        w.credits = 0;
        log::warn("worker token no longer valid: dispatch stopped worker={} owner={} reason={} running={}", id,
                  w.owner, g.reason, w.jobs.size());
      }
      continue;
    }
    if (w.revoked) continue;  // a revoked worker must say hello again
    set_grant(w, g);
  }
  dispatch();
}

void queue_daemon::write_stats() {
  int slots = 0, busy = 0, unhealthy = 0;
  for (const auto& [id, w] : workers_) {
    slots += w.slots;
    unhealthy += w.unhealthy ? 1 : 0;
    busy += std::min(w.slots, static_cast<int>(w.jobs.size()));  // not counting prefetched jobs
  }
  auto u = [](std::uint64_t v) { return std::to_string(v); };
  write_detached({redis_cmd("HSET", store_.key("daemon:stats"), "updated", fmt_double(epoch_now()), "queue_depth",
                            u(ready_.size()), "workers", u(workers_.size()), "slots", std::to_string(slots),
                            "busy_slots", std::to_string(busy), "workers_unhealthy", std::to_string(unhealthy), "outbox", u(outbox_.size()), "leased_total",
                            u(stats_.leased), "finished_total", u(stats_.finished), "requeued_total",
                            u(stats_.requeued), "lease_expiries_total", u(stats_.lease_expiries),
                            "stale_events_total", u(stats_.stale_events), "malformed_total", u(stats_.malformed),
                            "handed_back_total", u(stats_.handed_back), "walltime_refusals_total",
                            u(stats_.walltime_refusals), "workers_refused_total", u(stats_.workers_refused),
                            "reports_refused_total", u(stats_.reports_refused))},
                 "stats");
}

pilot_demand queue_daemon::demand() const {
  // What pilots could take: ready jobs, less those whose known time limit no pilot's walltime
  // would fit (a new pilot could not run them either); and the free slots of workers now.
  pilot_demand d;
  d.ready = ready_.size();
  const double pilot_s = 60.0 * cfg_.pilots.walltime_minutes;
  for (const auto& [id, limit] : job_limits_)
    if (limit > pilot_s && ready_.contains(id) && d.ready > 0) --d.ready;
  for (const auto& [id, w] : workers_)
    if (!w.draining && !w.revoked)  // credits for prefetch are not free slots
      d.free_slots += std::min(w.credits, std::max(0, w.slots - static_cast<int>(w.jobs.size())));
  return d;
}

net::awaitable<void> queue_daemon::cron() {
  net::steady_timer timer(io_);
  const boost::json::object empty_body;
  while (!stopping_) {
    timer.expires_after(cfg_.daemon.heartbeat_interval);
    co_await timer.async_wait(use_tuple);
    if (stopping_) break;
    auto now = clock_type::now();
    // Workers heartbeat every interval; the daemon answers less often: a worker only needs to
    // hear from it within lease_timeout (then it reconnects), so every quarter of that is plenty.
    // With 10,000 workers this halves the messages ZeroMQ's I/O thread handles.
    bool send_heartbeats = now - last_heartbeat_sent_ >= std::max<clock_type::duration>(
                                                             cfg_.daemon.heartbeat_interval, cfg_.daemon.lease_timeout / 4);
    if (send_heartbeats) last_heartbeat_sent_ = now;
    std::vector<std::string> lost;
    for (auto& [id, w] : workers_) {
      if (now - w.last_seen > cfg_.daemon.lease_timeout) lost.push_back(id);
      else if (send_heartbeats) send_worker(w.routing, protocol::heartbeat, empty_body);
    }
    for (const auto& id : lost) {
      ++stats_.lease_expiries;
      worker_lost(id, "missed heartbeats");
    }
    if (!redis_ready()) {
      start_reconnect();
      continue;
    }
    // Orphaned leases from before a restart whose worker never came back.
    std::vector<job_id> expired;
    for (const auto& [id, o] : orphans_)
      if (now >= o.deadline) expired.push_back(id);
    for (job_id id : expired) {
      erase_orphan(id);
      pending_write pw{pending_write::kind::orphan};
      pw.id = id;
      pw.mode = store::requeue_mode::lost;
      pw.reason = "worker did not return after a daemon restart";
      submit(std::move(pw));
    }
    // Worker records and lease deadlines, one pipeline.
    std::vector<std::vector<std::string>> cmds;
    double deadline = epoch_now() + std::chrono::duration<double>(cfg_.daemon.lease_timeout).count();
    auto ttl = std::to_string(std::max<long long>(1, 3 * cfg_.daemon.lease_timeout.count() / 1000));
    // A worker's record is written in full once, its changing fields when they change, and
    // otherwise only last_heartbeat (with the EXPIRE) every record_refresh: with 10,000 idle
    // workers that is a few thousand small writes a second instead of 10,000 full records.
    auto record_refresh = std::max<clock_type::duration>(cfg_.daemon.heartbeat_interval, cfg_.daemon.lease_timeout / 4);
    std::string now_s = fmt_double(epoch_now());
    for (auto& [id, w] : workers_) {
      auto key = store_.key("worker:" + id);
      bool changed = w.record_running != w.jobs.size() || w.record_draining != w.draining ||
                     w.record_revoked != w.revoked || w.record_unhealthy != w.unhealthy;
      if (!w.record_written) {
        cmds.push_back(redis_cmd("HSET", key, "id", id, "host", w.host, "owner", w.owner, "pool", w.pool, "slots",
                                 std::to_string(w.slots), "running", std::to_string(w.jobs.size()),
                                 "last_heartbeat", now_s, "walltime_end",
                                 std::to_string(static_cast<long long>(w.walltime_end)), "draining",
                                 w.draining ? "1" : "0", "revoked", w.revoked ? "1" : "0", "token_sha",
                                 w.token_sha, "pools", join_pools(w.pools), "health",
                                 w.unhealthy ? "unhealthy" : "ok", "health_reason", w.health_reason));
      } else if (changed) {
        cmds.push_back(redis_cmd("HSET", key, "running", std::to_string(w.jobs.size()), "last_heartbeat", now_s,
                                 "draining", w.draining ? "1" : "0", "revoked", w.revoked ? "1" : "0", "health",
                                 w.unhealthy ? "unhealthy" : "ok", "health_reason", w.health_reason));
      } else if (now - w.record_time >= record_refresh) {
        cmds.push_back(redis_cmd("HSET", key, "last_heartbeat", now_s));
      }
      if (!w.record_written || changed || now - w.record_time >= record_refresh) {
        cmds.push_back(redis_cmd("EXPIRE", key, ttl));
        w.record_written = true;
        w.record_time = now;
        w.record_running = w.jobs.size();
        w.record_draining = w.draining;
        w.record_revoked = w.revoked;
        w.record_unhealthy = w.unhealthy;
      }
      for (const auto& [jid, j] : w.jobs)
        if (j.attempt > 0) cmds.push_back(redis_cmd("ZADD", store_.key("leases"), "XX", fmt_double(deadline), std::to_string(jid)));
    }
    if (!cmds.empty()) write_detached(std::move(cmds), "heartbeat_write");
    write_stats();
    if (now - last_reconcile_ > cfg_.daemon.reconcile_interval) {
      last_reconcile_ = now;
      spawn(reconcile(), "reconcile");
      if (token_mode_) spawn(recheck_tokens(), "recheck_tokens");
    }
  }
}

}  // namespace descprod
