// Three helpers of the submit path: group commit of single-job creates, coalescing `submitted`
// notices to the daemon, and the summary log line of single-job creates. Kept apart from services.cpp (the Redis keeper and the daemon
// link) so that the request logic links without them (fuzz/CMakeLists.txt).
//
// Thread-safety: none; both belong to the one io_context thread.
#pragma once

#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/store.hpp"

namespace descprod::gateway {

namespace net = boost::asio;

// Coalesces `submitted` notices: add() records a job already written to Redis and, if nothing is
// scheduled yet, posts a flush to the executor, which then sends everything added meanwhile (by
// every request that completed in this event-loop turn) as one `submitted` message of at most
// max_jobs jobs. A full batch is sent at once. Nothing is lost by waiting: the jobs are in Redis's
// queue before they are added here, and the daemon reconciles its queue with Redis every
// reconcile_interval_ms, so a notice that is never sent (the gateway dies within the turn, the
// link refuses it) only delays dispatch. flush() sends what is pending now (shutdown).
class submit_notices {
 public:
  using sender = std::function<bool(const std::vector<std::string>&)>;
  static constexpr std::size_t max_jobs = 1000;

  submit_notices(net::any_io_executor ex, sender send);
  // `sites`: the sites the job asked for ("nersc,slac"; "": any), sent only when there are some.
  void add(job_id id, int priority, const std::string& owner, const std::string& sites = {});
  void flush();
  std::size_t pending() const { return jobs_.size(); }
  // Messages sent and jobs announced since start (for tests and debug logs).
  std::size_t messages_sent() const { return messages_; }
  std::size_t jobs_sent() const { return announced_; }

 private:
  net::any_io_executor ex_;
  sender send_;
  boost::json::array jobs_;
  bool scheduled_ = false;
  std::size_t messages_ = 0;
  std::size_t announced_ = 0;
};

// Group commit of single-job creates: create() queues one job and, if nothing is scheduled yet,
// posts a flush to the executor; the flush writes every job queued meanwhile (by every request in
// this event-loop turn), one store::async_create script per owner, and wakes each caller with its
// job's ID. A group that reaches max_jobs goes at once: Redis then works on it while this thread
// parses the next requests, instead of the two taking turns (measured with wrk, 64 connections:
// one group per turn 16k req/s, groups of 16 18.7k, 32 about 21k, 64 15k). A lone request waits
// for nothing but the post. Each caller still gets its answer only after its job is in
// Redis. Jobs with a parent do not come here (a refused parent would refuse the whole call).
class create_batcher {
 public:
  static constexpr std::size_t max_jobs = 32;
  struct result {
    bool ok = false;
    job_id id = 0;
    std::string time;          // the create script's time, the job's create_time
    std::string reason;        // ok=false: the store's reason
    std::exception_ptr error;  // the call failed (Redis unreachable): rethrown by the caller
  };

  create_batcher(net::any_io_executor ex, store& jobs);
  net::awaitable<result> create(std::string owner, new_job job);
  // Calls made and jobs created since start (for tests and debug logs).
  std::size_t calls() const { return calls_; }
  std::size_t jobs() const { return jobs_created_; }

 private:
  struct waiter;
  void flush();
  net::awaitable<void> write(std::string owner, std::vector<std::shared_ptr<waiter>> group);
  net::any_io_executor ex_;
  store& jobs_;
  std::map<std::string, std::vector<std::shared_ptr<waiter>>> pending_;
  bool scheduled_ = false;
  std::size_t calls_ = 0;
  std::size_t jobs_created_ = 0;
};

// The operators' record of single-job submits without a log line per request: each create is
// logged at debug level, and at most every `interval` one info line sums up what was created
// since the last one (count, ID range, the owners with their counts).
class creation_summary {
 public:
  static constexpr std::chrono::milliseconds default_interval{10000};
  static constexpr std::size_t max_owners_listed = 20;

  creation_summary(net::any_io_executor ex, std::chrono::milliseconds interval = default_interval);
  void add(const std::string& owner, job_id id);
  // Logs what is pending now (shutdown) and stops the timer.
  void stop();

 private:
  void log_now();
  net::steady_timer timer_;
  std::chrono::milliseconds interval_;
  bool armed_ = false;
  bool stopped_ = false;
  std::size_t count_ = 0;
  job_id first_ = 0;
  job_id last_ = 0;
  std::map<std::string, std::size_t> owners_;
};

}  // namespace descprod::gateway
