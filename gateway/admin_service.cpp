// The admin service (admin_service.hpp). GCC 12 coroutine rules (docs/building.md#conventions):
// commands are built by the plain functions at the top; coroutine parameters are values.
#include "gateway/admin_service.hpp"

#include <algorithm>

#include "core/async_util.hpp"
#include "core/keys.hpp"
#include "core/log.hpp"
#include "gateway/api.hpp"
#include "gateway/events.hpp"
#include "gateway/handler_detail.hpp"

namespace descprod::gateway::admin_service {

using detail::keys_of;

namespace {

// Global-stream entries looked at for the one-minute throughput.
constexpr int throughput_scan = 20000;
// SCAN rounds for worker hashes (each COUNT 1000).
constexpr int worker_scan_rounds = 100;
// Live pilots shown (the pilots set holds at most pilots.max of them in practice).
constexpr std::size_t max_pilots_shown = 1000;

// Pilots by Slurm job ID, numerically (the table is by age).
void sort_pilots(std::vector<job_record>& pilots) {
  std::sort(pilots.begin(), pilots.end(), [](const job_record& a, const job_record& b) {
    auto ia = field_or_empty(a, "id"), ib = field_or_empty(b, "id");
    if (ia.size() != ib.size()) return ia.size() < ib.size();
    return ia < ib;
  });
}

std::vector<std::string> pilot_keys(const keys& k, const redis_reply& ids) {
  std::vector<std::string> out;
  for (const auto& e : ids.elements) {
    if (out.size() >= max_pilots_shown) break;
    out.push_back(k.pilot(e.as_string()));
  }
  return out;
}

// Pending users first, then by name.
void sort_users(std::vector<job_record>& users) {
  std::sort(users.begin(), users.end(), [](const job_record& a, const job_record& b) {
    bool pa = field_or_empty(a, "status") == "pending", pb = field_or_empty(b, "status") == "pending";
    if (pa != pb) return pa;
    return field_or_empty(a, "name") < field_or_empty(b, "name");
  });
}

api_error refused_change(const std::string& name, const std::string& action, const account_change& c) {
  if (c.reason == "missing") return not_found("no such user: " + name);
  return conflict("cannot " + action + " " + name + ": the account is " + c.status);
}

bool loses_reading(account_action a) {
  return a == account_action::disable || a == account_action::reject || a == account_action::remove_admin;
}

}  // namespace

net::awaitable<std::vector<job_record>> users(gateway_context& ctx) {
  const auto& k = keys_of(ctx);
  auto names = reply_strings(co_await ctx.redis->async_exec(redis_cmd("SMEMBERS", k.users())));
  std::vector<std::string> user_keys;
  for (const auto& n : names) user_keys.push_back(k.user(n));
  auto replies = co_await ctx.redis->async_pipeline(hgetall_each(user_keys));
  std::vector<job_record> out;
  for (std::size_t i = 0; i < names.size() && i < replies.size(); ++i) {
    auto rec = record_from_reply(replies[i]);
    if (rec.empty()) continue;
    rec.erase("password_hash");
    rec["name"] = names[i];
    out.push_back(std::move(rec));
  }
  sort_users(out);
  co_return out;
}

net::awaitable<overview> overview_of(gateway_context& ctx) {
  const auto& k = keys_of(ctx);
  overview o;
  std::string cursor = "0";
  std::vector<std::string> worker_keys;
  for (int round = 0; round < worker_scan_rounds; ++round) {
    auto reply = co_await ctx.redis->async_exec(
        redis_cmd("SCAN", cursor, "MATCH", k.worker_pattern(), "COUNT", "1000"));
    if (reply.elements.size() != 2) break;
    cursor = reply.elements[0].as_string();
    for (const auto& e : reply.elements[1].elements) worker_keys.push_back(e.as_string());
    if (cursor == "0") break;
  }
  std::sort(worker_keys.begin(), worker_keys.end());
  worker_keys.erase(std::unique(worker_keys.begin(), worker_keys.end()), worker_keys.end());
  o.workers = records_from_replies(co_await ctx.redis->async_pipeline(hgetall_each(worker_keys)));
  auto pilot_ids = co_await ctx.redis->async_exec(redis_cmd("SMEMBERS", k.pilots()));
  o.pilots = records_from_replies(co_await ctx.redis->async_pipeline(hgetall_each(pilot_keys(k, pilot_ids))));
  sort_pilots(o.pilots);
  o.queue_depth = (co_await ctx.redis->async_exec(redis_cmd("ZCARD", k.queue()))).as_integer();
  long long since_ms = static_cast<long long>((detail::now_s(ctx) - 60.0) * 1000.0);
  auto recent = co_await ctx.redis->async_exec(redis_cmd(
      "XREVRANGE", k.events(), "+", std::to_string(since_ms), "COUNT", std::to_string(throughput_scan)));
  for (const auto& e : parse_stream_events(recent)) {
    ++o.events_last_minute;
    auto st = parse_job_state(e.state);
    if (e.type == "transition" && st && is_terminal(*st)) ++o.finished_last_minute;
  }
  co_return o;
}

net::awaitable<result<account_change>> change(gateway_context& ctx, principal who, std::string name,
                                              std::string action) {
  if (!who.admin) co_return forbidden("administrators only");
  auto a = parse_account_action(action);
  if (!a) co_return bad_request("unknown action " + action.substr(0, 20));
  if (name == who.name &&
      (*a == account_action::disable || *a == account_action::remove_admin || *a == account_action::reject))
    co_return conflict("you cannot " + action + " your own account");
  auto c = parse_account_change(
      co_await ctx.redis->async_exec(account_action_cmd(ctx.prefix, name, *a, detail::now_s(ctx))));
  if (!c.ok) co_return refused_change(name, action, c);
  // An account that may no longer read (disabled, rejected) or no longer reads everything (no
  // longer an admin) loses its live streams at once; a reconnect is checked afresh.
  if (ctx.hub && loses_reading(*a))
    ctx.hub->close_streams(stream_owner::user, name, "the account was changed: " + action);
  log::info("account changed by={} user={} action={} status={} role={}", who.name, name, action, c.status,
            c.role);
  co_return c;  // the script's status and role after the change
}

}  // namespace descprod::gateway::admin_service
