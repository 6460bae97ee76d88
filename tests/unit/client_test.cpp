// Unit tests of the command-line client's pure parts: DESCprod's output formats (get-job lines,
// add-job -o file), the config-string commands and their exit codes, the output-dir rule, argument
// parsing and its errors, URL/token lookup, the SSE framing, the watch lines and runapp-parsltest's
// config and status lines. Commands are called in-process (they return their exit code).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>

#include "client/commands.hpp"
#include "client/common.hpp"
#include "client/format.hpp"
#include "client/http.hpp"
#include "client/parsltest.hpp"
#include "tests/support/support.hpp"
#include "workers/options.hpp"

namespace descprod::client {
namespace {

namespace json = boost::json;
using test::temp_dir;
using test::write_file;

// Runs a command function with argv and returns {exit code, stdout, stderr}.
struct run_result {
  int code = -1;
  std::string out, err;
};
run_result run(int (*fn)(int, char**), std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  run_result r;
  r.code = fn(static_cast<int>(args.size()), argv.data());
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  r.out = testing::internal::GetCapturedStdout();
  r.err = testing::internal::GetCapturedStderr();
  return r;
}

env_fn env_of(std::map<std::string, std::string> vars) {
  return [vars](const std::string& n) -> std::optional<std::string> {
    auto it = vars.find(n);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// A finished job as the gateway answers it (times with fractions, as Redis keeps them).
json::object finished_job() {
  return json::parse(R"({
    "id": 12, "parent": 7, "descname": "alice", "jobtype": "mysleep", "config": "1",
    "archive": 0, "host": "node1.example.org", "rundir": "/scratch/descprod-out/jobs/job000012",
    "pid": 4242, "create_time": 1709294400.25, "start_time": 1709294401.75,
    "update_time": 1709294465.2, "stop_time": 1709294465.2, "return_status": 0,
    "progress": "Done. I'm awake now.", "state": "done", "message": "I'm awake now.",
    "priority": 0, "attempt": 1, "max_attempts": 3, "worker": "w0",
    "queued_time": 1709294400.25, "dispatch_time": 1709294401.0})")
      .as_object();
}

// ---- get-job formatting ----------------------------------------------------------------------

// By default DESCprod's 18 fields only, progress last: scripts read it with `tail -1` (issue #16
// item 6).
TEST(ClientFormat, GetJobPrintsOnlyDescprodsFieldsWithProgressLast) {
  auto lines = job_field_lines(finished_job(), time_style::utc);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), "        progress: Done. I'm awake now.");
  EXPECT_EQ(lines.size(), 16u) << "the 18 less session and port, which this job has not";
  auto all = job_field_lines(finished_job(), time_style::utc, "", true);
  EXPECT_EQ(std::vector<std::string>(all.begin(), all.begin() + 16), lines) << "--all adds after progress";
}

TEST(ClientFormat, GetJobAllPrintsDescprodFieldsInOrderRightAlignedWithUtcTimesThenTheOthers) {
  auto lines = job_field_lines(finished_job(), time_style::utc, "", true);
  std::vector<std::string> expected = {
      "              id: 12",
      "          parent: 7",
      "        descname: alice",
      "         jobtype: mysleep",
      "          config: 1",
      "          howfig: ",  // DESCprod's job map held "" for an empty howfig
      "         archive: 0",
      "            host: node1.example.org",
      "          rundir: /scratch/descprod-out/jobs/job000012",
      "             pid: 4242",
      "     create_time: 2024-03-01 12:00:00 UTC",
      "      start_time: 2024-03-01 12:00:01 UTC",
      "     update_time: 2024-03-01 12:01:05 UTC",
      "       stop_time: 2024-03-01 12:01:05 UTC",
      "   return_status: 0",
      "        progress: Done. I'm awake now.",
      "           state: done",
      "         message: I'm awake now.",
      "        priority: 0",
      "         attempt: 1",
      "    max_attempts: 3",
      "          worker: w0",
      "     queued_time: 2024-03-01 12:00:00 UTC",
      "   dispatch_time: 2024-03-01 12:00:01 UTC",
  };
  EXPECT_EQ(lines, expected);
}

TEST(ClientFormat, EpochStylePrintsTimesAsWholeSeconds) {
  auto lines = job_field_lines(finished_job(), time_style::epoch);
  EXPECT_NE(std::find(lines.begin(), lines.end(), "     create_time: 1709294400"), lines.end());
  EXPECT_NE(std::find(lines.begin(), lines.end(), "      start_time: 1709294401"), lines.end());
  EXPECT_NE(std::find(lines.begin(), lines.end(), "       stop_time: 1709294465"), lines.end());
  for (const auto& l : lines)
    if (l.find("_time: ") != std::string::npos) {
      EXPECT_EQ(l.find('.'), std::string::npos) << l;
    }
}

TEST(ClientFormat, EveryLineIsKeyRightAlignedToSixteenThenColonSpace) {
  for (const auto& l : job_field_lines(finished_job(), time_style::utc, "", true)) {
    ASSERT_GE(l.size(), 18u) << l;
    EXPECT_EQ(l.substr(16, 2), ": ") << l;
    EXPECT_NE(l[15], ' ') << l;
  }
}

TEST(ClientFormat, AbsentFieldsAreLeftOutAndChildrenAreSummarised) {
  auto job = json::parse(R"({"id": 3, "descname": "bob", "jobtype": "parsltest", "config": "sleep-ntsk2",
      "howfig": "x", "progress": "Ready.", "state": "ready",
      "children": {"total": 3, "running": 1, "done": 2}})")
                 .as_object();
  EXPECT_EQ(job_field_lines(job, time_style::utc).back(), "        progress: Ready.") << "no children line";
  auto lines = job_field_lines(job, time_style::utc, "", true);
  std::vector<std::string> expected = {
      "              id: 3",         "        descname: bob",
      "         jobtype: parsltest", "          config: sleep-ntsk2",
      "          howfig: x",         "        progress: Ready.",
      "           state: ready",     "        children: 3 (running 1, done 2)"};
  EXPECT_EQ(lines, expected);
}

