// Spawning with as few system calls as the job needs (issue #20), keeping what issue #8 asks of
// every child: its own process group (or cgroup), no shell, no descriptor but 0, 1 and 2, and
// default signal dispositions with nothing blocked.
//
// The parent prepares everything (the program's path, argv, envp, the descriptors, which signals
// it catches or ignores: one pread of /proc/self/status) and the child only makes system calls,
// then execs:
//   setpgid, SIG_DFL for each signal the parent catches or ignores, the umask, stdin from a
//   /dev/null the parent keeps open, stdout and stderr, the directory, close_range(3, ~0) with
//   CLOSE_RANGE_CLOEXEC, the signal mask, execve.
// The child is a clone(CLONE_VM|CLONE_VFORK|CLONE_PIDFD) on a stack of its own, as Python's
// _posixsubprocess and Rust's std::process spawn: no page tables are copied (a fork of the worker
// cost it about 2.5 ms of CPU per job on a paravirtualized machine: copying its page tables, then
// a copy-on-write fault and a TLB shootdown for each page it wrote after), and the parent sleeps
// until the exec. Into a cgroup it is clone3(CLONE_INTO_CGROUP|CLONE_VM|CLONE_VFORK|CLONE_PIDFD)
// through a few lines of asm on x86-64 (clone3_vm); elsewhere clone3 without CLONE_VM, a fork.
// Because the child shares the parent's memory, every signal is blocked around the clone and the
// child resets each handled signal to SIG_DFL before it unblocks them, so no handler of the
// parent's ever runs in the child. A failed exec leaves its errno in a slot of the parent's memory
// (after the fork of other architectures: in a page shared with the parent, MAP_SHARED), so no
// pipe is needed.
// The program is looked up in PATH once per name (execvp's search, in the parent), not per job;
// a remembered path whose exec fails with ENOENT, EACCES or ENOTDIR is looked up again once.
#include "core/process.hpp"

#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string_view>
#include <unordered_map>

extern char** environ;

