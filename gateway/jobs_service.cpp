// The jobs service (jobs_service.hpp). GCC 12 coroutine rules (docs/building.md#conventions): no
// braced temporaries and no lambdas in coroutine bodies, so commands are built by the plain
// helpers at the top.
#include "gateway/jobs_service.hpp"

#include <algorithm>
#include <map>
#include <set>

#include "core/crypto.hpp"
#include "core/keys.hpp"
#include "core/log.hpp"
#include "core/protocol.hpp"
#include "core/text.hpp"
#include "gateway/guard.hpp"
#include "gateway/handler_detail.hpp"
#include "gateway/job_filter.hpp"
#include "gateway/notices.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // see handler.cpp
#endif

namespace descprod::gateway::jobs_service {

using detail::keys_of;

namespace {

using command = std::vector<std::string>;
using commands = std::vector<command>;

std::string field_of(const job_record& r, const char* k) {
  auto it = r.find(k);
  return it == r.end() ? std::string() : it->second;
}

api_error job_not_found(job_id id) { return not_found("job " + std::to_string(id) + " not found"); }

// The requests [first, first + n) as the store's new jobs. A dependency on an earlier job of the
// request ("#k") is that job's ID once created (`created`, the IDs so far), or its place in this
// chunk (local_index, 1-based).
// The session each new job gets (DESCprod's session IDs): its parent's, else its creator's.
struct job_sessions {
  std::string own;
  std::map<job_id, std::string> of_parent;
  std::string of(const job_request& r) const {
    if (!r.parent) return own;
    auto it = of_parent.find(*r.parent);
    return it == of_parent.end() ? std::string() : it->second;
  }
};

std::vector<new_job> to_new_jobs(const std::vector<job_request>& reqs, std::size_t first, std::size_t n,
                                 const std::vector<job_id>& created, const job_sessions& sessions) {
  std::vector<new_job> out;
  out.reserve(n);
  for (std::size_t i = first; i < first + n; ++i) {
    new_job j;
    j.jobtype = reqs[i].jobtype;
    j.config = reqs[i].config;
    j.howfig = reqs[i].howfig;
    j.priority = reqs[i].priority;
    j.parent = reqs[i].parent;
    j.max_attempts = reqs[i].max_attempts;
    j.hold = reqs[i].hold;
    j.sites = reqs[i].sites;
    j.session = sessions.of(reqs[i]);
    // An array's first chunk makes its first job the array's ID; later chunks name it.
    j.array_index = reqs[i].array_index;
    if (j.array_index && !created.empty()) j.array = created.front();
    j.after.reserve(reqs[i].after.size());
    for (const auto& d : reqs[i].after) {
      job_dependency dep;
      dep.any = d.any;
      if (!d.entry) dep.id = d.id;
      else if (*d.entry < first) dep.id = created.at(*d.entry);
      else dep.local_index = *d.entry - first + 1;
      j.after.push_back(dep);
    }
    out.push_back(std::move(j));
  }
  return out;
}

// The distinct job IDs the requests name as dependencies, each with the index of its first use.
std::vector<std::pair<job_id, std::size_t>> distinct_dependencies(const std::vector<job_request>& reqs) {
  std::vector<std::pair<job_id, std::size_t>> out;
  std::set<job_id> seen;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    for (const auto& d : reqs[i].after)
      if (!d.entry && seen.insert(d.id).second) out.emplace_back(d.id, i);
  }
  return out;
}

api_error dependency_not_found(job_id id, bool bulk, std::size_t index) {
  // 400, not 404: the request names it (docs/api.md, Dependencies); another user's job reads the
  // same as none.
  auto e = bad_request("job " + std::to_string(id) + " named in after/after_any is not one of your jobs");
  if (bulk) e.detail = "jobs[" + std::to_string(index) + "]: " + e.detail;
  return e;
}

// The sites a request's jobs ask for must be the service's (gateway.sites: a closed list keeps the
// daemon's lanes few), and a request names at most max_request_dependencies edges in all (an
// array copies its after list to every job): the create scripts' work stays bounded.
std::optional<api_error> check_sites_and_edges(const std::vector<std::string>& allowed,
                                               const std::vector<job_request>& reqs, bool bulk) {
  std::size_t edges = 0;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    edges += reqs[i].after.size();
    if (reqs[i].sites.empty()) continue;
    for (const auto& site : split(reqs[i].sites, ',')) {
      if (std::find(allowed.begin(), allowed.end(), site) == allowed.end()) {
        std::string known;
        for (const auto& a : allowed) known += (known.empty() ? "" : ", ") + a;
        auto e =
            bad_request("site '" + site + "' is not one of this service's sites (" +
                        (known.empty() ? std::string("none are configured: gateway.sites") : known) + ")");
        if (bulk) e.detail = "jobs[" + std::to_string(i) + "]: " + e.detail;
        return e;
      }
    }
  }
  if (edges > max_request_dependencies)
    return bad_request("the request names " + std::to_string(edges) + " dependencies in all; at most " +
                       std::to_string(max_request_dependencies) +
                       " (after and after_any of every job): split it");
  return std::nullopt;
}

// DESCprod's batch howfigs (core/job.hpp, batch_howfig), where the service submits pilots: a
// malformed one is refused; a pmb job that wants an allocation of its own is pinned to one (its
// `sites` say so; a site of its own is meaningless then, so asking for sites is refused). A pmbs
// job is not pinned: it runs descprod-pmbs, which makes the pmb child that is.
std::optional<api_error> pin_batch_howfigs(bool enabled, std::vector<job_request>& reqs, bool bulk) {
  if (!enabled) return std::nullopt;
  std::string why;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    auto b = parse_batch_howfig(reqs[i].howfig, why);
    std::optional<api_error> e;
    if (!why.empty()) e = bad_request(why);
    else if (b && !b->subjob && b->own_allocation() && !reqs[i].sites.empty())
      e = bad_request("howfig '" + b->head +
                      "' runs the job in a Slurm allocation of its own; it cannot also ask for sites");
    if (e) {
      if (bulk) e->detail = "jobs[" + std::to_string(i) + "]: " + e->detail;
      return e;
    }
    if (b && !b->subjob && b->own_allocation()) reqs[i].sites = std::string(pinned_sites);
  }
  return std::nullopt;
}

bool needs_script_path(const job_request& r) {
  return r.parent || r.hold || !r.after.empty() || r.array_index.has_value() || !r.sites.empty();
}

// The distinct parents named by the requests, each with the index of its first use.
std::vector<std::pair<job_id, std::size_t>> distinct_parents(const std::vector<job_request>& reqs) {
  std::vector<std::pair<job_id, std::size_t>> out;
  std::set<job_id> seen;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    if (reqs[i].parent && seen.insert(*reqs[i].parent).second) out.emplace_back(*reqs[i].parent, i);
  }
  return out;
}

// HMGET descname session of each parent.
commands parent_cmds(const keys& k, const std::vector<std::pair<job_id, std::size_t>>& ps) {
  commands cmds;
  cmds.reserve(ps.size());
  for (const auto& p : ps) cmds.push_back(redis_cmd("HMGET", k.job(p.first), "descname", "session"));
  return cmds;
}

commands parent_owner_cmds(const keys& k, const std::vector<std::pair<job_id, std::size_t>>& ps) {
  commands cmds;
  cmds.reserve(ps.size());
  for (const auto& p : ps) cmds.push_back(redis_cmd("HGET", k.job(p.first), "descname"));
  return cmds;
}

api_error parent_not_found(job_id parent, bool bulk, std::size_t index) {
  auto e = not_found("parent job " + std::to_string(parent) + " not found");
  if (bulk) e.detail = "jobs[" + std::to_string(index) + "]: " + e.detail;
  return e;
}