TEST(ClientFormat, StartJobLinesCarryTheCommandPrefix) {
  auto lines = job_field_lines(finished_job(), time_style::utc, "descprod-start-job:");
  EXPECT_EQ(lines.front(), "descprod-start-job:              id: 12");
  EXPECT_EQ(lines[9], "descprod-start-job:             pid: 4242");
}

TEST(ClientFormat, LinesParseTheWayApplicationsGrepThem) {
  // g3wfpipe: grep " id:" | sed 's/.*id: //' and grep rundir: | sed 's/ *rundir: //g'.
  auto lines = job_field_lines(finished_job(), time_style::utc);
  int id_lines = 0;
  for (const auto& l : lines) {
    if (l.find(" id:") != std::string::npos) {
      ++id_lines;
      EXPECT_EQ(l.substr(l.find("id: ") + 4), "12");
    }
    if (l.find("rundir:") != std::string::npos) {
      EXPECT_EQ(l.substr(l.find("rundir: ") + 8), "/scratch/descprod-out/jobs/job000012");
    }
  }
  EXPECT_EQ(id_lines, 1);
}

// ---- add-job -o file ---------------------------------------------------------------------------

TEST(ClientFormat, OutJsonHasDescprodFieldsRightAlignedEveryValueAQuotedStringTimesInUtc) {
  std::string text = outjson_text(finished_job());
  EXPECT_EQ(text,
            "{\n"
            "              \"id\": \"12\",\n"
            "          \"parent\": \"7\",\n"
            "        \"descname\": \"alice\",\n"
            "         \"jobtype\": \"mysleep\",\n"
            "          \"config\": \"1\",\n"
            "          \"howfig\": \"\",\n"
            "         \"archive\": \"0\",\n"
            "            \"host\": \"node1.example.org\",\n"
            "          \"rundir\": \"/scratch/descprod-out/jobs/job000012\",\n"
            "             \"pid\": \"4242\",\n"
            "     \"create_time\": \"2024-03-01 12:00:00 UTC\",\n"
            "      \"start_time\": \"2024-03-01 12:00:01 UTC\",\n"
            "     \"update_time\": \"2024-03-01 12:01:05 UTC\",\n"
            "       \"stop_time\": \"2024-03-01 12:01:05 UTC\",\n"
            "   \"return_status\": \"0\",\n"
            "        \"progress\": \"Done. I'm awake now.\"\n"
            "}\n");
  auto v = json::parse(text);
  for (const auto& kv : v.as_object()) EXPECT_TRUE(kv.value().is_string()) << kv.key();
}

