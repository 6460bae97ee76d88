// Running one job attempt. Each child (the app, then an optional descprod-closeout) is watched by
// two coroutines: wait_for_exit blocks on the child's pidfd and wakes supervise, which sleeps on a
// timer until the next of: status poll, time limit, kill deadline. All timing decisions are in
// supervise, so cancel, time limit and shutdown share one SIGTERM → grace → SIGKILL path.
// Every process the job started ends with it: with settings.contain, processes left behind when
// the app exits are killed (and counted in the job's log), and a terminate signals all of them,
// not only the app's process group. Files of the run directory are opened relative to the
// directory the worker holds open, never following a symlink nor opening a FIFO (run_files.hpp).
#include "workers/job_run.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <cstring>

#include "core/job.hpp"
#include "core/log.hpp"
#include "workers/run_files.hpp"

namespace descprod::workers {

namespace {
using steady = std::chrono::steady_clock;

// An integer, as DESCprod's wrapper wrote it (0.4.29's was 19): wrapper-status.json has the
// layout of version 19, written by this worker.
const int wrapper_version = 20;

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) out += sep;
    out += v[i];
  }
  return out;
}

std::string field(const job_record& r, const char* name) {
  auto it = r.find(name);
  return it == r.end() ? std::string() : it->second;
}
}  // namespace

struct job_run::child_watch {
  explicit child_watch(net::any_io_executor ex, const spawn_options& opts) : child(ex, opts), wake(ex) {}
  child_process child;
  net::steady_timer wake;  // cancelled to make supervise look again
  std::optional<exit_status> status;
};

job_run::job_run(net::any_io_executor ex, job_spec spec, run_settings settings, job_observer observer)
    : ex_(std::move(ex)),
      spec_(std::move(spec)),
      settings_(std::move(settings)),
      observer_(std::move(observer)) {}

job_run::~job_run() {
  box_.reset();  // kills what may be left and removes the job's cgroup
  if (log_fd_ >= 0) ::close(log_fd_);
  if (dir_fd_ >= 0) ::close(dir_fd_);
}

void job_run::note_in_log(const std::string& text) {
  if (log_fd_ < 0) return;
  std::string line = "descprod-worker: " + text + "\n";
  // O_APPEND: the line lands whole at the end, between the app's own writes.
  if (::write(log_fd_, line.data(), line.size()) < 0)
    log::warn("job log not written job_id={} error={}", spec_.id, std::strerror(errno));
}

void job_run::note_refused(const std::string& name, const std::string& why) {
  if (!refused_noted_.insert(name + "\n" + why).second || refused_noted_.size() > 32) return;
  log::warn("run directory file ignored job_id={} attempt={} file={} reason={}", spec_.id, spec_.attempt,
            name, why);
  note_in_log(name + " ignored: it is " + why + ", not a plain file the worker reads");
}

void job_run::signal_job(int sig) {
  if (active_ && !active_->status) active_->child.signal_group(sig);
  if (box_) box_->signal_all(sig);
}

void job_run::kill_leftovers(const char* after) {
  if (!box_) return;
  int n = box_->kill_leftovers();
  if (n <= 0) return;
  leftovers_killed_ += n;
  log::info("leftover processes killed job_id={} attempt={} count={} after={}", spec_.id, spec_.attempt, n,
            after);
  note_in_log("killed " + std::to_string(n) + " leftover process" + (n == 1 ? "" : "es") +
              " of the job after " + after);
}

std::shared_ptr<job_run::child_watch> job_run::spawn(const spawn_options& opts) {
  auto w = std::make_shared<child_watch>(ex_, opts);
  net::co_spawn(ex_, wait_for_exit(w), net::detached);
  return w;
}

net::awaitable<void> job_run::wait_for_exit(std::shared_ptr<child_watch> w) {
  exit_status st;
  try {
    st = co_await w->child.async_wait();
  } catch (const std::exception& e) {
    // Only when the pidfd itself fails; report the child as killed rather than hang the job.
    log::error("child wait failed pid={} error={}", w->child.pid(), e.what());
    st.signal = SIGKILL;
  }
  w->status = st;
  w->wake.cancel();
}

