// The outbox (see outbox.hpp).
#include "daemon/outbox.hpp"

#include <boost/asio/as_tuple.hpp>

#include "core/log.hpp"
#include "core/protocol.hpp"

namespace descprod {

namespace {
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
}

job_id pending_write::job() const {
  return what == kind::report ? protocol::get_int(body, "job").value_or(0) : id;
}

long long pending_write::job_attempt() const {
  return what == kind::report ? protocol::get_int(body, "attempt").value_or(0) : attempt;
}

// One batch of outbox writes in flight: the writes, how many are still running, which failed
// for want of a connection. Shared by the batch's coroutines, so it lives as long as any of them.
struct outbox::write_batch {
  std::vector<pending_write> writes;
  std::size_t remaining = 0;
  std::vector<char> failed;
};

outbox::outbox(daemon_context& ctx, const worker_table& workers,
               std::function<void(job_id, int, const std::string&, const std::string&)> requeued)
    : ctx_(ctx), workers_(workers), requeued_(std::move(requeued)), wake_(ctx.io) {}

void outbox::submit(pending_write w) {
  queue_.push_back(std::move(w));
  if (queue_.size() == 1) wake_.cancel();
}

void outbox::requeue_later(job_id id, long long attempt, std::string worker, store::requeue_mode mode,
                           std::string reason) {
  pending_write pw{pending_write::kind::requeue};
  pw.id = id;
  pw.attempt = attempt;
  pw.worker = std::move(worker);
  pw.mode = mode;
  pw.reason = std::move(reason);
  submit(std::move(pw));
}

void outbox::requeue_orphan(job_id id, std::string worker, std::string reason) {
  pending_write pw{pending_write::kind::orphan};
  pw.id = id;
  pw.worker = std::move(worker);
  pw.mode = store::requeue_mode::lost;
  pw.reason = std::move(reason);
  submit(std::move(pw));
}

net::awaitable<void> outbox::run() {
  // Takes the outbox in batches; the writes of a batch are pipelined on the one connection (each
  // starts in order and sends its command before the next starts), so Redis applies them in the
  // order they arrived. Up to max_in_flight batches are in flight, so the daemon builds the next
  // batch while Redis runs the last one. Writes that failed for want of a connection go back to
  // the front, in their order, once every batch in flight is back; nothing new starts meanwhile.
  constexpr std::size_t max_batch = 1024;
  constexpr std::size_t max_in_flight = 4;
  std::deque<std::shared_ptr<write_batch>> flying;
  std::vector<pending_write> failed;
  while (!ctx_.stopping) {
    if (!flying.empty() && flying.front()->remaining == 0) {
      auto& b = *flying.front();
      for (std::size_t i = 0; i < b.writes.size(); ++i)
        if (b.failed[i]) failed.push_back(std::move(b.writes[i]));
      flying.pop_front();
      if (flying.empty() && !failed.empty()) {
        for (auto it = failed.rbegin(); it != failed.rend(); ++it) queue_.push_front(std::move(*it));
        log::warn("redis writes held until redis returns count={} outbox={}", failed.size(), queue_.size());
        failed.clear();
      }
      continue;
    }
    in_flight_ = 0;
    for (const auto& f : flying) in_flight_ += f->writes.size();
    if (failed.empty() && !queue_.empty() && ctx_.redis_ready() && flying.size() < max_in_flight) {
      auto b = std::make_shared<write_batch>();
      std::size_t n = std::min(max_batch, queue_.size());
      b->writes.reserve(n);
      for (std::size_t i = 0; i < n; ++i) {
        b->writes.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      b->failed.assign(n, 0);
      flying.push_back(b);
      in_flight_ += n;
      // Runs of consecutive worker reports go as one script call each (store::async_reports);
      // anything else (requeues) one call of its own, in between, in order.
      std::vector<std::pair<std::size_t, std::size_t>> parts;
      for (std::size_t i = 0; i < n;) {
        std::size_t j = i + 1;
        if (b->writes[i].what == pending_write::kind::report)
          while (j < n && j - i < reports_per_call && b->writes[j].what == pending_write::kind::report) ++j;
        parts.emplace_back(i, j);
        i = j;
      }
      b->remaining = parts.size();
      for (auto [i, j] : parts) {
        if (b->writes[i].what == pending_write::kind::report)
          net::co_spawn(ctx_.io, apply_reports(b, i, j), net::detached);
        else net::co_spawn(ctx_.io, apply_one(b, i), net::detached);
      }
      continue;
    }
    // Woken by submit() (the outbox was empty), by a batch coming back, or by a reconnect.
    bool poll = flying.empty() && !queue_.empty();  // waiting for Redis to come back
    wake_.expires_after(poll ? std::chrono::milliseconds(50) : std::chrono::hours(1));
    co_await wake_.async_wait(use_tuple);
  }
}

net::awaitable<bool> outbox::drain(clock_type::time_point deadline) {
  net::steady_timer timer(ctx_.io);
  while (!ctx_.stopping && clock_type::now() < deadline && !idle()) {
    timer.expires_after(std::chrono::milliseconds(10));
    co_await timer.async_wait(use_tuple);
  }
  co_return idle();
}

void outbox::batch_done(write_batch& b) {
  if (--b.remaining == 0) wake_.cancel();
}

net::awaitable<void> outbox::apply_one(std::shared_ptr<write_batch> b, std::size_t i) {
  try {
    co_await apply(b->writes[i]);
    ack(b->writes[i]);
  } catch (const boost::system::system_error& e) {
    b->failed[i] = 1;  // Redis unavailable: keep it for later
    ctx_.redis_failed(e);
  } catch (const std::exception& e) {
    log::error("redis write dropped error={}", e.what());
    ack(b->writes[i]);  // it would fail the same way again
  }
  batch_done(*b);
}

store::report outbox::to_report(const pending_write& w) {
  const auto& body = w.body;
  const job_id id = *protocol::get_int(body, "job");
  const long long attempt = *protocol::get_int(body, "attempt");
  auto cut = [](std::string m) {
    if (m.size() > 1000) m.resize(1000);
    return m;
  };
  // What every report kind carries: the job, its attempt and the reporting worker.
  auto with_head = [&](auto q) {
    q.id = id;
    q.attempt = attempt;
    q.worker = w.worker;
    return q;
  };
  if (w.command == protocol::started) {
    auto q = with_head(store::start_report{});
    q.host = protocol::get_string(body, "host").value_or("");
    q.rundir = protocol::get_string(body, "rundir").value_or("");
    q.pid = protocol::get_int(body, "pid").value_or(0);
    return q;
  }
  if (w.command == protocol::progress) {
    auto q = with_head(store::progress_report{});
    q.message = cut(protocol::get_string(body, "message").value_or(""));
    q.done = protocol::get_int(body, "done");
    q.total = protocol::get_int(body, "total");
    return q;
  }
  if (w.command == protocol::log_lines) {  // built by worker_handler::on_log
    auto q = with_head(store::log_report{});
    q.offset = protocol::get_int(body, "offset");
    q.next = protocol::get_int(body, "next").value_or(0);
    q.capped = protocol::get_bool(body, "capped").value_or(false);
    q.cap = protocol::get_int(body, "cap").value_or(0);
    q.text = protocol::get_string(body, "text").value_or("");
    if (auto e = body.find("ends"); e != body.end() && e->value().is_array())
      for (const auto& v : e->value().as_array())
        if (v.is_int64()) q.ends.push_back(v.as_int64());
    return q;
  }
  auto out = classify_exit(static_cast<int>(protocol::get_int(body, "rc").value_or(0)),
                           static_cast<int>(protocol::get_int(body, "signal").value_or(0)),
                           protocol::get_bool(body, "timed_out").value_or(false));
  auto q = with_head(store::finish_report{});
  q.target = out.state;
  q.return_status = out.return_status;
  q.prefix = out.prefix;
  q.message = cut(protocol::get_string(body, "message").value_or(""));
  return q;
}

void outbox::report_applied(const pending_write& w, const transition_result& r) {
  ack(w);  // applied or refused, Redis has answered: the worker need not send it again
  job_id id = w.job();
  if (r.ok) {
    if (w.command == protocol::finished) {
      ++ctx_.stats.finished;
      ctx_.ended(r.state);
      log::debug("job finished job_id={} state={} worker={}", id, r.state, w.worker);
    }
    return;
  }
  if (w.command == protocol::log_lines) {  // a piece of a job requeued or deleted meanwhile
    log::debug("log piece ignored job_id={} attempt={} worker={} reason={}", id, w.job_attempt(), w.worker,
               refusal_reason(r));
    return;
  }
  ++ctx_.stats.stale_events;
  log::warn("event ignored command={} job_id={} attempt={} worker={} reason={} state={}", w.command, id,
            w.job_attempt(), w.worker, refusal_reason(r), r.state);
}

net::awaitable<void> outbox::apply_reports(std::shared_ptr<write_batch> b, std::size_t from, std::size_t to) {
  std::vector<store::report> reports;
  reports.reserve(to - from);
  for (std::size_t i = from; i < to; ++i) reports.push_back(to_report(b->writes[i]));
  bool one_by_one = false;
  try {
    auto results = co_await ctx_.st.async_reports(std::move(reports));
    for (std::size_t i = from; i < to; ++i) report_applied(b->writes[i], results[i - from]);
  } catch (const boost::system::system_error& e) {
    for (std::size_t i = from; i < to; ++i) b->failed[i] = 1;  // Redis unavailable: keep them for later
    ctx_.redis_failed(e);
  } catch (const std::exception& e) {
    // The script failed, not the connection (a job's keys are broken): apply them one by one, in
    // order, so that only the broken one is dropped.
    log::warn("report batch failed, applying one by one count={} error={}", to - from, e.what());
    one_by_one = to - from > 1;
    if (!one_by_one) {
      log::error("redis write dropped count=1 error={}", e.what());
      ack(b->writes[from]);
    }
  }
  if (one_by_one) {
    for (std::size_t i = from; i < to; ++i) {
      std::vector<store::report> one;
      one.push_back(to_report(b->writes[i]));
      try {
        auto r = co_await ctx_.st.async_reports(std::move(one));
        report_applied(b->writes[i], r.front());
      } catch (const boost::system::system_error& e1) {
        b->failed[i] = 1;
        ctx_.redis_failed(e1);
      } catch (const std::exception& e1) {
        log::error("redis write dropped job_id={} command={} error={}", b->writes[i].job(),
                   b->writes[i].command, e1.what());
        ack(b->writes[i]);  // its keys are broken: sending it again would not help
      }
    }
  }
  batch_done(*b);
}

net::awaitable<void> outbox::apply(pending_write& w) {
  using kind = pending_write::kind;
  if (w.what == kind::requeue || w.what == kind::orphan) {
    if (w.what == kind::orphan) {
      auto cmd = redis_cmd("HGET", ctx_.k.job(w.id), "attempt");
      w.attempt = (co_await ctx_.redis.async_exec(std::move(cmd))).as_integer();
    }
    auto r = co_await ctx_.st.async_requeue(w.id, w.attempt, w.worker, w.mode, w.reason);
    if (!r.ok) {
      log::warn("requeue refused job_id={} reason={} state={}", w.id, refusal_reason(r), r.state);
      co_return;
    }
    log::info("job requeued job_id={} state={} attempt={} reason={}", w.id, r.state, r.attempt, w.reason);
    ctx_.ended(r.state);  // "lost" (or "cancelled") when it ends here
    if (r.state == "ready") {
      auto cmd = redis_cmd("HMGET", ctx_.k.job(w.id), "priority", "descname", "sites");
      auto p = co_await ctx_.redis.async_exec(std::move(cmd));
      if (p.elements.size() == 3 && requeued_)
        requeued_(w.id, static_cast<int>(p.elements[0].as_integer()), p.elements[1].str, p.elements[2].str);
    }
    co_return;
  }
  // kind::report never comes here: run() sends every report through apply_reports.
  log::error("outbox write of an unexpected kind dropped worker={} command={}", w.worker, w.command);
}

void outbox::ack(const pending_write& w) {
  if (w.ack_command.empty()) return;
  boost::json::array entry;
  entry.emplace_back(w.job());
  entry.emplace_back(w.job_attempt());
  entry.emplace_back(w.ack_command);
  const std::string& to = workers_.routing_of(w.worker, w.routing);
  if (to.empty()) return;
  acks_[to].push_back(std::move(entry));
  if (!acks_posted_) {
    acks_posted_ = true;
    net::post(ctx_.io, [this] { flush_acks(); });
  }
}

void outbox::flush_acks() {
  acks_posted_ = false;
  if (!ctx_.send_frames) return;
  auto all = std::move(acks_);
  acks_.clear();
  for (auto& [routing, reports] : all) {
    boost::json::object body;
    body["reports"] = std::move(reports);
    ctx_.send_worker(routing, protocol::ack, body);
  }
}

}  // namespace descprod
