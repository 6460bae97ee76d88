#include "gateway/notices.hpp"

#include "core/log.hpp"
#include "core/protocol.hpp"

namespace descprod::gateway {

submit_notices::submit_notices(net::any_io_executor ex, sender send)
    : ex_(std::move(ex)), send_(std::move(send)) {}

void submit_notices::add(job_id id, int priority, const std::string& owner) {
  boost::json::array entry;
  entry.reserve(3);
  entry.push_back(id);
  entry.push_back(priority);
  entry.push_back(boost::json::string(owner));
  jobs_.push_back(std::move(entry));
  if (jobs_.size() >= max_jobs) {
    flush();
    return;
  }
  if (!scheduled_) {
    scheduled_ = true;
    net::post(ex_, [this] {
      scheduled_ = false;
      flush();
    });
  }
}

void submit_notices::flush() {
  if (jobs_.empty()) return;
  std::size_t n = jobs_.size();
  job_id first = jobs_.front().as_array()[0].as_int64();
  boost::json::object body;
  body["jobs"] = std::move(jobs_);
  jobs_ = boost::json::array();
  bool sent = send_ && send_(protocol::encode(protocol::submitted, body));
  if (!sent) {
    log::warn("daemon notice not queued (the daemon finds the jobs in Redis) first_id={} count={}",
              first, n);
    return;
  }
  ++messages_;
  announced_ += n;
}

creation_summary::creation_summary(net::any_io_executor ex, std::chrono::milliseconds interval)
    : timer_(std::move(ex)), interval_(interval) {}

void creation_summary::add(const std::string& owner, job_id id) {
  log::debug("job created owner={} job_id={}", owner, id);
  if (count_ == 0 || id < first_) first_ = id;
  if (count_ == 0 || id > last_) last_ = id;
  ++count_;
  ++owners_[owner];
  if (armed_ || stopped_) return;
  armed_ = true;
  timer_.expires_after(interval_);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    armed_ = false;
    if (ec || stopped_) return;
    log_now();
  });
}

void creation_summary::stop() {
  stopped_ = true;
  timer_.cancel();
  log_now();
}

void creation_summary::log_now() {
  if (count_ == 0) return;
  std::string who;
  std::size_t listed = 0;
  for (const auto& [name, n] : owners_) {
    if (listed == max_owners_listed) {
      who += " (+" + std::to_string(owners_.size() - listed) + " more)";
      break;
    }
    if (!who.empty()) who += ',';
    who += name + ':' + std::to_string(n);
    ++listed;
  }
  log::info("jobs created by single submits count={} first_id={} last_id={} owners={}", count_,
            first_, last_, who);
  count_ = 0;
  owners_.clear();
}

}  // namespace descprod::gateway
