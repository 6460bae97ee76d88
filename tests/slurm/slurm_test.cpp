// Pilots under a real Slurm (issue 7, docs/slurm.md). The SlurmPilots fixture starts a one-node
// Slurm on this machine with scripts/slurm/local-slurm (munge, slurmctld, slurmd; needs root) and
// stops it after the test by the PIDs in its pid files, after cancelling every job. A Slurm that
// cannot start FAILS the test with the script's reason; it is never skipped. Each test also runs a
// whole DESCprod service (tests/support/service) without local workers, so jobs run only where
// the test says.
//
// The cases: the daemon's elastic pilots run 50 jobs on a pilot it submitted, which then leaves
// when idle; a pilot whose walltime ends mid-run drains and its unfinished jobs end done on a
// local worker, while jobs whose time limit outruns the pilot never go to it; a pilot submitted by
// hand leaves when idle. Two more cases need no Slurm: a hanging sbatch is killed and backed off
// while the daemon keeps dispatching, and the worker's own walltime check and idle exit (against a
// fake daemon). The squeue captures and the drain's log lines are printed for the closing note.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "core/redis.hpp"
#include "tests/support/service.hpp"
#include "workers/worker.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

const std::string source_dir = DESCPROD_SOURCE_DIR;
const std::string pilot_script = source_dir + "/scripts/slurm/descprod-pilot.sbatch";

double epoch_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Runs a program to its end (at most `timeout`) and returns its exit status and merged output.
struct run_result {
  int status = -1;
  std::string output;
};
run_result run(const std::vector<std::string>& argv,
               const std::vector<std::pair<std::string, std::string>>& env = {},
               std::chrono::milliseconds timeout = 60s) {
  static std::atomic<int> n{0};
  temp_dir scratch("descprod-run-");
  auto out = scratch.file("out-" + std::to_string(++n));
  process p(argv, env, out);
  auto st = p.wait_exit(timeout);
  if (!st) p.stop(1s);
  run_result r;
  r.status = st.value_or(-1000);
  r.output = p.output();
  return r;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) out.push_back(l);
  return out;
}

// The lines of `text` that contain any of `needles`.
std::string grep(const std::string& text, const std::vector<std::string>& needles) {
  std::string out;
  for (const auto& l : lines_of(text))
    for (const auto& n : needles)
      if (l.find(n) != std::string::npos) {
        out += l + "\n";
        break;
      }
  return out;
}

std::size_t count(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

std::string squeue_ids() { return run({"squeue", "-h", "-o", "%i"}, {}, 10s).output; }

// Snapshots of `squeue` every 300 ms while alive, kept when they change (the elapsed-time column
// is left out so that only real changes count) or every 2 s, each stamped with seconds since the
// start and followed by `note()` (e.g. how many jobs are done).
class squeue_recorder {
 public:
  explicit squeue_recorder(std::function<std::string()> note = nullptr)
      : note_(std::move(note)), start_(steady::now()), thread_([this] { loop(); }) {}
  ~squeue_recorder() { finish(); }
  void finish() {
    done_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::string text() {
    std::lock_guard<std::mutex> lock(mu_);
    return text_;
  }

 private:
  void loop() {
    std::string last;
    auto last_time = steady::now();
    while (true) {
      bool last_round = done_;  // one more snapshot after finish(): the final state
      auto r = run({"squeue", "-o", "%.6i %.9P %.15j %.6u %.9T %.10l %.5D %R"}, {}, 10s);
      if (r.output != last || steady::now() - last_time >= 2s || last_round) {
        last = r.output;
        last_time = steady::now();
        char stamp[64];
        std::snprintf(stamp, sizeof stamp, "[t=%5.1fs] $ squeue\n",
                      std::chrono::duration<double>(steady::now() - start_).count());
        std::string note = note_ ? note_() : std::string();
        std::lock_guard<std::mutex> lock(mu_);
        text_ += stamp + r.output + note;
      }
      if (last_round) break;
      std::this_thread::sleep_for(300ms);
    }
  }
  std::function<std::string()> note_;
  steady::time_point start_;
  std::atomic<bool> done_{false};
  std::mutex mu_;
  std::string text_;
  std::thread thread_;
};

// A one-node Slurm for the duration of a test.
class SlurmPilots : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = run({source_dir + "/scripts/slurm/local-slurm", "start", state_.path()}, {}, 60s);
    started_ = r.status == 0;
    ASSERT_TRUE(started_) << "the local Slurm did not start (status " << r.status << "):\n" << r.output;
  }
  void TearDown() override {
    auto r = run({source_dir + "/scripts/slurm/local-slurm", "stop", state_.path()}, {}, 90s);
    EXPECT_EQ(r.status, 0) << "local-slurm stop:\n" << r.output;
    if (HasFailure() && started_) {
      for (const char* log : {"log/slurmctld.log", "log/slurmd.log"}) {
        auto text = fs::exists(state_.file(log)) ? read_file(state_.file(log)) : std::string();
        std::cerr << "---- " << log << " (tail)\n"
                  << (text.size() > 3000 ? text.substr(text.size() - 3000) : text);
      }
    }
  }
  temp_dir state_{"descprod-slurm-"};
  bool started_ = false;
};

// Submits `n` jobs of `jobtype` in one bulk request; returns their IDs.
// With `site`, each job asks for that site.
std::vector<long long> submit_many(service& c, const std::string& jobtype, int n,
                                   const std::string& config = "x", const std::string& site = "") {
  const std::string sites = site.empty() ? std::string() : R"(,"sites":[")" + site + "\"]";
  std::string body = R"({"jobs":[)";
  for (int i = 0; i < n; ++i)
    body += std::string(i ? "," : "") + R"({"jobtype":")" + jobtype + R"(","config":")" + config + "\"" +
            sites + "}";
  body += "]}";
  auto r = c.call("POST", "/api/jobs/bulk", body);
  EXPECT_EQ(r.status, 201) << r.body;
  std::vector<long long> ids;
  if (r.status != 201) return ids;
  auto reply = r.json();  // kept alive while iterating
  for (const auto& v : reply.as_object().at("ids").as_array()) ids.push_back(v.as_int64());
  return ids;
}

std::string hget(redis_sync& r, const std::string& key, const std::string& field) {
  return r.exec(redis_cmd("HGET", key, field)).as_string();
}

std::string job_field(redis_sync& r, long long id, const std::string& field) {
  return hget(r, "descprod:job:" + std::to_string(id), field);
}

