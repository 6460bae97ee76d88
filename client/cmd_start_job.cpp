// descprod-start-job [-w] [-f|-p] JOBID [USER [URL]]: runs a job on this machine.
//
// 1. POST /api/jobs/<id>/claim {"host"} with the user's token. The gateway moves the job to
//    dispatched atomically, so of two concurrent claims exactly one gets 200; the other gets 409
//    and this command exits 1. The answer has the same shape as the daemon's `job` message to a
//    worker, plus a job token.
// 2. The job runs with the worker's own runner (workers::job_run): a fresh run directory
//    <descprod-output-dir>/jobs/jobNNNNNN (jobNNNNNN.<attempt> when it exists), config.json, the
//    app exec'd without a shell in its own process group, current-status.txt watched, time limit,
//    descprod-closeout, progress.log and wrapper-status.json. The app's environment is the
//    worker's contract: DESCPROD_JOB_ID, DESCPROD_ATTEMPT, DESCPROD_RUNDIR, DESCPROD_URL and
//    DESCPROD_TOKEN (the job token).
// 3. A reporter thread sends started / progress / finished to the gateway with the job token,
//    retrying while the gateway is unreachable (progress is coalesced: only the newest is sent),
//    and polls the job every 2 s so that a cancel through the API stops the app (SIGTERM, SIGKILL
//    after 5 s).
//
// Without -w (DESCprod's default) the command returns as soon as the app has started, like
// DESCprod's orphaned wrapper; the runner and reporter go on in a background process (fork +
// setsid, so the end of the login session does not stop it) that logs to
// <rundir>/descprod-start-job.log and exits when the app has ended and the final report is in.
// With -w (or -f/-p) everything stays in the foreground and the exit status is the app's: its exit
// code, 124 on timeout, 128+N when signal N ended it. SIGINT/SIGTERM to the command terminate the
// app, which is then reported as killed; SIGHUP is ignored.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <thread>

#include "client/commands.hpp"
#include "client/common.hpp"
#include "client/format.hpp"
#include "client/terminal_text.hpp"
#include "core/job.hpp"
#include "core/log.hpp"
#include "workers/job_run.hpp"
#include "workers/job_spec.hpp"
#include "workers/options.hpp"
#include "workers/run_files.hpp"

namespace descprod::client {

namespace {

namespace net = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

constexpr auto cancel_poll_interval = 2s;                   // how often the job is read to notice a cancel
constexpr auto report_timeout = 10s;                        // one report request
constexpr auto kill_grace = 5s;                             // SIGTERM → SIGKILL on cancel and signals
constexpr auto finish_retry_limit = std::chrono::hours(1);  // keep trying to deliver `finished`
constexpr int report_tries = 5;              // started/progress: dropped after this many failures
constexpr auto wait_message_interval = 10s;  // DESCprod's "Still Waiting for process P"
constexpr auto follow_interval = 500ms;      // -f / -p: how often the followed file is read

// Sends the job's reports to the gateway from its own thread, in order, with the job token.
class reporter {
 public:
  reporter(url_parts url, std::string token, long long id, int attempt, std::string me)
      : url_(std::move(url)), token_(std::move(token)), id_(id), attempt_(attempt), me_(std::move(me)) {}
  ~reporter() { close(); }

  // `on_cancel` runs on the reporter thread when the job is seen cancelled (once).
  void start(std::function<void()> on_cancel) {
    on_cancel_ = std::move(on_cancel);
    thread_ = std::thread([this] { loop(); });
  }

  void started(long long pid, const std::string& host, const std::string& rundir) {
    json::object b;
    b["attempt"] = attempt_;
    b["pid"] = pid;
    b["host"] = host;
    b["rundir"] = rundir;
    push("started", std::move(b), false);
  }

  void progress(const std::string& message) {
    json::object b;
    b["attempt"] = attempt_;
    b["message"] = message;
    if (auto c = workers::parse_progress_counts(message)) {
      b["done"] = c->done;
      b["total"] = c->total;
    }
    push("progress", std::move(b), true);
  }

  void finished(const workers::job_result& r) {
    json::object b;
    b["attempt"] = attempt_;
    b["rc"] = r.rc;
    b["signal"] = r.signal;
    b["timed_out"] = r.timed_out;
    b["message"] = r.message;
    push("finished", std::move(b), false);
  }

