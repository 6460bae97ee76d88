// The reconciler (see reconciler.hpp).
#include "daemon/reconciler.hpp"

#include <algorithm>
#include <map>

#include "core/accounts.hpp"
#include "core/log.hpp"

namespace descprod {

namespace {
// (A function, not a lambda: GCC 12 mishandles lambdas in coroutine bodies.)
bool by_id(const store::held_lease& a, const store::held_lease& b) { return a.id < b.id; }
}  // namespace

reconciler::reconciler(daemon_context& ctx, worker_table& workers, lease_table& leases, dispatcher& disp,
                       outbox& out)
    : ctx_(ctx), workers_(workers), leases_(leases), disp_(disp), out_(out) {}

bool reconciler::due(clock_type::time_point now) {
  if (now - last_reconcile_ <= ctx_.cfg.daemon.reconcile_interval) return false;
  last_reconcile_ = now;
  return true;
}

net::awaitable<void> reconciler::rebuild(std::chrono::milliseconds orphan_grace) {
  // The queue: everything in the ready set, in chunks so a deep queue does not build one reply.
  const long long chunk = 10000;
  for (long long start = 0;; start += chunk) {
    auto cmd = redis_cmd("ZRANGE", ctx_.k.queue(), std::to_string(start), std::to_string(start + chunk - 1),
                         "WITHSCORES");
    auto r = co_await ctx_.redis.async_exec(std::move(cmd));
    std::vector<std::pair<job_id, double>> jobs;
    for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2)
      jobs.emplace_back(r.elements[i].as_integer(), std::stod(r.elements[i + 1].as_string()));
    co_await take_in(std::move(jobs));
    if (r.elements.size() < static_cast<std::size_t>(chunk * 2)) break;
  }
  // Leases held before a restart: their workers get orphan_grace to say hello and claim them.
  // Claims by descprod-start-job (worker "cli:...") carry deadlines years away and are not ours.
  auto horizon = fmt_double(epoch_now() + 86400.0 * 365);
  auto cmd = redis_cmd("ZRANGE", ctx_.k.leases(), "-inf", horizon, "BYSCORE");
  auto found = co_await ctx_.redis.async_exec(std::move(cmd));
  std::vector<job_id> ids;
  ids.reserve(found.elements.size());
  for (const auto& e : found.elements) ids.push_back(e.as_integer());
  leases_.clear_orphans();
  co_await add_orphans(std::move(ids), clock_type::now() + orphan_grace);
  last_reconcile_ = clock_type::now();
  co_await read_quotas();
  log::info("queue rebuilt ready={} leased={}", disp_.queue().size(), leases_.orphan_count());
  disp_.dispatch();
}

net::awaitable<void> reconciler::add_orphans(std::vector<job_id> ids, clock_type::time_point deadline) {
  // Whom each lease is for, at which attempt, and whose job it is: a hello adopts only leases in
  // its own id and attempt, of owners its token may run; a hello that does not list one of its
  // leases has it requeued at once (worker_handler::accept_hello) instead of after the deadline.
  for (std::size_t from = 0; from < ids.size(); from += 10000) {
    std::size_t to = std::min(ids.size(), from + 10000);
    std::vector<std::vector<std::string>> cmds;
    for (std::size_t i = from; i < to; ++i)
      cmds.push_back(redis_cmd("HMGET", ctx_.k.job(ids[i]), "worker", "attempt", "descname"));
    auto fields = co_await ctx_.redis.async_pipeline(std::move(cmds));
    for (std::size_t i = from; i < to; ++i) {
      if (leases_.contains(ids[i])) continue;  // leased here meanwhile
      orphan_lease o;
      o.deadline = deadline;
      const auto& f = fields[i - from];
      if (!f.is_error() && f.elements.size() == 3) {
        o.worker = f.elements[0].is_nil() ? std::string() : f.elements[0].str;
        o.attempt = f.elements[1].is_nil() ? 0 : std::atoll(f.elements[1].str.c_str());
        o.owner = f.elements[2].is_nil() ? std::string() : f.elements[2].str;
      }
      leases_.add_orphan(ids[i], std::move(o));
    }
  }
}

