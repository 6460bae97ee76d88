// The gateway's two long-lived links: the Redis connection keeper (reconnects with backoff after a
// failure) and the ZeroMQ DEALER to the daemon (hello, `submitted` notices, replies logged).
//
// Thread-safety: none; both belong to the one io_context thread.
#pragma once

#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "core/redis.hpp"
#include "core/store.hpp"
#include "core/zmq_asio.hpp"

namespace descprod::gateway {

namespace net = boost::asio;

// Reconnect backoff after Redis fails mid-run: 1 s doubling to 32 s (zguide's Paranoid Pirate).
inline constexpr std::chrono::milliseconds redis_backoff_initial{1000};
inline constexpr std::chrono::milliseconds redis_backoff_max{32000};
// How often the keeper looks at the connection when nobody pokes it.
inline constexpr std::chrono::milliseconds redis_check_interval{1000};
// How often it asks again while Redis is connected but not serving (LOADING, BUSY, MISCONF).
inline constexpr std::chrono::milliseconds redis_refusing_check_interval{250};

// Keeps a redis_client connected: run() loops until stop(), reconnecting whenever the client is
// not connected, waiting the backoff between failed attempts. While connected it PINGs Redis
// every check: Redis answers PING with LOADING, BUSY or MISCONF while it cannot serve (MISCONF:
// it refuses writes), so serving() is what GET /readyz reports.
class redis_keeper {
 public:
  redis_keeper(net::any_io_executor ex, redis_client& redis, std::string where);
  net::awaitable<void> run();
  // A request saw Redis unavailable: not serving until a PING says otherwise, and look now
  // instead of at the next check (the look waits while a reconnect backoff runs).
  void poke();
  void stop();
  bool serving() const { return serving_ && redis_.connected(); }

 private:
  bool serving_ = false;
  net::steady_timer timer_;
  redis_client& redis_;
  std::string where_;
  bool backing_off_ = false;
  bool stopped_ = false;
};

// Connects to Redis at start-up, retrying with a short backoff until `deadline` (10 s in main).
// Throws std::runtime_error naming the endpoint and the last error when it gives up, or when
// *stop (owned by the caller, outliving the call) becomes true between attempts.
net::awaitable<void> async_connect_with_deadline(redis_client& redis, std::string where,
                                                 std::chrono::milliseconds deadline, const bool* stop);

// The reason of a failed Redis connect for log lines: a system_error's message without the
// source location Boost appends, except that a refused AUTH keeps Redis's own answer
// ("redis AUTH: WRONGPASS invalid username-password pair ...").
std::string connect_failure_reason(const std::exception& e);

// How often the job counts by state (store::async_recount_start) are checked, and the job IDs
// counted per recount script.
inline constexpr std::chrono::milliseconds state_count_check_interval{30000};
inline constexpr std::size_t state_count_batch = 250;

// Keeps the hash <prefix>stats:jobs_by_state: at start and every state_count_check_interval it
// starts a recount when the hash is missing (a first start on existing data, or an operator
// deleted it to force one) or was built by an older recount that derived less (a store from
// before the owners' Active and find indexes), and steps a recount under way to its end.
// `derived_ready` is set true once a recount is complete, false while one runs (the gateway then
// reads each job's hash instead of those indexes).
// Errors are logged and the next check tries again.
class state_count_keeper {
 public:
  state_count_keeper(net::any_io_executor ex, redis_client& redis, store& jobs, bool& derived_ready);
  net::awaitable<void> run();
  void stop();

 private:
  net::steady_timer timer_;
  redis_client& redis_;
  store& jobs_;
  bool& derived_ready_;
  bool stopped_ = false;
};

// The DEALER to the daemon's gateway ROUTER. start() connects and queues `hello`
// {"protocol":1,"role":"gateway"}; run() reads replies until close(). A ZeroMQ socket monitor
// watches the connection: after it drops, the link is not welcomed until the daemon answers the
// `hello` sent again on reconnect (a restarted daemon has forgotten the gateway).
class daemon_link {
 public:
  daemon_link(net::any_io_executor ex, zmq::context_t& zctx, std::string endpoint);
  void start();
  net::awaitable<void> run();
  // Watches connect/disconnect events until close(); spawn it next to run().
  net::awaitable<void> run_monitor();
  // Sends a hello that could not be queued (no connection up yet) every 100 ms until it goes;
  // spawn it next to run().
  net::awaitable<void> run_hello();
  // Queues [command][json] without blocking; false when it could not be queued (HWM, closed).
  bool send(const std::vector<std::string>& frames);
  // Whether the daemon has answered `hello` with `welcome` on the current connection.
  bool welcomed() const { return welcomed_; }
  void close();

 private:
  zmq_socket socket_;
  zmq_socket monitor_;
  std::string endpoint_;
  std::string monitor_endpoint_;
  bool closed_ = false;
  bool welcomed_ = false;
  bool monitoring_ = false;
  bool dropped_ = false;       // the connection went down since the last hello
  bool hello_wanted_ = false;  // a hello is due but was not queued yet (want_hello)
  // Queues `hello`; when it cannot be queued yet, run_hello tries again.
  void want_hello();
};

}  // namespace descprod::gateway
