// Every Redis key of the service, built in one place (docs/architecture.md, Redis layout). Code
// that talks to Redis asks this module for a key; nothing else pastes a prefix and a suffix. The
// Lua scripts receive their keys as KEYS where the caller knows them, and build the keys they
// derive from a job's data (its owner's index, its parent's children) with the prelude
// lua_prelude() renders from the same names.
//
// Layout, with prefix P (default "descprod:"):
//   P next_job_id                 string  last job ID handed out
//   P next_session_id             string  last session ID handed out (a login, an API token)
//   P job:<id>                    hash    the job (job.hpp, job_field_order)
//   P job:<id>:events             stream  the job's transitions (created at its first event)
//   P job:<id>:log                stream  the job's whole stdout/stderr, up to a cap (daemon, from `log`)
//   P job:<id>:children           set     the IDs of its children
//   P job:<id>:array              set     an array's job IDs (<id>: its first job, the array's ID)
//   P job:<id>:dependents         hash    jobs waiting for it: dependent ID → "after" | "after_any"
//   P deps:ended                  hash    ended jobs whose dependents are not released yet: ID → state
//   P queue                       zset    ready jobs, score = queue_score(priority, id)
//   P leases                      zset    dispatched and running jobs, score = lease deadline
//   P events                      stream  every job's transitions (the live feed)
//   P users                       set     account names
//   P user:<name>                 hash    an account (role, status, password_hash, created)
//   P user:<name>:jobs            zset    the account's job IDs
//   P user:<name>:pending         zset    its held and waiting job IDs (max_queued counts them)
//   P user:<name>:active          zset    its job IDs not archived (the Active view, archived=0)
//   P user:<name>:find            hash    job ID → the fields a search reads, joined by US (store.hpp)
//   P user:<name>:tokens          set     sha256 of its API tokens
//   P user:<name>:worker_tokens   set     sha256 of its worker tokens
//   P token:<sha256>              hash    a token (owner, scope, expires, pools, ...)
//   P session:<sha256>            hash    a web session (user, csrf, created, flash)
//   P worker:<id>                 hash    a worker as the daemon last saw it
//   P pool:<name>                 set     the owners a worker pool serves
//   P pool_shares                 hash    pool name → the fair-share weight of its members
//   P pilots                      set     pilot IDs;  P pilot:<id> hash: a Slurm allocation
//   P daemon:stats                hash    the daemon's counters
//   P daemon:leader               string  <host>:<pid> of the leading daemon (TTL: leader_ttl_ms)
//   P daemon:epoch                string  the fencing epoch every daemon-run store script checks
//   P stats:jobs_by_state         hash    state → number of jobs
//   P notify:cursor               string  the last entry of P events descprod-notifier took in
//   P notify:lock                 string  the running notifier's id (a lease with a TTL)
//   P notify:due                  zset    users with failures to mail, score = when (epoch s)
//   P notify:pending              hash    user → failed jobs not mailed yet
//   P notify:jobs:<name>          list    the first of those job IDs (at most notify.max_listed)
//   P notify:sent                 hash    user → when the last mail went (epoch s)
//   P stats:samples               stream  the daemon's samples of the last hour (stats_sampler.hpp)
//   P sites:status                hash    site name → its status record, JSON (daemon/site_status.hpp)
//   P oidc:state:<sha256>         string  an OpenID Connect login under way (JSON; TTL 600 s)
//   P oidc:links                  hash    "<iss> <sub>" → the account an identity logs in as
//   P limit:fail:acct:<subject>   string  failed logins of an account name in the window (TTL: the window)
//   P limit:block:acct:<subject>  string  "1" while the account waits (PX: the wait)
//   P limit:fail:addr:<subject>   string  failed logins from a client address (TTL: the window)
//   P limit:block:addr:<subject>  string  "1" while the address waits (PX: the wait)
//   P limit:register:<subject>    zset    registrations from an address, score = time (ms; TTL: the window)
//   P limit:oidc:<subject>        zset    OpenID Connect login starts from an address (as above)
//   (<subject>: the name or address, or "sha256=" and its hash; gateway/guard.hpp, limit_subject)
//
// Thread-safety: a value type; const methods only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace descprod {

class keys {
 public:
  explicit keys(std::string prefix = "descprod:") : p_(std::move(prefix)) {}

  const std::string& prefix() const { return p_; }