namespace descprod {

namespace {
std::mutex children_mu;
std::set<pid_t> children;  // live child_process pids, for is_spawned_child

void note_child(pid_t pid, bool alive) {
  std::lock_guard<std::mutex> lock(children_mu);
  if (alive) children.insert(pid);
  else children.erase(pid);
}

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw boost::system::system_error(err, boost::system::generic_category(), what);
}

// The signals whose disposition the child must reset: those the process catches or ignores at
// the moment of the spawn. One pread of /proc/self/status (SigIgn, SigCgt; dispositions are the
// process's, shared by its threads) instead of a sigaction per signal; without /proc, one look at
// every signal.
struct signal_set_plan {
  int sigs[NSIG];
  int n = 0;
};
bool status_mask(const char* text, const char* key, std::uint64_t& mask) {
  const char* at = std::strstr(text, key);
  if (!at) return false;
  char* end = nullptr;
  mask = std::strtoull(at + std::strlen(key), &end, 16);
  return end != at + std::strlen(key);
}
void signals_to_reset(signal_set_plan& p) {
  static const int status_fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  std::uint64_t ign = 0, cgt = 0;
  bool known = false;
  if (status_fd >= 0) {
    char buf[8192];
    ssize_t n = ::pread(status_fd, buf, sizeof buf - 1, 0);
    if (n > 0) {
      buf[n] = '\0';
      known = status_mask(buf, "\nSigIgn:", ign) && status_mask(buf, "\nSigCgt:", cgt);
    }
  }
  p.n = 0;
  for (int s = 1; s < NSIG && s <= 64; ++s) {
    if (s == SIGKILL || s == SIGSTOP) continue;
    bool reset = false;
    if (known) {
      reset = ((ign | cgt) >> (s - 1)) & 1U;
    } else {
      struct sigaction sa;
      reset = ::sigaction(s, nullptr, &sa) == 0 && sa.sa_handler != SIG_DFL;
    }
    if (reset) p.sigs[p.n++] = s;
  }
}

// /dev/null for every child's stdin, opened once (close-on-exec: only the child's dup2 keeps it).
int dev_null() {
  static const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  return fd;
}

// execvp's search, done in the parent: the child may only make system calls.
std::string search_path(const std::string& name) {
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

// Program names already found in PATH (with the PATH they were found in), process-wide.
std::mutex programs_mu;
std::unordered_map<std::string, std::pair<std::string, std::string>> programs;

std::string resolve_program(const std::string& name, bool fresh) {
  if (name.find('/') != std::string::npos) return name;
  const char* p = std::getenv("PATH");
  std::string path = p ? p : "";
  {
    std::lock_guard<std::mutex> lock(programs_mu);
    auto it = programs.find(name);
    if (!fresh && it != programs.end() && it->second.first == path) return it->second.second;
  }
  std::string found = search_path(name);
  std::lock_guard<std::mutex> lock(programs_mu);
  if (programs.size() > 4096) programs.clear();  // bounded: app names, not job data
  programs[name] = {path, found};
  return found;
}

void forget_program(const std::string& name) {
  std::lock_guard<std::mutex> lock(programs_mu);
  programs.erase(name);
}

// Everything the child needs, made by the parent. The child only reads it (and writes `*err`).
struct child_plan {
  const char* program;
  char* const* argv;
  char* const* envp;
  int stdin_fd;
  int output_fd;            // >= 0: dup2'd to 1 and 2
  const char* output_path;  // else opened (append) onto 1
  int cwd_fd;
  const char* cwd;  // nullptr: stay
  int umask;
  const signal_set_plan* reset;
  volatile int* err;  // where a failure's errno goes (0: the exec happened)
};

// The child, between the clone and the exec: system calls only — no allocation, no lock, no
// stdio, nothing a sanitizer would hook — because it runs on the parent's memory (CLONE_VM) or is
// a fork of a multi-threaded process.
__attribute__((noinline, noreturn, no_sanitize("address", "undefined", "thread"))) void child_main(
    const child_plan* p) {
  int e = 0;
  if (::setpgid(0, 0) != 0) e = errno;
  if (e == 0) {
    struct sigaction dfl;
    std::memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int i = 0; i < p->reset->n; ++i) ::sigaction(p->reset->sigs[i], &dfl, nullptr);
    if (p->umask >= 0) ::umask(static_cast<mode_t>(p->umask));
    if (p->stdin_fd < 0 || ::dup2(p->stdin_fd, 0) < 0) e = p->stdin_fd < 0 ? EBADF : errno;
  }
  if (e == 0) {
    if (p->output_fd >= 0) {
      if (::dup2(p->output_fd, 1) < 0 || ::dup2(p->output_fd, 2) < 0) e = errno;
    } else {
      int fd = ::open(p->output_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd < 0 || ::dup2(fd, 1) < 0 || ::dup2(fd, 2) < 0) e = errno;
    }
  }
  if (e == 0) {
    if (p->cwd_fd >= 0) {
      if (::fchdir(p->cwd_fd) != 0) e = errno;
    } else if (p->cwd && ::chdir(p->cwd) != 0) {
      e = errno;
    }
  }
  if (e == 0) {
    // Every descriptor above 2 closes at the exec, whoever opened it and however (a kernel
    // before 5.11 has no CLOSE_RANGE_CLOEXEC: then O_CLOEXEC, which this code base uses
    // everywhere, is all there is).
    ::syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(p->program, p->argv, p->envp);
    e = errno;
  }
  *p->err = e;
  ::_exit(127);
}

// Runs on the child's own stack: not instrumented either (ASan's no-return hook would see a
// stack it does not know).
__attribute__((no_sanitize("address", "undefined", "thread"))) int child_entry(void* arg) {
  child_main(static_cast<const child_plan*>(arg));
}

#if defined(__x86_64__)
// clone3 with CLONE_VM, which glibc does not wrap and C cannot call through syscall(): the child
// starts on `args->stack` with the parent's registers, so it must not return into this frame
// (the parent's). It calls child_main(plan) from the asm instead, which never returns. fn and plan
// sit in registers the syscall instruction keeps (all but rax, rcx and r11); the stack top is
// 16-byte aligned, so child_main starts with the alignment a call gives. Returns the child's pid
// in the parent, or -errno.
__attribute__((noinline, no_sanitize("address", "undefined", "thread"))) long clone3_vm(
    struct clone_args* args, const child_plan* plan) {
  long rc = SYS_clone3;
  register void (*fn)(const child_plan*) asm("r12") = child_main;
  register const child_plan* arg asm("r13") = plan;
  asm volatile(
      "syscall\n\t"
      "testq %%rax, %%rax\n\t"
      "jnz 1f\n\t"
      "xorl %%ebp, %%ebp\n\t"
      "movq %%r13, %%rdi\n\t"
      "callq *%%r12\n\t"
      "ud2\n"
      "1:\n\t"
      : "+a"(rc)
      : "D"(args), "S"(sizeof *args), "r"(fn), "r"(arg)
      : "rcx", "r11", "memory");
  return rc;
}
#endif

// The clone(CLONE_VM) child's stack: one per thread, made at its first spawn. The parent sleeps
// (CLONE_VFORK) until the child execs or exits, so a thread never has two children on it.
constexpr std::size_t child_stack_bytes = 256 * 1024;
char* child_stack_top() {
  thread_local void* stack = nullptr;
  if (!stack) {
    stack = ::mmap(nullptr, child_stack_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
      stack = nullptr;
      throw_errno(errno, "mmap child stack");
    }
  }
  return static_cast<char*>(stack) + child_stack_bytes;
}

#if !defined(__x86_64__)
// The clone3 child's error slot: a page shared with the parent across the fork.
volatile int* shared_error_slot() {
  thread_local void* page = nullptr;
  if (!page) {
    page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) {
      page = nullptr;
      throw_errno(errno, "mmap");
    }
  }
  return static_cast<volatile int*>(page);
}
#endif

