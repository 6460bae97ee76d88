// The live event feed behind Server-Sent Events (docs/architecture.md#gateway, docs/api.md). One event_hub per gateway tails
// the Redis stream <prefix>events with XREAD BLOCK on a Redis connection of its own and fans each
// entry out to the subscriptions whose filter matches. Every subscription has a bounded queue; one
// that overflows is closed (the server then drops that client) so that a slow reader never holds
// up the others or the tail.
//
// Thread-safety: none; the hub and its subscriptions belong to the gateway's io_context thread.
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <cstddef>
#include <deque>
#include <list>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "core/redis.hpp"
#include "gateway/api.hpp"

namespace descprod::gateway {

namespace net = boost::asio;

// Events one subscription may have queued; the next one closes it as too slow.
inline constexpr std::size_t sse_queue_limit = 10000;
// An idle stream gets a comment line this often, so proxies and clients see it alive.
inline constexpr std::chrono::milliseconds sse_keepalive_interval{15000};
// XREAD BLOCK time (ms) and batch size of the tail.
inline constexpr std::chrono::milliseconds tail_block{1000};
inline constexpr std::size_t tail_batch = 1000;
// Reconnect backoff of the tail after a Redis failure: 100 ms doubling to 32 s. It starts lower
// than the request path's keeper because live views notice a gap.
inline constexpr std::chrono::milliseconds tail_backoff_initial{100};
inline constexpr std::chrono::milliseconds tail_backoff_max{32000};

// One event as delivered: parsed once, formatted once, shared by every matching subscription.
struct live_event {
  stream_event event;
  std::string text;     // format_sse_event(event)
  bool notice = false;  // a notice of the service (event: service), not a job's event: never skipped
};

// The notices every stream gets when the gateway loses and regains Redis (its pages then show an
// outage rather than "live"; docs/api.md).
inline constexpr std::string_view sse_redis_down = "event: service\ndata: {\"redis\":\"down\"}\n\n";
inline constexpr std::string_view sse_redis_up = "event: service\ndata: {\"redis\":\"up\"}\n\n";

// The receiving end of one SSE stream.
class event_subscription {
 public:
  event_subscription(net::any_io_executor ex, event_filter filter, std::size_t limit);

  const event_filter& filter() const { return filter_; }

  // Who the stream is for: the account, and the sha256 of the web session or the API token that
  // opened it (one of them empty). A logout, a disabled account or a revoked token ends the
  // streams it opened (event_hub::close_streams).
  void set_owner(std::string user, std::string session_hash, std::string token_hash);
  const std::string& user() const { return user_; }
  const std::string& session_hash() const { return session_hash_; }
  const std::string& token_hash() const { return token_hash_; }

  // Replay de-duplication, set by the request handler after it read the history:
  // events of the global stream at or before `id` were already sent (Last-Event-ID resume).
  void skip_through(stream_id id);
  // Events whose dedupe_key() is in `keys`, or older than `before_s`, were already sent from the
  // job's own stream.
  void skip_seen(std::set<std::string> keys, double before_s);

  // Hub side: queues an event for the client and wakes the writer. A full queue closes the
  // subscription instead ("slow subscriber").
  void push(std::shared_ptr<const live_event> e);
  // Writer side: appends the text of queued events (skipping replayed ones) to `out`, stopping
  // once `out` holds max_bytes or more. Returns the number of events appended.
  std::size_t take(std::string& out, std::size_t max_bytes);
  bool empty() const { return queue_.empty(); }
  // Waits until an event is pushed, the subscription closes, or `until` passes.
  net::awaitable<void> async_wait(std::chrono::steady_clock::time_point until);

  // Ends the stream (server shutdown, slow subscriber); wakes the writer.
  void close(std::string why);
  bool closed() const { return closed_; }
  const std::string& close_reason() const { return close_reason_; }

 private:
  bool skip(const stream_event& e) const;

  net::steady_timer wake_;
  event_filter filter_;
  std::size_t limit_;
  std::deque<std::shared_ptr<const live_event>> queue_;
  std::optional<stream_id> after_;
  std::set<std::string> seen_keys_;
  double seen_before_s_ = 0;
  bool closed_ = false;
  std::string close_reason_;
  std::string user_, session_hash_, token_hash_;
};

// Which streams event_hub::close_streams ends: those of an account, of a web session, or of an
// API token (by sha256).
enum class stream_owner { user, session, token };

class event_hub {
 public:
  event_hub(net::any_io_executor ex, redis_endpoint endpoint, std::string prefix);
  event_hub(const event_hub&) = delete;
  event_hub& operator=(const event_hub&) = delete;

  // A new subscription; it stays subscribed until the last shared_ptr to it goes.
  std::shared_ptr<event_subscription> subscribe(event_filter filter, std::size_t limit = sse_queue_limit);
  // The tail: connects, finds the stream's current end (so nothing is missed between two
  // XREADs), then XREAD BLOCK from the last ID seen; reconnects with backoff after a failure and
  // resumes after the last ID delivered. Returns after stop().
  net::awaitable<void> run();
  // Stops the tail and closes every subscription.
  void stop();

  // Fans out the entries of one stream (an XRANGE-shaped reply); used by the tail and by tests.
  void deliver(const redis_reply& entries);
  // Queues a service notice (sse_redis_down / sse_redis_up) on every live subscription.
  void notify_all(std::string_view text);
  bool connected() const { return redis_.connected(); }
  std::size_t subscribers();
  // Live subscriptions of one account.
  std::size_t streams_of(const std::string& user);
  // Ends the live streams of an account, a session or a token (their writers wake at once and
  // the server closes the connections); returns how many.
  std::size_t close_streams(stream_owner by, const std::string& value, const std::string& why);
  // Events delivered to at least one subscription, and subscriptions closed for being slow.
  std::size_t delivered() const { return delivered_; }
  std::size_t overflows() const { return overflows_; }

 private:
  // Calls f(subscription) for every subscription still alive, forgetting the gone ones.
  template <class F>
  void each_live(F&& f);

  redis_client redis_;
  std::string stream_key_;
  net::steady_timer backoff_timer_;
  std::list<std::weak_ptr<event_subscription>> subs_;
  std::string last_id_;  // empty until the stream's end is known
  bool stopped_ = false;
  std::size_t delivered_ = 0;
  std::size_t overflows_ = 0;
};

}  // namespace descprod::gateway
