// End-to-end tests of the command-line client: the real descprod-* binaries from DESCPROD_BIN_DIR
// against a real service (redis-server, descprod-daemon, descprod-gateway and 0..n workers: the
// fixture of tests/support/service.hpp): submit, list, get (DESCprod's exact format), add-job, cancel, watch,
// login, and descprod-start-job claiming and running jobs on this machine.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <regex>
#include <set>
#include <thread>

#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

struct cmd_result {
  int code = -1000;  // exit code, -N for signal N, -1000 when it did not end by the deadline
  std::string out, err;
};

// The service (tests/support/service.hpp) with the parsltest application, and the client's side:
// alice's environment for the commands, a private HOME and output directory, and each command's
// stdout and stderr kept apart.
service_options client_options(int workers, int slots) {
  service_options o;
  o.workers = workers;
  o.slots = slots;
  o.apps = "  - name: parsltest\n    pattern: \"^[a-z0-9:-]+$\"\n";
  return o;
}

class client_service : public service {
 public:
  explicit client_service(int workers = 1, int slots = 2)
      : service(client_options(workers, slots)), client_out(dir.file("client-out")), home(dir.file("home")) {
    fs::create_directories(home);
    path = env().front().second;
  }

  // The client's environment: this service, alice's token, a private HOME and output dir.
  std::vector<std::pair<std::string, std::string>> client_env(const std::string& token = "") const {
    return {{"PATH", path},  {"DESCPROD_URL", url()}, {"DESCPROD_TOKEN", token.empty() ? alice_token : token},
            {"HOME", home},  {"XDG_CONFIG_HOME", ""}, {"DESCPROD_OUTPUT_DIR", client_out},
            {"TERM", "dumb"}};
  }

  // Starts a client command (by name, from the bin dir) with stdout and stderr kept apart.
  std::unique_ptr<process> start(const std::vector<std::string>& args,
                                 std::vector<std::pair<std::string, std::string>> env = {}) {
    int n = ++commands_;
    std::string out = dir.file("cmd" + std::to_string(n) + ".out");
    std::string err = dir.file("cmd" + std::to_string(n) + ".err");
    std::vector<std::string> argv = {"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>\"$DESCPROD_TEST_ERR\"",
                                     bin(args[0])};
    argv.insert(argv.end(), args.begin() + 1, args.end());
    if (env.empty()) env = client_env();
    env.emplace_back("DESCPROD_TEST_ERR", err);
    auto p = std::make_unique<process>(argv, env, out);
    outputs_[p.get()] = {out, err};
    return p;
  }
  cmd_result finish(process& p, std::chrono::milliseconds timeout = 60s) {
    cmd_result r;
    auto st = p.wait_exit(timeout);
    if (!st) p.stop();
    r.code = st ? *st : -1000;
    auto [out, err] = outputs_[&p];
    r.out = fs::exists(out) ? read_file(out) : "";
    r.err = fs::exists(err) ? read_file(err) : "";
    return r;
  }
  cmd_result run(const std::vector<std::string>& args,
                 std::vector<std::pair<std::string, std::string>> env = {},
                 std::chrono::milliseconds timeout = 60s) {
    auto p = start(args, std::move(env));
    return finish(*p, timeout);
  }

  std::string client_out, home, path;