net::awaitable<void> reconciler::restore_leases() {
  std::vector<store::held_lease> held;
  for (const auto& [id, l] : leases_.all())
    if (l.attempt > 0) held.push_back({id, l.worker, l.attempt});  // attempt 0: not written yet
  job_id top = disp_.queue().highest_id();
  if (held.empty() && top == 0) co_return;
  std::sort(held.begin(), held.end(), by_id);
  const double lease_s = std::chrono::duration<double>(ctx_.cfg.daemon.lease_timeout).count();
  std::size_t restored = 0, missing = 0;
  const std::size_t chunk = 1000;
  // One call at least (the ID counter), then one per chunk of leases.
  for (std::size_t from = 0; from == 0 || from < held.size(); from += chunk) {
    auto first = held.begin() + static_cast<std::ptrdiff_t>(from);
    auto last = held.begin() + static_cast<std::ptrdiff_t>(std::min(held.size(), from + chunk));
    std::vector<store::held_lease> part(first, last);
    auto results = co_await ctx_.st.async_restore_leases(std::move(part), lease_s, top);
    for (std::size_t i = 0; i < results.size(); ++i) {
      const auto& l = held[from + i];
      if (results[i].ok) {
        ++restored;
        log::warn("lease restored: redis had lost it job_id={} worker={} attempt={}", l.id, l.worker,
                  l.attempt);
      } else if (results[i].reason == refusal::missing) {
        ++missing;
        log::error(
            "job missing from redis: redis lost it (restarted from an older data set?) job_id={} worker={}",
            l.id, l.worker);
      }
    }
  }
  if (restored || missing)
    log::warn("redis came back without some of the daemon's leases restored={} missing={} held={}", restored,
              missing, held.size());
}

net::awaitable<void> reconciler::reconcile() {
  // A `submitted` notice can be lost (gateway crash between Redis and ZeroMQ, daemon restart):
  // any ready job near the front of the queue that is not held here is taken in.
  if (!ctx_.redis_ready() || ctx_.draining) co_return;
  std::size_t added = 0;
  try {
    auto cmd = redis_cmd("ZRANGE", ctx_.k.queue(), "0", "9999", "WITHSCORES");
    auto r = co_await ctx_.redis.async_exec(std::move(cmd));
    std::vector<std::pair<job_id, double>> jobs;
    for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
      job_id id = r.elements[i].as_integer();
      if (disp_.queue().contains(id) || leases_.contains(id)) continue;
      jobs.emplace_back(id, std::stod(r.elements[i + 1].as_string()));
    }
    added = jobs.empty() ? 0 : co_await take_in(std::move(jobs));
    co_await adopt_stray_leases();
    co_await read_quotas();
  } catch (const boost::system::system_error& e) {
    ctx_.redis_failed(e);
    co_return;
  }
  if (added) {
    log::info("reconcile found ready jobs added={}", added);
    disp_.dispatch();
  }
}

net::awaitable<void> reconciler::adopt_stray_leases() {
  // A lease Redis holds that this daemon neither holds nor waits on as an orphan: its claim was
  // written but the answer never came (Redis failed over, or the connection broke, between the
  // script and its reply), so the daemon took the claim as failed and never sent the job. It
  // becomes an orphan lease: requeued unless its worker claims it within a lease period.
  auto horizon = fmt_double(epoch_now() + 86400.0 * 365);  // not the claims of descprod-start-job
  auto found =
      co_await ctx_.redis.async_exec(redis_cmd("ZRANGE", ctx_.k.leases(), "-inf", horizon, "BYSCORE"));
  std::vector<job_id> stray;
  for (const auto& e : found.elements) {
    job_id id = e.as_integer();
    if (id > 0 && !leases_.contains(id) && !leases_.find_orphan(id)) stray.push_back(id);
  }
  if (stray.empty()) co_return;
  log::warn(
      "leases in redis that the daemon does not hold: they wait a lease period for their worker, then are "
      "requeued count={} first_job_id={}",
      stray.size(), stray.front());
  co_await add_orphans(std::move(stray), clock_type::now() + ctx_.cfg.daemon.lease_timeout);
}