// The `progress` texts of a job's events (its history), oldest first.
std::vector<std::string> job_history(redis_sync& r, long long id) {
  auto reply = r.exec(redis_cmd("XRANGE", "descprod:job:" + std::to_string(id) + ":events", "-", "+"));
  std::vector<std::string> out;
  for (const auto& e : reply.elements) {
    if (e.elements.size() < 2) continue;
    const auto& f = e.elements[1].elements;
    std::string type, state, attempt, progress;
    for (std::size_t i = 0; i + 1 < f.size(); i += 2) {
      auto k = f[i].as_string();
      if (k == "type") type = f[i + 1].as_string();
      if (k == "state") state = f[i + 1].as_string();
      if (k == "attempt") attempt = f[i + 1].as_string();
      if (k == "progress") progress = f[i + 1].as_string();
    }
    out.push_back(type + ": " + state + " (attempt " + attempt + ") " + progress);
  }
  return out;
}

bool all_in_state(redis_sync& r, const std::vector<long long>& ids, const std::string& state) {
  for (auto id : ids)
    if (job_field(r, id, "state") != state) return false;
  return true;
}

std::string states_summary(redis_sync& r, const std::vector<long long>& ids) {
  std::map<std::string, int> n;
  for (auto id : ids) ++n[job_field(r, id, "state")];
  std::string out;
  for (const auto& [s, k] : n) out += s + "=" + std::to_string(k) + " ";
  return out;
}

// The pilots: section of the tests' config; `overrides` replace or add keys.
std::string pilot_yaml(const std::string& dir, const std::map<std::string, std::string>& overrides = {}) {
  std::map<std::string, std::string> keys{{"enabled", "true"},
                                          {"min", "0"},
                                          {"max", "1"},
                                          {"nodes", "1"},
                                          {"slots_per_pilot", "2"},
                                          {"walltime_minutes", "10"},
                                          {"signal_lead_s", "60"},
                                          {"idle_timeout_s", "5"},
                                          {"script", pilot_script},
                                          {"log_dir", dir + "/pilots"},
                                          {"check_interval_ms", "300"},
                                          {"squeue_interval_ms", "1000"},
                                          {"command_timeout_ms", "20000"}};
  for (const auto& [k, v] : overrides) keys[k] = v;
  std::string out = "pilots:\n";
  for (const auto& [k, v] : keys) out += "  " + k + ": " + v + "\n";
  return out;
}

// The pilots: section as a list, one entry per site (each pilot_yaml's keys with its overrides).
std::string pilot_sites_yaml(const std::string& dir,
                             const std::vector<std::map<std::string, std::string>>& sites) {
  std::string out = "pilots:\n";
  for (const auto& overrides : sites) {
    auto one = pilot_yaml(dir, overrides);  // "pilots:\n  k: v\n..."
    bool first = true;
    std::istringstream in(one.substr(one.find('\n') + 1));
    for (std::string line; std::getline(in, line);) {
      out += (first ? "  - " : "    ") + line.substr(2) + "\n";
      first = false;
    }
  }
  return out;
}

// A service without local workers whose app `nap` sleeps 0.1 s.
service_options nap_service() {
  service_options o;
  o.workers = 0;
  o.apps =
      "  - name: nap\n"
      "    command: [\"/bin/sh\", \"-c\", \"sleep 0.1\"]\n"
      "    args: []\n";
  return o;
}

// ---------------------------------------------------------------------------------------------

TEST_F(SlurmPilots, DaemonSubmitsPilotWhoseWorkerRuns50JobsThenTheIdlePilotLeavesSqueue) {
  service_options o;
  o.workers = 0;
  // Each run leaves a marker line (so a second run would show) and takes 0.2 s: about 5 s of
  // work for the pilot's two slots.
  o.apps =
      "  - name: nap\n"
      "    command: [\"/bin/sh\", \"-c\", \"echo \\\"$DESCPROD_ATTEMPT\\\" >> \\\"$0/m$DESCPROD_JOB_ID\\\"; sleep 0.2\", \"{markers}\"]\n"
      "    args: []\n";
  temp_dir pilot_dir("descprod-pilots-");
  o.worker_extra = pilot_yaml(pilot_dir.path());
  service c(o);
  redis_sync r(c.redis.endpoint());
  std::vector<long long> ids;
  std::mutex ids_mu;
  squeue_recorder squeue([&] {
    std::lock_guard<std::mutex> lock(ids_mu);
    redis_sync rr(c.redis.endpoint());
    return "         (DESCprod: " + states_summary(rr, ids) + ")\n";
  });

  {
    auto submitted = submit_many(c, "nap", 50);
    std::lock_guard<std::mutex> lock(ids_mu);
    ids = submitted;
  }
  ASSERT_EQ(ids.size(), 50u);

  // The daemon sees 50 ready jobs and no slots: one pilot (max 1), visible in Redis.
  std::string pilot;
  ASSERT_TRUE(wait_until(
      [&] {
        auto m = r.exec(redis_cmd("SMEMBERS", "descprod:pilots"));
        if (m.elements.size() != 1) return false;
        pilot = m.elements[0].as_string();
        return true;
      },
      20s))
      << "no pilot in descprod:pilots\n"
      << c.daemon->output();
  auto pkey = "descprod:pilot:" + pilot;
  std::cout << "pilot submitted: " << pilot << "  state=" << hget(r, pkey, "state") << "\n";

  // Its worker connects and runs all 50.
  ASSERT_TRUE(wait_until([&] { return all_in_state(r, ids, "done"); }, 90s)) << states_summary(r, ids) << "\n"
                                                                             << c.daemon->output();
  const std::string worker_id = "slurm-" + pilot + "-localhost";
  for (auto id : ids) EXPECT_EQ(job_field(r, id, "worker"), worker_id) << "job " << id;
  for (auto id : ids) EXPECT_EQ(c.marker(id), "1\n") << "job " << id << " ran other than once";
  EXPECT_EQ(hget(r, pkey, "state"), "running");
  EXPECT_EQ(hget(r, pkey, "workers"), worker_id);
  EXPECT_EQ(hget(r, "descprod:worker:" + worker_id, "slots"), "2");
  EXPECT_GT(std::stod(hget(r, "descprod:worker:" + worker_id, "walltime_end")), epoch_now() + 60);

  // Idle for idle_timeout_s (5 s): the worker drains and exits 0, the allocation ends and leaves
  // squeue, and the daemon marks the pilot ended and takes it out of descprod:pilots.
  auto idle_from = steady::now();
  ASSERT_TRUE(wait_until([&] { return squeue_ids().find(pilot) == std::string::npos; }, 40s))
      << "the idle pilot is still in squeue:\n"
      << run({"squeue"}).output;
  auto idle_s = std::chrono::duration<double>(steady::now() - idle_from).count();
  ASSERT_TRUE(wait_until([&] { return hget(r, pkey, "state") == "ended"; }, 15s)) << c.daemon->output();
  EXPECT_EQ(r.exec(redis_cmd("SCARD", "descprod:pilots")).as_integer(), 0);
  squeue.finish();

  auto out = read_file(pilot_dir.file("pilots/descprod-pilot-" + pilot + ".out"));
  EXPECT_NE(out.find("idle timeout: draining"), std::string::npos) << out;
  EXPECT_NE(out.find("workers ended rc=0"), std::string::npos) << out;
  EXPECT_EQ(count(c.daemon->output(), "pilot submitted"), 1u) << "more pilots than max";

  std::cout << "\n==== squeue during the elastic test (pilot " << pilot << ")\n" << squeue.text();
  std::cout << "\n==== redis-cli HGETALL " << pkey << "\n";
  auto h = r.exec(redis_cmd("HGETALL", pkey));
  for (std::size_t i = 0; i + 1 < h.elements.size(); i += 2)
    std::cout << "  " << h.elements[i].as_string() << " = " << h.elements[i + 1].as_string() << "\n";
  std::cout << "\n==== daemon log (pilots)\n"
            << grep(c.daemon->output(), {"pilot", "worker connected worker=slurm"});
  std::cout << "\n==== pilot output (idle exit after " << idle_s << " s from the last job)\n"
            << grep(out, {"descprod-pilot:", "idle timeout", "drain", "worker stopped"});
}