 private:
  int commands_ = 0;
  std::map<process*, std::pair<std::string, std::string>> outputs_;
};

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < s.size()) {
    auto nl = s.find('\n', start);
    if (nl == std::string::npos) nl = s.size();
    out.push_back(s.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

// DESCprod's get_job.py, written out independently of the client's code: data_names order,
// f"{key:>16}: {val}", times as f"{sdate(val)} UTC".
std::vector<std::string> descprod_lines(const json::object& job) {
  static const std::vector<std::string> order = {
      "id",         "parent",      "descname",  "jobtype",       "config", "howfig",
      "session",    "archive",     "host",      "rundir",        "pid",    "create_time",
      "start_time", "update_time", "stop_time", "return_status", "port",   "progress"};
  std::vector<std::string> out;
  for (const auto& key : order) {
    std::string val;
    auto it = job.find(key);
    if (it == job.end()) {
      if (key != "howfig") continue;
      val = "";
    } else if (key.size() > 5 && key.substr(key.size() - 5) == "_time") {
      std::time_t t = static_cast<std::time_t>(it->value().to_number<double>());
      char buf[64];
      std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::gmtime(&t));
      val = std::string(buf) + " UTC";
    } else if (it->value().is_string()) {
      val = std::string(it->value().as_string());
    } else {
      val = json::serialize(it->value());
    }
    char head[32];
    std::snprintf(head, sizeof head, "%16s: ", key.c_str());
    out.push_back(head + val);
  }
  return out;
}

long long id_line(const std::string& out) {
  // As applications parse it: grep " id:" | sed 's/.*id: //'
  for (const auto& l : lines_of(out))
    if (l.find(" id:") != std::string::npos) return std::stoll(l.substr(l.find("id: ") + 4));
  return -1;
}

// descprod-list-jobs finds jobs (--search, --sort, --since) and pages by cursor: 2,500 jobs come
// back whole, each once, in the order asked.
TEST(ClientE2E, ListJobsSearchesSortsAndPagesThroughEveryJob) {
  client_service s(0);
  std::string body = R"({"jobs":[)";
  for (int i = 0; i < 2500; ++i)
    body += std::string(i ? "," : "") + R"({"jobtype":"mysleep","config":")" + std::to_string(i) + R"("})";
  body += "]}";
  ASSERT_EQ(s.call("POST", "/api/jobs/bulk", body).status, 201);
  auto all = s.run({"descprod-list-jobs", "--limit", "0", "--json"});
  ASSERT_EQ(all.code, 0) << all.err;
  auto lines = lines_of(all.out);
  ASSERT_EQ(lines.size(), 2500u);
  std::set<long long> seen;
  long long prev = 1LL << 62;
  for (const auto& l : lines) {
    long long id = json::parse(l).as_object().at("id").as_int64();
    EXPECT_LT(id, prev);  // newest first, no repeat
    prev = id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 2500u);
  auto oldest = s.run({"descprod-list-jobs", "--sort", "id", "--limit", "3", "--json"});
  ASSERT_EQ(lines_of(oldest.out).size(), 3u) << oldest.err;
  EXPECT_EQ(json::parse(lines_of(oldest.out)[0]).as_object().at("id").as_int64(), *seen.begin());
  // --search: config "1234" and the 12340..12349 style matches among 0..2499: 1234 only.
  auto found = s.run({"descprod-list-jobs", "--search", "1234", "--json"});
  ASSERT_EQ(found.code, 0) << found.err;
  ASSERT_EQ(lines_of(found.out).size(), 1u) << found.out;
  EXPECT_EQ(json::parse(lines_of(found.out)[0]).as_object().at("config").as_string(), "1234");
  auto spaced = s.run({"descprod-list-jobs", "--search", "a b&c=d", "--json"});
  EXPECT_EQ(spaced.code, 0) << spaced.err;  // encoded, so the gateway sees one parameter
  EXPECT_EQ(spaced.out, "");
  EXPECT_EQ(lines_of(s.run({"descprod-list-jobs", "--since", "2000-01-01", "--limit", "0"}).out).size(),
            2501u);
  EXPECT_EQ(lines_of(s.run({"descprod-list-jobs", "--until", "2000-01-01"}).out).size(), 1u);  // the header
  auto bad = s.run({"descprod-list-jobs", "--sort", "size"});
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("sort must be one of"), std::string::npos) << bad.err;
}

