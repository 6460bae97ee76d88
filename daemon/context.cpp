// The daemon's shared context (see context.hpp).
#include "daemon/context.hpp"

#include <cstdio>

#include "core/async_util.hpp"
#include "core/job.hpp"
#include "core/log.hpp"

namespace descprod {

double epoch_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string fmt_double(double d) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f", d);
  return buf;
}

std::string hex_id(const std::string& routing) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : routing) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

void count_job_end(daemon_stats& s, std::string_view state) {
  auto st = parse_job_state(state);
  if (!st || !is_terminal(*st)) return;
  if (*st == job_state::done) ++s.jobs_done;
  else if (*st == job_state::cancelled) ++s.jobs_cancelled;
  else ++s.jobs_failed;  // failed, timeout, killed, lost
}

void daemon_context::ended(std::string_view state) {
  auto st = parse_job_state(state);
  if (!st || !is_terminal(*st)) return;
  count_job_end(stats, state);
  if (job_ended) job_ended();
}

refusal_view interpret_refusal(const transition_result& r) {
  refusal_view out;
  out.reason = std::string(to_string(r.reason));
  out.broken = r.reason == refusal::error;
  return out;
}

daemon_context::daemon_context(net::io_context& io_ref, descprod_config c, app_registry a)
    : io(io_ref),
      cfg(std::move(c)),
      apps(std::move(a)),
      redis(io_ref.get_executor(), cfg.redis.endpoint),
      st(redis, cfg.redis.prefix),
      k(cfg.redis.prefix),
      token_mode(cfg.daemon.worker_auth != "open") {
  st.set_replication(cfg.redis.wait_replicas, std::chrono::milliseconds(cfg.redis.wait_timeout_ms));
}

void daemon_context::send_worker(const std::string& routing, std::string_view command,
                                 const boost::json::object& body) {
  std::vector<std::string> frames{routing, std::string(command), boost::json::serialize(body)};
  if (!send_frames || !send_frames(frames))
    log::warn("send to worker failed peer={} command={}", hex_id(routing), command);
}

void daemon_context::spawn(net::awaitable<void> task, const char* what) {
  spawn_logged(io.get_executor(), std::move(task), what, [this] { return stopping; });
}

void daemon_context::write_detached(std::vector<std::vector<std::string>> cmds, const char* what) {
  spawn(
      [](daemon_context* self, std::vector<std::vector<std::string>> cmds) -> net::awaitable<void> {
        try {
          auto replies = co_await self->redis.async_pipeline(std::move(cmds));
          for (const auto& r : replies)
            if (r.is_error()) log::warn("redis write failed error={}", r.str);
        } catch (const boost::system::system_error& e) {
          if (self->redis_failed) self->redis_failed(e);  // written again next time
        }
      }(this, std::move(cmds)),
      what);
}

std::string daemon_context::worker_record_ttl() const {
  return std::to_string(std::max<long long>(1, 3 * cfg.daemon.lease_timeout.count() / 1000));
}

}  // namespace descprod
