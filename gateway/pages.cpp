// The HTML presenter (docs/web.md): the web pages over the jobs, accounts and admin services,
// their forms (session + CSRF, page_* authentication policies in routes.cpp) and the live-update
// fragments; the markup itself is web.cpp's. A page never reads the JSON API's answers: it calls
// the services and renders their typed results. GCC 12 coroutine rules
// (docs/building.md#conventions): commands and bodies are built by the plain functions above the
// coroutines; coroutine parameters are values.
#include <algorithm>
#include <map>

#include "core/async_util.hpp"
#include "core/keys.hpp"
#include "core/log.hpp"
#include "gateway/accounts_service.hpp"
#include "gateway/admin_service.hpp"
#include "gateway/guard.hpp"
#include "gateway/handler_detail.hpp"
#include "gateway/jobs_api.hpp"
#include "gateway/jobs_service.hpp"
#include "gateway/oidc.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // see handler.cpp
#endif

namespace descprod::gateway::detail {

namespace {

namespace json = boost::json;

// Jobs per page of the home table; children shown on a job page; events and log lines shown.
constexpr int home_per_page = 50;
constexpr int page_children = 100;
constexpr int page_events = 200;
constexpr int page_log_lines = 200;

web::page_user page_user_of(const principal& who) {
  web::page_user u;
  u.name = who.name;
  u.admin = who.admin;
  u.csrf = who.csrf;
  return u;
}

// ---- responses ------------------------------------------------------------------------------

void page_headers(response& res) {
  res.set(http::field::server, "descprod-gateway/" DESCPROD_VERSION);
  res.set(http::field::cache_control, "no-store");
  res.set("Content-Security-Policy", web::content_security_policy);
  res.set("X-Content-Type-Options", "nosniff");
  res.set("Referrer-Policy", "same-origin");
  res.set("X-Frame-Options", "DENY");
}

response html_response(http::status status, std::string body) {
  response res(status, 11);
  page_headers(res);
  res.set(http::field::content_type, "text/html; charset=utf-8");
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

response redirect_response(const std::string& location) {
  response res(http::status::see_other, 11);
  page_headers(res);
  res.set(http::field::location, location);
  res.prepare_payload();
  return res;
}

response error_page_response(unsigned status, const std::string& detail,
                             const std::optional<principal>& who) {
  web::page_user u;
  if (who) u = page_user_of(*who);
  return html_response(static_cast<http::status>(status),
                       web::error_page(status, detail, who ? &u : nullptr));
}

response asset_response(const std::string& name) {
  auto a = web::find_asset(name);
  response res(http::status::ok, 11);
  res.set(http::field::server, "descprod-gateway/" DESCPROD_VERSION);
  res.set(http::field::content_type, a->content_type);
  res.set(http::field::cache_control, "no-cache");
  res.set("X-Content-Type-Options", "nosniff");
  res.body() = std::string(a->body);
  res.prepare_payload();
  return res;
}

std::vector<std::vector<std::string>> take_flash_cmds(const std::string& key) {
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(redis_cmd("HMGET", key, "flash", "flash_error", "flash_link", "flash_link_text"));
  cmds.push_back(redis_cmd("HDEL", key, "flash", "flash_error", "flash_link", "flash_link_text"));
  return cmds;
}

// Sets the flash only while the session exists (never recreates an expired one without a TTL).
// `link` and `link_text`: web::flash's (empty: none).
std::vector<std::string> set_flash_cmd(const std::string& key, const std::string& text, bool error,
                                       const std::string& link, const std::string& link_text) {
  return redis_cmd("EVAL",
                   "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], "
                   "'flash', ARGV[1], 'flash_error', ARGV[2], 'flash_link', ARGV[3], "
                   "'flash_link_text', ARGV[4]) end return 0",
                   "1", key, text, error ? "1" : "0", link, link_text);
}

// A job object for validate_job from the create form's fields.
std::optional<api_error> job_object_from_form(const std::map<std::string, std::string>& form,
                                              json::value& out) {
  json::object o;
  auto get = [&](const char* k) {
    auto it = form.find(k);
    return it == form.end() ? std::string() : it->second;
  };
  o["jobtype"] = get("jobtype");
  o["config"] = get("config");
  if (!get("howfig").empty()) o["howfig"] = get("howfig");
  std::string prio = get("priority");
  if (!prio.empty()) {
    try {
      std::size_t used = 0;
      long long p = std::stoll(prio, &used);
      if (used != prio.size()) throw std::invalid_argument("trailing");
      o["priority"] = p;
    } catch (...) {
      return bad_request("priority must be an integer between -1000 and 1000");
    }
  }
  // The Hold checkbox and the After field (job IDs separated by commas).
  if (get("hold") == "1") o["hold"] = true;
  std::string problem;
  auto after = web::parse_after_field(get("after"), problem);
  if (!after) return bad_request(problem);
  if (!after->empty()) {
    json::array ids;
    for (auto id : *after) ids.push_back(id);
    o["after"] = std::move(ids);
  }
  out = std::move(o);
  return std::nullopt;
}

web::job_form form_of(const std::map<std::string, std::string>& form) {
  web::job_form f;
  auto get = [&](const char* k) {
    auto it = form.find(k);
    return it == form.end() ? std::string() : it->second;
  };
  f.jobtype = get("jobtype");
  f.config = get("config");
  f.howfig = get("howfig");
  try {
    f.priority = std::stoi(get("priority"));
  } catch (...) {
    f.priority = 0;
  }
  f.hold = get("hold") == "1";
  f.after = get("after");
  return f;
}

web::job_form form_of_job(const job_record& r) {
  web::job_form f;
  f.jobtype = field_or_empty(r, "jobtype");
  f.config = field_or_empty(r, "config");
  f.howfig = field_or_empty(r, "howfig");
  try {
    f.priority = std::stoi(field_or_empty(r, "priority"));
  } catch (...) {
    f.priority = 0;
  }
  return f;
}

struct home_query {
  bool all = false;
  std::string state;
  std::string jobtype;
  std::string text;
  std::string sort;   // "" = the default (-id)
  std::string owner;  // an admin's view of another user's jobs ("*": everyone's)
  job_id array = 0;   // the jobs of one array (its first job's ID; 0: any), as GET /api/jobs?array=
  int page = 1;
  job_id copy = 0;
};

// The home page's query, leniently: anything unreadable falls back to the default.
home_query parse_home_query(std::string_view query) {
  home_query h;
  auto form = web::parse_form(query);
  if (!form) return h;
  auto get = [&](const char* k) {
    auto it = form->find(k);
    return it == form->end() ? std::string() : it->second;
  };
  h.all = get("view") == "all";
  if (parse_job_state(get("state"))) h.state = get("state");
  if (auto t = get("jobtype"); t.size() <= max_jobtype_bytes) h.jobtype = t;
  if (auto t = get("q"); t.size() <= max_text_query_bytes) h.text = t;
  if (auto t = get("owner"); t == "*" || valid_user_name(t)) h.owner = t;
  if (auto a = parse_job_id_text(get("array"))) h.array = *a;
  // A sort the API knows ("-duration", "state", ...); anything else is the default.
  if (auto t = get("sort"); !t.empty() && t.size() <= 16 &&
                            t.find_first_not_of("-abcdefghijklmnopqrstuvwxyz") == std::string::npos) {
    list_query probe;
    if (!parse_list_query("sort=" + t, probe)) h.sort = t;
  }
  try {
    int p = std::stoi(get("page"));
    if (p >= 1 && p <= 1000000) h.page = p;
  } catch (...) {
  }
  try {
    long long c = std::stoll(get("copy"));
    if (c > 0) h.copy = c;
  } catch (...) {
  }
  return h;
}

std::string query_value(std::string_view query, const char* key) {
  auto form = web::parse_form(query);
  if (!form) return {};
  auto it = form->find(key);
  return it == form->end() ? std::string() : it->second;
}

// Where a page's live updates start, read before its data: the global event stream's newest id
// ("0-0" when empty; its script subscribes from there, GET /api/events?since=...) and the last job
// ID handed out (a job of a higher ID is new to the page, whatever its first state). One script
// reads both, so no job is created between the two reads.
struct page_position {
  std::string since = "0-0";
  std::string max_id;
};

std::vector<std::string> page_position_cmd(const keys& k) {
  return redis_cmd("EVAL",
                   "local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1) "
                   "local since = '0-0' if last[1] then since = last[1][1] end "
                   "return {since, redis.call('GET', KEYS[2]) or '0'}",
                   "2", k.events(), k.next_job_id());
}

page_position page_position_of(const redis_reply& r) {
  page_position p;
  if (r.type != redis_reply::kind::array || r.elements.size() != 2) return p;
  p.since = r.elements[0].as_string();
  p.max_id = r.elements[1].as_string();
  return p;
}

net::awaitable<page_position> stream_position(gateway_context& ctx) {
  auto r = co_await ctx.redis->async_exec(page_position_cmd(keys_of(ctx)));
  co_return page_position_of(r);
}

// The graph around a job as the job page draws it.
std::vector<web::graph_node> graph_nodes_of(const std::vector<jobs_service::graph_neighbour>& list) {
  std::vector<web::graph_node> out;
  out.reserve(list.size());
  for (const auto& n : list) {
    web::graph_node g;
    g.id = n.id;
    g.kind = n.kind;
    g.state = n.state;
    out.push_back(std::move(g));
  }
  return out;
}

// A roll-up as the job page shows it: state → count, "total", and "truncated" (1) for a sample.
std::map<std::string, long long> rollup_counts(const jobs_service::children_rollup& r) {
  std::map<std::string, long long> out;
  auto roll = children_json(r.states, r.truncated);
  for (const auto& kv : roll) {
    if (kv.value().is_int64()) out[std::string(kv.key())] = kv.value().as_int64();
    else if (kv.value().is_bool() && kv.value().as_bool()) out[std::string(kv.key())] = 1;
  }
  return out;
}

net::awaitable<web::flash> take_flash(gateway_context& ctx, principal who) {
  web::flash f;
  auto replies = co_await ctx.redis->async_pipeline(take_flash_cmds(keys_of(ctx).session(who.session_hash)));
  if (!replies.empty() && replies[0].elements.size() == 4 && !replies[0].elements[0].is_nil()) {
    f.text = replies[0].elements[0].as_string();
    f.error = replies[0].elements[1].as_string() == "1";
    if (!replies[0].elements[2].is_nil()) f.link = replies[0].elements[2].as_string();
    if (!replies[0].elements[3].is_nil()) f.link_text = replies[0].elements[3].as_string();
  }
  co_return f;
}

net::awaitable<void> set_flash(gateway_context& ctx, principal who, std::string text, bool error,
                               std::string link = {}, std::string link_text = {}) {
  co_await ctx.redis->async_exec(
      set_flash_cmd(keys_of(ctx).session(who.session_hash), text, error, link, link_text));
}

// Marks the jobs whose parent was deleted ("parent_gone" = "1", never stored): the pages show the
// parent's ID without a link to a page that would answer 404. One EXISTS per distinct parent.
net::awaitable<void> mark_deleted_parents(gateway_context& ctx, std::vector<job_record*> jobs) {
  std::vector<std::string> parents;
  for (auto* j : jobs) {
    auto p = field_or_empty(*j, "parent");
    if (!p.empty() && std::find(parents.begin(), parents.end(), p) == parents.end()) parents.push_back(p);
  }
  if (parents.empty()) co_return;
  std::vector<std::vector<std::string>> cmds;
  cmds.reserve(parents.size());
  for (const auto& p : parents) cmds.push_back(redis_cmd("EXISTS", keys_of(ctx).job(p)));
  auto replies = co_await ctx.redis->async_pipeline(std::move(cmds));
  for (std::size_t i = 0; i < parents.size() && i < replies.size(); ++i) {
    if (replies[i].type != redis_reply::kind::integer || replies[i].as_integer() != 0) continue;
    for (auto* j : jobs)
      if (field_or_empty(*j, "parent") == parents[i]) (*j)["parent_gone"] = "1";
  }
}

net::awaitable<response> render_home(gateway_context& ctx, principal who, home_query hq,
                                     std::optional<web::job_form> form, web::flash message,
                                     http::status status) {
  auto position = co_await stream_position(ctx);
  list_query q;
  q.limit = home_per_page;
  q.offset = static_cast<long long>(hq.page - 1) * home_per_page;
  if (!hq.all) q.archived = false;
  if (!hq.state.empty()) q.state = parse_job_state(hq.state);
  q.jobtype = hq.jobtype;
  q.text = hq.text;
  if (who.admin && hq.owner != who.name) q.owner = hq.owner;  // others: ignored (their own jobs)
  // An array's jobs: whoever owns them may see them (an admin any array), so no owner goes with it.
  if (hq.array > 0) {
    q.array = hq.array;
    q.owner.clear();
  }
  if (!hq.sort.empty()) {
    list_query sorted;
    if (!parse_list_query("sort=" + hq.sort, sorted)) {
      q.sort = sorted.sort;
      q.descending = sorted.descending;
    }
  }
  auto found = co_await jobs_service::list(ctx, who, q);
  web::home_view v;
  v.user = page_user_of(who);
  v.message = std::move(message);
  v.apps = &ctx.apps;
  if (!found && v.message.text.empty()) {
    // The table could not be read (a 429 while too many searches run): say so, not "No jobs".
    v.message.text = found.error().detail;
    v.message.error = true;
  }
  if (found) {
    v.jobs = std::move(found->jobs);
    v.total = found->total.value_or(0);
    std::vector<job_record*> shown;
    for (auto& j : v.jobs) shown.push_back(&j);
    co_await mark_deleted_parents(ctx, std::move(shown));
  }
  v.all = hq.all;
  v.state = hq.state;
  v.jobtype = hq.jobtype;
  v.text = hq.text;
  v.sort = hq.sort;
  v.owner = q.owner;
  v.array = hq.array;
  v.page = hq.page;
  v.per_page = home_per_page;
  v.now_s = now_s(ctx);
  v.since = std::move(position.since);
  v.max_id = std::move(position.max_id);
  if (form) {
    v.form = std::move(*form);
  } else if (hq.copy > 0) {
    auto rec = co_await ctx.jobs->async_get(hq.copy);
    if (rec && may_read(who, hq.copy, field_or_empty(*rec, "descname"))) v.form = form_of_job(*rec);
  } else if (!v.jobs.empty()) {
    // As DESCprod did: the form starts from the newest job.
    v.form = form_of_job(v.jobs.front());
  }
  if (v.form.jobtype.empty() && !ctx.apps.apps.empty()) v.form.jobtype = ctx.apps.apps.begin()->first;
  co_return html_response(status, web::home_page(v));
}

net::awaitable<response> render_job(gateway_context& ctx, principal who, job_id id, web::flash message,
                                    std::string logq) {
  auto position = co_await stream_position(ctx);
  auto found = co_await jobs_service::get(ctx, who, id);
  std::optional<principal> viewer = who;
  if (!found) co_return error_page_response(404, "Job " + std::to_string(id) + " was not found.", viewer);
  auto& rec = found->job;
  std::string owner = field_or_empty(rec, "descname");
  web::job_view v;
  v.user = page_user_of(who);
  v.message = std::move(message);
  v.now_s = now_s(ctx);
  v.since = std::move(position.since);
  v.max_id = std::move(position.max_id);
  v.dependencies = graph_nodes_of(found->dependencies);
  v.dependents = graph_nodes_of(found->dependents);
  v.dependents_total = found->dependents_total;
  auto events = co_await jobs_service::events(ctx, who, id, page_events);
  if (events)
    for (auto& e : events->events)
      if (auto se = stream_event_of(std::move(e.stream_id), e.fields, id, owner))
        v.events.push_back(std::move(*se));
  log_query lq;
  lq.lines = page_log_lines;
  auto log = co_await jobs_service::log(ctx, who, id, lq);
  if (log) {
    v.log_lines = std::move(log->lines);
    v.log_capped = log->capped;
  }
  if (!logq.empty()) {
    // A search of the whole log (the log section's form): its matches, or why it did not run.
    web::log_search_view sv;
    sv.q = logq;
    log_query sq;
    sq.q = std::move(logq);
    if (sq.q.size() > max_log_search_bytes) {
      sv.error = "The search text is longer than " + std::to_string(max_log_search_bytes) + " bytes.";
    } else {
      auto found_lines = co_await jobs_service::log(ctx, who, id, sq);
      if (!found_lines) {
        sv.error = found_lines.error().detail;
      } else {
        for (auto& m : found_lines->matches) sv.matches.emplace_back(m.number, std::move(m.line));
        sv.total_matches = found_lines->total_matches;
        sv.lines_searched = found_lines->lines_read;
        sv.truncated = found_lines->truncated;
      }
    }
    v.log_search = std::move(sv);
  }
  v.children_total = found->children;
  v.children_limit = page_children;
  if (found->children > 0) {
    list_query q;
    q.parent = id;
    q.limit = page_children;
    auto children = co_await jobs_service::list(ctx, who, q);
    if (children) {
      v.children = std::move(children->jobs);
      v.children_total =
          std::max<long long>(children->total.value_or(0), static_cast<long long>(v.children.size()));
    }
    if (found->rollup) {
      v.rollup = rollup_counts(*found->rollup);
      if (auto it = v.rollup.find("total"); it != v.rollup.end()) v.children_total = it->second;
    }
  }
  // The first job of an array: the array's roll-up (children_json's counts, as for children).
  v.array_jobs = found->array_jobs;
  if (found->array_rollup) v.array_rollup = rollup_counts(*found->array_rollup);
  // A job of an array whose first job was deleted names the array without a link.
  std::string array = field_or_empty(rec, "array");
  if (!array.empty() && array != field_or_empty(rec, "id")) {
    auto exists = co_await ctx.redis->async_exec(redis_cmd("EXISTS", keys_of(ctx).job(array)));
    v.array_gone = exists.type == redis_reply::kind::integer && exists.as_integer() == 0;
  }
  std::vector<job_record*> self;
  self.push_back(&rec);
  co_await mark_deleted_parents(ctx, std::move(self));
  v.job = std::move(rec);
  co_return html_response(http::status::ok, web::job_page(v));
}

net::awaitable<response> render_admin(gateway_context& ctx, principal who, web::flash message) {
  web::admin_view v;
  v.user = page_user_of(who);
  v.message = std::move(message);
  v.users = co_await admin_service::users(ctx);
  auto ov = co_await admin_service::overview_of(ctx);
  v.workers = std::move(ov.workers);
  v.pilots = std::move(ov.pilots);
  v.queue_depth = ov.queue_depth;
  v.finished_last_minute = ov.finished_last_minute;
  v.events_last_minute = ov.events_last_minute;
  v.now_s = now_s(ctx);
  co_return html_response(http::status::ok, web::admin_page(v));
}

net::awaitable<response> render_tokens(gateway_context& ctx, principal who, web::flash message,
                                       std::string new_token, std::string new_label, http::status status) {
  web::tokens_view v;
  v.user = page_user_of(who);
  v.message = std::move(message);
  v.tokens = co_await accounts_service::tokens(ctx, who.name);
  v.new_token = std::move(new_token);
  v.new_label = std::move(new_label);
  auto prefs = co_await accounts_service::preferences_of(ctx, who.name);
  v.email = prefs.email;
  v.email_on_failure = prefs.email_on_failure;
  v.quota = co_await jobs_service::quota_for(ctx, who.name);
  // The create form's one-time key, kept in the session (one per session: the newest page's).
  v.form_nonce = accounts_service::random_hex();
  co_await ctx.redis->async_exec(redis_cmd("EVAL",
                                           "if redis.call('EXISTS', KEYS[1]) == 1 then "
                                           "redis.call('HSET', KEYS[1], 'token_form', ARGV[1]) end return 0",
                                           "1", keys_of(ctx).session(who.session_hash), v.form_nonce));
  co_return html_response(status, web::tokens_page(v));
}

std::vector<web::login_button> login_buttons(const gateway_context& ctx) {
  std::vector<web::login_button> out;
  for (const auto& p : ctx.config.oidc) {
    web::login_button b;
    b.name = p.name;
    b.label = p.button_label;
    out.push_back(std::move(b));
  }
  return out;
}

// The login form (GET, or after a failed POST): a fresh double-submit CSRF cookie when the
// browser has none.
response login_form_response(const gateway_context& ctx, const request& req, bool register_form,
                             const web::flash& f, http::status status,
                             const std::map<std::string, std::string>& fields) {
  std::string csrf = web::cookie_value(req[http::field::cookie], web::login_csrf_cookie);
  bool fresh = csrf.size() != 64 || csrf.find_first_not_of("0123456789abcdef") != std::string::npos;
  if (fresh) csrf = accounts_service::random_hex();
  auto get = [&](const char* k) {
    auto it = fields.find(k);
    return it == fields.end() ? std::string() : it->second;
  };
  auto res =
      html_response(status, register_form ? web::register_page(csrf, f, get("username"), get("email"))
                                          : web::login_page(csrf, f, get("username"), login_buttons(ctx)));
  if (fresh)
    res.insert(http::field::set_cookie,
               web::set_cookie(web::login_csrf_cookie, csrf, ctx.tls, web::login_csrf_max_age_s));
  return res;
}

web::flash no_flash() { return web::flash(); }

home_query default_home() { return home_query(); }

web::flash flash_of(const api_error& e) {
  web::flash f;
  f.text = e.detail;
  f.error = true;
  return f;
}

web::flash ok_flash(std::string text) {
  web::flash f;
  f.text = std::move(text);
  return f;
}

std::string job_action_message(const std::string& action, job_id id, bool stopping) {
  std::string n = std::to_string(id);
  if (action == "cancel")
    return stopping ? "Cancel requested for job " + n + "; it stops shortly." : "Cancelled job " + n + ".";
  if (action == "archive") return "Archived job " + n + ".";
  if (action == "unarchive") return "Unarchived job " + n + ".";
  if (action == "release") return "Released job " + n + " to the workers.";
  return "Deleted job " + n + ".";
}

std::string created_message(job_id id, const job_request& req) {
  return "Submitted job " + std::to_string(id) + " (" + req.jobtype + " " + req.config + ").";
}

// The form's answer to a refusal: the form again with the reason (and Retry-After on a 429).
response refused_form(const gateway_context& ctx, const request& req, bool register_form, const api_error& e,
                      const std::map<std::string, std::string>& fields) {
  auto res = login_form_response(ctx, req, register_form, flash_of(e), static_cast<http::status>(e.status()),
                                 fields);
  if (e.retry_after_s > 0) res.set(http::field::retry_after, std::to_string(e.retry_after_s));
  return res;
}

net::awaitable<response> login_post(gateway_context& ctx, request req, bool register_form, std::string peer) {
  std::vector<std::string> allowed;
  allowed.push_back("username");
  allowed.push_back("password");
  if (register_form) allowed.push_back("email");
  allowed.push_back("csrf");
  auto in = read_account_input(req, allowed);
  if (in.error)
    co_return login_form_response(ctx, req, register_form, flash_of(*in.error),
                                  static_cast<http::status>(in.error->status()), in.fields);
  std::string name = in.fields["username"];
  if (register_form) {
    auto r =
        co_await accounts_service::register_user(ctx, name, in.fields["email"], in.fields["password"], peer);
    if (!r) co_return refused_form(ctx, req, true, r.error(), in.fields);
    std::map<std::string, std::string> keep;
    keep["username"] = name;
    co_return login_form_response(
        ctx, req, false,
        ok_flash("Registered " + name + ". An administrator will approve the account; then you can log in."),
        http::status::ok, keep);
  }
  std::string old = web::cookie_value(req[http::field::cookie], web::session_cookie);
  auto s = co_await accounts_service::login(ctx, name, in.fields["password"], old, peer);
  if (!s) co_return refused_form(ctx, req, false, s.error(), in.fields);
  auto res = redirect_response("/");
  res.insert(http::field::set_cookie, session_cookie_header(ctx, s->token));
  co_return res;
}

// The live-update fragments: the job's table row, or its field table.
net::awaitable<response> job_fragment(call& c, bool row) {
  auto rec = co_await c.ctx.jobs->async_get(c.params.id);
  if (!rec || !may_read(*c.who, c.params.id, field_or_empty(*rec, "descname")))
    co_return html_response(http::status::not_found, "");
  std::vector<job_record*> self{&*rec};
  co_await mark_deleted_parents(c.ctx, std::move(self));
  auto user = page_user_of(*c.who);
  if (row)
    co_return html_response(
        http::status::ok,
        web::job_row(*rec, user, now_s(c.ctx), web::safe_next(query_value(c.query, "next"), "/")));
  co_return html_response(http::status::ok, web::job_detail(*rec, user, now_s(c.ctx)));
}

// GET /jobs/rows?ids=3,2,1&next=...: the table rows of several jobs in one answer, for a page's
// live updates (a burst of events costs one request per batch, not one per job):
// {"rows":{"3":"<tr ...>",...},"gone":[1]}; "gone" lists the IDs the caller may not (or no longer)
// see. At most rows_per_request IDs, each a job ID; anything else is a 400 with the reason.
constexpr std::size_t rows_per_request = 200;

net::awaitable<response> job_rows_fragment(call& c) {
  std::vector<job_id> ids;
  const std::string ids_text = query_value(c.query, "ids");
  std::string_view list = ids_text;
  auto bad = [](std::string why) {
    boost::json::object o;
    o["error"] = "bad_request";
    o["message"] = std::move(why);
    return make_json_response(http::status::bad_request, o);
  };
  if (list.empty()) co_return bad("ids: a comma-separated list of job IDs is required");
  while (!list.empty()) {
    auto comma = list.find(',');
    auto part = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    auto id = parse_job_id_text(part);
    if (!id) co_return bad("ids: not a job ID: " + std::string(part.substr(0, 24)));
    if (std::find(ids.begin(), ids.end(), *id) != ids.end()) continue;
    if (ids.size() == rows_per_request)
      co_return bad("ids: at most " + std::to_string(rows_per_request) + " jobs per request");
    ids.push_back(*id);
  }
  std::vector<std::string> keys;
  keys.reserve(ids.size());
  for (auto id : ids) keys.push_back(std::to_string(id));
  std::vector<std::vector<std::string>> cmds;
  cmds.reserve(keys.size());
  for (const auto& k : keys) cmds.push_back(redis_cmd("HGETALL", keys_of(c.ctx).job(k)));
  auto replies = co_await c.ctx.redis->async_pipeline(std::move(cmds));
  auto user = page_user_of(*c.who);
  auto next = web::safe_next(query_value(c.query, "next"), "/");
  double now = now_s(c.ctx);
  boost::json::object rows;
  boost::json::array gone;
  std::vector<job_record> recs(ids.size());
  std::vector<job_record*> readable;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i < replies.size()) recs[i] = record_from_reply(replies[i]);
    if (recs[i].empty() || !may_read(*c.who, ids[i], field_or_empty(recs[i], "descname"))) {
      recs[i].clear();
      gone.push_back(ids[i]);
      continue;
    }
    readable.push_back(&recs[i]);
  }
  co_await mark_deleted_parents(c.ctx, std::move(readable));
  for (std::size_t i = 0; i < ids.size(); ++i)
    if (!recs[i].empty()) rows[keys[i]] = web::job_row(recs[i], user, now, next);
  boost::json::object o;
  o["rows"] = std::move(rows);
  o["gone"] = std::move(gone);
  auto res = make_json_response(http::status::ok, o);
  res.set(http::field::cache_control, "no-store");
  co_return res;
}

net::awaitable<response> login_form(call& c, bool reg) {
  if (c.who) co_return redirect_response("/");
  std::map<std::string, std::string> none;
  co_return login_form_response(c.ctx, c.req, reg, no_flash(), http::status::ok, none);
}

net::awaitable<response> job_create_form(call& c) {
  auto& ctx = c.ctx;
  auto& who = *c.who;
  auto& form = c.form;
  json::value v;
  job_request jr;
  std::optional<api_error> e = job_object_from_form(form, v);
  if (!e) e = validate_job(v, ctx.apps, jr);
  if (e)
    co_return co_await render_home(ctx, who, default_home(), form_of(form), flash_of(*e),
                                   http::status::bad_request);
  std::vector<job_request> reqs;
  reqs.push_back(std::move(jr));
  auto made = co_await jobs_service::create(ctx, who, reqs, false);
  if (!made)
    co_return co_await render_home(ctx, who, default_home(), form_of(form), flash_of(made.error()),
                                   static_cast<http::status>(made.error().status()));
  // The message links "Submitted job N" to the new job's page.
  job_id id = made->ids.front();
  co_await set_flash(ctx, who, created_message(id, reqs.front()), false, "/jobs/" + std::to_string(id),
                     "Submitted job " + std::to_string(id));
  co_return redirect_response("/");
}

net::awaitable<response> job_action_form(call& c) {
  auto& ctx = c.ctx;
  auto& who = *c.who;
  const auto& action = c.params.action;
  job_id id = c.params.id;
  std::string next = web::safe_next(c.form["next"], "/");
  std::optional<api_error> refused;
  bool stopping = false;  // a cancel under way (the job's worker is stopping it)
  job_id resubmitted = 0;
  if (action == "cancel") {
    auto r = co_await jobs_service::cancel(ctx, who, id);
    if (!r) refused = r.error();
    else stopping = r->state != "cancelled";
  } else if (action == "archive" || action == "unarchive") {
    auto r = co_await jobs_service::set_archive(ctx, who, id, action == "archive");
    if (!r) refused = r.error();
  } else if (action == "resubmit") {
    auto r = co_await jobs_service::resubmit(ctx, who, id);
    if (!r) refused = r.error();
    else resubmitted = r->ids.front();
  } else if (action == "release") {
    auto r = co_await jobs_service::release(ctx, who, id);
    if (!r) refused = r.error();
  } else {
    auto r = co_await jobs_service::remove(ctx, who, id);
    if (!r) refused = r.error();
  }
  bool ok = !refused;
  if (ok && resubmitted) {
    co_await set_flash(
        ctx, who, "Resubmitted job " + std::to_string(id) + " as job " + std::to_string(resubmitted) + ".",
        false);
  } else if (ok) {
    co_await set_flash(ctx, who, job_action_message(action, id, stopping), false);
  } else co_await set_flash(ctx, who, refused->detail, true);
  if (action == "delete" && ok && next == "/jobs/" + std::to_string(id)) next = "/";
  co_return redirect_response(next);
}

// The jobs table's selection form (POST /jobs/actions): an action on the ticked jobs, or on every
// job the page's filters match ("all"), then back to the page with what happened.
net::awaitable<response> jobs_actions_form(call& c) {
  auto& ctx = c.ctx;
  auto& who = *c.who;
  std::string next = web::safe_next(c.form["next"], "/");
  std::string action = c.form["action"];
  std::vector<job_id> ids;
  std::optional<list_query> query;
  std::string problem;
  if (!is_job_action(action)) problem = "Choose an action for the selected jobs.";
  auto pairs = parse_urlencoded(c.req.body());
  if (problem.empty() && c.form["scope"] == "matching") {
    list_query q;
    if (parse_list_query(c.form["query"], q))
      problem = "The filter of the page could not be read; reload it.";
    else query = std::move(q);
  } else if (problem.empty() && pairs) {
    for (const auto& [k, v] : *pairs) {
      if (k != "ids") continue;
      auto id = parse_job_id_text(v);
      if (id && std::find(ids.begin(), ids.end(), *id) == ids.end()) ids.push_back(*id);
    }
    if (ids.empty()) problem = "No jobs were selected.";
    else if (ids.size() > max_action_ids) problem = "At most 1000 jobs at a time.";
  }
  if (!problem.empty()) {
    co_await set_flash(ctx, who, problem, true);
    co_return redirect_response(next);
  }
  auto r = co_await jobs_service::act(ctx, who, action, std::move(ids), std::move(query));
  if (!r) {
    co_await set_flash(ctx, who, r.error().detail, true);
    co_return redirect_response(next);
  }
  // Built before the co_await: GCC 12 mishandles a conditional's temporary inside one.
  std::string first_failure;
  if (!r->failed.empty()) first_failure = r->failed.front().error.detail;
  std::string message =
      web::actions_message(action, r->done.size(), first_failure, r->failed.size(), r->truncated);
  bool all_failed = !r->failed.empty() && r->done.empty();
  co_await set_flash(ctx, who, std::move(message), all_failed);
  co_return redirect_response(next);
}

net::awaitable<response> admin_action_form(call& c) {
  auto& who = *c.who;
  auto r = co_await admin_service::change(c.ctx, who, c.params.name, c.params.action);
  if (!r && r.error().code == errc::forbidden) co_return error_page_response(403, r.error().detail, who);
  if (!r) co_await set_flash(c.ctx, who, r.error().detail, true);
  else co_await set_flash(c.ctx, who, "Done: " + c.params.action + " " + c.params.name + ".", false);
  co_return redirect_response("/admin");
}

net::awaitable<response> token_create_form(call& c) {
  std::string label = c.form["label"];
  // The form's one-time key, taken: a second POST of the same form (a reload, a double click)
  // creates no second token.
  auto taken = co_await c.ctx.redis->async_exec(
      redis_cmd("EVAL",
                "if redis.call('HGET', KEYS[1], 'token_form') == ARGV[1] then "
                "redis.call('HDEL', KEYS[1], 'token_form') return 1 end return 0",
                "1", keys_of(c.ctx).session(c.who->session_hash), c.form["form"]));
  if (taken.is_error()) throw std::runtime_error("redis: " + taken.str);
  if (c.form["form"].empty() || taken.as_integer() != 1) {
    co_await set_flash(c.ctx, *c.who,
                       "That form was already used or is out of date: no token was created. Use the form "
                       "below to create one.",
                       true);
    co_return redirect_response("/tokens");
  }
  auto token = co_await accounts_service::create_token(c.ctx, c.who->name, label);
  if (!token)
    co_return co_await render_tokens(c.ctx, *c.who, flash_of(token.error()), std::string(), std::string(),
                                     static_cast<http::status>(token.error().status()));
  co_return co_await render_tokens(c.ctx, *c.who, no_flash(), *token, label, http::status::ok);
}

}  // namespace

