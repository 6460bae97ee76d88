// The job store's C++ side: the scripts' callers (the Lua sources and their convention are in
// store_scripts.cpp). Every answer of a script is read here: to_transition_result reads a
// transition's answer, refusal_of the refusal word in it.
#include "core/store.hpp"

#include <openssl/sha.h>

#include <chrono>
#include <cstdio>
#include <ostream>
#include <stdexcept>

#include "core/job_import.hpp"
#include "core/log.hpp"
#include "core/store_scripts.hpp"

namespace descprod {

namespace {

using namespace store_lua;

std::string sha1_hex(const std::string& s) {
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(s.data()), s.size(), md);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : md) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

job_record to_record(const redis_reply& flat) {
  job_record r;
  for (std::size_t i = 0; i + 1 < flat.elements.size(); i += 2)
    r[flat.elements[i].as_string()] = flat.elements[i + 1].as_string();
  return r;
}

}  // namespace

double queue_score(int priority, job_id id) { return (1000.0 - priority) * 1e12 + static_cast<double>(id); }

std::optional<redis_reply> submit_event_entry(std::string_view create_time) {
  auto dot = create_time.find('.');
  if (dot == 0 || dot == std::string_view::npos || dot + 1 == create_time.size()) return std::nullopt;
  auto digits = [](std::string_view s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos && s.size() <= 12;
  };
  auto sec = create_time.substr(0, dot), frac = create_time.substr(dot + 1);
  if (!digits(sec) || !digits(frac)) return std::nullopt;
  // As the script: tonumber(us) / 1000, floored; the fraction is six digits there.
  unsigned long long us = std::stoull(std::string(frac));
  unsigned long long ms = std::stoull(std::string(sec)) * 1000 + us / 1000;
  auto str = [](std::string s) {
    redis_reply r;
    r.type = redis_reply::kind::string;
    r.str = std::move(s);
    return r;
  };
  redis_reply fields;
  fields.type = redis_reply::kind::array;
  for (const char* f : {"type", "transition", "state", "ready", "progress", "Ready.", "attempt", "1"})
    fields.elements.push_back(str(f));
  fields.elements.push_back(str("time"));
  fields.elements.push_back(str(std::string(create_time)));
  redis_reply entry;
  entry.type = redis_reply::kind::array;
  entry.elements.push_back(str(std::to_string(ms) + "-0"));
  entry.elements.push_back(std::move(fields));
  return entry;
}

namespace {
constexpr std::string_view refusal_names[] = {"",           "missing", "illegal", "stale",  "terminal",
                                              "bad_parent", "active",  "error",   "bad_op", "bad_dep"};
static_assert(std::size(refusal_names) == static_cast<std::size_t>(refusal::bad_dep) + 1);

// The refusal word of a script's answer ({'err', <word>, ...}): the one place it is read.
refusal refusal_of(const redis_reply& word) {
  auto w = word.as_string();
  auto r = parse_refusal(w);
  if (!r || *r == refusal::none) throw std::runtime_error("redis script: unknown refusal '" + w + "'");
  return *r;
}
}  // namespace

std::string_view to_string(refusal r) {
  if (r == refusal::none) return "none";
  return refusal_names[static_cast<std::size_t>(r)];
}

std::optional<refusal> parse_refusal(std::string_view s) {
  if (s == "none") return refusal::none;
  for (std::size_t i = 1; i < std::size(refusal_names); ++i)
    if (refusal_names[i] == s) return static_cast<refusal>(i);
  return std::nullopt;
}

std::ostream& operator<<(std::ostream& os, refusal r) { return os << to_string(r); }

transition_result to_transition_result(const redis_reply& r) {
  transition_result out;
  if (r.is_error()) throw std::runtime_error("redis script error: " + r.str);
  if (r.elements.empty()) throw std::runtime_error("redis script: empty reply");
  auto head = r.elements[0].as_string();
  if (head != "ok" && head != "err") throw std::runtime_error("redis script: answer '" + head + "'");
  out.ok = head == "ok";
  if (out.ok) {
    if (r.elements.size() > 1) out.state = r.elements[1].as_string();
    if (r.elements.size() > 2) out.attempt = r.elements[2].as_integer();
    if (r.elements.size() > 3) out.worker = r.elements[3].as_string();
    if (r.elements.size() > 4) out.record = to_record(r.elements[4]);
  } else {
    if (r.elements.size() < 2) throw std::runtime_error("redis script: a refusal without a reason");
    out.reason = refusal_of(r.elements[1]);
    if (r.elements.size() > 2) out.state = r.elements[2].as_string();
  }
  return out;
}

