// The event hub and its subscriptions (see events.hpp). The tail never misses an entry between
// two XREAD calls: it resolves "$" once to the stream's last ID (XREVRANGE + - COUNT 1) and then
// always reads after an explicit ID. Caveat: after a long Redis outage entries trimmed from the
// capped stream (MAXLEN ~100000) are gone; clients still see the jobs' current state on reload.
#include "gateway/events.hpp"

#include <boost/asio/as_tuple.hpp>

#include "core/async_util.hpp"
#include "core/keys.hpp"
#include "core/log.hpp"

// GCC 12 false positive in inlined coroutine frames (see handler.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace descprod::gateway {

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

std::string reason(const std::exception& e) {
  if (auto* se = dynamic_cast<const boost::system::system_error*>(&e)) return se->code().message();
  return e.what();
}

std::vector<std::string> xread_cmd(const std::string& key, const std::string& last_id) {
  return redis_cmd("XREAD", "BLOCK", std::to_string(tail_block.count()), "COUNT", std::to_string(tail_batch),
                   "STREAMS", key, last_id);
}

}  // namespace

// ---- event_subscription ----------------------------------------------------------------------

event_subscription::event_subscription(net::any_io_executor ex, event_filter filter, std::size_t limit)
    : wake_(std::move(ex), std::chrono::steady_clock::time_point::max()),
      filter_(std::move(filter)),
      limit_(limit) {}

void event_subscription::set_owner(std::string user, std::string session_hash, std::string token_hash) {
  user_ = std::move(user);
  session_hash_ = std::move(session_hash);
  token_hash_ = std::move(token_hash);
}

void event_subscription::skip_through(stream_id id) {
  if (!after_ || *after_ < id) after_ = id;
}

void event_subscription::skip_seen(std::set<std::string> keys, double before_s) {
  seen_keys_ = std::move(keys);
  seen_before_s_ = before_s;
}

bool event_subscription::skip(const stream_event& e) const {
  if (after_ && e.order <= *after_) return true;
  if (!seen_keys_.empty() || seen_before_s_ > 0) {
    if (seen_keys_.count(e.dedupe_key())) return true;
    if (e.time_s() < seen_before_s_) return true;
  }
  return false;
}

void event_subscription::push(std::shared_ptr<const live_event> e) {
  if (closed_) return;
  if (queue_.size() >= limit_) {
    queue_.clear();
    close("slow subscriber: more than " + std::to_string(limit_) + " events queued");
    return;
  }
  queue_.push_back(std::move(e));
  wake_.cancel();
}

std::size_t event_subscription::take(std::string& out, std::size_t max_bytes) {
  std::size_t n = 0;
  while (!queue_.empty() && out.size() < max_bytes) {
    auto e = std::move(queue_.front());
    queue_.pop_front();
    if (!e->notice && skip(e->event)) continue;
    out += e->text;
    ++n;
  }
  return n;
}

net::awaitable<void> event_subscription::async_wait(std::chrono::steady_clock::time_point until) {
  if (closed_ || !queue_.empty()) co_return;
  wake_.expires_at(until);
  co_await wake_.async_wait(use_tuple);
}

void event_subscription::close(std::string why) {
  if (closed_) return;
  closed_ = true;
  close_reason_ = std::move(why);
  wake_.cancel();
}

// ---- event_hub ---------------------------------------------------------------------------------

event_hub::event_hub(net::any_io_executor ex, redis_endpoint endpoint, std::string prefix)
    : redis_(ex, std::move(endpoint)), stream_key_(keys(std::move(prefix)).events()), backoff_timer_(ex) {}

template <class F>
void event_hub::each_live(F&& f) {
  for (auto it = subs_.begin(); it != subs_.end();) {
    auto sub = it->lock();
    if (!sub) {
      it = subs_.erase(it);
      continue;
    }
    ++it;
    f(sub);
  }
}

std::shared_ptr<event_subscription> event_hub::subscribe(event_filter filter, std::size_t limit) {
  auto sub = std::make_shared<event_subscription>(backoff_timer_.get_executor(), std::move(filter), limit);
  if (stopped_) sub->close("the gateway is stopping");
  subs_.push_back(sub);
  return sub;
}

std::size_t event_hub::subscribers() {
  std::size_t n = 0;
  each_live([&](const std::shared_ptr<event_subscription>&) { ++n; });
  return n;
}

