// Run-directory files: creation of the directory, reading the app's current-status.txt and writing
// DESCprod's progress.log and wrapper-status.json. Caveat: the status file is read from its last
// 64 KiB only, so a status line longer than that is cut at its start (it is capped anyway).
#include "workers/run_files.hpp"

#include <fcntl.h>
#include <spdlog/fmt/fmt.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <system_error>

namespace descprod::workers {

namespace {

constexpr std::streamoff status_window_bytes = 64 * 1024;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Cuts `s` to at most `n` bytes without splitting a UTF-8 sequence.
std::string cap_utf8(std::string_view s, std::size_t n) {
  if (s.size() <= n) return std::string(s);
  std::size_t cut = n;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return std::string(s.substr(0, cut));
}

std::optional<long long> parse_digits(std::string_view s) {
  // At most 18 digits, so the value always fits a long long.
  if (s.empty() || s.size() > 18) return std::nullopt;
  long long v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

std::string python_float(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  std::string s = fmt::format("{}", d);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

}  // namespace

fs::path make_run_dir(const fs::path& output_dir, job_id id, int attempt) {
  const fs::path jobs = output_dir / "jobs";
  const std::string name = job_name(id);
  const int n = attempt < 1 ? 1 : attempt;
  const fs::path dir = jobs / (n == 1 ? name : name + "." + std::to_string(n));
  // One mkdir per job: the parents are created (create_directories stats every component) only
  // when the first try says they are missing.
  for (bool made_parents = false;;) {
    if (::mkdir(dir.c_str(), run_dir_mode) == 0) return dir;
    if (errno == EEXIST) throw run_dir_exists(dir);
    std::error_code ec(errno, std::generic_category());
    if (ec != std::errc::no_such_file_or_directory || made_parents)
      throw fs::filesystem_error("cannot create run directory", dir, ec);
    fs::create_directories(jobs);
    made_parents = true;
  }
}

std::string last_status_line(std::string_view s) {
  std::size_t end = s.size();
  while (end > 0) {
    std::size_t nl = s.rfind('\n', end - 1);
    std::size_t begin = nl == std::string_view::npos ? 0 : nl + 1;
    auto line = trim(s.substr(begin, end - begin));
    if (!line.empty()) return cap_utf8(line, max_message_bytes);
    if (nl == std::string_view::npos) break;
    end = nl;
  }
  return {};
}

std::string read_status_line(const fs::path& file) {
  auto r = read_run_file(AT_FDCWD, file.string(), 0, static_cast<std::size_t>(status_window_bytes));
  return last_status_line(r.data);
}

namespace {
std::string file_kind(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "not a regular file";
}
}  // namespace

run_file_read read_run_file(int dirfd, const std::string& name, std::uint64_t from, std::size_t max_bytes) {
  run_file_read r;
  int pfd = ::openat(dirfd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (pfd < 0) {
    if (errno != ENOENT && errno != ENOTDIR) {
      r.exists = true;
      r.refused = std::string("cannot open: ") + std::strerror(errno);
    }
    return r;
  }
  r.exists = true;
  struct stat st;
  if (::fstat(pfd, &st) != 0) {
    r.refused = std::string("cannot stat: ") + std::strerror(errno);
    ::close(pfd);
    return r;
  }
  if (!S_ISREG(st.st_mode)) {
    r.refused = file_kind(st.st_mode);
    ::close(pfd);
    return r;
  }
  if (st.st_nlink > 1) {
    r.refused = "a file with more than one hard link";
    ::close(pfd);
    return r;
  }
  // Reopened for reading through the O_PATH descriptor: the same inode that was checked.
  char proc_path[64];
  std::snprintf(proc_path, sizeof proc_path, "/proc/self/fd/%d", pfd);
  int fd = ::open(proc_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  ::close(pfd);
  if (fd < 0) {
    r.refused = std::string("cannot open: ") + std::strerror(errno);
    return r;
  }
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    r.refused = "not a regular file";
    return r;
  }
  r.size = static_cast<std::uint64_t>(st.st_size);
  std::uint64_t start = from;
  if (r.size > start && r.size - start > max_bytes) start = r.size - max_bytes;
  r.offset = start;
  if (r.size > start) {
    r.data.resize(static_cast<std::size_t>(r.size - start));
    std::size_t got = 0;
    while (got < r.data.size()) {
      ssize_t n = ::pread(fd, r.data.data() + got, r.data.size() - got, static_cast<off_t>(start + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    r.data.resize(got);
  }
  ::close(fd);
  return r;
}

int open_dir(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    throw fs::filesystem_error("cannot open directory", dir, std::error_code(errno, std::generic_category()));
  return fd;
}

std::optional<progress_counts> parse_progress_counts(std::string_view message) {
  if (message.empty() || message.front() != '[') return std::nullopt;
  auto close = message.find(']');
  if (close == std::string_view::npos) return std::nullopt;
  auto inside = message.substr(1, close - 1);
  auto slash = inside.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  auto done = parse_digits(inside.substr(0, slash));
  auto total = parse_digits(inside.substr(slash + 1));
  if (!done || !total) return std::nullopt;
  return progress_counts{*done, *total};
}

std::string progress_log_line(double elapsed_s, std::string_view progress) {
  long long secs = elapsed_s > 0 ? static_cast<long long>(elapsed_s) : 0;
  return fmt::format("{:8}: {}\n", secs, progress);
}

std::string python_indented_json(const boost::json::object& o) {
  if (o.empty()) return "{}";
  std::string out = "{";
  bool first = true;
  for (const auto& kv : o) {
    out += first ? "\n  " : ",\n  ";
    first = false;
    out += boost::json::serialize(boost::json::string(kv.key()));
    out += ": ";
    const auto& v = kv.value();
    if (v.is_double()) out += python_float(v.as_double());
    else out += boost::json::serialize(v);
  }
  out += "\n}";
  return out;
}

namespace {

std::error_code last_error() { return std::error_code(errno, std::generic_category()); }

// Writes all of `content` to `fd` and closes it. Throws (after closing) on any failure.
void write_all_and_close(int fd, const fs::path& path, std::string_view content) {
  const char* p = content.data();
  std::size_t left = content.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      auto ec = n < 0 ? last_error() : std::make_error_code(std::errc::io_error);
      ::close(fd);
      throw fs::filesystem_error("cannot write", path, ec);
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0 && errno != EINTR) throw fs::filesystem_error("cannot write", path, last_error());
}

}  // namespace

void write_file_new(const fs::path& path, std::string_view content) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) throw fs::filesystem_error("cannot create", path, last_error());
  write_all_and_close(fd, path, content);
}

void write_file_atomic(const fs::path& path, std::string_view content) {
  fs::path tmp = path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) throw fs::filesystem_error("cannot write", tmp, last_error());
  write_all_and_close(fd, tmp, content);
  // First write: the name is free, a plain rename is atomic and cheap. Later writes: a rename
  // over an existing file makes ext4 (auto_da_alloc) start writing the new file's data out at
  // once, which costs more than the whole write. RENAME_EXCHANGE swaps the two names instead —
  // still atomic for a reader, who sees the old or the new content, never a mix or no file — and
  // the old content, now under the temporary name, is unlinked. Crash-safety: no fsync, as
  // before (the old code relied on ext4's heuristic, not on a sync); after a machine crash the
  // file may hold its previous content or, at worst, be empty. Its readers are people and
  // tools looking at a run directory; Redis holds the job's state (docs/architecture.md), and nothing
  // reconciles from these files (DESCprod's wrapper wrote them without any care). A crash of the
  // worker between the exchange and the unlink leaves an old copy under the .tmp name, which the
  // next write truncates.
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) == 0) return;
  if (errno == EEXIST) {
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, path.c_str(), RENAME_EXCHANGE) == 0) {
      ::unlink(tmp.c_str());
      return;
    }
  }
  // A file system without renameat2's flags (EINVAL), or a race with another writer: plain rename.
  fs::rename(tmp, path);
}

