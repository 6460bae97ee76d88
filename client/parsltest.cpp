// runapp-parsltest (see parsltest.hpp). Local mode forks one process per task (no exec: it sleeps
// and writes its logs), at most nwrk at once, and rewrites current-status.txt after every task
// that ends. Fan-out mode creates the tasks as child jobs through the gateway (DESCPROD_URL,
// DESCPROD_TOKEN, parent DESCPROD_JOB_ID — what descprod-add-job -p does) and follows them by
// reading its own job's `children` roll-up every second until all are terminal; on SIGTERM (a
// cancel) it asks the service to cancel the children that have not ended.
// Exit codes: 0 all tasks done, 1 bad arguments or config, 2 fan-out cannot reach or use the
// service, 3 a task (or child job) did not end done.
#include "client/parsltest.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>
#include <thread>

#include <spdlog/fmt/fmt.h>

#include "client/commands.hpp"
#include "client/common.hpp"
#include "core/job.hpp"
#include "workers/run_files.hpp"

namespace descprod::client {

namespace parsltest {

namespace {
constexpr long long max_tasks = 100000;
constexpr long long max_workers = 1024;
constexpr long long max_seconds = 86400;

bool number_field(std::string_view f, std::string_view name, long long lo, long long hi,
                  std::optional<long long>& out, std::string& why) {
  if (f.substr(0, name.size()) != name) return false;
  auto digits = f.substr(name.size());
  bool ok = !digits.empty() && digits.size() <= 12;
  for (char c : digits)
    if (c < '0' || c > '9') ok = false;
  if (!ok) {
    why = "field '" + std::string(f) + "': expected " + std::string(name) + " followed by a number";
    out.reset();
    return true;
  }
  long long v = std::stoll(std::string(digits));
  if (v < lo || v > hi) {
    why = "field '" + std::string(f) + "': " + std::string(name) + " must be from " + std::to_string(lo) +
          " to " + std::to_string(hi);
    out.reset();
    return true;
  }
  out = v;
  return true;
}
}  // namespace

std::optional<config> parse_config(std::string_view text, std::string& why) {
  if (int chk = check_config(text)) {
    why = "invalid config '" + std::string(text) + "': " + std::string(check_config_reason(chk));
    return std::nullopt;
  }
  config c;
  for (const auto& f : split_config(text)) {
    std::optional<long long> v;
    std::string err;
    if (f == "sleep" || f == "ifixw" || f == "ifixn" || f == "ifix0") {
      c.fail_type = false;
    } else if (f == "fail") {
      c.fail_type = true;
    } else if (f == "fanout") {
      c.fanout = true;
    } else if (f == "wq" || f == "ww" || f == "ht" || f == "tp") {
      // DESCprod's parsl executors: every task runs as a local process here.
    } else if (number_field(f, "ttsk", 0, max_seconds, v, err)) {
      if (!v) return why = err, std::nullopt;
      c.ttsk_s = *v;
    } else if (number_field(f, "tskms", 0, max_seconds * 1000, v, err)) {
      if (!v) return why = err, std::nullopt;
      c.tskms = v;
    } else if (number_field(f, "ntsk", 1, max_tasks, v, err)) {
      if (!v) return why = err, std::nullopt;
      c.ntsk = *v;
    } else if (number_field(f, "nwrk", 1, max_workers, v, err)) {
      if (!v) return why = err, std::nullopt;
      c.nwrk = *v;
    } else if (number_field(f, "nfail", 0, max_tasks, v, err)) {
      if (!v) return why = err, std::nullopt;
      c.nfail = v;
    } else if (number_field(f, "mtsk", 0, 1 << 20, v, err) || number_field(f, "dsam", 0, 1 << 20, v, err) ||
               number_field(f, "nnod", 0, 1 << 20, v, err)) {
      if (!v) return why = err, std::nullopt;
    } else {
      why = "unknown config field '" + f + "'";
      return std::nullopt;
    }
  }
  if (c.nfail && *c.nfail > c.ntsk) {
    why = "nfail" + std::to_string(*c.nfail) + " is more than the " + std::to_string(c.ntsk) + " tasks";
    return std::nullopt;
  }
  return c;
}

std::vector<long long> task_durations_ms(const config& c, std::mt19937& rng) {
  std::vector<long long> out;
  out.reserve(static_cast<std::size_t>(c.ntsk));
  for (long long i = 0; i < c.ntsk; ++i) {
    if (c.tskms) {
      out.push_back(*c.tskms);
      continue;
    }
    // numpy.linspace(ttsk/2, ttsk, ntsk), in ms.
    long long lo = c.ttsk_s * 500;
    long long hi = c.ttsk_s * 1000;
    out.push_back(c.ntsk > 1 ? lo + (hi - lo) * i / (c.ntsk - 1) : lo);
  }
  std::shuffle(out.begin(), out.end(), rng);
  return out;
}

std::vector<bool> failing_tasks(const config& c) {
  long long n = c.nfail ? *c.nfail : (c.fail_type ? c.ntsk : 0);
  std::vector<bool> out(static_cast<std::size_t>(c.ntsk), false);
  for (long long i = 0; i < n && i < c.ntsk; ++i) out[static_cast<std::size_t>(i)] = true;
  return out;
}

std::string child_config(long long ms, bool fail) {
  return std::string(fail ? "fail" : "sleep") + "-tskms" + std::to_string(ms) + "-ntsk1-nwrk1";
}

std::string status_line(const counts& c) {
  std::string done = fmt::format("{:4} exec_done", c.done);
  if (c.failed > 0) done += fmt::format(", {:4} failed", c.failed);
  return fmt::format("[{}/{}] {:4}/{} tasks remaining: {}; {:4} running, {:4} launched", c.finished(),
                     c.total, c.total - c.finished(), c.total, done, c.running, c.waiting);
}

std::string final_line(const counts& c) {
  if (c.failed == 0)
    return fmt::format("[{}/{}] All {} tasks complete: {:4} exec_done", c.finished(), c.total, c.total,
                       c.done);
  return fmt::format("[{}/{}] {} of {} tasks failed: {:4} exec_done, {:4} failed", c.finished(), c.total,
                     c.failed, c.total, c.done, c.failed);
}

}  // namespace parsltest

namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

volatile std::sig_atomic_t stop_requested = 0;
extern "C" void on_stop_signal(int) { stop_requested = 1; }

void write_status(const std::string& line) {
  try {
    workers::write_file_atomic("current-status.txt", line + "\n");
  } catch (const std::exception& e) {
    std::cerr << "runapp-parsltest: cannot write current-status.txt: " << e.what() << "\n";
  }
  std::cout << line << std::endl;
}

// The body of one task process: its logs, its sleep, its outcome.
[[noreturn]] void run_task(long long index, long long ms, bool fail) {
  std::string out = fmt::format("logo/taskout{:04}.log", index);
  std::string err = fmt::format("loge/taskerr{:04}.log", index);
  FILE* o = std::fopen(out.c_str(), "w");
  FILE* e = std::fopen(err.c_str(), "w");
  if (o) std::fprintf(o, "task %lld: sleeping %lld.%03lld s\n", index, ms / 1000, ms % 1000), std::fflush(o);
  timespec ts{static_cast<time_t>(ms / 1000), static_cast<long>((ms % 1000) * 1000000)};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
  if (fail) {
    if (e) std::fprintf(e, "task %lld: failing as configured (test task)\n", index), std::fflush(e);
    ::_exit(1);
  }
  if (o) std::fprintf(o, "task %lld: done\n", index), std::fflush(o);
  ::_exit(0);
}

int run_local(const parsltest::config& c, const std::vector<long long>& durations,
              const std::vector<bool>& fails) {
  std::error_code ec;
  fs::create_directories("logo", ec);
  fs::create_directories("loge", ec);
  parsltest::counts n;
  n.total = c.ntsk;
  n.waiting = c.ntsk;
  std::map<pid_t, long long> running;
  long long next = 0;
  std::string last;
  while (next < c.ntsk || !running.empty()) {
    while (next < c.ntsk && static_cast<long long>(running.size()) < c.nwrk) {
      std::cout.flush();
      pid_t pid = ::fork();
      if (pid < 0) {
        std::cerr << "runapp-parsltest: fork failed: " << std::strerror(errno) << "\n";
        break;
      }
      if (pid == 0)
        run_task(next, durations[static_cast<std::size_t>(next)], fails[static_cast<std::size_t>(next)]);
      running[pid] = next++;
      ++n.running;
      --n.waiting;
    }
    if (running.empty()) {
      write_status("runapp-parsltest: cannot start tasks");
      return 3;
    }
    // Reported once the free workers have their next tasks, so "running" is what runs.
    if (std::string line = parsltest::status_line(n); line != last) {
      write_status(line);
      last = line;
    }
    int st = 0;
    pid_t pid = ::waitpid(-1, &st, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      std::cerr << "runapp-parsltest: waitpid: " << std::strerror(errno) << "\n";
      return 3;
    }
    auto it = running.find(pid);
    if (it == running.end()) continue;
    running.erase(it);
    --n.running;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) ++n.done;
    else ++n.failed;
  }
  write_status(parsltest::final_line(n));
  return n.failed == 0 ? 0 : 3;
}

