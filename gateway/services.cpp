// Redis connection keeping and the daemon link. Caveat: ZeroMQ reconnects the DEALER by itself
// after a daemon restart, but `hello` is sent once per start; a daemon that wants a fresh hello
// answers `reject`, and the link then sends hello again (at most once a second, never after a
// protocol-version reject).
#include "gateway/services.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "core/async_util.hpp"
#include "core/config.hpp"
#include "core/log.hpp"
#include "core/protocol.hpp"

namespace descprod::gateway {

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// Start-up connection attempts: 100 ms doubling to 1 s between tries.
constexpr std::chrono::milliseconds startup_backoff_initial{100};
constexpr std::chrono::milliseconds startup_backoff_max{1000};
// Re-sending hello after a reject is rate limited to once per this interval.
constexpr std::chrono::milliseconds hello_retry_interval{1000};
// How often a hello that could not be queued yet is tried again.
constexpr std::chrono::milliseconds hello_retry_tick{100};

std::vector<std::string> hello_frames() {
  boost::json::object body;
  body["protocol"] = protocol::version;
  body["minor"] = protocol::minor;
  body["role"] = "gateway";
  return protocol::encode(protocol::hello, body);
}

std::string reason(const std::exception& e) { return connect_failure_reason(e); }

}  // namespace

std::string connect_failure_reason(const std::exception& e) {
  if (auto* se = dynamic_cast<const boost::system::system_error*>(&e)) {
    if (se->code() == make_error_code(redis_errc::unavailable)) return se->what();  // LOADING ... etc.
    if (se->code() != net::error::access_denied) return se->code().message();
    // redis_client throws access_denied with "redis AUTH: <Redis's error>" as what() prefix.
    std::string what = se->what();
    auto loc = what.find(" [");
    if (loc != std::string::npos) what.erase(loc);
    return what;
  }
  return e.what();
}

redis_keeper::redis_keeper(net::any_io_executor ex, redis_client& redis, std::string where)
    : timer_(std::move(ex)), redis_(redis), where_(std::move(where)) {}

void redis_keeper::poke() {
  serving_ = false;
  if (!backing_off_) timer_.cancel();
}

void redis_keeper::stop() {
  stopped_ = true;
  timer_.cancel();
}

net::awaitable<void> redis_keeper::run() {
  const auto most = reconnect_backoff_max(redis_.endpoint(), redis_backoff_max);
  descprod::backoff wait(std::min(redis_backoff_initial, most), most);
  bool was_down = false;
  while (!stopped_) {
    if (!redis_.connected()) {
      if (!was_down) log::warn("redis connection lost redis={}", where_);
      was_down = true;
      std::string why;
      try {
        co_await redis_.async_connect();
      } catch (const std::exception& e) {
        why = reason(e);
      }
      if (stopped_) co_return;
      if (why.empty()) {
        log::info("redis reconnected redis={}", where_);
        was_down = false;
        wait.reset();
      } else {
        auto delay = wait.next();
        log::warn("redis reconnect failed redis={} error={} retry_in_ms={}", where_, why, delay.count());
        backing_off_ = true;
        timer_.expires_after(delay);
        co_await timer_.async_wait(use_tuple);
        backing_off_ = false;
        continue;
      }
    }
    // Connected; does Redis serve?
    std::string refused;
    try {
      co_await redis_.async_exec(redis_cmd("PING"));
    } catch (const std::exception& e) {
      refused = reason(e);
    }
    if (stopped_) co_return;
    if (refused.empty() != serving_) {
      if (refused.empty()) log::info("redis serving redis={}", where_);
      else log::warn("redis not serving redis={} error={}", where_, refused);
    }
    serving_ = refused.empty();
    timer_.expires_after(serving_ ? redis_check_interval : redis_refusing_check_interval);
    co_await timer_.async_wait(use_tuple);
  }
}

net::awaitable<void> async_connect_with_deadline(redis_client& redis, std::string where,
                                                 std::chrono::milliseconds deadline, const bool* stop) {
  auto ex = co_await net::this_coro::executor;
  net::steady_timer timer(ex);
  auto give_up = std::chrono::steady_clock::now() + deadline;
  descprod::backoff wait(startup_backoff_initial, startup_backoff_max);
  while (true) {
    std::string why;
    try {
      co_await redis.async_connect();
      co_return;
    } catch (const std::exception& e) {
      why = reason(e);
    }
    if (stop && *stop) throw std::runtime_error("stopped while connecting to Redis at " + where);
    auto delay = wait.next();
    if (std::chrono::steady_clock::now() + delay > give_up)
      throw std::runtime_error("cannot connect to Redis at " + where + " within " +
                               std::to_string(deadline.count() / 1000) + " s: " + why);
    log::warn("redis not reachable yet redis={} error={} retry_in_ms={}", where, why, delay.count());
    timer.expires_after(delay);
    co_await timer.async_wait(use_tuple);
    if (stop && *stop) throw std::runtime_error("stopped while connecting to Redis at " + where);
  }
}

daemon_link::daemon_link(net::any_io_executor ex, zmq::context_t& zctx, std::string endpoint)
    : socket_(ex, zctx, zmq::socket_type::dealer),
      monitor_(ex, zctx, zmq::socket_type::pair),
      endpoint_(std::move(endpoint)) {
  // inproc names are per ZeroMQ context; the object's address keeps two links apart.
  monitor_endpoint_ =
      "inproc://descprod-gateway-monitor-" + std::to_string(reinterpret_cast<std::uintptr_t>(this));
}

