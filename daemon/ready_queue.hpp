// The daemon's ready queue (docs/architecture.md, Daemon): ready jobs ordered by score (priority, then ID), kept
// per owner so a worker that may run only some owners' jobs finds its next job without scanning
// the others'. The fronts of the non-empty per-owner queues are kept in order too, so a worker
// that may run every job can take them in global order (the `fifo` policy). It holds IDs only;
// Redis has the jobs.
//
// Fair share (the default policy; docs/operators.md, Fair share and quotas) is stride
// scheduling over owners: each owner has a pass, and the next job goes to the owner with jobs
// waiting whose pass is lowest (then by score); each job dispatched adds 1/share to its owner's
// pass. So owners with jobs waiting get jobs in the ratio of their shares, however many each has
// queued and whatever the number of slots; an owner whose queue was empty starts from the pass
// of the last job dispatched (it banks no credit while idle). An owner at its max_running limit
// gets none. A job's priority orders only its owner's own jobs.
//
// Sites (docs/operators.md, Sites): a job may ask to run only at some sites. Each owner's jobs are
// kept in lanes, one per set of sites asked for (lane 0: any site), so a worker looks only at the
// lanes its site may serve and a backlog for one site never hides another site's jobs from it.
//
// Thread-safety: none (the daemon's one io_context thread).
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
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
  using lane_id = std::uint32_t;
  using entry = std::pair<double, job_id>;  // (score, id)

  // The lane of a set of sites ("nersc,slac": sorted, comma-separated; "": any site, lane 0).
  lane_id intern_lane(std::string_view sites);
  // Whether a worker at `site` ("": a worker without a site label) may run the lane's jobs.
  bool lane_allows(lane_id lane, std::string_view site) const;
  // Queued jobs a worker at `site` may run (pilot demand per site).
  std::size_t runnable_at(std::string_view site) const;
  // Up to `max` queued jobs of `lane`: owners in turn, each one's lowest score first.
  std::vector<job_id> in_lane(lane_id lane, std::size_t max) const;

  // The owner's number (added on first use). Owners are never forgotten: there are few of them.
  owner_id intern(std::string_view owner);
  std::optional<owner_id> find_owner(std::string_view owner) const;
  const std::string& owner_name(owner_id o) const { return queues_[o].name; }

  // An owner's quota as the daemon applies it: share > 0 (weight), max_running 0 = no limit.
  void set_quota(owner_id o, double share, std::uint32_t max_running);
  double share(owner_id o) const { return o < queues_.size() ? queues_[o].share : 1.0; }
  std::uint32_t max_running(owner_id o) const { return o < queues_.size() ? queues_[o].max_running : 0; }
  std::size_t owner_count() const { return queues_.size(); }
  // Queued jobs of one owner.
  std::size_t queued(owner_id o) const { return o < queues_.size() ? queues_[o].count : 0; }

  // Adds a job (in `lane`: the sites it asked for); false (and no change) when it is already queued.
  bool push(job_id id, double score, owner_id owner, lane_id lane = 0);
  // Removes a job; false when it was not queued.
  bool erase(job_id id);
  bool contains(job_id id) const { return where_.count(id) != 0; }
  // The highest job ID ever pushed (0: none): no job the daemon has seen has a higher one.
  job_id highest_id() const { return highest_id_; }
  std::size_t size() const { return where_.size(); }
  bool empty() const { return where_.empty(); }
  // The queued job's score and owner.
  std::optional<std::pair<double, owner_id>> find(job_id id) const;
  // The queued job's lane (0 when it is not queued).
  lane_id lane_of(job_id id) const;

  // The lowest-scored job that `fits` among those of `owners` (nullptr: every owner) that a
  // worker at `site` may run, looking at no more than `scan` jobs in all; nullopt when none fits
  // within that budget.
  template <class Fits>
  std::optional<entry> best(const std::vector<owner_id>* owners, Fits&& fits, std::size_t scan,
                            std::string_view site = {}) const;
  // Fair share: among `owners` (nullptr: every owner) with a job that `fits` (and that a worker at
  // `site` may run) and fewer than max_running jobs held (`running(owner)`), the owner with the
  // lowest pass (then the lowest front score) gives its lowest-scored fitting job. Looks at no
  // more than `scan` jobs.
  template <class Fits, class Running>
  std::optional<entry> fair(const std::vector<owner_id>* owners, Fits&& fits, Running&& running,
                            std::size_t scan, std::string_view site = {}) const;
  // A job of `o` was dispatched: its pass moves on by 1/share.
  void charge(owner_id o);
  // Queued jobs that their owners' max_running keeps from running now, however many slots there
  // are (`running(owner)`: the owner's jobs dispatched or running). Pilot demand leaves them out.
  template <class Running>
  std::size_t held_back(Running&& running) const {
    std::size_t n = 0;
    for (owner_id o = 0; o < queues_.size(); ++o) {
      const auto& q = queues_[o];
      if (q.max_running == 0 || q.count == 0) continue;
      std::size_t held = running(o);
      std::size_t room = held >= q.max_running ? 0 : q.max_running - held;
      if (q.count > room) n += q.count - room;
    }
    return n;
  }

 private:
  struct owner_queue {
    std::string name;
    std::map<lane_id, std::set<entry>> lanes;  // non-empty lanes only
    std::size_t count = 0;
    double share = 1.0;
    std::uint32_t max_running = 0;
    double pass = 0;  // fair share: see above
  };
  struct position {
    double score;
    owner_id owner;
    lane_id lane;
  };
  // The lowest score among the lanes of `q` a worker at `site` may run (nullopt: none).
  std::optional<double> front_for(const owner_queue& q, std::string_view site) const;
  static double front_of(const owner_queue& q);
  // The lowest-scored job of `q` that fits among the lanes a worker at `site` may run, looking at
  // no more than `budget` jobs (reduced by those seen).
  template <class Fits>
  std::optional<entry> first_fitting(const owner_queue& q, Fits& fits, std::size_t& budget,
                                     std::string_view site) const;

  std::vector<std::vector<std::string>> lane_sites_{{}};  // lane 0: any site
  std::unordered_map<std::string, lane_id> lane_index_{{"", 0}};
  std::vector<std::size_t> lane_count_{0};  // queued jobs per lane
  std::vector<owner_queue> queues_;
  std::unordered_map<std::string, owner_id> index_;
  std::set<std::pair<double, owner_id>> fronts_;  // (front score, owner) of every non-empty queue
  std::unordered_map<job_id, position> where_;
  job_id highest_id_ = 0;
  double last_pass_ = 0;  // the pass of the owner charged last
};

