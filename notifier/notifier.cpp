// descprod-notifier's service (see notifier.hpp). GCC 12 coroutine rules
// (docs/building.md#conventions): no lambdas and no braced temporaries in coroutine bodies; values
// go to Redis as ARGV, never into the Lua text.
#include "notifier/notifier.hpp"

#include <unistd.h>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <chrono>
#include <ctime>

#include "core/accounts.hpp"
#include "core/async_util.hpp"
#include "core/crypto.hpp"
#include "core/log.hpp"
#include "notifier/mail.hpp"
#include "notifier/smtp.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace descprod::notify {

namespace {

// KEYS: lock, cursor, due, pending, sent, then notify:jobs:<owner> per owner.
// ARGV: me, new cursor, now, delay_s, interval_s, max_listed, then per owner: name, "id,id,...".
// Adds each owner's failed jobs to their pending mail, schedules it (not before `now + delay`,
// nor before the last mail + interval), and moves the cursor, all or nothing; -1 when this
// notifier no longer holds the lease.
constexpr const char* intake_lua = R"LUA(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local now = tonumber(ARGV[3])
local delay = tonumber(ARGV[4])
local interval = tonumber(ARGV[5])
local maxl = tonumber(ARGV[6])
local owners = #KEYS - 5
for i = 1, owners do
  local owner = ARGV[5 + 2 * i]
  local list = KEYS[5 + i]
  local n = 0
  local len = redis.call('LLEN', list)
  for id in string.gmatch(ARGV[6 + 2 * i], '[^,]+') do
    if len < maxl then redis.call('RPUSH', list, id); len = len + 1 end
    n = n + 1
  end
  redis.call('HINCRBY', KEYS[4], owner, n)
  if not redis.call('ZSCORE', KEYS[3], owner) then
    local last = tonumber(redis.call('HGET', KEYS[5], owner) or '0') or 0
    local due = math.max(now + delay, last + interval)
    redis.call('ZADD', KEYS[3], string.format('%.3f', due), owner)
  end
end
redis.call('SET', KEYS[2], ARGV[2])
return owners
)LUA";

// KEYS: lock, due, pending, sent, notify:jobs:<user>. ARGV: me, user, listed, total, now, next due.
// Removes what one mail carried (the first `listed` IDs, `total` from the count) and, when more
// failures came meanwhile, schedules the next mail; -1 without the lease.
constexpr const char* ack_lua = R"LUA(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('LTRIM', KEYS[5], tonumber(ARGV[3]), -1)
local left = redis.call('HINCRBY', KEYS[3], ARGV[2], -tonumber(ARGV[4]))
redis.call('HSET', KEYS[4], ARGV[2], ARGV[5])
if left <= 0 then
  redis.call('HDEL', KEYS[3], ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('DEL', KEYS[5])
else
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[2])
end
return math.max(left, 0)
)LUA";

// KEYS: lock. ARGV: me, ttl_ms. Renews the lease when this notifier holds it.
constexpr const char* renew_lua = R"LUA(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
)LUA";

std::string fmt_s(double s) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f", s);
  return buf;
}

std::string host_name() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

std::string domain_of(const std::string& address) {
  auto at = address.rfind('@');
  return at == std::string::npos ? std::string("descprod") : address.substr(at + 1);
}

}  // namespace

notifier::notifier(net::io_context& io, descprod_config cfg)
    : io_(io), cfg_(std::move(cfg)), keys_(cfg_.redis.prefix), stop_timer_(io) {
  me_ = host_name() + ":" + std::to_string(::getpid()) + ":" + sha256_hex(new_token()).substr(0, 8);
}

double notifier::now_s() const {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void notifier::stop() {
  stopped_ = true;
  stop_timer_.cancel();
  // The tail's XREAD BLOCK ends at once; the other connection stays to hand the lease over.
  if (tail_) tail_->close();
}

net::awaitable<void> notifier::sleep(std::chrono::milliseconds d) {
  auto until = std::chrono::steady_clock::now() + d;
  while (!stopped_ && std::chrono::steady_clock::now() < until) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    net::steady_timer t(io_);
    t.expires_after(std::min(left, std::chrono::milliseconds(200)));
    boost::system::error_code ec;
    co_await t.async_wait(net::redirect_error(net::use_awaitable, ec));
  }
}

