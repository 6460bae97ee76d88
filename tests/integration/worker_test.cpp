// Integration tests of descprod-worker running jobs (tests/integration/worker_fixture.hpp: the
// worker library against a fake daemon on ipc://): the handshake, what an application is given
// (argument, environment, run directory, login shell), its reports, cancel, time limit and
// closeout. Queueing, drain and reconnects: worker_queue_test.cpp; the run files and the real
// binary: worker_files_test.cpp.
#include "tests/integration/worker_fixture.hpp"

namespace {

TEST_F(Worker, SaysHelloThenAsksForAsManyJobsAsSlots) {
  start_worker();
  auto hello = daemon_->expect("hello");
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->body.at("protocol").as_int64(), 1);
  EXPECT_EQ(hello->body.at("role").as_string(), "worker");
  EXPECT_EQ(hello->body.at("worker").as_string(), "test-worker");
  EXPECT_EQ(hello->body.at("owner").as_string(), "alice");
  EXPECT_EQ(hello->body.at("host").as_string(), "node1.example");
  EXPECT_EQ(hello->body.at("slots").as_int64(), 2);
  EXPECT_EQ(hello->body.at("pool").as_string(), "testpool");
  EXPECT_EQ(hello->body.at("version").as_string(), DESCPROD_VERSION);
  EXPECT_EQ(hello->body.at("walltime_end").as_int64(), 0);
  EXPECT_TRUE(hello->body.at("running").as_array().empty());
  daemon_->send(hello->route, "welcome", welcome_body());
  auto ready = daemon_->expect("ready");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->body.at("credits").as_int64(), 2);
  auto hb = daemon_->expect("heartbeat");
  ASSERT_TRUE(hb) << "no heartbeat";
  EXPECT_TRUE(hb->body.at("running").is_array());
  EXPECT_EQ(stop_worker(), 0);
}

TEST_F(Worker, ReportsExitCodeAndLastStatusLine) {
  start_worker();
  auto route = handshake();
  ASSERT_TRUE(daemon_->expect("ready"));
  daemon_->send(
      route, "job",
      job_body(42, {"/bin/sh", "-c", "echo hi; echo 'I'\\''m awake now.' > current-status.txt; exit 3"}));
  auto started = expect_started(42);
  ASSERT_TRUE(started);
  EXPECT_EQ(started->body.at("attempt").as_int64(), 1);
  EXPECT_GT(started->body.at("pid").as_int64(), 0);
  EXPECT_EQ(started->body.at("host").as_string(), "node1.example");
  fs::path rundir(std::string(started->body.at("rundir").as_string()));
  EXPECT_EQ(rundir, dir_.path / "out" / "jobs" / "job000042");

  auto finished = daemon_->expect("finished", for_job(42));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("attempt").as_int64(), 1);
  EXPECT_EQ(finished->body.at("rc").as_int64(), 3);
  EXPECT_EQ(finished->body.at("signal").as_int64(), 0);
  EXPECT_EQ(finished->body.at("timed_out").as_bool(), false);
  EXPECT_EQ(finished->body.at("message").as_string(), "I'm awake now.");
  auto ready = daemon_->expect("ready");
  ASSERT_TRUE(ready) << "no new credit after the job ended";
  EXPECT_EQ(ready->body.at("credits").as_int64(), 1);

  auto config = slurp(rundir / "config.json");
  EXPECT_NE(config.find("\n  \"id\": 42,\n"), std::string::npos) << config;
  EXPECT_NE(config.find("\n  \"progress\": \"Ready.\""), std::string::npos) << config;
  EXPECT_NE(config.find("\n  \"create_time\": 1712345678,"), std::string::npos) << config;
  // Every key DESCprod's launcher wrote, in its order: howfig even when empty (apps read
  // json.load(f)['howfig']), host and rundir as set before the launch.
  auto cj = json::parse(config).as_object();
  EXPECT_EQ(cj.at("howfig").as_string(), "");
  EXPECT_EQ(cj.at("host").as_string(), "node1.example");
  EXPECT_EQ(cj.at("rundir").as_string(), rundir.string());
  std::vector<std::string> keys, expected;
  for (const auto& kv : cj) keys.emplace_back(kv.key());
  const auto& order = descprod::job_field_order();
  for (std::size_t i = 0; i < 18; ++i)
    if (cj.contains(order[i])) expected.push_back(order[i]);
  EXPECT_EQ(keys, expected) << config;
  EXPECT_EQ(slurp(rundir / "job000042.log"), "hi\n");
  auto progress = slurp(rundir / "progress.log");
  EXPECT_NE(progress.find("       0: Running.\n"), std::string::npos) << progress;
  EXPECT_NE(progress.find(": Failed. I'm awake now.\n"), std::string::npos) << progress;
  auto status = json::parse(slurp(rundir / "wrapper-status.json")).as_object();
  // DESCprod's types: an integer version, integer times.
  EXPECT_EQ(status.at("wrapper_version").as_int64(), 20);
  EXPECT_TRUE(status.at("start_time").is_int64());
  EXPECT_TRUE(status.at("update_time").is_int64());
  EXPECT_TRUE(status.at("stop_time").is_int64());
  EXPECT_FALSE(fs::exists(rundir / "wrapper.log")) << "only an app run in a login shell gets one";
  EXPECT_EQ(status.at("id").as_int64(), 42);
  EXPECT_EQ(status.at("descname").as_string(), "alice");
  EXPECT_EQ(status.at("return_status").as_int64(), 3);
  EXPECT_EQ(status.at("progress").as_string(), "Failed. I'm awake now.");
  EXPECT_EQ(status.at("pid").as_int64(), started->body.at("pid").as_int64());
  EXPECT_TRUE(status.contains("stop_time"));
  EXPECT_EQ(slurp(rundir / "wrapper-status.json").substr(0, 26), "{\n  \"wrapper_version\": 20,");
}

