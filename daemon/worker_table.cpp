// The worker table (see worker_table.hpp).
#include "daemon/worker_table.hpp"

#include <algorithm>

#include "core/log.hpp"
#include "core/protocol.hpp"
#include "core/text.hpp"

namespace descprod {

namespace {
std::string join_pools(const std::vector<std::string>& pools) {
  std::string out;
  for (const auto& p : pools) out += (out.empty() ? "" : ",") + p;
  return out;
}
}  // namespace

worker_state* worker_table::by_routing(const std::string& routing) {
  auto it = routing_to_id_.find(routing);
  if (it == routing_to_id_.end()) return nullptr;
  return find(it->second);
}

const std::string& worker_table::routing_of(const std::string& id, const std::string& fallback) const {
  auto it = workers_.find(id);
  return it != workers_.end() && !it->second.routing.empty() ? it->second.routing : fallback;
}

worker_state& worker_table::connect(const std::string& id, const std::string& routing) {
  auto& w = workers_[id];
  if (!w.routing.empty() && w.routing != routing) routing_to_id_.erase(w.routing);
  w.routing = routing;
  w.id = id;
  routing_to_id_[routing] = id;
  return w;
}

bool worker_table::remove(const std::string& id) {
  auto it = workers_.find(id);
  if (it == workers_.end()) return false;
  routing_to_id_.erase(it->second.routing);
  workers_.erase(it);
  return true;
}

void worker_table::add_credits(worker_state& w, long long n, std::size_t held) {
  int cap = std::max(0, w.slots + w.prefetch - static_cast<int>(held));
  w.credits = static_cast<int>(std::min<long long>(cap, w.credits + n));
}

void worker_table::note_health(worker_state& w, const boost::json::object& body) {
  // Absent (an older worker): healthy. Unhealthy: no jobs, and its credits are void (it asks
  // again when it is healthy).
  bool healthy = protocol::get_bool(body, "healthy").value_or(true);
  auto raw = protocol::get_string(body, "health_reason").value_or("");
  auto reason = sanitize_app_text(raw, 300);  // a peer's text: safe to print (core/text.hpp)
  if (healthy == !w.unhealthy && reason == w.health_reason) return;
  w.unhealthy = !healthy;
  w.health_reason = healthy ? std::string() : reason;
  if (w.unhealthy) w.credits = 0;
  if (w.unhealthy) log::warn("worker unhealthy: no jobs for it worker={} reason={}", w.id, w.health_reason);
  else log::info("worker healthy again worker={}", w.id);
}

void worker_table::refuse(worker_state& w, job_id id) {
  if (w.refused.size() >= max_refused_per_worker) w.refused.erase(w.refused.begin());
  w.refused.insert(id);
}

void worker_table::set_grant(worker_state& w, const worker_grant& g, ready_queue& q) {
  if (w.record_written && (w.owner != g.owner || w.pools != g.pools)) w.record_written = false;
  w.owner = g.owner;
  w.pools = g.pools;
  w.any_owner = g.any_owner;
  w.owners.clear();
  for (const auto& o : g.owners) w.owners.push_back(q.intern(o));
}

bool worker_table::may_run(const worker_state& w, const std::string& owner, const ready_queue& q) {
  if (w.any_owner) return true;
  auto o = q.find_owner(owner);
  return o && std::find(w.owners.begin(), w.owners.end(), *o) != w.owners.end();
}

void worker_table::append_record(std::vector<std::vector<std::string>>& cmds, const keys& k, worker_state& w,
                                 std::size_t running, clock_type::time_point now,
                                 clock_type::duration refresh, const std::string& ttl,
                                 const std::string& now_s) {
  auto key = k.worker(w.id);
  bool changed = w.record_running != running || w.record_draining != w.draining ||
                 w.record_revoked != w.revoked || w.record_unhealthy != w.unhealthy;
  if (!w.record_written) {
    cmds.push_back(redis_cmd(
        "HSET", key, "id", w.id, "host", w.host, "owner", w.owner, "pool", w.pool, "site", w.site, "slots",
        std::to_string(w.slots), "running", std::to_string(running), "last_heartbeat", now_s, "walltime_end",
        std::to_string(static_cast<long long>(w.walltime_end)), "draining", w.draining ? "1" : "0", "revoked",
        w.revoked ? "1" : "0", "token_sha", w.token_sha, "pools", join_pools(w.pools), "health",
        w.unhealthy ? "unhealthy" : "ok", "health_reason", w.health_reason));
  } else if (changed) {
    cmds.push_back(redis_cmd("HSET", key, "running", std::to_string(running), "last_heartbeat", now_s,
                             "draining", w.draining ? "1" : "0", "revoked", w.revoked ? "1" : "0", "health",
                             w.unhealthy ? "unhealthy" : "ok", "health_reason", w.health_reason));
  } else if (now - w.record_time >= refresh) {
    cmds.push_back(redis_cmd("HSET", key, "last_heartbeat", now_s));
  }
  if (!w.record_written || changed || now - w.record_time >= refresh) {
    cmds.push_back(redis_cmd("EXPIRE", key, ttl));
    w.record_written = true;
    w.record_time = now;
    w.record_running = running;
    w.record_draining = w.draining;
    w.record_revoked = w.revoked;
    w.record_unhealthy = w.unhealthy;
  }
}

}  // namespace descprod
