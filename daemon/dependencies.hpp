// The dependency releaser (docs/architecture.md, Dependencies): when a job that others wait for
// ends, every transition script puts it in <prefix>deps:ended; this part runs the store's
// deps_release script on it, about `budget()` dependents a call, queues the jobs it made ready and
// offers them to the workers. Between calls the daemon's event loop goes on (dispatch, reports),
// so 100,000 dependents of one job never stall dispatch. A script holds Redis (single-threaded)
// for everyone while it runs, so the budget follows how long calls take: halved when one takes
// over twice target_call, grown by a quarter when one takes under half of it, within
// [min_batch, max_batch]. It runs when a job ends through this
// daemon (wake()) and every poll interval (jobs cancelled or finished through a gateway).
//
// Thread-safety: none; the daemon's io_context thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

#include "daemon/context.hpp"
#include "daemon/dispatcher.hpp"
#include "daemon/reconciler.hpp"

namespace descprod {

class dependency_releaser {
 public:
  static constexpr std::size_t min_batch = 16, max_batch = 2000, first_batch = 200;
  static constexpr std::chrono::milliseconds target_call{10};
  static constexpr std::chrono::milliseconds poll_interval{100};

  dependency_releaser(daemon_context& ctx, dispatcher& disp, reconciler& recon);

  // Runs until the daemon stops.
  net::awaitable<void> run();
  // A job ended through this daemon: look for dependents to release now.
  void wake() {
    pending_ = true;
    timer_.cancel();
  }
  // Dependents handled and jobs made ready since start (daemon:stats).
  std::uint64_t handled() const { return handled_; }
  std::uint64_t released() const { return released_; }
  // The dependents the next call may handle.
  std::size_t budget() const { return budget_; }

 private:
  // Calls the script until nothing is left (or Redis goes away).
  net::awaitable<void> release_all();

  // Adapts budget_ to how long a call of `handled` dependents took.
  void adapt(std::chrono::steady_clock::duration took, std::size_t handled);

  std::size_t budget_ = first_batch;
  daemon_context& ctx_;
  dispatcher& disp_;
  reconciler& recon_;
  net::steady_timer timer_;
  bool pending_ = false;
  std::string last_error_;
  std::uint64_t handled_ = 0;
  std::uint64_t released_ = 0;
};

}  // namespace descprod