TEST_F(Worker, PassesConfigToTheAppAsOneLiteralArgument) {
  const std::string evil = "$(id); rm -rf x";
  start_worker();
  auto route = handshake();
  daemon_->send(route, "job", job_body(5, {"/usr/bin/printf", "%s", evil}));
  auto started = expect_started(5);
  ASSERT_TRUE(started);
  auto finished = daemon_->expect("finished", for_job(5));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("rc").as_int64(), 0);
  fs::path rundir(std::string(started->body.at("rundir").as_string()));
  EXPECT_EQ(slurp(rundir / "job000005.log"), evil);
}

TEST_F(Worker, LoginShellPassesArgumentsAsPositionalParameters) {
  const std::string evil = "$(id); rm -rf x \"'`";
  start_worker();
  auto route = handshake();
  auto body = job_body(6, {"/usr/bin/printf", "%s", evil}, 1, 0, {}, true);
  const std::string token = "dp_" + std::string(43, 'k');
  body["token"] = token;
  daemon_->send(route, "job", body);
  auto started = expect_started(6);
  ASSERT_TRUE(started);
  auto finished = daemon_->expect("finished", for_job(6));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("rc").as_int64(), 0);
  fs::path rundir(std::string(started->body.at("rundir").as_string()));
  // A login shell may print its own noise first; the app's output must end the log unchanged.
  auto log = slurp(rundir / "job000006.log");
  ASSERT_GE(log.size(), evil.size()) << log;
  EXPECT_EQ(log.substr(log.size() - evil.size()), evil);
  // As DESCprod's launcher did: the login shell's variables (`set`) in descprod-env.log, the job
  // token's value replaced; and the wrapper's own lines in wrapper.log.
  auto env = slurp(rundir / "descprod-env.log");
  EXPECT_NE(env.find("DESCPROD_JOB_ID=6"), std::string::npos) << env;
  EXPECT_NE(env.find("DESCPROD_TOKEN=<redacted>\n"), std::string::npos) << env;
  EXPECT_EQ(env.find(token), std::string::npos) << "the job token is in descprod-env.log";
  auto wrapper = slurp(rundir / "wrapper.log");
  EXPECT_NE(wrapper.find("running job 6 for user alice in " + rundir.string() + "\n"), std::string::npos)
      << wrapper;
  EXPECT_NE(wrapper.find(" returned code: 0\nDone.\n"), std::string::npos) << wrapper;
}

// The worker's own token ($DESCPROD_WORKER_TOKEN, one of the ways it gets it) is a secret of the
// worker: no job sees it, and a login shell's descprod-env.log does not record it.
TEST_F(Worker, TheWorkerTokenFromTheEnvironmentNeverReachesAJob) {
  ::setenv("DESCPROD_WORKER_TOKEN", "dp_worker_secret_do_not_leak", 1);
  struct unset {
    ~unset() { ::unsetenv("DESCPROD_WORKER_TOKEN"); }
  } restore;
  start_worker();
  auto route = handshake();
  daemon_->send(
      route, "job",
      job_body(9, {"/bin/sh", "-c", "printf '[%s]' \"${DESCPROD_WORKER_TOKEN:-none}\""}, 1, 0, {}, true));
  auto started = expect_started(9);
  ASSERT_TRUE(started);
  ASSERT_TRUE(daemon_->expect("finished", for_job(9)));
  fs::path rundir(std::string(started->body.at("rundir").as_string()));
  auto log = slurp(rundir / "job000009.log");
  EXPECT_NE(log.find("[none]"), std::string::npos) << log;
  EXPECT_EQ(slurp(rundir / "descprod-env.log").find("dp_worker_secret"), std::string::npos);
}