TEST(ClientE2E, SubmitListGetAndCancelAgainstTheService) {
  client_service s(0);
  auto sub = s.run({"descprod-submit", "mysleep", "30", "--priority", "5"});
  ASSERT_EQ(sub.code, 0) << sub.err;
  long long id = std::stoll(sub.out);
  EXPECT_EQ(sub.out, std::to_string(id) + "\n");

  auto list = s.run({"descprod-list-jobs"});
  ASSERT_EQ(list.code, 0) << list.err;
  auto rows = lines_of(list.out);
  ASSERT_EQ(rows.size(), 2u) << list.out;
  EXPECT_EQ(rows[0].substr(0, 2), "ID");
  EXPECT_NE(rows[0].find("Progress"), std::string::npos);
  EXPECT_TRUE(std::regex_search(rows[1], std::regex("^" + std::to_string(id) + " +mysleep +30 +ready")))
      << rows[1];
  EXPECT_EQ(lines_of(s.run({"descprod-list-jobs", "--state", "done"}).out).size(), 1u);

  auto get = s.run({"descprod-get-job", std::to_string(id)});
  ASSERT_EQ(get.code, 0) << get.err;
  EXPECT_EQ(lines_of(get.out), descprod_lines(s.job(id)));
  EXPECT_EQ(id_line(get.out), id);
  auto show = s.run({"descprod-show-job", std::to_string(id)});
  EXPECT_EQ(show.out, get.out);
  auto js = s.run({"descprod-get-job", "--json", std::to_string(id)});
  EXPECT_EQ(json::parse(js.out).as_object().at("id").as_int64(), id);

  auto missing = s.run({"descprod-get-job", "999999"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_EQ(missing.out, "");
  EXPECT_NE(missing.err.find("descprod-get-job: ERROR: "), std::string::npos) << missing.err;
  auto as_bob = s.run({"descprod-get-job", std::to_string(id)}, s.client_env(s.bob_token));
  EXPECT_EQ(as_bob.code, 1) << "another user's job is unknown to bob";
  auto bad_token = s.run({"descprod-get-job", std::to_string(id)}, s.client_env("dp_not-a-token"));
  EXPECT_EQ(bad_token.code, 4) << bad_token.err;

  ASSERT_TRUE(s.has_route("POST", "/api/jobs/999999999/cancel")) << "no cancel route";
  auto cancel = s.run({"descprod-cancel-job", std::to_string(id)});
  EXPECT_EQ(cancel.code, 0) << cancel.err;
  EXPECT_EQ(cancel.out, "Job " + std::to_string(id) + " cancelled.\n");
  EXPECT_EQ(s.state(id), "cancelled");
  auto again = s.run({"descprod-cancel-job", std::to_string(id)});
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.err.find("was not cancelled"), std::string::npos) << again.err;
  auto after = s.run({"descprod-get-job", std::to_string(id)});
  EXPECT_EQ(lines_of(after.out).back(), "        progress: Cancelled. Cancelled by alice before it started.")
      << "progress last, for `tail -1`";
  EXPECT_EQ(after.out.find("state:"), std::string::npos) << "DESCprod's fields only";
  auto all = s.run({"descprod-get-job", "--all", std::to_string(id)});
  EXPECT_NE(all.out.find("           state: cancelled\n"), std::string::npos) << all.out;
}

TEST(ClientE2E, GetJobOfAFinishedJobMatchesDescprodsFormatLineByLine) {
  client_service s(1);
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  ASSERT_TRUE(s.wait_terminal(id));
  auto job = s.job(id);
  ASSERT_EQ(std::string(job.at("state").as_string()), "done");
  auto get = s.run({"descprod-get-job", std::to_string(id)});
  ASSERT_EQ(get.code, 0) << get.err;
  std::cout << "[ capture  ] descprod-get-job " << id << "\n" << get.out;
  auto lines = lines_of(get.out);
  EXPECT_EQ(lines, descprod_lines(job));
  // The lines applications grep.
  EXPECT_EQ(lines[0], std::string(14, ' ') + "id: " + std::to_string(id));
  EXPECT_NE(std::find(lines.begin(), lines.end(), "        progress: Done. I'm awake now."), lines.end());
  EXPECT_NE(std::find(lines.begin(), lines.end(), "   return_status: 0"), lines.end());
  EXPECT_NE(
      std::find(lines.begin(), lines.end(), "          rundir: " + std::string(job.at("rundir").as_string())),
      lines.end());
  EXPECT_TRUE(std::regex_search(
      get.out, std::regex("\n      start_time: 20[0-9]{2}-[0-9]{2}-[0-9]{2} [0-9:]{8} UTC\n")));
  auto epoch = s.run({"descprod-get-job", "--epoch", std::to_string(id)});
  EXPECT_TRUE(std::regex_search(epoch.out, std::regex("\n      start_time: [0-9]{10}\n"))) << epoch.out;
}

TEST(ClientE2E, AddJobPrintsSuccessAndFieldsAndWritesTheOutFile) {
  client_service s(0);
  long long parent = s.submit(R"({"jobtype":"mysleep","config":"30"})");
  std::string file = s.dir.file("child.json");
  auto add = s.run({"descprod-add-job", "-p", std::to_string(parent), "-o", file, "mysleep", "2"});
  ASSERT_EQ(add.code, 0) << add.err;
  auto lines = lines_of(add.out);
  ASSERT_FALSE(lines.empty());
  long long child = id_line(add.out);
  ASSERT_GT(child, parent);
  EXPECT_EQ(lines[0], "Success: Added job alice/" + std::to_string(child));
  std::vector<std::string> fields(lines.begin() + 1, lines.end());
  EXPECT_EQ(fields, descprod_lines(s.job(child)));
  EXPECT_NE(add.out.find("          parent: " + std::to_string(parent) + "\n"), std::string::npos);
  auto f = json::parse(read_file(file)).as_object();
  EXPECT_EQ(f.at("id").as_string(), std::to_string(child));
  EXPECT_EQ(f.at("parent").as_string(), std::to_string(parent));
  EXPECT_EQ(f.at("config").as_string(), "2");
  for (const auto& kv : f) EXPECT_TRUE(kv.value().is_string()) << kv.key();
  EXPECT_TRUE(std::regex_match(std::string(f.at("create_time").as_string()),
                               std::regex("[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} UTC")))
      << f.at("create_time");
  EXPECT_NE(read_file(file).find("{\n" + std::string(14, ' ') + "\"id\": "), std::string::npos)
      << "keys right-aligned";
  EXPECT_EQ(s.job(child).at("parent").as_int64(), parent);

  auto bad = s.run({"descprod-add-job", "-p", std::to_string(parent), "nosuchapp", "1"});
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("nosuchapp"), std::string::npos) << bad.err;
  auto no_parent = s.run({"descprod-add-job", "-p", "999999", "mysleep", "1"});
  EXPECT_EQ(no_parent.code, 1) << no_parent.err;
}

