// The store's Lua scripts, as store.cpp calls them: their numbers, and the KEYS every one gets
// first. The sources and their convention are in store_scripts.cpp.
#pragma once

#include <string>
#include <vector>

#include "core/keys.hpp"

namespace descprod::store_lua {

enum script_id {
  s_create,
  s_lease,
  s_start,
  s_progress,
  s_finish,
  s_requeue,
  s_cancel,
  // The gateway's job management.
  s_archive,
  s_delete,
  // The jobs-by-state counts: start a recount, and count the next batch of job IDs.
  s_recount_init,
  s_recount_step,
  // Many transitions in one call: the daemon's dispatch, and its outbox's worker reports.
  s_lease_many,
  s_reports,
  // Held jobs and dependencies: a held job handed to the workers; the dependents of ended jobs
  // released (the daemon, in batches).
  s_release,
  s_deps_release,
  // descprod-admin import-jobs: DESCprod's jobs under their own IDs.
  s_import,
  // The daemon's leases written again into a Redis that came back without them (restore_leases).
  s_restore_leases,
  s_count
};

// KEYS[1..5] of every script, in this order (the prelude names them Q, L, EV, SK, NID).
inline std::vector<std::string> head_keys(const keys& k) {
  return {k.queue(), k.leases(), k.events(), k.jobs_by_state(), k.next_job_id()};
}
inline constexpr int head_key_count = 5;

}  // namespace descprod::store_lua