api_error partial_create(const std::vector<job_id>& created, std::size_t requested, const std::string& why) {
  return unavailable("created " + std::to_string(created.size()) + " of " + std::to_string(requested) +
                     " jobs (ids " + std::to_string(created.front()) + ".." + std::to_string(created.back()) +
                     ") before " + why + "; submit the remaining jobs again");
}

// Tells the daemon of the ready jobs among ids (reqs[first..]); states: each job's state at its
// creation (empty: all ready). Held, waiting and cancelled jobs are not on the queue.
void notify_daemon(gateway_context& ctx, const std::vector<job_id>& ids, const std::vector<job_request>& reqs,
                   std::size_t first, const std::string& owner, const std::vector<job_state>& states = {}) {
  std::vector<job_id> ready;
  std::vector<job_request> ready_reqs;
  const bool all_ready = states.empty() || std::all_of(states.begin(), states.end(),
                                                       [](job_state s) { return s == job_state::ready; });
  if (!all_ready) {
    for (std::size_t i = 0; i < ids.size() && i < states.size(); ++i) {
      if (states[i] != job_state::ready) continue;
      ready.push_back(ids[i]);
      ready_reqs.push_back(first + i < reqs.size() ? reqs[first + i] : job_request{});
    }
    if (ready.empty()) return;
  }
  const auto& n_ids = all_ready ? ids : ready;
  const auto& n_reqs = all_ready ? reqs : ready_reqs;
  const std::size_t n_first = all_ready ? first : 0;
  if (ctx.notices) {
    for (std::size_t i = 0; i < n_ids.size(); ++i)
      ctx.notices->add(n_ids[i], n_first + i < n_reqs.size() ? n_reqs[n_first + i].priority : 0, owner,
                       n_first + i < n_reqs.size() ? n_reqs[n_first + i].sites : std::string());
    return;
  }
  if (!ctx.send_to_daemon) return;
  auto frames = protocol::encode(protocol::submitted, submitted_body(n_ids, n_reqs, n_first, owner));
  if (!ctx.send_to_daemon(frames))
    log::warn("daemon notice not queued (the daemon finds the jobs in Redis) first_id={} count={}",
              n_ids.empty() ? 0 : n_ids.front(), n_ids.size());
}

void send_cancel(gateway_context& ctx, job_id id) {
  if (!ctx.send_to_daemon) return;
  boost::json::object body;
  body["job"] = id;
  if (!ctx.send_to_daemon(protocol::encode(protocol::cancel, body)))
    log::warn("daemon cancel notice not queued job_id={}", id);
}

commands hgetall_cmds(const keys& k, const std::vector<std::string>& ids) {
  commands cmds;
  cmds.reserve(ids.size());
  for (const auto& id : ids) cmds.push_back(redis_cmd("HGETALL", k.job(id)));
  return cmds;
}

// HMGET of the fields a list query reads, for a chunk of job IDs.
commands plan_cmds(const keys& k, const std::vector<job_id>& ids, const field_plan& plan) {
  commands cmds;
  cmds.reserve(ids.size());
  for (auto id : ids) {
    command c;
    c.reserve(plan.names().size() + 2);
    c.emplace_back("HMGET");
    c.push_back(k.job(id));
    for (const auto& f : plan.names()) c.push_back(f);
    cmds.push_back(std::move(c));
  }
  return cmds;
}

// The owner's find index entries of a chunk of jobs: one HMGET.
command find_cmd(const keys& k, const std::string& owner, const std::vector<job_id>& ids) {
  command c;
  c.reserve(ids.size() + 2);
  c.emplace_back("HMGET");
  c.push_back(k.user_find(owner));
  for (auto id : ids) c.push_back(std::to_string(id));
  return c;
}

// The find index's entries as the plan's per-job HMGET replies (an ID without an entry is gone:
// a nil reply, which matches nothing).
std::vector<redis_reply> fields_from_find(const field_plan& plan, const redis_reply& found) {
  std::vector<redis_reply> out(found.elements.size());
  for (std::size_t i = 0; i < found.elements.size(); ++i)
    if (!found.elements[i].is_nil()) out[i] = plan.from_find(found.elements[i].str);
  return out;
}

std::vector<std::string> id_strings(const std::vector<field_plan::scanned>& jobs, std::size_t first,
                                    std::size_t n) {
  std::vector<std::string> out;
  for (std::size_t i = first; i < jobs.size() && out.size() < n; ++i)
    out.push_back(std::to_string(jobs[i].id));
  return out;
}

commands state_cmds(const keys& k, const std::vector<std::string>& ids, std::size_t first, std::size_t n) {
  commands cmds;
  cmds.reserve(n);
  for (std::size_t i = first; i < first + n && i < ids.size(); ++i)
    cmds.push_back(redis_cmd("HGET", k.job(ids[i]), "state"));
  return cmds;
}

// Children IDs, newest (highest) first.
std::vector<std::string> sorted_ids(const redis_reply& members) {
  std::vector<std::pair<long long, std::string>> v;
  v.reserve(members.elements.size());
  for (const auto& m : members.elements) v.emplace_back(m.as_integer(), m.as_string());
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  out.reserve(v.size());
  for (auto& p : v) out.push_back(std::move(p.second));
  return out;
}

// SMEMBERS, or a sample of max_children distinct members when the set is larger.
command children_cmd(const std::string& key, long long card) {
  if (card > static_cast<long long>(max_children))
    return redis_cmd("SRANDMEMBER", key, std::to_string(max_children));
  return redis_cmd("SMEMBERS", key);
}

api_error refused_report(job_id id, const transition_result& tr, std::string_view what) {
  if (tr.reason == refusal::stale)
    return conflict("stale: the " + std::string(what) +
                    " report does not match the job's current attempt or claim; job " + std::to_string(id) +
                    " is " + tr.state);
  if (tr.reason == refusal::illegal)
    return conflict("illegal: job " + std::to_string(id) + " is " + tr.state + "; a " + std::string(what) +
                    " report is not accepted in that state");
  return conflict(std::string(to_string(tr.reason)) + ": job " + std::to_string(id) + " is " + tr.state);
}

std::string_view report_name(const client_report& r) {
  if (std::holds_alternative<started_report>(r)) return "started";
  if (std::holds_alternative<progress_report>(r)) return "progress";
  return "finished";
}

// A chunk's create, with a Redis failure caught (a coroutine cannot co_await in a catch block).
struct chunk_outcome {
  create_result created;
  std::optional<std::string> redis_failure;
};
net::awaitable<chunk_outcome> create_chunk(gateway_context& ctx, std::string owner,
                                           std::vector<new_job> jobs) {
  chunk_outcome out;
  try {
    out.created = co_await ctx.jobs->async_create(std::move(owner), std::move(jobs));
  } catch (const boost::system::system_error& e) {
    out.redis_failure = e.code().message();
  }
  co_return out;
}

// Where GET /api/jobs takes job IDs from, in the answer's ID order, a chunk at a time: a user's
// index (the sorted set user:<name>:jobs, score = ID), every ID from the counter down (or up) for
// an admin's owner=*, or a parent's children (read once, sorted).
class id_source {
 public:
  enum class kind { user_index, all, list };
  id_source(kind k, bool descending) : kind_(k), descending_(descending) {}
  std::string index;            // user_index: the sorted set
  job_id top = 0;               // all: the highest ID given so far
  std::vector<job_id> ids;      // list: every ID, in order
  std::optional<job_id> start;  // continue after this ID
  bool done() const { return done_; }

