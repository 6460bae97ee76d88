// The site status poller (see site_status.hpp).
#include "daemon/site_status.hpp"

#include <algorithm>
#include <boost/json.hpp>

#include "client/http.hpp"
#include "core/log.hpp"
#include "core/redis.hpp"

namespace descprod {

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
// A status document is a few hundred bytes; a larger answer is refused unread.
constexpr std::uint64_t max_answer_bytes = 64 * 1024;

struct fetch_outcome {
  int status = 0;
  std::string body;
  std::string error;  // the site could not be reached
};

// One GET on the calling thread (the monitor's), bounded by `timeout`.
fetch_outcome fetch_blocking(const std::string& url, std::chrono::seconds timeout) {
  fetch_outcome out;
  std::string why;
  auto parts = client::parse_url(url, &why);
  if (!parts) {
    out.error = "bad status_url: " + why;
    return out;
  }
  if (parts->base.empty()) parts->base = "/";
  try {
    client::header_list h;
    h.emplace_back("Accept", "application/json");
    auto r = client::http_request(*parts, "GET", "", {}, h, timeout, max_answer_bytes);
    out.status = r.status;
    out.body = std::move(r.body);
  } catch (const std::exception& e) {
    out.error = std::string("unreachable: ") + e.what();
  }
  return out;
}

net::awaitable<fetch_outcome> fetch_on_thread(std::string url, std::chrono::seconds timeout) {
  co_return fetch_blocking(url, timeout);
}

}  // namespace

std::string site_record_json(const site_record& r) {
  boost::json::object o;
  o["name"] = r.name;
  o["url"] = r.url;
  o["status"] = r.good ? r.good->status : std::string("unknown");
  if (r.good) {
    o["full_name"] = r.good->full_name;
    o["description"] = r.good->description;
    o["notes"] = r.good->notes;
    o["updated_at"] = r.good->updated_at;
    o["good_at"] = r.good_at;
  }
  o["checked"] = r.checked;
  o["error"] = r.error;
  return boost::json::serialize(o);
}

std::chrono::milliseconds site_poll_delay(std::chrono::seconds poll, int failures) {
  using std::chrono::milliseconds;
  milliseconds p = poll;
  milliseconds d = p;
  if (failures == 1) d = p / 4;
  else if (failures == 2) d = p / 2;
  else if (failures == 3) d = p;
  else if (failures == 4) d = p * 2;
  else if (failures >= 5) d = p * 4;
  return std::max(d, milliseconds(1000));
}

site_monitor::site_monitor(daemon_context& ctx, std::vector<site_status_config> sites)
    : ctx_(ctx), sites_(std::move(sites)) {
  for (const auto& s : sites_) {
    auto& r = records_[s.name];
    r.name = s.name;
    r.url = s.status_url;
  }
}

site_monitor::~site_monitor() {
  // A fetch under way ends within its timeout.
  fetcher_.stop();
  fetcher_.join();
}

void site_monitor::start() {
  ctx_.spawn(forget_others(), "site status: forget removed sites");
  for (const auto& s : sites_) ctx_.spawn(poll_loop(s), "site status poll");
}

std::string site_monitor::down_reason(const std::string& site) const {
  auto it = records_.find(site);
  if (it == records_.end()) return std::string();
  // Until its first poll has ended a site might be down: its pilots wait that long (a poll is
  // bounded by its timeout; a site that cannot be reached is not taken for down).
  if (it->second.checked == 0) return "site " + site + "'s status is not known yet";
  if (!it->second.good || it->second.good->status != "down") return std::string();
  const auto& g = *it->second.good;
  std::string why = "site " + site + " is down (" + it->second.url;
  if (!g.description.empty()) why += ": " + g.description;
  if (!g.updated_at.empty()) why += ", updated " + g.updated_at;
  return why + ")";
}

net::awaitable<void> site_monitor::forget_others() {
  auto keys_now = co_await ctx_.redis.async_exec(redis_cmd("HKEYS", ctx_.k.site_status()));
  std::vector<std::string> cmd;
  cmd.emplace_back("HDEL");
  cmd.push_back(ctx_.k.site_status());
  for (const auto& e : keys_now.elements)
    if (!records_.count(e.str)) cmd.push_back(e.str);
  if (cmd.size() > 2) co_await ctx_.redis.async_exec(std::move(cmd));
}

void site_monitor::write(const site_record& r) {
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(redis_cmd("HSET", ctx_.k.site_status(), r.name, site_record_json(r)));
  ctx_.write_detached(std::move(cmds), "site status");
}

net::awaitable<void> site_monitor::poll_loop(site_status_config site) {
  net::steady_timer timer(ctx_.io);
  while (!ctx_.stopping) {
    auto got = co_await net::co_spawn(fetcher_.get_executor(), fetch_on_thread(site.status_url, site.timeout),
                                      net::use_awaitable);
    if (ctx_.stopping) break;
    auto& r = records_[site.name];
    r.checked = epoch_now();
    std::string why = got.error;
    std::optional<site_document> doc;
    if (why.empty() && got.status != 200) why = "HTTP status " + std::to_string(got.status);
    if (why.empty()) doc = parse_site_document(got.body, why);
    if (doc) {
      std::string before = "unknown";
      if (r.good) before = r.good->status;
      if (before != doc->status)
        log::info("site status site={} status={} was={} description={}", site.name, doc->status, before,
                  doc->description);
      r.good = std::move(doc);
      r.good_at = r.checked;
      r.error.clear();
      r.failures = 0;
    } else {
      ++r.failures;
      if (r.failures == 1 || r.error != why)
        log::warn("site status poll failed site={} url={} error={} failures={}", site.name, site.status_url,
                  why, r.failures);
      r.error = why;
    }
    write(r);
    timer.expires_after(site_poll_delay(site.poll, r.failures));
    co_await timer.async_wait(use_tuple);
  }
}

}  // namespace descprod
