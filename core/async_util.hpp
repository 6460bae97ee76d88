// Small pieces every long-lived component needs, in one place: a reconnect backoff, a coroutine
// spawned with its failure logged, and a record field read as "" when absent.
//
// Thread-safety: backoff is a value type for one owner; spawn_logged posts to the given executor.
#pragma once

#include <algorithm>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <chrono>
#include <exception>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include "core/log.hpp"

namespace descprod {

// Exponential backoff between reconnect attempts (the ZeroMQ Guide's Paranoid Pirate): the first
// wait is `initial`, each failure doubles it up to `max`; success resets it.
class backoff {
 public:
  backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max)
      : initial_(initial), max_(std::max(initial, max)), next_(initial) {}
  // The wait before the next attempt; the one after it is twice as long (at most max).
  std::chrono::milliseconds next() {
    auto d = next_;
    next_ = std::min(next_ * 2, max_);
    return d;
  }
  // What next() would return, without moving on.
  std::chrono::milliseconds peek() const { return next_; }
  void reset() { next_ = initial_; }

 private:
  std::chrono::milliseconds initial_, max_, next_;
};

// Runs `task` on `ex`, detached; an exception that ends it is logged as
// "task failed task=<what> error=<...>" unless `quiet()` says the process is stopping (then
// failures are expected: sockets close under the task).
template <typename Executor>
void spawn_logged(Executor ex, boost::asio::awaitable<void> task, std::string what,
                  std::function<bool()> quiet = {}) {
  boost::asio::co_spawn(ex, std::move(task),
                        [what = std::move(what), quiet = std::move(quiet)](std::exception_ptr e) {
                          if (!e || (quiet && quiet())) return;
                          try {
                            std::rethrow_exception(e);
                          } catch (const std::exception& ex) {
                            log::error("task failed task={} error={}", what, ex.what());
                          } catch (...) {
                            log::error("task failed task={} error=unknown", what);
                          }
                        });
}

// The value of `key` in a string map (a Redis hash as read, a job record), "" when absent.
inline std::string field_or_empty(const std::map<std::string, std::string>& m, std::string_view key) {
  auto it = m.find(std::string(key));
  return it == m.end() ? std::string() : it->second;
}

}  // namespace descprod
