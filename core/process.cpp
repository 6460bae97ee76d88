// posix_spawn + pidfd. The child gets default dispositions for the signals daemons catch and an
// empty signal mask, stdin from /dev/null, and its own process group so a cancel or time limit can
// signal everything it started. A child that must start inside a cgroup is made with clone3
// (CLONE_INTO_CGROUP) and exec'd by hand instead: posix_spawn cannot place it, and moving it after
// the spawn leaves a window in which its first fork escapes.
#include "core/process.hpp"

#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include <boost/asio/as_tuple.hpp>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

extern char** environ;

namespace descprod {

namespace {
struct spawn_guard {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  spawn_guard() {
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
  }
  ~spawn_guard() {
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
  }
};
std::mutex children_mu;
std::set<pid_t> children;  // live child_process pids, for is_spawned_child

void note_child(pid_t pid, bool alive) {
  std::lock_guard<std::mutex> lock(children_mu);
  if (alive) children.insert(pid);
  else children.erase(pid);
}

constexpr int reset_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD, SIGQUIT, SIGUSR1, SIGUSR2};

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw boost::system::system_error(err, boost::system::generic_category(), what);
}

// execvp's search, done in the parent: the child of clone3 may only make async-signal-safe calls.
std::string resolve_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::string dirs = path && *path ? path : "/bin:/usr/bin";
  int err = ENOENT;
  std::size_t start = 0;
  while (start <= dirs.size()) {
    auto colon = dirs.find(':', start);
    if (colon == std::string::npos) colon = dirs.size();
    std::string dir = dirs.substr(start, colon - start);
    std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
    struct stat st;
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
      err = EACCES;
    }
    start = colon + 1;
  }
  throw_errno(err, "spawn " + name);
}

// The child's side of spawn_in_cgroup: only async-signal-safe calls, then execve. A failure is
// written to `report` (close-on-exec, so the parent reads 0 bytes when the exec succeeded).
[[noreturn]] void exec_child(const spawn_options& opts, const char* program, char* const* argv,
                             char* const* envp, int report) {
  auto fail = [report](int err) {
    while (::write(report, &err, sizeof err) < 0 && errno == EINTR) {
    }
    ::_exit(127);
  };
  if (::setpgid(0, 0) != 0) fail(errno);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int s : reset_signals) ::sigaction(s, &dfl, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (opts.umask >= 0) ::umask(static_cast<mode_t>(opts.umask));
  int in = ::open("/dev/null", O_RDONLY);
  if (in < 0 || ::dup2(in, 0) < 0) fail(errno);
  if (in != 0) ::close(in);
  if (opts.output_fd >= 0) {
    if (::dup2(opts.output_fd, 1) < 0) fail(errno);
  } else {
    const char* out = opts.output_file.empty() ? "/dev/null" : opts.output_file.c_str();
    int fd = ::open(out, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0 || ::dup2(fd, 1) < 0) fail(errno);
    if (fd != 1) ::close(fd);
  }
  if (::dup2(1, 2) < 0) fail(errno);
  if (opts.cwd_fd >= 0) {
    if (::fchdir(opts.cwd_fd) != 0) fail(errno);
  } else if (!opts.cwd.empty() && ::chdir(opts.cwd.c_str()) != 0) {
    fail(errno);
  }
  ::execve(program, argv, envp);
  fail(errno);
  ::_exit(127);
}
}  // namespace

// The NULL-terminated char* array execve and posix_spawn take; it points into `v`, which must
// outlive it.
static std::vector<char*> c_strings(const std::vector<std::string>& v) {
  std::vector<char*> out;
  out.reserve(v.size() + 1);
  for (const auto& a : v) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

// clone3 without CLONE_VM is a fork: it copies the worker's page tables, a few hundred
// microseconds more than posix_spawn's vfork. Only jobs in a cgroup pay for it.
static pid_t spawn_in_cgroup(const spawn_options& opts, int& pidfd_out) {
  std::string program = resolve_program(opts.argv[0]);
  auto argv = c_strings(opts.argv);
  auto envp = c_strings(opts.env);
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) throw_errno(errno, "pipe2");
  int pidfd = -1;
  struct clone_args args {};
  args.flags = CLONE_INTO_CGROUP | CLONE_PIDFD;
  args.pidfd = reinterpret_cast<std::uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  args.cgroup = static_cast<std::uint64_t>(opts.cgroup_fd);
  long rc = ::syscall(SYS_clone3, &args, sizeof args);
  if (rc == 0) {
    ::close(report[0]);
    exec_child(opts, program.c_str(), argv.data(), envp.data(), report[1]);
  }
  int clone_err = errno;
  ::close(report[1]);
  if (rc < 0) {
    ::close(report[0]);
    throw_errno(clone_err, "clone3 " + opts.argv[0]);
  }
  pid_t pid = static_cast<pid_t>(rc);
  int child_err = 0;
  ssize_t n;
  do n = ::read(report[0], &child_err, sizeof child_err);
  while (n < 0 && errno == EINTR);
  ::close(report[0]);
  if (n == static_cast<ssize_t>(sizeof child_err)) {
    ::waitpid(pid, nullptr, 0);
    ::close(pidfd);
    throw_errno(child_err, "spawn " + opts.argv[0]);
  }
  pidfd_out = pidfd;
  return pid;
}