  net::awaitable<std::vector<job_id>> next(gateway_context& ctx) {
    std::vector<job_id> out;
    if (done_) co_return out;
    if (kind_ == kind::user_index) {
      std::string from = start ? "(" + std::to_string(*start) : std::string(descending_ ? "+inf" : "-inf");
      std::string to = descending_ ? "-inf" : "+inf";
      auto r =
          co_await ctx.redis->async_exec(redis_cmd(descending_ ? "ZREVRANGEBYSCORE" : "ZRANGEBYSCORE", index,
                                                   from, to, "LIMIT", "0", std::to_string(chunk_)));
      for (const auto& e : r.elements)
        if (auto id = parse_job_id_text(e.str)) out.push_back(*id);
      if (r.elements.size() < chunk_) done_ = true;
    } else if (kind_ == kind::all) {
      job_id at = start ? (descending_ ? *start - 1 : *start + 1) : (descending_ ? top : 1);
      while (out.size() < chunk_ && at >= 1 && at <= top) {
        out.push_back(at);
        at += descending_ ? -1 : 1;
      }
      if (at < 1 || at > top) done_ = true;
    } else {
      std::size_t i = 0;
      if (start) {
        // After `start` in the list's order (it may have been deleted meanwhile).
        while (i < ids.size() && (descending_ ? ids[i] >= *start : ids[i] <= *start)) ++i;
      }
      for (; i < ids.size() && out.size() < chunk_; ++i) out.push_back(ids[i]);
      if (i >= ids.size()) done_ = true;
    }
    if (!out.empty()) start = out.back();
    else done_ = true;
    // A page by cursor usually ends within the first chunk; a whole scan takes fewer, larger ones.
    chunk_ = std::min(chunk_ * 2, max_chunk);
    co_return out;
  }

 private:
  static constexpr std::size_t max_chunk = 16 * bulk_chunk_jobs;
  kind kind_;
  bool descending_;
  bool done_ = false;
  std::size_t chunk_ = bulk_chunk_jobs;
};

void sort_matches(const list_query& q, std::vector<field_plan::scanned>& v) {
  std::sort(v.begin(), v.end(), [&q](const field_plan::scanned& a, const field_plan::scanned& b) {
    return sorts_before(q, a, b);
  });
}

// A page of IDs already in the answer's order: after the cursor (or from the offset), `limit` of
// them; returns where the next page starts (none at the end).
std::optional<list_cursor> plain_page(const list_query& q, const std::vector<job_id>& ids,
                                      std::vector<std::string>& page) {
  std::size_t i = 0;
  if (q.cursor) {
    // After the cursor's ID, also when that job has gone meanwhile.
    job_id c = q.cursor->id;
    while (i < ids.size() && (q.descending ? ids[i] >= c : ids[i] <= c)) ++i;
  } else {
    i = static_cast<std::size_t>(std::min<long long>(q.offset, static_cast<long long>(ids.size())));
  }
  for (; i < ids.size() && page.size() < static_cast<std::size_t>(q.limit); ++i)
    page.push_back(std::to_string(ids[i]));
  if (i >= ids.size() || page.empty()) return std::nullopt;
  list_cursor at;
  at.id = ids[i - 1];
  return at;
}

// Children IDs as job IDs, newest first.
std::vector<job_id> child_ids(const redis_reply& members) {
  std::vector<job_id> v;
  for (const auto& m : members.elements)
    if (auto id = parse_job_id_text(m.str)) v.push_back(*id);
  std::sort(v.begin(), v.end(), std::greater<>());
  return v;
}

// A place among the running scans, held while a scan runs (the io_context's one thread: no lock).
class scan_admission {
 public:
  scan_admission(gateway_context& ctx, const std::string& user) : ctx_(ctx), user_(user) {
    auto it = ctx_.scans_by_user.find(user_);
    int mine = it == ctx_.scans_by_user.end() ? 0 : it->second;
    if (mine >= max_scans_per_user || ctx_.scans_running >= max_scans) return;
    ++ctx_.scans_by_user[user_];
    ++ctx_.scans_running;
    admitted_ = true;
  }
  ~scan_admission() {
    if (!admitted_) return;
    --ctx_.scans_running;
    auto it = ctx_.scans_by_user.find(user_);
    if (it != ctx_.scans_by_user.end() && --it->second <= 0) ctx_.scans_by_user.erase(it);
  }
  scan_admission(const scan_admission&) = delete;
  scan_admission& operator=(const scan_admission&) = delete;
  bool admitted() const { return admitted_; }

 private:
  gateway_context& ctx_;
  std::string user_;
  bool admitted_ = false;
};

api_error too_many_scans(bool mine) {
  auto e = make_error(errc::too_many_requests,
                      mine ? "you have " + std::to_string(max_scans_per_user) +
                                 " job searches running; wait for them (or page with the cursor)"
                           : "too many job searches are running; try again in a moment");
  e.retry_after_s = 1;
  return e;
}

// Scans a source with the query's filters, paging the matches. With a sort by ID the source is
// in answer order, so a cursor starts the source after it and the scan ends once the page is
// full; without a cursor it runs through (at most filter_scan_window jobs) to count `total`.
// Other sorts read every match (up to the window), then sort and page.
net::awaitable<job_list> scan_jobs(gateway_context& ctx, id_source src, list_query q,
                                   std::string find_owner) {
  const keys& k = keys_of(ctx);
  field_plan plan(q);
  job_list out;
  std::vector<field_plan::scanned> matches;
  bool by_id = q.sort == list_sort::id;
  bool counting = !q.cursor;  // the first page counts every match (the window allowing)
  auto wanted = static_cast<std::size_t>(q.offset) + static_cast<std::size_t>(q.limit) + 1;
  if (by_id && q.cursor) src.start = q.cursor->id;
  std::size_t scanned = 0;
  long long matched = 0;
  while (!src.done() && scanned < filter_scan_window) {
    auto ids = co_await src.next(ctx);
    if (ids.empty()) break;
    if (scanned + ids.size() > filter_scan_window) ids.resize(filter_scan_window - scanned);
    scanned += ids.size();
    // The fields of the chunk's jobs: from the owner's find index (one command), else per job.
    std::vector<redis_reply> fields;
    if (!find_owner.empty()) {
      auto found = co_await ctx.redis->async_exec(find_cmd(k, find_owner, ids));
      fields = fields_from_find(plan, found);
    } else {
      fields = co_await ctx.redis->async_pipeline(plan_cmds(k, ids, plan));
    }
    for (std::size_t i = 0; i < ids.size() && i < fields.size(); ++i) {
      auto m = plan.match(ids[i], fields[i]);
      if (!m) continue;
      ++matched;
      if (by_id || after_cursor(q, *m)) matches.push_back(*m);
    }
    if (by_id && !counting && matches.size() >= wanted) break;
  }
  out.scanned = scanned;
  out.truncated = !src.done() && scanned >= filter_scan_window;
  if (!by_id) sort_matches(q, matches);
  if (counting || !by_id) out.total = matched;
  auto first =
      static_cast<std::size_t>(std::min<long long>(q.offset, static_cast<long long>(matches.size())));
  auto page = id_strings(matches, first, static_cast<std::size_t>(q.limit));
  std::size_t last = first + page.size();
  if (last < matches.size() || (by_id && !src.done() && !page.empty())) {
    // More matches follow, or may (the scan stopped early): the next page starts after this one.
    list_cursor c;
    c.id = matches[last - 1].id;
    c.value = matches[last - 1].key;
    out.next = c;
  } else if (by_id && out.truncated && src.start) {
    // The window ended before the page filled: continue the scan after the last job looked at.
    list_cursor c;
    c.id = *src.start;
    out.next = c;
  }
  out.jobs = records_from_replies(co_await ctx.redis->async_pipeline(hgetall_cmds(k, page)));
  co_return out;
}

