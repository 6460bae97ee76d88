// The job: its states, the legal transitions between them, DESCprod's progress strings, its
// config-string rules (check_config) and the config.json layout applications grep.
// Pure logic, no I/O; the Redis Lua scripts (store.cpp) are generated from the same tables.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace descprod {

using job_id = std::int64_t;

// waiting: for its dependencies (after, after_any); held: until its owner releases or starts it.
// Neither is on the queue; both are active (not terminal).
enum class job_state {
  waiting,
  held,
  ready,
  dispatched,
  running,
  done,
  failed,
  timeout,
  killed,
  cancelled,
  lost
};

// The events that move a job between states (docs/architecture.md#job-model). lease is the
// daemon's dispatch (ready only); claim is descprod-start-job's (ready or held); release hands a
// held job to the workers; unblock ends a job's wait when its last dependency is met (the store
// makes it held instead of ready when it was created held).
enum class job_event { lease, claim, start, finish, requeue, cancel, lose, release, unblock };

// A site name (worker.site, a job's "sites"): 1 to 32 of a-z, 0-9, '-', '_'.
bool valid_site_name(std::string_view s);

std::string_view to_string(job_state s);
std::optional<job_state> parse_job_state(std::string_view s);
std::string_view to_string(job_event e);
bool is_terminal(job_state s);
const std::vector<job_state>& all_job_states();

// The state an event leads to from `from`, or nullopt when the event is illegal there. `finish`
// needs the target (done/failed/...), so it is given separately: finish_target.
std::optional<job_state> next_state(job_state from, job_event e,
                                    std::optional<job_state> finish_target = std::nullopt);

// Outcome of a finished process, mapped as DESCprod's wrapper did: rc 0 done, 124 timeout, >0 failed,
// killed by a signal → killed with return_status -N.
struct exit_outcome {
  job_state state;
  int return_status;
  std::string prefix;  // "Done", "Failed", "Timeout", "Process received signal N"
};
exit_outcome classify_exit(int exit_code, int signal, bool timed_out);

// DESCprod's progress string: "<prefix>. <message>" (or "<prefix>." when the message is empty).
std::string progress_string(std::string_view prefix, std::string_view message);

// `s` with every invalid UTF-8 sequence replaced by U+FFFD, so it can travel in JSON.
std::string sanitize_utf8(std::string_view s);

// "job" + the ID zero-padded to 6 digits (DESCprod's JobData.name_from_id).
std::string job_name(job_id id);

// DESCprod's check_config: 0 ok, 1 bad character (only [a-zA-Z0-9:-]), 2 contains "----",
// 3 a constituent (split on "---") contains "--", 4 starts or ends with '-', 5 starts or ends with
// ':', 9 empty.
int check_config(std::string_view s);
std::string_view check_config_reason(int code);
// The service's rule for a config string (docs/api.md, POST /api/jobs): check_config's, with '_'
// and '.' also allowed, as DESC's real configs use them (`w2316-visit:1234_5`); same codes (1: a
// character outside [a-zA-Z0-9:_.-]). DESCprod's own helpers (descprod-split-config) keep
// check_config.
int check_service_config(std::string_view s);
// A howfig of an application that declares no howfig_pattern: free text (DESC's compound howfigs
// such as `pmbs-30-auto-cpu,ptenv:00:hom`), valid UTF-8 without control characters. It reaches an
// application only as one argument, never through a shell.
bool valid_howfig_text(std::string_view s);
// DESCprod's batch howfigs (its apps pmb and pmbs; docs/slurm.md#jobs-in-an-allocation-of-their-own):
// a howfig whose first comma-separated constituent is `pmb-TMIN[-QOS[-CONS[-ACCT]]]` runs the job
// in a Slurm allocation of its own, sized by it; `pmbs-…` makes a child job that does. Fields as
// DESCprod's pmb-submit read them: TMIN minutes (1..10080, required); QOS local, regular, debug or
// auto (the default: debug up to 30 minutes, else regular); CONS the node constraint (default
// cpu); ACCT the account (default: the service's). A blank field takes its default.
struct batch_howfig {
  bool subjob = false;     // pmbs
  int minutes = 0;         // the allocation's time limit
  std::string qos;         // local, regular or debug (auto resolved)
  std::string constraint;  // [A-Za-z0-9_], 1..32
  std::string account;     // [A-Za-z0-9_], 0..32 ("": the service's)
  std::string head;        // the first constituent as written
  std::string rest;        // what follows the first comma ("" without one)
  // local: DESCprod ran the command on the node itself; here it runs on the service's workers.
  bool own_allocation() const { return qos != "local"; }
};
// nullopt with `error` empty: not a batch howfig (its first field is not pmb or pmbs). nullopt
// with `error` set: a malformed one (the reason, for a 400).
std::optional<batch_howfig> parse_batch_howfig(std::string_view howfig, std::string& error);
// The `sites` value that pins a job to an allocation of its own (never a site name: '@').
inline constexpr std::string_view pinned_sites = "@pin";

// DESCprod's split_config / split_config_field / split_compound_config.
std::vector<std::string> split_config(std::string_view s);
std::vector<std::string> split_config_field(std::string_view s);
std::vector<std::string> split_compound_config(std::string_view s);

// The job's record as stored in Redis (field → string). Field names:
// docs/architecture.md#job-model.
using job_record = std::map<std::string, std::string>;

// The field order of DESCprod's JobData.data_names, followed by the fields this project adds.
const std::vector<std::string>& job_field_order();
// Fields that hold integers (printed as JSON numbers) and times (numbers with a fraction).
bool is_integer_field(std::string_view f);
bool is_time_field(std::string_view f);

// The JSON form of a job: absent or empty fields omitted, numbers as numbers.
boost::json::object job_to_json(const job_record& r);
// config.json exactly as DESCprod wrote it: json.dumps(jmap, indent=2) – one key per line, two
// spaces, ", " never trailing, times as integers, DESCprod's 18 fields only.
std::string descprod_config_json(const job_record& r);
// The same 18 fields as DESCprod's JobData.jmap() sent them (POST /get_job): in its order, times
// as integers, absent fields left out (an empty config or howfig kept as "").
boost::json::object descprod_job_map(const job_record& r);

}  // namespace descprod