store::store(redis_client& redis, std::string prefix)
    : redis_(redis), keys_(std::move(prefix)), head_keys_(store_lua::head_keys(keys_)) {
  for (const auto& s : store_scripts()) shas_.push_back(sha1_hex(s));
}

std::vector<std::string> store::job_keys(job_id id) const { return {keys_.job(id), keys_.job_events(id)}; }

void store::set_replication(int replicas, std::chrono::milliseconds timeout,
                            std::chrono::milliseconds pause) {
  wait_replicas_ = replicas;
  wait_timeout_ = timeout;
  wait_pause_ = pause;
}

net::awaitable<redis_reply> store::run_script(const std::vector<std::string>& cmd, bool wait) {
  if (!wait) co_return co_await redis_.async_exec(cmd);
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(cmd);
  cmds.push_back(redis_cmd("WAIT", std::to_string(wait_replicas_), std::to_string(wait_timeout_.count())));
  auto replies = co_await redis_.async_pipeline(std::move(cmds));
  const auto& acked = replies.at(1);
  if (acked.is_error() || acked.integer < wait_replicas_) {
    ++short_waits_;
    wait_paused_until_ = std::chrono::steady_clock::now() + wait_pause_;
    // One line per pause at most: while the replicas are away this repeats every `pause`.
    std::string answer = acked.str;
    if (!acked.is_error()) answer = std::to_string(acked.integer);
    log::warn("redis replicas behind: WAIT {} {} answered {}; not waiting for {} ms short_waits={}",
              wait_replicas_, wait_timeout_.count(), answer, wait_pause_.count(), short_waits_);
  }
  co_return std::move(replies.front());
}

net::awaitable<redis_reply> store::eval(int script, std::vector<std::string> keys,
                                        std::vector<std::string> args) {
  std::vector<std::string> cmd;
  const bool fenced = !fence_.empty();
  cmd.reserve(6 + head_keys_.size() + keys.size() + args.size());
  cmd.push_back("EVALSHA");
  cmd.push_back(shas_[script]);
  cmd.push_back(std::to_string(head_keys_.size() + keys.size() + (fenced ? 1 : 0)));
  cmd.insert(cmd.end(), head_keys_.begin(), head_keys_.end());
  for (auto& k : keys) cmd.push_back(std::move(k));
  if (fenced) cmd.push_back(keys_.daemon_epoch());  // the last KEY (store_scripts.cpp, Fence)
  cmd.push_back(prefix());
  for (auto& a : args) cmd.push_back(std::move(a));
  cmd.push_back(fence_);  // the last ARGV (store_scripts.cpp, Fence)
  const bool wait = wait_replicas_ > 0 && std::chrono::steady_clock::now() >= wait_paused_until_;
  auto r = co_await run_script(cmd, wait);
  if (r.is_error() && r.str.rfind("NOSCRIPT", 0) == 0) {
    // First use on this server (or it restarted): load the script and run it once by value.
    cmd[0] = "EVAL";
    cmd[1] = store_scripts()[script];
    r = co_await run_script(cmd, wait);
  }
  if (r.is_error() && r.str.rfind("FENCED", 0) == 0) {
    if (on_fenced) on_fenced(r.str);
    throw fenced_error(r.str);
  }
  co_return r;
}

net::awaitable<transition_result> store::eval_result(int script, std::vector<std::string> keys,
                                                     std::vector<std::string> args) {
  co_return to_transition_result(co_await eval(script, std::move(keys), std::move(args)));
}

