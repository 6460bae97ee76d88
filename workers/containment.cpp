// Job containment: cgroup v2 per attempt, else a child subreaper and a /proc scan. See
// containment.hpp for the rules. Everything here is synchronous and bounded: a /proc scan reads
// one small file per process (and the environment of the few that need it).
#include "workers/containment.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/log.hpp"
#include "core/process.hpp"

namespace descprod::workers {

namespace {
using steady = std::chrono::steady_clock;

std::string read_small(const std::string& path, std::size_t max = 1 << 20) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return {};
  std::string out;
  char buf[8192];
  while (out.size() < max) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

bool write_small(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

std::vector<pid_t> cgroup_pids(const std::string& dir) {
  std::vector<pid_t> pids;
  std::istringstream in(read_small(dir + "/cgroup.procs"));
  long p;
  while (in >> p) pids.push_back(static_cast<pid_t>(p));
  return pids;
}

bool cgroup_populated(const std::string& dir) {
  auto events = read_small(dir + "/cgroup.events");
  return events.find("populated 1") != std::string::npos;
}
// cgroup.events through a descriptor held open: one pread. Unreadable counts as populated (the
// caller then looks the slow way).
bool events_populated(int fd) {
  char buf[256];
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return true;
  buf[n] = '\0';
  return std::strstr(buf, "populated 0") == nullptr;
}
// True when every pid in a /proc/<pid>/task/<tid>/children file (read through `fd`) is a child
// the worker spawned (a running app): then no orphan is below it. Unreadable: false.
bool only_spawned_children(int fd) {
  if (fd < 0) return false;
  char buf[4096];
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n < 0 || n == static_cast<ssize_t>(sizeof buf - 1)) return false;  // unreadable, or too many to tell
  buf[n] = '\0';
  char* p = buf;
  while (*p) {
    char* end = nullptr;
    long pid = std::strtol(p, &end, 10);
    if (end == p) break;
    if (!is_spawned_child(static_cast<pid_t>(pid))) return false;
    p = end;
  }
  return true;
}
bool write_at(int dirfd, const char* name, const std::string& text) {
  int fd = ::openat(dirfd, name, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

// Every process on the machine, from /proc/<pid>/stat. Bounded by the pid space.
std::map<pid_t, proc_info> scan_proc() {
  std::map<pid_t, proc_info> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    auto stat = read_small("/proc/" + std::string(e->d_name) + "/stat", 4096);
    auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream in(stat.substr(close + 2));
    proc_info p;
    std::string skip;
    in >> p.state >> p.ppid >> p.pgid;
    for (int field = 6; field < 22 && in; ++field) in >> skip;  // session … itrealvalue
    in >> p.start;
    if (in) out[static_cast<pid_t>(pid)] = p;
  }
  ::closedir(d);
  return out;
}

bool environ_names(pid_t pid, const std::string& id_entry, const std::string& attempt_entry) {
  auto env = read_small("/proc/" + std::to_string(pid) + "/environ", 256 * 1024);
  if (env.empty()) return false;
  env.insert(env.begin(), '\0');
  return env.find(id_entry) != std::string::npos && env.find(attempt_entry) != std::string::npos;
}

// The processes below `self` (children, grandchildren, …) in `procs`.
std::set<pid_t> descendants(const std::map<pid_t, proc_info>& procs, pid_t self) {
  std::set<pid_t> below;
  std::map<pid_t, int> memo;  // 1 below, 0 not
  for (const auto& [pid, info] : procs) {
    std::vector<pid_t> chain;
    pid_t cur = pid;
    int verdict = 0;
    for (int depth = 0; depth < 4096; ++depth) {
      if (auto m = memo.find(cur); m != memo.end()) {
        verdict = m->second;
        break;
      }
      auto it = procs.find(cur);
      if (it == procs.end() || cur <= 1) break;
      if (it->second.ppid == self) {
        chain.push_back(cur);
        verdict = 1;
        break;
      }
      chain.push_back(cur);
      cur = it->second.ppid;
    }
    for (pid_t c : chain) memo[c] = verdict;
    if (verdict) below.insert(pid);
  }
  return below;
}

// Reaps the zombies among `pids` that are the worker's own children but were not spawned by a
// child_process (orphans reparented to the subreaper).
void reap_orphans(const std::map<pid_t, proc_info>& procs, const std::set<pid_t>& pids, pid_t self) {
  for (pid_t p : pids) {
    auto it = procs.find(p);
    if (it == procs.end() || it->second.ppid != self || it->second.state != 'Z') continue;
    if (is_spawned_child(p)) continue;
    ::waitpid(p, nullptr, WNOHANG);
  }
}

}  // namespace

containment::containment(const std::string& mode, bool reap_orphans) : reap_all_(reap_orphans) {
  std::string why;
  if (mode == "cgroup" || mode == "auto") {
    if (try_cgroup(why)) {
      mode_ = "cgroup";
      return;
    }
    if (mode == "cgroup") throw std::runtime_error("worker.containment: cgroup: " + why);
  }
  if (mode != "auto" && mode != "subreaper")
    throw std::runtime_error("worker.containment: unknown mode " + mode);
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
    log::warn("PR_SET_CHILD_SUBREAPER failed error={}", std::strerror(errno));
  // The children of this thread, which spawns the apps and (as the process's first thread, when
  // the worker is the whole program) adopts the orphans. Without it (no CONFIG_PROC_CHILDREN),
  // every end of a job scans /proc.
  std::string children = "/proc/self/task/" + std::to_string(::gettid()) + "/children";
  children_fd_ = ::open(children.c_str(), O_RDONLY | O_CLOEXEC);
  mode_ = "subreaper";
  detail_ = mode == "auto" ? "no usable cgroup v2: " + why : "asked for by worker.containment";
}

containment::~containment() {
  for (auto& c : idle_) {
    ::close(c.events_fd);
    ::close(c.fd);
    ::rmdir(c.dir.c_str());
  }
  if (children_fd_ >= 0) ::close(children_fd_);
  if (!root_.empty()) ::rmdir(root_.c_str());
}

void containment::give_back(pooled_cgroup c) {
  if (idle_.size() < 4096) {
    idle_.push_back(std::move(c));
    return;
  }
  ::close(c.events_fd);
  ::close(c.fd);
  ::rmdir(c.dir.c_str());
}

bool containment::try_cgroup(std::string& why) {
  // The cgroup2 mount (pure v2 at /sys/fs/cgroup, or the hybrid layout's /sys/fs/cgroup/unified).
  std::string mount;
  {
    std::istringstream in(read_small("/proc/self/mountinfo"));
    std::string line;
    while (std::getline(in, line)) {
      auto dash = line.find(" - cgroup2 ");
      if (dash == std::string::npos) continue;
      std::istringstream f(line.substr(0, dash));
      std::string id, parent, dev, root, point;
      f >> id >> parent >> dev >> root >> point;
      if (root == "/") {
        mount = point;
        break;
      }
    }
  }
  if (mount.empty()) {
    why = "no cgroup2 file system mounted";
    return false;
  }
  std::string rel;
  {
    std::istringstream in(read_small("/proc/self/cgroup"));
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("0::", 0) == 0) rel = line.substr(3);
  }
  if (rel.empty()) {
    why = "no cgroup v2 entry in /proc/self/cgroup";
    return false;
  }
  std::string base = rel == "/" ? mount : mount + rel;
  root_ = base + "/descprod-" + std::to_string(::getpid());
  if (::mkdir(root_.c_str(), 0755) != 0 && errno != EEXIST) {
    why = "cannot create " + root_ + ": " + std::strerror(errno);
    root_.clear();
    return false;
  }
  // Controllers for the optional limits: the worker's own cgroup can enable them for its children
  // only when it is the root or holds no process itself; each may fail, the limits then say so.
  for (const char* c : {"+cpu", "+memory"}) {
    write_small(base + "/cgroup.subtree_control", c);
    write_small(root_ + "/cgroup.subtree_control", c);
  }
  auto enabled = read_small(root_ + "/cgroup.subtree_control");
  cpu_ = enabled.find("cpu") != std::string::npos;
  memory_ = enabled.find("memory") != std::string::npos;
  // Probe: can a process be started inside a child cgroup (write access to cgroup.procs)?
  std::string probe = root_ + "/probe";
  ::mkdir(probe.c_str(), 0755);
  int fd = ::open(probe.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  bool ok = false;
  if (fd >= 0) {
    struct clone_args args {};
    args.flags = CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.cgroup = static_cast<std::uint64_t>(fd);
    long rc = ::syscall(SYS_clone3, &args, sizeof args);
    if (rc == 0) ::_exit(0);
    if (rc > 0) {
      ::waitpid(static_cast<pid_t>(rc), nullptr, 0);
      ok = true;
    } else {
      why = std::string("cannot start a process in ") + probe + ": " + std::strerror(errno);
    }
    ::close(fd);
  } else {
    why = "cannot open " + probe + ": " + std::strerror(errno);
  }
  ::rmdir(probe.c_str());
  if (!ok) {
    ::rmdir(root_.c_str());
    root_.clear();
    return false;
  }
  detail_ = root_ + " controllers=" + (cpu_ ? "cpu " : "") + (memory_ ? "memory" : "");
  return true;
}

std::unique_ptr<job_box> containment::make_box(job_id id, int attempt, const job_limits& limits) {
  std::unique_ptr<job_box> box(new job_box(*this, id, attempt));
  if (mode_ != "cgroup") {
    if (limits.memory_max > 0 || limits.cores > 0)
      box->limits_note_ = "limits not applied: no cgroup (containment mode subreaper)";
    return box;
  }
  pooled_cgroup c;
  if (!idle_.empty()) {
    c = std::move(idle_.back());
    idle_.pop_back();
  } else {
    c.dir = root_ + "/slot-" + std::to_string(next_slot_++);
    if (::mkdir(c.dir.c_str(), 0755) != 0 && errno != EEXIST)
      throw std::runtime_error("cannot create cgroup " + c.dir + ": " + std::strerror(errno));
    c.fd = ::open(c.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (c.fd >= 0) c.events_fd = ::openat(c.fd, "cgroup.events", O_RDONLY | O_CLOEXEC);
    if (c.fd < 0 || c.events_fd < 0) {
      int err = errno;
      if (c.fd >= 0) ::close(c.fd);
      ::rmdir(c.dir.c_str());
      throw std::runtime_error("cannot open cgroup " + c.dir + ": " + std::strerror(err));
    }
  }
  box->cgroup_fd_ = c.fd;
  box->events_fd_ = c.events_fd;
  box->cgroup_dir_ = c.dir;
  box->applied_ = c.applied;
  // The limits the cgroup had for its previous attempt are set to this one's (or lifted).
  std::string note;
  if (limits.memory_max != box->applied_.memory_max) {
    std::string value = limits.memory_max > 0 ? std::to_string(limits.memory_max) : "max";
    if (memory_ && write_at(box->cgroup_fd_, "memory.max", value))
      box->applied_.memory_max = limits.memory_max;
  }
  if (limits.cores != box->applied_.cores) {
    std::string quota = limits.cores > 0 ? std::to_string(100000LL * limits.cores) + " 100000" : "max 100000";
    if (cpu_ && write_at(box->cgroup_fd_, "cpu.max", quota)) box->applied_.cores = limits.cores;
  }
  if (limits.memory_max > 0) {
    if (box->applied_.memory_max == limits.memory_max)
      note += "memory.max=" + std::to_string(limits.memory_max) + " ";
    else note += "memory_max not applied (no memory controller for " + root_ + ") ";
  }
  if (limits.cores > 0) {
    std::string quota = std::to_string(100000LL * limits.cores) + " 100000";
    if (box->applied_.cores == limits.cores) note += "cpu.max=" + quota + " ";
    else note += "cores not applied (no cpu controller for " + root_ + ") ";
  }
  if (!note.empty()) note.pop_back();
  box->limits_note_ = note;
  boxes_.insert(box.get());
  return box;
}

int containment::sweep(bool idle) {
  if (mode_ != "subreaper" || !reap_all_) return 0;
  if (only_spawned_children(children_fd_)) return 0;  // no orphan to reap or kill
  const pid_t self = ::getpid();
  auto procs = scan_proc();
  auto below = descendants(procs, self);
  int killed = 0;
  if (idle) {
    for (pid_t p : below) {
      if (procs[p].state == 'Z' || is_spawned_child(p)) continue;
      if (::kill(p, SIGKILL) == 0) ++killed;
    }
    if (killed) log::warn("killed processes left below an idle worker count={}", killed);
  }
  reap_orphans(procs, below, self);
  return killed;
}

job_box::~job_box() {
  if (cgroup_fd_ >= 0) {
    bool left = !known_empty_ && populated();
    if (left) {
      kill_all();
      left = populated();
    }
    owner_.boxes_.erase(this);
    if (!left && !kill_written_) {
      owner_.give_back(containment::pooled_cgroup{cgroup_dir_, cgroup_fd_, events_fd_, applied_});
      return;
    }
    // Never reused: something survived cgroup.kill (it would be the next attempt's), or
    // cgroup.kill was written at all. Linux 6.18 then SIGKILLs every process later started in the
    // cgroup with CLONE_INTO_CGROUP (the cgroup's kill count no longer matches the one the fork
    // took from the parent's cgroup; tests/security/containment_test.cpp,
    // JobsAfterOneWhoseLeftoversWereKilledRunNormally).
    ::close(events_fd_);
    ::close(cgroup_fd_);
    if (::rmdir(cgroup_dir_.c_str()) != 0)
      log::warn("cgroup not removed dir={} error={}", cgroup_dir_, std::strerror(errno));
  }
}

bool job_box::populated() const {
  return events_fd_ >= 0 ? events_populated(events_fd_) : cgroup_populated(cgroup_dir_);
}

bool job_box::may_have_orphans() const { return !only_spawned_children(owner_.children_fd_); }

int job_box::kill_leftovers() {
  // The app has ended: in a cgroup, anything left keeps it populated; below a subreaper, anything
  // left is (or descends from) a child of the worker that the worker did not spawn.
  if (cgroup_fd_ >= 0 ? !populated() : !may_have_orphans()) {
    known_empty_ = true;  // until the next process starts in it (set_leader)
    return 0;
  }
  return kill_all();
}

std::set<pid_t> job_box::members(std::map<pid_t, proc_info>& procs, const std::set<pid_t>& below) const {
  const pid_t self = ::getpid();
  const std::string id_entry = std::string(1, '\0') + "DESCPROD_JOB_ID=" + std::to_string(id_) + '\0';
  const std::string attempt_entry =
      std::string(1, '\0') + "DESCPROD_ATTEMPT=" + std::to_string(attempt_) + '\0';
  std::map<pid_t, bool> member;
  for (pid_t p : below) {
    const auto& info = procs[p];
    if (info.state == 'Z') continue;
    member[p] =
        (leader_ > 0 && (p == leader_ || info.pgid == leader_)) || environ_names(p, id_entry, attempt_entry);
  }
  // Descendants of a member are members too (a double fork keeps its ancestry until the middle
  // process exits; the environment check catches it after).
  for (auto& [p, is] : member) {
    if (is) continue;
    pid_t cur = procs[p].ppid;
    for (int depth = 0; depth < 4096 && cur > 1 && cur != self; ++depth) {
      if (auto m = member.find(cur); m != member.end() && m->second) {
        is = true;
        break;
      }
      auto it = procs.find(cur);
      if (it == procs.end()) break;
      cur = it->second.ppid;
    }
  }
  std::set<pid_t> out;
  for (const auto& [p, is] : member)
    if (is) out.insert(p);
  return out;
}

int job_box::signal_all(int sig) {
  int n = 0;
  if (cgroup_fd_ >= 0) {
    for (pid_t p : cgroup_pids(cgroup_dir_))
      if (::kill(p, sig) == 0) ++n;
    return n;
  }
  const pid_t self = ::getpid();
  auto procs = scan_proc();
  auto below = descendants(procs, self);
  for (pid_t p : members(procs, below))
    if (::kill(p, sig) == 0) ++n;
  if (owner_.reap_all_) reap_orphans(procs, below, self);
  return n;
}

int job_box::kill_all(std::chrono::milliseconds deadline) {
  const auto until = steady::now() + deadline;
  if (cgroup_fd_ >= 0) {
    std::set<pid_t> seen;
    for (int round = 0; round < 10000; ++round) {
      for (pid_t p : cgroup_pids(cgroup_dir_)) seen.insert(p);
      if (!populated()) break;
      kill_written_ = true;
      if (!write_small(cgroup_dir_ + "/cgroup.kill", "1")) {
        // A kernel before 5.14: no cgroup.kill, signal each process instead.
        for (pid_t p : cgroup_pids(cgroup_dir_)) ::kill(p, SIGKILL);
      }
      if (steady::now() >= until) {
        log::warn("processes of a job still alive after cgroup.kill dir={}", cgroup_dir_);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (leader_ > 0) seen.erase(leader_);
    return static_cast<int>(seen.size());
  }
  // Subreaper: scan, SIGKILL the job's processes, again until none is left (a process forked
  // between a scan and the kill shows up in the next round: it inherits group and environment).
  std::set<std::pair<pid_t, unsigned long long>> killed;
  const pid_t self = ::getpid();
  for (int round = 0; round < 10000; ++round) {
    auto procs = scan_proc();
    auto below = descendants(procs, self);
    auto now_members = members(procs, below);
    if (owner_.reap_all_) reap_orphans(procs, below, self);
    if (now_members.empty()) break;
    for (pid_t p : now_members)
      if (::kill(p, SIGKILL) == 0 && p != leader_) killed.insert({p, procs[p].start});
    if (steady::now() >= until) {
      log::warn("processes of a job still alive after SIGKILL job_id={} attempt={}", id_, attempt_);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (owner_.reap_all_) {
    auto procs = scan_proc();
    reap_orphans(procs, descendants(procs, self), self);
  }
  return static_cast<int>(killed.size());
}

}  // namespace descprod::workers