// ---- authentication of a page's caller (routes.cpp's page_* policies) ---------------------

response page_method_not_allowed(std::string_view allow, const std::string& method) {
  auto res =
      html_response(http::status::method_not_allowed,
                    web::error_page(405, "method " + method.substr(0, 16) + " is not allowed here", nullptr));
  res.set(http::field::allow, allow);
  return res;
}

net::awaitable<std::optional<response>> admit_page_caller(call& c, const route_entry& e) {
  bool post = c.req.method() == http::verb::post;
  if (post && !origin_matches(c.ctx, c.req[http::field::origin], c.req[http::field::host]))
    co_return error_page_response(403, "Cross-site form post refused: this form did not come from this site.",
                                  std::nullopt);
  c.who = co_await accounts_service::session_user(c.ctx, std::string(c.req[http::field::cookie]));
  if (e.auth == auth_policy::page_public) co_return std::nullopt;
  if (!c.who) {
    if (e.auth == auth_policy::page_fragment) co_return html_response(http::status::unauthorized, "");
    if (post)
      co_return error_page_response(403, "Your session has ended; log in again and repeat the action.",
                                    std::nullopt);
    co_return redirect_response("/login");
  }
  if (post) {
    auto form = web::parse_form(c.req.body());
    if (!form) co_return error_page_response(400, "Malformed form.", c.who);
    auto csrf = form->find("csrf");
    if (csrf == form->end() || !web::tokens_equal(csrf->second, c.who->csrf)) {
      log::warn("form refused: csrf mismatch user={} path={}", c.who->name, c.path);
      co_return error_page_response(
          403, "The form has expired or did not come from this site (missing or wrong CSRF token).", c.who);
    }
    c.form = std::move(*form);
  }
  if (e.auth == auth_policy::page_admin && !c.who->admin)
    co_return error_page_response(403, "This page is for administrators.", c.who);
  co_return std::nullopt;
}