// How the jobs of a set of IDs (a parent's children, an array's jobs) stand.
net::awaitable<children_rollup> rollup_of(gateway_context& ctx, std::string key, long long card) {
  const keys& k = keys_of(ctx);
  auto members = co_await ctx.redis->async_exec(children_cmd(key, card));
  auto ids = sorted_ids(members);
  children_rollup out;
  out.truncated = card > static_cast<long long>(max_children);
  out.states.reserve(ids.size());
  for (std::size_t start = 0; start < ids.size(); start += bulk_chunk_jobs) {
    auto replies = co_await ctx.redis->async_pipeline(
        state_cmds(k, ids, start, std::min(bulk_chunk_jobs, ids.size() - start)));
    for (const auto& r : replies) out.states.push_back(r.is_nil() ? std::string() : r.as_string());
  }
  co_return out;
}

}  // namespace

std::vector<job_event> events_of(const redis_reply& xrange) {
  std::vector<job_event> out;
  if (xrange.type != redis_reply::kind::array) return out;
  out.reserve(xrange.elements.size());
  for (const auto& entry : xrange.elements) {
    if (entry.type != redis_reply::kind::array || entry.elements.size() != 2) continue;
    job_event e;
    e.stream_id = entry.elements[0].as_string();
    e.fields = record_from_reply(entry.elements[1]);
    out.push_back(std::move(e));
  }
  return out;
}

void append_entry_lines(const redis_reply& fields, std::vector<std::string>& out) {
  for (std::size_t i = 0; i + 1 < fields.elements.size(); i += 2) {
    const auto& name = fields.elements[i].str;
    const auto& value = fields.elements[i + 1].str;
    if (name == "line") {
      out.push_back(value);
      return;
    }
    if (name == "text") {
      std::size_t start = 0;
      while (start < value.size()) {
        auto nl = value.find('\n', start);
        if (nl == std::string::npos) nl = value.size();
        out.emplace_back(value, start, nl - start);
        start = nl + 1;
      }
      return;
    }
  }
}

std::vector<std::string> log_lines_of(const redis_reply& xrevrange) {
  std::vector<std::string> lines;
  if (xrevrange.type != redis_reply::kind::array) return lines;
  lines.reserve(xrevrange.elements.size());
  for (auto it = xrevrange.elements.rbegin(); it != xrevrange.elements.rend(); ++it) {
    if (it->type != redis_reply::kind::array || it->elements.size() != 2) continue;
    append_entry_lines(it->elements[1], lines);
  }
  return lines;
}

net::awaitable<std::string> owner_of(gateway_context& ctx, job_id id) {
  auto r = co_await ctx.redis->async_exec(redis_cmd("HGET", keys_of(ctx).job(id), "descname"));
  co_return r.is_nil() ? std::string() : r.as_string();
}

net::awaitable<std::string> owner_of_set_member(gateway_context& ctx, std::string key) {
  auto m = co_await ctx.redis->async_exec(redis_cmd("SRANDMEMBER", key));
  if (m.is_nil() || m.is_error()) co_return std::string();
  auto id = parse_job_id_text(m.as_string());
  if (!id) co_return std::string();
  co_return co_await owner_of(ctx, *id);
}

namespace {
constexpr std::chrono::seconds quota_cache_ttl{2};
constexpr long long submit_window_s = 60;
}  // namespace

net::awaitable<user_quota> quota_for(gateway_context& ctx, const std::string& user) {
  auto now = std::chrono::steady_clock::now();
  auto it = ctx.quotas.find(user);
  if (it != ctx.quotas.end() && now - it->second.read < quota_cache_ttl) co_return it->second.quota;
  command get{"HMGET", keys_of(ctx).user_quota(user)};
  for (const auto& f : quota_fields()) get.push_back(f);
  auto reply = co_await ctx.redis->async_exec(std::move(get));
  auto q = quota_of(reply);
  if (reply.elements.size() == quota_fields().size() && reply.elements[0].is_nil()) {
    // No share of the user's own: the largest of its pools' (descprod-admin pool share), as the
    // daemon weighs the user.
    command all{"HGETALL", keys_of(ctx).pool_shares()};
    auto shares = co_await ctx.redis->async_exec(std::move(all));
    auto pool_map = pool_shares_of(shares);
    std::vector<std::pair<std::string, double>> pools(pool_map.begin(), pool_map.end());
    if (!pools.empty()) {
      commands member;
      for (const auto& p : pools) member.push_back(redis_cmd("SISMEMBER", keys_of(ctx).pool(p.first), user));
      auto in = co_await ctx.redis->async_pipeline(std::move(member));
      double best = 0;
      for (std::size_t i = 0; i < pools.size() && i < in.size(); ++i)
        if (in[i].type == redis_reply::kind::integer && in[i].integer == 1)
          best = std::max(best, pools[i].second);
      if (best > 0) q.share = best;
    }
  }
  if (ctx.quotas.size() >= max_throttle_keys) ctx.quotas.clear();
  gateway_context::cached_quota c;
  c.quota = q;
  c.read = now;
  ctx.quotas.insert_or_assign(user, c);
  co_return q;
}

namespace {

// A submission of n jobs against the user's max_queued and submit_rate (docs/api.md, Quotas):
// nullopt when it may go. The rate's window (one minute from its first submission) is taken here,
// so a refused submission is given back.
net::awaitable<std::optional<api_error>> check_quota(gateway_context& ctx, const std::string& user,
                                                     std::size_t n) {
  auto q = co_await quota_for(ctx, user);
  const keys& k = keys_of(ctx);
  if (q.max_queued) {
    // Ready (on the queue) and held or waiting: every job of the user's not started yet.
    commands count;
    count.push_back(
        redis_cmd("ZINTERCARD", "2", k.user_jobs(user), k.queue(), "LIMIT", std::to_string(q.max_queued)));
    count.push_back(redis_cmd("ZCARD", k.user_pending(user)));
    auto r = co_await ctx.redis->async_pipeline(std::move(count));
    long long have = 0;
    for (const auto& part : r)
      if (part.type == redis_reply::kind::integer) have += part.integer;
    if (have + static_cast<long long>(n) > q.max_queued)
      co_return too_many_requests("max_queued: your quota allows " + std::to_string(q.max_queued) +
                                      " jobs waiting to run (ready, held or waiting); you have " +
                                      std::to_string(have) + " and asked for " + std::to_string(n) + " more",
                                  10);
  }
  if (q.submit_per_minute) {
    std::string key = k.user_submits(user);
    commands take;
    take.push_back(redis_cmd("INCRBY", key, std::to_string(n)));
    take.push_back(redis_cmd("EXPIRE", key, std::to_string(submit_window_s), "NX"));
    take.push_back(redis_cmd("TTL", key));
    auto r = co_await ctx.redis->async_pipeline(std::move(take));
    long long used = r[0].type == redis_reply::kind::integer ? r[0].integer : 0;
    if (used > static_cast<long long>(q.submit_per_minute)) {
      co_await ctx.redis->async_exec(redis_cmd("DECRBY", key, std::to_string(n)));
      long long ttl = r[2].type == redis_reply::kind::integer && r[2].integer > 0 ? r[2].integer : 1;
      co_return too_many_requests(
          "submit_rate: your quota allows " + std::to_string(q.submit_per_minute) +
              " jobs submitted per minute; " + std::to_string(used - static_cast<long long>(n)) +
              " were submitted in this minute and you asked for " + std::to_string(n) + " more",
          ttl);
    }
  }
  co_return std::nullopt;
}
}  // namespace