namespace {
std::string fmt_lease(double lease_s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", lease_s);
  return buf;
}

// create's KEYS after the head: the owner's job index, then the parent's hash and children set of
// each job that has a parent; and its ARGV after the prefix.
struct create_call {
  std::vector<std::string> keys, args;
};
create_call create_args(const keys& k, const std::string& owner, std::vector<new_job>& jobs) {
  create_call c;
  c.keys.reserve(1 + jobs.size() * 2);
  c.keys.push_back(k.user_jobs(owner));
  c.args.reserve(2 + jobs.size() * 12);
  c.args.push_back(owner);
  c.args.push_back(std::to_string(jobs.size()));
  for (auto& j : jobs) {
    if (j.parent) {
      c.keys.push_back(k.job(*j.parent));
      c.keys.push_back(k.job_children(*j.parent));
    }
    c.args.push_back(std::move(j.jobtype));
    c.args.push_back(std::move(j.config));
    c.args.push_back(std::move(j.howfig));
    c.args.push_back(std::to_string(j.priority));
    c.args.push_back(j.parent ? std::to_string(*j.parent) : "");
    c.args.push_back(std::to_string(j.max_attempts));
    c.args.push_back(std::move(j.session));
    c.args.push_back(j.hold ? "1" : "");
    std::string deps;
    for (const auto& d : j.after) {
      if (!deps.empty()) deps += ',';
      deps += d.local_index ? "#" + std::to_string(d.local_index) : std::to_string(d.id);
      deps += d.any ? 'y' : 'a';
    }
    c.args.push_back(std::move(deps));
    c.args.push_back(!j.array_index ? "" : j.array ? std::to_string(j.array) : "#");
    c.args.push_back(j.array_index ? std::to_string(*j.array_index) : "");
    c.args.push_back(std::move(j.sites));
  }
  return c;
}

create_result to_create_result(const redis_reply& r) {
  if (r.is_error()) throw std::runtime_error("redis create: " + r.str);
  create_result out;
  if (r.elements.size() >= 2 && r.elements[0].as_string() == "err") {
    out.reason = refusal_of(r.elements[1]);
    if (r.elements.size() > 2) out.parent = r.elements[2].as_string();
    return out;
  }
  if (r.elements.size() < 4 || r.elements[0].as_string() != "ok")
    throw std::runtime_error("redis create: unexpected answer");
  out.ok = true;
  for (long long id = r.elements[1].as_integer(); id <= r.elements[2].as_integer(); ++id)
    out.ids.push_back(id);
  out.time = r.elements[3].as_string();
  if (r.elements.size() > 4) {
    for (const auto& st : r.elements[4].elements) {
      auto parsed = parse_job_state(st.as_string());
      if (!parsed) throw std::runtime_error("redis create: unknown state '" + st.as_string() + "'");
      out.states.push_back(*parsed);
    }
  }
  if (out.states.size() != out.ids.size())
    throw std::runtime_error("redis create: states do not match the jobs");
  return out;
}

// Each report kind's ARGV group in the reports script: op id attempt worker a b c d e. The one-job
// scripts (start, progress, finish) take the same values without the op and the padding.
void report_args(std::vector<std::string>& a, store::start_report&& q) {
  a.insert(a.end(), {"s", std::to_string(q.id), std::to_string(q.attempt), std::move(q.worker),
                     std::move(q.host), std::move(q.rundir), std::to_string(q.pid), "", ""});
}
void report_args(std::vector<std::string>& a, store::progress_report&& q) {
  a.insert(a.end(),
           {"p", std::to_string(q.id), std::to_string(q.attempt), std::move(q.worker), std::move(q.message),
            q.done ? std::to_string(*q.done) : "", q.total ? std::to_string(*q.total) : "", "", ""});
}
void report_args(std::vector<std::string>& a, store::finish_report&& q) {
  a.insert(a.end(), {"f", std::to_string(q.id), std::to_string(q.attempt), std::move(q.worker),
                     std::string(to_string(q.target)), std::to_string(q.return_status), std::move(q.prefix),
                     std::move(q.message), ""});
}
// 'l' (or 'L': the worker stopped at the cap): a offset, b next, c cap, d text, e the lines' end
// offsets ("e1,e2,..."; empty: not sent).
void report_args(std::vector<std::string>& a, store::log_report&& q) {
  std::string ends;
  for (auto e : q.ends) {
    if (!ends.empty()) ends += ',';
    ends += std::to_string(e);
  }
  a.insert(a.end(), {q.capped ? "L" : "l", std::to_string(q.id), std::to_string(q.attempt),
                     std::move(q.worker), q.offset ? std::to_string(*q.offset) : "", std::to_string(q.next),
                     std::to_string(q.cap), std::move(q.text), std::move(ends)});
}
// One report as its one-job script's ARGV: the group without the op (and the padding).
template <class R>
std::vector<std::string> one_report_args(R&& q, std::size_t values) {
  std::vector<std::string> a;
  report_args(a, std::move(q));
  a.erase(a.begin());
  a.resize(values);
  return a;
}
}  // namespace

