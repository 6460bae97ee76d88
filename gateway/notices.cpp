#include "gateway/notices.hpp"

#include "core/log.hpp"
#include "core/protocol.hpp"

namespace descprod::gateway {

submit_notices::submit_notices(net::any_io_executor ex, sender send)
    : ex_(std::move(ex)), send_(std::move(send)) {}

void submit_notices::add(job_id id, int priority, const std::string& owner, const std::string& sites) {
  boost::json::array entry;
  entry.reserve(4);
  entry.push_back(id);
  entry.push_back(priority);
  entry.push_back(boost::json::string(owner));
  if (!sites.empty()) entry.push_back(boost::json::string(sites));
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
    log::warn("daemon notice not queued (the daemon finds the jobs in Redis) first_id={} count={}", first, n);
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
  log::info("jobs created by single submits count={} first_id={} last_id={} owners={}", count_, first_, last_,
            who);
  count_ = 0;
  owners_.clear();
}

struct create_batcher::waiter {
  waiter(net::any_io_executor ex, new_job j) : job(std::move(j)), done(ex) {}
  new_job job;
  result res;
  bool finished = false;
  net::steady_timer done;  // cancelled when res is set
};

create_batcher::create_batcher(net::any_io_executor ex, store& jobs) : ex_(std::move(ex)), jobs_(jobs) {}

net::awaitable<create_batcher::result> create_batcher::create(std::string owner, new_job job) {
  auto w = std::make_shared<waiter>(ex_, std::move(job));
  w->done.expires_at(net::steady_timer::time_point::max());
  auto& group = pending_[owner];
  group.push_back(w);
  if (group.size() >= max_jobs) {
    // A full group goes at once, so Redis works on it while this thread reads more requests.
    auto full = std::move(group);
    pending_.erase(owner);
    net::co_spawn(ex_, write(std::move(owner), std::move(full)), net::detached);
  } else if (!scheduled_) {
    scheduled_ = true;
    net::post(ex_, [this] { flush(); });
  }
  while (!w->finished) {
    auto [ec] = co_await w->done.async_wait(net::as_tuple(net::use_awaitable));
    (void)ec;
  }
  co_return std::move(w->res);
}

void create_batcher::flush() {
  scheduled_ = false;
  auto all = std::move(pending_);
  pending_.clear();
  for (auto& [owner, group] : all) {
    for (std::size_t i = 0; i < group.size(); i += max_jobs) {
      auto end = std::min(group.size(), i + max_jobs);
      std::vector<std::shared_ptr<waiter>> part(group.begin() + static_cast<std::ptrdiff_t>(i),
                                                group.begin() + static_cast<std::ptrdiff_t>(end));
      net::co_spawn(ex_, write(owner, std::move(part)), net::detached);
    }
  }
}

net::awaitable<void> create_batcher::write(std::string owner, std::vector<std::shared_ptr<waiter>> group) {
  std::vector<new_job> batch;
  batch.reserve(group.size());
  for (auto& w : group) batch.push_back(std::move(w->job));
  create_result tr;
  std::exception_ptr error;
  try {
    tr = co_await jobs_.async_create(owner, std::move(batch));
  } catch (...) {
    error = std::current_exception();
  }
  ++calls_;
  if (!error && tr.ok && tr.ids.size() == group.size()) jobs_created_ += tr.ids.size();
  for (std::size_t i = 0; i < group.size(); ++i) {
    auto& r = group[i]->res;
    if (error) {
      r.error = error;
    } else if (!tr.ok || tr.ids.size() != group.size()) {
      r.reason = tr.ok ? "the store created " + std::to_string(tr.ids.size()) + " jobs for " +
                             std::to_string(group.size()) + " requests"
                       : std::string(to_string(tr.reason));
    } else {
      r.ok = true;
      r.id = tr.ids[i];
      r.time = tr.time;
    }
    group[i]->finished = true;
    group[i]->done.cancel();
  }
}

}  // namespace descprod::gateway
