// Containment of a job's processes (issue #13, item 3): every process a job starts ends with the
// job — on normal exit, cancel, time limit and drain — even one that double-forks or calls setsid.
//
// Two modes, chosen once per worker (worker.containment: auto | cgroup | subreaper):
//  - cgroup: each attempt runs in a cgroup v2 of its own, <worker's cgroup>/descprod-<pid>/slot-<n>.
//    The worker keeps the cgroups of ended attempts that left nothing behind (no cgroup.kill was
//    needed) and gives them to later attempts, so such a job costs no mkdir nor rmdir; there are
//    as many as attempts ever ran at once. The app is cloned straight into its cgroup
//    (CLONE_INTO_CGROUP), so nothing it starts can leave (only
//    a process with write access to a common ancestor could move out; the worker does not give the
//    job's user that). The end is `cgroup.kill`. Optional per-app limits: memory_max (memory.max)
//    and cores (cpu.max), when those controllers are available to the subtree.
//  - subreaper: the worker is a child subreaper (PR_SET_CHILD_SUBREAPER), so orphans of a job are
//    reparented to it instead of init and stay in its process tree. A job's processes are those
//    below the worker that are in the job's process group, carry its DESCPROD_JOB_ID and
//    DESCPROD_ATTEMPT in their environment, or descend from one that does. When the app has ended
//    and the worker has no child but the apps it runs (one read of its children list), the job
//    left nothing and no /proc scan is made. Caveat: a process
//    that leaves the group (setsid) and clears its environment before the job ends is not
//    attributed to its job; it is killed when the worker next has no job at all.
// auto takes cgroup when the worker can create a cgroup under its own and start a process in it,
// else subreaper.
//
// Thread-safety: none; one worker thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/job.hpp"

namespace descprod::workers {

struct job_limits {
  long long memory_max = 0;  // bytes; 0: none
  int cores = 0;             // cpu.max quota in cores; 0: none
};

class containment;

// One process as /proc/<pid>/stat shows it.
struct proc_info {
  pid_t ppid = 0;
  pid_t pgid = 0;
  char state = '?';
  unsigned long long start = 0;  // start time in clock ticks: tells a reused pid apart
};

// The processes of one attempt.
class job_box {
 public:
  ~job_box();
  job_box(const job_box&) = delete;
  job_box& operator=(const job_box&) = delete;

  // The cgroup directory fd to clone the app into; -1 in subreaper mode.
  int cgroup_fd() const { return cgroup_fd_; }
  // The app's pid, which leads the job's process group.
  void set_leader(pid_t pid) {
    leader_ = pid;
    known_empty_ = false;
  }
  // Sends `sig` to every process of the job. Returns how many were signalled.
  int signal_all(int sig);
  // SIGKILL to every process of the job, repeated (bounded) until none is left or `deadline`;
  // returns how many distinct processes were killed. May block the thread up to `deadline` (a
  // SIGKILLed process ends within microseconds; the bound is for a fork bomb racing the kill).
  int kill_all(std::chrono::milliseconds deadline = std::chrono::milliseconds(2000));
  // After the app (and its closeout) ended: kills whatever of the job is left, like kill_all, but
  // first asks cheaply whether anything is (cgroup.events; the worker's children list).
  int kill_leftovers();
  // How limits were applied ("" when none were asked for), for the job's log.
  const std::string& limits_note() const { return limits_note_; }

 private:
  friend class containment;
  // Subreaper mode: the live processes of the job among `below` (the worker's descendants).
  std::set<pid_t> members(std::map<pid_t, proc_info>& procs, const std::set<pid_t>& below) const;
  job_box(containment& c, job_id id, int attempt) : owner_(c), id_(id), attempt_(attempt) {}
  containment& owner_;
  job_id id_;
  int attempt_;
  pid_t leader_ = -1;
  // Subreaper mode: whether any process of the job may be left (false: the worker has no child
  // but the apps it spawned, so no scan is needed).
  bool may_have_orphans() const;
  bool populated() const;
  int cgroup_fd_ = -1;
  int events_fd_ = -1;         // cgroup.events, held open: one pread tells whether anything is left
  bool known_empty_ = false;   // kill_leftovers found nothing, and nothing started since
  bool kill_written_ = false;  // cgroup.kill was written: the cgroup is not reused
  std::string cgroup_dir_;
  job_limits applied_;  // what the cgroup's memory.max and cpu.max say
  std::string limits_note_;
};

class containment {
 public:
  // `mode`: "auto", "cgroup" or "subreaper". Throws std::runtime_error when "cgroup" is asked for
  // and no usable cgroup v2 subtree is found.
  // `reap_orphans`: the worker is the whole process (descprod-worker), so every child it did not
  // spawn itself is an orphan of a job, to be reaped and, when idle, killed. Off for a worker
  // embedded in another program (tests), whose other children are not the worker's business.
  containment(const std::string& mode, bool reap_orphans);
  ~containment();
  containment(const containment&) = delete;
  containment& operator=(const containment&) = delete;

  const std::string& mode() const { return mode_; }
  // Why the mode was chosen (for the startup log line).
  const std::string& detail() const { return detail_; }
  std::unique_ptr<job_box> make_box(job_id id, int attempt, const job_limits& limits);
  // Subreaper mode: reaps orphans that ended (zombies reparented to the worker) and, when the
  // worker holds no job (`idle`), kills whatever is still below it. Returns how many were killed.
  int sweep(bool idle);

 private:
  friend class job_box;
  bool try_cgroup(std::string& why);
  struct pooled_cgroup {
    std::string dir;
    int fd = -1;
    int events_fd = -1;
    job_limits applied;
  };
  void give_back(pooled_cgroup c);
  std::string mode_;
  std::string detail_;
  std::string root_;  // <worker's cgroup>/descprod-<pid> in cgroup mode
  bool cpu_ = false, memory_ = false;
  bool reap_all_ = false;
  std::set<job_box*> boxes_;
  std::vector<pooled_cgroup> idle_;  // empty cgroups of ended attempts, for the next ones
  int next_slot_ = 0;
  int children_fd_ = -1;  // subreaper: /proc/self/task/<tid>/children of the worker's thread
};

}  // namespace descprod::workers
