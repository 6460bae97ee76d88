// DESCprod's command output, byte for byte (issue #16): each client command is run against the
// real service and its stdout (and the run directory's config.json) compared with a golden file in
// tests/compat/golden/. The golden files are written from DESCprod's formats (get_job.py's
// f"{key:>16}: {val}" in JobData.data_names order, times "YYYY-MM-DD HH:MM:SS UTC", config.json as
// json.dumps(jmap, indent=2), descprod-output-dir's one line, ...), with the values that change
// from run to run as placeholders: {ID} {PARENT} {SESSION} {PID} {HOST} {RUNDIR} {OUT} {TIME}
// {EPOCH} {VERSION}. A difference fails with both texts; DESCPROD_UPDATE_GOLDEN=1 rewrites the
// files instead (then read the diff before committing it).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

struct output {
  int code = -1;
  std::string out;
};

class golden_service : public service {
 public:
  golden_service() : service(options()), out_dir(dir.file("client-out")) {
    fs::create_directories(dir.file("home"));
  }
  static service_options options() {
    service_options o;
    o.workers = 0;  // every job runs by hand (descprod-start-job), as DESCprod's did
    return o;
  }
  // A client command, stdout alone kept (stderr to a file of its own).
  output run(const std::vector<std::string>& args) {
    int n = ++runs_;
    std::string out = dir.file("golden" + std::to_string(n) + ".out");
    std::vector<std::string> argv = {"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>>\"$ERR\"", bin(args[0])};
    argv.insert(argv.end(), args.begin() + 1, args.end());
    process p(argv,
              {{"PATH", env().front().second},
               {"DESCPROD_URL", url()},
               {"DESCPROD_TOKEN", alice_token},
               {"HOME", dir.file("home")},
               {"XDG_CONFIG_HOME", ""},
               {"DESCPROD_OUTPUT_DIR", out_dir},
               {"TERM", "dumb"},
               {"ERR", dir.file("golden.err")}},
              out);
    output r;
    auto st = p.wait_exit(60s);
    r.code = st ? *st : -1000;
    r.out = fs::exists(out) ? read_file(out) : "";
    return r;
  }
  std::string out_dir;

 private:
  int runs_ = 0;
};

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

// The run's values as placeholders: the longest first (a path holds the output root, an ID may be
// a part of a longer number).
struct placeholders {
  std::vector<std::pair<std::string, std::string>> values;  // value -> {NAME}
  std::string apply(std::string s) const {
    s = std::regex_replace(s, std::regex("[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} UTC"),
                           "{TIME}");
    for (const auto& [value, name] : values) replace_all(s, value, name);
    // Numbers: whole ones only (never a part of a longer number).
    std::string out;
    std::regex number("[0-9]+");
    auto begin = std::sregex_iterator(s.begin(), s.end(), number);
    std::size_t last = 0;
    for (auto it = begin; it != std::sregex_iterator(); ++it) {
      out += s.substr(last, it->position() - last);
      std::string n = it->str();
      std::string name = n;
      for (const auto& [v, placeholder] : numbers)
        if (n == v) name = placeholder;
      if (name == n && n.size() == 10) name = "{EPOCH}";  // epoch seconds
      out += name;
      last = it->position() + it->length();
    }
    return out + s.substr(last);
  }
  std::vector<std::pair<std::string, std::string>> numbers;  // whole numbers -> {NAME}
};

void expect_golden(const std::string& name, const std::string& actual) {
  fs::path file = fs::path(DESCPROD_SOURCE_DIR) / "tests/compat/golden" / name;
  if (const char* update = std::getenv("DESCPROD_UPDATE_GOLDEN"); update && std::string(update) == "1") {
    write_file(file.string(), actual);
    return;
  }
  ASSERT_TRUE(fs::exists(file)) << "no golden file " << file << "; this run printed:\n" << actual;
  EXPECT_EQ(read_file(file.string()), actual) << "output differs from " << file;
}

std::string text_of(const json::object& job, const char* key) {
  auto it = job.find(key);
  if (it == job.end()) return "";
  return it->value().is_string() ? std::string(it->value().as_string()) : json::serialize(it->value());
}

TEST(Golden, TheCommandsPrintWhatDescprodPrinted) {
  golden_service s;
  // IDs past the session numbers, so that no two placeholders stand for the same number.
  ASSERT_EQ(s.call("POST", "/api/jobs", R"({"jobtype":"mysleep","config":"0","hold":true,"array":9})").status,
            201);
  long long parent = s.submit(R"({"jobtype":"mysleep","config":"0","hold":true})");
  auto add = s.run({"descprod-add-job", "-p", std::to_string(parent), "mysleep", "0"});
  ASSERT_EQ(add.code, 0) << add.out;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(add.out, m, std::regex(" id: ([0-9]+)"))) << add.out;
  long long id = std::stoll(m[1]);
  auto start = s.run({"descprod-start-job", "-w", std::to_string(id)});
  ASSERT_EQ(start.code, 0) << start.out;
  ASSERT_TRUE(s.wait_terminal(id, 10s));
  auto job = s.job(id);
  ASSERT_EQ(text_of(job, "state"), "done");

  placeholders p;
  // The host only where a value stands (after ": " to a line's end, or quoted): a short host name
  // may be a part of other words.
  const std::string host = text_of(job, "host");
  p.values = {{text_of(job, "rundir"), "{RUNDIR}"},
              {s.out_dir, "{OUT}"},
              {": " + host + "\n", ": {HOST}\n"},
              {"\"" + host + "\"", "\"{HOST}\""},
              {DESCPROD_VERSION, "{VERSION}"}};
  p.numbers = {{std::to_string(id), "{ID}"},
               {std::to_string(parent), "{PARENT}"},
               {text_of(job, "session"), "{SESSION}"},
               {text_of(job, "pid"), "{PID}"}};

  for (std::size_t i = 0; i < p.numbers.size(); ++i)
    for (std::size_t j = i + 1; j < p.numbers.size(); ++j)
      ASSERT_NE(p.numbers[i].first, p.numbers[j].first)
          << p.numbers[i].second << " and " << p.numbers[j].second;

  expect_golden("add-job.txt", p.apply(add.out));
  expect_golden("start-job-w.txt", p.apply(start.out));
  auto get = s.run({"descprod-get-job", std::to_string(id)});
  EXPECT_EQ(get.code, 0);
  expect_golden("get-job.txt", p.apply(get.out));
  expect_golden("config.json", p.apply(read_file(text_of(job, "rundir") + "/config.json")));
  expect_golden("output-dir-get.txt", p.apply(s.run({"descprod-output-dir", "get"}).out +
                                              s.run({"descprod-output-dir", "get", "jobs/job000012"}).out));
  expect_golden("version.txt", p.apply(s.run({"descprod-version"}).out));
  expect_golden("split-config.txt", s.run({"descprod-split-config", "nam1:v11-nam2-nam3:v31:v32"}).out +
                                        s.run({"descprod-split-config-field", "nam3:v31:v32"}).out);
}

}  // namespace
}  // namespace descprod::test