TEST(ClientE2E, StartJobWaitRunsTheJobHereAndItReachesDone) {
  client_service s(0);
  ASSERT_TRUE(s.has_route("POST", "/api/jobs/999999999/claim")) << "no claim route";
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  auto start = s.run({"descprod-start-job", "-w", std::to_string(id)});
  ASSERT_EQ(start.code, 0) << start.out << start.err;
  auto lines = lines_of(start.out);
  char name[32];
  std::snprintf(name, sizeof name, "job%06lld", id);
  std::string rundir = s.client_out + "/jobs/" + name;
  EXPECT_EQ(lines[0], "Starting job " + std::to_string(id) + " for alice in " + rundir);
  EXPECT_EQ(lines[1], "descprod-start-job: Started job " + std::to_string(id) + ":");
  EXPECT_EQ(lines[2], "descprod-start-job:" + std::string(14, ' ') + "id: " + std::to_string(id));
  EXPECT_NE(start.out.find("descprod-start-job:          rundir: " + rundir + "\n"), std::string::npos)
      << start.out;
  EXPECT_TRUE(
      std::regex_search(start.out, std::regex("descprod-start-job: Job process [0-9]+ returned code: 0\n")))
      << start.out;
  ASSERT_TRUE(s.wait_terminal(id, 10s));
  auto job = s.job(id);
  EXPECT_EQ(std::string(job.at("state").as_string()), "done");
  EXPECT_EQ(std::string(job.at("progress").as_string()), "Done. I'm awake now.");
  EXPECT_EQ(job.at("return_status").as_int64(), 0);
  EXPECT_EQ(std::string(job.at("rundir").as_string()), rundir);
  EXPECT_NE(read_file(rundir + "/config.json").find("  \"id\": " + std::to_string(id) + ","),
            std::string::npos);
  EXPECT_NE(read_file(rundir + "/" + name + ".log").find("I'm sleeping for 1 seconds."), std::string::npos);
  EXPECT_TRUE(fs::exists(rundir + "/wrapper-status.json"));
  // A started job cannot be started again.
  auto again = s.run({"descprod-start-job", "-w", std::to_string(id)});
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.err.find("Job cannot be started."), std::string::npos) << again.err;
}

