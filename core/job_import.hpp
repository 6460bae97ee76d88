// Migration from DESCprod (descprod-admin import-jobs): DESCprod's job table — a MySQL export of
// its 18 columns as CSV (a header row naming the columns) or JSON (an array of objects, or an
// object holding one such array) — read into jobs of this service under their own IDs. Pure: no
// I/O; the store's import script writes them (store.hpp, import_command).
//
// A job's state comes from what DESCprod recorded: ended (stop_time) with return_status 0 done,
// 124 timeout, < 0 killed, otherwise failed; started but not ended: lost (nothing runs it any
// more); never started: held, so no worker runs it unless its owner releases it.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/job.hpp"

namespace descprod {

struct imported_job {
  job_id id = 0;
  std::string owner;
  std::optional<job_id> parent;
  job_state state = job_state::held;
  job_record fields;  // everything the job hash gets, state and owner included
};

struct import_result {
  std::vector<imported_job> jobs;
  std::vector<std::string> errors;  // "line 7: ..." (CSV) or "jobs[3]: ..." (JSON); nothing imports then
};

// `format`: "csv", "json", or "" (JSON when the text starts with '[' or '{', else CSV).
import_result parse_descprod_jobs(std::string_view text, std::string_view format = {});

// The rows of a CSV text (RFC 4180: quoted fields with "" for a quote, newlines inside quotes);
// nullopt with `why` on an unterminated quote.
std::optional<std::vector<std::vector<std::string>>> parse_csv(std::string_view text, std::string& why);

}  // namespace descprod
