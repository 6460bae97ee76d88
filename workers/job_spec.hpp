// What a worker is asked to run: the checked form of the daemon's `job` message (docs/protocol.md,
// docs/architecture.md#app-contract).
//   {"job": {record as job_to_json}, "attempt": a,
//    "app": {"argv": [...], "env": {"K": "V"}, "time_limit_s": 0, "login_shell": false, "cores": 1,
//             "umask": 23, "memory_max"?: bytes, "limit_cores"?: cores},
//    "token": "<the job-scoped DESCPROD_TOKEN>", "log_max"?: bytes}
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/job.hpp"

namespace descprod::workers {

struct job_spec {
  job_id id = 0;
  int attempt = 1;
  job_record record;                                     // the job map, every value a string
  std::vector<std::string> argv;                         // the app's argv, exec'd as is
  std::vector<std::pair<std::string, std::string>> env;  // added to the worker's environment
  double time_limit_s = 0;                               // 0: none
  bool login_shell = false;                              // run through `bash -l` (positional args)
  std::string token;                                     // DESCPROD_TOKEN: scoped to this job
  int umask = 027;           // the app's umask (apps.yaml umask; 027 when the daemon sends none)
  long long memory_max = 0;  // bytes, the job's cgroup memory.max (0: none)
  int cores = 0;             // app.limit_cores: the job's cgroup cpu.max in cores (0: none)
  // The most log bytes shipped to the daemon (`log_max` of the job message; the daemon's
  // daemon.job_log_max_bytes). The file in the run directory keeps everything.
  std::uintmax_t log_max_bytes = 16 * 1024 * 1024;
};

// Checks and converts a `job` message body. On a malformed body returns nullopt and says what was
// wrong in `why` (for the log line). Never throws on bad input.
std::optional<job_spec> parse_job_message(const boost::json::object& body, std::string& why);

// The job map as strings, from its JSON form: numbers printed plainly, booleans as 0/1, null dropped.
job_record record_from_json(const boost::json::object& job);

// The script `bash -l -c` runs for a login-shell app (command_argv), its arguments $0 "$@".
inline constexpr std::string_view login_shell_script =
    "s=$(set); printf '%s\\n' \"${s//\"$DESCPROD_TOKEN\"/<redacted>}\" >descprod-env.log; unset s; "
    "PATH=\"$PATH${DESCPROD_WORKER_PATH:+:$DESCPROD_WORKER_PATH}\"; exec \"$0\" \"$@\"";
// The argv actually exec'd. With login_shell the app's argv is passed to
// `bash -l -c SCRIPT` as positional parameters, so nothing in it is ever interpreted.
std::vector<std::string> command_argv(const job_spec& spec);

}  // namespace descprod::workers