TEST_F(Worker, GivesTheAppItsEnvironmentAndAFreshRunDirectoryPerAttempt) {
  start_worker();
  auto route = handshake();
  json::object env;
  env["FOO"] = "bar baz";
  daemon_->send(route, "job",
                job_body(7,
                         {"/bin/sh", "-c",
                          "printf '%s|%s|%s|%s|%s' \"$FOO\" \"$DESCPROD_JOB_ID\" "
                          "\"$DESCPROD_ATTEMPT\" \"$DESCPROD_RUNDIR\" \"$DESCPROD_URL\""},
                         2, 0, env));
  auto started = expect_started(7);
  ASSERT_TRUE(started);
  fs::path rundir(std::string(started->body.at("rundir").as_string()));
  EXPECT_EQ(rundir.filename(), "job000007.2");
  ASSERT_TRUE(daemon_->expect("finished", for_job(7)));
  EXPECT_EQ(slurp(rundir / "job000007.log"),
            "bar baz|7|2|" + rundir.string() + "|http://gateway.example:8080");

  // The same attempt again (a daemon replaying it, another instance's job of the same number)
  // must not use the first directory, nor silently take another name: it fails as DESCprod's
  // start did ("Run directory already exists"), and the directory is left as it was.
  const auto before = slurp(rundir / "job000007.log");
  daemon_->send(route, "job", job_body(7, {"/bin/true"}, 2));
  auto again = daemon_->expect("finished", for_job(7));
  ASSERT_TRUE(again);
  EXPECT_NE(again->body.at("rc").as_int64(), 0);
  EXPECT_EQ(std::string(again->body.at("message").as_string()),
            "Run directory already exists: " + rundir.string());
  EXPECT_EQ(slurp(rundir / "job000007.log"), before);
  EXPECT_FALSE(fs::exists(rundir.parent_path() / "job000007.3"));
}

// Attempt 1 of a job whose directory another DESCprod instance left (same output root, same job
// number): the job fails with DESCprod's message instead of running in job000020.2; the
// directory is untouched and the worker stays healthy (the next job runs).
TEST_F(Worker, AnExistingRunDirectoryFailsTheAttemptWithDescprodsMessage) {
  start_worker();
  auto route = handshake();
  const fs::path theirs = dir_.path / "out" / "jobs" / "job000020";
  fs::create_directories(theirs);
  std::ofstream((theirs / "config.json").string()) << "{\"id\": 20}";
  daemon_->send(route, "job", job_body(20, {"/bin/true"}));
  auto finished = daemon_->expect("finished", for_job(20));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("rc").as_int64(), 1);
  EXPECT_EQ(std::string(finished->body.at("message").as_string()),
            "Run directory already exists: " + theirs.string());
  EXPECT_EQ(slurp(theirs / "config.json"), "{\"id\": 20}");
  EXPECT_FALSE(fs::exists(dir_.path / "out" / "jobs" / "job000020.2"));
  daemon_->send(route, "job", job_body(21, {"/bin/true"}));
  auto next = daemon_->expect("finished", for_job(21));
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body.at("rc").as_int64(), 0) << "the worker is not made unhealthy by it";
}

TEST_F(Worker, CancelEndsTheJobWithSignal15) {
  start_worker();
  auto route = handshake();
  daemon_->send(route, "job", job_body(8, {"/bin/sleep", "60"}));
  ASSERT_TRUE(expect_started(8));
  daemon_->send(route, "cancel", job_ref(8, 1));
  auto finished = daemon_->expect("finished", for_job(8));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("signal").as_int64(), SIGTERM);
  EXPECT_EQ(finished->body.at("rc").as_int64(), 0);
  EXPECT_EQ(finished->body.at("timed_out").as_bool(), false);
}

TEST_F(Worker, CancelEscalatesToSigkillWhenTheAppIgnoresSigterm) {
  auto o = options();
  o.run.kill_grace = 200ms;
  start_worker(o);
  auto route = handshake();
  daemon_->send(route, "job",
                job_body(9, {"/bin/sh", "-c",
                             "trap '' TERM; echo armed > current-status.txt; "
                             "while true; do sleep 0.05; done"}));
  ASSERT_TRUE(expect_started(9));
  ASSERT_TRUE(daemon_->expect("progress", for_job(9))) << "trap not armed";
  daemon_->send(route, "cancel", job_ref(9, 1));
  auto finished = daemon_->expect("finished", for_job(9));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("signal").as_int64(), SIGKILL);
}

