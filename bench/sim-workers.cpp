// bench/sim-workers: a load generator that speaks the worker wire protocol (docs/protocol.md) as
// N workers x S slots from one process, one DEALER socket per worker, on one thread (epoll over
// the sockets' ZMQ_FD, edge-triggered, with the usual "ask ZMQ_EVENTS again after every send").
//
// Each job is "run" at once (or after --hold-ms): `started`, then `finished` with rc 0, then the
// freed credits as one `ready`. It checks what a real worker checks: the protocol version in
// `welcome`, a well-formed `job` (job.id > 0, attempt >= 1, app.argv a non-empty list), and it
// echoes the attempt it was given. Across all simulated workers no job ID may arrive twice (no
// requeues happen in a benchmark); a duplicate is counted and makes the exit status 1.
//
// With --redis-socket it waits, after its last `finished`, until Redis's lease set is empty, so
// the rate it prints counts every transition persisted (the daemon writes Redis asynchronously).
// The last line of output is machine-readable: key=value pairs.
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "core/keys.hpp"

namespace {

using clk = std::chrono::steady_clock;
namespace json = boost::json;

double epoch_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}
double secs(clk::duration d) { return std::chrono::duration<double>(d).count(); }

struct options {
  std::string endpoint;
  int workers = 1;
  int slots = 1;
  int hold_ms = 0;
  int heartbeat_ms = 0;   // 0: as the daemon's welcome says
  long long jobs = 0;     // stop after this many completions (0: no limit)
  double duration_s = 0;  // stop after this long (0: no limit)
  double max_s = 600;     // hard bound on the whole run
  bool idle = false;      // grant no credits (heartbeat-only load)
  int quiet_ms = 300;     // at the end: drained when no job arrived for this long
  int poll_ms = 50;       // longest epoll wait (a safety net; ZMQ_FD edges drive the loop)
  std::string owner = "admin";
  std::string pool = "default";
  std::string prefix_id = "sim";
  std::string redis_socket;
  std::string redis_prefix = "descprod:";
  std::string latency_file;  // per job: id, queued_time, received epoch (for submit->dispatch)
};

void usage(FILE* f) {
  std::fprintf(f,
               "Usage: sim-workers --endpoint EP [options]\n"
               "Simulates N workers x S slots speaking the DESCprod worker protocol to a daemon.\n"
               "  --endpoint EP       the daemon's worker endpoint (ipc://... or tcp://...)\n"
               "  --workers N         simulated workers, one DEALER socket each (default 1)\n"
               "  --slots S           slots per worker (default 1)\n"
               "  --hold-ms MS        a job 'runs' this long before finished (default 0: at once)\n"
               "  --heartbeat-ms MS   heartbeat period (default: the daemon's, from welcome)\n"
               "  --jobs K            stop after K jobs completed\n"
               "  --duration S        stop after S seconds (from the first welcome)\n"
               "  --max-seconds S     hard time bound of the run (default 600)\n"
               "  --idle              grant no credits: heartbeats only\n"
               "  --quiet-ms MS       end of run: drained once no job came for MS (default 300)\n"
               "  --poll-ms MS        longest wait for socket events (default 50)\n"
               "  --owner NAME --pool NAME --id-prefix P   hello fields (default admin, default, sim)\n"
               "  --redis-socket PATH wait until PREFIX leases is empty before the final figure\n"
               "  --redis-prefix P    key prefix (default descprod:)\n"
               "  --latency-file F    write 'id queued_time received_time' per job\n"
               "  -h, --help          this text\n"
               "Exit status: 0 ok, 1 a duplicate or protocol error, 2 bad usage, 3 timeout.\n");
}

struct held {
  clk::time_point due;
  int worker;
  long long id;
  long long attempt;
};