net::awaitable<bool> notifier::take_lock() {
  auto r = co_await redis_->async_exec(
      redis_cmd("SET", keys_.notify_lock(), me_, "NX", "PX", std::to_string(lock_ttl.count())));
  co_return r.type == redis_reply::kind::status&& r.str == "OK";
}

net::awaitable<bool> notifier::renew_lock() {
  auto r = co_await redis_->async_exec(
      redis_cmd("EVAL", renew_lua, "1", keys_.notify_lock(), me_, std::to_string(lock_ttl.count())));
  co_return r.as_integer() == 1;
}

net::awaitable<void> notifier::run() {
  backoff wait(std::chrono::milliseconds(100),
               reconnect_backoff_max(cfg_.redis.endpoint, std::chrono::milliseconds(10000)));
  bool said_standby = false;
  while (!stopped_) {
    try {
      redis_ = std::make_unique<redis_client>(io_.get_executor(), cfg_.redis.endpoint);
      tail_ = std::make_unique<redis_client>(io_.get_executor(), cfg_.redis.endpoint);
      co_await redis_->async_connect();
      co_await tail_->async_connect();
      wait.reset();
      while (!stopped_ && !(co_await take_lock())) {
        if (!said_standby) log::info("notifier standby: another notifier holds the lease");
        said_standby = true;
        co_await sleep(lock_renew);
      }
      if (stopped_) break;
      said_standby = false;
      leader_ = true;
      holding_ = true;
      auto cur = co_await redis_->async_exec(redis_cmd("GET", keys_.notify_cursor()));
      if (cur.is_nil()) {
        // The first start: from the stream's end (failures from before are not mailed).
        auto last =
            co_await redis_->async_exec(redis_cmd("XREVRANGE", keys_.events(), "+", "-", "COUNT", "1"));
        cursor_ = "0-0";
        if (!last.elements.empty() && !last.elements[0].elements.empty())
          cursor_ = last.elements[0].elements[0].as_string();
        co_await redis_->async_exec(redis_cmd("SET", keys_.notify_cursor(), cursor_, "NX"));
      } else {
        cursor_ = cur.as_string();
      }
      log::info("notifier leading id={} cursor={} relay={}:{}", me_, cursor_, cfg_.notify.smtp_host,
                cfg_.notify.smtp_port);
      using namespace boost::asio::experimental::awaitable_operators;
      co_await (intake_loop() && send_loop());
      leader_ = false;
    } catch (const std::exception& e) {
      leader_ = false;
      if (!stopped_)
        log::warn("notifier redis unavailable error={} retry_in_ms={}", e.what(), wait.peek().count());
    }
    if (!stopped_ && !leader_) co_await sleep(wait.next());
  }
  if (redis_ && redis_->connected() && holding_) {
    // Hand the lease over at once (best effort).
    try {
      co_await redis_->async_exec(redis_cmd("EVAL",
                                            "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                                            "return redis.call('DEL', KEYS[1]) end return 0",
                                            "1", keys_.notify_lock(), me_));
    } catch (const std::exception&) {
    }
  }
  if (redis_) redis_->close();
  if (tail_) tail_->close();
}

net::awaitable<void> notifier::intake_loop() {
  try {
    co_await follow();
  } catch (const std::exception&) {
    leader_ = false;  // the send loop ends too
    throw;
  }
}