// ---- pages (routes.cpp) -----------------------------------------------------------------------

net::awaitable<handler_result> page_home(call& c) {
  auto f = co_await take_flash(c.ctx, *c.who);
  co_return answer(
      co_await render_home(c.ctx, *c.who, parse_home_query(c.query), std::nullopt, f, http::status::ok));
}

net::awaitable<handler_result> page_job(call& c) {
  auto f = co_await take_flash(c.ctx, *c.who);
  std::string logq = query_value(c.query, "logq");
  co_return answer(co_await render_job(c.ctx, *c.who, c.params.id, f, std::move(logq)));
}

net::awaitable<handler_result> page_job_row(call& c) { co_return answer(co_await job_fragment(c, true)); }

net::awaitable<handler_result> page_job_rows(call& c) { co_return answer(co_await job_rows_fragment(c)); }

net::awaitable<handler_result> page_job_fields(call& c) { co_return answer(co_await job_fragment(c, false)); }

net::awaitable<handler_result> page_admin(call& c) {
  auto f = co_await take_flash(c.ctx, *c.who);
  co_return answer(co_await render_admin(c.ctx, *c.who, f));
}

net::awaitable<handler_result> page_tokens(call& c) {
  auto f = co_await take_flash(c.ctx, *c.who);
  co_return answer(co_await render_tokens(c.ctx, *c.who, f, std::string(), std::string(), http::status::ok));
}