TEST(ClientFormat, OutJsonEscapesQuotes) {
  auto job = json::parse(R"({"id": 1, "jobtype": "t", "config": "c", "progress": "say \"hi\""})").as_object();
  auto v = json::parse(outjson_text(job)).as_object();
  EXPECT_EQ(v.at("progress").as_string(), "say \"hi\"");
  EXPECT_EQ(v.at("howfig").as_string(), "");
}

// ---- the config-string commands ------------------------------------------------------------------

TEST(ClientConfigCommands, SplitConfigPrintsFieldsAndExitsWithCheckConfigCode) {
  auto r = run(split_config_main, {"descprod-split-config", "nam1:v11-nam2-nam3:v31:v32"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "nam1:v11 nam2 nam3:v31:v32\n");
  struct bad {
    std::string s;
    int code;
  };
  for (const auto& b : std::vector<bad>{{"a,b", 1},
                                        {"a----b", 2},
                                        {"a--b", 3},
                                        {"-ab", 4},
                                        {"ab-", 4},
                                        {":ab", 5},
                                        {"ab:", 5},
                                        {"", 9},
                                        {"a b", 1}}) {
    auto rb = run(split_config_main, {"descprod-split-config", b.s});
    EXPECT_EQ(rb.code, b.code) << "'" << b.s << "'";
    EXPECT_EQ(rb.out, "") << b.s;
  }
}

TEST(ClientConfigCommands, SplitConfigFieldSplitsOnColonAndRefusesDashes) {
  auto r = run(split_config_field_main, {"descprod-split-config-field", "ptenv:00:hom"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "ptenv 00 hom\n");
  auto dash = run(split_config_field_main, {"descprod-split-config-field", "a:b-c"});
  EXPECT_EQ(dash.code, 5);
  EXPECT_EQ(dash.out, "");
  EXPECT_EQ(run(split_config_field_main, {"descprod-split-config-field", "a::"}).code, 5);
}

TEST(ClientConfigCommands, SplitCompoundConfigSplitsOnThreeDashes) {
  auto r = run(split_compound_config_main, {"descprod-split-compound-config", "pmb-30-debug---ptenv:00-x"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "pmb-30-debug ptenv:00-x\n");
  EXPECT_EQ(run(split_compound_config_main, {"descprod-split-compound-config", "a--b---c"}).code, 3);
}

TEST(ClientConfigCommands, CheckConfigExitsWithTheCodeAndExplainsOnStderr) {
  EXPECT_EQ(run(check_config_main, {"descprod-check-config", "sleep-ttsk2-ntsk20"}).code, 0);
  auto r = run(check_config_main, {"descprod-check-config", "a--b"});
  EXPECT_EQ(r.code, 3);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("code 3"), std::string::npos) << r.err;
}

TEST(ClientConfigCommands, HelpIsExitZeroAndWrongArgumentCountIsAUsageError) {
  auto h = run(split_config_main, {"descprod-split-config", "-h"});
  EXPECT_EQ(h.code, 0);
  EXPECT_EQ(h.out, "Usage: descprod-split-config [-h] CONFIG\n");
  auto none = run(split_config_main, {"descprod-split-config"});
  EXPECT_EQ(none.code, 2);
  EXPECT_EQ(none.out, "");
  EXPECT_NE(none.err.find("Usage:"), std::string::npos);
  EXPECT_EQ(run(split_config_field_main, {"descprod-split-config-field", "a", "b"}).code, 2);
  EXPECT_EQ(run(check_config_main, {"descprod-check-config"}).code, 2);
}

// ---- output-dir ------------------------------------------------------------------------------

TEST(ClientOutputDir, BaseFollowsDescprodsRule) {
  EXPECT_EQ(output_base_dir(env_of({{"DESCPROD_OUTPUT_DIR", "/o"}, {"PSCRATCH", "/p"}})), "/o");
  EXPECT_EQ(output_base_dir(env_of({{"PSCRATCH", "/p"}, {"SCRATCH", "/s"}, {"HOME", "/h"}})),
            "/p/descprod-out");
  EXPECT_EQ(output_base_dir(env_of({{"PSCRATCH", ""}, {"SCRATCH", "/s"}, {"HOME", "/h"}})),
            "/s/descprod-out");
  EXPECT_EQ(output_base_dir(env_of({{"DESCPROD_OUTPUT_DIR", ""}, {"HOME", "/h"}})), "/h/descprod-out");
  EXPECT_EQ(output_base_dir(env_of({})), "./descprod-out");
}

TEST(ClientOutputDir, BaseIsTheSameRuleTheWorkerUses) {
  std::vector<std::map<std::string, std::string>> cases = {
      {{"DESCPROD_OUTPUT_DIR", "/o"}}, {{"SCRATCH", "/s"}, {"HOME", "/h"}}, {{"HOME", "/h"}}, {}};
  for (const auto& vars : cases) {
    workers::host_facts f;
    auto get = [&](const char* n) { return vars.count(n) ? vars.at(n) : std::string(); };
    f.descprod_output_dir = get("DESCPROD_OUTPUT_DIR");
    f.pscratch = get("PSCRATCH");
    f.scratch = get("SCRATCH");
    f.home = get("HOME");
    EXPECT_EQ(output_base_dir(env_of(vars)), workers::default_output_dir(f));
  }
}

TEST(ClientOutputDir, GetCreateAndCheckPrintTheDirectory) {
  temp_dir d;
  ::setenv("DESCPROD_OUTPUT_DIR", d.file("out").c_str(), 1);
  auto get = run(output_dir_main, {"descprod-output-dir", "get", "jobs/job000012"});
  EXPECT_EQ(get.code, 0);
  EXPECT_EQ(get.out, d.file("out") + "/jobs/job000012\n");
  auto bare = run(output_dir_main, {"descprod-output-dir", "get"});
  EXPECT_EQ(bare.out, d.file("out") + "\n");  // the base itself
  EXPECT_EQ(run(output_dir_main, {"descprod-output-dir", "check", "jobs"}).code, 1);
  auto create = run(output_dir_main, {"descprod-output-dir", "create", "jobs"});
  EXPECT_EQ(create.code, 0);
  EXPECT_EQ(create.out, d.file("out") + "/jobs\n");
  EXPECT_NE(create.err.find("INFO: Created"), std::string::npos);
  EXPECT_TRUE(std::filesystem::is_directory(d.file("out/jobs")));
  EXPECT_EQ(run(output_dir_main, {"descprod-output-dir", "check", "jobs"}).code, 0);
  EXPECT_EQ(run(output_dir_main, {"descprod-output-dir", "bogus"}).code, 2);
  ::unsetenv("DESCPROD_OUTPUT_DIR");
}

// ---- argument parsing ----------------------------------------------------------------------------

TEST(ClientArgs, OptionsMayBeLongShortGroupedOrInline) {
  std::vector<option_spec> specs = {
      {'w', "wait", false}, {'p', "parent", true}, {0, "url", true}, {'f', "", false}};
  auto a = parse_args({"-wf", "12", "--url=http://x:1", "-p", "5", "more", "--", "-z"}, specs);
  EXPECT_TRUE(a.has("wait"));
  EXPECT_TRUE(a.has("f"));
  EXPECT_EQ(a.value("url"), "http://x:1");
  EXPECT_EQ(a.value("parent"), "5");
  EXPECT_EQ(a.positional, (std::vector<std::string>{"12", "more", "-z"}));
  EXPECT_EQ(parse_args({"-p7"}, specs).value("parent"), "7");
}

TEST(ClientArgs, UnknownOptionsAndMissingValuesAreUsageErrors) {
  std::vector<option_spec> specs = {{'p', "parent", true}, {0, "all", false}};
  for (const auto& args :
       std::vector<std::vector<std::string>>{{"-x"}, {"--nope"}, {"-p"}, {"--parent"}, {"--all=1"}}) {
    try {
      parse_args(args, specs);
      ADD_FAILURE() << args[0] << " was accepted";
    } catch (const client_error& e) {
      EXPECT_EQ(e.code, exit_code::usage);
    }
  }
  EXPECT_THROW(parse_job_id("0"), client_error);
  EXPECT_THROW(parse_job_id("12a"), client_error);
  EXPECT_THROW(parse_job_id("-3"), client_error);
  EXPECT_EQ(parse_job_id("0042"), 42);
  EXPECT_THROW(parse_int("1001", -1000, 1000, "priority"), client_error);
  EXPECT_EQ(parse_int("-5", -1000, 1000, "priority"), -5);
}

TEST(ClientArgs, CommandsExitTwoOnUsageErrorsBeforeAnyNetwork) {
  struct c {
    int (*fn)(int, char**);
    std::vector<std::string> args;
  };
  std::vector<c> cases = {
      {get_job_main, {"descprod-get-job"}},
      {get_job_main, {"descprod-get-job", "abc"}},
      {get_job_main, {"descprod-get-job", "--bogus", "5"}},
      {get_job_main, {"descprod-get-job", "1", "u", "http://x", "extra"}},
      {add_job_main, {"descprod-add-job"}},
      {add_job_main, {"descprod-add-job", "-p", "x", "mysleep", "1"}},
      {add_job_main, {"descprod-add-job", "-d", "mysleep", "1"}},
      {submit_main, {"descprod-submit", "mysleep"}},
      {submit_main, {"descprod-submit", "--priority", "high", "mysleep", "1"}},
      {list_jobs_main, {"descprod-list-jobs", "--state", "sleeping"}},
      {list_jobs_main, {"descprod-list-jobs", "--limit", "-1"}},
      {list_jobs_main, {"descprod-list-jobs", "extra"}},
      {cancel_job_main, {"descprod-cancel-job"}},
      {cancel_job_main, {"descprod-cancel-job", "1", "x"}},
      {watch_main, {"descprod-watch"}},
      {start_job_main, {"descprod-start-job"}},
      {start_job_main, {"descprod-start-job", "-x", "5"}},
      {login_main, {"descprod-login", "extra"}},
      {version_main, {"descprod-version", "extra"}},
  };
  for (auto& k : cases) {
    auto r = run(k.fn, k.args);
    std::string joined;
    for (const auto& s : k.args) joined += s + " ";
    EXPECT_EQ(r.code, exit_code::usage) << joined << "\n" << r.err;
    EXPECT_NE(r.err.find(k.args[0] + ": ERROR: "), std::string::npos) << joined << "\n" << r.err;
    EXPECT_EQ(r.out, "") << joined;
  }
}

TEST(ClientArgs, EveryCommandHasHelp) {
  for (auto fn :
       {get_job_main, add_job_main, submit_main, list_jobs_main, cancel_job_main, watch_main, start_job_main,
        login_main, version_main, output_dir_main, split_config_main, split_config_field_main,
        split_compound_config_main, check_config_main, parsltest_main, release_job_main, pmbs_main}) {
    auto r = run(fn, {"cmd", "-h"});
    EXPECT_EQ(r.code, 0);
    EXPECT_NE(r.out.find("Usage: "), std::string::npos) << r.out;
    auto l = run(fn, {"cmd", "--help"});
    EXPECT_EQ(l.code, 0);
  }
}

// descprod-pmbs refuses as DESCprod's runapp-pmbs did, before it reaches any server.
TEST(ClientArgs, PmbsRefusesAPmbJobtypeAndAHowfigNotStartingPmbsWithDescprodsCodes) {
  temp_dir d;
  auto old = std::filesystem::current_path();
  std::filesystem::current_path(d.path());
  auto r = run(pmbs_main, {"descprod-pmbs"});
  EXPECT_EQ(r.code, exit_code::usage) << r.err;
  EXPECT_NE(r.err.find("config.json"), std::string::npos) << r.err;
  test::write_file(d.file("config.json"), R"({"id":"7","jobtype":"pmbx","config":"c","howfig":"pmbs-30"})");
  r = run(pmbs_main, {"descprod-pmbs"});
  EXPECT_EQ(r.code, 21) << r.err;
  EXPECT_NE(r.err.find("Invalid job type: pmbx"), std::string::npos) << r.err;
  for (const char* h : {"pmb-30-debug", "ptenv:00,pmbs-30", "pmbs-0"}) {
    test::write_file(d.file("config.json"),
                     std::string(R"({"id":"7","jobtype":"g3wfpipe","config":"c","howfig":")") + h + "\"}");
    r = run(pmbs_main, {"descprod-pmbs"});
    EXPECT_EQ(r.code, 22) << h << ": " << r.err;
    EXPECT_NE(r.err.find("Invalid howfig"), std::string::npos) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(d.file("subjob-config.json")));
  std::filesystem::current_path(old);
}

TEST(ClientArgs, MissingTokenIsExitFourAndUnreachableServerExitThree) {
  temp_dir home;
  const char* old_home = std::getenv("HOME");
  std::string saved_home = old_home ? old_home : "";
  ::setenv("HOME", home.path().c_str(), 1);
  ::unsetenv("XDG_CONFIG_HOME");
  ::unsetenv("DESCPROD_TOKEN");
  auto no_token = run(get_job_main, {"descprod-get-job", "--url", "http://127.0.0.1:1", "5"});
  EXPECT_EQ(no_token.code, exit_code::bad_token) << no_token.err;
  write_file(home.file("tok"), "dp_x\n");
  auto refused = run(get_job_main, {"descprod-get-job", "--token-file", home.file("tok"), "5", "alice",
                                    "http://127.0.0.1:1"});
  EXPECT_EQ(refused.code, exit_code::unreachable) << refused.err;
  EXPECT_NE(refused.err.find("Unable to reach server at http://127.0.0.1:1"), std::string::npos)
      << refused.err;
  EXPECT_EQ(run(get_job_main, {"descprod-get-job", "--token-file", home.file("nope"), "5"}).code,
            exit_code::bad_token);
  EXPECT_EQ(
      run(get_job_main, {"descprod-get-job", "--url", "ftp://x", "--token-file", home.file("tok"), "5"}).code,
      exit_code::usage);
  ::setenv("HOME", saved_home.c_str(), 1);
}

// ---- URL and token lookup ------------------------------------------------------------------------

TEST(ClientSettings, UrlComesFromFlagThenEnvironmentThenLoginFileThenDefault) {
  temp_dir d;
  auto env = env_of({{"HOME", d.path()}});
  EXPECT_EQ(resolve_url(std::nullopt, env), "http://127.0.0.1:8080");
  std::filesystem::create_directories(d.file(".config/descprod"));
  write_file(d.file(".config/descprod/url"), "https://descprod.example.org\n");
  EXPECT_EQ(resolve_url(std::nullopt, env), "https://descprod.example.org");
  auto env2 = env_of({{"HOME", d.path()}, {"DESCPROD_URL", "http://h:1"}});
  EXPECT_EQ(resolve_url(std::nullopt, env2), "http://h:1");
  EXPECT_EQ(resolve_url(std::string("http://flag:2"), env2), "http://flag:2");
}

TEST(ClientSettings, TokenComesFromFileFlagThenEnvironmentThenLoginFile) {
  temp_dir d;
  auto env = env_of({{"XDG_CONFIG_HOME", d.file("xdg")}});
  EXPECT_EQ(resolve_token(std::nullopt, env), std::nullopt);
  std::filesystem::create_directories(d.file("xdg/descprod"));
  write_file(d.file("xdg/descprod/token"), "dp_stored\n");
  EXPECT_EQ(resolve_token(std::nullopt, env), "dp_stored");
  auto env2 = env_of({{"XDG_CONFIG_HOME", d.file("xdg")}, {"DESCPROD_TOKEN", "dp_env"}});
  EXPECT_EQ(resolve_token(std::nullopt, env2), "dp_env");
  write_file(d.file("f"), "  dp_file \n");
  EXPECT_EQ(resolve_token(d.file("f"), env2), "dp_file");
}

TEST(ClientSettings, ParseUrlAcceptsHttpAndHttpsOnly) {
  auto u = parse_url("https://descprod.example.org/base/");
  ASSERT_TRUE(u);
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->port, "443");
  EXPECT_EQ(u->base, "/base");
  EXPECT_EQ(u->text(), "https://descprod.example.org/base");
  auto p = parse_url("http://127.0.0.1:8080");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->host, "127.0.0.1");
  EXPECT_EQ(p->port, "8080");
  EXPECT_EQ(p->text(), "http://127.0.0.1:8080");
  EXPECT_EQ(parse_url("http://[::1]:9/")->host, "::1");
  for (const char* bad :
       {"127.0.0.1:8080", "ftp://x", "http://", "http://h:0", "http://h:99999", "http://h:x"})
    EXPECT_FALSE(parse_url(bad)) << bad;
}