// Two sites on this machine (issue #19 item 4): "nersc" is the local Slurm, served by elastic
// pilots (pilots.site: nersc), and "local" is a plain worker (--site local). Jobs for local run on
// the plain worker and start no pilot; jobs for nersc start a pilot whose worker carries the site
// and runs exactly them.
TEST_F(SlurmPilots, TwoSitesPilotsOnlyForTheirSiteAndJobsPlacedAtTheirs) {
  service_options o = nap_service();
  temp_dir pilot_dir("descprod-pilots-");
  o.worker_extra = pilot_yaml(pilot_dir.path(), {{"site", "nersc"}});
  o.gateway_extra = "  sites: [nersc, local]\n";
  service c(o);
  redis_sync r(c.redis.endpoint());
  int plain = c.add_worker(0, {"--site", "local"});
  auto submit_at = [&](const std::string& site, int n) { return submit_many(c, "nap", n, "x", site); };
  auto local = submit_at("local", 10);
  ASSERT_TRUE(wait_until([&] { return all_in_state(r, local, "done"); }, 60s)) << states_summary(r, local);
  for (auto id : local) EXPECT_EQ(job_field(r, id, "worker"), "w" + std::to_string(plain)) << "job " << id;
  // Three demand checks (300 ms each) later, still no pilot: the jobs were not nersc's.
  std::this_thread::sleep_for(1500ms);
  EXPECT_EQ(r.exec(redis_cmd("SCARD", "descprod:pilots")).as_integer(), 0) << c.daemon->output();
  EXPECT_EQ(count(c.daemon->output(), "pilot submitted"), 0u);

  auto nersc = submit_at("nersc", 10);
  std::string pilot;
  ASSERT_TRUE(wait_until(
      [&] {
        auto m = r.exec(redis_cmd("SMEMBERS", "descprod:pilots"));
        if (m.elements.size() != 1) return false;
        pilot = m.elements[0].as_string();
        return true;
      },
      20s))
      << c.daemon->output();
  EXPECT_NE(c.daemon->output().find("pilot submitting site=nersc"), std::string::npos) << c.daemon->output();
  ASSERT_TRUE(wait_until([&] { return all_in_state(r, nersc, "done"); }, 90s))
      << states_summary(r, nersc) << "\n"
      << c.daemon->output();
  const std::string worker_id = "slurm-" + pilot + "-localhost";
  for (auto id : nersc) EXPECT_EQ(job_field(r, id, "worker"), worker_id) << "job " << id;
  EXPECT_EQ(hget(r, "descprod:worker:" + worker_id, "site"), "nersc");
  EXPECT_EQ(count(c.daemon->output(), "pilot submitted"), 1u);
}

