// One attempt of one job on this machine, from run directory to exit status
// (docs/architecture.md#app-contract): creates the run directory and config.json, spawns the app
// (no shell) in its own process group with stdout+stderr in <job>.log, watches current-status.txt,
// enforces the time limit, handles terminate requests (cancel, shutdown) with SIGTERM then SIGKILL
// after a grace period, runs descprod-closeout, and keeps progress.log and wrapper-status.json as
// DESCprod's wrapper did. It knows nothing of ZeroMQ: the worker (or a local runner such as
// descprod-start-job) learns of `started` and progress through the observer and gets the outcome
// from run().
//
// Thread-safety: none; a job_run lives on one io_context thread.
#pragma once

#include <sys/types.h>

#include <boost/asio.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <system_error>

#include "core/process.hpp"
#include "workers/containment.hpp"
#include "workers/job_spec.hpp"

namespace descprod::workers {

namespace net = boost::asio;
namespace fs = std::filesystem;

struct run_settings {
  fs::path output_dir;                         // run directories go under <output_dir>/jobs
  std::string host;                            // for wrapper-status.json
  std::string gateway_url;                     // DESCPROD_URL for the app
  std::chrono::milliseconds status_poll{200};  // how often current-status.txt is read
  std::chrono::milliseconds kill_grace{5000};  // SIGTERM → SIGKILL on cancel and time limit
  std::chrono::milliseconds closeout_timeout{60000};
  // Keeps each job's processes together so all of them end with it (containment.hpp); null: only
  // the app's process group is signalled (the old behaviour).
  std::shared_ptr<containment> contain;
  // The worker's environment, read once (null: read at every job, as environment_with does).
  std::shared_ptr<const environment_template> environment;
};

// How an attempt ended, as the `finished` message reports it.
struct job_result {
  int rc = 0;              // exit code (0 when a signal ended it)
  int signal = 0;          // signal number, 0 if it exited
  bool timed_out = false;  // the app's time limit was hit
  std::string message;     // the last status line
  // The run directory could not be prepared (a full or read-only disk, …): the app never ran, and
  // the failure is the worker's, not the job's. `prepare_error` says why.
  bool prepare_failed = false;
  std::error_code prepare_error;
  int leftovers_killed = 0;  // processes of the job still alive after the app ended
};

class job_run;

// A piece of the job's log as shipped to the daemon (docs/protocol.md, `log`): complete lines
// (each at most max_log_line_bytes; a longer line is cut into several), the byte offsets of the
// log file they cover, and whether the log reached the job's cap (nothing follows).
struct log_chunk {
  std::vector<std::string> lines;
  std::uintmax_t offset = 0;
  std::uintmax_t next = 0;
  bool capped = false;
  // After a rewind (log_from), until the log is past where it had been: each line's end offset,
  // so the daemon can drop the lines it already has from a piece that overlaps them.
  std::vector<std::uintmax_t> ends;
};
inline constexpr std::size_t max_log_line_bytes = 4000;
inline constexpr std::size_t max_log_chunk_bytes = 64 * 1024;

// Callbacks on the io_context thread; each may be empty.
struct job_observer {
  std::function<void(const job_run&)> on_started;   // right after the spawn
  std::function<void(const job_run&)> on_progress;  // the status message changed
  // The next piece of the job's log (stdout+stderr), in order and without gaps: the lines between
  // byte offsets chunk.offset and chunk.next of the log file. Returns false when it cannot be sent
  // now (the worker has no daemon): the same bytes are offered again at the next poll.
  std::function<bool(const job_run&, log_chunk)> on_log;
};

class job_run {
 public:
  job_run(net::any_io_executor ex, job_spec spec, run_settings settings, job_observer observer);
  ~job_run();
  job_run(const job_run&) = delete;
  job_run& operator=(const job_run&) = delete;

  // Runs the attempt to its end. Call once; the object must outlive the returned awaitable.
  // Failures to prepare or spawn are outcomes (rc 127 and a message), not exceptions.
  net::awaitable<job_result> run();