void daemon_link::start() {
  // The monitor must exist before the connect so that the first connection is seen too.
  if (zmq_socket_monitor(socket_.raw().handle(), monitor_endpoint_.c_str(),
                         ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) == 0) {
    monitor_.raw().connect(monitor_endpoint_);
    monitoring_ = true;
  } else {
    log::warn("daemon link monitor unavailable error={}", zmq_strerror(zmq_errno()));
  }
  // Several endpoints (daemons on other hosts standing by): connected to all; only the leader
  // binds, and with immediate set messages go only to connections that are up.
  const auto endpoints = endpoint_list(endpoint_);
  if (endpoints.size() > 1) socket_.raw().set(zmq::sockopt::immediate, 1);
  for (const auto& ep : endpoints) socket_.raw().connect(ep);
  want_hello();
  log::info("daemon link connecting endpoint={}", endpoint_);
}

void daemon_link::want_hello() {
  // With several endpoints (ZMQ_IMMEDIATE) nothing is queued until a connection is up and its
  // handshake done: run_hello tries again until the hello goes.
  hello_wanted_ = !socket_.send(hello_frames());
}

net::awaitable<void> daemon_link::run_hello() {
  auto ex = co_await net::this_coro::executor;
  net::steady_timer timer(ex);
  while (!closed_) {
    timer.expires_after(hello_retry_tick);
    co_await timer.async_wait(use_tuple);
    if (!closed_ && hello_wanted_) want_hello();
  }
}

bool daemon_link::send(const std::vector<std::string>& frames) {
  if (closed_) return false;
  return socket_.send(frames);
}

void daemon_link::close() {
  if (closed_) return;
  closed_ = true;
  welcomed_ = false;
  if (monitoring_) zmq_socket_monitor(socket_.raw().handle(), nullptr, 0);
  monitor_.close();
  socket_.close();
}

net::awaitable<void> daemon_link::run_monitor() {
  while (!closed_ && monitoring_) {
    std::vector<zmq::message_t> frames;
    try {
      frames = co_await monitor_.async_recv();
    } catch (const boost::system::system_error&) {
      co_return;  // closed
    }
    // Frame 1: uint16 event, uint32 value (host order); frame 2: the peer's address.
    if (frames.empty() || frames[0].size() < 2) continue;
    std::uint16_t event = 0;
    std::memcpy(&event, frames[0].data(), sizeof event);
    if (event == ZMQ_EVENT_DISCONNECTED) {
      if (welcomed_) log::warn("daemon link disconnected endpoint={}", endpoint_);
      welcomed_ = false;
      dropped_ = true;
    } else if (event == ZMQ_EVENT_CONNECTED) {
      log::info("daemon link connected endpoint={}", endpoint_);
      if (dropped_) {
        dropped_ = false;
        want_hello();
      }
    }
  }
}

net::awaitable<void> daemon_link::run() {
  auto last_hello = std::chrono::steady_clock::now();
  while (!closed_) {
    std::vector<zmq::message_t> frames;
    try {
      frames = co_await socket_.async_recv();
    } catch (const boost::system::system_error&) {
      co_return;  // closed
    }
    // A ROUTER may put an empty delimiter frame before the message (REQ-style peers).
    std::size_t first = frames.size() == 3 && frames[0].size() == 0 ? 1 : 0;
    std::string why;
    auto msg = protocol::decode(frames, first, why);
    if (!msg) {
      log::warn("daemon message dropped endpoint={} reason={}", endpoint_, why);
      continue;
    }
    if (msg->command == protocol::welcome) {
      welcomed_ = true;
      log::info("daemon welcomed gateway endpoint={} body={}", endpoint_, boost::json::serialize(msg->body));
    } else if (msg->command == protocol::reject) {
      welcomed_ = false;
      auto reason = protocol::get_string(msg->body, "reason").value_or("");
      log::warn("daemon rejected gateway endpoint={} reason={}", endpoint_, reason);
      auto now = std::chrono::steady_clock::now();
      // A version mismatch will not heal by repeating ourselves; anything else may (daemon
      // restart).
      bool mismatch =
          reason.find("protocol") != std::string::npos || reason.find("version") != std::string::npos;
      if (!mismatch && now - last_hello >= hello_retry_interval) {
        last_hello = now;
        socket_.send(hello_frames());
      }
    } else {
      log::debug("daemon message ignored command={}", msg->command);
    }
  }
}

}  // namespace descprod::gateway

namespace descprod::gateway {

state_count_keeper::state_count_keeper(net::any_io_executor ex, redis_client& redis, store& jobs,
                                       bool& derived_ready)
    : timer_(std::move(ex)), redis_(redis), jobs_(jobs), derived_ready_(derived_ready) {}

void state_count_keeper::stop() {
  stopped_ = true;
  timer_.cancel();
}

net::awaitable<void> state_count_keeper::run() {
  while (!stopped_) {
    std::string failure;
    if (redis_.connected()) {
      try {
        auto how = co_await jobs_.async_recount_start(false);
        derived_ready_ = how == "exists";
        if (how != "exists") {
          log::info("job counts by state: recount {} key={}", how == "started" ? "started" : "resumed",
                    jobs_.redis_keys().jobs_by_state());
          auto t0 = std::chrono::steady_clock::now();
          recount_progress step;
          while (!stopped_ && !step.done) step = co_await jobs_.async_recount_step(state_count_batch);
          derived_ready_ = step.done;
          if (step.done)
            log::info(
                "job counts by state: recount done jobs_up_to={} ms={}", step.upto,
                std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
                    .count());
        }
      } catch (const std::exception& e) {
        failure = connect_failure_reason(e);
      }
    }
    if (!failure.empty()) log::warn("job counts by state: recount failed error={}", failure);
    if (stopped_) co_return;
    timer_.expires_after(state_count_check_interval);
    co_await timer_.async_wait(use_tuple);
  }
}

}  // namespace descprod::gateway