TEST(ClientSettings, HttpStatusesMapToExitCodes) {
  auto reply = [](int status, const char* body) {
    api_reply r;
    r.status = status;
    r.raw = body;
    boost::system::error_code ec;
    r.body = json::parse(r.raw, ec);
    return r;
  };
  EXPECT_EQ(error_for(reply(401, R"({"error":"unauthorized","detail":"unknown token"})")).code, 4);
  EXPECT_EQ(error_for(reply(403, R"({"error":"forbidden","detail":"job token"})")).code, 4);
  auto nf = error_for(reply(404, R"({"error":"not_found","detail":"job 77 not found"})"));
  EXPECT_EQ(nf.code, 1);
  EXPECT_STREQ(nf.what(), "job 77 not found");
  EXPECT_EQ(error_for(reply(409, R"({"error":"conflict","detail":"job 3 is done"})")).code, 1);
  EXPECT_EQ(error_for(reply(503, "not json")).code, 1);
  EXPECT_NE(std::string(error_for(reply(500, "boom")).what()).find("boom"), std::string::npos);
}

// ---- Server-Sent Events framing ------------------------------------------------------------------

TEST(ClientSse, EventsSurviveArbitraryChunkingAndLineEnds) {
  std::string stream =
      "retry: 1000\n\n"
      ": keepalive\n\n"
      "id: 1-0\nevent: job\ndata: {\"id\":5,\"state\":\"running\"}\n\n"
      "id: 2-0\r\nevent: job\r\ndata: {\"id\":5,\r\ndata: \"state\":\"done\"}\r\n\r\n";
  for (std::size_t chunk : {1u, 2u, 3u, 7u, 1000u}) {
    sse_parser p;
    std::vector<sse_event> out;
    for (std::size_t i = 0; i < stream.size(); i += chunk)
      p.feed(std::string_view(stream).substr(i, chunk), out);
    ASSERT_EQ(out.size(), 2u) << "chunk " << chunk;
    EXPECT_EQ(out[0].id, "1-0");
    EXPECT_EQ(out[0].event, "job");
    EXPECT_EQ(out[0].data, "{\"id\":5,\"state\":\"running\"}");
    EXPECT_EQ(out[1].id, "2-0");
    EXPECT_EQ(out[1].data, "{\"id\":5,\n\"state\":\"done\"}");
  }
}