  // Stops after everything queued was delivered or given up, and joins the thread.
  void close() {
    {
      std::lock_guard<std::mutex> lock(m_);
      closing_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  struct item {
    std::string kind;  // started, progress, finished
    json::object body;
  };

  void push(std::string kind, json::object body, bool coalesce) {
    {
      std::lock_guard<std::mutex> lock(m_);
      // Only the newest progress matters: replace a queued one that is not being sent.
      std::size_t first_free = in_flight_ ? 1 : 0;
      if (coalesce && q_.size() > first_free && q_.back().kind == "progress")
        q_.back().body = std::move(body);
      else q_.push_back(item{std::move(kind), std::move(body)});
      if (q_.back().kind == "finished") job_over_ = true;
    }
    cv_.notify_all();
  }

  enum class outcome { delivered, rejected, retry };

  outcome send(const item& it) {
    header_list h;
    h.emplace_back("Authorization", "Bearer " + token_);
    std::string path = "/api/jobs/" + std::to_string(id_) + "/" + it.kind;
    try {
      auto r = http_request(url_, "POST", path, json::serialize(it.body), h, report_timeout);
      if (r.status >= 200 && r.status < 300) return outcome::delivered;
      if (r.status >= 500 || r.status == 429) return outcome::retry;
      api_reply a;
      a.status = r.status;
      a.raw = r.body;
      boost::system::error_code ec;
      a.body = json::parse(r.body, ec);
      std::cerr << me_ << ": the server did not take the " << it.kind << " report of job " << id_ << " (HTTP "
                << r.status << "): " << terminal_safe(error_detail(a)) << std::endl;
      return outcome::rejected;
    } catch (const unreachable& e) {
      if (!warned_unreachable_)
        std::cerr << me_ << ": cannot deliver the " << it.kind << " report of job " << id_ << ": "
                  << terminal_safe(e.what()) << "; retrying" << std::endl;
      warned_unreachable_ = true;
      return outcome::retry;
    }
  }

  void poll_cancel() {
    if (cancel_seen_ || !on_cancel_) return;
    header_list h;
    h.emplace_back("Authorization", "Bearer " + token_);
    try {
      auto r = http_request(url_, "GET", "/api/jobs/" + std::to_string(id_), {}, h, report_timeout);
      if (r.status != 200) return;
      boost::system::error_code ec;
      auto v = json::parse(r.body, ec);
      if (ec || !v.is_object()) return;
      const auto& o = v.as_object();
      bool cancel = json_string(o, "state") == "cancelled" ||
                    json_int(o, "cancel_requested").value_or(0) != 0 ||
                    (o.contains("cancel_requested") && o.at("cancel_requested").is_bool() &&
                     o.at("cancel_requested").as_bool());
      if (cancel) {
        cancel_seen_ = true;
        std::cerr << me_ << ": job " << id_ << " was cancelled; stopping it" << std::endl;
        on_cancel_();
      }
    } catch (const unreachable&) {
    }
  }

  void loop() {
    auto next_poll = steady::now() + cancel_poll_interval;
    int failures = 0;
    auto backoff = 1s;
    std::optional<steady::time_point> finish_deadline;
    std::unique_lock<std::mutex> lock(m_);
    while (true) {
      if (q_.empty()) {
        if (closing_) return;
        if (job_over_) {
          cv_.wait(lock, [&] { return closing_ || !q_.empty(); });
          continue;
        }
        if (cv_.wait_until(lock, next_poll, [&] { return closing_ || !q_.empty(); })) continue;
        lock.unlock();
        poll_cancel();
        lock.lock();
        next_poll = steady::now() + cancel_poll_interval;
        continue;
      }
      item it = q_.front();
      in_flight_ = true;
      lock.unlock();
      if (it.kind == "finished" && !finish_deadline) finish_deadline = steady::now() + finish_retry_limit;
      outcome o = send(it);
      lock.lock();
      in_flight_ = false;
      bool give_up = false;
      if (o == outcome::retry) {
        ++failures;
        if (it.kind == "finished") give_up = steady::now() >= *finish_deadline;
        else give_up = failures >= report_tries && (closing_ || q_.size() > 1);
        if (give_up)
          std::cerr << me_ << ": gave up delivering the " << it.kind << " report of job " << id_ << std::endl;
      }
      if (o != outcome::retry || give_up) {
        q_.pop_front();
        failures = 0;
        backoff = 1s;
        if (o == outcome::delivered) warned_unreachable_ = false;
        continue;
      }
      // Retry later; a newer progress may replace this one meanwhile (it is no longer in flight).
      cv_.wait_for(lock, backoff);
      backoff = std::min(backoff * 2, std::chrono::seconds(32));
    }
  }

  url_parts url_;
  std::string token_;
  long long id_;
  int attempt_;
  std::string me_;
  std::function<void()> on_cancel_;
  std::thread thread_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<item> q_;
  bool in_flight_ = false;
  bool closing_ = false;
  bool job_over_ = false;
  bool cancel_seen_ = false;
  bool warned_unreachable_ = false;
};

// Prints what a followed file (-f, -p) gained since the last call.
class file_follower {
 public:
  explicit file_follower(fs::path p) : path_(std::move(p)) {}
  void pump() {
    std::ifstream in(path_, std::ios::binary);
    if (!in) return;
    in.seekg(0, std::ios::end);
    auto size = static_cast<std::streamoff>(in.tellg());
    if (size < offset_) offset_ = 0;  // truncated
    if (size == offset_) return;
    in.seekg(offset_);
    std::string chunk(static_cast<std::size_t>(size - offset_), '\0');
    in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    offset_ += in.gcount();
    std::cout.write(chunk.data(), in.gcount());
    std::cout.flush();
  }

 private:
  fs::path path_;
  std::streamoff offset_ = 0;
};

struct start_options {
  std::string me;
  bool wait = false;
  std::string follow;  // "", "job" or "progress"
  bool background = false;
  int notify_fd = -1;  // background: where the parent learns that the app started
  time_style times = time_style::utc;
};

// The Started lines, from the claimed job and what the start added.
std::vector<std::string> started_lines(const start_options& o, json::object job, long long pid,
                                       const std::string& host, const std::string& rundir, double start) {
  job["host"] = host;
  job["rundir"] = rundir;
  job["pid"] = pid;
  job["start_time"] = start;
  job["progress"] = "Running.";
  job["state"] = "running";
  std::vector<std::string> out;
  out.push_back(o.me + ": Started job " + json_string(job, "id") + ":");
  for (auto& l : job_field_lines(job, o.times, o.me + ":")) out.push_back(std::move(l));
  return out;
}

void write_all(int fd, const std::string& s) {
  std::size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    off += static_cast<std::size_t>(n);
  }
}

struct run_outcome {
  workers::job_result result;
  long long pid = 0;
};

// Runs the claimed job here to its end and returns how it ended.
run_outcome run_claimed(const start_options& o, const workers::job_spec& spec, const json::object& job,
                        const workers::run_settings& settings, const url_parts& url,
                        const std::string& job_token) {
  net::io_context ioc;
  reporter rep(url, job_token, spec.id, spec.attempt, o.me);
  std::optional<workers::job_result> result;
  std::unique_ptr<file_follower> follower;
  bool notified = false;
  long long pid = 0;

  workers::job_observer obs;
  obs.on_started = [&](const workers::job_run& r) {
    pid = r.pid();
    rep.started(r.pid(), settings.host, r.rundir().string());
    if (o.background) {
      // From here on the background process logs next to the job's own files.
      std::string log = (r.rundir() / "descprod-start-job.log").string();
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, STDOUT_FILENO);
        ::dup2(fd, STDERR_FILENO);
        ::close(fd);
      }
    }
    if (o.notify_fd >= 0) {
      write_all(o.notify_fd, "started " + std::to_string(r.pid()) + " " + r.rundir().string() + "\n");
      ::close(o.notify_fd);
      notified = true;
    }
    if (!o.background) {
      std::cout << "Starting job " << spec.id << " for " << terminal_safe(json_string(job, "descname"))
                << " in " << r.rundir().string() << "\n";
      for (const auto& l :
           started_lines(o, job, r.pid(), settings.host, r.rundir().string(), workers::epoch_seconds()))
        std::cout << l << "\n";
      if (!o.follow.empty()) {
        fs::path f = o.follow == "job" ? r.log_file() : r.rundir() / "progress.log";
        std::cout << o.me << ": Following " << o.follow << " log file " << f.string() << ".\n"
                  << o.me << ": " << std::string(72, '=') << "\n";
        follower = std::make_unique<file_follower>(f);
      }
      if (o.wait) std::cout << o.me << ": Waiting for process " << r.pid() << " to complete.\n";
      std::cout.flush();
    }
  };
  obs.on_progress = [&](const workers::job_run& r) { rep.progress(r.message()); };