// The NULL-terminated char* array execve takes; it points into `v`, which must outlive it.
std::vector<char*> c_strings(const std::vector<std::string>& v) {
  std::vector<char*> out;
  out.reserve(v.size() + 1);
  for (const auto& a : v) out.push_back(const_cast<char*>(a.c_str()));
  out.push_back(nullptr);
  return out;
}

// Blocks every signal in the calling thread for the scope (the clone and the child's resets).
struct all_signals_blocked {
  sigset_t old;
  all_signals_blocked() {
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
  }
  ~all_signals_blocked() { ::pthread_sigmask(SIG_SETMASK, &old, nullptr); }
};

// One spawn attempt. Returns the pid and sets `pidfd`; on a failure before or at the exec, returns
// -1 with the errno in `err` (the child, if any, is reaped).
pid_t spawn_once(const spawn_options& opts, const std::string& program, int& pidfd, int& err) {
  auto argv = c_strings(opts.argv);
  auto envp = c_strings(opts.env);
  child_plan plan;
  plan.program = program.c_str();
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.stdin_fd = dev_null();
  plan.output_fd = opts.output_fd;
  plan.output_path = opts.output_file.empty() ? "/dev/null" : opts.output_file.c_str();
  plan.cwd_fd = opts.cwd_fd;
  plan.cwd = opts.cwd.empty() ? nullptr : opts.cwd.c_str();
  plan.umask = opts.umask;
  signal_set_plan reset;
  signals_to_reset(reset);
  plan.reset = &reset;
  pidfd = -1;
  err = 0;
  pid_t pid = -1;
  if (opts.cgroup_fd < 0) {
    volatile int child_err = 0;
    plan.err = &child_err;
    char* stack = child_stack_top();
    {
      all_signals_blocked blocked;
      pid = ::clone(child_entry, stack, CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &plan, &pidfd);
      if (pid < 0) err = errno;
    }
    if (pid > 0) err = child_err;
  } else {
    struct clone_args args;
    std::memset(&args, 0, sizeof args);
    args.flags = CLONE_INTO_CGROUP | CLONE_PIDFD | CLONE_VFORK;
    args.pidfd = reinterpret_cast<std::uint64_t>(&pidfd);
    args.exit_signal = SIGCHLD;
    args.cgroup = static_cast<std::uint64_t>(opts.cgroup_fd);
#if defined(__x86_64__)
    // As the clone above, into the cgroup: the parent's memory, the child's own stack.
    volatile int child_err = 0;
    plan.err = &child_err;
    char* top = child_stack_top();
    args.flags |= CLONE_VM;
    args.stack = reinterpret_cast<std::uint64_t>(top - child_stack_bytes);
    args.stack_size = child_stack_bytes;
    {
      all_signals_blocked blocked;
      long rc = clone3_vm(&args, &plan);
      if (rc < 0) err = static_cast<int>(-rc);
      pid = rc < 0 ? -1 : static_cast<pid_t>(rc);
    }
    if (pid > 0) err = child_err;
#else
    volatile int* slot = shared_error_slot();
    *slot = 0;
    plan.err = slot;
    {
      all_signals_blocked blocked;
      long rc = ::syscall(SYS_clone3, &args, sizeof args);
      if (rc == 0) child_main(&plan);
      if (rc < 0) err = errno;
      pid = static_cast<pid_t>(rc);
    }
    if (pid > 0) err = *slot;
#endif
  }
  if (pid > 0 && err != 0) {  // the child ran but did not exec: it has exited with 127
    siginfo_t info;
    ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED);
    ::close(pidfd);
    pidfd = -1;
    return -1;
  }
  return pid;
}
}  // namespace