// ---- watch, list and progress text ---------------------------------------------------------------

TEST(ClientWatch, LineShowsABarWhenCountsAreKnownElseStateAndMessage) {
  EXPECT_EQ(watch_line(12, "running", done_total{5, 20}, "[5/20]   15/20 tasks remaining: ..."),
            "      12 running    [######------------------]  25% 5/20 15/20 tasks remaining: ...");
  EXPECT_EQ(watch_line(12, "ready", std::nullopt, ""), "      12 ready");
  EXPECT_EQ(watch_line(7, "running", std::nullopt, "I'm sleeping for 3 seconds."),
            "       7 running    I'm sleeping for 3 seconds.");
  EXPECT_EQ(watch_line(7, "done", done_total{20, 20}, "[20/20] All 20 tasks complete"),
            "       7 done       [########################] 100% 20/20 All 20 tasks complete");
  EXPECT_EQ(watch_line(7, "running", std::nullopt, "abcdefghijklmnopqrstuvwxyz", 25).size(), 25u);
}

TEST(ClientWatch, ProgressMessageDropsDescprodsStatePrefix) {
  EXPECT_EQ(progress_message("Running. [3/20] x"), "[3/20] x");
  EXPECT_EQ(progress_message("Done."), "");
  EXPECT_EQ(progress_message("Process received signal 9. killed here"), "killed here");
  EXPECT_EQ(progress_message("Cancelled. by alice"), "by alice");
  EXPECT_EQ(progress_message("odd"), "odd");
  auto c = message_counts("[3/20] x");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->done, 3);
  EXPECT_EQ(c->total, 20);
  EXPECT_FALSE(message_counts("3/20"));
}

