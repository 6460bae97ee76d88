// Temporary directories, redis-server and program fixtures, waits with deadlines, file helpers.
// Processes are spawned without a shell and always signalled by their own PID.
#include "tests/support/support.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <thread>

#include "core/process.hpp"

namespace descprod::test {

namespace {

using clock = std::chrono::steady_clock;

// posix_spawnp with stdin from /dev/null and stdout+stderr appended to `output` (kept when
// empty), default signal dispositions and an empty signal mask.
pid_t spawn(const std::vector<std::string>& args, const std::vector<std::string>& env,
            const std::string& output, const std::string& cwd) {
  if (args.empty()) throw std::invalid_argument("spawn: empty argv");
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (!output.empty()) {
    posix_spawn_file_actions_addopen(&fa, 1, output.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
  }
  if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
  sigset_t mask;
  sigemptyset(&mask);
  posix_spawnattr_setsigmask(&attr, &mask);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD, SIGQUIT, SIGUSR1, SIGUSR2})
    sigaddset(&defaults, s);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  pid_t pid = -1;
  int rc = posix_spawnp(&pid, argv[0], &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw std::system_error(rc, std::generic_category(), "spawn " + args[0]);
  return pid;
}

// The exit code, or -N for signal N.
int decode_status(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return -WTERMSIG(st);
  return -1000;
}

// Reaps `pid` if it has exited (or waits for it when `block`). Returns its status once reaped.
std::optional<int> reap_pid(pid_t pid, bool block) {
  int st = 0;
  while (true) {
    pid_t r = ::waitpid(pid, &st, block ? 0 : WNOHANG);
    if (r == pid) return decode_status(st);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1000;  // not our child any more: nothing left to wait for
    return std::nullopt;
  }
}

// SIGTERM, wait up to `grace`, then SIGKILL; always reaps. Returns the status.
int terminate_pid(pid_t pid, std::chrono::milliseconds grace) {
  ::kill(pid, SIGTERM);
  std::optional<int> st;
  wait_until([&] { return (st = reap_pid(pid, false)).has_value(); }, grace, 5ms);
  if (!st) {
    ::kill(pid, SIGKILL);
    st = reap_pid(pid, true);
  }
  return *st;
}

}  // namespace

// ---- temp_dir ----

temp_dir::temp_dir(const std::string& prefix) {
  std::string templ = "/tmp/" + prefix + "XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) throw std::system_error(errno, std::generic_category(), "mkdtemp");
  path_ = buf.data();
}

temp_dir::~temp_dir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

// ---- redis_server ----

redis_server::redis_server(bool appendonly)
    : dir_("descprod-redis-"), appendonly_(appendonly), socket_(dir_.file("redis.sock")) {
  start();
}

redis_server::redis_server(redis_server_options opts)
    : dir_("descprod-redis-"),
      appendonly_(opts.appendonly),
      socket_(dir_.file("redis.sock")),
      opts_(std::move(opts)) {
  start();
}

redis_server::~redis_server() { stop(); }

descprod::redis_endpoint redis_server::endpoint() const {
  descprod::redis_endpoint ep;
  ep.unix_path = socket_;
  ep.username = opts_.username;
  ep.password = opts_.password;
  return ep;
}

std::string redis_server::log() const {
  try {
    return read_file(dir_.file("redis.log"));
  } catch (const std::exception&) {
    return "";
  }
}

void redis_server::start() { start_process(true); }

void redis_server::start_loading() { start_process(false); }

void redis_server::start_process(bool until_ready) {
  if (pid_ > 0) throw std::logic_error("redis_server::start: already running");
  std::vector<std::string> args = {"redis-server", "--port", "0", "--unixsocket", socket_, "--unixsocketperm",
                                   "700", "--dir", dir_.path(), "--save", "", "--appendonly",
                                   appendonly_ ? "yes" : "no", "--daemonize", "no", "--pidfile",
                                   dir_.file("redis.pid"),
                                   // as scripts/descprod-up runs it (per-job streams stay small)
                                   "--stream-node-max-bytes", "512"};
  args.insert(args.end(), opts_.extra_args.begin(), opts_.extra_args.end());
  pid_ = spawn(args, descprod::environment_with({}), dir_.file("redis.log"), "");
  std::string last_error;
  bool exited = false;
  bool up = wait_until(
      [&] {
        if (reap_pid(pid_, false)) {
          exited = true;
          return true;
        }
        try {
          descprod::redis_sync c(endpoint());
          auto r = c.exec({"PING"});
          if (!until_ready) return true;  // connected: it may still answer LOADING
          return r.type == descprod::redis_reply::kind::status && r.str == "PONG";
        } catch (const std::exception& e) {
          last_error = e.what();
          return false;
        }
      },
      10s, 10ms);
  if (exited || !up) {
    if (!exited) terminate_pid(pid_, 5s);
    pid_ = -1;
    throw std::runtime_error("redis-server did not start (" + last_error + "); its log:\n" + log());
  }
}

void redis_server::stop() {
  if (pid_ <= 0) return;
  terminate_pid(pid_, 5s);
  pid_ = -1;
}

bool redis_server::wait_written(std::chrono::milliseconds limit) {
  if (pid_ <= 0) return false;
  descprod::redis_sync c(endpoint());
  return wait_until(
      [&] {
        auto r = c.exec({"INFO", "persistence"});
        return !r.is_error() && r.str.find("aof_enabled:1") != std::string::npos &&
               r.str.find("aof_buffer_length:0\r\n") != std::string::npos;
      },
      limit, 5ms);
}

void redis_server::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  reap_pid(pid_, true);
  pid_ = -1;
}

