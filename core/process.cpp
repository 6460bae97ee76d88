// posix_spawn + pidfd. The child gets default dispositions for the signals daemons catch and an
// empty signal mask, stdin from /dev/null, and its own process group so a cancel or time limit can
// signal everything it started.
#include "core/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <cstring>
#include <map>

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
}  // namespace

child_process::child_process(net::any_io_executor ex, const spawn_options& opts) : pidfd_(ex) {
  if (opts.argv.empty()) throw boost::system::system_error(EINVAL, boost::system::generic_category(), "spawn: empty argv");
  spawn_guard g;
  posix_spawn_file_actions_addopen(&g.fa, 0, "/dev/null", O_RDONLY, 0);
  const char* out = opts.output_file.empty() ? "/dev/null" : opts.output_file.c_str();
  // No O_CLOEXEC: the open lands on fd 1 itself, and a close-on-exec stdout would vanish at exec.
  posix_spawn_file_actions_addopen(&g.fa, 1, out, O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&g.fa, 1, 2);
  if (!opts.cwd.empty()) posix_spawn_file_actions_addchdir_np(&g.fa, opts.cwd.c_str());

  sigset_t mask;
  sigemptyset(&mask);
  posix_spawnattr_setsigmask(&g.attr, &mask);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&defaults, s);
  posix_spawnattr_setsigdefault(&g.attr, &defaults);
  posix_spawnattr_setpgroup(&g.attr, 0);
  posix_spawnattr_setflags(&g.attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> argv;
  for (const auto& a : opts.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : opts.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  pid_t pid = -1;
  int rc = posix_spawnp(&pid, argv[0], &g.fa, &g.attr, argv.data(), envp.data());
  if (rc != 0)
    throw boost::system::system_error(rc, boost::system::generic_category(), "spawn " + opts.argv[0]);
  pid_ = pid;
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
  if (fd < 0) {
    int err = errno;
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    reaped_ = true;
    throw boost::system::system_error(err, boost::system::generic_category(), "pidfd_open");
  }
  pidfd_.assign(fd);
}

child_process::~child_process() {
  if (!reaped_ && pid_ > 0) {
    // Never leave a zombie or an orphaned payload behind.
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

net::awaitable<exit_status> child_process::async_wait() {
  while (true) {
    siginfo_t info;
    std::memset(&info, 0, sizeof info);
    if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG) == 0 && info.si_pid == pid_) {
      reaped_ = true;
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
