// Elastic pilots: see pilots.hpp. One coroutine (run) wakes every check_interval, reads squeue
// when due, compares demand with supply and submits pilots one sbatch at a time. Caveats: squeue
// is asked for this user's jobs named job_name (`--me --name`), so two daemons of one user must
// use different job names; a pilot that squeue no longer lists (older than MinJobAge) counts as
// ended. The daemon never cancels pilots when it stops: they reconnect to the next daemon or
// leave after their idle timeout.
#include "daemon/pilots.hpp"

#include <signal.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/log.hpp"
#include "core/process.hpp"
#include "core/text.hpp"

namespace descprod {

namespace {
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
using steady = std::chrono::steady_clock;

double epoch_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string fmt_time(double t) {
  if (t <= 0) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f", t);
  return buf;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

std::string join(const std::set<std::string>& v, const char* sep) {
  return join(std::vector<std::string>(v.begin(), v.end()), sep);
}

// The last line of the output that is a Slurm job id ("123" or "123;cluster"), or "".
std::string parse_job_id(const std::string& output) {
  std::string found;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    auto id = line.substr(0, line.find(';'));
    while (!id.empty() && (id.back() == '\r' || id.back() == ' ')) id.pop_back();
    if (!id.empty() && id.find_first_not_of("0123456789") == std::string::npos) found = id;
  }
  return found;
}

// The first line of a program's output, for log lines.
std::string first_line(const std::string& s) {
  auto l = s.substr(0, s.find('\n'));
  return l.size() > 300 ? l.substr(0, 300) : l;
}

// squeue states in which the allocation is still there.
bool slurm_alive(const std::string& st) {
  return st == "PENDING" || st == "CONFIGURING" || st == "RUNNING" || st == "COMPLETING" ||
         st == "SUSPENDED" || st == "RESIZING" || st == "REQUEUED" || st == "REQUEUE_HOLD" ||
         st == "REQUEUE_FED" || st == "SIGNALING" || st == "STAGE_OUT" || st == "RESV_DEL_HOLD" ||
         st == "STOPPED";
}

// The daemon's environment for sbatch and squeue, with `vars` added, minus the SLURM_* variables
// of an allocation the daemon itself may run in (a workflow job): they would leak into the pilot's
// srun. SLURM_CONF and SLURM_CLUSTERS stay: they choose the cluster, not the allocation.
std::vector<std::string> slurm_environment(const std::vector<std::pair<std::string, std::string>>& vars) {
  std::vector<std::string> out;
  for (auto& e : environment_with(vars)) {
    bool ours = e.rfind("SLURM_CONF=", 0) == 0 || e.rfind("SLURM_CLUSTERS=", 0) == 0;
    if (e.rfind("SLURM_", 0) == 0 && !ours) continue;
    out.push_back(std::move(e));
  }
  return out;
}

bool slurm_pending(const std::string& st) {
  return st == "PENDING" || st == "REQUEUED" || st == "REQUEUE_HOLD" || st == "REQUEUE_FED" ||
         st == "RESV_DEL_HOLD";
}
}  // namespace

net::awaitable<command_result> async_run_command(net::any_io_executor ex, std::vector<std::string> argv,
                                                 std::vector<std::string> env,
                                                 std::chrono::milliseconds timeout, std::string scratch_dir) {
  static unsigned counter = 0;
  command_result res;
  auto out_file =
      scratch_dir + "/descprod-cmd-" + std::to_string(::getpid()) + "-" + std::to_string(++counter) + ".out";
  std::error_code fs_ec;
  std::filesystem::remove(out_file, fs_ec);
  spawn_options so;
  so.argv = std::move(argv);
  so.env = std::move(env);
  so.output_file = out_file;
  std::shared_ptr<child_process> child;
  try {
    child = std::make_shared<child_process>(ex, so);
  } catch (const std::exception& e) {
    res.error = e.what();
  }
  if (!child) co_return res;
  // The deadline: SIGKILL to the program's process group. The handler holds only a weak pointer,
  // and signal_group does nothing once the child is reaped, so a late timer harms nothing.
  net::steady_timer timer(ex);
  timer.expires_after(timeout);
  std::weak_ptr<child_process> weak = child;
  auto timed_out = std::make_shared<bool>(false);
  timer.async_wait([weak, timed_out](boost::system::error_code ec) {
    if (ec) return;
    if (auto c = weak.lock(); c && c->running()) {
      *timed_out = true;
      c->signal_group(SIGKILL);
    }
  });
  auto st = co_await child->async_wait();
  timer.cancel();
  res.exit_code = st.exit_code;
  res.signal = st.signal;
  res.timed_out = *timed_out;
  {
    std::ifstream in(out_file);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.size() > 65536) text.resize(65536);
    res.output = std::move(text);
  }
  std::filesystem::remove(out_file, fs_ec);
  co_return res;
}