  workers::job_run run(ioc.get_executor(), spec, settings, obs);
  rep.start([&] { net::post(ioc, [&] { run.terminate(kill_grace); }); });

  net::signal_set signals(ioc, SIGINT, SIGTERM);
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        std::cerr << o.me << ": got signal " << sig << "; stopping job " << spec.id << std::endl;
        run.terminate(kill_grace);
        signals.async_wait(on_signal);
      };
  signals.async_wait(on_signal);

  // -f/-p output and DESCprod's "Still Waiting" lines (-w), on one timer.
  net::steady_timer ticker(ioc);
  auto last_wait_message = steady::now();
  std::function<void(const boost::system::error_code&)> on_tick = [&](const boost::system::error_code& ec) {
    if (ec || result) return;
    if (follower) follower->pump();
    if (o.wait && pid > 0 && steady::now() - last_wait_message >= wait_message_interval) {
      std::cout << o.me << ": Still Waiting for process " << pid << std::endl;
      last_wait_message = steady::now();
    }
    ticker.expires_after(follow_interval);
    ticker.async_wait(on_tick);
  };
  if (!o.background) {
    ticker.expires_after(follow_interval);
    ticker.async_wait(on_tick);
  }

  net::co_spawn(ioc, run.run(), [&](std::exception_ptr e, workers::job_result r) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        r.rc = 127;
        r.message = std::string("runner failed: ") + ex.what();
      }
    }
    result = r;
    signals.cancel();
    ticker.cancel();
  });
  ioc.run();

  if (!notified && o.notify_fd >= 0) {
    write_all(o.notify_fd,
              "failed " + (result ? result->message : std::string("the job did not start")) + "\n");
    ::close(o.notify_fd);
  }
  if (follower) {
    follower->pump();
    std::cout << o.me << ": " << std::string(72, '=') << "\n" << o.me << ": Terminating log follow.\n";
  }
  rep.finished(*result);
  rep.close();
  return run_outcome{*result, pid};
}

