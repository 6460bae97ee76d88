// Child processes on an io_context (core/process): exit codes and signals, merged output, working
// directory, environment, process-group signalling, spawn errors, and argv passed without a shell.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/process.hpp"
#include "tests/support/support.hpp"

namespace descprod {
namespace {

using namespace std::chrono_literals;
using test::run_async;

// True when `pid` no longer runs: gone, or a zombie waiting for whoever adopted it.
bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

class ProcessTest : public ::testing::Test {
 protected:
  spawn_options options(std::vector<std::string> argv) {
    spawn_options o;
    o.argv = std::move(argv);
    o.env = environment_with({});
    o.output_file = dir.file("out.log");
    return o;
  }
  exit_status run_to_end(const spawn_options& o) {
    child_process child(ioc.get_executor(), o);
    auto st = run_async(ioc, child.async_wait(), 10s);
    EXPECT_FALSE(child.running());
    return st;
  }
  std::string output() { return test::read_file(dir.file("out.log")); }

  test::temp_dir dir;
  net::io_context ioc;
};

TEST_F(ProcessTest, ExitCodeIsReturned) {
  auto st = run_to_end(options({"/bin/sh", "-c", "exit 7"}));
  EXPECT_EQ(st.exit_code, 7);
  EXPECT_EQ(st.signal, 0);
  st = run_to_end(options({"/bin/sh", "-c", "exit 0"}));
  EXPECT_EQ(st.exit_code, 0);
  EXPECT_EQ(st.signal, 0);
}

TEST_F(ProcessTest, DeathBySignalIsReported) {
  auto st = run_to_end(options({"/bin/sh", "-c", "kill -9 $$"}));
  EXPECT_EQ(st.signal, 9);
  EXPECT_EQ(st.exit_code, 0);
}

TEST_F(ProcessTest, StdoutAndStderrAreMergedIntoTheOutputFile) {
  auto st = run_to_end(options({"/bin/sh", "-c", "echo to-stdout; echo to-stderr >&2; echo again"}));
  EXPECT_EQ(st.exit_code, 0);
  EXPECT_EQ(output(), "to-stdout\nto-stderr\nagain\n");
}

TEST_F(ProcessTest, OutputIsAppendedToAnExistingFile) {
  test::write_file(dir.file("out.log"), "earlier attempt\n");
  run_to_end(options({"/bin/sh", "-c", "echo this attempt"}));
  EXPECT_EQ(output(), "earlier attempt\nthis attempt\n");
}

TEST_F(ProcessTest, StdinIsEmpty) {
  auto st = run_to_end(options({"/bin/sh", "-c", "cat; echo cat-rc=$?"}));
  EXPECT_EQ(st.exit_code, 0);
  EXPECT_EQ(output(), "cat-rc=0\n");
}

TEST_F(ProcessTest, WorkingDirectoryIsHonoured) {
  std::filesystem::create_directory(dir.file("rundir"));
  auto o = options({"/bin/sh", "-c", "pwd; echo hi > here.txt"});
  o.cwd = dir.file("rundir");
  EXPECT_EQ(run_to_end(o).exit_code, 0);
  EXPECT_EQ(output(), std::filesystem::canonical(dir.file("rundir")).string() + "\n");
  EXPECT_EQ(test::read_file(dir.file("rundir/here.txt")), "hi\n");
}

TEST_F(ProcessTest, EnvironmentIsPassed) {
  auto o = options({"/bin/sh", "-c", "printf '%s|%s' \"$DESCPROD_JOB_ID\" \"$DESCPROD_ATTEMPT\""});
  o.env = environment_with({{"DESCPROD_JOB_ID", "81"}, {"DESCPROD_ATTEMPT", "2"}});
  EXPECT_EQ(run_to_end(o).exit_code, 0);
  EXPECT_EQ(output(), "81|2");
}

TEST_F(ProcessTest, EnvironmentIsExactlyTheOneGiven) {
  auto o = options({"/usr/bin/env"});
  o.env = {"ONLY=1", "SECOND=two words"};
  EXPECT_EQ(run_to_end(o).exit_code, 0);
  EXPECT_EQ(output(), "ONLY=1\nSECOND=two words\n");
}

TEST(EnvironmentWith, OverridesAndAddsEntries) {
  ::setenv("DESCPROD_TEST_VAR", "old", 1);
  auto env = environment_with({{"DESCPROD_TEST_VAR", "new"}, {"DESCPROD_ADDED", "x=y"}});
  int var = 0;
  int added = 0;
  for (const auto& e : env) {
    if (e.rfind("DESCPROD_TEST_VAR=", 0) == 0) {
      ++var;
      EXPECT_EQ(e, "DESCPROD_TEST_VAR=new");
    }
    if (e == "DESCPROD_ADDED=x=y") ++added;
  }
  EXPECT_EQ(var, 1);
  EXPECT_EQ(added, 1);
  ::unsetenv("DESCPROD_TEST_VAR");
}

// The worker's per-job environment: read once, patched per job, the same as environment_with.
TEST(EnvironmentTemplate, GivesWhatEnvironmentWithGives) {
  ::setenv("DESCPROD_TEST_BASE", "base", 1);
  environment_template tmpl;
  ::unsetenv("DESCPROD_TEST_BASE");  // read at construction, not at each call
  std::vector<std::pair<std::string, std::string>> overrides = {{"DESCPROD_TEST_BASE", "patched"},
                                                                {"DESCPROD_JOB_ID", "7"},
                                                                {"DESCPROD_JOB_ID", "8"},
                                                                {"A_NEW_ONE", "x=y"}};
  auto env = tmpl.with(overrides);
  ::setenv("DESCPROD_TEST_BASE", "base", 1);
  auto expected = environment_with(overrides);
  ::unsetenv("DESCPROD_TEST_BASE");
  std::sort(env.begin(), env.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(env, expected);
  EXPECT_EQ(std::count(env.begin(), env.end(), "DESCPROD_JOB_ID=8"), 1);
  EXPECT_EQ(std::count(env.begin(), env.end(), "DESCPROD_TEST_BASE=patched"), 1);
  // Each call starts again from the base.
  auto plain = tmpl.with({});
  EXPECT_EQ(std::count(plain.begin(), plain.end(), "DESCPROD_TEST_BASE=base"), 1);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), "DESCPROD_JOB_ID=8"), 0);
}

