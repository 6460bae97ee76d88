// The admin service: the accounts list, the overview of the running service (workers, pilots,
// queue depth, the last minute's throughput) and an administrator's change of an account
// (docs/security.md, docs/web.md). Typed results (errors.hpp); nothing of HTTP. Presenters: the
// JSON API (accounts_api.cpp) and the admin page (pages.cpp).
//
// Thread-safety: as handler.hpp (one io_context thread).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <string>
#include <vector>

#include "core/accounts.hpp"
#include "core/job.hpp"
#include "gateway/errors.hpp"
#include "gateway/handler.hpp"

namespace descprod::gateway::admin_service {

// Every account but its password hash (with its `name`), pending ones first, then by name.
net::awaitable<std::vector<job_record>> users(gateway_context& ctx);

struct overview {
  std::vector<job_record> workers;  // the worker hashes, by key
  std::vector<job_record> pilots;   // the live ones (the pilots set), by Slurm job ID
  long long queue_depth = 0;
  long long finished_last_minute = 0;
  long long events_last_minute = 0;
};
net::awaitable<overview> overview_of(gateway_context& ctx);

// `who` (an administrator) applies `action` (account_action's names) to the account `name`.
// Forbidden for a non-administrator; bad_request for an unknown action; conflict for disabling,
// rejecting or demoting oneself and for an action the account's status does not allow;
// not_found for no such account. The result is the account's status and role afterwards. An
// account that may no longer read everything loses its live event streams at once.
net::awaitable<result<account_change>> change(gateway_context& ctx, principal who, std::string name,
                                              std::string action);

}  // namespace descprod::gateway::admin_service