TEST_F(SlurmPilots, PilotWhoseWalltimeEndsMidRunDrainsAndItsJobsEndDoneElsewhere) {
  service_options o;
  o.workers = 0;
  o.apps =
      "  - name: nap\n"
      "    command: [\"/bin/sh\", \"-c\", \"echo \\\"$DESCPROD_ATTEMPT\\\" >> \\\"$0/m$DESCPROD_JOB_ID\\\"; sleep 3\", \"{markers}\"]\n"
      "    args: []\n"
      "    time_limit_s: 20\n"
      "  - name: long\n"
      "    command: [\"/bin/sh\", \"-c\", \"echo \\\"$DESCPROD_ATTEMPT\\\" >> \\\"$0/m$DESCPROD_JOB_ID\\\"\", \"{markers}\"]\n"
      "    args: []\n"
      "    time_limit_s: 600\n";
  // No drain grace: what runs at SIGTERM is handed back at once (3-second jobs would otherwise
  // finish or not depending on when Slurm's signal comes).
  o.worker_extra = "  drain_grace_s: 0\n  kill_grace_s: 1\n";
  service c(o);
  redis_sync r(c.redis.endpoint());
  temp_dir pilot_dir("descprod-pilot-");

  // Jobs that can never fit a one-minute pilot (time limit 600 s) at the queue's front, then
  // 3-second jobs that fit until the last 20 s.
  auto long_ids = submit_many(c, "long", 4);
  auto nap_ids = submit_many(c, "nap", 30);
  ASSERT_EQ(long_ids.size() + nap_ids.size(), 34u);

  // A pilot submitted by hand as a user would at NERSC: one minute, SIGTERM 50 s before the end
  // to the batch script, which relays it to the worker (Slurm's check runs about every 30 s, so it
  // comes some 10-40 s in).
  auto sb = run({"sbatch", "--parsable", "--time=1", "--signal=B:TERM@50",
                 "--output=" + pilot_dir.file("pilot-%j.out"), pilot_script},
                {{"DESCPROD_CONFIG", c.config_file},
                 {"DESCPROD_WORKER", c.bin("descprod-worker")},
                 {"PATH", source_dir + "/apps:" + std::string(DESCPROD_BIN_DIR) + ":" + std::getenv("PATH")}},
                30s);
  ASSERT_EQ(sb.status, 0) << sb.output;
  auto pilot = lines_of(sb.output).back();
  auto out_file = pilot_dir.file("pilot-" + pilot + ".out");
  const std::string worker_id = "slurm-" + pilot + "-localhost";
  auto submitted = steady::now();

  ASSERT_TRUE(wait_until([&] { return !hget(r, "descprod:worker:" + worker_id, "id").empty(); }, 30s))
      << "the pilot's worker did not connect\n"
      << (fs::exists(out_file) ? read_file(out_file) : "") << run({"squeue"}).output;

  // Slurm's SIGTERM reaches the worker (an srun task): it drains, hands back what runs, exits.
  ASSERT_TRUE(wait_until(
      [&] { return fs::exists(out_file) && read_file(out_file).find("drain complete") != std::string::npos; },
      80s))
      << (fs::exists(out_file) ? read_file(out_file) : "(no pilot output)") << "\n"
      << states_summary(r, nap_ids);
  auto drained_s = std::chrono::duration<double>(steady::now() - submitted).count();
  ASSERT_TRUE(wait_until([&] { return squeue_ids().find(pilot) == std::string::npos; }, 60s))
      << run({"squeue"}).output;
  auto out = read_file(out_file);
  EXPECT_NE(out.find("SIGTERM: relaying to the workers"), std::string::npos) << out;
  EXPECT_NE(out.find("signal received signal=15"), std::string::npos) << out;
  EXPECT_NE(out.find("job handed back"), std::string::npos) << out;
  EXPECT_NE(out.find("workers ended rc=0"), std::string::npos) << out;

  // What the pilot ran, and what it left: some naps done there, the rest ready again; no long job
  // ever went to it, and none was offered to it more than once.
  int done_on_pilot = 0;
  for (auto id : nap_ids)
    if (job_field(r, id, "state") == "done" && job_field(r, id, "worker") == worker_id) ++done_on_pilot;
  EXPECT_GT(done_on_pilot, 0);
  EXPECT_LT(done_on_pilot, static_cast<int>(nap_ids.size()));
  for (auto id : long_ids) {
    EXPECT_EQ(job_field(r, id, "state"), "ready") << "job " << id;
    EXPECT_EQ(c.marker(id), "") << "long job " << id << " ran on the pilot";
    int walltime_requeues = 0;
    for (const auto& h : job_history(r, id))
      if (h.find("walltime") != std::string::npos) ++walltime_requeues;
    EXPECT_LE(walltime_requeues, 1) << "job " << id << " ping-ponged";
  }

  // Elsewhere: a local worker takes the handed-back jobs, the rest and the long ones.
  c.start_worker(0);
  std::vector<long long> all = nap_ids;
  all.insert(all.end(), long_ids.begin(), long_ids.end());
  ASSERT_TRUE(wait_until([&] { return all_in_state(r, all, "done"); }, 90s)) << states_summary(r, all) << "\n"
                                                                             << c.daemon->output();
  std::set<long long> handed_back;
  for (auto id : nap_ids)
    for (const auto& h : job_history(r, id))
      if (h.rfind("requeue:", 0) == 0 && h.find("draining") != std::string::npos) handed_back.insert(id);
  EXPECT_FALSE(handed_back.empty());
  for (auto id : handed_back) EXPECT_EQ(job_field(r, id, "worker"), "w0") << "job " << id;
  for (auto id : long_ids) EXPECT_EQ(job_field(r, id, "worker"), "w0") << "job " << id;

  std::cout << "\n==== walltime drain of pilot " << pilot << " (drain complete " << drained_s
            << " s after sbatch; ran " << done_on_pilot << " of " << nap_ids.size() << " naps; handed back "
            << handed_back.size() << ")\n"
            << grep(out, {"descprod-pilot:", "worker limits", "signal received", "draining", "drain grace",
                          "handed back", "drain complete", "worker stopped", "CANCELLED"});
  std::vector<std::string> needles{"walltime", "worker draining", "handback"};
  if (!handed_back.empty())
    needles.push_back("job requeued job_id=" + std::to_string(*handed_back.begin()) + " ");
  std::cout << "\n==== daemon log (walltime rule and hand-backs)\n" << grep(c.daemon->output(), needles);
  if (!handed_back.empty()) {
    std::cout << "\n==== history of handed-back job " << *handed_back.begin() << "\n";
    for (const auto& h : job_history(r, *handed_back.begin())) std::cout << "  " << h << "\n";
  }
  std::cout << "\n==== history of long job " << long_ids[0] << "\n";
  for (const auto& h : job_history(r, long_ids[0])) std::cout << "  " << h << "\n";
}

TEST_F(SlurmPilots, PilotSubmittedByHandLeavesAfterItsIdleTimeout) {
  service_options o;
  o.workers = 0;
  service c(o);
  redis_sync r(c.redis.endpoint());
  temp_dir pilot_dir("descprod-pilot-");
  auto sb =
      run({"sbatch", "--parsable", "--time=5", "--output=" + pilot_dir.file("pilot-%j.out"), pilot_script},
          {{"DESCPROD_CONFIG", c.config_file},
           {"DESCPROD_WORKER", c.bin("descprod-worker")},
           {"DESCPROD_IDLE_TIMEOUT", "3"}},
          30s);
  ASSERT_EQ(sb.status, 0) << sb.output;
  auto pilot = lines_of(sb.output).back();
  const std::string worker_id = "slurm-" + pilot + "-localhost";
  auto out_file = pilot_dir.file("pilot-" + pilot + ".out");
  ASSERT_TRUE(wait_until([&] { return !hget(r, "descprod:worker:" + worker_id, "id").empty(); }, 30s))
      << (fs::exists(out_file) ? read_file(out_file) : "") << run({"squeue"}).output;
  auto connected = steady::now();
  ASSERT_TRUE(wait_until([&] { return squeue_ids().find(pilot) == std::string::npos; }, 30s))
      << run({"squeue"}).output;
  auto gone_s = std::chrono::duration<double>(steady::now() - connected).count();
  EXPECT_GE(gone_s, 2.0);
  auto out = read_file(out_file);
  EXPECT_NE(out.find("idle timeout: draining"), std::string::npos) << out;
  EXPECT_NE(out.find("exit_code=0"), std::string::npos) << out;
  EXPECT_NE(out.find("workers ended rc=0"), std::string::npos) << out;
  std::cout << "idle pilot " << pilot << " left squeue " << gone_s << " s after its worker connected\n"
            << grep(out, {"descprod-pilot:", "idle timeout", "drain complete", "worker stopped"});
}

