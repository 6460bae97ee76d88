// Integration tests of descprod-worker's run files (status line, progress counts and log line,
// the login-shell wrapper) and of the real descprod-worker binary (a bad config, SIGTERM).
#include "tests/integration/worker_fixture.hpp"

namespace {

// --- pure helpers ------------------------------------------------------------------------------

TEST(WorkerFiles, ParsesDoneAndTotalOnlyFromALeadingBracket) {
  using descprod::workers::parse_progress_counts;
  auto c = parse_progress_counts("[3/20] tasks done");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->done, 3);
  EXPECT_EQ(c->total, 20);
  EXPECT_FALSE(parse_progress_counts("3/20 tasks"));
  EXPECT_FALSE(parse_progress_counts("[a/20]"));
  EXPECT_FALSE(parse_progress_counts("[3/]"));
  EXPECT_FALSE(parse_progress_counts("[1234567890123456789/1]"));
}

TEST(WorkerFiles, StatusIsTheLastNonEmptyLineTrimmedAndCapped) {
  temp_dir d;
  auto f = d.path / "current-status.txt";
  EXPECT_EQ(descprod::workers::read_status_line(f), "");
  std::ofstream(f) << "first\n  second line \t\n\n   \n";
  EXPECT_EQ(descprod::workers::read_status_line(f), "second line");
  std::ofstream(f) << std::string(5000, 'x');
  EXPECT_EQ(descprod::workers::read_status_line(f).size(), descprod::workers::max_message_bytes);
}

TEST(WorkerFiles, ProgressLogLineRightAlignsWholeSeconds) {
  EXPECT_EQ(descprod::workers::progress_log_line(12.7, "Running. x"), "      12: Running. x\n");
}

TEST(WorkerFiles, LoginShellWrapsArgvAsPositionalParameters) {
  descprod::workers::job_spec s;
  s.argv = {"runapp-x", "$(id)"};
  s.login_shell = true;
  // The script's behaviour (descprod-env.log, PATH, positional arguments) is tested by running it:
  // Worker.LoginShellPassesArgumentsAsPositionalParameters.
  std::vector<std::string> want = {
      "bash", "-l", "-c", std::string(descprod::workers::login_shell_script), "runapp-x", "$(id)"};
  EXPECT_EQ(descprod::workers::command_argv(s), want);
  s.login_shell = false;
  EXPECT_EQ(descprod::workers::command_argv(s), s.argv);
}

// --- the real binary ---------------------------------------------------------------------------

pid_t spawn_binary(const std::vector<std::string>& args, const fs::path& output) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

// Waits for `pid` to exit; its exit code, or -1 (after killing it) at the deadline.
int wait_pid(pid_t pid, std::chrono::milliseconds within = default_wait) {
  int status = 0;
  bool ended = eventually([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, within);
  if (!ended) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

const std::string worker_binary = DESCPROD_BIN_DIR "/descprod-worker";

TEST(WorkerBinary, ExitsWithCode2AndAPreciseMessageOnABadConfig) {
  ASSERT_TRUE(fs::exists(worker_binary)) << "build descprod-worker first";
  temp_dir d;
  std::ofstream(d.path / "bad.yaml") << "worker:\n  slots: 2\n  bogus: 1\n";
  auto out = d.path / "out.txt";
  pid_t pid = spawn_binary({worker_binary, "--config", (d.path / "bad.yaml").string()}, out);
  ASSERT_GT(pid, 0);
  EXPECT_EQ(wait_pid(pid), 2);
  auto text = slurp(out);
  EXPECT_NE(text.find("fatal: " + (d.path / "bad.yaml").string() + ":3:3: worker.bogus: unknown key"),
            std::string::npos)
      << text;
}

TEST(WorkerBinary, SaysByeAndExitsZeroOnSigterm) {
  ASSERT_TRUE(fs::exists(worker_binary)) << "build descprod-worker first";
  temp_dir d;
  std::string endpoint = "ipc://" + (d.path / "w.ipc").string();
  zmq::context_t ctx(1);
  fake_daemon daemon(ctx, endpoint);
  std::ofstream(d.path / "worker.yaml") << "worker:\n  daemon_endpoint: \"" << endpoint << "\"\n"
                                        << "  output_dir: \"" << (d.path / "out").string() << "\"\n";
  pid_t pid = spawn_binary(
      {worker_binary, "--config", (d.path / "worker.yaml").string(), "--slots", "3", "--id", "bin-worker"},
      d.path / "out.txt");
  ASSERT_GT(pid, 0);
  auto hello = daemon.expect("hello");
  if (!hello) {
    ::kill(pid, SIGKILL);
    wait_pid(pid);
    FAIL() << "no hello: " << slurp(d.path / "out.txt");
  }
  EXPECT_EQ(hello->body.at("worker").as_string(), "bin-worker");
  EXPECT_EQ(hello->body.at("slots").as_int64(), 3);
  daemon.send(hello->route, "welcome", welcome_body());
  auto ready = daemon.expect("ready");
  EXPECT_TRUE(ready);
  ::kill(pid, SIGTERM);
  EXPECT_TRUE(daemon.expect("bye"));
  EXPECT_EQ(wait_pid(pid), 0) << slurp(d.path / "out.txt");
}

}  // namespace