net::awaitable<result<created_jobs>> create(gateway_context& ctx, principal who,
                                            std::vector<job_request> reqs, bool bulk) {
  // Checked before the quota takes its share: what no create script should be asked to do.
  if (auto e = check_sites_and_edges(ctx.config.sites, reqs, bulk)) co_return *e;
  if (auto e = pin_batch_howfigs(ctx.config.batch_howfigs, reqs, bulk)) co_return *e;
  auto refused = co_await check_quota(ctx, who.name, reqs.size());
  if (refused) co_return *refused;
  auto parents = distinct_parents(reqs);
  // DESCprod's sessions: a job gets its creator's session, a child its parent's.
  job_sessions sessions;
  sessions.own = who.session_id;
  if (!parents.empty()) {
    auto owners = co_await ctx.redis->async_pipeline(parent_cmds(keys_of(ctx), parents));
    for (std::size_t i = 0; i < parents.size(); ++i) {
      // Parents must belong to the caller, admins included: the store refuses any other parent.
      const auto& f = owners[i].elements;
      if (f.size() != 2 || f[0].is_nil() || f[0].as_string() != who.name)
        co_return parent_not_found(parents[i].first, bulk, parents[i].second);
      sessions.of_parent[parents[i].first] = f[1].is_nil() ? std::string() : f[1].as_string();
    }
  }
  auto deps = distinct_dependencies(reqs);
  for (std::size_t from = 0; from < deps.size(); from += bulk_chunk_jobs) {
    // Checked before anything is created, so a bad ID creates none of the request's jobs (the
    // store checks again, atomically, in each chunk).
    std::vector<std::pair<job_id, std::size_t>> part(
        deps.begin() + static_cast<std::ptrdiff_t>(from),
        deps.begin() + static_cast<std::ptrdiff_t>(std::min(deps.size(), from + bulk_chunk_jobs)));
    auto owners = co_await ctx.redis->async_pipeline(parent_owner_cmds(keys_of(ctx), part));
    for (std::size_t i = 0; i < part.size(); ++i) {
      if (owners[i].is_nil() || owners[i].as_string() != who.name)
        co_return dependency_not_found(part[i].first, bulk, part[i].second);
    }
  }
  created_jobs out;
  out.ids.reserve(reqs.size());
  if (!reqs.empty()) out.session = sessions.of(reqs.front());
  if (!bulk && ctx.creates && reqs.size() == 1 && !needs_script_path(reqs.front())) {
    // One job: group commit with the other single creates of this event-loop turn.
    auto r =
        co_await ctx.creates->create(who.name, std::move(to_new_jobs(reqs, 0, 1, out.ids, sessions).front()));
    if (r.error) std::rethrow_exception(r.error);  // Redis unreachable: nothing created, the 503
    if (!r.ok) {
      log::warn("job create refused owner={} reason={}", who.name, r.reason);
      co_return internal_error("the store refused the job: " + r.reason);
    }
    out.ids.push_back(r.id);
    out.states.push_back(job_state::ready);
    out.create_time = r.time;
    notify_daemon(ctx, out.ids, reqs, 0, who.name);
  }
  // The rest (all of it unless grouped above) in chunks, each one script.
  for (std::size_t first = out.ids.size(); first < reqs.size(); first += bulk_chunk_jobs) {
    std::size_t n = std::min(bulk_chunk_jobs, reqs.size() - first);
    auto chunk = co_await create_chunk(ctx, who.name, to_new_jobs(reqs, first, n, out.ids, sessions));
    if (chunk.redis_failure) {
      // Nothing created yet: the generic 503. Otherwise say exactly what exists.
      if (out.ids.empty()) throw boost::system::system_error(net::error::not_connected, *chunk.redis_failure);
      if (ctx.on_redis_failure) ctx.on_redis_failure();
      log::warn("bulk create interrupted owner={} created={} requested={} error={}", who.name, out.ids.size(),
                reqs.size(), *chunk.redis_failure);
      co_return partial_create(out.ids, reqs.size(), "Redis failed");
    }
    const auto& tr = chunk.created;
    if (!tr.ok) {
      log::warn("job create refused owner={} reason={} what={}", who.name, tr.reason, tr.parent);
      if (out.ids.empty() && tr.reason == refusal::bad_parent && !parents.empty())
        co_return parent_not_found(parents.front().first, bulk, parents.front().second);
      if (out.ids.empty() && tr.reason == refusal::bad_dep)
        co_return bad_request("dependency " + tr.parent + " is not one of your jobs (deleted meanwhile?)");
      if (out.ids.empty())
        co_return internal_error("the store refused the jobs: " + std::string(to_string(tr.reason)));
      co_return partial_create(out.ids, reqs.size(),
                               "the store refused a chunk (" + std::string(to_string(tr.reason)) + ")");
    }
    notify_daemon(ctx, tr.ids, reqs, first, who.name, tr.states);
    if (out.ids.empty()) out.create_time = tr.time;
    out.ids.insert(out.ids.end(), tr.ids.begin(), tr.ids.end());
    out.states.insert(out.states.end(), tr.states.begin(), tr.states.end());
  }
  if (bulk || !ctx.created) {
    log::info("jobs created owner={} count={} first_id={}", who.name, out.ids.size(),
              out.ids.empty() ? 0 : out.ids.front());
  } else {
    ctx.created->add(who.name, out.ids.front());
  }
  co_return out;
}

net::awaitable<result<job_list>> list(gateway_context& ctx, principal who, list_query q) {
  const keys& k = keys_of(ctx);
  // One owner's Active view (archived=0) reads their Active index once the owners' indexes are
  // complete: no archive flag to look at, and without other filters a plain range of it.
  bool from_active =
      q.archived && !*q.archived && q.owner != "*" && !q.parent && !q.array && ctx.owner_indexes_ready;
  if (from_active) q.archived.reset();
  // Every listing but the plain one scans: it takes a place among the running scans or is a 429.
  bool plain = q.owner != "*" && !q.filtered() && q.sort == list_sort::id;
  std::optional<scan_admission> admission;
  if (!plain) {
    admission.emplace(ctx, who.name);
    if (!admission->admitted()) {
      bool mine = ctx.scans_running < max_scans;
      co_return too_many_scans(mine);
    }
  }
  if (!q.owner.empty() && q.owner != who.name && !who.admin)
    co_return forbidden("only an administrator may list another user's jobs (owner=" + q.owner + ")");
  if (q.parent && !q.owner.empty()) co_return bad_request("give parent or owner, not both");
  if (q.array && !q.owner.empty()) co_return bad_request("give array or owner, not both");
  if (q.array && q.parent) co_return bad_request("give array or parent, not both");
  if (q.parent || q.array) {
    // A parent's children, or an array's jobs: a set of IDs read once.
    job_id parent = q.parent ? *q.parent : *q.array;
    std::string key = q.parent ? k.job_children(parent) : k.job_array(parent);
    auto owner = co_await owner_of(ctx, parent);
    if (owner.empty() && q.array) owner = co_await owner_of_set_member(ctx, key);  // its first job deleted
    if (!may_read(who, parent, owner)) co_return job_not_found(parent);
    auto card = co_await ctx.redis->async_exec(redis_cmd("SCARD", key));
    auto members = co_await ctx.redis->async_exec(children_cmd(key, card.as_integer()));
    id_source src(id_source::kind::list, q.sort != list_sort::id || q.descending);
    src.ids = child_ids(members);
    if (q.sort == list_sort::id && !q.descending) std::reverse(src.ids.begin(), src.ids.end());
    if (plain) {
      // No filter, by ID: a page of the sorted IDs, without reading the other children.
      job_list out;
      out.total = static_cast<long long>(src.ids.size());
      out.truncated = card.as_integer() > static_cast<long long>(max_children);
      std::vector<std::string> page;
      out.next = plain_page(q, src.ids, page);
      out.jobs = records_from_replies(co_await ctx.redis->async_pipeline(hgetall_cmds(k, page)));
      co_return out;
    }
    auto out = co_await scan_jobs(ctx, std::move(src), std::move(q), std::string());
    out.truncated = card.as_integer() > static_cast<long long>(max_children);
    out.scanned.reset();
    co_return out;
  }
  if (q.owner == "*") {
    auto top = co_await ctx.redis->async_exec(redis_cmd("GET", k.next_job_id()));
    id_source src(id_source::kind::all, q.sort != list_sort::id || q.descending);
    src.top = top.is_nil() ? 0 : parse_integer<job_id>(top.as_string()).value_or(0);
    co_return co_await scan_jobs(ctx, std::move(src), std::move(q), std::string());
  }
  const std::string& owner = q.owner.empty() ? who.name : q.owner;
  std::string index;
  if (from_active) index = k.user_active(owner);
  else index = k.user_jobs(owner);
  if (!q.filtered() && q.sort == list_sort::id) {
    // The plain list: a range of the index (by position, or by score after a cursor).
    job_list out;
    commands cmds;
    cmds.push_back(redis_cmd("ZCARD", index));
    std::string n = std::to_string(q.limit + 1);
    if (q.cursor) {
      std::string after = "(" + std::to_string(q.cursor->id);
      cmds.push_back(q.descending ? redis_cmd("ZREVRANGEBYSCORE", index, after, "-inf", "LIMIT", "0", n)
                                  : redis_cmd("ZRANGEBYSCORE", index, after, "+inf", "LIMIT", "0", n));
    } else {
      std::string from = std::to_string(q.offset), to = std::to_string(q.offset + q.limit);
      cmds.push_back(q.descending ? redis_cmd("ZREVRANGE", index, from, to)
                                  : redis_cmd("ZRANGE", index, from, to));
    }
    auto replies = co_await ctx.redis->async_pipeline(std::move(cmds));
    auto ids = reply_strings(replies[1]);
    if (ids.size() > static_cast<std::size_t>(q.limit)) {
      ids.resize(static_cast<std::size_t>(q.limit));
      list_cursor c;
      c.id = parse_job_id_text(ids.back()).value_or(0);
      out.next = c;
    }
    out.jobs = records_from_replies(co_await ctx.redis->async_pipeline(hgetall_cmds(k, ids)));
    out.total = replies[0].as_integer();
    co_return out;
  }
  id_source src(id_source::kind::user_index, q.sort != list_sort::id || q.descending);
  src.index = std::move(index);
  // A scan of one owner's jobs reads their find index once the owners' indexes are complete.
  std::string find_owner;
  if (ctx.owner_indexes_ready) find_owner = owner;
  co_return co_await scan_jobs(ctx, std::move(src), std::move(q), std::move(find_owner));
}