// DESCprod's main path with workers running (#16 item 1): add-job --hold, then start-job runs it
// here; no worker takes it meanwhile. And the dependency options: submit --after waits, and
// release-job hands a held job to the workers.
TEST(ClientE2E, HeldJobsAreStartedHereAndAfterWaitsForItsDependency) {
  client_service s(1);
  auto added = s.run({"descprod-add-job", "--hold", "mysleep", "0"});
  ASSERT_EQ(added.code, 0) << added.out << added.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(added.out, m, std::regex("Success: Added job alice/([0-9]+)"))) << added.out;
  long long held = std::stoll(m[1]);
  auto waits = s.run({"descprod-submit", "--after", std::to_string(held), "mysleep", "0"});
  ASSERT_EQ(waits.code, 0) << waits.err;
  long long after = std::stoll(waits.out);
  std::this_thread::sleep_for(500ms);  // a worker with free slots is there: it must not take them
  EXPECT_EQ(s.state(held), "held");
  EXPECT_EQ(s.state(after), "waiting");
  auto listed = s.run({"descprod-list-jobs", "--state", "waiting"});
  EXPECT_EQ(listed.code, 0) << listed.err;
  EXPECT_NE(listed.out.find(std::to_string(after)), std::string::npos) << listed.out;
  auto start = s.run({"descprod-start-job", "-w", std::to_string(held)});
  ASSERT_EQ(start.code, 0) << start.out << start.err;
  EXPECT_EQ(s.state(held), "done");
  ASSERT_TRUE(s.wait_terminal(after, 20s));
  EXPECT_EQ(s.state(after), "done") << "released when its dependency was done";
  // release-job: a held job goes to the workers; a job that is not held is an error (exit 1).
  long long later = s.submit(R"({"jobtype":"mysleep","config":"0","hold":true})");
  auto rel = s.run({"descprod-release-job", std::to_string(later), std::to_string(after)});
  EXPECT_EQ(rel.code, 1) << rel.out << rel.err;
  EXPECT_NE(rel.out.find("Job " + std::to_string(later) + " released."), std::string::npos) << rel.out;
  EXPECT_NE(rel.err.find("job " + std::to_string(after) + " was not released: job " + std::to_string(after) +
                         " is done, not held"),
            std::string::npos)
      << rel.err;
  ASSERT_TRUE(s.wait_terminal(later, 20s));
  EXPECT_EQ(s.state(later), "done");
  auto bad = s.run({"descprod-submit", "--after", "12,x", "mysleep", "0"});
  EXPECT_EQ(bad.code, 2) << bad.err;
  // --array: one job per index; the array's ID lists them.
  auto arr = s.run({"descprod-submit", "--array", "0-4:2", "marker", "m{index}"});
  ASSERT_EQ(arr.code, 0) << arr.err;
  long long array = std::stoll(arr.out);
  auto rows = s.run({"descprod-list-jobs", "--array", std::to_string(array), "--json"});
  ASSERT_EQ(rows.code, 0) << rows.err;
  auto lines = lines_of(rows.out);
  ASSERT_EQ(lines.size(), 3u) << rows.out;
  std::set<std::string> configs;
  for (const auto& l : lines)
    configs.insert(std::string(json::parse(l).as_object().at("config").as_string()));
  EXPECT_EQ(configs, (std::set<std::string>{"m0", "m2", "m4"}));
  EXPECT_EQ(s.run({"descprod-submit", "--array", "3-1", "mysleep", "1"}).code, 1) << "the gateway's 400";
}

TEST(ClientE2E, TwoConcurrentStartJobsOnOneJobExactlyOneRuns) {
  client_service s(0);
  ASSERT_TRUE(s.has_route("POST", "/api/jobs/999999999/claim")) << "no claim route";
  long long id = s.submit(R"({"jobtype":"mysleep","config":"2"})");
  auto a = s.start({"descprod-start-job", "-w", std::to_string(id)});
  auto b = s.start({"descprod-start-job", "-w", std::to_string(id)});
  auto ra = s.finish(*a);
  auto rb = s.finish(*b);
  std::multiset<int> codes = {ra.code, rb.code};
  EXPECT_EQ(codes, (std::multiset<int>{0, 1})) << ra.out << ra.err << rb.out << rb.err;
  const auto& loser = ra.code == 1 ? ra : rb;
  EXPECT_NE(loser.err.find("Job cannot be started."), std::string::npos) << loser.err;
  EXPECT_EQ(loser.out, "");
  ASSERT_TRUE(s.wait_terminal(id, 10s));
  EXPECT_EQ(s.state(id), "done");
  int rundirs = 0;
  for (const auto& e : fs::directory_iterator(s.client_out + "/jobs")) {
    (void)e;
    ++rundirs;
  }
  EXPECT_EQ(rundirs, 1);
}