TEST(ClientList, DurationsAndTableLookLikeDescprods) {
  EXPECT_EQ(duration_text(0), "0:00");
  EXPECT_EQ(duration_text(65.9), "1:05");
  EXPECT_EQ(duration_text(3600 + 61), "1:01:01");
  auto job = json::parse(R"({"start_time": 100.5, "stop_time": 165.6})").as_object();
  EXPECT_EQ(job_duration(job, 1000), "1:05");
  auto running = json::parse(R"({"start_time": 100})").as_object();
  EXPECT_EQ(job_duration(running, 130), "0:30");
  EXPECT_EQ(job_duration(json::object(), 130), "");
  EXPECT_EQ(render_table({"ID", "Type"}, {{"1", "mysleep"}, {"100", "x"}}),
            "ID   Type\n"
            "1    mysleep\n"
            "100  x\n");
}

// ---- runapp-parsltest ----------------------------------------------------------------------------

TEST(Parsltest, ConfigParsesDescprodStyleFields) {
  std::string why;
  auto c = parsltest::parse_config("wq-sleep-ttsk2-ntsk20-nwrk4-mtsk1-dsam5", why);
  ASSERT_TRUE(c) << why;
  EXPECT_EQ(c->ttsk_s, 2);
  EXPECT_EQ(c->ntsk, 20);
  EXPECT_EQ(c->nwrk, 4);
  EXPECT_FALSE(c->fanout);
  EXPECT_FALSE(c->fail_type);
  auto f = parsltest::parse_config("fail-ntsk5-nfail2-fanout", why);
  ASSERT_TRUE(f) << why;
  EXPECT_TRUE(f->fail_type);
  EXPECT_EQ(f->nfail, 2);
  EXPECT_TRUE(f->fanout);
  for (const char* bad : {"sleep-bogus", "ntsk0", "ntskx", "a--b", "nwrk5000", "ntsk2-nfail3", ""})
    EXPECT_FALSE(parsltest::parse_config(bad, why)) << bad;
}