spawn_options job_run::child_spawn_options() const {
  spawn_options opts;
  opts.env = child_environment();
  opts.cwd = rundir_.string();
  opts.cwd_fd = dir_fd_;
  opts.output_fd = log_fd_;
  opts.umask = spec_.umask;
  if (box_) opts.cgroup_fd = box_->cgroup_fd();
  return opts;
}

std::vector<std::string> job_run::child_environment() const {
  std::vector<std::pair<std::string, std::string>> env = spec_.env;
  env.emplace_back("DESCPROD_JOB_ID", std::to_string(spec_.id));
  env.emplace_back("DESCPROD_ATTEMPT", std::to_string(spec_.attempt));
  env.emplace_back("DESCPROD_RUNDIR", rundir_.string());
  env.emplace_back("DESCPROD_URL", settings_.gateway_url);
  if (!spec_.token.empty()) env.emplace_back("DESCPROD_TOKEN", spec_.token);
  // A login shell sets its own PATH (/etc/profile, ~/.profile): command_argv appends this one,
  // so the app and the service's commands are still found.
  if (spec_.login_shell)
    if (const char* path = std::getenv("PATH")) env.emplace_back("DESCPROD_WORKER_PATH", path);
  // A job of an array: its index and the array's ID (docs/api.md, Arrays).
  if (auto it = spec_.record.find("array_index"); it != spec_.record.end() && !it->second.empty()) {
    env.emplace_back("DESCPROD_ARRAY_INDEX", it->second);
    if (auto a = spec_.record.find("array"); a != spec_.record.end())
      env.emplace_back("DESCPROD_ARRAY_ID", a->second);
  }
  return settings_.environment ? settings_.environment->with(env) : environment_with(env);
}