TEST(ClientE2E, StartJobWithoutWaitReturnsAtOnceAndTheBackgroundRunnerReports) {
  client_service s(0);
  ASSERT_TRUE(s.has_route("POST", "/api/jobs/999999999/claim")) << "no claim route";
  long long id = s.submit(R"({"jobtype":"mysleep","config":"2"})");
  auto t0 = std::chrono::steady_clock::now();
  auto start = s.run({"descprod-start-job", std::to_string(id)});
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_EQ(start.code, 0) << start.out << start.err;
  EXPECT_LT(took, 1900ms) << "it waited for the app";
  EXPECT_NE(start.out.find("descprod-start-job: Started job " + std::to_string(id) + ":\n"),
            std::string::npos);
  EXPECT_EQ(start.out.find("returned code"), std::string::npos);
  std::string st = s.state(id);
  EXPECT_TRUE(st == "running" || st == "dispatched") << st;
  ASSERT_TRUE(s.wait_terminal(id, 20s));
  EXPECT_EQ(s.state(id), "done");
  EXPECT_EQ(std::string(s.job(id).at("progress").as_string()), "Done. I'm awake now.");
}

TEST(ClientE2E, StartJobFollowPrintsTheLogsAsTheyGrow) {
  client_service s(0);
  ASSERT_TRUE(s.has_route("POST", "/api/jobs/999999999/claim")) << "no claim route";
  long long id = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  auto progress = s.run({"descprod-start-job", "-p", std::to_string(id)});
  ASSERT_EQ(progress.code, 0) << progress.err;
  EXPECT_NE(progress.out.find("descprod-start-job: Following progress log file "), std::string::npos)
      << progress.out;
  EXPECT_TRUE(
      std::regex_search(progress.out, std::regex("\n +[0-9]+: Running. I'm sleeping for 1 seconds.\n")))
      << progress.out;
  EXPECT_TRUE(std::regex_search(progress.out, std::regex("\n +[0-9]+: Done. I'm awake now.\n")))
      << progress.out;
  EXPECT_NE(progress.out.find("descprod-start-job: Terminating log follow.\n"), std::string::npos);
  long long id2 = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  auto log = s.run({"descprod-start-job", "-f", std::to_string(id2)});
  ASSERT_EQ(log.code, 0) << log.err;
  EXPECT_NE(log.out.find("\nI'm sleeping for 1 seconds.\nI'm awake now.\n"), std::string::npos) << log.out;
}

TEST(ClientE2E, StartJobWaitExitsWithTheApplicationsStatus) {
  client_service s(0);
  ASSERT_TRUE(s.has_route("POST", "/api/jobs/999999999/claim")) << "no claim route";
  long long id = s.submit(R"({"jobtype":"fail","config":"x"})");
  auto start = s.run({"descprod-start-job", "-w", std::to_string(id)});
  EXPECT_EQ(start.code, 3) << start.out << start.err;
  EXPECT_NE(start.out.find("returned code: 3\n"), std::string::npos) << start.out;
  ASSERT_TRUE(s.wait_terminal(id, 10s));
  auto job = s.job(id);
  EXPECT_EQ(std::string(job.at("state").as_string()), "failed");
  EXPECT_EQ(std::string(job.at("progress").as_string()), "Failed. it broke");
}

