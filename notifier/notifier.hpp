// descprod-notifier: e-mail on failure (docs/architecture.md#notifier, docs/operators.md#e-mail-on-failure).
//
// It follows the global event stream P events from a cursor kept in Redis (P notify:cursor), and
// takes each transition into failed, timeout, killed or lost of an owner who opted in (the
// account's notify_failed field) into that owner's pending mail: one Lua call per batch adds the
// jobs (P notify:pending, P notify:jobs:<name>), schedules the mail (P notify:due) and moves the
// cursor, together, so a restart neither loses a failure nor takes one in twice. A second loop
// sends the mails that are due through the SMTP relay and only then removes what it mailed (one
// Lua call): delivery is at least once (a crash between the relay's 250 and that call mails
// again). At most one mail per user per notify.interval_ms; a first failure waits notify.delay_ms
// for the rest of its burst. A relay that is down or refuses for now: the mail stays due and the
// sender waits (notify.backoff_initial_ms doubling to backoff_max_ms), logging each failure; a
// permanent refusal (5xx) drops that mail, logged. What waits is bounded: per user a counter and at
// most notify.max_listed job IDs.
//
// Only one notifier works at a time: it holds the lease P notify:lock (its id, a 15 s TTL renewed
// every 5 s); every write checks the lease in the same Lua call. A second one waits as a standby.
//
// Thread-safety: none; one io_context thread.
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "core/keys.hpp"
#include "core/redis.hpp"

namespace descprod::notify {

namespace net = boost::asio;

inline constexpr std::chrono::milliseconds lock_ttl{15000};
inline constexpr std::chrono::milliseconds lock_renew{5000};

class notifier {
 public:
  notifier(net::io_context& io, descprod_config cfg);
  // Runs until stop(): connects to Redis (reconnecting with backoff), takes the lease, follows
  // the stream and sends the mails.
  net::awaitable<void> run();
  void stop();

  // Counters (logged at exit).
  std::size_t mails_sent() const { return sent_; }

 private:
  net::awaitable<void> connect();
  net::awaitable<bool> take_lock();
  net::awaitable<bool> renew_lock();
  net::awaitable<void> intake_loop();
  net::awaitable<void> follow();
  net::awaitable<void> send_loop();
  net::awaitable<void> intake(const redis_reply& entries);
  // Sends the mail of one user whose turn it is; false when the relay failed for now.
  net::awaitable<bool> send_one(std::string user);
  net::awaitable<void> ack(std::string user, long long listed, long long total, double next_due_s);
  net::awaitable<void> sleep(std::chrono::milliseconds d);
  double now_s() const;

  net::io_context& io_;
  descprod_config cfg_;
  keys keys_;
  std::unique_ptr<redis_client> redis_;  // scripts and reads
  std::unique_ptr<redis_client> tail_;   // XREAD BLOCK of the stream (blocks its connection)
  std::string me_;                       // this instance's id in the lease
  bool stopped_ = false;
  bool leader_ = false;
  bool holding_ = false;  // took the lease at some point (released at exit if still ours)
  std::string cursor_;
  std::size_t sent_ = 0;
  net::steady_timer stop_timer_;
};

}  // namespace descprod::notify