net::awaitable<job_result> job_run::run() {
  start_wall_ = epoch_seconds();
  start_steady_ = steady::now();
  job_result result;
  const std::string name = job_name(spec_.id);

  try {
    rundir_ = make_run_dir(settings_.output_dir, spec_.id, spec_.attempt);
    dir_fd_ = open_dir(rundir_);
    log_file_ = rundir_ / (name + ".log");
    // config.json as DESCprod's launcher wrote it: the job map after set_rundir (host, rundir),
    // with an empty howfig as "" (apps read json.load(...)['howfig']), progress "Ready.".
    job_record record = spec_.record;
    record["progress"] = "Ready.";
    record["host"] = settings_.host;
    record["rundir"] = rundir_.string();
    record.try_emplace("howfig", "");
    // A fresh directory nobody reads yet (the app starts below): no temporary file needed.
    write_file_new_at(dir_fd_, "config.json", descprod_config_json(record));
    // The log is the worker's: made here (O_EXCL in the fresh directory) and held open, so the
    // app's stdout, the worker's notes and the shipped tail all use this one file, whatever the
    // app later does to the name.
    log_fd_ = ::openat(dir_fd_, log_file_.filename().c_str(),
                       O_RDWR | O_CREAT | O_EXCL | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (log_fd_ < 0)
      throw fs::filesystem_error("cannot create", log_file_, std::error_code(errno, std::generic_category()));
  } catch (const run_dir_exists& e) {
    // Not ours (another instance's job of the same number, or this attempt replayed): the attempt
    // fails as DESCprod's start did, and the directory is left alone. The disk is fine: the worker
    // stays healthy.
    log::error("job run directory exists job_id={} attempt={} rundir={}", spec_.id, spec_.attempt,
               e.path.string());
    finished_ = true;
    result.rc = 1;
    result.message = e.what();
    co_return result;
  } catch (const fs::filesystem_error& e) {
    log::error("job run directory failed job_id={} attempt={} error={}", spec_.id, spec_.attempt, e.what());
    // Nothing of the attempt is kept: the job goes back to the queue unharmed (the worker hands
    // it back), and a half-made directory would only confuse whoever looks.
    if (dir_fd_ >= 0) {
      ::unlinkat(dir_fd_, "config.json", 0);
      ::unlinkat(dir_fd_, log_file_.filename().c_str(), 0);
      ::close(dir_fd_);
      dir_fd_ = -1;
    }
    if (!rundir_.empty()) ::rmdir(rundir_.c_str());
    if (log_fd_ >= 0) ::close(log_fd_);
    log_fd_ = -1;
    finished_ = true;
    result.rc = 127;
    result.prepare_failed = true;
    result.prepare_error = e.code();
    result.message = std::string("cannot prepare run directory: ") + e.what();
    co_return result;
  } catch (const std::exception& e) {
    log::error("job run directory failed job_id={} attempt={} error={}", spec_.id, spec_.attempt, e.what());
    finished_ = true;
    result.rc = 127;
    result.message = std::string("cannot prepare run directory: ") + e.what();
    co_return result;
  }
  if (settings_.contain) {
    try {
      box_ = settings_.contain->make_box(spec_.id, spec_.attempt, job_limits{spec_.memory_max, spec_.cores});
      if (!box_->limits_note().empty()) note_in_log(box_->limits_note());
    } catch (const std::exception& e) {
      // The job still runs, contained by its process group (and the subreaper, if any) only.
      log::error("job containment failed job_id={} attempt={} error={}", spec_.id, spec_.attempt, e.what());
      note_in_log(std::string("no cgroup for this job: ") + e.what());
    }
  }

  spawn_options opts = child_spawn_options();
  opts.argv = command_argv(spec_);

  std::shared_ptr<child_watch> app;
  try {
    app = spawn(opts);
  } catch (const boost::system::system_error& e) {
    result.rc = 127;
    result.message = "cannot start " + spec_.argv.front() + ": " + e.code().message();
    log::warn("job spawn failed job_id={} attempt={} error={}", spec_.id, spec_.attempt, result.message);
    message_ = result.message;
    try {
      std::string line = result.message + "\n";  // as before: the reason alone, no prefix
      if (::write(log_fd_, line.data(), line.size()) < 0)
        log::warn("job log not written job_id={}", spec_.id);
      auto outcome = classify_exit(result.rc, 0, false);
      note_progress(progress_string(outcome.prefix, message_), outcome.return_status);
      flush_files();
    } catch (const std::exception& fe) {
      log::warn("job files not written job_id={} error={}", spec_.id, fe.what());
    }
    poll_log(true);
    finished_ = true;
    co_return result;
  }

  pid_ = app->child.pid();
  if (box_) box_->set_leader(pid_);
  // Per job at debug only (issue #20): the worker counts jobs and logs the counts per heartbeat.
  log::debug("job started job_id={} attempt={} pid={} rundir={}", spec_.id, spec_.attempt, pid_,
             rundir_.string());
  // Only for a login-shell app: the lines are not even built for the others (the per-job path).
  if (spec_.login_shell)
    note_wrapper_log("DESCprod wrapper descprod-worker version " + std::to_string(wrapper_version) +
                     " running job " + std::to_string(spec_.id) + " for user " +
                     field(spec_.record, "descname") + " in " + rundir_.string() +
                     "\nCommand: " + join(spec_.argv, " ") + "\nProcess ID: " + std::to_string(pid_) +
                     "\nConfig is in " + (rundir_ / "wrapper-status.json").string() + "\n");
  // Recorded now, written at the first status poll (or at the end, if the app is done by then).
  note_progress(progress_string("Running", message_), std::nullopt);
  if (observer_.on_started) observer_.on_started(*this);

  std::optional<steady::time_point> limit;
  if (spec_.time_limit_s > 0)
    limit = start_steady_ +
            std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(spec_.time_limit_s));
  active_ = app;
  if (terminate_grace_) terminate(*terminate_grace_);  // asked before the spawn
  exit_status st = co_await supervise(app, limit, true);
  poll_status();
  kill_leftovers("the app ended");

  result.rc = st.exit_code;
  result.signal = st.signal;
  result.timed_out = timed_out_;
  auto outcome = classify_exit(st.exit_code, st.signal, timed_out_);
  co_await run_closeout(outcome.return_status);
  active_.reset();
  // Before `finished` (after which the daemon takes no report of this attempt): the rest of the
  // log, with the closeout's output and the worker's notes.
  poll_log(true);
  finished_ = true;

  result.message = message_;
  result.leftovers_killed = leftovers_killed_;
  note_progress(progress_string(outcome.prefix, message_), outcome.return_status);
  if (spec_.login_shell)
    note_wrapper_log("Job process " + std::to_string(pid_) +
                     " returned code: " + std::to_string(outcome.return_status) + "\nDone.\n");
  // Before run() returns, hence before the worker reports `finished`: whoever learns the job
  // ended finds progress.log and wrapper-status.json complete.
  try_flush_files();
  co_return result;
}