TEST_F(ProcessTest, SignalGroupKillsAGrandchildInTheSameProcessGroup) {
  auto o = options({"/bin/sh", "-c", "sleep 300 & echo $! > grandchild.pid; wait"});
  o.cwd = dir.path();
  child_process child(ioc.get_executor(), o);
  pid_t grandchild = 0;
  ASSERT_TRUE(test::wait_until(
      [&] {
        try {
          auto text = test::read_file(dir.file("grandchild.pid"));
          if (text.empty() || text.back() != '\n') return false;
          grandchild = std::stoi(text);
          return true;
        } catch (const std::exception&) {
          return false;
        }
      },
      10s));
  ASSERT_GT(grandchild, 0);
  EXPECT_EQ(::getpgid(grandchild), child.pid());  // same group, led by the child
  EXPECT_FALSE(process_gone(grandchild));

  child.signal_group(SIGTERM);
  auto st = run_async(ioc, child.async_wait(), 10s);
  EXPECT_EQ(st.signal, SIGTERM);
  EXPECT_TRUE(test::wait_until([&] { return process_gone(grandchild); }, 10s))
      << "grandchild " << grandchild << " survived";
}

TEST_F(ProcessTest, DestructorKillsARunningChild) {
  pid_t pid = 0;
  {
    child_process child(ioc.get_executor(), options({"/usr/bin/sleep", "300"}));
    pid = child.pid();
    EXPECT_TRUE(child.running());
    EXPECT_FALSE(process_gone(pid));
  }
  EXPECT_TRUE(process_gone(pid));
}

TEST_F(ProcessTest, MissingProgramThrowsSystemErrorWithEnoent) {
  for (const char* program : {"/nonexistent/descprod-app", "runapp-descprod-does-not-exist"}) {
    try {
      child_process child(ioc.get_executor(), options({program, "arg"}));
      ADD_FAILURE() << program << " was started";
    } catch (const boost::system::system_error& e) {
      EXPECT_EQ(e.code().value(), ENOENT) << program << ": " << e.what();
    }
  }
}

TEST_F(ProcessTest, ArgumentsReachTheProgramLiterallyWithoutAShell) {
  test::write_file(dir.file("x"), "still here");
  auto o = options({"/usr/bin/printf", "%s", "$(id); rm -rf x"});
  o.cwd = dir.path();
  EXPECT_EQ(run_to_end(o).exit_code, 0);
  EXPECT_EQ(output(), "$(id); rm -rf x");
  EXPECT_EQ(test::read_file(dir.file("x")), "still here");
}

TEST_F(ProcessTest, ProgramIsFoundOnPath) {
  EXPECT_EQ(run_to_end(options({"printf", "%s", "found"})).exit_code, 0);
  EXPECT_EQ(output(), "found");
}