namespace {
constexpr int write_flags = O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY;

// Opens `name` in `dirfd` for writing without following a symlink or blocking on a FIFO, and
// checks it is a regular file with one link. Throws. (O_NONBLOCK stays set: Linux ignores it for
// regular files, the only kind this returns.)
int open_existing_for_write_at(int dirfd, const std::string& name, int flags) {
  int fd = ::openat(dirfd, name.c_str(), flags | write_flags | O_NONBLOCK, 0644);
  if (fd < 0) throw fs::filesystem_error("cannot write", fs::path(name), last_error());
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink > 1) {
    ::close(fd);
    throw fs::filesystem_error(
        "refusing to write: " +
            std::string(S_ISREG(st.st_mode) ? "a file with more than one hard link" : file_kind(st.st_mode)),
        fs::path(name), std::make_error_code(std::errc::operation_not_permitted));
  }
  return fd;
}

// Creates `name` in `dirfd` (O_EXCL: a new regular file of ours, nothing to check). -1 with errno
// EEXIST when the name is taken (by anything: a symlink is not followed); throws otherwise.
int create_at(int dirfd, const std::string& name, int flags) {
  int fd = ::openat(dirfd, name.c_str(), flags | write_flags | O_CREAT | O_EXCL, 0644);
  if (fd < 0 && errno != EEXIST) throw fs::filesystem_error("cannot write", fs::path(name), last_error());
  return fd;
}
}  // namespace

