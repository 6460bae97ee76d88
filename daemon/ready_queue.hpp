// The daemon's ready queue (docs/architecture.md, Daemon): ready jobs ordered by score (priority, then ID), kept
// per owner so a worker that may run only some owners' jobs finds its next job without scanning
// the others'. The fronts of the non-empty per-owner queues are kept in order too, so a worker
// that may run every job still takes them in global order. It holds IDs only; Redis has the jobs.
//
// Thread-safety: none (the daemon's one io_context thread).
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/store.hpp"

namespace descprod {

class ready_queue {
 public:
  using owner_id = std::uint32_t;
  using entry = std::pair<double, job_id>;  // (score, id)

  // The owner's number (added on first use). Owners are never forgotten: there are few of them.
  owner_id intern(std::string_view owner);
  std::optional<owner_id> find_owner(std::string_view owner) const;
  const std::string& owner_name(owner_id o) const { return queues_[o].name; }

  // Adds a job; false (and no change) when it is already queued.
  bool push(job_id id, double score, owner_id owner);
  // Removes a job; false when it was not queued.
  bool erase(job_id id);
  bool contains(job_id id) const { return where_.count(id) != 0; }
  std::size_t size() const { return where_.size(); }
  bool empty() const { return where_.empty(); }
  // The queued job's score and owner.
  std::optional<std::pair<double, owner_id>> find(job_id id) const;

  // The lowest-scored job that `fits` among those of `owners` (nullptr: every owner), looking at
  // no more than `scan` jobs in all; nullopt when none fits within that budget.
  template <class Fits>
  std::optional<entry> best(const std::vector<owner_id>* owners, Fits&& fits, std::size_t scan) const;

 private:
  struct owner_queue {
    std::string name;
    std::set<entry> jobs;
  };
  struct position {
    double score;
    owner_id owner;
  };
  // The first job of `q` that fits, looking at no more than `budget` jobs (reduced by those seen).
  template <class Fits>
  static std::optional<entry> first_fitting(const owner_queue& q, Fits& fits, std::size_t& budget);

  std::vector<owner_queue> queues_;
  std::unordered_map<std::string, owner_id> index_;
  std::set<std::pair<double, owner_id>> fronts_;  // (front score, owner) of every non-empty queue
  std::unordered_map<job_id, position> where_;
};

template <class Fits>
std::optional<ready_queue::entry> ready_queue::first_fitting(const owner_queue& q, Fits& fits,
                                                             std::size_t& budget) {
  for (auto it = q.jobs.begin(); it != q.jobs.end() && budget > 0; ++it, --budget)
    if (fits(it->second)) return *it;
  return std::nullopt;
}

template <class Fits>
std::optional<ready_queue::entry> ready_queue::best(const std::vector<owner_id>* owners, Fits&& fits,
                                                    std::size_t scan) const {
  std::optional<entry> found;
  std::size_t budget = scan;
  if (owners) {
    for (owner_id o : *owners) {
      if (o >= queues_.size() || queues_[o].jobs.empty()) continue;
      const auto& q = queues_[o];
      if (found && q.jobs.begin()->first > found->first) continue;
      auto e = first_fitting(q, fits, budget);
      if (e && (!found || *e < *found)) found = e;
      if (budget == 0) break;
    }
    return found;
  }
  // Every owner: visit the queues in the order of their fronts; one whose front comes after the
  // best fitting job so far cannot hold a better one.
  for (const auto& [front, o] : fronts_) {
    if (found && front > found->first) break;
    auto e = first_fitting(queues_[o], fits, budget);
    if (e && (!found || *e < *found)) found = e;
    if (budget == 0) break;
  }
  return found;
}

}  // namespace descprod
