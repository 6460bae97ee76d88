// The dependency releaser (dependencies.hpp).
#include "daemon/dependencies.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>

#include "core/log.hpp"

namespace descprod {

dependency_releaser::dependency_releaser(daemon_context& ctx, dispatcher& disp, reconciler& recon)
    : ctx_(ctx), disp_(disp), recon_(recon), timer_(ctx.io) {}

net::awaitable<void> dependency_releaser::run() {
  while (!ctx_.stopping) {
    bool ran = false;
    if (ctx_.redis_ready() && !ctx_.draining) {
      pending_ = false;
      co_await release_all();
      ran = true;
    }
    if (ctx_.stopping) break;
    if (ran && pending_) continue;  // woken while it released: look again at once
    timer_.expires_after(poll_interval);
    co_await timer_.async_wait(net::as_tuple(net::use_awaitable));
  }
}

void dependency_releaser::adapt(std::chrono::steady_clock::duration took, std::size_t handled) {
  if (handled < budget_ / 2) return;  // a short call says little about a full one
  if (took > 2 * target_call) budget_ = std::max(min_batch, budget_ / 2);
  else if (took < target_call / 2)
    budget_ = std::min(max_batch, budget_ + std::max<std::size_t>(1, budget_ / 4));
}

net::awaitable<void> dependency_releaser::release_all() {
  try {
    for (;;) {
      if (ctx_.stopping || ctx_.draining || !ctx_.redis_ready()) co_return;
      const auto started = std::chrono::steady_clock::now();
      auto r = co_await ctx_.st.async_deps_release(budget_);
      adapt(std::chrono::steady_clock::now() - started, static_cast<std::size_t>(r.handled));
      handled_ += static_cast<std::uint64_t>(r.handled);
      released_ += r.ready.size();
      if (!r.ready.empty()) {
        const auto owners_before = disp_.queue().owner_count();
        for (const auto& j : r.ready) disp_.enqueue(j.id, j.priority, j.owner, j.sites);
        // An owner the daemon had not seen: its quota is read before its jobs go.
        if (disp_.queue().owner_count() != owners_before) co_await recon_.read_quotas();
        disp_.dispatch();
        log::debug("dependents released handled={} ready={}", r.handled, r.ready.size());
      }
      last_error_.clear();
      if (!r.more) co_return;
    }
  } catch (const boost::system::system_error& e) {
    ctx_.redis_failed(e);
  } catch (const std::exception& e) {
    // A malformed answer (a store bug): logged once per distinct error; the next poll tries again.
    if (last_error_ != e.what()) log::warn("dependency release failed error={}", e.what());
    last_error_ = e.what();
  }
}

}  // namespace descprod
