// The dispatcher (see dispatcher.hpp).
#include "daemon/dispatcher.hpp"

#include <algorithm>
#include <cstdio>

#include "core/crypto.hpp"
#include "core/log.hpp"
#include "core/protocol.hpp"

namespace descprod {

namespace {
boost::json::object app_json(const app_def& app, const job_record& r, job_id id, bool batch_howfigs) {
  boost::json::object a;
  boost::json::array argv;
  auto get = [&](const char* k) {
    auto it = r.find(k);
    return it == r.end() ? std::string() : it->second;
  };
  for (auto& s : app.job_argv(get("config"), get("howfig"), id, batch_howfigs)) argv.emplace_back(s);
  a["argv"] = std::move(argv);
  boost::json::object env;
  for (const auto& [k, v] : app.env) env[k] = v;
  a["env"] = std::move(env);
  a["time_limit_s"] = app.time_limit_s;
  a["login_shell"] = app.login_shell;
  a["cores"] = app.cores;
  // The worker's containment of the job (issue #13): the app's umask and its cgroup limits.
  a["umask"] = app.umask;
  if (app.memory_max > 0) a["memory_max"] = app.memory_max;
  if (app.limit_cores) a["limit_cores"] = app.cores;
  return a;
}
}  // namespace

dispatcher::dispatcher(daemon_context& ctx, worker_table& workers, lease_table& leases, outbox& out)
    : ctx_(ctx),
      workers_(workers),
      leases_(leases),
      out_(out),
      fair_share_(ctx.cfg.daemon.dispatch_policy != "fifo") {}

void dispatcher::enqueue(job_id id, int priority, const std::string& owner, std::string_view sites) {
  if (leases_.contains(id)) return;
  ready_.push(id, queue_score(priority, id), ready_.intern(owner), ready_.intern_lane(sites));
}

bool dispatcher::cancel_ready(job_id id) {
  if (!ready_.erase(id)) return false;
  job_limits_.erase(id);
  return true;
}

void dispatcher::cancel(job_id id) {
  cancel_ready(id);
  const lease* l = leases_.find(id);
  if (!l) return;
  if (l->attempt == 0) {  // being leased: sent after the job (after_lease)
    cancel_after_lease_.insert(id);
    return;
  }
  send_cancel(id, l->worker, l->attempt);
}

void dispatcher::send_cancel(job_id id, const std::string& worker, long long attempt) {
  auto* w = workers_.find(worker);
  if (!w) return;
  boost::json::object body;
  body["job"] = id;
  body["attempt"] = attempt;
  ctx_.send_worker(w->routing, protocol::cancel, body);
  log::info("cancel forwarded job_id={} worker={}", id, w->id);
}

bool dispatcher::fits(const worker_state& w, const std::map<job_id, double>& limits, job_id id, double now) {
  if (!w.refused.empty() && w.refused.count(id)) return false;
  if (w.walltime_end <= 0 || limits.empty()) return true;
  auto l = limits.find(id);
  return l == limits.end() || now + l->second <= w.walltime_end - w.walltime_margin_s;
}

void dispatcher::remember_limit(job_id id, double time_limit_s) {
  if (job_limits_.size() >= max_job_limits && !job_limits_.count(id)) job_limits_.erase(job_limits_.begin());
  job_limits_[id] = time_limit_s;
}

bool dispatcher::dispatch_to(worker_state& w, double now) {
  // One job for `w`, the best by score among the owners it may serve that fits its walltime.
  if (w.credits <= 0 || !w.takes_jobs() || ready_.empty() || !ctx_.redis_ready() || ctx_.draining)
    return false;
  std::optional<ready_queue::entry> pick;
  if (auto pin = pilot_manager::pinned_job(w.site)) {
    // The worker of a pilot made for one job (howfig pmb): that job and no other, whatever its
    // time limit (its owner sized the allocation), and only a job pinned to an allocation (a
    // worker that calls itself pin-N gets no job of another kind).
    auto queued = ready_.find(*pin);
    bool owner_ok = w.any_owner ||
                    (queued && std::find(w.owners.begin(), w.owners.end(), queued->second) != w.owners.end());
    if (queued && owner_ok && ready_.lane_of(*pin) == ready_.intern_lane(pinned_sites) &&
        (w.refused.empty() || !w.refused.count(*pin)))
      pick = ready_queue::entry{queued->first, *pin};
  } else {
    auto fit = [&](job_id id) { return fits(w, id, now); };
    const auto* owners = w.any_owner ? nullptr : &w.owners;
    pick = fair_share_ ? ready_.fair(
                             owners, fit, [this](ready_queue::owner_id o) { return leases_.held_of(o); },
                             dispatch_scan, w.site)
                       : ready_.best(owners, fit, dispatch_scan, w.site);
  }
  if (!pick) return false;
  auto [score, id] = *pick;
  auto owner = ready_.find(id)->second;
  auto lane = ready_.lane_of(id);
  ready_.erase(id);
  ready_.charge(owner);
  --w.credits;
  leases_.hold(id, w.id, 0, false, owner);  // attempt known once Redis has leased it
  queue_lease(lease_request{id, score, owner, w.id, new_token(), lane});
  return true;
}

void dispatcher::serve(worker_state& w) {
  for (double now = epoch_now(); dispatch_to(w, now);) {
  }
}

void dispatcher::dispatch() {
  if (ctx_.stopping || ctx_.draining || workers_.empty() || !ctx_.redis_ready() || ready_.empty()) return;
  // Round robin: each worker with credits takes one job per pass, starting after the one served
  // last, so one worker does not take everything. A job that fits no worker now (owner, walltime)
  // stays queued for a later one.
  const double now = epoch_now();
  auto& all = workers_.all();
  for (bool progress = true; progress && !ready_.empty();) {
    progress = false;
    auto start = all.upper_bound(rr_);
    for (std::size_t k = 0, n = all.size(); k < n && !ready_.empty(); ++k, ++start) {
      if (start == all.end()) start = all.begin();
      if (dispatch_to(start->second, now)) {
        rr_ = start->first;
        progress = true;
      }
    }
  }
}

void dispatcher::queue_lease(lease_request r) {
  lease_queue_.push_back(std::move(r));
  // Posted, never inline: a batch that fails at once (Redis just went away) hands its jobs and
  // credits back, and inside dispatch()'s loop that would take the same jobs again, forever.
  if (!lease_flush_posted_) {
    lease_flush_posted_ = true;
    net::post(ctx_.io, [this] { flush_leases(); });
  }
}

void dispatcher::flush_leases() {
  lease_flush_posted_ = false;
  auto all = std::move(lease_queue_);
  lease_queue_.clear();
  // Batches are pipelined on the one connection; each is one script call.
  for (std::size_t i = 0; i < all.size(); i += lease_batch_max) {
    auto end = std::min(all.size(), i + lease_batch_max);
    std::vector<lease_request> batch(std::make_move_iterator(all.begin() + static_cast<std::ptrdiff_t>(i)),
                                     std::make_move_iterator(all.begin() + static_cast<std::ptrdiff_t>(end)));
    ctx_.spawn(lease_batch(std::move(batch)), "lease");
  }
}

void dispatcher::undo_lease(job_id id, const std::string& worker) {
  leases_.release(id);
  if (auto* w = workers_.find(worker)) ++w->credits;
}

net::awaitable<void> dispatcher::lease_batch(std::vector<lease_request> batch) {
  double lease_s = std::chrono::duration<double>(ctx_.cfg.daemon.lease_timeout).count();
  // The job's DESCPROD_TOKEN (docs/architecture.md, Security model: it may read its job and add
  // children, nothing more) is written by the same script that leases the job, and exists before
  // the job message leaves. A lease that ends up not sent leaves an unused token that nobody
  // holds; it expires.
  std::vector<store::claim_request> requests;
  requests.reserve(batch.size());
  for (const auto& q : batch) requests.push_back({q.id, q.worker, sha256_hex(q.token)});
  std::vector<transition_result> results;
  ++leases_in_flight_;  // drain_and_stop() waits for the answer
  try {
    results = co_await ctx_.st.async_claim_many(std::move(requests), lease_s,
                                                std::chrono::seconds(job_token_ttl).count());
  } catch (const boost::system::system_error& e) {
    --leases_in_flight_;
    ctx_.redis_failed(e);
    // Redis went away: the jobs stay ready in Redis; hold them again and give the credits back.
    log::warn("lease failed, redis unavailable jobs={} first_job_id={} error={}", batch.size(),
              batch.front().id, e.what());
    for (const auto& q : batch) {
      undo_lease(q.id, q.worker);
      ready_.push(q.id, q.score, q.owner, q.lane);
    }
    co_return;
  } catch (const std::exception& e) {
    // The script itself failed (one job's broken keys come back as that job's refusal instead).
    // Not retried: the credits go back, and the reconcile takes in whatever is still ready; an
    // operator needs to hear of it.
    --leases_in_flight_;
    log::error("lease batch failed jobs={} first_job_id={} error={}", batch.size(), batch.front().id,
               e.what());
    for (const auto& q : batch) {
      log::error("lease failed job_id={} worker={} error={}", q.id, q.worker, e.what());
      undo_lease(q.id, q.worker);
    }
    dispatch();
    co_return;
  }
  --leases_in_flight_;
  for (std::size_t i = 0; i < batch.size(); ++i) after_lease(batch[i], results[i]);
}

void dispatcher::after_lease(lease_request& q, transition_result& r) {
  const job_id id = q.id;
  const std::string& worker_id = q.worker;
  auto* w = workers_.find(worker_id);
  // Cancelled while Redis leased it: followed by its cancel once sent (below); a lease not sent
  // needs none (the job is cancelled, or requeued with cancel_requested, which ends it at once).
  const bool cancelled = cancel_after_lease_.erase(id) > 0;
  if (!r.ok) {
    // Cancelled, already leased, or gone: not an error, just nothing to run. Broken keys: the
    // job stays as it was in Redis, and an operator needs to hear of it.
    auto why = interpret_refusal(r);
    if (why.broken) log::error("lease failed job_id={} worker={} error={}", id, worker_id, r.state);
    else log::debug("lease refused job_id={} reason={} state={}", id, why.reason, r.state);
    undo_lease(id, worker_id);
    if (w) dispatch();
    return;
  }
  if (!w || w->draining || w->revoked || ctx_.draining) {
    leases_.release(id);
    out_.requeue_later(id, r.attempt, worker_id, store::requeue_mode::plain,
                       ctx_.draining ? "the daemon is stopping" : "worker left before dispatch");
    return;
  }
  leases_.hold(id, worker_id, r.attempt);
  const auto& rec = r.record;
  auto jt = rec.find("jobtype");
  const app_def* app = jt == rec.end() ? nullptr : ctx_.apps.find(jt->second);
  if (!app) {
    std::string name = jt == rec.end() ? "" : jt->second;
    log::error("job has an unknown application job_id={} jobtype={}", id, name);
    undo_lease(id, worker_id);
    boost::json::object fin;
    fin["job"] = id;
    fin["attempt"] = r.attempt;
    fin["rc"] = 127;
    fin["message"] = "unknown application " + name;
    pending_write pw{pending_write::kind::report};
    pw.worker = worker_id;
    pw.command = std::string(protocol::finished);
    pw.body = std::move(fin);
    out_.submit(std::move(pw));
    dispatch();
    return;
  }
  if (w->walltime_end > 0 && app->time_limit_s > 0 &&
      epoch_now() + app->time_limit_s > w->walltime_end - w->walltime_margin_s) {
    // Now the daemon knows the job's time limit: it would outrun this worker's allocation. Put it
    // back as it was; job_limits_ keeps it from every worker that ends too soon.
    ++ctx_.stats.walltime_refusals;
    remember_limit(id, app->time_limit_s);
    undo_lease(id, worker_id);
    char why[160];
    std::snprintf(why, sizeof why, "walltime: time limit %.0f s, %.0f s left in the allocation of %s",
                  app->time_limit_s, std::max(0.0, w->walltime_end - w->walltime_margin_s - epoch_now()),
                  worker_id.c_str());
    log::info("job kept from worker for walltime job_id={} worker={} time_limit_s={:.0f}", id, worker_id,
              app->time_limit_s);
    out_.requeue_later(id, r.attempt, worker_id, store::requeue_mode::plain, why);
    dispatch();
    return;
  }
  job_limits_.erase(id);
  boost::json::object body;
  body["job"] = job_to_json(rec);
  body["attempt"] = r.attempt;
  body["app"] = app_json(*app, rec, id, ctx_.cfg.pilots.enabled);
  body["token"] = std::move(q.token);
  body["log_max"] = ctx_.cfg.daemon.job_log_max_bytes;
  std::vector<std::string> frames{w->routing, std::string(protocol::job), boost::json::serialize(body)};
  ++ctx_.stats.leased;
  log::debug("job leased job_id={} worker={} attempt={}", id, worker_id, r.attempt);
  if (!ctx_.send_frames(frames)) {
    log::warn("worker unreachable at dispatch worker={} job_id={}", worker_id, id);
    if (worker_lost) worker_lost(worker_id, "unreachable");
    return;
  }
  if (cancelled) send_cancel(id, worker_id, r.attempt);
}

std::vector<job_id> dispatcher::pinned_queued(std::size_t max) {
  return ready_.in_lane(ready_.intern_lane(pinned_sites), max);
}

net::awaitable<void> dispatcher::fail_queued(job_id id, int rc, std::string message) {
  if (!cancel_ready(id)) co_return;
  const std::string by = "daemon";
  const double lease_s = std::chrono::duration<double>(ctx_.cfg.daemon.lease_timeout).count();
  auto leased = co_await ctx_.st.async_lease(id, by, lease_s);
  if (!leased.ok) {
    log::info("queued job not failed job_id={} state={}", id, leased.state);
    co_return;
  }
  auto ended =
      co_await ctx_.st.async_finish(id, leased.attempt, by, job_state::failed, rc, "Failed", message);
  log::warn("job failed before it ran job_id={} ok={} reason={}", id, ended.ok, message);
}

pilot_demand dispatcher::demand(double pilot_walltime_s, std::string_view site) const {
  // What pilots could take: ready jobs, less those whose known time limit no pilot's walltime
  // would fit (a new pilot could not run them either); and the free slots of workers now.
  pilot_demand d;
  // Jobs an owner's max_running holds back would leave a new pilot idle.
  d.ready = ready_.size() - std::min(ready_.size(), ready_.held_back([this](ready_queue::owner_id o) {
              return leases_.held_of(o);
            }));
  // Only jobs a pilot's workers may run: those that asked for no site or for theirs.
  d.ready = std::min(d.ready, ready_.runnable_at(site));
  for (const auto& [id, limit] : job_limits_)
    if (limit > pilot_walltime_s && ready_.contains(id) && ready_.lane_allows(ready_.lane_of(id), site) &&
        d.ready > 0)
      --d.ready;
  for (const auto& [id, w] : workers_.all())
    if (!w.draining && !w.revoked)  // credits for prefetch are not free slots
      d.free_slots += std::min(w.credits, std::max(0, w.slots - static_cast<int>(leases_.count(id))));
  return d;
}

}  // namespace descprod