net::awaitable<void> reconciler::read_quotas() {
  auto& ready = disp_.queue();
  std::vector<std::vector<std::string>> cmds;
  std::vector<ready_queue::owner_id> owners;
  for (ready_queue::owner_id o = 0; o < ready.owner_count(); ++o) {
    if (ready.owner_name(o).empty()) continue;
    std::vector<std::string> c{"HMGET", ctx_.k.user_quota(ready.owner_name(o))};
    for (const auto& f : quota_fields()) c.push_back(f);
    cmds.push_back(std::move(c));
    owners.push_back(o);
  }
  if (cmds.empty()) co_return;
  cmds.push_back(redis_cmd("HGETALL", ctx_.k.pool_shares()));
  auto replies = co_await ctx_.redis.async_pipeline(std::move(cmds));
  // Pool shares (descprod-admin pool share): the weight of a member whose own quota sets none,
  // the largest of its pools'.
  const auto pool_share = pool_shares_of(replies.back());
  std::map<std::string, double> member_share;
  if (!pool_share.empty()) {
    std::vector<std::vector<std::string>> members;
    for (const auto& [pool, share] : pool_share) members.push_back(redis_cmd("SMEMBERS", ctx_.k.pool(pool)));
    auto sets = co_await ctx_.redis.async_pipeline(std::move(members));
    std::size_t k = 0;
    for (const auto& [pool, share] : pool_share) {
      if (k < sets.size())
        for (const auto& m : sets[k].elements) {
          auto& best = member_share[m.str];
          best = std::max(best, share);
        }
      ++k;
    }
  }
  bool changed = false;
  for (std::size_t i = 0; i < owners.size() && i < replies.size(); ++i) {
    auto q = quota_of(replies[i]);
    auto o = owners[i];
    const bool own_share = !replies[i].elements.empty() && !replies[i].elements[0].is_nil();
    if (!own_share) {
      auto m = member_share.find(ready.owner_name(o));
      if (m != member_share.end()) q.share = m->second;
    }
    if (q.share == ready.share(o) && q.max_running == ready.max_running(o)) continue;
    log::info("quota owner={} share={} max_running={}", ready.owner_name(o), q.share, q.max_running);
    ready.set_quota(o, q.share, q.max_running);
    changed = true;
  }
  // A raised limit (or share) may let held-back jobs go now.
  if (changed) disp_.dispatch();
}

net::awaitable<std::size_t> reconciler::take_in(std::vector<std::pair<job_id, double>> jobs) {
  std::vector<std::vector<std::string>> cmds;
  cmds.reserve(jobs.size());
  for (const auto& [id, score] : jobs)
    cmds.push_back(redis_cmd("HMGET", ctx_.k.job(id), "descname", "sites"));
  auto owners = co_await ctx_.redis.async_pipeline(std::move(cmds));
  std::size_t added = 0;
  auto& ready = disp_.queue();
  for (std::size_t i = 0; i < jobs.size() && i < owners.size(); ++i) {
    auto [id, score] = jobs[i];
    if (leases_.contains(id)) continue;
    if (owners[i].is_error() || owners[i].elements.size() != 2) {  // its hash is not a hash: nothing to run
      log::warn("queued job not taken in job_id={} error={}", id, owners[i].str);
      continue;
    }
    const auto& owner = owners[i].elements[0];
    const auto& sites = owners[i].elements[1];
    added += ready.push(id, score, ready.intern(owner.is_nil() ? std::string() : owner.str),
                        ready.intern_lane(sites.is_nil() ? std::string() : sites.str));
  }
  co_return added;
}

void reconciler::expire_orphans(clock_type::time_point now) {
  // Orphaned leases from before a restart whose worker never came back.
  for (job_id id : leases_.take_expired_orphans(now))
    out_.requeue_orphan(id, std::string(),
                        "no worker claimed its lease (a daemon restart, or a lost claim answer)");
}

net::awaitable<void> reconciler::recheck_tokens() {
  // A revoked or expired token, a disabled owner: the worker gets no more jobs (those it runs
  // finish and report). Pool changes apply from here on.
  std::vector<std::pair<std::string, std::string>> checks;  // worker id, token sha
  for (const auto& [id, w] : workers_.all())
    if (!w.token_sha.empty()) checks.emplace_back(id, w.token_sha);
  for (const auto& [id, sha] : checks) {
    // Redis unavailable (LOADING, BUSY, a lost connection) says nothing about the token: stop
    // here, revoke nobody, and check again once Redis serves (queue_daemon::start_reconnect).
    worker_grant g;
    try {
      g = co_await check_worker_token(ctx_.redis, ctx_.cfg.redis.prefix, sha);
    } catch (const boost::system::system_error& e) {
      ctx_.redis_failed(e);
      co_return;
    }
    auto* w = workers_.find(id);
    if (!w || w->token_sha != sha) continue;
    if (!g.ok) {
      if (!w->revoked) {
        w->revoked = true;
        w->credits = 0;
        log::warn("worker token no longer valid: dispatch stopped worker={} owner={} reason={} running={}",
                  id, w->owner, g.reason, leases_.count(id));
      }
      continue;
    }
    if (w->revoked) continue;  // a revoked worker must say hello again
    worker_table::set_grant(*w, g, disp_.queue());
  }
  disp_.dispatch();
}

}  // namespace descprod