net::awaitable<handler_result> page_login_form(call& c) { co_return answer(co_await login_form(c, false)); }

net::awaitable<handler_result> page_register_form(call& c) { co_return answer(co_await login_form(c, true)); }

net::awaitable<handler_result> page_login_post(call& c) {
  co_return answer(co_await login_post(c.ctx, std::move(c.req), false, std::move(c.peer)));
}

net::awaitable<handler_result> page_register_post(call& c) {
  co_return answer(co_await login_post(c.ctx, std::move(c.req), true, std::move(c.peer)));
}

net::awaitable<handler_result> page_logout(call& c) {
  auto form = web::parse_form(c.req.body());
  std::string csrf = form ? (*form)["csrf"] : std::string();
  auto r = co_await accounts_service::logout(c.ctx, std::string(c.req[http::field::cookie]), csrf);
  if (!r)
    co_return answer(error_page_response(
        403, "The form has expired (missing or wrong CSRF token); reload the page.", c.who));
  auto res = redirect_response("/login");
  res.insert(http::field::set_cookie, clear_session_cookie(c.ctx));
  co_return answer(std::move(res));
}

namespace {

// The OpenID Connect state cookie: sent back on the provider's redirect (a cross-site top-level
// navigation, hence SameSite=Lax), only to /login/oidc, for as long as the state lives.
std::string oidc_state_cookie(const gateway_context& ctx, const std::string& state, int max_age) {
  std::string out =
      std::string(oidc::state_cookie) + "=" + state + "; Path=/login/oidc; HttpOnly; SameSite=Lax";
  if (ctx.tls) out += "; Secure";
  out += "; Max-Age=" + std::to_string(max_age);
  return out;
}

// The login page with a message (a refused or unfinished OpenID Connect login); the state cookie
// is cleared.
response oidc_login_page(call& c, const web::flash& f, http::status status) {
  auto res = login_form_response(c.ctx, c.req, false, f, status, std::map<std::string, std::string>());
  res.insert(http::field::set_cookie, oidc_state_cookie(c.ctx, "", 0));
  return res;
}

}  // namespace