net::awaitable<exit_status> job_run::supervise(std::shared_ptr<child_watch> w,
                                               std::optional<steady::time_point> limit, bool is_app) {
  kill_at_.reset();
  bool limit_hit = false;
  while (!w->status) {
    auto now = steady::now();
    auto next = now + settings_.status_poll;
    if (limit && !limit_hit && *limit < next) next = *limit;
    if (kill_at_ && *kill_at_ < next) next = *kill_at_;
    w->wake.expires_at(next);
    co_await w->wake.async_wait(net::as_tuple(net::use_awaitable));
    if (w->status) break;

    now = steady::now();
    if (limit && !limit_hit && now >= *limit) {
      limit_hit = true;
      if (is_app) {
        timed_out_ = true;
        log::info("job time limit reached job_id={} attempt={} limit_s={}", spec_.id, spec_.attempt,
                  spec_.time_limit_s);
      } else {
        log::warn("closeout time limit reached job_id={} attempt={}", spec_.id, spec_.attempt);
      }
      signal_job(SIGTERM);
      auto at = now + settings_.kill_grace;
      if (!kill_at_ || at < *kill_at_) kill_at_ = at;
    }
    if (kill_at_ && now >= *kill_at_) {
      log::info("killing process group job_id={} attempt={} pid={}", spec_.id, spec_.attempt, w->child.pid());
      signal_job(SIGKILL);
      kill_at_.reset();
    }
    if (is_app) poll_status();
    try_flush_files();
  }
  kill_at_.reset();
  co_return *w->status;
}

