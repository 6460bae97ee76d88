// The lease table (see lease_table.hpp).
#include "daemon/lease_table.hpp"

namespace descprod {

const std::set<job_id>& lease_table::jobs_of(const std::string& worker) const {
  static const std::set<job_id> none;
  auto it = by_worker_.find(worker);
  return it == by_worker_.end() ? none : it->second;
}

void lease_table::count_owner(lease_owner owner, int delta) {
  if (owner == no_owner) return;
  if (owner >= held_by_owner_.size()) held_by_owner_.resize(owner + 1, 0);
  auto& n = held_by_owner_[owner];
  n = delta < 0 && n == 0 ? 0 : static_cast<std::uint32_t>(static_cast<long long>(n) + delta);
}

void lease_table::hold(job_id id, const std::string& worker, long long attempt, bool started,
                       lease_owner owner) {
  erase_orphan(id);
  auto [it, fresh] = by_job_.try_emplace(id);
  auto& l = it->second;
  if (owner != no_owner && owner != l.owner) {
    count_owner(l.owner, -1);
    l.owner = owner;
    count_owner(owner, +1);
  }
  if (!fresh && l.worker != worker) {
    if (auto w = by_worker_.find(l.worker); w != by_worker_.end()) w->second.erase(id);
  }
  if (fresh || l.worker != worker) {
    l.worker = worker;
    by_worker_[worker].insert(id);
  }
  l.attempt = attempt;
  l.started = started;
}

std::optional<lease> lease_table::release(job_id id, std::string_view only_worker) {
  erase_orphan(id);
  auto it = by_job_.find(id);
  if (it == by_job_.end() || (!only_worker.empty() && it->second.worker != only_worker)) return std::nullopt;
  if (auto w = by_worker_.find(it->second.worker); w != by_worker_.end()) w->second.erase(id);
  count_owner(it->second.owner, -1);
  std::optional<lease> out(std::move(it->second));
  by_job_.erase(it);
  return out;
}

std::vector<std::pair<job_id, lease>> lease_table::release_worker(const std::string& worker) {
  std::vector<std::pair<job_id, lease>> out;
  auto w = by_worker_.find(worker);
  if (w == by_worker_.end()) return out;
  auto ids = std::move(w->second);
  by_worker_.erase(w);
  out.reserve(ids.size());
  for (job_id id : ids)
    if (auto l = release(id)) out.emplace_back(id, std::move(*l));
  return out;
}

void lease_table::clear_orphans() {
  orphans_.clear();
  orphans_by_worker_.clear();
}

void lease_table::add_orphan(job_id id, orphan_lease o) {
  if (by_job_.count(id)) return;  // held by a connected worker: not an orphan
  erase_orphan(id);
  if (!o.worker.empty()) orphans_by_worker_[o.worker].insert(id);
  orphans_[id] = std::move(o);
}

std::vector<job_id> lease_table::take_orphans_of(const std::string& worker) {
  std::vector<job_id> out;
  auto w = orphans_by_worker_.find(worker);
  if (w == orphans_by_worker_.end()) return out;
  out.assign(w->second.begin(), w->second.end());
  for (job_id id : out) erase_orphan(id);
  return out;
}

std::vector<job_id> lease_table::take_expired_orphans(clock_type::time_point now) {
  std::vector<job_id> out;
  for (const auto& [id, o] : orphans_)
    if (now >= o.deadline) out.push_back(id);
  for (job_id id : out) erase_orphan(id);
  return out;
}

void lease_table::erase_orphan(job_id id) {
  auto it = orphans_.find(id);
  if (it == orphans_.end()) return;
  if (auto w = orphans_by_worker_.find(it->second.worker); w != orphans_by_worker_.end()) {
    w->second.erase(id);
    if (w->second.empty()) orphans_by_worker_.erase(w);
  }
  orphans_.erase(it);
}

}  // namespace descprod
