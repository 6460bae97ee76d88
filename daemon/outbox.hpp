// The outbox (docs/architecture.md, Daemon): the Redis writes the daemon must not lose — worker
// reports (started, progress, finished), requeues and handbacks, orphan requeues — written in the
// order they were submitted. While Redis is away they wait in memory and go when it returns. Runs
// of consecutive reports go as one script call (store::async_reports, built by to_report()); each
// requeue is a call of its own, in between, in order. A report or handback that asked for an
// acknowledgement ("ack": true) is acknowledged once Redis has answered (applied or refused).
// drain(deadline) waits until everything submitted has been written (drain_and_stop).
//
// Thread-safety: none; the daemon's io_context thread.
#pragma once

#include <boost/json.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/job.hpp"
#include "daemon/context.hpp"
#include "daemon/worker_table.hpp"

namespace descprod {

// A Redis write that must not be lost: kept in the outbox until Redis has taken it.
struct pending_write {
  enum class kind { report, requeue, orphan };
  explicit pending_write(kind k) : what(k) {}
  kind what;
  std::string worker;
  std::string command;  // report: started/progress/finished
  boost::json::object body;
  job_id id = 0;
  long long attempt = 0;
  store::requeue_mode mode = store::requeue_mode::plain;
  std::string reason;
  // A worker's report or handback that asked for an acknowledgement ("ack": true): sent as
  // [job, attempt, ack_command] once Redis has answered (applied or refused), to the worker's
  // current connection, else to `routing`, the one it came on.
  std::string ack_command;
  std::string routing;

  // The job it is about (a report carries it in its body).
  job_id job() const;
  long long job_attempt() const;
};

class outbox {
 public:
  // `requeued` is told of a job a requeue put back to ready (its priority, owner and sites): the
  // dispatcher queues it again.
  outbox(
      daemon_context& ctx, const worker_table& workers,
      std::function<void(job_id, int priority, const std::string& owner, const std::string& sites)> requeued);

  void submit(pending_write w);
  void requeue_later(job_id id, long long attempt, std::string worker, store::requeue_mode mode,
                     std::string reason);
  // A lease from before a restart whose worker is gone: requeued at the attempt Redis holds.
  void requeue_orphan(job_id id, std::string worker, std::string reason);

  // The writer: runs until the daemon stops.
  net::awaitable<void> run();
  // Redis serves again: write what was held now.
  void wake() { wake_.cancel(); }
  // Waits until every write submitted so far is done (written or refused by Redis), or the
  // deadline passes, or the daemon stops. True when the outbox emptied.
  net::awaitable<bool> drain(clock_type::time_point deadline);
  bool idle() const { return queue_.empty() && in_flight_ == 0; }
  std::size_t size() const { return queue_.size(); }
  std::size_t in_flight() const { return in_flight_; }

  // Acknowledges a report or handback that asked for it (queued; sent once per event-loop turn).
  void ack(const pending_write& w);
  void flush_acks();

  // The store's report for a worker's report: the one place the daemon builds store::report.
  static store::report to_report(const pending_write& w);

  static constexpr std::size_t reports_per_call = 256;

 private:
  struct write_batch;
  net::awaitable<void> apply(pending_write& w);  // w stays intact for a retry when Redis is away
  net::awaitable<void> apply_one(std::shared_ptr<write_batch> b, std::size_t i);
  // Writes [from, to) of a batch, all worker reports: one script call (store::async_reports).
  net::awaitable<void> apply_reports(std::shared_ptr<write_batch> b, std::size_t from, std::size_t to);
  void report_applied(const pending_write& w, const transition_result& r);
  void batch_done(write_batch& b);

  daemon_context& ctx_;
  const worker_table& workers_;
  std::function<void(job_id, int, const std::string&, const std::string&)> requeued_;
  std::deque<pending_write> queue_;
  std::size_t in_flight_ = 0;  // writes sent to Redis, not yet answered
  net::steady_timer wake_;
  std::unordered_map<std::string, boost::json::array> acks_;  // by routing id
  bool acks_posted_ = false;
};

}  // namespace descprod