struct sim_worker {
  explicit sim_worker(zmq::socket_t s) : sock(std::move(s)) {}
  zmq::socket_t sock;
  std::string id;
  bool welcomed = false;
  bool draining = false;
  int freed = 0;                                      // credits to grant after this round
  std::vector<std::pair<long long, long long>> held;  // (id, attempt) received, not yet finished
};

class simulator {
 public:
  explicit simulator(options o) : o_(std::move(o)) {}
  int run();

 private:
  void send(int w, std::string_view cmd, json::object body);
  void service(int w);  // receive everything pending on worker w
  void handle(int w, zmq::message_t& cmd, zmq::message_t& body);
  void finish_job(int w, long long id, long long attempt);
  void flush_credits(int w);
  // The `running` list of a hello or heartbeat: the jobs worker w holds, [{job, attempt}].
  json::array running_list(int w) const;
  void send_hello(int w);
  void fail(const std::string& why) {
    ++errors_;
    if (errors_ <= 10) std::fprintf(stderr, "sim-workers: %s\n", why.c_str());
  }

  options o_;
  zmq::context_t ctx_;
  std::vector<sim_worker> ws_;
  int ep_ = -1;
  std::deque<int> pending_;  // workers to service again (sent something: the edge may be gone)
  std::vector<char> in_pending_;
  std::deque<held> holds_;  // due times are monotone: a FIFO suffices
  std::deque<std::pair<clk::time_point, int>> beats_;
  std::vector<unsigned char> seen_;  // job IDs received (duplicates check)
  long long completed_ = 0, received_ = 0, duplicates_ = 0, errors_ = 0, heartbeats_ = 0, rejects_ = 0,
            rehellos_ = 0;
  int welcomed_ = 0;
  int hb_ms_ = 0;
  bool stopping_ = false;
  clk::time_point t_welcomed_{}, t_first_job_{}, t_last_finish_{}, t_last_job_{};
  bool have_first_ = false;
  FILE* lat_ = nullptr;
  std::string host_;
};

void simulator::send(int w, std::string_view cmd, json::object body) {
  body["worker"] = ws_[w].id;
  auto text = json::serialize(body);
  auto& s = ws_[w].sock;
  try {
    if (!s.send(zmq::buffer(cmd), zmq::send_flags::sndmore | zmq::send_flags::dontwait) ||
        !s.send(zmq::buffer(text), zmq::send_flags::dontwait))
      fail("send would block (high-water mark) worker=" + ws_[w].id);
  } catch (const zmq::error_t& e) {
    fail(std::string("send failed: ") + e.what());
  }
  if (!in_pending_[w]) {
    in_pending_[w] = 1;
    pending_.push_back(w);
  }
}

void simulator::send_hello(int w) {
  json::object h;
  h["protocol"] = 1;
  h["role"] = "worker";
  h["owner"] = o_.owner;
  h["host"] = host_;
  h["slots"] = o_.slots;
  h["pool"] = o_.pool;
  h["version"] = "sim-workers";
  h["walltime_end"] = 0;
  h["walltime_margin_s"] = 0;
  h["running"] = running_list(w);
  send(w, "hello", std::move(h));
}

json::array simulator::running_list(int w) const {
  json::array running;
  for (auto& [id, att] : ws_[w].held) {
    json::object r;
    r["job"] = id;
    r["attempt"] = att;
    running.push_back(std::move(r));
  }
  return running;
}

void simulator::flush_credits(int w) {
  auto& sw = ws_[w];
  if (sw.freed <= 0 || !sw.welcomed || sw.draining || o_.idle) {
    sw.freed = 0;
    return;
  }
  json::object b;
  b["credits"] = sw.freed;
  sw.freed = 0;
  send(w, "ready", std::move(b));
}