net::awaitable<void> notifier::follow() {
  auto renewed = std::chrono::steady_clock::now();
  while (leader_ && !stopped_) {
    if (std::chrono::steady_clock::now() - renewed >= lock_renew) {
      if (!(co_await renew_lock())) {
        log::warn("notifier lost its lease id={}", me_);
        leader_ = false;
        break;
      }
      renewed = std::chrono::steady_clock::now();
    }
    auto reply = co_await tail_->async_exec(
        redis_cmd("XREAD", "BLOCK", "1000", "COUNT", "1000", "STREAMS", keys_.events(), cursor_));
    if (reply.is_error()) throw std::runtime_error("XREAD: " + reply.str);
    if (reply.is_nil() || reply.elements.empty() || reply.elements[0].elements.size() != 2) continue;
    co_await intake(reply.elements[0].elements[1]);
  }
}

net::awaitable<void> notifier::intake(const redis_reply& entries) {
  std::string last = cursor_;
  auto by_owner = failures_by_owner(entries, last);
  std::vector<std::string> owners;
  std::vector<std::vector<std::string>> reads;
  for (const auto& kv : by_owner) {
    owners.push_back(kv.first);
    reads.push_back(redis_cmd("HMGET", keys_.user(kv.first), std::string(user_notify_failed_field), "email"));
  }
  std::vector<redis_reply> prefs;
  if (!reads.empty()) prefs = co_await redis_->async_pipeline(std::move(reads));
  std::vector<std::string> cmd =
      redis_cmd("EVAL", intake_lua, "0", keys_.notify_lock(), keys_.notify_cursor(), keys_.notify_due(),
                keys_.notify_pending(), keys_.notify_sent());
  std::vector<std::string> args =
      redis_cmd(me_, last, fmt_s(now_s()), fmt_s(cfg_.notify.delay.count() / 1000.0),
                fmt_s(cfg_.notify.interval.count() / 1000.0), std::to_string(cfg_.notify.max_listed));
  std::size_t taken = 0, jobs = 0;
  for (std::size_t i = 0; i < owners.size() && i < prefs.size(); ++i) {
    const auto& p = prefs[i];
    if (p.elements.size() != 2 || p.elements[0].as_string() != "1" || !valid_email(p.elements[1].as_string()))
      continue;
    const auto& ids = by_owner[owners[i]];
    std::string joined;
    for (const auto& id : ids) {
      if (!joined.empty()) joined += ',';
      joined += id;
    }
    cmd.push_back(keys_.notify_jobs(owners[i]));
    args.push_back(owners[i]);
    args.push_back(joined);
    ++taken;
    jobs += ids.size();
  }
  cmd[2] = std::to_string(5 + taken);
  for (auto& a : args) cmd.push_back(std::move(a));
  auto r = co_await redis_->async_exec(std::move(cmd));
  if (r.is_error()) throw std::runtime_error("intake script: " + r.str);
  if (r.as_integer() < 0) {
    log::warn("notifier lost its lease id={}", me_);
    leader_ = false;
    co_return;
  }
  cursor_ = last;
  if (taken > 0) log::info("failures taken in users={} jobs={} cursor={}", taken, jobs, cursor_);
}

net::awaitable<void> notifier::send_loop() {
  backoff wait(cfg_.notify.backoff_initial, cfg_.notify.backoff_max);
  while (leader_ && !stopped_) {
    auto due = co_await redis_->async_exec(
        redis_cmd("ZRANGEBYSCORE", keys_.notify_due(), "-inf", fmt_s(now_s()), "LIMIT", "0", "20"));
    if (due.elements.empty()) {
      co_await sleep(std::chrono::milliseconds(200));
      continue;
    }
    for (const auto& u : due.elements) {
      if (!leader_ || stopped_) break;
      bool ok = co_await send_one(u.as_string());
      if (ok) {
        wait.reset();
        continue;
      }
      auto d = wait.next();
      log::warn("mail relay unavailable retry_in_ms={}", d.count());
      auto until = std::chrono::steady_clock::now() + d;
      while (leader_ && !stopped_ && std::chrono::steady_clock::now() < until)
        co_await sleep(std::chrono::milliseconds(100));
      break;
    }
  }
}