net::awaitable<handler_result> page_oidc_login(call& c) {
  auto r = co_await oidc::start(c.ctx, c.params.name, std::string(c.req[http::field::host]), c.peer);
  if (!r) {
    auto res = oidc_login_page(c, flash_of(r.error()), static_cast<http::status>(r.error().status()));
    if (r.error().retry_after_s > 0)
      res.set(http::field::retry_after, std::to_string(r.error().retry_after_s));
    co_return answer(std::move(res));
  }
  auto res = redirect_response(r->url);
  res.insert(http::field::set_cookie, oidc_state_cookie(c.ctx, r->state, oidc::state_ttl_s));
  co_return answer(std::move(res));
}

net::awaitable<handler_result> page_oidc_callback(call& c) {
  auto r = co_await oidc::finish(c.ctx, c.query, std::string(c.req[http::field::cookie]), c.peer);
  if (!r)
    co_return answer(oidc_login_page(c, flash_of(r.error()), static_cast<http::status>(r.error().status())));
  if (!r->session) {
    web::flash f;
    if (r->account_status == "pending") {
      f.text = oidc::why_not_logged_in(*r) + ".";
      if (r->created)
        f.text = "Welcome, " + r->user +
                 ": your account is made and waits for an administrator's approval. Log in again once it is "
                 "approved.";
      co_return answer(oidc_login_page(c, f, r->created ? http::status::ok : http::status::forbidden));
    }
    f.text = oidc::why_not_logged_in(*r) + ".";
    f.error = true;
    co_return answer(oidc_login_page(c, f, http::status::forbidden));
  }
  // The session cookie is SameSite=Strict, and this answer ends a redirect chain the provider's
  // site started: a browser that judges a navigation by the site that started it would not send
  // the cookie on a redirect from here to /. A page of this site that moves on to / (Refresh)
  // starts a same-site navigation, which every browser sends it on. (The Chromium of the browser
  // suite sends it either way.)
  web::flash f;
  f.text = "Logged in as " + r->user + ".";
  f.link = "/";
  f.link_text = "Continue";
  auto res =
      html_response(http::status::ok, web::layout("Logged in", "oidc-done", nullptr, f, std::string()));
  res.set("Refresh", "0; url=/");
  res.insert(http::field::set_cookie, session_cookie_header(c.ctx, r->session->token));
  res.insert(http::field::set_cookie, oidc_state_cookie(c.ctx, "", 0));
  co_return answer(std::move(res));
}