void simulator::finish_job(int w, long long id, long long attempt) {
  auto& sw = ws_[w];
  for (std::size_t i = 0; i < sw.held.size(); ++i)
    if (sw.held[i].first == id) {
      sw.held[i] = sw.held.back();
      sw.held.pop_back();
      break;
    }
  json::object f;
  f["job"] = id;
  f["attempt"] = attempt;
  f["rc"] = 0;
  f["signal"] = 0;
  f["timed_out"] = false;
  f["message"] = "";
  send(w, "finished", std::move(f));
  ++completed_;
  ++sw.freed;
  t_last_finish_ = clk::now();
}

void simulator::handle(int w, zmq::message_t& cmdm, zmq::message_t& bodym) {
  auto& sw = ws_[w];
  std::string_view cmd = cmdm.to_string_view();
  boost::system::error_code ec;
  auto v = json::parse(bodym.to_string_view(), ec);
  if (ec || !v.is_object()) return fail("malformed body from daemon command=" + std::string(cmd));
  auto& body = v.as_object();
  auto get_int = [](const json::object& o, std::string_view k) -> long long {
    auto it = o.find(k);
    if (it == o.end()) return -1;
    if (it->value().is_int64()) return it->value().as_int64();
    if (it->value().is_uint64()) return static_cast<long long>(it->value().as_uint64());
    if (it->value().is_string()) return std::atoll(it->value().as_string().c_str());
    return -1;
  };
  if (cmd == "welcome") {
    if (get_int(body, "protocol") != 1) return fail("welcome with another protocol version");
    if (!sw.welcomed) {
      sw.welcomed = true;
      if (++welcomed_ == static_cast<int>(ws_.size())) {
        t_welcomed_ = clk::now();
        std::printf("all-welcomed workers=%d\n", welcomed_);
        std::fflush(stdout);
      }
    }
    if (!o_.heartbeat_ms && hb_ms_ == 0) {
      long long hb = get_int(body, "heartbeat_ms");
      hb_ms_ = hb >= 10 ? static_cast<int>(hb) : 1000;
    }
    sw.freed = o_.slots - static_cast<int>(sw.held.size());
    flush_credits(w);
    return;
  }
  if (cmd == "heartbeat") return;
  if (cmd == "reject") {
    ++rejects_;
    auto it = body.find("retry");
    if (it != body.end() && it->value().is_bool() && it->value().as_bool()) {
      sw.welcomed = false;
      return send_hello(w);
    }
    return fail("rejected by the daemon: " + json::serialize(body));
  }
  if (cmd == "cancel") {
    long long id = get_int(body, "job");
    for (auto it = holds_.begin(); it != holds_.end(); ++it)
      if (it->id == id && it->worker == w) {
        auto h = *it;
        holds_.erase(it);
        finish_job(w, h.id, h.attempt);  // "killed" at once; reported as ended
        break;
      }
    return;
  }
  if (cmd != "job") return fail("unexpected command " + std::string(cmd));
  auto now = clk::now();
  ++received_;
  t_last_job_ = now;
  if (!have_first_) {
    have_first_ = true;
    t_first_job_ = now;
  }
  auto jit = body.find("job");
  auto ait = body.find("app");
  if (jit == body.end() || !jit->value().is_object() || ait == body.end() || !ait->value().is_object())
    return fail("job message without job or app object");
  const auto& job = jit->value().as_object();
  long long id = get_int(job, "id");
  long long attempt = get_int(body, "attempt");
  auto argv = ait->value().as_object().find("argv");
  if (id <= 0 || attempt < 1 || argv == ait->value().as_object().end() || !argv->value().is_array() ||
      argv->value().as_array().empty())
    return fail("malformed job message");
  if (static_cast<std::size_t>(id) >= seen_.size())
    seen_.resize(std::max<std::size_t>(id + 1, seen_.size() * 2));
  if (seen_[id]) {
    ++duplicates_;
    fail("job received twice id=" + std::to_string(id) + " worker=" + sw.id);
    return;
  }
  seen_[id] = 1;
  if (lat_) {
    auto q = job.find("queued_time");
    double qt = q == job.end() ? 0 : (q->value().is_double() ? q->value().as_double() : 0);
    std::fprintf(lat_, "%lld %.6f %.6f\n", id, qt, epoch_now());
  }
  if (static_cast<int>(sw.held.size()) >= o_.slots)
    fail("daemon sent more jobs than credits worker=" + sw.id);
  sw.held.emplace_back(id, attempt);
  json::object s;
  s["job"] = id;
  s["attempt"] = attempt;
  s["pid"] = 1;
  s["host"] = host_;
  s["rundir"] = "/nonexistent/sim";
  send(w, "started", std::move(s));
  if (o_.hold_ms <= 0) finish_job(w, id, attempt);
  else holds_.push_back({now + std::chrono::milliseconds(o_.hold_ms), w, id, attempt});
}

