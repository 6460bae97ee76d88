// Leader and standby: the lease, the epoch and the leader file (leadership.hpp).
#include "daemon/leadership.hpp"

#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/async_util.hpp"
#include "core/log.hpp"

namespace descprod {

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// KEYS: the leader key, the epoch key. ARGV: this daemon's id, the TTL (ms), the epoch it leads
// under ('0': none yet). Answers {status, holder, epoch}:
//   leading  this daemon holds the lease (renewed, taken back, or newly taken with the next epoch);
//   standby  another daemon holds it;
//   lost     this daemon led, but another has led since (the epoch moved on): it must stop.
// A lapsed lease is taken back under the same epoch only by the daemon that held it and only
// while no other daemon has taken the lead since (the epoch is not above its own); the epoch key
// is then written again, in case Redis lost it with the lease.
const char* elect_script = R"LUA(
local holder = redis.call('GET', KEYS[1])
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local mine = tonumber(ARGV[3]) or 0
if mine > 0 and epoch > mine then return {'lost', holder or '', epoch} end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  if mine > 0 then
    if epoch ~= mine then redis.call('SET', KEYS[2], mine) end
    return {'leading', holder, mine}
  end
  return {'leading', holder, epoch}
end
if holder then return {'standby', holder, epoch} end
if mine > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('SET', KEYS[2], mine)
  return {'leading', ARGV[1], mine}
end
epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'leading', ARGV[1], epoch}
)LUA";

// KEYS: the leader key. ARGV: this daemon's id. Deletes the lease only if it is still this one's.
const char* resign_script = R"LUA(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
)LUA";

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return "localhost";
  return buf;
}

}  // namespace

leadership::leadership(daemon_context& ctx)
    : ctx_(ctx), id_(host_name() + ":" + std::to_string(::getpid())), ttl_(ctx.cfg.daemon.leader_ttl) {}

net::awaitable<leadership::answer> leadership::elect() {
  auto r = co_await ctx_.redis.async_exec(redis_cmd("EVAL", elect_script, "2", ctx_.k.daemon_leader(),
                                                    ctx_.k.daemon_epoch(), id_, std::to_string(ttl_.count()),
                                                    std::to_string(epoch_)));
  if (r.is_error()) throw std::runtime_error("leader election: " + r.str);
  if (r.elements.size() != 3) throw std::runtime_error("leader election: unexpected answer");
  answer a;
  a.status = r.elements[0].as_string();
  a.holder = r.elements[1].as_string();
  a.epoch = r.elements[2].as_integer();
  // A new epoch must outlive a failover of Redis: a master lost before its replica had the epoch
  // would hand the next leader an epoch already used.
  const int replicas = ctx_.cfg.redis.wait_replicas;
  if (replicas > 0 && a.status == "leading" && a.epoch != epoch_)
    co_await ctx_.redis.async_exec(
        redis_cmd("WAIT", std::to_string(replicas), std::to_string(ctx_.cfg.redis.wait_timeout_ms)));
  co_return a;
}

net::awaitable<bool> leadership::acquire() {
  net::steady_timer timer(ctx_.io);
  backoff wait(std::chrono::milliseconds(100),
               reconnect_backoff_max(ctx_.cfg.redis.endpoint, std::chrono::milliseconds(1000)));
  std::string last_holder, last_error;
  const auto poll = std::max(std::chrono::milliseconds(50), ttl_ / 4);
  while (!ctx_.stopping) {
    std::chrono::milliseconds delay = poll;
    try {
      if (!ctx_.redis.connected()) co_await ctx_.redis.async_connect();
      answer a = co_await elect();
      wait.reset();
      last_error.clear();
      if (a.status == "leading") {
        took_over_ = !last_holder.empty();
        lead(a.epoch);
        co_return true;
      }
      if (a.holder != last_holder)
        log::info("standby: another daemon leads leader={} epoch={} lease_ttl_ms={}", a.holder, a.epoch,
                  ttl_.count());
      last_holder = a.holder;
    } catch (const boost::system::system_error& e) {
      // Refusing (LOADING, ...): keep the connection and ask again; anything else reconnects.
      if (e.code() != make_error_code(redis_errc::unavailable)) ctx_.redis.close();
      if (last_error != e.what()) log::warn("standby: redis unavailable error={}", e.what());
      last_error = e.what();
      delay = wait.next();
    } catch (const std::exception& e) {
      ctx_.redis.close();
      if (last_error != e.what()) log::warn("standby: leader election failed error={}", e.what());
      last_error = e.what();
      delay = wait.next();
    }
    timer.expires_after(delay);
    co_await timer.async_wait(use_tuple);
  }
  co_return false;
}