// The children's states from the parent's `children` roll-up, else from GET /api/jobs?parent=,
// else from each child; nullopt when none of these works.
class child_counter {
 public:
  child_counter(const api_client& api, long long self, std::vector<long long> children)
      : api_(api), self_(self), children_(std::move(children)) {}

  std::optional<std::map<std::string, long long>> states() {
    if (mode_ <= 0) {
      auto r = api_.call("GET", "/api/jobs/" + std::to_string(self_));
      if (r.status == 200 && r.body.is_object() && r.body.as_object().contains("children") &&
          r.body.as_object().at("children").is_object()) {
        mode_ = 0;
        std::map<std::string, long long> out;
        for (const auto& kv : r.body.as_object().at("children").as_object())
          if (kv.key() != "total")
            out[std::string(kv.key())] =
                json_int(r.body.as_object().at("children").as_object(), kv.key()).value_or(0);
        return out;
      }
      if (mode_ == 0) return std::nullopt;  // worked before: a passing problem
      mode_ = 1;
    }
    if (mode_ == 1) {
      std::map<std::string, long long> out;
      long long offset = 0;
      bool ok = true;
      while (true) {
        auto r = api_.call("GET", "/api/jobs?parent=" + std::to_string(self_) +
                                      "&limit=1000&offset=" + std::to_string(offset));
        if (r.status != 200 || !r.body.is_object() || !r.body.as_object().contains("jobs")) {
          ok = false;
          break;
        }
        const auto& arr = r.body.as_object().at("jobs").as_array();
        for (const auto& j : arr)
          if (j.is_object()) ++out[json_string(j.as_object(), "state")];
        offset += static_cast<long long>(arr.size());
        if (arr.size() < 1000) break;
      }
      if (ok) return out;
      mode_ = 2;
    }
    std::map<std::string, long long> out;
    for (long long id : children_) {
      auto r = api_.call("GET", "/api/jobs/" + std::to_string(id));
      if (r.status != 200 || !r.body.is_object()) return std::nullopt;
      ++out[json_string(r.body.as_object(), "state")];
    }
    return out;
  }