  std::string next_job_id() const { return p_ + "next_job_id"; }
  std::string next_session_id() const { return p_ + "next_session_id"; }
  std::string job(std::int64_t id) const { return job(std::to_string(id)); }
  std::string job(std::string_view id) const { return cat("job:", id); }
  std::string job_events(std::int64_t id) const { return job(id) + ":events"; }
  std::string job_log(std::int64_t id) const { return job(id) + ":log"; }
  std::string job_children(std::int64_t id) const { return job(id) + ":children"; }
  std::string job_dependents(std::int64_t id) const { return job(id) + ":dependents"; }
  std::string job_array(std::int64_t id) const { return job(id) + ":array"; }
  std::string deps_ended() const { return p_ + "deps:ended"; }
  std::string queue() const { return p_ + "queue"; }
  std::string leases() const { return p_ + "leases"; }
  std::string events() const { return p_ + "events"; }
  std::string users() const { return p_ + "users"; }
  std::string user(std::string_view name) const { return cat("user:", name); }
  std::string user_jobs(std::string_view name) const { return user(name) + ":jobs"; }
  std::string user_pending(std::string_view name) const { return user(name) + ":pending"; }
  std::string user_active(std::string_view name) const { return user(name) + ":active"; }
  std::string user_find(std::string_view name) const { return user(name) + ":find"; }
  std::string user_tokens(std::string_view name) const { return user(name) + ":tokens"; }
  std::string user_worker_tokens(std::string_view name) const { return user(name) + ":worker_tokens"; }
  std::string user_quota(std::string_view name) const { return user(name) + ":quota"; }
  std::string user_submits(std::string_view name) const { return user(name) + ":submits"; }
  std::string token(std::string_view sha256) const { return cat("token:", sha256); }
  std::string session(std::string_view sha256) const { return cat("session:", sha256); }
  std::string worker(std::string_view id) const { return cat("worker:", id); }
  std::string worker_pattern() const { return p_ + "worker:*"; }  // for SCAN MATCH
  std::string pool(std::string_view name) const { return cat("pool:", name); }
  std::string pool_pattern() const { return p_ + "pool:*"; }  // for SCAN MATCH
  std::string pool_shares() const { return p_ + "pool_shares"; }
  std::string pilots() const { return p_ + "pilots"; }
  std::string pilot(std::string_view id) const { return cat("pilot:", id); }
  std::string daemon_stats() const { return p_ + "daemon:stats"; }
  // The leader lease (`<host>:<pid>` of the daemon that leads, with a TTL) and the fencing epoch
  // (raised each time another daemon takes the lead; daemon/leadership.hpp).
  std::string daemon_leader() const { return p_ + "daemon:leader"; }
  std::string daemon_epoch() const { return p_ + "daemon:epoch"; }
  std::string jobs_by_state() const { return p_ + "stats:jobs_by_state"; }
  std::string notify_cursor() const { return p_ + "notify:cursor"; }
  std::string notify_lock() const { return p_ + "notify:lock"; }
  std::string notify_due() const { return p_ + "notify:due"; }
  std::string notify_pending() const { return p_ + "notify:pending"; }
  std::string notify_jobs(std::string_view name) const { return cat("notify:jobs:", name); }
  std::string notify_sent() const { return p_ + "notify:sent"; }
  std::string stats_samples() const { return p_ + "stats:samples"; }
  std::string site_status() const { return p_ + "sites:status"; }
  // An OpenID Connect login under way, by the sha256 of its state (gateway/oidc.hpp).
  std::string oidc_state(std::string_view state_sha256) const {
    return p_ + "oidc:state:" + std::string(state_sha256);
  }
  // Identities linked to accounts: "<iss> <sub>" → account name.
  std::string oidc_links() const { return p_ + "oidc:links"; }
  // The rate limits every gateway shares (gateway/guard.hpp), by a subject that limit_subject()
  // made short and plain: login failures and the wait they started, per account name and per
  // client address; registrations and OpenID Connect login starts per address.
  std::string limit_fail_account(std::string_view subject) const { return cat("limit:fail:acct:", subject); }
  std::string limit_block_account(std::string_view subject) const {
    return cat("limit:block:acct:", subject);
  }
  std::string limit_fail_address(std::string_view subject) const { return cat("limit:fail:addr:", subject); }
  std::string limit_block_address(std::string_view subject) const {
    return cat("limit:block:addr:", subject);
  }
  std::string limit_register(std::string_view subject) const { return cat("limit:register:", subject); }
  std::string limit_oidc(std::string_view subject) const { return cat("limit:oidc:", subject); }

  // The Lua functions K.<name>(x) that build, from the prefix P (ARGV[1] in the store's scripts),
  // the keys a script derives from data it reads: a job's keys from an ID, an owner's job index,
  // the token a job's token_sha names. Rendered from the methods above, so Lua has no key text
  // of its own (store_scripts.cpp).
  static std::string lua_prelude() {
    const keys k("");
    const std::string x = "\x01";  // stands for the argument; never part of a key's fixed text
    std::string out = "local P = ARGV[1]\nlocal K = {}\n";
    auto fn = [&](const char* name, const std::string& built) {
      auto at = built.find(x);
      out += "K.";
      out += name;
      out += " = function(x) return P .. '" + built.substr(0, at) + "' .. x";
      if (at + x.size() < built.size()) out += " .. '" + built.substr(at + x.size()) + "'";
      out += " end\n";
    };
    fn("job", k.job(x));
    fn("job_events", k.job(x) + k.job_events(0).substr(k.job(0).size()));
    fn("job_log", k.job(x) + k.job_log(0).substr(k.job(0).size()));
    fn("job_children", k.job(x) + k.job_children(0).substr(k.job(0).size()));
    fn("job_dependents", k.job(x) + k.job_dependents(0).substr(k.job(0).size()));
    fn("job_array", k.job(x) + k.job_array(0).substr(k.job(0).size()));
    fn("user_jobs", k.user_jobs(x));
    fn("user_pending", k.user_pending(x));
    fn("user_active", k.user_active(x));
    fn("user_find", k.user_find(x));
    fn("token", k.token(x));
    out += "K.deps_ended = P .. '" + k.deps_ended() + "'\n";
    return out;
  }

 private:
  std::string cat(std::string_view kind, std::string_view rest) const {
    std::string k;
    k.reserve(p_.size() + kind.size() + rest.size());
    k.append(p_).append(kind).append(rest);
    return k;
  }
  std::string p_;
};

}  // namespace descprod