// What -w exits with.
int exit_status_of(const workers::job_result& r) {
  if (r.timed_out) return 124;
  if (r.signal > 0) return 128 + r.signal;
  return r.rc & 0xff;
}

}  // namespace

int start_job_main(int argc, char** argv) {
  const std::string me = program_name(argc > 0 ? argv[0] : nullptr, "descprod-start-job");
  return guarded(me, [&]() -> int {
    auto specs = server_options();
    specs.push_back({'w', "wait", false});
    specs.push_back({'f', "follow-log", false});
    specs.push_back({'p', "follow-progress", false});
    specs.push_back({'d', "debug", false});
    specs.push_back({0, "epoch", false});
    auto a = parse_args(arguments(argc, argv), specs);
    if (a.has("help")) {
      std::cout << "Usage: " << me << " [-h] [-d] [-w] [-f] [-p] JOBID [USER [URL]]\n"
                << "Claims job JOBID and runs it on this machine in\n"
                << "$(descprod-output-dir get jobs/jobNNNNNN), reporting to the server.\n"
                << "     -h - Show this message and exit.\n"
                << "     -d - Debug: log the runner's steps on stderr.\n"
                << "     -w - Wait for job to complete before exiting; exit with its status\n"
                << "          (its exit code, 124 on timeout, 128+N for signal N).\n"
                << "     -f - Follow job log (implies waiting).\n"
                << "     -p - Follow progress log (implies waiting).\n"
                << "  JOBID - Job ID.\n"
                << "   USER - Accepted for DESCprod compatibility and ignored.\n"
                << "    URL - Server URL (the same as --url).\n"
                << "Without -w the command returns once the application has started; a background\n"
                << "process keeps running it and reporting until it ends (its log:\n"
                << "<rundir>/descprod-start-job.log).\n"
                << "      --epoch           print times as integer epoch seconds\n"
                << "      --url URL         server (default $DESCPROD_URL, else the stored URL,\n"
                << "                        else http://127.0.0.1:8080)\n"
                << "      --token-file F    read the API token from F (default $DESCPROD_TOKEN, else the\n"
                << "                        file descprod-login wrote)\n";
      return exit_code::ok;
    }
    if (a.positional.empty()) throw usage_error("a job ID is required");
    if (a.positional.size() > 3) throw usage_error("too many arguments");
    long long id = parse_job_id(a.positional[0]);
    start_options o;
    o.me = me;
    o.follow = a.has("follow-log") ? "job" : a.has("follow-progress") ? "progress" : "";
    o.wait = a.has("wait") || !o.follow.empty();
    o.times = a.has("epoch") ? time_style::epoch : time_style::utc;
    log::init(me, a.has("debug") ? "debug" : "warn");

    auto env = process_env();
    std::optional<std::string> url_flag = a.value("url");
    if (!url_flag && a.positional.size() > 2) url_flag = a.positional[2];
    api_client api(resolve_url(url_flag, env), resolve_token(a.value("token-file"), env));

    auto facts = workers::current_host_facts();
    const std::string host = facts.fqdn.empty() ? facts.hostname : facts.fqdn;
    json::object claim_body;
    claim_body["host"] = host;
    json::value claim_req(claim_body);
    auto r = api.call("POST", "/api/jobs/" + std::to_string(id) + "/claim", &claim_req);
    if (r.status == 409)
      throw client_error(exit_code::server_error, "Job cannot be started. " + error_detail(r));
    if (r.status != 200) throw error_for(r);
    if (!r.body.is_object())
      throw client_error(exit_code::server_error, "the claim answer is not a JSON object");
    const auto& claim = r.body.as_object();
    std::string why;
    auto spec = workers::parse_job_message(claim, why);
    if (!spec) throw client_error(exit_code::server_error, "the claim answer is malformed: " + why);
    std::string job_token = json_string(claim, "token");
    if (job_token.empty()) throw client_error(exit_code::server_error, "the claim answer has no job token");
    spec->env.emplace_back("DESCPROD_TOKEN", job_token);
    const json::object job = claim.at("job").as_object();

    workers::run_settings settings;
    std::error_code ec;
    settings.output_dir = fs::absolute(output_base_dir(env), ec);
    if (ec) settings.output_dir = output_base_dir(env);
    settings.host = host;
    settings.gateway_url = api.url_text();
    settings.kill_grace = kill_grace;

    if (o.wait) {
      auto ran = run_claimed(o, *spec, job, settings, api.url(), job_token);
      auto outcome = classify_exit(ran.result.rc, ran.result.signal, ran.result.timed_out);
      std::cout << me << ": Job process " << ran.pid << " returned code: " << outcome.return_status
                << std::endl;
      return exit_status_of(ran.result);
    }

    // Background: the child runs and reports; this process waits only for the start.
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      throw client_error(exit_code::server_error, std::string("pipe: ") + std::strerror(errno));
    std::cout.flush();
    std::cerr.flush();
    pid_t child = ::fork();
    if (child < 0) throw client_error(exit_code::server_error, std::string("fork: ") + std::strerror(errno));
    if (child == 0) {
      ::close(fds[0]);
      ::setsid();
      ::signal(SIGHUP, SIG_IGN);
      int devnull = ::open("/dev/null", O_RDWR);
      if (devnull >= 0) {
        ::dup2(devnull, STDIN_FILENO);
        ::dup2(devnull, STDOUT_FILENO);
        ::dup2(devnull, STDERR_FILENO);
        if (devnull > STDERR_FILENO) ::close(devnull);
      }
      o.background = true;
      o.notify_fd = fds[1];
      int code = exit_code::ok;
      try {
        run_claimed(o, *spec, job, settings, api.url(), job_token);
      } catch (const std::exception& e) {
        std::cerr << me << ": " << terminal_safe(e.what()) << std::endl;
        code = exit_code::server_error;
      }
      std::cout.flush();
      std::cerr.flush();
      ::_exit(code);
    }
    ::close(fds[1]);
    std::string note;
    char buf[4096];
    // The child writes one line once the app runs (or failed to start); a minute is ample.
    auto deadline = steady::now() + 60s;
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now()).count();
      if (left <= 0) break;
      pollfd p{fds[0], POLLIN, 0};
      int n = ::poll(&p, 1, static_cast<int>(left));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      ssize_t got = ::read(fds[0], buf, sizeof buf);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;
      note.append(buf, static_cast<std::size_t>(got));
    }
    ::close(fds[0]);
    if (note.rfind("started ", 0) == 0) {
      std::string rest = note.substr(8);
      while (!rest.empty() && rest.back() == '\n') rest.pop_back();
      auto sp = rest.find(' ');
      long long pid = std::stoll(rest.substr(0, sp));
      std::string rundir = sp == std::string::npos ? "" : rest.substr(sp + 1);
      std::cout << "Starting job " << id << " for " << terminal_safe(json_string(job, "descname")) << " in "
                << terminal_safe(rundir) << "\n";
      for (const auto& l : started_lines(o, job, pid, host, rundir, workers::epoch_seconds()))
        std::cout << l << "\n";
      return exit_code::ok;
    }
    if (note.rfind("failed ", 0) == 0) {
      std::string msg = note.substr(7);
      while (!msg.empty() && msg.back() == '\n') msg.pop_back();
      ::waitpid(child, nullptr, 0);
      throw client_error(exit_code::server_error, "Job start failed: " + msg);
    }
    throw client_error(exit_code::server_error,
                       "the background runner (pid " + std::to_string(child) + ") did not report the start");
  });
}

}  // namespace descprod::client