TEST(ClientE2E, CancellingAJobRunByStartJobStopsItsApplication) {
  client_service s(0);
  ASSERT_TRUE(s.has_route("POST", "/api/jobs/999999999/claim")) << "no claim route";
  ASSERT_TRUE(s.has_route("POST", "/api/jobs/999999999/cancel")) << "no cancel route";
  long long id = s.submit(R"({"jobtype":"mysleep","config":"300"})");
  auto runner = s.start({"descprod-start-job", "-w", std::to_string(id)});
  ASSERT_TRUE(wait_until([&] { return s.state(id) == "running"; }, 20s)) << s.state(id);
  auto cancel = s.run({"descprod-cancel-job", std::to_string(id)});
  EXPECT_EQ(cancel.code, 0) << cancel.err;
  auto r = s.finish(*runner, 30s);
  EXPECT_EQ(r.code, 128 + 15) << r.out << r.err;
  ASSERT_TRUE(s.wait_terminal(id, 10s));
  EXPECT_EQ(s.state(id), "cancelled");
}

TEST(ClientE2E, WatchFollowsAParsltestJobToDone) {
  client_service s(1, 2);
  long long id = s.submit(R"({"jobtype":"parsltest","config":"sleep-ttsk1-ntsk8-nwrk2"})");
  auto watch = s.run({"descprod-watch", std::to_string(id)}, {}, 90s);
  std::cout << "[ capture  ] descprod-watch " << id << " (stdout not a tty)\n" << watch.out;
  ASSERT_EQ(watch.code, 0) << watch.err;
  auto lines = lines_of(watch.out);
  ASSERT_GE(lines.size(), 3u);
  std::string prefix = std::string(8 - std::to_string(id).size(), ' ') + std::to_string(id) + " ";
  for (const auto& l : lines) EXPECT_EQ(l.substr(0, prefix.size()), prefix) << l;
  EXPECT_EQ(lines.back(),
            prefix + "done       [########################] 100% 8/8 All 8 tasks complete:    8 exec_done");
  bool partial = false;
  for (const auto& l : lines)
    if (std::regex_search(l, std::regex(" running +\\[#*-+\\] +[0-9]+% [1-7]/8 "))) partial = true;
  EXPECT_TRUE(partial) << "no line with a partly filled bar";
  EXPECT_EQ(std::set<std::string>(lines.begin(), lines.end()).size(), lines.size()) << "a line printed twice";
}

TEST(ClientE2E, WatchOfSeveralJobsExitsWithTheFailedJobsStatus) {
  client_service s(1, 2);
  long long good = s.submit(R"({"jobtype":"mysleep","config":"1"})");
  long long bad = s.submit(R"({"jobtype":"fail","config":"x"})");
  auto watch = s.run({"descprod-watch", std::to_string(good), std::to_string(bad)}, {}, 60s);
  EXPECT_EQ(watch.code, 3) << watch.out << watch.err;
  EXPECT_NE(watch.out.find(std::to_string(good) + " done"), std::string::npos) << watch.out;
  EXPECT_NE(watch.out.find(std::to_string(bad) + " failed     it broke"), std::string::npos) << watch.out;
  auto unknown = s.run({"descprod-watch", "999999"});
  EXPECT_EQ(unknown.code, 1);
}

TEST(ClientE2E, ParsltestFanOutRunsItsTasksAsChildJobs) {
  client_service s(0);
  ASSERT_TRUE(s.has_route("POST", "/api/jobs/999999999/claim")) << "no claim route";
  // The parent runs here through descprod-start-job, which hands it a job token; a worker started
  // once the parent runs takes the children.
  auto sub = s.run({"descprod-submit", "parsltest", "sleep-ttsk1-ntsk4-nfail1-fanout"});
  long long id = std::stoll(sub.out);
  auto runner = s.start({"descprod-start-job", "-w", std::to_string(id)});
  ASSERT_TRUE(wait_until([&] { return s.state(id) == "running"; }, 20s)) << s.state(id);
  s.add_worker(4);
  auto start = s.finish(*runner, 90s);
  EXPECT_EQ(start.code, 3) << start.out << start.err;  // one child was made to fail
  auto job = s.job(id);
  EXPECT_EQ(std::string(job.at("progress").as_string()),
            "Failed. [4/4] 1 of 4 tasks failed:    3 exec_done,    1 failed");
  auto kids = s.call("GET", "/api/jobs?parent=" + std::to_string(id));
  ASSERT_EQ(kids.status, 200) << kids.body;
  auto arr = kids.json().as_object().at("jobs").as_array();
  ASSERT_EQ(arr.size(), 4u);
  int failed = 0;
  for (const auto& k : arr) {
    const auto& o = k.as_object();
    EXPECT_EQ(o.at("parent").as_int64(), id);
    EXPECT_EQ(std::string(o.at("jobtype").as_string()), "parsltest");
    EXPECT_TRUE(std::regex_match(std::string(o.at("config").as_string()),
                                 std::regex("(sleep|fail)-tskms[0-9]+-ntsk1-nwrk1")));
    if (o.at("state").as_string() == "failed") ++failed;
    else EXPECT_EQ(std::string(o.at("state").as_string()), "done");
  }
  EXPECT_EQ(failed, 1);
  EXPECT_EQ(job.at("children").as_object().at("total").as_int64(), 4);
}