net::awaitable<void> job_run::run_closeout(int return_status) {
  const fs::path closeout = rundir_ / "descprod-closeout";
  struct stat cst;
  if (::fstatat(dir_fd_, "descprod-closeout", &cst, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(cst.st_mode) ||
      ::faccessat(dir_fd_, "descprod-closeout", X_OK, AT_SYMLINK_NOFOLLOW) != 0)
    co_return;

  spawn_options opts = child_spawn_options();
  opts.argv.push_back(closeout.string());  // no braced list in a coroutine (GCC 12)
  opts.argv.push_back(std::to_string(return_status));
  std::shared_ptr<child_watch> w;
  try {
    w = spawn(opts);
  } catch (const boost::system::system_error& e) {
    log::warn("closeout spawn failed job_id={} error={}", spec_.id, e.code().message());
    co_return;
  }
  // A terminate already asked for (cancel, shutdown) also bounds the closeout by its grace.
  auto bound = settings_.closeout_timeout;
  if (terminate_grace_ && *terminate_grace_ < bound) bound = *terminate_grace_;
  active_ = w;
  if (box_) box_->set_leader(w->child.pid());
  exit_status st = co_await supervise(w, steady::now() + bound, false);
  kill_leftovers("the closeout ended");
  log::info("closeout finished job_id={} attempt={} rc={} signal={}", spec_.id, spec_.attempt, st.exit_code,
            st.signal);
  // The closeout may leave a final word in current-status.txt.
  auto line = read_status();
  if (!line.empty() && line != message_) {
    message_ = std::move(line);
    if (observer_.on_progress) observer_.on_progress(*this);
  }
}

void job_run::terminate(std::chrono::milliseconds grace) {
  if (finished_) return;
  if (!terminate_grace_ || grace < *terminate_grace_) terminate_grace_ = grace;
  if (!active_ || active_->status) return;  // before the spawn: applied right after it
  log::info("terminating job job_id={} attempt={} pid={} grace_ms={}", spec_.id, spec_.attempt,
            active_->child.pid(), grace.count());
  signal_job(SIGTERM);
  auto at = steady::now() + grace;
  if (!kill_at_ || at < *kill_at_) kill_at_ = at;
  active_->wake.cancel();  // supervise recomputes its next wake-up
}

void job_run::kill_now(const std::string& why) {
  if (finished_) return;
  terminate_grace_ = std::chrono::milliseconds(0);
  if (!active_ || active_->status) return;
  note_in_log("stopped: " + why);
  if (box_) {
    int n = box_->kill_all();
    log::warn("job killed job_id={} attempt={} processes={} reason={}", spec_.id, spec_.attempt, n, why);
  }
  active_->child.signal_group(SIGKILL);
  active_->wake.cancel();
}

namespace {
// The length of the longest prefix of s, at most n bytes, that does not end inside a UTF-8
// sequence (so a long line cut in pieces keeps its characters whole).
std::size_t utf8_cut(std::string_view s, std::size_t n) {
  if (s.size() <= n) return s.size();
  std::size_t cut = n;
  for (int back = 0; back < 3 && cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80; ++back)
    --cut;
  return cut == 0 ? n : cut;
}
}  // namespace

void job_run::rewind_log(std::uintmax_t offset) {
  if (finished_ || offset >= log_offset_) return;
  log_resync_until_ = std::max(log_resync_until_, log_offset_);
  log_offset_ = offset;
  if (offset < spec_.log_max_bytes) log_capped_ = false;
}

void job_run::poll_log(bool at_end) {
  // The whole log, in order (issue #17): each poll reads on from the last shipped line boundary,
  // at most max_log_chunk_bytes a chunk and a few chunks a poll (at the end: all that is left),
  // never past the job's cap. Read through the worker's own descriptor of the log: whatever the
  // app does to the name (a FIFO, a symlink), the worker reads the file the app's stdout goes to.
  constexpr int chunks_per_poll = 4;
  if (!observer_.on_log || log_fd_ < 0 || log_capped_) return;
  const std::uintmax_t cap = spec_.log_max_bytes;
  for (int n = 0; at_end || n < chunks_per_poll; ++n) {
    struct stat st;
    if (::fstat(log_fd_, &st) != 0) return;
    auto size = static_cast<std::uintmax_t>(st.st_size);
    if (size < log_offset_) log_offset_ = size;  // truncated by the app: go on from its new end
    const bool over_cap = size > cap;
    const std::uintmax_t end = std::min(size, cap);
    if (end <= log_offset_ && !(over_cap && log_offset_ >= cap)) return;
    std::string chunk(
        static_cast<std::size_t>(std::min<std::uintmax_t>(end - log_offset_, max_log_chunk_bytes)), '\0');
    std::size_t got = 0;
    while (got < chunk.size()) {
      ssize_t r =
          ::pread(log_fd_, chunk.data() + got, chunk.size() - got, static_cast<off_t>(log_offset_ + got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      got += static_cast<std::size_t>(r);
    }
    chunk.resize(got);
    log_chunk out;
    out.offset = log_offset_;
    const bool reaches_cap = over_cap && log_offset_ + got >= cap;
    // Complete lines; a line longer than max_log_line_bytes goes in pieces. An unterminated tail
    // (or the part of a line a full chunk cut) waits for the next chunk, unless the cap cuts it or
    // the app has ended and this chunk reaches the end of the file.
    const bool take_tail = reaches_cap || (at_end && log_offset_ + got >= end);
    std::string_view text(chunk);
    std::size_t pos = 0;
    while (pos < text.size()) {
      auto nl = text.find('\n', pos);
      std::size_t len = nl == std::string_view::npos ? text.size() - pos : nl - pos;
      if (nl == std::string_view::npos && !take_tail && len <= max_log_line_bytes) break;
      std::size_t piece = utf8_cut(text.substr(pos, len), max_log_line_bytes);
      std::string line(text.substr(pos, piece));
      if (piece == len && !line.empty() && line.back() == '\r') line.pop_back();
      out.lines.push_back(sanitize_utf8(line));
      pos += piece;
      if (piece == len && nl != std::string_view::npos) ++pos;  // the newline
      if (out.offset < log_resync_until_) out.ends.push_back(out.offset + pos);
    }
    out.next = log_offset_ + pos;
    out.capped = reaches_cap && pos == text.size();
    if (out.lines.empty() && !out.capped) return;
    if (!observer_.on_log(*this, std::move(out))) return;  // offered again at the next poll
    log_offset_ += pos;
    if (reaches_cap && pos == text.size()) {
      log_capped_ = true;
      return;
    }
    if (got < max_log_chunk_bytes && !at_end) return;  // caught up
  }
}

std::string job_run::read_status() {
  // Only the last 64 KiB: the status is its last line, however big the file (a 2 GB sparse file
  // costs one 64 KiB read).
  constexpr std::size_t status_window = 64 * 1024;
  if (dir_fd_ < 0) return {};
  auto r = read_run_file(dir_fd_, "current-status.txt", 0, status_window);
  if (!r.refused.empty()) {
    note_refused("current-status.txt", r.refused);
    return {};
  }
  if (r.size > 1024 * 1024 && refused_noted_.insert("current-status.txt\nbig").second)
    note_in_log("current-status.txt is " + std::to_string(r.size) + " bytes: only its last " +
                std::to_string(status_window) + " are read");
  return sanitize_utf8(last_status_line(r.data));
}

void job_run::poll_status() {
  poll_log();
  auto line = read_status();
  if (line == message_) return;
  message_ = std::move(line);
  note_progress(progress_string("Running", message_), std::nullopt);
  if (observer_.on_progress) observer_.on_progress(*this);
}

void job_run::note_progress(const std::string& progress, std::optional<int> return_status) {
  // Only recorded here; flush_files() writes. DESCprod's wrapper wrote both files once per 10 s
  // cycle; we write them at most once per status poll (and at the end), with the times of the
  // events themselves: the progress.log lines keep their elapsed seconds and wrapper-status.json
  // its update_time. So a job that ends before its first poll costs one append and one fresh
  // wrapper-status.json instead of two appends, a write and an atomic rewrite.
  const double elapsed = std::chrono::duration<double>(steady::now() - start_steady_).count();
  progress_pending_ += progress_log_line(elapsed, progress);
  status_progress_ = progress;
  status_return_ = return_status;
  status_time_ = epoch_seconds();
  status_dirty_ = true;
}

void job_run::flush_files() {
  if (dir_fd_ < 0) return;
  if (!progress_pending_.empty()) {
    append_file_at(dir_fd_, "progress.log", progress_pending_);
    progress_pending_.clear();
  }
  if (status_dirty_) {
    status_dirty_ = false;
    write_wrapper_status();
  }
}

void job_run::try_flush_files() {
  try {
    flush_files();
  } catch (const std::exception& e) {
    // Bookkeeping files only; the job's outcome still reaches the daemon. What was not written
    // is dropped rather than retried at every poll.
    progress_pending_.clear();
    log::warn("job files not written job_id={} error={}", spec_.id, e.what());
    if (!refused_noted_.count(std::string("write\n") + e.what()) && refused_noted_.size() < 32) {
      refused_noted_.insert(std::string("write\n") + e.what());
      note_in_log(std::string("run directory file not written: ") + e.what());
    }
  }
}

void job_run::note_wrapper_log(const std::string& lines) {
  if (dir_fd_ < 0) return;
  try {
    append_file_at(dir_fd_, "wrapper.log", lines);
  } catch (const std::exception& e) {
    log::warn("wrapper.log not written job_id={} error={}", spec_.id, e.what());
  }
}

void job_run::write_wrapper_status() {
  boost::json::object info;
  info["wrapper_version"] = wrapper_version;
  info["id"] = spec_.id;
  info["descname"] = field(spec_.record, "descname");
  info["command"] = join(spec_.argv, " ");
  info["rundir"] = rundir_.string();
  info["log_file"] = log_file_.string();
  // Times as integer seconds, as DESCprod's wrapper wrote them (int(time.time())).
  const auto start_s = static_cast<long long>(start_wall_);
  const auto update_s = static_cast<long long>(status_time_);
  info["start_time"] = start_s;
  info["update_time"] = update_s;
  info["host"] = settings_.host;
  if (pid_ > 0) info["pid"] = pid_;
  info["progress"] = status_progress_;
  if (status_return_) {
    info["stop_time"] = update_s;
    info["return_status"] = *status_return_;
  }
  write_file_atomic_at(dir_fd_, "wrapper-status.json", python_indented_json(info));
}

}  // namespace descprod::workers