// A descriptor the parent leaked without O_CLOEXEC (a library's, say) must not reach the job.
TEST_F(ProcessTest, OnlyTheThreeStandardDescriptorsReachTheChild) {
  int leaked = ::open("/dev/null", O_RDONLY);  // deliberately without O_CLOEXEC
  ASSERT_GE(leaked, 3);
  // ls lists the shell's descriptors (its own directory descriptor is its own business).
  auto o = options({"/bin/sh", "-c", "ls /proc/$$/fd; true"});
  auto st = run_to_end(o);
  ::close(leaked);
  EXPECT_EQ(st.exit_code, 0);
  EXPECT_EQ(output(), "0\n1\n2\n");
}

// Whatever the parent ignores or handles, the job starts with every signal at its default and
// none blocked: an ignored SIGXFSZ or SIGWINCH would otherwise survive the exec.
TEST_F(ProcessTest, TheChildStartsWithDefaultSignalsNoneIgnoredNoneBlocked) {
  struct sigaction ign {
  }, old_xfsz{}, old_winch{}, old_usr1{};
  ign.sa_handler = SIG_IGN;
  ::sigaction(SIGXFSZ, &ign, &old_xfsz);
  ::sigaction(SIGWINCH, &ign, &old_winch);
  struct sigaction handler {};
  handler.sa_handler = [](int) {};
  ::sigaction(SIGUSR1, &handler, &old_usr1);
  sigset_t block, old_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGALRM);
  ::pthread_sigmask(SIG_BLOCK, &block, &old_mask);
  // grep reads its own status, exec'd straight from the spawn: through a shell the figures were the
  // shell's, which (dash) blocks every signal for a moment around each fork, so under load grep
  // sometimes saw SigBlk all ones.
  auto st = run_to_end(options({"/bin/grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"}));
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::sigaction(SIGXFSZ, &old_xfsz, nullptr);
  ::sigaction(SIGWINCH, &old_winch, nullptr);
  ::sigaction(SIGUSR1, &old_usr1, nullptr);
  EXPECT_EQ(st.exit_code, 0);
  EXPECT_EQ(output(), "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

// The PATH search is done once per program name; a program that moved is found again.
TEST_F(ProcessTest, AProgramThatMovedOnPathIsFoundAgain) {
  std::filesystem::create_directory(dir.file("a"));
  std::filesystem::create_directory(dir.file("b"));
  const std::string name = "descprod-moving-app-" + std::to_string(::getpid());
  test::write_file(dir.file("a/" + name), "#!/bin/sh\necho from-a\n");
  std::filesystem::permissions(dir.file("a/" + name), std::filesystem::perms::owner_all);
  std::string old_path = std::getenv("PATH") ? std::getenv("PATH") : "";
  ::setenv("PATH", (dir.file("a") + ":" + dir.file("b") + ":" + old_path).c_str(), 1);
  EXPECT_EQ(run_to_end(options({name})).exit_code, 0);
  std::filesystem::rename(dir.file("a/" + name), dir.file("b/" + name));
  test::write_file(dir.file("b/" + name), "#!/bin/sh\necho from-b\n");
  EXPECT_EQ(run_to_end(options({name})).exit_code, 0);
  std::filesystem::remove(dir.file("b/" + name));
  try {
    child_process gone(ioc.get_executor(), options({name}));
    ADD_FAILURE() << name << " was started after it was removed";
  } catch (const boost::system::system_error& e) {
    EXPECT_EQ(e.code().value(), ENOENT) << e.what();
  }
  ::setenv("PATH", old_path.c_str(), 1);
  EXPECT_EQ(output(), "from-a\nfrom-b\n");
}

TEST_F(ProcessTest, AFileThatIsNotExecutableThrowsEacces) {
  test::write_file(dir.file("not-exec"), "#!/bin/sh\nexit 0\n");
  try {
    child_process child(ioc.get_executor(), options({dir.file("not-exec")}));
    ADD_FAILURE() << "a file without x permission was started";
  } catch (const boost::system::system_error& e) {
    EXPECT_EQ(e.code().value(), EACCES) << e.what();
  }
}

// Many children at once, each with its own exit code: the shared spawn machinery (stack, error
// slot) keeps them apart.
TEST_F(ProcessTest, ManyChildrenEachReportTheirOwnExitCode) {
  std::vector<std::unique_ptr<child_process>> children;
  for (int i = 0; i < 50; ++i)
    children.push_back(std::make_unique<child_process>(
        ioc.get_executor(), options({"/bin/sh", "-c", "exit " + std::to_string(i)})));
  for (int i = 0; i < 50; ++i) {
    auto st = run_async(ioc, children[static_cast<std::size_t>(i)]->async_wait(), 10s);
    EXPECT_EQ(st.exit_code, i);
  }
}

}  // namespace
}  // namespace descprod