TEST(Parsltest, DurationsSpreadLinearlyFromHalfToFullAndAreShuffled) {
  std::string why;
  auto c = parsltest::parse_config("sleep-ttsk2-ntsk5", why);
  std::mt19937 rng(1);
  auto d = parsltest::task_durations_ms(*c, rng);
  auto sorted = d;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<long long>{1000, 1250, 1500, 1750, 2000}));
  auto one = parsltest::parse_config("ttsk4-ntsk1", why);
  EXPECT_EQ(parsltest::task_durations_ms(*one, rng), std::vector<long long>{2000});
  auto fixed = parsltest::parse_config("tskms300-ntsk3", why);
  EXPECT_EQ(parsltest::task_durations_ms(*fixed, rng), (std::vector<long long>{300, 300, 300}));
}

TEST(Parsltest, FailingTasksAndChildConfigs) {
  std::string why;
  EXPECT_EQ(parsltest::failing_tasks(*parsltest::parse_config("ntsk3-nfail1", why)),
            (std::vector<bool>{true, false, false}));
  EXPECT_EQ(parsltest::failing_tasks(*parsltest::parse_config("fail-ntsk2", why)),
            (std::vector<bool>{true, true}));
  EXPECT_EQ(parsltest::failing_tasks(*parsltest::parse_config("ntsk2", why)),
            (std::vector<bool>{false, false}));
  EXPECT_EQ(parsltest::child_config(1500, false), "sleep-tskms1500-ntsk1-nwrk1");
  EXPECT_EQ(parsltest::child_config(20, true), "fail-tskms20-ntsk1-nwrk1");
  EXPECT_TRUE(parsltest::parse_config(parsltest::child_config(20, true), why));
}

TEST(Parsltest, StatusLinesCarryDoneTotalAndDescprodsWording) {
  parsltest::counts n;
  n.total = 20;
  n.done = 8;
  n.running = 4;
  n.waiting = 8;
  EXPECT_EQ(parsltest::status_line(n),
            "[8/20]   12/20 tasks remaining:    8 exec_done;    4 running,    8 launched");
  n.failed = 1;
  n.waiting = 7;
  EXPECT_EQ(parsltest::status_line(n),
            "[9/20]   11/20 tasks remaining:    8 exec_done,    1 failed;    4 running,    7 launched");
  parsltest::counts all;
  all.total = all.done = 20;
  EXPECT_EQ(parsltest::final_line(all), "[20/20] All 20 tasks complete:   20 exec_done");
  all.done = 18;
  all.failed = 2;
  EXPECT_EQ(parsltest::final_line(all), "[20/20] 2 of 20 tasks failed:   18 exec_done,    2 failed");
}

}  // namespace
}  // namespace descprod::client
