// Child processes without a shell, in a new process group, stdout and stderr merged into one
// file, completion watched through a pidfd on the io_context. The spawn is a vfork-style clone
// (the parent's memory is shared until the child execs; see process.cpp for what the child may
// do meanwhile), or clone3 into a cgroup when one is given.
//
// Thread-safety: none; a child belongs to the io_context thread that spawned it. Spawns from
// different threads are safe (each thread has its own child stack).
#pragma once

#include <sys/types.h>

#include <boost/asio.hpp>
#include <memory>
#include <string>
#include <vector>

namespace descprod {

namespace net = boost::asio;

struct spawn_options {
  // argv[0] is looked up in the worker's PATH when it has no '/': once per name (a process-wide
  // cache), again when the exec of the remembered path fails (the program moved or was removed).
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "NAME=value"; the whole environment of the child
  std::string cwd;               // empty: the parent's
  std::string output_file;       // stdout+stderr, appended; empty: /dev/null
  // An open file for stdout+stderr instead of output_file (the caller keeps and closes it): lets
  // the caller open it safely (no symlink, no FIFO) relative to a directory it holds.
  int output_fd = -1;
  int cwd_fd = -1;  // a directory to start in instead of cwd (fchdir)
  int umask = -1;   // the child's umask (e.g. 027); -1: the parent's
  // A cgroup v2 directory (O_DIRECTORY fd) the child starts in (clone3 CLONE_INTO_CGROUP), so not
  // even its first fork can escape; -1: the parent's cgroup.
  int cgroup_fd = -1;
};

struct exit_status {
  int exit_code = 0;  // when the process exited
  int signal = 0;     // when a signal ended it (then exit_code is 0)
};

class child_process {
 public:
  // Starts the process. Throws boost::system::system_error when it cannot (e.g. no such program).
  child_process(net::any_io_executor ex, const spawn_options& opts);
  ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  pid_t pid() const { return pid_; }
  bool running() const { return !reaped_; }
  // Waits for the process to end and reaps it. Call once.
  net::awaitable<exit_status> async_wait();
  // Sends a signal to the child's whole process group (it leads one).
  void signal_group(int sig);

 private:
  pid_t pid_ = -1;
  net::posix::stream_descriptor pidfd_;
  bool reaped_ = false;
};

// True while `pid` is a child_process of this program that has not been reaped: a child
// subreaper reaping orphans must leave those to their owner's pidfd wait.
bool is_spawned_child(pid_t pid);

// The current environment as "NAME=value" strings, with `overrides` replacing or adding entries.
std::vector<std::string> environment_with(const std::vector<std::pair<std::string, std::string>>& overrides);

// environment_with for many children: the current environment is read once, at construction,
// and each call only patches a copy of it.
class environment_template {
 public:
  // `drop`: names left out of every child's environment (secrets of this program's own).
  explicit environment_template(const std::vector<std::string>& drop = {});
  std::vector<std::string> with(const std::vector<std::pair<std::string, std::string>>& overrides) const;

 private:
  std::vector<std::string> base_;  // "NAME=value", sorted by name, one entry per name
};

}  // namespace descprod
