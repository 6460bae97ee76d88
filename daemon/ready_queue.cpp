// The daemon's per-owner ready queue (see ready_queue.hpp).
#include "daemon/ready_queue.hpp"

#include <algorithm>

namespace descprod {

ready_queue::owner_id ready_queue::intern(std::string_view owner) {
  auto it = index_.find(std::string(owner));
  if (it != index_.end()) return it->second;
  auto id = static_cast<owner_id>(queues_.size());
  queues_.push_back(owner_queue{std::string(owner), {}});
  index_.emplace(std::string(owner), id);
  return id;
}

std::optional<ready_queue::owner_id> ready_queue::find_owner(std::string_view owner) const {
  auto it = index_.find(std::string(owner));
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

void ready_queue::set_quota(owner_id o, double share, std::uint32_t max_running) {
  if (o >= queues_.size()) return;
  queues_[o].share = share > 0 ? share : 1.0;
  queues_[o].max_running = max_running;
}

void ready_queue::charge(owner_id o) {
  if (o >= queues_.size()) return;
  auto& q = queues_[o];
  last_pass_ = q.pass;
  q.pass += 1.0 / q.share;
}

bool ready_queue::push(job_id id, double score, owner_id owner) {
  if (owner >= queues_.size() || where_.count(id)) return false;
  auto& q = queues_[owner];
  if (q.jobs.empty()) {
    q.pass = std::max(q.pass, last_pass_);  // back from idle: no credit banked meanwhile
    fronts_.emplace(score, owner);
  } else if (score < q.jobs.begin()->first) {
    fronts_.erase({q.jobs.begin()->first, owner});
    fronts_.emplace(score, owner);
  }
  q.jobs.emplace(score, id);
  where_.emplace(id, position{score, owner});
  return true;
}

bool ready_queue::erase(job_id id) {
  auto w = where_.find(id);
  if (w == where_.end()) return false;
  auto [score, owner] = w->second;
  where_.erase(w);
  auto& q = queues_[owner];
  bool was_front = !q.jobs.empty() && q.jobs.begin()->second == id;
  q.jobs.erase({score, id});
  if (was_front) {
    fronts_.erase({score, owner});
    if (!q.jobs.empty()) fronts_.emplace(q.jobs.begin()->first, owner);
  }
  return true;
}

std::optional<std::pair<double, ready_queue::owner_id>> ready_queue::find(job_id id) const {
  auto w = where_.find(id);
  if (w == where_.end()) return std::nullopt;
  return std::make_pair(w->second.score, w->second.owner);
}

}  // namespace descprod