template <class Fits>
std::optional<ready_queue::entry> ready_queue::first_fitting(const owner_queue& q, Fits& fits,
                                                             std::size_t& budget,
                                                             std::string_view site) const {
  std::optional<entry> found;
  for (const auto& [lane, jobs] : q.lanes) {
    if (!lane_allows(lane, site)) continue;
    for (auto it = jobs.begin(); it != jobs.end() && budget > 0; ++it, --budget) {
      if (found && it->first > found->first) break;  // this lane has nothing better
      if (fits(it->second)) {
        found = *it;
        break;
      }
    }
    if (budget == 0) break;
  }
  return found;
}

template <class Fits>
std::optional<ready_queue::entry> ready_queue::best(const std::vector<owner_id>* owners, Fits&& fits,
                                                    std::size_t scan, std::string_view site) const {
  std::optional<entry> found;
  std::size_t budget = scan;
  if (owners) {
    for (owner_id o : *owners) {
      if (o >= queues_.size() || queues_[o].count == 0) continue;
      const auto& q = queues_[o];
      if (found && front_of(q) > found->first) continue;
      auto e = first_fitting(q, fits, budget, site);
      if (e && (!found || *e < *found)) found = e;
      if (budget == 0) break;
    }
    return found;
  }
  // Every owner: visit the queues in the order of their fronts; one whose front comes after the
  // best fitting job so far cannot hold a better one.
  for (const auto& [front, o] : fronts_) {
    if (found && front > found->first) break;
    auto e = first_fitting(queues_[o], fits, budget, site);
    if (e && (!found || *e < *found)) found = e;
    if (budget == 0) break;
  }
  return found;
}

template <class Fits, class Running>
std::optional<ready_queue::entry> ready_queue::fair(const std::vector<owner_id>* owners, Fits&& fits,
                                                    Running&& running, std::size_t scan,
                                                    std::string_view site) const {
  // The candidates: owners with queued jobs, under their running limit, by (pass, front score).
  struct candidate {
    double usage;
    double front;
    owner_id owner;
    bool operator<(const candidate& o) const { return usage != o.usage ? usage < o.usage : front < o.front; }
  };
  std::vector<candidate> c;
  auto consider = [&](owner_id o) {
    const auto& q = queues_[o];
    if (q.count == 0) return;
    std::uint32_t held = running(o);
    if (q.max_running > 0 && held >= q.max_running) return;
    auto front = front_for(q, site);
    if (!front) return;  // nothing this worker's site may run
    c.push_back(candidate{q.pass, *front, o});
  };
  if (owners) {
    for (owner_id o : *owners)
      if (o < queues_.size()) consider(o);
  } else {
    for (const auto& f : fronts_) consider(f.second);
  }
  std::sort(c.begin(), c.end());
  std::size_t budget = scan;
  for (const auto& k : c) {
    if (auto e = first_fitting(queues_[k.owner], fits, budget, site)) return e;
    if (budget == 0) break;
  }
  return std::nullopt;
}

}  // namespace descprod