pilot_manager::pilot_manager(net::any_io_executor ex, pilots_config cfg, redis_client& redis,
                             std::string prefix, std::function<pilot_demand()> demand)
    : ex_(std::move(ex)),
      cfg_(std::move(cfg)),
      redis_(redis),
      keys_(std::move(prefix)),
      demand_(std::move(demand)),
      timer_(ex_) {}

void pilot_manager::stop() {
  stopping_ = true;
  timer_.cancel();
}

std::optional<std::string> pilot_manager::pilot_of(const std::string& worker_id) {
  static const std::string head = "slurm-";
  if (worker_id.rfind(head, 0) != 0) return std::nullopt;
  auto dash = worker_id.find('-', head.size());
  if (dash == std::string::npos || dash == head.size() || dash + 1 >= worker_id.size()) return std::nullopt;
  auto id = worker_id.substr(head.size(), dash - head.size());
  if (id.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return id;
}

long long pilot_manager::pending_slots() const {
  long long n = 0;
  for (const auto& [id, p] : pilots_) {
    if (p.pin) continue;  // its slot is its job's
    int nodes = std::max(1, p.nodes);
    int missing = std::max(0, nodes - static_cast<int>(p.seen.size()));
    n += static_cast<long long>(p.slots) * missing / nodes;
  }
  if (submitting_) n += cfg_.slots_per_pilot;
  return n;
}

namespace {
// A pinned pilot's QOS or constraint: as the howfig says, unless the config maps it ("" : none).
std::string mapped(const std::map<std::string, std::string>& map, const std::string& name) {
  auto it = map.find(name);
  return it == map.end() ? name : it->second;
}

std::vector<std::string> sbatch_command(const pilots_config& cfg, int nodes, int minutes, int signal_lead_s,
                                        const std::string& account, const std::string& qos,
                                        const std::string& constraint) {
  std::vector<std::string> a;
  a.push_back(cfg.sbatch);
  a.push_back("--parsable");
  a.push_back("--job-name=" + cfg.job_name);
  a.push_back("--nodes=" + std::to_string(nodes));
  a.push_back("--time=" + std::to_string(minutes));
  // B: the batch shell only; the script relays SIGTERM to the workers alone (a step-wide signal
  // would kill the applications too).
  if (signal_lead_s > 0) a.push_back("--signal=B:TERM@" + std::to_string(signal_lead_s));
  a.push_back("--output=" + cfg.log_dir + "/" + cfg.job_name + "-%j.out");
  if (!cfg.partition.empty()) a.push_back("--partition=" + cfg.partition);
  if (!account.empty()) a.push_back("--account=" + account);
  if (!qos.empty()) a.push_back("--qos=" + qos);
  if (!constraint.empty()) a.push_back("--constraint=" + constraint);
  for (const auto& e : cfg.extra_args) a.push_back(e);
  a.push_back(cfg.script);
  return a;
}
}  // namespace

std::vector<std::string> pilot_manager::sbatch_argv() const {
  return sbatch_command(cfg_, cfg_.nodes, cfg_.walltime_minutes, cfg_.signal_lead_s, cfg_.account, cfg_.qos,
                        cfg_.constraint);
}

std::vector<std::string> pilot_manager::pinned_sbatch_argv(const batch_howfig& b) const {
  // No drain signal: the allocation is the job's, sized by its owner; Slurm's end ends it, as
  // it ended DESCprod's pmb batch jobs.
  return sbatch_command(cfg_, 1, b.minutes, 0, b.account.empty() ? cfg_.account : b.account,
                        mapped(cfg_.pinned_qos, b.qos), mapped(cfg_.pinned_constraints, b.constraint));
}

void pilot_manager::set_pinned(std::function<std::vector<job_id>(std::size_t)> queued,
                               std::function<bool(job_id)> is_queued,
                               std::function<void(job_id, int, std::string)> refused) {
  pinned_queued_ = std::move(queued);
  pinned_is_queued_ = std::move(is_queued);
  pinned_refused_ = std::move(refused);
}

std::string pilot_manager::pin_site(job_id job) { return "pin-" + std::to_string(job); }

std::optional<job_id> pilot_manager::pinned_job(std::string_view site) {
  constexpr std::string_view head = "pin-";
  if (site.substr(0, head.size()) != head) return std::nullopt;
  auto digits = site.substr(head.size());
  if (digits.empty() || digits.size() > 18 ||
      digits.find_first_not_of("0123456789") != std::string_view::npos)
    return std::nullopt;
  return std::stoll(std::string(digits));
}

std::size_t pilot_manager::pinned_alive() const {
  std::size_t n = 0;
  for (const auto& [id, p] : pilots_)
    if (p.pin) ++n;
  return n;
}

net::awaitable<void> pilot_manager::run() {
  std::error_code ec;
  std::filesystem::create_directories(cfg_.log_dir, ec);
  if (ec) log::warn("pilot log directory not created dir={} error={}", cfg_.log_dir, ec.message());
  log::info(
      "pilots enabled site={} min={} max={} nodes={} slots_per_pilot={} walltime_minutes={} script={} "
      "worker_config={}",
      cfg_.site, cfg_.min, cfg_.max, cfg_.nodes, cfg_.slots_per_pilot, cfg_.walltime_minutes, cfg_.script,
      cfg_.worker_config);
  bool loaded = false;
  try {
    co_await load();
    loaded = true;
  } catch (const std::exception& e) {
    log::warn("pilots not loaded from redis error={}", e.what());
  }
  if (!loaded && stopping_) co_return;
  while (!stopping_) {
    std::string failure;
    try {
      co_await check();
    } catch (const std::exception& e) {
      failure = e.what();
    }
    if (stopping_) break;
    if (!failure.empty()) log::warn("pilot check failed error={}", failure);
    timer_.expires_after(cfg_.check_interval);
    co_await timer_.async_wait(use_tuple);
  }
}

net::awaitable<void> pilot_manager::load() {
  // After a daemon restart: the pilots it had submitted are still Slurm's; squeue will say which.
  auto cmd = redis_cmd("SMEMBERS", keys_.pilots());
  auto members = co_await redis_.async_exec(std::move(cmd));
  for (const auto& m : members.elements) {
    auto id = m.as_string();
    auto get = redis_cmd("HGETALL", keys_.pilot(id));
    auto h = co_await redis_.async_exec(std::move(get));
    std::map<std::string, std::string> f;
    for (std::size_t i = 0; i + 1 < h.elements.size(); i += 2)
      f[h.elements[i].as_string()] = h.elements[i + 1].as_string();
    if (f.empty() || f["state"] == "ended") {
      auto rem = redis_cmd("SREM", keys_.pilots(), id);
      co_await redis_.async_exec(std::move(rem));
      continue;
    }
    // Another site's (its manager takes it back). One without a site (written before pilots
    // had one, or by a configuration without sites) is the first site's.
    const std::string site = f["site"];
    if (site.empty() ? !adopts_unlabelled_ : site != cfg_.site) continue;
    pilot p;
    p.id = id;
    p.state = f["state"];
    p.slurm_state = f["slurm_state"];
    p.reason = f["reason"];
    auto num = [&](const std::string& k) { return f[k].empty() ? 0.0 : std::atof(f[k].c_str()); };
    p.submitted_time = num("submitted_time");
    p.started_time = num("started_time");
    p.nodes = std::max(1, static_cast<int>(num("nodes")));
    p.walltime_minutes = static_cast<int>(num("walltime_minutes"));
    p.slots = static_cast<int>(num("slots"));
    p.pin = static_cast<job_id>(num("pin"));
    for (auto& w : split(f["workers"], ','))
      if (!w.empty()) p.seen.insert(w);
    pilots_[id] = p;
  }
  if (!pilots_.empty()) log::info("pilots loaded from redis site={} count={}", cfg_.site, pilots_.size());
}

net::awaitable<void> pilot_manager::check() {
  auto now = steady::now();
  // Poll squeue often while a pilot whose workers all left has not yet left squeue: its slot in
  // `max` is needed back soon.
  bool leaving = false;
  for (const auto& [id, p] : pilots_)
    if (p.state == "running" && !p.seen.empty() && p.workers.empty()) leaving = true;
  auto interval =
      leaving ? std::min(cfg_.squeue_interval, std::chrono::milliseconds(2000)) : cfg_.squeue_interval;
  if (!pilots_.empty() && now >= next_squeue_) {
    next_squeue_ = now + interval;
    co_await refresh();
  } else if (next_squeue_ > now + interval) {
    next_squeue_ = now + interval;
  }
  // A site reported down gets no pilot (the reason logged once, and again when it changes).
  std::string down;
  if (why_down_) down = why_down_(cfg_.site);
  if (down != down_) {
    if (!down.empty()) log::warn("pilots not submitted site={} reason={}", cfg_.site, down);
    else log::info("pilots may be submitted site={}", cfg_.site);
    down_ = down;
  }
  if (!down.empty()) co_return;
  while (!stopping_ && alive() < static_cast<std::size_t>(cfg_.max)) {
    auto d = demand_();
    long long deficit = static_cast<long long>(d.ready) - d.free_slots - pending_slots();
    bool below_min = alive() < static_cast<std::size_t>(cfg_.min);
    if (!below_min && deficit <= 0) break;
    if (steady::now() < backoff_until_) break;
    log::info("pilot needed ready={} free_slots={} pending_slots={} alive={} max={}", d.ready, d.free_slots,
              pending_slots(), alive(), cfg_.max);
    if (!co_await submit_one()) break;
  }
  co_await check_pinned();
}

net::awaitable<void> pilot_manager::check_pinned() {
  if (!pinned_queued_ || stopping_) co_return;
  co_await cancel_orphaned_pinned();
  if (cfg_.pinned_max <= 0) co_return;
  const auto room = static_cast<std::size_t>(cfg_.pinned_max);
  if (pinned_alive() >= room) co_return;
  std::set<job_id> served;
  for (const auto& [id, p] : pilots_)
    if (p.pin) served.insert(p.pin);
  // Enough to fill the room even if every pilot alive is for a job still queued.
  std::vector<job_id> queued = pinned_queued_(room + served.size());
  for (job_id job : queued) {
    if (stopping_ || pinned_alive() >= room || steady::now() < pinned_backoff_until_) break;
    if (served.count(job)) continue;
    co_await submit_pinned(job);
  }
}

net::awaitable<void> pilot_manager::cancel_orphaned_pinned() {
  // A pinned pilot still pending whose job has ended (cancelled, deleted, failed) would start
  // only to idle out: cancelled while it waits. Redis has the last word (the queue is not
  // rebuilt yet right after a restart): only a job Redis has as ended, or has not at all.
  std::vector<std::pair<std::string, job_id>> candidates;
  for (const auto& [id, p] : pilots_)
    if (p.pin && p.state == "submitted" && !p.cancelled && !pinned_is_queued_(p.pin))
      candidates.emplace_back(id, p.pin);
  for (const auto& [id, job] : candidates) {
    auto cmd = redis_cmd("HGET", keys_.job(job), "state");
    auto reply = co_await redis_.async_exec(std::move(cmd));
    if (reply.is_error()) continue;
    std::string state;
    if (!reply.is_nil()) state = reply.as_string();
    auto parsed = parse_job_state(state);
    if (!reply.is_nil() && (!parsed || !is_terminal(*parsed))) continue;
    std::vector<std::string> argv;
    argv.push_back(cfg_.scancel);
    argv.push_back(id);
    std::vector<std::pair<std::string, std::string>> no_overrides;
    auto r =
        co_await async_run_command(ex_, std::move(argv), slurm_environment(no_overrides),
                                   cfg_.command_timeout, std::filesystem::temp_directory_path().string());
    auto it = pilots_.find(id);
    if (it != pilots_.end()) it->second.cancelled = true;  // once: squeue tells the rest
    next_squeue_ = steady::now();
    if (state.empty()) state = "gone";
    log::info("pinned pilot cancelled pilot={} job_id={} job_state={} ok={} output={}", id, job, state,
              r.ok(), first_line(r.output));
  }
}

net::awaitable<void> pilot_manager::submit_pinned(job_id job) {
  auto cmd = redis_cmd("HMGET", keys_.job(job), "howfig", "state");
  auto reply = co_await redis_.async_exec(std::move(cmd));
  if (reply.elements.size() != 2 || reply.elements[1].is_nil() || reply.elements[1].as_string() != "ready")
    co_return;  // taken, cancelled or gone since it was queued
  std::string howfig;
  if (!reply.elements[0].is_nil()) howfig = reply.elements[0].as_string();
  std::string why;
  auto b = parse_batch_howfig(howfig, why);
  if (!b || b->subjob || !b->own_allocation()) {
    // The gateway pins only such jobs; a hash edited by hand could say otherwise.
    log::warn("pinned job has no batch howfig job_id={} howfig={} error={}", job, howfig.substr(0, 100), why);
    std::string message = "its howfig does not say how to size its allocation";
    if (!why.empty()) message += ": " + why;
    if (pinned_refused_) pinned_refused_(job, 2, std::move(message));
    co_return;
  }
  auto argv = pinned_sbatch_argv(*b);
  auto vars = pilot_vars(cfg_.pinned_idle_timeout_s, pin_site(job));
  vars.emplace_back("DESCPROD_SLOTS", "1");
  log::info("pinned pilot submitting job_id={} command={}", job, join(argv, " "));
  auto r = co_await async_run_command(ex_, argv, slurm_environment(vars), cfg_.command_timeout,
                                      std::filesystem::temp_directory_path().string());
  auto id = r.ok() ? parse_job_id(r.output) : std::string();
  if (id.empty()) {
    if (r.error.empty() && !r.timed_out && r.signal == 0 && r.exit_code != 0) {
      // Slurm answered and said no (an unknown QOS, a time over the partition's limit, ...): as
      // DESCprod's pmb-submit, the job fails with what sbatch said.
      std::string answer = first_line(r.output);
      log::warn("pinned pilot refused by slurm job_id={} exit_code={} output={}", job, r.exit_code, answer);
      if (answer.empty()) answer = "no message";
      std::string message = "sbatch refused its allocation (exit code " + std::to_string(r.exit_code) + "): ";
      message += answer;
      if (pinned_refused_) pinned_refused_(job, r.exit_code, std::move(message));
      co_return;
    }
    auto delay = backoff_after(++pinned_failures_);
    pinned_backoff_until_ = steady::now() + delay;
    log::warn("pinned pilot submission failed job_id={} error={} output={} retry_in_ms={}", job,
              failure_of(r), first_line(r.output), delay.count());
    co_return;
  }
  pinned_failures_ = 0;
  add_pilot(id, job, 1, b->minutes, 1);
  log::info("pinned pilot submitted pilot={} job_id={} walltime_minutes={} qos={} constraint={}", id, job,
            b->minutes, b->qos, b->constraint);
}

std::vector<std::pair<std::string, std::string>> pilot_manager::pilot_vars(double idle_timeout_s,
                                                                           const std::string& site) const {
  std::vector<std::pair<std::string, std::string>> vars;
  vars.emplace_back("DESCPROD_CONFIG", cfg_.worker_config);
  char idle[32];
  std::snprintf(idle, sizeof idle, "%g", idle_timeout_s);
  vars.emplace_back("DESCPROD_IDLE_TIMEOUT", idle);
  if (!cfg_.worker_binary.empty()) vars.emplace_back("DESCPROD_WORKER", cfg_.worker_binary);
  if (!site.empty()) vars.emplace_back("DESCPROD_SITE", site);
  return vars;
}

std::chrono::milliseconds pilot_manager::backoff_after(int failures) const {
  auto delay = cfg_.backoff_min;
  for (int i = 1; i < failures && delay < cfg_.backoff_max; ++i) delay *= 2;
  return std::min(delay, cfg_.backoff_max);
}

std::string pilot_manager::failure_of(const command_result& r) const {
  if (!r.error.empty()) return r.error;
  if (r.timed_out) return "timed out after " + std::to_string(cfg_.command_timeout.count()) + " ms";
  if (r.signal) return "killed by signal " + std::to_string(r.signal);
  if (r.exit_code) return "exit code " + std::to_string(r.exit_code);
  return "no job id in its output";
}

const pilot_manager::pilot& pilot_manager::add_pilot(const std::string& id, job_id pin, int nodes,
                                                     int minutes, int slots) {
  pilot p;
  p.id = id;
  p.pin = pin;
  p.submitted_time = epoch_now();
  p.nodes = nodes;
  p.walltime_minutes = minutes;
  p.slots = slots;
  p.slurm_state = "PENDING";
  auto& stored = pilots_[id] = p;
  write(stored);
  return stored;
}

net::awaitable<bool> pilot_manager::submit_one() {
  auto argv = sbatch_argv();
  auto vars = pilot_vars(cfg_.idle_timeout_s, cfg_.site);
  log::info("pilot submitting site={} command={}", cfg_.site, join(argv, " "));
  submitting_ = true;
  auto r = co_await async_run_command(ex_, argv, slurm_environment(vars), cfg_.command_timeout,
                                      std::filesystem::temp_directory_path().string());
  submitting_ = false;
  auto id = r.ok() ? parse_job_id(r.output) : std::string();
  if (id.empty()) {
    auto delay = backoff_after(++failures_);
    backoff_until_ = steady::now() + delay;
    log::warn("pilot submission failed error={} output={} failures={} retry_in_ms={}", failure_of(r),
              first_line(r.output), failures_, delay.count());
    co_return false;
  }
  failures_ = 0;
  const auto& p = add_pilot(id, 0, cfg_.nodes, cfg_.walltime_minutes, cfg_.slots_per_pilot);
  log::info("pilot submitted pilot={} nodes={} walltime_minutes={} alive={}", id, p.nodes, p.walltime_minutes,
            alive());
  co_return true;
}

net::awaitable<void> pilot_manager::refresh() {
  auto argv = redis_cmd(cfg_.squeue, "-h", "--me", "--name=" + cfg_.job_name, "-t", "all", "-o", "%i|%T|%r");
  std::vector<std::pair<std::string, std::string>> no_overrides;
  auto r = co_await async_run_command(ex_, std::move(argv), slurm_environment(no_overrides),
                                      cfg_.command_timeout, std::filesystem::temp_directory_path().string());
  if (!r.ok()) {
    log::warn("squeue failed error={} exit_code={} timed_out={} output={}", r.error, r.exit_code, r.timed_out,
              first_line(r.output));
    co_return;
  }
  std::map<std::string, std::pair<std::string, std::string>> seen;  // id → (state, reason)
  std::istringstream in(r.output);
  for (std::string line; std::getline(in, line);) {
    auto f = split(line, '|');
    if (f.size() < 3 || f[0].empty()) continue;
    seen[f[0]] = std::make_pair(f[1], f[2]);
  }
  const double now = epoch_now();
  std::vector<std::string> ids;
  for (const auto& [id, p] : pilots_) ids.push_back(id);
  for (const auto& id : ids) {
    auto it = pilots_.find(id);
    if (it == pilots_.end()) continue;
    auto& p = it->second;
    auto s = seen.find(id);
    if (s == seen.end()) {
      // Just submitted pilots may not be listed yet; older ones have left squeue.
      if (now - p.submitted_time > 30) mark_ended(id, "GONE", "no longer in squeue");
      continue;
    }
    const auto& [state, reason] = s->second;
    if (!slurm_alive(state)) {
      mark_ended(id, state, reason == "None" ? std::string() : reason);
      continue;
    }
    bool changed = p.slurm_state != state || p.reason != reason;
    p.slurm_state = state;
    p.reason = reason == "None" ? std::string() : reason;
    if (!slurm_pending(state) && p.state == "submitted") mark_running(p, "squeue");
    else if (changed) write(p);
  }
}

void pilot_manager::mark_running(pilot& p, const char* why) {
  p.state = "running";
  if (p.started_time <= 0) p.started_time = epoch_now();
  if (slurm_pending(p.slurm_state) || p.slurm_state.empty()) p.slurm_state = "RUNNING";
  write(p);
  log::info("pilot running pilot={} seen_by={} waited_s={:.1f}", p.id, why,
            p.started_time - p.submitted_time);
}

void pilot_manager::mark_ended(const std::string& id, std::string slurm_state, std::string reason) {
  auto it = pilots_.find(id);
  if (it == pilots_.end()) return;
  auto& p = it->second;
  p.state = "ended";
  p.ended_time = epoch_now();
  p.slurm_state = std::move(slurm_state);
  p.reason = std::move(reason);
  p.workers.clear();
  write(p);
  log::info("pilot ended pilot={} slurm_state={} ran_s={:.0f} workers={}", id, p.slurm_state,
            p.started_time > 0 ? p.ended_time - p.started_time : 0.0, join(p.seen, ","));
  pilots_.erase(it);
}

void pilot_manager::on_worker_hello(const std::string& worker_id) {
  auto id = pilot_of(worker_id);
  if (!id) return;
  auto it = pilots_.find(*id);
  if (it == pilots_.end()) return;  // a pilot started by hand, or one this daemon forgot
  auto& p = it->second;
  p.workers.insert(worker_id);
  p.seen.insert(worker_id);
  if (p.state == "submitted") mark_running(p, "worker");
  else write(p);
}

void pilot_manager::on_worker_left(const std::string& worker_id) {
  auto id = pilot_of(worker_id);
  if (!id) return;
  auto it = pilots_.find(*id);
  if (it == pilots_.end()) return;
  it->second.workers.erase(worker_id);
  write(it->second);
  if (it->second.workers.empty()) next_squeue_ = steady::now();  // see soon whether it has ended
}

void pilot_manager::write(const pilot& p) {
  if (!redis_.connected()) return;
  auto key = keys_.pilot(p.id);
  std::vector<std::vector<std::string>> cmds;
  cmds.push_back(redis_cmd(
      "HSET", key, "id", p.id, "site", cfg_.site, "state", p.state, "slurm_state", p.slurm_state, "reason",
      p.reason, "submitted_time", fmt_time(p.submitted_time), "started_time", fmt_time(p.started_time),
      "ended_time", fmt_time(p.ended_time), "nodes", std::to_string(p.nodes), "walltime_minutes",
      std::to_string(p.walltime_minutes), "slots", std::to_string(p.slots), "pin",
      p.pin ? std::to_string(p.pin) : std::string(), "workers", join(p.seen, ","), "connected",
      std::to_string(p.workers.size()), "output", cfg_.log_dir + "/" + cfg_.job_name + "-" + p.id + ".out"));
  if (p.state == "ended") {
    cmds.push_back(redis_cmd("SREM", keys_.pilots(), p.id));
    cmds.push_back(redis_cmd("EXPIRE", key, std::to_string(std::chrono::seconds(ended_ttl).count())));
  } else {
    cmds.push_back(redis_cmd("SADD", keys_.pilots(), p.id));
  }
  net::co_spawn(
      ex_,
      [](redis_client* redis, std::vector<std::vector<std::string>> cmds) -> net::awaitable<void> {
        auto replies = co_await redis->async_pipeline(std::move(cmds));
        for (const auto& r : replies)
          if (r.is_error()) log::warn("pilot write failed error={}", r.str);
      }(&redis_, std::move(cmds)),
      [](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          log::warn("pilot write failed error={}", ex.what());
        }
      });
}

}  // namespace descprod
