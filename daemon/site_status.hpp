// The status of the computing sites (docs/operators.md, Site status): the daemon polls each site
// of the config's `sites:` list (a JSON document in the form of NERSC's Superfacility status API,
// https://api.nersc.gov/api/v1.2/status/<system>: name, full_name, description, status, notes,
// updated_at), keeps the last good answer with its age, and writes one record per site into the
// hash <prefix>sites:status (field: the site's name, value: the record's JSON, below), which the
// gateways serve (GET /api/sites, the pages' header badges). A pilot is not submitted to a site
// reported `down` (pilot_manager asks down_reason()).
//
// A poll is one GET (http or https, the system's CA certificates, the timeout of the site's
// config, an answer of at most 64 KiB) on a thread of the monitor's own, so that a slow site
// stalls nothing. A failed poll (the site unreachable, an HTTP status other than 200, an answer
// that is not such a document) keeps the last good answer, records the error and retries sooner
// than the poll interval at first, then backs off: poll_s × 1/4, 1/2, 1, 2, 4 (at most 4 ×
// poll_s), so a flapping site is not hammered and a site back up is seen soon.
//
// The record (JSON):
//   name, url         the site and what is polled
//   status            the last good answer's status (lower case: active, degraded, down, ...), or
//                     "unknown" before any good answer
//   full_name, description, notes, updated_at    from the last good answer (notes: a list joined
//                     by "; "), text only (control characters dropped, each at most 2,000 bytes)
//   checked           when the last poll ended (epoch s);  good_at: when the last good answer came
//                     (epoch s; absent before any)
//   error             why the last poll failed ("" when it did not)
//
// Thread-safety: runs on the daemon's io_context thread; the fetch alone runs on the monitor's
// thread and hands its answer back.
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.hpp"
#include "core/site_document.hpp"
#include "daemon/context.hpp"

namespace descprod {

// What the daemon knows of one site.
struct site_record {
  std::string name, url;
  std::optional<site_document> good;  // the last good answer
  double good_at = 0;                 // when it came (epoch s)
  double checked = 0;                 // when the last poll ended (epoch s)
  std::string error;                  // of the last poll ("" when it succeeded)
  int failures = 0;                   // polls failed in a row
};

// The record as written to <prefix>sites:status.
std::string site_record_json(const site_record& r);

// The wait after a poll: the site's interval after a good one; after the k-th failure in a row
// poll/4, poll/2, poll, 2 × poll, then 4 × poll (at least 1 s).
std::chrono::milliseconds site_poll_delay(std::chrono::seconds poll, int failures);

class site_monitor {
 public:
  site_monitor(daemon_context& ctx, std::vector<site_status_config> sites);
  ~site_monitor();
  site_monitor(const site_monitor&) = delete;
  site_monitor& operator=(const site_monitor&) = delete;

  // Removes the records of sites no longer configured, then polls every site until the daemon
  // stops. Spawn once.
  void start();
  // The reason pilots are not submitted to `site` now ("" when they may be): the site's last good
  // answer says `down`, or its first poll has not ended yet.
  std::string down_reason(const std::string& site) const;

 private:
  net::awaitable<void> poll_loop(site_status_config site);
  net::awaitable<void> forget_others();
  void write(const site_record& r);

  daemon_context& ctx_;
  std::vector<site_status_config> sites_;
  std::map<std::string, site_record> records_;
  net::thread_pool fetcher_{1};
};

}  // namespace descprod