 private:
  const api_client& api_;
  long long self_;
  std::vector<long long> children_;
  int mode_ = -1;  // -1 unknown, 0 roll-up, 1 list by parent, 2 one by one
};

parsltest::counts counts_from(const std::map<std::string, long long>& states, long long total) {
  parsltest::counts n;
  n.total = total;
  for (const auto& [state, k] : states) {
    if (state == "done") n.done += k;
    else if (state == "running" || state == "dispatched") n.running += k;
    else if (state == "ready") n.waiting += k;
    else n.failed += k;
  }
  // Children not visible yet count as waiting.
  long long seen = n.done + n.failed + n.running + n.waiting;
  if (seen < total) n.waiting += total - seen;
  return n;
}

int run_fanout(const parsltest::config& c, const std::vector<long long>& durations,
               const std::vector<bool>& fails) {
  auto env = process_env();
  auto self_text = env("DESCPROD_JOB_ID");
  if (!self_text || self_text->empty()) {
    write_status("runapp-parsltest: fanout needs DESCPROD_JOB_ID (run it as a job)");
    return 2;
  }
  long long self = 0;
  try {
    self = parse_job_id(*self_text, "DESCPROD_JOB_ID");
  } catch (const client_error& e) {
    write_status(std::string("runapp-parsltest: ") + e.what());
    return 2;
  }
  try {
    api_client api(resolve_url(std::nullopt, env), resolve_token(std::nullopt, env), 30s);
    write_status(fmt::format("[0/{}] creating {} child jobs", c.ntsk, c.ntsk));
    std::vector<long long> children;
    for (long long i = 0; i < c.ntsk && !stop_requested; ++i) {
      json::object body;
      body["jobtype"] = "parsltest";
      body["config"] =
          parsltest::child_config(durations[static_cast<std::size_t>(i)], fails[static_cast<std::size_t>(i)]);
      body["parent"] = self;
      json::value req(body);
      auto v = api.call_ok("POST", "/api/jobs", &req);
      auto id = v.is_object() ? json_int(v.as_object(), "id") : std::nullopt;
      if (!id) throw client_error(exit_code::server_error, "the server's answer has no job ID");
      children.push_back(*id);
      std::cout << "created child job " << *id << " (" << json_string(body, "config") << ")" << std::endl;
    }
    child_counter counter(api, self, children);
    parsltest::counts n;
    n.total = c.ntsk;
    std::string last;
    int misses = 0;
    while (!stop_requested) {
      std::optional<std::map<std::string, long long>> states;
      try {
        states = counter.states();
      } catch (const client_error& e) {
        if (e.code != exit_code::unreachable) throw;
        std::cerr << "runapp-parsltest: " << e.what() << "\n";
      }
      if (states) {
        misses = 0;
        n = counts_from(*states, c.ntsk);
        if (n.finished() >= n.total) break;
        std::string line = parsltest::status_line(n);
        if (line != last) write_status(line);
        last = line;
      } else if (++misses == 30) {
        std::cerr << "runapp-parsltest: cannot read the child jobs' states; still trying\n";
      }
      for (int k = 0; k < 10 && !stop_requested; ++k) std::this_thread::sleep_for(100ms);
    }
    if (stop_requested) {
      // Cancelled: take the children with us (best effort; they may already have ended).
      for (long long id : children) {
        try {
          api.call("POST", "/api/jobs/" + std::to_string(id) + "/cancel");
        } catch (const std::exception&) {
        }
      }
      write_status(
          fmt::format("[{}/{}] stopped; asked the service to cancel the child jobs", n.finished(), n.total));
      return 128 + SIGTERM;
    }
    write_status(parsltest::final_line(n));
    return n.failed == 0 ? 0 : 3;
  } catch (const client_error& e) {
    write_status(std::string("runapp-parsltest: fanout failed: ") + e.what());
    return 2;
  }
}

}  // namespace