void leadership::lead(long long epoch) {
  epoch_ = epoch;
  ctx_.st.set_fence(std::to_string(epoch));
  write_leader_file();
  log::info("leading id={} epoch={} lease_ttl_ms={}", id_, epoch, ttl_.count());
}

net::awaitable<void> leadership::keep() {
  net::steady_timer timer(ctx_.io);
  const auto every = std::max(std::chrono::milliseconds(10), ttl_ / 3);
  while (!ctx_.stopping) {
    timer.expires_after(every);
    co_await timer.async_wait(use_tuple);
    if (ctx_.stopping) break;
    // While Redis is away the daemon's reconnect asserts the lease again (reassert).
    if (!ctx_.redis_ready()) continue;
    answer a;
    try {
      a = co_await elect();
    } catch (const boost::system::system_error&) {
      continue;  // an outage: the daemon's own calls notice it and reconnect
    } catch (const std::exception& e) {
      log::warn("leader lease renewal failed error={}", e.what());
      continue;
    }
    if (ctx_.stopping) break;
    if (a.status != "leading")
      deposed("another daemon leads: " + (a.holder.empty() ? std::string("(lease lapsed)") : a.holder) +
              " epoch " + std::to_string(a.epoch));
  }
}

net::awaitable<void> leadership::reassert() {
  if (!leading()) co_return;
  answer a = co_await elect();
  if (a.status != "leading")
    deposed("another daemon led while Redis was away: " + (a.holder.empty() ? std::string("-") : a.holder) +
            " epoch " + std::to_string(a.epoch));
}

net::awaitable<void> leadership::resign() {
  remove_leader_file();
  if (!leading() || !ctx_.redis.connected()) co_return;
  try {
    co_await ctx_.redis.async_exec(redis_cmd("EVAL", resign_script, "1", ctx_.k.daemon_leader(), id_));
    log::info("lead given up id={} epoch={}", id_, epoch_);
  } catch (const std::exception& e) {
    log::warn("lead not given up (it lapses in lease_ttl_ms) error={}", e.what());
  }
}

void leadership::deposed(const std::string& why) {
  log::error("deposed: this daemon no longer leads, exiting at once id={} epoch={} reason={}", id_, epoch_,
             why);
  remove_leader_file();
  std::fflush(stderr);
  std::_Exit(exit_deposed);
}

void leadership::write_leader_file() const {
  const auto& path = ctx_.cfg.daemon.leader_file;
  if (path.empty()) return;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << epoch_ << "\n";
    if (!out) {
      log::error("leader file not written path={}", path);
      return;
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) log::error("leader file not written path={} error={}", path, ec.message());
}

void leadership::remove_leader_file() const {
  // Only this daemon's own file: another daemon sharing the path may lead now.
  const auto& path = ctx_.cfg.daemon.leader_file;
  if (path.empty() || !leading()) return;
  long long written = 0;
  {
    std::ifstream in(path);
    if (!(in >> written) || written != epoch_) return;
  }
  std::error_code ec;
  std::filesystem::remove(path, ec);
}

}  // namespace descprod