void append_file_at(int dirfd, const std::string& name, std::string_view content) {
  // The first append creates the file (three system calls); later ones check what is there.
  int fd = create_at(dirfd, name, O_APPEND);
  if (fd < 0) fd = open_existing_for_write_at(dirfd, name, O_CREAT | O_APPEND);
  write_all_and_close(fd, fs::path(name), content);
}

void write_file_atomic_at(int dirfd, const std::string& name, std::string_view content) {
  const std::string tmp = name + ".tmp";
  int fd = create_at(dirfd, tmp, 0);
  if (fd < 0) {
    // Something has the name (a planted symlink, a FIFO, a worker crash's leftover): ours is new.
    ::unlinkat(dirfd, tmp.c_str(), 0);
    fd = create_at(dirfd, tmp, 0);
    if (fd < 0) throw fs::filesystem_error("cannot write", fs::path(tmp), last_error());
  }
  write_all_and_close(fd, fs::path(tmp), content);
  // As write_file_atomic: a plain rename the first time, a swap later (see there).
  if (::renameat2(dirfd, tmp.c_str(), dirfd, name.c_str(), RENAME_NOREPLACE) == 0) return;
  if (errno == EEXIST && ::renameat2(dirfd, tmp.c_str(), dirfd, name.c_str(), RENAME_EXCHANGE) == 0) {
    ::unlinkat(dirfd, tmp.c_str(), 0);
    return;
  }
  if (::renameat(dirfd, tmp.c_str(), dirfd, name.c_str()) != 0)
    throw fs::filesystem_error("cannot rename", fs::path(tmp), last_error());
}

void write_file_new_at(int dirfd, const std::string& name, std::string_view content) {
  int fd = create_at(dirfd, name, 0);
  if (fd < 0) throw fs::filesystem_error("cannot create", fs::path(name), last_error());
  write_all_and_close(fd, fs::path(name), content);
}

void append_file(const fs::path& path, std::string_view content) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (fd < 0) throw fs::filesystem_error("cannot append", path, last_error());
  write_all_and_close(fd, path, content);
}

double epoch_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

}  // namespace descprod::workers