int parsltest_main(int argc, char** argv) {
  const std::string usage =
      "Usage: runapp-parsltest CONFIG [HOWFIG]\n"
      "DESCprod's parallel test application. CONFIG fields (dash-separated):\n"
      "  sleep|fail     task type (fail: test only, tasks exit 1)\n"
      "  ttskN          task time: durations spread from N/2 to N seconds, shuffled\n"
      "  tskmsN         every task takes exactly N ms\n"
      "  ntskN nwrkN    N tasks, at most N at once\n"
      "  nfailK         K tasks fail (test only)\n"
      "  fanout         run the tasks as child jobs of this job (jobtype parsltest)\n"
      "  wq ww ht tp mtskN dsamN nnodN   accepted and ignored (DESCprod's parsl options)\n"
      "Example: sleep-ttsk2-ntsk20-nwrk4 (20 tasks of 1-2 s, 4 at once).\n"
      "Progress goes to current-status.txt; task logs to logo/ and loge/.\n"
      "Exit: 0 all tasks done, 1 bad arguments, 2 fan-out cannot use the service, 3 a task failed.\n";
  auto args = arguments(argc, argv);
  if (!args.empty() && (args[0] == "-h" || args[0] == "--help")) {
    std::cout << usage;
    return 0;
  }
  if (args.empty() || args.size() > 2) {
    std::cerr << usage;
    return 1;
  }
  std::string why;
  auto c = parsltest::parse_config(args[0], why);
  if (!c) {
    write_status("runapp-parsltest: " + why);
    return 1;
  }
  if (args.size() > 1 && !args[1].empty() && check_config(args[1]) != 0) {
    write_status("runapp-parsltest: invalid howfig '" + args[1] + "'");
    return 1;
  }
  // Fan-out catches SIGTERM to cancel its children; local tasks simply die with their process group.
  if (c->fanout) std::signal(SIGTERM, on_stop_signal);
  std::mt19937 rng(std::random_device{}());
  auto durations = parsltest::task_durations_ms(*c, rng);
  auto fails = parsltest::failing_tasks(*c);
  if (c->fanout) return run_fanout(*c, durations, fails);
  return run_local(*c, durations, fails);
}

}  // namespace descprod::client