// Pilots for two sites in one daemon (pilots: as a list): each site's jobs start pilots of that
// site only (their own job name, their workers' --site), and run on them. Both "sites" are
// partitions of this one Slurm; its one node runs one pilot at a time (--exclusive), so the
// second site's pilot starts when the first's idles out.
TEST_F(SlurmPilots, OneDaemonRunsThePilotsOfTwoSites) {
  service_options o = nap_service();
  temp_dir pilot_dir("descprod-pilots-");
  o.worker_extra = pilot_sites_yaml(pilot_dir.path(), {{{"site", "nersc"}, {"job_name", "pilot-nersc"}},
                                                       {{"site", "slac"}, {"job_name", "pilot-slac"}}});
  o.gateway_extra = "  sites: [nersc, slac]\n";
  service c(o);
  redis_sync r(c.redis.endpoint());
  auto submit_at = [&](const std::string& site, int n) { return submit_many(c, "nap", n, "x", site); };
  auto nersc = submit_at("nersc", 5);
  auto slac = submit_at("slac", 5);
  ASSERT_TRUE(
      wait_until([&] { return all_in_state(r, nersc, "done") && all_in_state(r, slac, "done"); }, 120s))
      << states_summary(r, nersc) << " / " << states_summary(r, slac) << "\n"
      << c.daemon->output();
  auto log = c.daemon->output();
  EXPECT_EQ(count(log, "pilot submitting site=nersc"), 1u) << log;
  EXPECT_EQ(count(log, "pilot submitting site=slac"), 1u) << log;
  EXPECT_NE(log.find("--job-name=pilot-nersc"), std::string::npos) << log;
  EXPECT_NE(log.find("--job-name=pilot-slac"), std::string::npos) << log;
  // Each site's jobs ran on one pilot worker, whose pilot (its hash) is that site's.
  for (const auto& [site, ids] :
       std::map<std::string, std::vector<long long>>{{"nersc", nersc}, {"slac", slac}}) {
    std::set<std::string> workers;
    for (auto id : ids) workers.insert(job_field(r, id, "worker"));
    ASSERT_EQ(workers.size(), 1u) << site;
    std::smatch m;
    const std::string w = *workers.begin();
    ASSERT_TRUE(std::regex_match(w, m, std::regex("slurm-([0-9]+)-.*"))) << w;
    EXPECT_EQ(hget(r, "descprod:pilot:" + std::string(m[1]), "site"), site) << w;
  }
}