child_process::child_process(net::any_io_executor ex, const spawn_options& opts) : pidfd_(ex) {
  if (opts.argv.empty())
    throw boost::system::system_error(EINVAL, boost::system::generic_category(), "spawn: empty argv");
  const std::string& name = opts.argv[0];
  const bool searched = name.find('/') == std::string::npos;
  std::string program = resolve_program(name, false);
  int fd = -1, err = 0;
  pid_t pid = spawn_once(opts, program, fd, err);
  if (pid < 0 && searched && (err == ENOENT || err == EACCES || err == ENOTDIR)) {
    // The remembered path is stale (the program moved, or a new one came first in PATH).
    forget_program(name);
    std::string again = resolve_program(name, true);  // throws when it is nowhere
    pid = spawn_once(opts, again, fd, err);
  }
  if (pid < 0) throw_errno(err, "spawn " + name);
  pid_ = pid;
  note_child(pid_, true);
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
    // The pidfd becomes readable when the child exits (at once if it already has): wait first,
    // then reap, so a running child costs no waitid.
    auto [ec] = co_await pidfd_.async_wait(net::posix::stream_descriptor::wait_read,
                                           net::as_tuple(net::use_awaitable));
    if (ec == net::error::operation_aborted) throw boost::system::system_error(ec);
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
  }
}

void child_process::signal_group(int sig) {
  if (pid_ > 0 && !reaped_) ::kill(-pid_, sig);
}

bool is_spawned_child(pid_t pid) {
  std::lock_guard<std::mutex> lock(children_mu);
  return children.count(pid) > 0;
}

environment_template::environment_template(const std::vector<std::string>& drop)
    : base_(environment_with({})) {
  for (const auto& name : drop) {
    const std::string prefix = name + "=";
    base_.erase(
        std::remove_if(base_.begin(), base_.end(),
                       [&](const std::string& e) { return e.compare(0, prefix.size(), prefix) == 0; }),
        base_.end());
  }
}

std::vector<std::string> environment_template::with(
    const std::vector<std::pair<std::string, std::string>>& overrides) const {
  std::vector<std::string> out = base_;
  std::size_t sorted = out.size();  // entries past this one were appended by this call
  for (const auto& [k, v] : overrides) {
    std::string entry = k + "=" + v;
    // The first entry whose name is not less than k: names compare on "NAME=" prefixes.
    auto name_less = [](const std::string& e, const std::string& key) {
      auto eq = e.find('=');
      return std::string_view(e).substr(0, eq) < std::string_view(key);
    };
    auto it = std::lower_bound(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(sorted), k, name_less);
    if (it != out.begin() + static_cast<std::ptrdiff_t>(sorted) &&
        it->compare(0, k.size() + 1, k + "=") == 0) {
      *it = std::move(entry);
      continue;
    }
    bool replaced = false;
    for (auto j = out.begin() + static_cast<std::ptrdiff_t>(sorted); j != out.end(); ++j)
      if (j->compare(0, k.size() + 1, k + "=") == 0) {
        *j = entry;
        replaced = true;
      }
    if (!replaced) out.push_back(std::move(entry));
  }
  return out;
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