std::size_t event_hub::streams_of(const std::string& user) {
  std::size_t n = 0;
  each_live([&](const std::shared_ptr<event_subscription>& sub) {
    if (!sub->closed() && sub->user() == user) ++n;
  });
  return n;
}

std::size_t event_hub::close_streams(stream_owner by, const std::string& value, const std::string& why) {
  if (value.empty()) return 0;
  std::size_t n = 0;
  for (auto& w : subs_) {
    auto sub = w.lock();
    if (!sub || sub->closed()) continue;
    const std::string& key = by == stream_owner::user      ? sub->user()
                             : by == stream_owner::session ? sub->session_hash()
                                                           : sub->token_hash();
    if (key != value) continue;
    sub->close(why);
    ++n;
  }
  return n;
}

void event_hub::deliver(const redis_reply& entries) {
  if (entries.type != redis_reply::kind::array) return;
  for (const auto& entry : entries.elements) {
    // Move past every entry, even one that does not parse, so it is not read again.
    if (entry.type == redis_reply::kind::array && !entry.elements.empty())
      last_id_ = entry.elements[0].as_string();
    auto parsed = parse_stream_event(entry);
    if (!parsed) {
      log::warn("event stream entry dropped stream={} id={}", stream_key_, last_id_);
      continue;
    }
    std::shared_ptr<live_event> shared;
    each_live([&](const std::shared_ptr<event_subscription>& sub) {
      if (sub->closed() || !sub->filter().matches(*parsed)) return;
      if (!shared) {
        shared = std::make_shared<live_event>();
        shared->event = *parsed;
        shared->text = format_sse_event(*parsed);
      }
      sub->push(shared);
      if (sub->closed()) {
        ++overflows_;
        log::warn("event subscriber dropped reason={}", sub->close_reason());
      }
    });
    if (shared) ++delivered_;
  }
}

void event_hub::notify_all(std::string_view text) {
  auto shared = std::make_shared<live_event>();
  shared->text = std::string(text);
  shared->notice = true;
  each_live([&](const std::shared_ptr<event_subscription>& sub) {
    if (!sub->closed()) sub->push(shared);
  });
}

net::awaitable<void> event_hub::run() {
  descprod::backoff wait(tail_backoff_initial, reconnect_backoff_max(redis_.endpoint(), tail_backoff_max));
  bool was_down = false;
  while (!stopped_) {
    std::string failure;
    try {
      if (!redis_.connected()) {
        co_await redis_.async_connect();
        if (last_id_.empty()) {
          auto last = co_await redis_.async_exec(redis_cmd("XREVRANGE", stream_key_, "+", "-", "COUNT", "1"));
          if (last.is_error()) throw std::runtime_error("XREVRANGE: " + last.str);
          last_id_ = last.elements.empty() || last.elements[0].elements.empty()
                         ? std::string("0-0")
                         : last.elements[0].elements[0].as_string();
        }
        if (was_down) {
          log::info("event tail reconnected stream={} after={}", stream_key_, last_id_);
          notify_all(sse_redis_up);
        } else {
          log::info("event tail started stream={} after={}", stream_key_, last_id_);
        }
        was_down = false;
        wait.reset();
      }
      auto reply = co_await redis_.async_exec(xread_cmd(stream_key_, last_id_));
      if (reply.is_error()) throw std::runtime_error("XREAD: " + reply.str);
      // nil: the block time passed without entries. Else [[key, [entries...]]].
      if (reply.type == redis_reply::kind::array) {
        for (const auto& stream : reply.elements) {
          if (stream.elements.size() == 2) deliver(stream.elements[1]);
        }
      }
    } catch (const std::exception& e) {
      failure = reason(e);
    }
    if (stopped_) break;
    if (failure.empty()) continue;
    if (!was_down) {
      log::warn("event tail failed stream={} error={}", stream_key_, failure);
      notify_all(sse_redis_down);
    }
    was_down = true;
    redis_.close();
    backoff_timer_.expires_after(wait.next());
    co_await backoff_timer_.async_wait(use_tuple);
  }
}

void event_hub::stop() {
  if (stopped_) return;
  stopped_ = true;
  backoff_timer_.cancel();
  redis_.close();
  for (auto& w : subs_) {
    if (auto sub = w.lock()) sub->close("the gateway is stopping");
  }
}

}  // namespace descprod::gateway