// DESCprod's pmb/pmbs howfigs (issue #16 item 8): a pmb job runs alone in a Slurm allocation
// sized by its howfig (its pilot's worker takes it and nothing else, its app gets the howfig after
// the pmb constituent); a pmbs job runs descprod-pmbs on an ordinary worker, which makes a pmb
// child that does the same; a constraint Slurm does not know fails the job with Slurm's answer.
// This Slurm has neither NERSC's QOSes nor its `cpu` feature: the config maps them to none.
TEST_F(SlurmPilots, PmbJobRunsAloneInAnAllocationSizedForItAndPmbsMakesAChildThatDoes) {
  service_options o;
  o.workers = 0;
  o.apps =
      "  - name: nap\n"
      "    command: [\"/bin/sh\", \"-c\", \"printf '%s\\\\n' \\\"$2\\\" >> \\\"$0/m$DESCPROD_JOB_ID\\\"; sleep $1\", \"{markers}\"]\n"
      "    args: [\"{config}\", \"{howfig}\"]\n"
      "    pattern: \"[0-9.]+\"\n";
  temp_dir pilot_dir("descprod-pilots-");
  o.worker_extra = pilot_yaml(pilot_dir.path(), {{"max", "0"},
                                                 {"pinned_idle_timeout_s", "2"},
                                                 {"pinned_qos", "{debug: '', regular: ''}"},
                                                 {"pinned_constraints", "{cpu: ''}"}});
  service c(o);
  redis_sync r(c.redis.endpoint());
  int plain = c.add_worker(2);
  const std::string plain_id = "w" + std::to_string(plain);
  auto submit = [&](const std::string& howfig, const std::string& seconds = "0.5") {
    auto a = c.call("POST", "/api/jobs",
                    R"({"jobtype":"nap","config":")" + seconds + R"(","howfig":")" + howfig + "\"}");
    EXPECT_EQ(a.status, 201) << howfig << ": " << a.body;
    return a.status == 201 ? a.json().as_object().at("id").as_int64() : 0;
  };
  // Malformed batch howfigs are refused before anything is created, with the reason.
  for (const auto& [h, why] : std::vector<std::pair<std::string, std::string>>{
           {"pmb-0-debug", "TMIN must be minutes"}, {"pmbs-30-premium", "QOS must be"}}) {
    auto a = c.call("POST", "/api/jobs", R"({"jobtype":"nap","config":"0.5","howfig":")" + h + "\"}");
    EXPECT_EQ(a.status, 400) << a.body;
    EXPECT_NE(a.body.find(why), std::string::npos) << a.body;
  }

  long long pinned = submit("pmb-2-debug-cpu,alpha:1");
  long long plain_job = submit("beta");
  ASSERT_GT(pinned, 0);
  ASSERT_TRUE(wait_until(
      [&] {
        return all_in_state(r, {pinned, plain_job}, "done");
      },
      90s))
      << states_summary(r, {pinned, plain_job}) << "\n"
      << c.daemon->output();
  auto log = c.daemon->output();
  std::smatch m;
  ASSERT_TRUE(std::regex_search(log, m,
                                std::regex("pinned pilot submitted pilot=([0-9]+) job_id=" +
                                           std::to_string(pinned) + " walltime_minutes=2")))
      << log;
  const std::string pilot = m[1];
  EXPECT_NE(log.find("--nodes=1 --time=2 --output="), std::string::npos) << log;
  EXPECT_EQ(log.find("--qos="), std::string::npos) << "the mapped QOS was passed\n" << log;
  EXPECT_EQ(job_field(r, pinned, "worker"), "slurm-" + pilot + "-localhost");
  EXPECT_EQ(c.marker(pinned), "alpha:1\n");  // the howfig after the pmb constituent, once
  EXPECT_EQ(job_field(r, plain_job, "worker"), plain_id) << "an ordinary job went to the pinned pilot";
  EXPECT_EQ(hget(r, "descprod:pilot:" + pilot, "pin"), std::to_string(pinned));
  EXPECT_EQ(hget(r, "descprod:worker:slurm-" + pilot + "-localhost", "site"),
            "pin-" + std::to_string(pinned));
  auto shown = c.call("GET", "/api/jobs/" + std::to_string(pinned));
  EXPECT_EQ(shown.body.find("@pin"), std::string::npos) << shown.body;

  // pmbs: the parent runs descprod-pmbs on the plain worker and ends at once; its child (same
  // type and config, howfig pmb-…,rest) runs in an allocation of its own.
  long long parent = submit("pmbs-3-auto,gamma");
  ASSERT_TRUE(wait_until([&] { return job_field(r, parent, "state") == "done"; }, 30s))
      << job_field(r, parent, "state") << " " << job_field(r, parent, "progress") << "\n"
      << c.daemon->output();
  EXPECT_EQ(job_field(r, parent, "worker"), plain_id);
  std::smatch cm;
  auto progress = job_field(r, parent, "progress");
  ASSERT_TRUE(std::regex_match(progress, cm, std::regex("Done\\. Submitted job ([0-9]+) to batch queue\\.")))
      << progress;
  long long child = std::stoll(cm[1]);
  EXPECT_EQ(job_field(r, child, "parent"), std::to_string(parent));
  EXPECT_EQ(job_field(r, child, "howfig"), "pmb-3-auto,gamma");
  EXPECT_TRUE(fs::exists(job_field(r, parent, "rundir") + "/subjob-config.json"));
  ASSERT_TRUE(wait_until([&] { return job_field(r, child, "state") == "done"; }, 90s))
      << job_field(r, child, "state") << "\n"
      << c.daemon->output();
  EXPECT_EQ(c.marker(child), "gamma\n");
  EXPECT_EQ(job_field(r, child, "worker").rfind("slurm-", 0), 0u) << job_field(r, child, "worker");
  EXPECT_EQ(c.marker(parent), "") << "the parent ran the app itself";

  // A constraint this Slurm does not have: sbatch refuses, and the job fails with its answer.
  long long refused = submit("pmb-5-regular-gpu");
  ASSERT_TRUE(wait_until([&] { return job_field(r, refused, "state") == "failed"; }, 30s))
      << job_field(r, refused, "state") << "\n"
      << c.daemon->output();
  auto why = job_field(r, refused, "progress");
  EXPECT_EQ(why.rfind("Failed. sbatch refused its allocation (exit code 1): ", 0), 0u) << why;
  std::cout << "refused: " << why << "\n";

  // A pinned pilot still pending when its job is cancelled is cancelled too. The one node is
  // busy with another pinned job (pilots are --exclusive), so the second pilot waits.
  long long blocker = submit("pmb-2-debug,b", "60");
  ASSERT_TRUE(wait_until([&] { return job_field(r, blocker, "state") == "running"; }, 60s))
      << job_field(r, blocker, "state") << "\n"
      << c.daemon->output();
  long long victim = submit("pmb-2-debug,v");
  std::smatch vm;
  const std::regex victim_pilot("pinned pilot submitted pilot=([0-9]+) job_id=" + std::to_string(victim) +
                                " ");
  ASSERT_TRUE(wait_until(
      [&] {
        auto text = c.daemon->output();
        return std::regex_search(text, vm, victim_pilot);
      },
      30s))
      << c.daemon->output();
  const std::string waiting_pilot = vm[1];
  EXPECT_EQ(c.call("POST", "/api/jobs/" + std::to_string(victim) + "/cancel").status, 200);
  ASSERT_TRUE(wait_until([&] { return squeue_ids().find(waiting_pilot) == std::string::npos; }, 30s))
      << run({"squeue"}).output << "\n"
      << c.daemon->output();
  EXPECT_NE(c.daemon->output().find("pinned pilot cancelled pilot=" + waiting_pilot +
                                    " job_id=" + std::to_string(victim) + " job_state=cancelled ok=true"),
            std::string::npos)
      << c.daemon->output();
  EXPECT_EQ(c.marker(victim), "") << "the cancelled job ran";
  EXPECT_EQ(c.call("POST", "/api/jobs/" + std::to_string(blocker) + "/cancel").status,
            202);  // running: requested
  ASSERT_TRUE(wait_until([&] { return job_field(r, blocker, "state") == "cancelled"; }, 30s));

  // Each pinned pilot leaves once its job is done (pinned_idle_timeout_s: 2).
  ASSERT_TRUE(
      wait_until([&] { return r.exec(redis_cmd("SCARD", "descprod:pilots")).as_integer() == 0; }, 60s))
      << run({"squeue"}).output;
  EXPECT_EQ(count(c.daemon->output(), "pinned pilot submitted"), 4u) << c.daemon->output();
  std::cout << grep(c.daemon->output(), {"pinned pilot", "job failed before it ran"});
}

// ---------------------------------------------------------------------------------------------
// Without Slurm.