net::awaitable<handler_result> page_help(call& c) {
  web::page_user u;
  if (c.who) u = page_user_of(*c.who);
  co_return answer(html_response(http::status::ok, web::help_page(c.who ? &u : nullptr, c.ctx.apps)));
}

net::awaitable<handler_result> page_status(call& c) {
  co_return answer(html_response(http::status::ok, web::status_page(page_user_of(*c.who))));
}

net::awaitable<handler_result> page_asset(call& c) { co_return answer(asset_response(c.params.name)); }

net::awaitable<handler_result> page_favicon(call&) { co_return answer(no_content_response()); }

net::awaitable<handler_result> page_job_create(call& c) { co_return answer(co_await job_create_form(c)); }

net::awaitable<handler_result> page_job_action(call& c) { co_return answer(co_await job_action_form(c)); }

net::awaitable<handler_result> page_jobs_actions(call& c) { co_return answer(co_await jobs_actions_form(c)); }

net::awaitable<handler_result> page_admin_action(call& c) { co_return answer(co_await admin_action_form(c)); }

net::awaitable<handler_result> page_token_create(call& c) { co_return answer(co_await token_create_form(c)); }

net::awaitable<handler_result> page_preferences(call& c) {
  auto it = c.form.find("email_on_failure");
  bool on = it != c.form.end() && it->second == "1";
  auto r = co_await accounts_service::set_email_on_failure(c.ctx, c.who->name, on);
  std::string text = "E-mail on failure is off.";
  if (on) text = "E-mail on failure is on.";
  if (r) co_await set_flash(c.ctx, *c.who, text, false);
  else co_await set_flash(c.ctx, *c.who, r.error().detail, true);
  co_return answer(redirect_response("/tokens"));
}

net::awaitable<handler_result> page_token_revoke(call& c) {
  auto r = co_await accounts_service::revoke_token(c.ctx, c.who->name, c.params.name);
  if (r) co_await set_flash(c.ctx, *c.who, "Revoked the token.", false);
  else co_await set_flash(c.ctx, *c.who, "No such token (already revoked?).", true);
  co_return answer(redirect_response("/tokens"));
}

}  // namespace descprod::gateway::detail