net::awaitable<create_result> store::async_create(std::string owner, std::vector<new_job> jobs) {
  auto call = create_args(keys_, owner, jobs);
  co_return to_create_result(co_await eval(s_create, std::move(call.keys), std::move(call.args)));
}

net::awaitable<transition_result> store::async_lease(job_id id, std::string worker, double lease_s) {
  return eval_result(s_lease, job_keys(id),
                     {std::to_string(id), std::move(worker), fmt_lease(lease_s), "lease"});
}

net::awaitable<transition_result> store::async_start(job_id id, long long attempt, std::string worker,
                                                     std::string host, std::string rundir, long long pid) {
  return eval_result(
      s_start, job_keys(id),
      one_report_args(start_report{id, attempt, std::move(worker), std::move(host), std::move(rundir), pid},
                      6));
}

net::awaitable<transition_result> store::async_progress(job_id id, long long attempt, std::string worker,
                                                        std::string message, std::optional<long long> done,
                                                        std::optional<long long> total) {
  return eval_result(
      s_progress, job_keys(id),
      one_report_args(progress_report{id, attempt, std::move(worker), std::move(message), done, total}, 6));
}

net::awaitable<transition_result> store::async_finish(job_id id, long long attempt, std::string worker,
                                                      job_state target, int return_status, std::string prefix,
                                                      std::string message) {
  return eval_result(s_finish, job_keys(id),
                     one_report_args(finish_report{id, attempt, std::move(worker), target, return_status,
                                                   std::move(prefix), std::move(message)},
                                     7));
}

net::awaitable<transition_result> store::async_requeue(job_id id, long long attempt, std::string worker,
                                                       requeue_mode mode, std::string reason) {
  return eval_result(s_requeue, job_keys(id),
                     {std::to_string(id), std::to_string(attempt), std::move(worker),
                      std::to_string(static_cast<int>(mode)), std::move(reason)});
}

net::awaitable<transition_result> store::async_cancel(job_id id, std::string by) {
  return eval_result(s_cancel, job_keys(id), {std::to_string(id), std::move(by)});
}

net::awaitable<transition_result> store::async_set_archive(job_id id, bool archived) {
  return eval_result(s_archive, job_keys(id), {std::to_string(id), archived ? "1" : "0"});
}

net::awaitable<transition_result> store::async_delete(job_id id) {
  auto k = job_keys(id);
  k.push_back(keys_.job_log(id));
  k.push_back(keys_.job_children(id));
  return eval_result(s_delete, std::move(k), {std::to_string(id)});
}

net::awaitable<transition_result> store::async_claim(job_id id, std::string worker, double lease_s,
                                                     std::string token_sha256, long long token_ttl_s) {
  auto k = job_keys(id);
  k.push_back(keys_.token(token_sha256));
  return eval_result(s_lease, std::move(k),
                     {std::to_string(id), std::move(worker), fmt_lease(lease_s), "claim",
                      std::move(token_sha256), std::to_string(token_ttl_s)});
}

net::awaitable<transition_result> store::async_release(job_id id, std::string by) {
  return eval_result(s_release, job_keys(id), {std::to_string(id), std::move(by)});
}

namespace {
std::vector<std::string> one_arg(std::size_t n) { return {std::to_string(n)}; }
}  // namespace

net::awaitable<deps_release_result> store::async_deps_release(std::size_t budget) {
  auto r = co_await eval(s_deps_release, std::vector<std::string>(), one_arg(budget));
  if (r.is_error()) throw std::runtime_error("redis deps_release: " + r.str);
  if (r.elements.size() != 4 || r.elements[0].as_string() != "ok")
    throw std::runtime_error("redis deps_release: unexpected answer");
  deps_release_result out;
  out.more = r.elements[1].as_string() == "1";
  out.handled = r.elements[2].as_integer();
  const auto& list = r.elements[3].elements;
  for (std::size_t i = 0; i + 3 < list.size(); i += 4) {
    deps_release_result::ready_job j;
    j.id = std::stoll(list[i].as_string());
    j.priority = std::stoi(list[i + 1].as_string());
    j.owner = list[i + 2].as_string();
    j.sites = list[i + 3].as_string();
    out.ready.push_back(std::move(j));
  }
  co_return out;
}