// Pilots of two sites, after a daemon restart: each site's manager takes back only its own
// pilots from Redis (the hash's `site`), so one site's squeue, which does not list the other's
// pilots, ends none of them. squeue is a stand-in here that lists each site's pilot under its
// job name; no Slurm is needed.
TEST(Pilots, AfterARestartEachSiteTakesBackOnlyItsOwnPilots) {
  temp_dir fake("descprod-fake-squeue-");
  auto squeue = fake.file("squeue");
  write_file(squeue,
             "#!/bin/sh\n"
             "for a in \"$@\"; do case \"$a\" in\n"
             "  --name=pilot-nersc) echo '100|PENDING|Priority' ;;\n"
             "  --name=pilot-slac) echo '200|PENDING|Priority' ;;\n"
             "esac; done\n");
  ::chmod(squeue.c_str(), 0755);
  service_options o;
  o.workers = 0;
  o.worker_extra = pilot_sites_yaml(
      fake.path(),
      {{{"site", "nersc"}, {"job_name", "pilot-nersc"}, {"squeue", squeue}, {"sbatch", "/bin/false"}},
       {{"site", "slac"}, {"job_name", "pilot-slac"}, {"squeue", squeue}, {"sbatch", "/bin/false"}}});
  o.gateway_extra = "  sites: [nersc, slac]\n";
  service c(o);
  redis_sync r(c.redis.endpoint());
  // What the daemon before the restart left in Redis: one pilot of each site, submitted long
  // enough ago that a squeue not listing it would end it at once.
  c.daemon->stop();
  const std::string old = std::to_string(epoch_now() - 600);
  for (const auto& [id, site] :
       std::vector<std::pair<std::string, std::string>>{{"100", "nersc"}, {"200", "slac"}}) {
    r.exec(redis_cmd("HSET", "descprod:pilot:" + id, "id", id, "site", site, "state", "submitted",
                     "slurm_state", "PENDING", "submitted_time", old, "nodes", "1", "slots", "1"));
    r.exec(redis_cmd("SADD", "descprod:pilots", id));
  }
  c.start_daemon();
  // Several squeue rounds (squeue_interval_ms 1000) of both managers.
  ASSERT_TRUE(wait_until(
      [&] {
        auto log = c.daemon->output();
        return count(log, "pilots loaded from redis site=nersc count=1") == 1 &&
               count(log, "pilots loaded from redis site=slac count=1") == 1;
      },
      10s))
      << c.daemon->output();
  std::this_thread::sleep_for(3500ms);
  EXPECT_EQ(hget(r, "descprod:pilot:100", "state"), "submitted") << c.daemon->output();
  EXPECT_EQ(hget(r, "descprod:pilot:200", "state"), "submitted") << c.daemon->output();
  EXPECT_EQ(r.exec(redis_cmd("SCARD", "descprod:pilots")).as_integer(), 2);
  EXPECT_EQ(count(c.daemon->output(), "pilot ended"), 0u) << c.daemon->output();
}

TEST(Pilots, HangingSbatchIsKilledAndBackedOffWhileTheDaemonKeepsDispatching) {
  temp_dir fake("descprod-fake-sbatch-");
  auto sbatch = fake.file("sbatch");
  write_file(sbatch, "#!/bin/sh\nsleep 60\n");
  ::chmod(sbatch.c_str(), 0755);
  service_options o;
  o.workers = 1;
  o.worker_extra = pilot_yaml(fake.path(), {{"sbatch", sbatch},
                                            {"command_timeout_ms", "400"},
                                            {"backoff_min_ms", "200"},
                                            {"backoff_max_ms", "800"},
                                            {"check_interval_ms", "50"}});
  o.apps =
      "  - name: nap\n"
      "    command: [\"sleep\", \"0.1\"]\n"
      "    args: []\n";
  service c(o);
  redis_sync r(c.redis.endpoint());
  // Far more jobs than the local worker's two slots (about 10 s of work): the daemon wants a
  // pilot all along, and its sbatch hangs each time.
  auto ids = submit_many(c, "nap", 200);
  ASSERT_EQ(ids.size(), 200u);
  auto done = [&] {
    int n = 0;
    for (auto id : ids) n += job_field(r, id, "state") == "done";
    return n;
  };
  ASSERT_TRUE(wait_until([&] { return count(c.daemon->output(), "pilot submission failed") >= 4; }, 20s))
      << c.daemon->output();
  // Meanwhile jobs went on being dispatched: the daemon's loop never waited for sbatch.
  int done_at_4 = done();
  EXPECT_GT(done_at_4, 0);
  EXPECT_LT(done_at_4, 200);
  ASSERT_TRUE(wait_until([&] { return all_in_state(r, ids, "done"); }, 60s)) << states_summary(r, ids);
  auto log = c.daemon->output();
  EXPECT_NE(log.find("error=timed out after 400 ms"), std::string::npos);
  for (const char* d : {"retry_in_ms=200", "retry_in_ms=400", "retry_in_ms=800"})
    EXPECT_NE(log.find(d), std::string::npos) << d << "\n" << log;
  EXPECT_EQ(r.exec(redis_cmd("SCARD", "descprod:pilots")).as_integer(), 0);
  // The killed sbatches left no process behind (each process group was killed). A retry may be in
  // flight right now, so stop the daemon first: it must not leave its sbatch behind either.
  c.daemon->stop();
  EXPECT_TRUE(wait_until(
      [&] {
        return run({"pgrep", "-f", sbatch}).output.empty();
      },
      3s))
      << run({"pgrep", "-af", sbatch}).output;
  std::cout << grep(log, {"pilot"}).substr(0, 1500);
}