// ---- process ----

process::process(std::vector<std::string> argv, std::vector<std::pair<std::string, std::string>> env,
                 std::string output_file, std::string cwd)
    : output_file_(std::move(output_file)) {
  pid_ = spawn(argv, descprod::environment_with(env), output_file_, cwd);
}

process::~process() { stop(); }

bool process::reap(bool block) {
  if (status_) return true;
  if (pid_ <= 0) return false;
  status_ = reap_pid(pid_, block);
  return status_.has_value();
}

bool process::running() { return pid_ > 0 && !reap(false); }

std::optional<int> process::wait_exit(std::chrono::milliseconds timeout) {
  wait_until([&] { return reap(false); }, timeout, 5ms);
  return status_;
}

void process::signal(int sig) {
  if (pid_ > 0 && !reap(false)) ::kill(pid_, sig);
}

std::optional<int> process::stop(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return status_;
  if (!reap(false)) status_ = terminate_pid(pid_, timeout);
  return status_;
}

std::string process::output() const {
  if (output_file_.empty()) return "";
  try {
    return read_file(output_file_);
  } catch (const std::exception&) {
    return "";
  }
}

// ---- waits ----

bool wait_until(const std::function<bool()>& predicate, std::chrono::milliseconds timeout,
                std::chrono::milliseconds poll) {
  auto deadline = clock::now() + timeout;
  while (true) {
    if (predicate()) return true;
    auto now = clock::now();
    if (now >= deadline) return false;
    std::this_thread::sleep_for(std::min<clock::duration>(poll, deadline - now));
  }
}

bool run_until(net::io_context& ioc, const std::function<bool()>& predicate,
               std::chrono::milliseconds timeout) {
  auto deadline = clock::now() + timeout;
  while (!predicate()) {
    auto now = clock::now();
    if (now >= deadline) return false;
    if (ioc.stopped()) ioc.restart();
    auto slice = std::min<clock::duration>(deadline - now, 50ms);
    if (ioc.run_one_for(slice) == 0 && ioc.stopped()) {
      // No work left on the io_context: only another thread or process can change things now.
      std::this_thread::sleep_for(1ms);
    }
  }
  return true;
}

// ---- files ----

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write " + path);
  out << text;
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace descprod::test