TEST(ClientE2E, ParsltestFanOutUnderTheWorkerFollowsItsChildrenToTheEnd) {
  client_service s(1, 4);
  long long id = s.submit(R"({"jobtype":"parsltest","config":"sleep-ttsk1-ntsk3-fanout"})");
  ASSERT_TRUE(s.wait_terminal(id, 60s)) << s.state(id);
  auto job = s.job(id);
  std::string progress(job.at("progress").as_string());
  // The children are made with the job token the worker hands the application (DESCPROD_TOKEN).
  ASSERT_EQ(progress.find("no token"), std::string::npos) << "the application had no job token: " << progress;
  EXPECT_EQ(std::string(job.at("state").as_string()), "done") << progress;
  EXPECT_EQ(progress, "Done. [3/3] All 3 tasks complete:    3 exec_done");
  EXPECT_EQ(job.at("children").as_object().at("total").as_int64(), 3);
  EXPECT_EQ(job.at("children").as_object().at("done").as_int64(), 3);
  auto list = s.run({"descprod-list-jobs", "--parent", std::to_string(id)});
  EXPECT_EQ(lines_of(list.out).size(), 4u) << list.out << list.err;
}

TEST(ClientE2E, LoginStoresAVerifiedTokenThatOtherCommandsUse) {
  client_service s(0);
  long long id = s.submit(R"({"jobtype":"mysleep","config":"5"})");
  std::vector<std::pair<std::string, std::string>> env = {{"PATH", s.path},
                                                          {"HOME", s.home},
                                                          {"XDG_CONFIG_HOME", ""},
                                                          {"DESCPROD_URL", ""},
                                                          {"DESCPROD_TOKEN", ""}};
  auto bad = s.run({"descprod-login", "--url", s.url(), "--token", "dp_wrong"}, env);
  EXPECT_EQ(bad.code, 4) << bad.err;
  EXPECT_FALSE(fs::exists(s.home + "/.config/descprod/token"));
  auto login = s.run({"descprod-login", "--url", s.url(), "--token", s.alice_token}, env);
  ASSERT_EQ(login.code, 0) << login.err;
  EXPECT_NE(login.out.find("Logged in to " + s.url()), std::string::npos) << login.out;
  struct stat st {};
  ASSERT_EQ(::stat((s.home + "/.config/descprod/token").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(read_file(s.home + "/.config/descprod/token"), s.alice_token + "\n");
  // No URL and no token in the environment: both come from what descprod-login stored.
  auto get = s.run({"descprod-get-job", std::to_string(id)}, env);
  EXPECT_EQ(get.code, 0) << get.err;
  EXPECT_EQ(id_line(get.out), id);
  auto version = s.run({"descprod-version"}, env);
  EXPECT_EQ(version.code, 0);
  EXPECT_EQ(version.out, std::string(DESCPROD_VERSION) + "\n") << "one line, as DESCprod's";
  auto server = s.run({"descprod-version", "--server"}, env);
  EXPECT_EQ(server.code, 0);
  EXPECT_EQ(server.out,
            std::string(DESCPROD_VERSION) + "\nserver " + DESCPROD_VERSION + " at " + s.url() + "\n");
  // Unreachable server: exit 3.
  auto down = s.run({"descprod-get-job", "--url", "http://127.0.0.1:1", std::to_string(id)}, env);
  EXPECT_EQ(down.code, 3);
}

}  // namespace
}  // namespace descprod::test
