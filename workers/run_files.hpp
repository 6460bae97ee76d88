// The files a worker keeps in a job's run directory (docs/architecture.md#app-contract; as
// DESCprod's wrapper kept them): the run directory itself, current-status.txt (written by the app),
// progress.log and wrapper-status.json (written by the worker). Plain synchronous functions, no
// Asio.
//
// Thread-safety: the functions share no state; concurrent calls on different paths are safe.
#pragma once

#include <boost/json.hpp>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "core/job.hpp"

namespace descprod::workers {

namespace fs = std::filesystem;

// The longest status message shipped to the daemon, in bytes (cut on a UTF-8 boundary).
inline constexpr std::size_t max_message_bytes = 1000;

// The mode of a run directory: not readable by other users (issue #13; the app's umask, 027 by
// default, keeps what it writes inside from others too).
inline constexpr unsigned run_dir_mode = 0750;

// The run directory of a job's attempt, <output_dir>/jobs/jobNNNNNN (attempt 1) or
// jobNNNNNN.<attempt>, made with mode 0750 (its parents as needed). A directory of that name that
// exists already (another DESCprod instance with the same output root, a replayed attempt) is
// never used nor stepped around: run_dir_exists, DESCprod's "Run directory already exists".
struct run_dir_exists : std::runtime_error {
  explicit run_dir_exists(fs::path p)
      : std::runtime_error("Run directory already exists: " + p.string()), path(std::move(p)) {}
  fs::path path;
};
fs::path make_run_dir(const fs::path& output_dir, job_id id, int attempt);

// The last non-empty line of a status file, stripped of surrounding whitespace and capped at
// max_message_bytes. Only the file's last 64 KiB are read. A missing or unreadable file gives "".
std::string read_status_line(const fs::path& file);

// The last non-empty line of `text`, trimmed and capped at max_message_bytes ("" when none).
std::string last_status_line(std::string_view text);

// A file of a run directory read the way the worker reads everything an app may have made:
// opened relative to the directory it holds (`dirfd`) without following a symlink (O_NOFOLLOW)
// and without opening anything else than a regular file (O_PATH, then fstat: a FIFO, a device or
// a directory is never opened for reading, so nothing can block), with one link only (a hard link
// could alias a file the app may not read), and read with pread up to `max_bytes` — the last
// ones when the file holds more, so a huge or sparse file costs a bounded read.
struct run_file_read {
  bool exists = false;       // something has that name
  std::string refused;       // non-empty: what the name is instead of a plain file (it was not read)
  std::string data;          // the bytes read: [offset, size)
  std::uint64_t size = 0;    // the file's size when read
  std::uint64_t offset = 0;  // where `data` starts
};
run_file_read read_run_file(int dirfd, const std::string& name, std::uint64_t from, std::size_t max_bytes);

// Opens a directory for the *_at functions (O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC). Throws.
int open_dir(const fs::path& dir);

// write_file_new relative to `dirfd` (O_EXCL, O_NOFOLLOW). Throws fs::filesystem_error.
void write_file_new_at(int dirfd, const std::string& name, std::string_view content);
// Appends to `name` in `dirfd`, creating it (mode 0644 before the umask): refuses (throws) a
// symlink, a FIFO or anything but a regular file with one link, so the worker never writes
// through a name the app planted.
void append_file_at(int dirfd, const std::string& name, std::string_view content);
// write_file_atomic relative to `dirfd`: the temporary name is created with O_EXCL (after
// removing whatever the app put there, when something has the name), so nothing is followed or
// truncated but our own file.
void write_file_atomic_at(int dirfd, const std::string& name, std::string_view content);

// Structured progress from a message that starts with `[done/total]`, e.g. "[3/20] tasks done".
struct progress_counts {
  long long done = 0;
  long long total = 0;
};
std::optional<progress_counts> parse_progress_counts(std::string_view message);

// One progress.log line as DESCprod's wrapper wrote it: f"{elapsed:8}: {progress}\n", the elapsed
// time in whole seconds right-aligned in 8 columns.
std::string progress_log_line(double elapsed_s, std::string_view progress);

// A flat JSON object the way Python's json.dumps(obj, indent=2) prints it (floats keep a fraction,
// e.g. 1712345678.0). Nested values are printed compactly.
std::string python_indented_json(const boost::json::object& o);

// Writes `content` to a temporary file next to `path` and moves it to `path`, so a reader never
// sees half a file (nor, on a rewrite, no file). Replacing an existing file swaps the names
// (renameat2 RENAME_EXCHANGE) rather than renaming over it, which on ext4 would force the data out
// at once. No fsync: see the crash-safety note in run_files.cpp. Throws fs::filesystem_error.
void write_file_atomic(const fs::path& path, std::string_view content);
// Creates `path`, which must not exist (O_EXCL), and writes `content` to it: no temporary file and
// no rename. Only for a file nobody reads before it is complete, e.g. config.json in a run
// directory just made (the app starts after it is written; a new attempt never reuses a run
// directory, so a worker crash mid-write leaves a partial file nobody will read). Throws
// fs::filesystem_error.
void write_file_new(const fs::path& path, std::string_view content);
// Appends `content` to `path`, creating it. Throws fs::filesystem_error.
void append_file(const fs::path& path, std::string_view content);

// The current time as Unix epoch seconds with a fraction (docs/architecture.md#job-model).
double epoch_seconds();

}  // namespace descprod::workers