child_process::child_process(net::any_io_executor ex, const spawn_options& opts) : pidfd_(ex) {
  if (opts.argv.empty())
    throw boost::system::system_error(EINVAL, boost::system::generic_category(), "spawn: empty argv");
  if (opts.cgroup_fd >= 0) {
    int fd = -1;
    pid_ = spawn_in_cgroup(opts, fd);
    note_child(pid_, true);
    pidfd_.assign(fd);
    return;
  }
  spawn_guard g;
  posix_spawn_file_actions_addopen(&g.fa, 0, "/dev/null", O_RDONLY, 0);
  if (opts.output_fd >= 0) {
    posix_spawn_file_actions_adddup2(&g.fa, opts.output_fd, 1);
  } else {
    const char* out = opts.output_file.empty() ? "/dev/null" : opts.output_file.c_str();
    // No O_CLOEXEC: the open lands on fd 1 itself, and a close-on-exec stdout would vanish at exec.
    posix_spawn_file_actions_addopen(&g.fa, 1, out, O_WRONLY | O_CREAT | O_APPEND, 0644);
  }
  posix_spawn_file_actions_adddup2(&g.fa, 1, 2);
  if (opts.cwd_fd >= 0) posix_spawn_file_actions_addfchdir_np(&g.fa, opts.cwd_fd);
  else if (!opts.cwd.empty()) posix_spawn_file_actions_addchdir_np(&g.fa, opts.cwd.c_str());

  sigset_t mask;
  sigemptyset(&mask);
  posix_spawnattr_setsigmask(&g.attr, &mask);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int s : reset_signals) sigaddset(&defaults, s);
  posix_spawnattr_setsigdefault(&g.attr, &defaults);
  posix_spawnattr_setpgroup(&g.attr, 0);
  posix_spawnattr_setflags(&g.attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  auto argv = c_strings(opts.argv);
  auto envp = c_strings(opts.env);

  pid_t pid = -1;
  // posix_spawn has no umask attribute: the child inherits ours, set for the spawn only (the
  // worker's one thread makes no files meanwhile; ZeroMQ's threads only connect).
  mode_t old_umask = 0;
  if (opts.umask >= 0) old_umask = ::umask(static_cast<mode_t>(opts.umask));
  int rc = posix_spawnp(&pid, argv[0], &g.fa, &g.attr, argv.data(), envp.data());
  if (opts.umask >= 0) ::umask(old_umask);
  if (rc != 0)
    throw boost::system::system_error(rc, boost::system::generic_category(), "spawn " + opts.argv[0]);
  pid_ = pid;
  note_child(pid_, true);
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
  if (fd < 0) {
    int err = errno;
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    reaped_ = true;
    note_child(pid_, false);
    throw boost::system::system_error(err, boost::system::generic_category(), "pidfd_open");
  }
  pidfd_.assign(fd);
}

child_process::~child_process() {
  if (!reaped_ && pid_ > 0) {
    // Never leave a zombie or an orphaned payload behind.
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    note_child(pid_, false);
  }
}

net::awaitable<exit_status> child_process::async_wait() {
  while (true) {
    siginfo_t info;
    std::memset(&info, 0, sizeof info);
    if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG) == 0 && info.si_pid == pid_) {
      reaped_ = true;
      note_child(pid_, false);
      exit_status st;
      if (info.si_code == CLD_EXITED) st.exit_code = info.si_status;
      else st.signal = info.si_status;
      co_return st;
    }
    auto [ec] = co_await pidfd_.async_wait(net::posix::stream_descriptor::wait_read,
                                           net::as_tuple(net::use_awaitable));
    if (ec == net::error::operation_aborted) throw boost::system::system_error(ec);
  }
}

void child_process::signal_group(int sig) {
  if (pid_ > 0 && !reaped_) ::kill(-pid_, sig);
}

bool is_spawned_child(pid_t pid) {
  std::lock_guard<std::mutex> lock(children_mu);
  return children.count(pid) > 0;
}

std::vector<std::string> environment_with(const std::vector<std::pair<std::string, std::string>>& overrides) {
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string s(*e);
    auto eq = s.find('=');
    if (eq == std::string::npos) continue;
    env[s.substr(0, eq)] = s.substr(eq + 1);
  }
  for (const auto& [k, v] : overrides) env[k] = v;
  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

}  // namespace descprod