net::awaitable<void> notifier::ack(std::string user, long long listed, long long total, double next_due_s) {
  auto r = co_await redis_->async_exec(
      redis_cmd("EVAL", ack_lua, "5", keys_.notify_lock(), keys_.notify_due(), keys_.notify_pending(),
                keys_.notify_sent(), keys_.notify_jobs(user), me_, user, std::to_string(listed),
                std::to_string(total), fmt_s(now_s()), fmt_s(next_due_s)));
  if (r.is_error()) throw std::runtime_error("ack script: " + r.str);
  if (r.as_integer() == -1 && r.type == redis_reply::kind::integer) leader_ = false;
}

net::awaitable<bool> notifier::send_one(std::string user) {
  std::vector<std::vector<std::string>> reads;
  reads.push_back(redis_cmd("HMGET", keys_.user(user), "email", std::string(user_notify_failed_field)));
  reads.push_back(redis_cmd("LRANGE", keys_.notify_jobs(user), "0", "-1"));
  reads.push_back(redis_cmd("HGET", keys_.notify_pending(), user));
  auto r = co_await redis_->async_pipeline(std::move(reads));
  std::string email = r[0].elements.size() == 2 ? r[0].elements[0].as_string() : std::string();
  bool opted = r[0].elements.size() == 2 && r[0].elements[1].as_string() == "1";
  std::vector<std::string> ids;
  for (const auto& e : r[1].elements) ids.push_back(e.as_string());
  long long total = r[2].as_integer();
  long long listed = static_cast<long long>(ids.size());
  double next_due = now_s() + cfg_.notify.interval.count() / 1000.0;
  if (!opted || !valid_email(email)) {
    log::info("failure mail dropped user={} reason={} jobs={}", user, opted ? "no valid e-mail" : "opted out",
              total);
    co_await ack(user, listed, std::max(total, listed), next_due);
    co_return true;
  }
  std::vector<std::vector<std::string>> job_reads;
  for (const auto& id : ids)
    job_reads.push_back(redis_cmd("HMGET", keys_.job(id), "jobtype", "config", "state", "progress"));
  std::vector<redis_reply> recs;
  if (!job_reads.empty()) recs = co_await redis_->async_pipeline(std::move(job_reads));
  std::vector<failed_job> jobs;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    failed_job j;
    j.id = ids[i];
    if (i < recs.size() && recs[i].elements.size() == 4) {
      j.jobtype = recs[i].elements[0].as_string();
      j.config = recs[i].elements[1].as_string();
      j.state = recs[i].elements[2].as_string();
      j.progress = recs[i].elements[3].as_string();
    }
    jobs.push_back(std::move(j));
  }
  auto m = failure_mail(cfg_.notify.from, email, user, jobs, std::max(total, listed), cfg_.notify.base_url,
                        static_cast<std::size_t>(cfg_.notify.max_listed));
  std::string mid = std::to_string(static_cast<long long>(now_s())) + "." +
                    sha256_hex(new_token()).substr(0, 16) + "@" + domain_of(cfg_.notify.from);
  std::string text = render_message(m, std::time(nullptr), mid);
  smtp_settings s;
  s.host = cfg_.notify.smtp_host;
  s.port = cfg_.notify.smtp_port;
  s.helo = cfg_.notify.helo;
  s.timeout = cfg_.notify.timeout;
  bool failed = false, permanent = false;
  try {
    co_await smtp_send(s, cfg_.notify.from, email, text);
  } catch (const smtp_error& e) {
    failed = true;
    permanent = e.permanent;
    if (!e.permanent) log::warn("failure mail not sent user={} jobs={} error={}", user, total, e.what());
    else log::error("failure mail refused for good user={} jobs={} error={}", user, total, e.what());
  }
  if (failed && !permanent) co_return false;
  if (failed) {
    co_await ack(user, listed, std::max(total, listed), next_due);
    co_return true;
  }
  co_await ack(user, listed, std::max(total, listed), next_due);
  ++sent_;
  log::info("failure mail sent user={} jobs={} listed={}", user, std::max(total, listed), listed);
  co_return true;
}

}  // namespace descprod::notify
