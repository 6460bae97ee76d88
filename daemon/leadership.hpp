// Leader and standby (issue 15; docs/architecture.md, Daemon: leader and standby). Any number of
// daemons may run against one Redis; one leads, by a lease in Redis:
//
//   <prefix>daemon:leader  "<host>:<pid>" of the leader, with a TTL of daemon.leader_ttl_ms
//   <prefix>daemon:epoch   the fencing epoch: raised by one each time a daemon takes the lead
//
// The leader renews the lease every third of its TTL. A standby asks for it every quarter and,
// once the lease has lapsed (the leader died, froze, or lost Redis), takes it with the next
// epoch, binds its sockets, rebuilds its queue and leases from Redis and dispatches. Every job
// transition the daemon writes is fenced by the epoch (store::set_fence): a deposed leader that
// wakes up cannot change a job. A daemon that learns it was deposed (a renewal finds another
// leader, or a write is fenced) exits at once with exit_deposed, without another write; a
// supervisor starts it again, as a standby.
//
// A leader whose lease lapsed only because Redis was away (a restart, an outage longer than the
// TTL) takes it back under the same epoch when Redis serves again, if no other daemon led
// meanwhile: a single daemon rides out Redis outages as before.
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <string>

#include "daemon/context.hpp"

namespace descprod {

// The exit status of a daemon that was deposed (another daemon leads).
inline constexpr int exit_deposed = 3;

class leadership {
 public:
  explicit leadership(daemon_context& ctx);

  const std::string& id() const { return id_; }  // <host>:<pid>
  long long epoch() const { return epoch_; }     // 0 until this daemon leads
  bool leading() const { return epoch_ > 0; }
  // acquire() waited while another daemon held the lease: this daemon took over from a leader
  // that died, froze or was cut off (not a start after a clean stop or a lapsed lease).
  bool took_over() const { return took_over_; }

  // Waits, as a standby, until this daemon holds the lease; then fences the store with the
  // epoch and writes daemon.leader_file. Returns false when the daemon stopped meanwhile.
  net::awaitable<bool> acquire();
  // Renews the lease until the daemon stops. Redis errors are left to the daemon's reconnect
  // (which calls reassert); a renewal that finds another leader ends the process (deposed).
  net::awaitable<void> keep();
  // After Redis was away: holds the lease again under the same epoch, or is deposed. Throws
  // what Redis throws (the caller's reconnect retries). Nothing when not leading.
  net::awaitable<void> reassert();
  // At a planned stop: gives the lease up (only if it is still this daemon's) so that a standby
  // leads at once, and removes the leader file. Best effort.
  net::awaitable<void> resign();
  // Logs why, removes the leader file and ends the process with exit_deposed, at once: no
  // destructor runs and nothing more is written.
  [[noreturn]] void deposed(const std::string& why);
  void remove_leader_file() const;

 private:
  struct answer {
    std::string status;  // leading, standby, lost
    std::string holder;
    long long epoch = 0;
  };
  net::awaitable<answer> elect();
  void lead(long long epoch);
  void write_leader_file() const;

  daemon_context& ctx_;
  std::string id_;
  long long epoch_ = 0;
  bool took_over_ = false;
  std::chrono::milliseconds ttl_;
};

}  // namespace descprod