namespace {
std::vector<transition_result> to_results(const redis_reply& r, std::size_t n, const char* what) {
  if (r.is_error()) throw std::runtime_error(std::string("redis ") + what + ": " + r.str);
  if (r.elements.size() != n)
    throw std::runtime_error(std::string("redis ") + what + ": " + std::to_string(r.elements.size()) +
                             " results for " + std::to_string(n) + " requests");
  std::vector<transition_result> out;
  out.reserve(n);
  for (const auto& e : r.elements) out.push_back(to_transition_result(e));
  return out;
}
}  // namespace

net::awaitable<std::vector<transition_result>> store::async_claim_many(std::vector<claim_request> requests,
                                                                       double lease_s,
                                                                       long long token_ttl_s) {
  if (requests.empty()) co_return std::vector<transition_result>{};
  std::vector<std::string> keys, tokens, args;
  keys.reserve(requests.size() * 3);
  args.reserve(3 + requests.size() * 3);
  args.push_back(fmt_lease(lease_s));
  args.push_back(std::to_string(token_ttl_s));
  args.push_back(std::to_string(requests.size()));
  for (auto& q : requests) {
    keys.push_back(keys_.job(q.id));
    keys.push_back(keys_.job_events(q.id));
    if (!q.token_sha256.empty()) tokens.push_back(keys_.token(q.token_sha256));
    args.push_back(std::to_string(q.id));
    args.push_back(std::move(q.worker));
    args.push_back(std::move(q.token_sha256));
  }
  keys.insert(keys.end(), tokens.begin(), tokens.end());
  auto r = co_await eval(s_lease_many, std::move(keys), std::move(args));
  co_return to_results(r, requests.size(), "lease_many");
}

net::awaitable<std::vector<transition_result>> store::async_restore_leases(std::vector<held_lease> leases,
                                                                           double lease_s, job_id top) {
  std::vector<std::string> keys, args;
  keys.reserve(leases.size() * 2);
  args.reserve(3 + leases.size() * 3);
  args.push_back(fmt_lease(lease_s));
  args.push_back(std::to_string(top));
  args.push_back(std::to_string(leases.size()));
  for (auto& l : leases) {
    keys.push_back(keys_.job(l.id));
    keys.push_back(keys_.job_events(l.id));
    args.push_back(std::to_string(l.id));
    args.push_back(std::move(l.worker));
    args.push_back(std::to_string(l.attempt));
  }
  auto r = co_await eval(s_restore_leases, std::move(keys), std::move(args));
  co_return to_results(r, leases.size(), "restore_leases");
}

net::awaitable<std::vector<transition_result>> store::async_reports(std::vector<report> reports) {
  if (reports.empty()) co_return std::vector<transition_result>{};
  const std::size_t n = reports.size();
  std::vector<std::string> keys, args;
  keys.reserve(n * 2);
  args.reserve(1 + n * 9);
  args.push_back(std::to_string(n));
  for (auto& q : reports) {
    job_id id = std::visit([](const auto& r) { return r.id; }, q);
    keys.push_back(keys_.job(id));
    // A log piece's second key is the job's log stream, where the others have its events.
    keys.push_back(std::holds_alternative<log_report>(q) ? keys_.job_log(id) : keys_.job_events(id));
    std::visit([&](auto&& r) { report_args(args, std::move(r)); }, std::move(q));
  }
  auto r = co_await eval(s_reports, std::move(keys), std::move(args));
  co_return to_results(r, n, "reports");
}