net::awaitable<result<created_jobs>> resubmit(gateway_context& ctx, principal who, job_id id) {
  auto rec = co_await ctx.jobs->async_get(id);
  if (!rec || !may_read(who, id, field_of(*rec, "descname"))) co_return job_not_found(id);
  if (field_of(*rec, "descname") != who.name)
    co_return forbidden("job " + std::to_string(id) + " is " + field_of(*rec, "descname") +
                        "'s; resubmit only your own jobs");
  auto state = parse_job_state(field_of(*rec, "state"));
  if (!state || !is_terminal(*state))
    co_return conflict("job " + std::to_string(id) + " is " + field_of(*rec, "state") +
                       "; only an ended job can be resubmitted");
  // The request the job was made from, validated as a new submit would be.
  boost::json::object o;
  o["jobtype"] = field_of(*rec, "jobtype");
  o["config"] = field_of(*rec, "config");
  if (!field_of(*rec, "howfig").empty()) o["howfig"] = field_of(*rec, "howfig");
  if (auto p = parse_integer<int>(field_of(*rec, "priority"))) o["priority"] = *p;
  if (auto p = parse_job_id_text(field_of(*rec, "parent"))) o["parent"] = *p;
  boost::json::value v(std::move(o));
  job_request jr;
  if (auto e = validate_job(v, ctx.apps, jr)) co_return *e;
  std::vector<job_request> reqs;
  reqs.push_back(std::move(jr));
  auto made = co_await create(ctx, std::move(who), std::move(reqs), false);
  if (made) log::info("job resubmitted job_id={} as={}", id, made->ids.front());
  co_return made;
}

net::awaitable<result<actions_result>> act(gateway_context& ctx, principal who, std::string action,
                                           std::vector<job_id> ids, std::optional<list_query> query) {
  actions_result out;
  if (query) {
    // Every job the query finds (the caller's own unless an admin names an owner), by cursor.
    query->limit = max_list_limit;
    query->offset = 0;
    while (ids.size() < max_action_jobs) {
      auto page = co_await list(ctx, who, *query);
      if (!page) co_return page.error();
      for (const auto& j : page->jobs) {
        if (auto id = parse_job_id_text(field_of(j, "id"))) ids.push_back(*id);
      }
      if (!page->next) break;
      query->cursor = page->next;
    }
    if (ids.size() > max_action_jobs) {
      ids.resize(max_action_jobs);
      out.truncated = true;
    }
  }
  for (auto id : ids) {
    std::optional<api_error> refused;
    if (action == "cancel") {
      auto r = co_await cancel(ctx, who, id);
      if (!r) refused = r.error();
    } else if (action == "archive" || action == "unarchive") {
      auto r = co_await set_archive(ctx, who, id, action == "archive");
      if (!r) refused = r.error();
    } else if (action == "delete") {
      auto r = co_await remove(ctx, who, id);
      if (!r) refused = r.error();
    } else if (action == "release") {
      auto r = co_await release(ctx, who, id);
      if (!r) refused = r.error();
    } else {
      auto r = co_await resubmit(ctx, who, id);
      if (!r) refused = r.error();
      else out.created.push_back(r->ids.front());
    }
    if (refused) {
      job_failure f;
      f.id = id;
      f.error = std::move(*refused);
      out.failed.push_back(std::move(f));
    } else {
      out.done.push_back(id);
    }
  }
  log::info("jobs action by={} action={} done={} failed={}", who.name, action, out.done.size(),
            out.failed.size());
  co_return out;
}