TEST_F(Worker, ReportsDoneAndTotalFromAStatusLine) {
  start_worker();
  auto route = handshake();
  daemon_->send(
      route, "job",
      job_body(10, {"/bin/sh", "-c", "echo '  [3/10] working  ' > current-status.txt; exec sleep 60"}));
  ASSERT_TRUE(expect_started(10));
  auto progress = daemon_->expect("progress", for_job(10));
  ASSERT_TRUE(progress);
  EXPECT_EQ(progress->body.at("message").as_string(), "[3/10] working");
  EXPECT_EQ(progress->body.at("done").as_int64(), 3);
  EXPECT_EQ(progress->body.at("total").as_int64(), 10);
  daemon_->send(route, "cancel", job_ref(10, 1));
  auto finished = daemon_->expect("finished", for_job(10));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("message").as_string(), "[3/10] working");
}

TEST_F(Worker, ReportsRc127WithoutStartedWhenTheProgramDoesNotExist) {
  start_worker();
  auto route = handshake();
  daemon_->send(route, "job", job_body(11, {"/nonexistent/runapp-nothing", "x"}));
  auto finished = daemon_->expect("finished", for_job(11));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("rc").as_int64(), 127);
  EXPECT_EQ(finished->body.at("message").as_string(),
            "cannot start /nonexistent/runapp-nothing: No such file or directory");
  for (const auto& m : daemon_->history) EXPECT_NE(m.command, "started");
  auto log = slurp(dir_.path / "out" / "jobs" / "job000011" / "job000011.log");
  EXPECT_EQ(log, "cannot start /nonexistent/runapp-nothing: No such file or directory\n");
}

TEST_F(Worker, DropsMalformedMessagesAndKeepsWorking) {
  start_worker();
  auto route = handshake();
  auto bad = job_body(12, {"/bin/true"});
  bad["app"].as_object()["argv"] = "not a list";
  daemon_->send(route, "job", bad);
  auto no_id = job_body(12, {"/bin/true"});
  no_id["job"].as_object().erase("id");
  daemon_->send(route, "job", no_id);
  auto nul = job_body(12, {std::string("/bin/tr\0ue", 10)});
  daemon_->send(route, "job", nul);
  daemon_->send_raw({route, "job", "{not json"});
  daemon_->send_raw({route, "job", "[1,2]"});
  daemon_->send_raw({route, "no-such-command", "{}"});
  daemon_->send_raw({route, "job"});
  daemon_->send(route, "cancel", json::object());
  daemon_->send(route, "job", job_body(13, {"/bin/true"}));
  auto finished = daemon_->expect("finished");
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("job").as_int64(), 13);
  EXPECT_EQ(finished->body.at("rc").as_int64(), 0);
  EXPECT_FALSE(fs::exists(dir_.path / "out" / "jobs" / "job000012"));
}

TEST_F(Worker, KillsTheJobAtItsTimeLimit) {
  start_worker();
  auto route = handshake();
  daemon_->send(route, "job", job_body(14, {"/bin/sleep", "60"}, 1, 0.3));
  auto started = expect_started(14);
  ASSERT_TRUE(started);
  auto finished = daemon_->expect("finished", for_job(14));
  ASSERT_TRUE(finished);
  EXPECT_EQ(finished->body.at("timed_out").as_bool(), true);
  EXPECT_EQ(finished->body.at("signal").as_int64(), SIGTERM);
  fs::path rundir(std::string(started->body.at("rundir").as_string()));
  auto status = json::parse(slurp(rundir / "wrapper-status.json")).as_object();
  EXPECT_EQ(status.at("return_status").as_int64(), 124);
  EXPECT_EQ(status.at("progress").as_string(), "Timeout.");
}

TEST_F(Worker, RunsCloseoutWithTheReturnStatus) {
  start_worker();
  auto route = handshake();
  daemon_->send(
      route, "job",
      job_body(15, {"/bin/sh", "-c",
                    "printf '#!/bin/sh\\necho \"closeout $1\" > closeout.txt\\n' > descprod-closeout; "
                    "chmod +x descprod-closeout; exit 4"}));
  auto started = expect_started(15);
  ASSERT_TRUE(started);
  auto finished = daemon_->expect("finished", for_job(15));
  ASSERT_TRUE(finished);
  fs::path rundir(std::string(started->body.at("rundir").as_string()));
  EXPECT_EQ(slurp(rundir / "closeout.txt"), "closeout 4\n");
}

}  // namespace