  // SIGTERM to the process group now, SIGKILL after `grace` if it is still alive. Before the spawn
  // the request is remembered and applied at once after it; after the exit it does nothing.
  void terminate(std::chrono::milliseconds grace);
  // SIGKILL to every process of the job now, synchronously (a fence: nothing of the job may run
  // on after this returns), with `why` in the job's log.
  void kill_now(const std::string& why);

  const job_spec& spec() const { return spec_; }
  pid_t pid() const { return pid_; }
  bool started() const { return pid_ > 0; }
  const fs::path& rundir() const { return rundir_; }
  const fs::path& log_file() const { return log_file_; }
  const std::string& message() const { return message_; }

  // The daemon holds the log up to `offset` (its log_from after a reconnect or a Redis outage):
  // ship again from there. Ignored once the run has finished or when already behind it.
  void rewind_log(std::uintmax_t offset);

 private:
  struct child_watch;
  static net::awaitable<void> wait_for_exit(std::shared_ptr<child_watch> w);
  net::awaitable<exit_status> supervise(std::shared_ptr<child_watch> w,
                                        std::optional<std::chrono::steady_clock::time_point> limit,
                                        bool is_app);
  std::shared_ptr<child_watch> spawn(const spawn_options& opts);
  net::awaitable<void> run_closeout(int return_status);
  void poll_status();
  // Ships the log's new lines (up to a few chunks a poll); `at_end`: everything left, up to the
  // cap, including an unterminated last line.
  void poll_log(bool at_end = false);
  std::string read_status();  // the last line of current-status.txt, read safely
  // Records a progress.log line and the wrapper-status.json state (with the end fields when
  // given); flush_files() writes them (at each status poll and at the end).
  void note_progress(const std::string& progress, std::optional<int> return_status);
  void flush_files();      // throws fs::filesystem_error
  void try_flush_files();  // logs a failure instead
  // A login-shell app (run as DESCprod ran it) gets DESCprod's wrapper.log: the wrapper's own
  // lines, appended here (a failure is logged, never fatal). Called for such apps only.
  void note_wrapper_log(const std::string& lines);
  void write_wrapper_status();
  std::vector<std::string> child_environment() const;
  // What the application and its closeout script share: environment, run directory (by its
  // descriptor), the log as stdout/stderr, the job's umask and cgroup. The caller adds argv.
  spawn_options child_spawn_options() const;
  // A line of the worker's own in the job's log ("descprod-worker: ...").
  void note_in_log(const std::string& text);
  // Notes once per file and reason that a run-directory file was not read.
  void note_refused(const std::string& name, const std::string& why);
  // After the app (or closeout) ended: kills what is left of the job and says so in its log.
  void kill_leftovers(const char* after);
  void signal_job(int sig);

  net::any_io_executor ex_;
  int dir_fd_ = -1;  // the run directory, held open: every file in it is opened relative to it
  int log_fd_ = -1;  // the job's log, made by the worker; the app's stdout and stderr
  std::unique_ptr<job_box> box_;
  std::set<std::string> refused_noted_;
  int leftovers_killed_ = 0;
  job_spec spec_;
  run_settings settings_;
  job_observer observer_;
  fs::path rundir_;
  fs::path log_file_;
  pid_t pid_ = -1;
  std::string message_;
  double start_wall_ = 0;
  std::chrono::steady_clock::time_point start_steady_;
  std::shared_ptr<child_watch> active_;  // the app, then the closeout
  std::optional<std::chrono::steady_clock::time_point> kill_at_;
  std::optional<std::chrono::milliseconds> terminate_grace_;  // set once a terminate was asked
  bool timed_out_ = false;
  std::uintmax_t log_offset_ = 0;        // bytes of the log already shipped (a line boundary)
  bool log_capped_ = false;              // the job's log cap was reached: nothing more is shipped
  std::uintmax_t log_resync_until_ = 0;  // after a rewind: where the log had been shipped to
  bool finished_ = false;
  std::string progress_pending_;  // progress.log lines not yet appended
  std::string status_progress_;   // wrapper-status.json's progress, update_time, return_status
  std::optional<int> status_return_;
  double status_time_ = 0;
  bool status_dirty_ = false;  // wrapper-status.json is behind
};

}  // namespace descprod::workers