namespace {

// The neighbours a job's hash names (after, after_any), at most max_graph_neighbours, states unread.
std::vector<graph_neighbour> named_dependencies(const job_record& job) {
  std::vector<graph_neighbour> out;
  for (const char* kind : {"after", "after_any"}) {
    for (const auto& part : split(field_of(job, kind), ',')) {
      if (out.size() >= max_graph_neighbours) break;
      if (auto id = parse_job_id_text(part)) {
        graph_neighbour n;
        n.id = *id;
        n.kind = kind;
        out.push_back(std::move(n));
      }
    }
  }
  return out;
}

// The dependents in an HSCAN answer of job:<id>:dependents (values "after", "after_any", with
// "/done" once handed on), at most max_graph_neighbours, sorted by ID.
std::vector<graph_neighbour> scanned_dependents(const redis_reply& scan) {
  std::vector<graph_neighbour> out;
  if (scan.elements.size() != 2) return out;
  const auto& kv = scan.elements[1].elements;
  for (std::size_t i = 0; i + 1 < kv.size() && out.size() < max_graph_neighbours; i += 2) {
    auto id = parse_job_id_text(kv[i].str);
    if (!id) continue;
    graph_neighbour n;
    n.id = *id;
    n.kind = kv[i + 1].str.substr(0, kv[i + 1].str.find('/'));
    out.push_back(std::move(n));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

commands neighbour_state_cmds(const keys& k, const std::vector<graph_neighbour>& a,
                              const std::vector<graph_neighbour>& b) {
  commands cmds;
  cmds.reserve(a.size() + b.size());
  for (const auto* list : {&a, &b})
    for (const auto& n : *list) cmds.push_back(redis_cmd("HGET", k.job(n.id), "state"));
  return cmds;
}

void set_neighbour_states(std::vector<graph_neighbour>& a, std::vector<graph_neighbour>& b,
                          const std::vector<redis_reply>& states) {
  std::size_t i = 0;
  for (auto* list : {&a, &b})
    for (auto& n : *list) {
      if (i < states.size() && !states[i].is_nil() && !states[i].is_error()) n.state = states[i].str;
      ++i;
    }
}

}  // namespace

net::awaitable<result<job_detail>> get(gateway_context& ctx, principal who, job_id id) {
  const keys& k = keys_of(ctx);
  commands cmds;
  cmds.push_back(redis_cmd("HGETALL", k.job(id)));
  cmds.push_back(redis_cmd("SCARD", k.job_children(id)));
  cmds.push_back(redis_cmd("HLEN", k.job_dependents(id)));
  cmds.push_back(redis_cmd("SCARD", k.job_array(id)));
  auto replies = co_await ctx.redis->async_pipeline(std::move(cmds));
  job_detail out;
  out.job = record_from_reply(replies[0]);
  if (out.job.empty() || !may_read(who, id, field_of(out.job, "descname"))) co_return job_not_found(id);
  out.children = replies[1].as_integer();
  if (out.children > 0) out.rollup = co_await rollup_of(ctx, k.job_children(id), out.children);
  // The first job of an array rolls up the array's jobs.
  out.array_jobs = replies[3].type == redis_reply::kind::integer ? replies[3].integer : 0;
  if (out.array_jobs > 0) out.array_rollup = co_await rollup_of(ctx, k.job_array(id), out.array_jobs);
  out.dependencies = named_dependencies(out.job);
  out.dependents_total = replies[2].type == redis_reply::kind::integer ? replies[2].integer : 0;
  if (out.dependents_total > 0) {
    auto scan = co_await ctx.redis->async_exec(
        redis_cmd("HSCAN", k.job_dependents(id), "0", "COUNT", std::to_string(max_graph_neighbours)));
    out.dependents = scanned_dependents(scan);
  }
  if (!out.dependencies.empty() || !out.dependents.empty()) {
    auto states =
        co_await ctx.redis->async_pipeline(neighbour_state_cmds(k, out.dependencies, out.dependents));
    set_neighbour_states(out.dependencies, out.dependents, states);
  }
  co_return out;
}

net::awaitable<result<job_events>> events(gateway_context& ctx, principal who, job_id id, std::size_t limit) {
  const keys& k = keys_of(ctx);
  commands cmds;
  cmds.push_back(redis_cmd("HMGET", k.job(id), "descname", "create_time"));
  cmds.push_back(redis_cmd("XREVRANGE", k.job_events(id), "+", "-", "COUNT", std::to_string(limit)));
  auto replies = co_await ctx.redis->async_pipeline(std::move(cmds));
  const auto& fields = replies[0].elements;
  job_events out;
  if (fields.size() == 2 && !fields[0].is_nil()) out.owner = fields[0].as_string();
  if (!may_read(who, id, out.owner)) co_return job_not_found(id);
  // No stream yet (a job still queued since its submission): its one event, from the hash.
  if (replies[1].elements.empty())
    if (auto e = submit_event_entry(fields[1].as_string())) replies[1].elements.push_back(std::move(*e));
  out.events = events_of(replies[1]);
  std::reverse(out.events.begin(), out.events.end());
  co_return out;
}

namespace {
// ASCII case-insensitive search of `needle` (already lower case) in `hay`.
bool contains_folded(std::string_view hay, std::string_view needle) {
  if (needle.size() > hay.size()) return false;
  auto lower = [](unsigned char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c); };
  for (std::size_t i = 0; i + needle.size() <= hay.size(); ++i) {
    std::size_t k = 0;
    while (k < needle.size() && lower(static_cast<unsigned char>(hay[i + k])) == needle[k]) ++k;
    if (k == needle.size()) return true;
  }
  return false;
}
std::string fold(std::string s) {
  for (auto& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return s;
}
// The stream ID of an XRANGE/XREVRANGE reply's last entry, as an exclusive bound ("(<id>"); empty
// when the reply has none.
std::string after_last(const redis_reply& r) {
  if (r.type != redis_reply::kind::array || r.elements.empty()) return {};
  const auto& e = r.elements.back();
  if (e.type != redis_reply::kind::array || e.elements.empty()) return {};
  return "(" + e.elements[0].str;
}
std::size_t text_bytes(const redis_reply& entry) {
  std::size_t n = 0;
  if (entry.type == redis_reply::kind::array && entry.elements.size() == 2)
    for (const auto& f : entry.elements[1].elements) n += f.str.size();
  return n;
}
// Takes a search's or a whole read's lines of one batch of entries.
void take_lines(const redis_reply& batch, const log_query& q, const std::string& needle, job_log& out,
                std::size_t& bytes) {
  std::vector<std::string> lines;
  for (const auto& e : batch.elements) {
    if (e.type != redis_reply::kind::array || e.elements.size() != 2) continue;
    bytes += text_bytes(e);
    lines.clear();
    append_entry_lines(e.elements[1], lines);
    if (q.q.empty()) {
      for (auto& l : lines) out.lines.push_back(std::move(l));
      continue;
    }
    for (auto& l : lines) {
      ++out.lines_read;
      if (!contains_folded(l, needle)) continue;
      ++out.total_matches;
      if (out.matches.size() < max_log_matches)
        out.matches.push_back(log_match{out.lines_read, std::move(l)});
    }
  }
}
}  // namespace

net::awaitable<result<job_log>> log(gateway_context& ctx, principal who, job_id id, log_query q) {
  const keys& k = keys_of(ctx);
  const std::string key = k.job_log(id);
  commands cmds;
  cmds.push_back(redis_cmd("HMGET", k.job(id), "descname", "log_capped"));
  auto head = co_await ctx.redis->async_pipeline(std::move(cmds));
  const auto& fields = head[0].elements;
  std::string owner = fields.empty() || fields[0].is_nil() ? std::string() : fields[0].str;
  if (!may_read(who, id, owner)) co_return job_not_found(id);
  job_log out;
  out.capped = fields.size() > 1 && fields[1].str == "1";
  if (!q.whole()) {
    // The tail: newest entries first, in growing batches, until enough lines are in hand (each
    // entry holds at least one line, so at most q.lines entries are read).
    std::vector<std::string> newest_first;  // lines of the entries read, entry by entry reversed
    std::string end = "+";
    std::size_t batch = 16;
    while (newest_first.size() < static_cast<std::size_t>(q.lines)) {
      auto cmd = redis_cmd("XREVRANGE", key, end, "-", "COUNT", std::to_string(batch));
      auto r = co_await ctx.redis->async_exec(std::move(cmd));
      if (r.type != redis_reply::kind::array || r.elements.empty()) break;
      std::vector<std::string> piece;
      for (const auto& e : r.elements) {
        if (e.type != redis_reply::kind::array || e.elements.size() != 2) continue;
        piece.clear();
        append_entry_lines(e.elements[1], piece);
        for (auto it = piece.rbegin(); it != piece.rend(); ++it) newest_first.push_back(std::move(*it));
      }
      if (r.elements.size() < batch) break;
      end = after_last(r);
      batch = std::min<std::size_t>(batch * 4, 1024);
    }
    if (newest_first.size() > static_cast<std::size_t>(q.lines)) newest_first.resize(q.lines);
    out.lines.assign(std::make_move_iterator(newest_first.rbegin()),
                     std::make_move_iterator(newest_first.rend()));
    co_return out;
  }
  // The whole log (or a search through it): a place among the running scans, then oldest first in
  // batches, up to max_log_read_bytes.
  scan_admission admission(ctx, who.name);
  if (!admission.admitted()) {
    bool mine = ctx.scans_running < max_scans;
    co_return too_many_scans(mine);
  }
  const std::string needle = fold(q.q);
  std::string start = "-";
  std::size_t bytes = 0;
  constexpr std::size_t batch = 512;
  while (true) {
    auto cmd = redis_cmd("XRANGE", key, start, "+", "COUNT", std::to_string(batch));
    auto r = co_await ctx.redis->async_exec(std::move(cmd));
    if (r.type != redis_reply::kind::array || r.elements.empty()) break;
    take_lines(r, q, needle, out, bytes);
    if (r.elements.size() < batch) break;
    if (bytes >= max_log_read_bytes) {
      out.truncated = true;
      break;
    }
    start = after_last(r);
  }
  co_return out;
}

net::awaitable<result<changed_job>> cancel(gateway_context& ctx, principal who, job_id id) {
  auto owner = co_await owner_of(ctx, id);
  if (!may_change(who, owner)) co_return job_not_found(id);
  auto tr = co_await ctx.jobs->async_cancel(id, who.name);
  if (!tr.ok) {
    if (tr.reason == refusal::terminal)
      co_return conflict("job " + std::to_string(id) + " is already " + tr.state +
                         "; only a job that has not ended can be cancelled");
    co_return job_not_found(id);
  }
  // The answer is the job as the cancel left it, read before the daemon hears of the cancel: a
  // worker can stop the job and report it within a millisecond of the notice, and an answer that
  // already says "cancelled" would contradict a cancel still under way.
  auto rec = co_await ctx.jobs->async_get(id);
  // Also for a ready job: the daemon then drops it from its in-memory queue at once.
  send_cancel(ctx, id);
  log::info("job cancel by={} job_id={} result={}", who.name, id, tr.state);
  if (!rec) co_return job_not_found(id);
  changed_job out;
  out.job = std::move(*rec);
  out.state = tr.state;
  co_return out;
}

net::awaitable<result<changed_job>> release(gateway_context& ctx, principal who, job_id id) {
  auto owner = co_await owner_of(ctx, id);
  if (!may_change(who, owner)) co_return job_not_found(id);
  auto tr = co_await ctx.jobs->async_release(id, who.name);
  if (!tr.ok) {
    if (tr.reason == refusal::illegal)
      co_return conflict("job " + std::to_string(id) + " is " + tr.state +
                         ", not held; only a held job is released");
    co_return job_not_found(id);
  }
  if (tr.state == to_string(job_state::ready)) {
    std::vector<job_id> ids(1, id);
    std::vector<job_request> reqs(1);
    reqs.front().priority = parse_integer<int>(field_of(tr.record, "priority")).value_or(0);
    reqs.front().sites = field_of(tr.record, "sites");  // else it would run at any site
    notify_daemon(ctx, ids, reqs, 0, owner);
  }
  log::info("job released by={} job_id={} result={}", who.name, id, tr.state);
  auto rec = co_await ctx.jobs->async_get(id);
  if (!rec) co_return job_not_found(id);
  changed_job out;
  out.job = std::move(*rec);
  out.state = tr.state;
  co_return out;
}

net::awaitable<result<changed_job>> set_archive(gateway_context& ctx, principal who, job_id id,
                                                bool archived) {
  auto owner = co_await owner_of(ctx, id);
  if (!may_change(who, owner)) co_return job_not_found(id);
  auto tr = co_await ctx.jobs->async_set_archive(id, archived);
  if (!tr.ok) co_return job_not_found(id);
  auto rec = co_await ctx.jobs->async_get(id);
  if (!rec) co_return job_not_found(id);
  changed_job out;
  out.job = std::move(*rec);
  out.state = field_of(out.job, "state");
  co_return out;
}

net::awaitable<status> remove(gateway_context& ctx, principal who, job_id id) {
  auto owner = co_await owner_of(ctx, id);
  if (!may_change(who, owner)) co_return job_not_found(id);
  auto tr = co_await ctx.jobs->async_delete(id);
  if (!tr.ok) {
    if (tr.reason == refusal::active)
      co_return conflict("job " + std::to_string(id) + " is " + tr.state + "; cancel it first");
    co_return job_not_found(id);
  }
  log::info("job deleted by={} job_id={} state={}", who.name, id, tr.state);
  co_return done();
}

net::awaitable<result<claimed_job>> claim(gateway_context& ctx, principal who, job_id id, std::string host) {
  auto rec = co_await ctx.jobs->async_get(id);
  if (!rec || !may_read(who, id, field_of(*rec, "descname"))) co_return job_not_found(id);
  // A job token claims (starts) only the children of its own job (descprod-start-job -w CHILD
  // inside a job); a user token any job its owner may change.
  if (who.only_job && field_of(*rec, "parent") != std::to_string(*who.only_job))
    co_return forbidden("a job token (scope job:" + std::to_string(*who.only_job) +
                        ") may start only its own children");
  if (!who.only_job && !may_change(who, field_of(*rec, "descname"))) co_return job_not_found(id);
  std::string jobtype = field_of(*rec, "jobtype");
  const app_def* app = ctx.apps.find(jobtype);
  if (!app)
    co_return conflict("job " + std::to_string(id) + " has application '" + jobtype +
                       "', which this gateway does not know");
  std::string token = new_token();
  std::string worker = std::string(claim_worker_prefix) + host;
  auto tr = co_await ctx.jobs->async_claim(id, worker, claim_lease_s, sha256_hex(token), claim_token_ttl_s);
  if (!tr.ok) {
    if (tr.reason == refusal::illegal && tr.state == to_string(job_state::waiting))
      co_return conflict("job " + std::to_string(id) + " is waiting for its dependencies (" +
                         field_of(*rec, "progress") + "); it can start once they have ended");
    if (tr.reason == refusal::illegal)
      co_return conflict("job " + std::to_string(id) + " is " + tr.state + ", not ready");
    co_return job_not_found(id);
  }
  log::info("job claimed job_id={} worker={} attempt={} by={}", id, worker, tr.attempt, who.name);
  claimed_job out;
  out.job = std::move(tr.record);
  out.attempt = tr.attempt;
  out.token = std::move(token);
  out.app = app;
  co_return out;
}

net::awaitable<result<std::string>> report(gateway_context& ctx, principal who, job_id id, client_report r) {
  std::string_view what = report_name(r);
  auto fields =
      co_await ctx.redis->async_exec(redis_cmd("HMGET", keys_of(ctx).job(id), "descname", "worker", "state"));
  std::string owner = fields.elements.size() == 3 ? fields.elements[0].as_string() : "";
  // A job token reports only its own job's run (its route scope says so too).
  bool allowed = who.only_job ? *who.only_job == id && may_read(who, id, owner) : may_change(who, owner);
  if (owner.empty() || !allowed) co_return job_not_found(id);
  std::string worker = fields.elements[1].as_string();
  if (worker.rfind(claim_worker_prefix, 0) != 0) {
    std::string by = worker.empty() ? std::string("nobody") : "worker " + worker;
    co_return conflict("job " + std::to_string(id) + " is " + fields.elements[2].as_string() +
                       " and not claimed (held by " + by + "); only a claimed job takes reports here");
  }
  transition_result tr;
  if (auto* s = std::get_if<started_report>(&r)) {
    std::string host = s->host.empty() ? worker.substr(claim_worker_prefix.size()) : s->host;
    tr = co_await ctx.jobs->async_start(id, s->attempt, worker, host, s->rundir, s->pid);
  } else if (auto* p = std::get_if<progress_report>(&r)) {
    tr = co_await ctx.jobs->async_progress(id, p->attempt, worker, p->message, p->done, p->total);
  } else {
    auto& f = std::get<finished_report>(r);
    auto out = classify_exit(f.rc, f.signal, f.timed_out);
    tr = co_await ctx.jobs->async_finish(id, f.attempt, worker, out.state, out.return_status, out.prefix,
                                         f.message);
  }
  if (!tr.ok) {
    log::warn("report refused job_id={} report={} reason={} state={}", id, what, tr.reason, tr.state);
    if (tr.reason == refusal::missing) co_return job_not_found(id);
    co_return refused_report(id, tr, what);
  }
  co_return tr.state;
}

}  // namespace descprod::gateway::jobs_service
