// The daemon's per-owner ready queue (see ready_queue.hpp).
#include "daemon/ready_queue.hpp"

#include <algorithm>

#include "core/text.hpp"

namespace descprod {

ready_queue::owner_id ready_queue::intern(std::string_view owner) {
  auto it = index_.find(std::string(owner));
  if (it != index_.end()) return it->second;
  auto id = static_cast<owner_id>(queues_.size());
  owner_queue q;
  q.name = std::string(owner);
  queues_.push_back(std::move(q));
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

ready_queue::lane_id ready_queue::intern_lane(std::string_view sites) {
  auto it = lane_index_.find(std::string(sites));
  if (it != lane_index_.end()) return it->second;
  std::vector<std::string> list;
  for (auto& site : split(sites, ','))
    if (!site.empty()) list.push_back(std::move(site));
  auto id = static_cast<lane_id>(lane_sites_.size());
  lane_sites_.push_back(std::move(list));
  lane_count_.push_back(0);
  lane_index_.emplace(std::string(sites), id);
  return id;
}

bool ready_queue::lane_allows(lane_id lane, std::string_view site) const {
  if (lane == 0) return true;
  // '@': never a site name (the daemon refuses it in a hello), only a marker such as @pin.
  if (site.empty() || site.front() == '@' || lane >= lane_sites_.size()) return false;
  const auto& l = lane_sites_[lane];
  return std::find(l.begin(), l.end(), site) != l.end();
}

std::size_t ready_queue::runnable_at(std::string_view site) const {
  std::size_t n = 0;
  for (lane_id l = 0; l < lane_count_.size(); ++l)
    if (lane_allows(l, site)) n += lane_count_[l];
  return n;
}

std::vector<job_id> ready_queue::in_lane(lane_id lane, std::size_t max) const {
  std::vector<job_id> out;
  if (lane >= lane_count_.size() || lane_count_[lane] == 0) return out;
  // Owners in turn (each one's lowest score first), so one owner's thousand jobs do not keep
  // another's first job from the few pinned pilots there may be.
  using cursor = std::pair<std::set<entry>::const_iterator, std::set<entry>::const_iterator>;
  std::vector<cursor> owners;
  for (const auto& q : queues_) {
    auto it = q.lanes.find(lane);
    if (it != q.lanes.end()) owners.emplace_back(it->second.begin(), it->second.end());
  }
  for (bool more = true; more && out.size() < max;) {
    more = false;
    for (auto& [at, end] : owners) {
      if (at == end || out.size() >= max) continue;
      out.push_back((at++)->second);
      more = true;
    }
  }
  return out;
}

double ready_queue::front_of(const owner_queue& q) {
  double front = 0;
  bool any = false;
  for (const auto& [lane, jobs] : q.lanes) {
    if (!any || jobs.begin()->first < front) front = jobs.begin()->first;
    any = true;
  }
  return front;
}

std::optional<double> ready_queue::front_for(const owner_queue& q, std::string_view site) const {
  std::optional<double> front;
  for (const auto& [lane, jobs] : q.lanes)
    if (lane_allows(lane, site) && (!front || jobs.begin()->first < *front)) front = jobs.begin()->first;
  return front;
}

bool ready_queue::push(job_id id, double score, owner_id owner, lane_id lane) {
  if (owner >= queues_.size() || lane >= lane_sites_.size() || where_.count(id)) return false;
  highest_id_ = std::max(highest_id_, id);
  auto& q = queues_[owner];
  if (q.count == 0) {
    q.pass = std::max(q.pass, last_pass_);  // back from idle: no credit banked meanwhile
    fronts_.emplace(score, owner);
  } else if (double front = front_of(q); score < front) {
    fronts_.erase({front, owner});
    fronts_.emplace(score, owner);
  }
  q.lanes[lane].emplace(score, id);
  ++q.count;
  ++lane_count_[lane];
  where_.emplace(id, position{score, owner, lane});
  return true;
}

bool ready_queue::erase(job_id id) {
  auto w = where_.find(id);
  if (w == where_.end()) return false;
  auto [score, owner, lane] = w->second;
  where_.erase(w);
  auto& q = queues_[owner];
  const double front = front_of(q);
  auto l = q.lanes.find(lane);
  if (l != q.lanes.end()) {
    l->second.erase({score, id});
    if (l->second.empty()) q.lanes.erase(l);
  }
  --q.count;
  --lane_count_[lane];
  if (score <= front) {
    fronts_.erase({front, owner});
    if (q.count > 0) fronts_.emplace(front_of(q), owner);
  }
  return true;
}

ready_queue::lane_id ready_queue::lane_of(job_id id) const {
  auto w = where_.find(id);
  return w == where_.end() ? 0 : w->second.lane;
}

std::optional<std::pair<double, ready_queue::owner_id>> ready_queue::find(job_id id) const {
  auto w = where_.find(id);
  if (w == where_.end()) return std::nullopt;
  return std::make_pair(w->second.score, w->second.owner);
}

}  // namespace descprod