void simulator::service(int w) {
  auto& s = ws_[w].sock;
  while (true) {
    zmq::message_t a, b;
    zmq::recv_result_t got;
    try {
      got = s.recv(a, zmq::recv_flags::dontwait);
    } catch (const zmq::error_t& e) {
      fail(std::string("recv failed: ") + e.what());
      break;
    }
    if (!got) break;
    if (!a.more()) {
      fail("single-frame message from daemon");
      continue;
    }
    (void)s.recv(b, zmq::recv_flags::none);
    while (b.more()) {  // drain extra frames of a malformed message
      zmq::message_t c;
      (void)s.recv(c, zmq::recv_flags::none);
      fail("message with more than 2 frames");
    }
    handle(w, a, b);
  }
  flush_credits(w);
}

int simulator::run() {
  char hn[256] = {};
  gethostname(hn, sizeof hn - 1);
  host_ = hn;
  // Many sockets: raise the descriptor limit and ZeroMQ's socket cap.
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  ctx_.set(zmq::ctxopt::max_sockets, o_.workers + 64);
  if (o_.workers > 1000) ctx_.set(zmq::ctxopt::io_threads, 1);
  if (!o_.latency_file.empty()) {
    lat_ = std::fopen(o_.latency_file.c_str(), "w");
    if (!lat_) {
      std::perror(o_.latency_file.c_str());
      return 2;
    }
  }
  ep_ = epoll_create1(0);
  ws_.reserve(o_.workers);
  in_pending_.assign(o_.workers, 0);
  hb_ms_ = o_.heartbeat_ms;
  const auto t_start = clk::now();
  const double e_start = epoch_now();
  const auto hard_end = t_start + std::chrono::milliseconds(static_cast<long long>(o_.max_s * 1000));
  for (int i = 0; i < o_.workers; ++i) {
    sim_worker sw(zmq::socket_t(ctx_, zmq::socket_type::dealer));
    sw.id = o_.prefix_id + "-" + std::to_string(getpid()) + "-" + std::to_string(i);
    sw.sock.set(zmq::sockopt::linger, 2000);
    sw.sock.set(zmq::sockopt::sndhwm, 0);
    sw.sock.set(zmq::sockopt::rcvhwm, 0);
    sw.sock.connect(o_.endpoint);
    int fd = sw.sock.get(zmq::sockopt::fd);
    ws_.push_back(std::move(sw));
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLET;
    ev.data.u32 = static_cast<unsigned>(i);
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      std::perror("epoll_ctl");
      return 2;
    }
    send_hello(i);
  }
  std::vector<epoll_event> evs(1024);
  clk::time_point stop_at = clk::time_point::max();
  clk::time_point quiet_since{};
  bool hb_scheduled = false;
  clk::time_point last_sweep = clk::now(), last_rehello = clk::now();
  bool timed_out = false;
  while (true) {
    auto now = clk::now();
    if (now > hard_end) {
      timed_out = true;
      std::fprintf(stderr, "sim-workers: --max-seconds reached (welcomed=%d completed=%lld)\n", welcomed_,
                   completed_);
      break;
    }
    if (!hb_scheduled && hb_ms_ > 0 && welcomed_ > 0) {
      // Heartbeats spread evenly over one period.
      hb_scheduled = true;
      for (int i = 0; i < o_.workers; ++i)
        beats_.emplace_back(now + std::chrono::microseconds(1000LL * hb_ms_ * i / o_.workers), i);
    }
    if (!stopping_ && welcomed_ == o_.workers) {
      if (stop_at == clk::time_point::max() && o_.duration_s > 0)
        stop_at = t_welcomed_ + std::chrono::milliseconds(static_cast<long long>(o_.duration_s * 1000));
      if ((o_.jobs > 0 && completed_ >= o_.jobs) || now >= stop_at) {
        // Drain: no more credits; what is already on the wire is still run and reported.
        stopping_ = true;
        for (int i = 0; i < o_.workers; ++i) {
          ws_[i].draining = true;
          send(i, "drain", json::object());
        }
        quiet_since = now;
      }
    }
    if (stopping_) {
      if (t_last_job_ > quiet_since) quiet_since = t_last_job_;
      if (holds_.empty() && now - quiet_since > std::chrono::milliseconds(o_.quiet_ms)) break;
    }
    // Jobs whose hold time is over.
    while (!holds_.empty() && holds_.front().due <= now) {
      auto h = holds_.front();
      holds_.pop_front();
      finish_job(h.worker, h.id, h.attempt);
      flush_credits(h.worker);
    }
    // Heartbeats that are due.
    while (!beats_.empty() && beats_.front().first <= now) {
      auto [due, i] = beats_.front();
      beats_.pop_front();
      if (ws_[i].welcomed) {
        json::object b;
        b["running"] = running_list(i);
        send(i, "heartbeat", std::move(b));
        ++heartbeats_;
      }
      beats_.emplace_back(due + std::chrono::milliseconds(hb_ms_), i);
    }
    // Sockets we sent on: their edge may have been consumed by the send.
    while (!pending_.empty()) {
      int w = pending_.front();
      pending_.pop_front();
      in_pending_[w] = 0;
      service(w);
    }
    auto next = now + std::chrono::milliseconds(o_.poll_ms);
    if (!holds_.empty()) next = std::min(next, holds_.front().due);
    if (!beats_.empty()) next = std::min(next, beats_.front().first);
    if (stop_at != clk::time_point::max() && !stopping_) next = std::min(next, stop_at);
    int timeout = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(next - clk::now()).count());
    if (timeout < 0) timeout = 0;
    int n = epoll_wait(ep_, evs.data(), static_cast<int>(evs.size()), timeout);
    for (int k = 0; k < n; ++k) service(static_cast<int>(evs[k].data.u32));
    // Safety nets, once a second: look at every socket (a ZMQ_FD edge can be missed), and say
    // hello again where no welcome came for 5 s (as a real worker does when its hello goes
    // unanswered).
    if (clk::now() - last_sweep >= std::chrono::seconds(1)) {
      last_sweep = clk::now();
      for (int i = 0; i < o_.workers; ++i) service(i);
      if (welcomed_ < o_.workers && last_sweep - t_start >= std::chrono::seconds(5) &&
          last_sweep - last_rehello >= std::chrono::seconds(5)) {
        last_rehello = last_sweep;
        for (int i = 0; i < o_.workers; ++i)
          if (!ws_[i].welcomed) {
            ++rehellos_;
            send_hello(i);
          }
      }
    }
  }
  // Leave: bye from every worker (it holds nothing after the drain).
  for (int i = 0; i < o_.workers; ++i) {
    if (!ws_[i].held.empty()) fail("worker still holds jobs at the end: " + ws_[i].id);
    auto text = json::serialize(json::object{{"worker", ws_[i].id}});
    (void)ws_[i].sock.send(zmq::buffer(std::string_view("bye")),
                           zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    (void)ws_[i].sock.send(zmq::buffer(text), zmq::send_flags::dontwait);
  }
  double persisted_s = -1;
  if (!o_.redis_socket.empty() && completed_ > 0) {
    redisContext* rc = redisConnectUnix(o_.redis_socket.c_str());
    if (!rc || rc->err) {
      fail("cannot connect to redis " + o_.redis_socket);
    } else {
      std::string key = descprod::keys(o_.redis_prefix).leases();
      auto deadline = clk::now() + std::chrono::seconds(120);
      while (clk::now() < deadline) {
        auto* r = static_cast<redisReply*>(redisCommand(rc, "ZCARD %s", key.c_str()));
        long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
        if (r) freeReplyObject(r);
        if (n == 0) {
          persisted_s = secs(clk::now() - t_first_job_);
          break;
        }
        usleep(500);
      }
      if (persisted_s < 0) fail("leases not empty 120 s after the last finished");
    }
    if (rc) redisFree(rc);
  }
  if (lat_) std::fclose(lat_);
  double busy_s = have_first_ ? secs(t_last_finish_ - t_first_job_) : 0;
  double rate = busy_s > 0 ? completed_ / busy_s : 0;
  double rate_persisted = persisted_s > 0 ? completed_ / persisted_s : 0;
  double connect_s = welcomed_ == o_.workers ? secs(t_welcomed_ - t_start) : -1;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  double cpu_s =
      ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  std::printf(
      "cpu_s=%.3f workers=%d slots=%d hold_ms=%d completed=%lld received=%lld duplicates=%lld errors=%lld rejects=%lld "
      "heartbeats=%lld rehellos=%lld connect_s=%.3f busy_s=%.3f rate=%.0f persisted_s=%.3f rate_persisted=%.0f start_epoch=%.6f\n",
      cpu_s, o_.workers, o_.slots, o_.hold_ms, completed_, received_, duplicates_, errors_, rejects_,
      heartbeats_, rehellos_, connect_s, busy_s, rate, persisted_s, rate_persisted, e_start);
  std::fflush(stdout);
  for (auto& w : ws_) w.sock.close();
  ctx_.close();
  if (duplicates_ > 0 || errors_ > 0) return 1;
  return timed_out ? 3 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "sim-workers: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    try {
      if (a == "-h" || a == "--help") {
        usage(stdout);
        return 0;
      } else if (a == "--endpoint") o.endpoint = val();
      else if (a == "--workers") o.workers = std::stoi(val());
      else if (a == "--slots") o.slots = std::stoi(val());
      else if (a == "--hold-ms") o.hold_ms = std::stoi(val());
      else if (a == "--heartbeat-ms") o.heartbeat_ms = std::stoi(val());
      else if (a == "--jobs") o.jobs = std::stoll(val());
      else if (a == "--duration") o.duration_s = std::stod(val());
      else if (a == "--max-seconds") o.max_s = std::stod(val());
      else if (a == "--idle") o.idle = true;
      else if (a == "--quiet-ms") o.quiet_ms = std::stoi(val());
      else if (a == "--poll-ms") o.poll_ms = std::stoi(val());
      else if (a == "--owner") o.owner = val();
      else if (a == "--pool") o.pool = val();
      else if (a == "--id-prefix") o.prefix_id = val();
      else if (a == "--redis-socket") o.redis_socket = val();
      else if (a == "--redis-prefix") o.redis_prefix = val();
      else if (a == "--latency-file") o.latency_file = val();
      else {
        std::fprintf(stderr, "sim-workers: unknown option %s\n", a.c_str());
        usage(stderr);
        return 2;
      }
    } catch (const std::exception&) {
      std::fprintf(stderr, "sim-workers: bad value for %s\n", a.c_str());
      return 2;
    }
  }
  if (o.endpoint.empty() || o.workers < 1 || o.slots < 1) {
    usage(stderr);
    return 2;
  }
  try {
    return simulator(std::move(o)).run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sim-workers: %s\n", e.what());
    return 1;
  }
}