// The daemon's side of the walltime rule: a job a worker handed back for walltime is never offered
// to that worker again (no ping-pong), and runs on another worker. The refusing worker is played by
// the test on a DEALER socket, so it can refuse although it announced no walltime.
TEST(Pilots, DaemonNeverOffersAWorkerAJobItRefusedForWalltime) {
  service_options o;
  o.workers = 0;
  o.apps =
      "  - name: long\n"
      "    command: [\"true\"]\n"
      "    args: []\n"
      "    time_limit_s: 600\n";
  service c(o);
  redis_sync r(c.redis.endpoint());
  zmq::context_t ctx(1);
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect("ipc://" + c.dir.file("w.ipc"));
  auto send = [&](const std::string& cmd, boost::json::object body) {
    body["worker"] = "fake";
    auto text = boost::json::serialize(body);
    std::vector<zmq::const_buffer> frames{zmq::buffer(cmd), zmq::buffer(text)};
    (void)zmq::send_multipart(dealer, frames);
  };
  // Receives for `within`, answering nothing but sending heartbeats; returns the commands seen.
  std::vector<std::pair<std::string, boost::json::object>> got;
  auto pump = [&](std::chrono::milliseconds within, const std::string& until = "") {
    auto deadline = steady::now() + within;
    auto next_beat = steady::now();
    while (steady::now() < deadline) {
      if (steady::now() >= next_beat) {
        boost::json::object hb;
        hb["running"] = boost::json::array();
        send("heartbeat", hb);
        next_beat = steady::now() + 150ms;
      }
      zmq::pollitem_t items[] = {{dealer.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 1, 50ms);
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> parts;
      (void)zmq::recv_multipart(dealer, std::back_inserter(parts));
      if (parts.size() != 2) continue;
      got.emplace_back(parts[0].to_string(), boost::json::parse(parts[1].to_string_view()).as_object());
      if (!until.empty() && got.back().first == until) return true;
    }
    return until.empty();
  };
  boost::json::object hello;
  hello["protocol"] = 1;
  hello["role"] = "worker";
  hello["owner"] = "admin";
  hello["host"] = "fake-host";
  hello["slots"] = 1;
  hello["pool"] = "default";
  hello["walltime_end"] = 0;
  hello["running"] = boost::json::array();
  auto token = read_file(c.worker_token_file);
  hello["token"] = token.substr(0, token.find('\n'));
  send("hello", hello);
  ASSERT_TRUE(pump(5s, "welcome"));
  boost::json::object ready;
  ready["credits"] = 1;
  send("ready", ready);

  auto ids = submit_many(c, "long", 1);
  ASSERT_EQ(ids.size(), 1u);
  ASSERT_TRUE(pump(10s, "job"));
  const auto job = got.back().second;
  boost::json::object hb;
  hb["job"] = ids[0];
  hb["attempt"] = job.at("attempt");
  hb["reason"] = "walltime: time limit 600 s, 60 s left in the allocation";
  hb["walltime"] = true;
  hb["time_limit_s"] = 600.0;
  send("handback", hb);
  send("ready", ready);
  // The daemon keeps the job from this worker: it stays ready, whatever the credits.
  got.clear();
  pump(2s);
  for (const auto& [cmd, body] : got)
    EXPECT_NE(cmd, "job") << "offered again: " << boost::json::serialize(body);
  EXPECT_EQ(job_field(r, ids[0], "state"), "ready");
  // Another worker takes it.
  c.start_worker(0);
  ASSERT_TRUE(wait_until(
      [&] {
        pump(100ms);
        return job_field(r, ids[0], "state") == "done";
      },
      20s))
      << c.daemon->output();
  EXPECT_EQ(job_field(r, ids[0], "worker"), "w0");
  for (const auto& [cmd, body] : got) EXPECT_NE(cmd, "job");
  EXPECT_NE(c.daemon->output().find("job refused by worker for walltime job_id=" + std::to_string(ids[0])),
            std::string::npos);
}

// The worker's own walltime check and idle exit, against a fake daemon (a ROUTER socket).
TEST(Pilots, WorkerHandsBackJobsThatOutrunItsWalltimeAndExitsWhenIdle) {
  temp_dir dir("descprod-walltime-");
  zmq::context_t ctx(1);
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  auto endpoint = "ipc://" + dir.file("w.ipc");
  router.bind(endpoint);

  workers::worker_options wo;
  wo.endpoint = endpoint;
  wo.id = "walltime-test";
  wo.slots = 2;
  wo.run.output_dir = dir.file("out");
  fs::create_directories(dir.file("out") + "/jobs");
  wo.heartbeat = 100ms;
  wo.walltime_end = epoch_now() + 30;
  wo.walltime_margin_s = 5;
  wo.idle_timeout = 1500ms;
  net::io_context ioc;
  workers::worker w(ioc.get_executor(), ctx, wo);
  std::atomic<bool> ended{false};
  w.start([&](std::exception_ptr) { ended = true; });
  std::thread t([&] { ioc.run(); });

  std::vector<std::pair<std::string, boost::json::object>> got;
  std::string routing;
  auto recv = [&](std::chrono::milliseconds timeout) -> bool {
    zmq::pollitem_t items[] = {{router.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, timeout);
    if (!(items[0].revents & ZMQ_POLLIN)) return false;
    std::vector<zmq::message_t> parts;
    (void)zmq::recv_multipart(router, std::back_inserter(parts));
    if (parts.size() != 3) return false;
    routing = parts[0].to_string();
    got.emplace_back(parts[1].to_string(), boost::json::parse(parts[2].to_string_view()).as_object());
    return true;
  };
  auto send = [&](const std::string& cmd, const boost::json::object& body) {
    std::vector<zmq::const_buffer> frames{zmq::buffer(routing), zmq::buffer(cmd)};
    auto text = boost::json::serialize(body);
    frames.push_back(zmq::buffer(text));
    (void)zmq::send_multipart(router, frames);
  };
  auto wait_for = [&](const std::string& cmd,
                      std::chrono::milliseconds within) -> const boost::json::object* {
    auto deadline = steady::now() + within;
    std::size_t seen = 0;
    while (steady::now() < deadline) {
      for (; seen < got.size(); ++seen)
        if (got[seen].first == cmd) return &got[seen].second;
      recv(50ms);
    }
    for (; seen < got.size(); ++seen)
      if (got[seen].first == cmd) return &got[seen].second;
    return nullptr;
  };

  auto hello = wait_for("hello", 5s);
  ASSERT_TRUE(hello);
  EXPECT_NEAR(static_cast<double>(hello->at("walltime_end").as_int64()), wo.walltime_end, 1.0);
  EXPECT_EQ(hello->at("walltime_margin_s").as_double(), 5.0);
  boost::json::object welcome;
  welcome["protocol"] = 1;
  welcome["heartbeat_ms"] = 100;
  welcome["lease_timeout_ms"] = 5000;
  send("welcome", welcome);
  ASSERT_TRUE(wait_for("ready", 5s));
  auto job = [&](long long id, double limit) {
    boost::json::object rec;
    rec["id"] = id;
    rec["jobtype"] = "t";
    boost::json::object app;
    boost::json::array argv;
    argv.emplace_back("true");
    app["argv"] = argv;
    app["env"] = boost::json::object();
    app["time_limit_s"] = limit;
    boost::json::object body;
    body["job"] = rec;
    body["attempt"] = 1;
    body["app"] = app;
    return body;
  };
  auto started = steady::now();
  send("job", job(1, 60));  // 60 s > 30 - 5 s left: handed back unstarted
  send("job", job(2, 10));  // fits: runs
  auto hb = wait_for("handback", 5s);
  ASSERT_TRUE(hb) << "no handback";
  EXPECT_EQ(hb->at("job").as_int64(), 1);
  EXPECT_TRUE(hb->at("walltime").as_bool());
  EXPECT_EQ(hb->at("time_limit_s").as_double(), 60.0);
  EXPECT_NE(std::string(hb->at("reason").as_string()).find("walltime"), std::string::npos);
  auto fin = wait_for("finished", 5s);
  ASSERT_TRUE(fin);
  EXPECT_EQ(fin->at("job").as_int64(), 2);
  EXPECT_EQ(fin->at("rc").as_int64(), 0);
  // Idle for 1.5 s: drain, bye, and run() ends with exit code 0.
  ASSERT_TRUE(wait_for("drain", 5s));
  ASSERT_TRUE(wait_for("bye", 5s));
  ASSERT_TRUE(wait_until([&] { return ended.load(); }, 5s));
  EXPECT_GE(std::chrono::duration<double>(steady::now() - started).count(), 1.4);
  EXPECT_EQ(w.exit_code(), 0);
  ioc.stop();
  t.join();
}

}  // namespace
}  // namespace descprod::test