namespace {
// Script arguments, built outside the coroutines (GCC 12 and braced temporaries, docs/building.md#conventions).
std::vector<std::string> recount_init_args(bool force) {
  char now[32];
  std::snprintf(now, sizeof now, "%.3f",
                std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  std::vector<std::string> v;
  v.emplace_back(force ? "1" : "0");
  v.emplace_back(now);
  return v;
}
std::vector<std::string> recount_step_args(std::size_t batch) {
  std::vector<std::string> v;
  v.push_back(std::to_string(batch));
  return v;
}
}  // namespace

net::awaitable<std::string> store::async_recount_start(bool force) {
  auto r = co_await eval(s_recount_init, {}, recount_init_args(force));
  if (r.is_error() || r.elements.size() < 2) throw std::runtime_error("redis recount: " + r.str);
  co_return r.elements[1].as_string();
}

net::awaitable<recount_progress> store::async_recount_step(std::size_t batch) {
  auto r = co_await eval(s_recount_step, {}, recount_step_args(batch));
  if (r.is_error() || r.elements.size() < 3) throw std::runtime_error("redis recount: " + r.str);
  recount_progress out;
  out.done = r.elements[1].as_string() == "complete";
  out.upto = r.elements[2].as_integer();
  co_return out;
}

net::awaitable<long long> store::async_recount_states(bool force, std::size_t batch) {
  co_await async_recount_start(force);
  recount_progress p;
  while (!p.done) p = co_await async_recount_step(batch);
  co_return p.upto;
}

net::awaitable<std::optional<std::map<std::string, long long>>> store::async_state_counts() {
  auto r = co_await redis_.async_exec(redis_cmd("HGETALL", keys_.jobs_by_state()));
  if (r.is_error()) throw std::runtime_error("redis HGETALL: " + r.str);
  std::map<std::string, long long> out;
  bool complete = false;
  for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2) {
    auto f = r.elements[i].as_string();
    if (f == "_rebuild_upto") co_return std::nullopt;
    if (f.rfind('_', 0) == 0) continue;
    if (f == to_string(job_state::ready)) complete = true;
    out[f] = r.elements[i + 1].as_integer();
  }
  if (!complete) co_return std::nullopt;
  // A state newer than the counts (held, waiting: counts written before they existed) has no
  // field until its first job: none is 0.
  for (auto st : all_job_states()) out.emplace(std::string(to_string(st)), 0);
  co_return out;
}

net::awaitable<void> store::async_load_scripts() {
  std::vector<std::vector<std::string>> cmds;
  for (const auto& s : store_scripts()) cmds.push_back(redis_cmd("SCRIPT", "LOAD", s));
  auto replies = co_await redis_.async_pipeline(std::move(cmds));
  for (const auto& r : replies)
    if (r.is_error()) throw std::runtime_error("SCRIPT LOAD: " + r.str);
}

std::vector<std::string> import_command(const keys& k, const std::vector<imported_job>& jobs) {
  std::vector<std::string> cmd{"EVAL", store_scripts()[s_import]};
  auto head = head_keys(k);
  cmd.push_back(std::to_string(head.size()));
  cmd.insert(cmd.end(), head.begin(), head.end());
  cmd.push_back(k.prefix());
  cmd.push_back(std::to_string(jobs.size()));
  for (const auto& j : jobs) {
    cmd.push_back(std::to_string(j.id));
    cmd.push_back(j.owner);
    cmd.push_back(j.parent ? std::to_string(*j.parent) : "");
    cmd.push_back(std::string(to_string(j.state)));
    cmd.push_back(std::to_string(j.fields.size()));
    for (const auto& [f, v] : j.fields) {
      cmd.push_back(f);
      cmd.push_back(v);
    }
  }
  cmd.push_back("");  // no fence (the last ARGV)
  return cmd;
}

std::vector<std::string> import_answer(const redis_reply& r, std::size_t n) {
  if (r.is_error()) throw std::runtime_error("redis import: " + r.str);
  if (r.elements.size() != n) throw std::runtime_error("redis import: unexpected answer");
  std::vector<std::string> out;
  for (const auto& e : r.elements) out.push_back(e.as_string());
  return out;
}

net::awaitable<std::optional<job_record>> store::async_get(job_id id) {
  std::vector<std::string> cmd;
  cmd.push_back("HGETALL");
  cmd.push_back(keys_.job(id));
  auto r = co_await redis_.async_exec(std::move(cmd));
  if (r.elements.empty()) co_return std::nullopt;
  co_return to_record(r);
}

}  // namespace descprod
