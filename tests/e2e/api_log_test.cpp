// End-to-end tests of a job's whole log (issue #17 item 5) with the real binaries and a real
// redis-server: a worker ships every line as it is written, the daemon stores it in order up to
// daemon.job_log_max_bytes, and GET /api/jobs/<id>/log gives the tail (lines=N), the whole log
// (lines=all, also as a text/plain download) and a search (q) with line numbers; the job page
// has the download link and the search form; deleting the job deletes its log.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/e2e/api_support.hpp"

namespace descprod::test {
namespace {

using namespace api;
namespace json = boost::json;
using namespace std::chrono_literals;

// `chatty N`: prints N numbered lines ("row <i> of <N>", with "ERROR" on every 1000th), a tab and
// some UTF-8 on the last, then exits 0.
const char* chatty_app =
    "  - name: chatty\n"
    "    pattern: \"^[0-9]{1,7}$\"\n"
    "    command: [\"/bin/sh\", \"-c\", \"i=1; while [ $i -le $1 ]; do if [ $((i % 1000)) -eq 0 ]; then "
    "echo \\\"row $i of $1 ERROR\\\"; else echo \\\"row $i of $1\\\"; fi; i=$((i+1)); done; "
    "printf 'the end\\\\tgr\\\\303\\\\274n\\\\n'\", \"chatty\"]\n"
    "    args: [\"{config}\"]\n";

service_options options(const std::string& daemon_extra = "") {
  service_options o;
  o.apps = chatty_app;
  o.gateway_extra = "  password_opslimit: 1\n  password_memlimit_kib: 8\n";  // fast hashing
  o.daemon_extra = daemon_extra;
  o.wait_ready = true;
  return o;
}

// A job submitted by a web session (the pages need one; the fixture's users have tokens only).
long long submit_as(web_client& h, const std::string& body) {
  auto r = h.post("/api/jobs", body);
  EXPECT_EQ(r.status, 201) << r.body;
  return r.status == 201 ? r.json().as_object().at("id").as_int64() : -1;
}

std::vector<std::string> lines_of(const json::object& o) {
  std::vector<std::string> out;
  for (const auto& l : o.at("lines").as_array()) out.emplace_back(l.as_string());
  return out;
}

TEST(ApiLog, TheWholeLogTheTailAndASearchAgreeWithWhatTheAppWrote) {
  service s(options());
  web_client h{s};
  approved_login(s, h, "hana", "hana-secret");
  if (HasFatalFailure()) return;
  const int n = 30000;  // about 500 KB: many pieces
  auto id = submit_as(h, R"({"jobtype":"chatty","config":")" + std::to_string(n) + R"("})");
  ASSERT_TRUE(s.wait_terminal(id, 60s, s.admin_token()));
  ASSERT_EQ(s.state(id, s.admin_token()), "done");

  auto all = h.call("GET", "/api/jobs/" + std::to_string(id) + "/log?lines=all");
  ASSERT_EQ(all.status, 200) << all.body;
  auto lines = lines_of(json::parse(all.body).as_object());
  ASSERT_EQ(lines.size(), static_cast<std::size_t>(n + 1));
  for (int i = 1; i <= n; ++i) {
    std::string want =
        "row " + std::to_string(i) + " of " + std::to_string(n) + (i % 1000 == 0 ? " ERROR" : "");
    ASSERT_EQ(lines[i - 1], want) << "line " << i;
  }
  EXPECT_EQ(lines.back(), "the end\tgr\xc3\xbcn");
  EXPECT_FALSE(json::parse(all.body).as_object().contains("capped"));

  // The tail is the whole log's end.
  auto tail = h.call("GET", "/api/jobs/" + std::to_string(id) + "/log?lines=250");
  ASSERT_EQ(tail.status, 200);
  auto t = lines_of(json::parse(tail.body).as_object());
  ASSERT_EQ(t.size(), 250u);
  EXPECT_TRUE(std::equal(t.begin(), t.end(), lines.end() - 250));

  // The download: the same lines, as a file.
  auto text = h.call("GET", "/api/jobs/" + std::to_string(id) + "/log?lines=all&format=text");
  ASSERT_EQ(text.status, 200);
  EXPECT_EQ(text.header("content-type"), "text/plain; charset=utf-8");
  EXPECT_EQ(text.header("content-disposition"),
            "attachment; filename=\"job-" + std::to_string(id) + ".log\"");
  std::string joined;
  for (const auto& l : lines) joined += l + "\n";
  EXPECT_EQ(text.body, joined);

  // A search: case-insensitive, with the lines' numbers.
  auto found = h.call("GET", "/api/jobs/" + std::to_string(id) + "/log?q=error");
  ASSERT_EQ(found.status, 200) << found.body;
  auto f = json::parse(found.body).as_object();
  EXPECT_EQ(f.at("total_matches").as_int64(), n / 1000);
  EXPECT_EQ(f.at("lines_searched").as_int64(), n + 1);
  const auto& matches = f.at("matches").as_array();
  ASSERT_EQ(matches.size(), static_cast<std::size_t>(n / 1000));
  for (std::size_t k = 0; k < matches.size(); ++k) {
    long long number = (static_cast<long long>(k) + 1) * 1000;
    EXPECT_EQ(matches[k].as_object().at("line_number").as_int64(), number);
    EXPECT_EQ(matches[k].as_object().at("line").as_string(),
              "row " + std::to_string(number) + " of " + std::to_string(n) + " ERROR");
  }

  // Bad queries are 400s with a reason.
  for (const char* q : {"lines=0", "lines=every", "q=", "format=xml", "q=x&format=text", "grep=x"}) {
    auto r = h.call("GET", "/api/jobs/" + std::to_string(id) + "/log?" + q);
    EXPECT_EQ(r.status, 400) << q << " " << r.body;
    EXPECT_NE(r.body.find("\"detail\""), std::string::npos) << r.body;
  }
  // Another user sees nothing.
  EXPECT_EQ(s.call("GET", "/api/jobs/" + std::to_string(id) + "/log?lines=all", "", s.bob_token).status, 404);

  // The job page: the download link and the search with its matches marked.
  auto page = h.call("GET", "/jobs/" + std::to_string(id) + "?logq=ERROR");
  ASSERT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("href=\"/api/jobs/" + std::to_string(id) + "/log?lines=all&amp;format=text\""),
            std::string::npos);
  EXPECT_NE(page.body.find("30 lines of 30001 contain"), std::string::npos);
  EXPECT_NE(page.body.find("<span class=\"ln\">30000</span>row 30000 of 30000 <mark>ERROR</mark>"),
            std::string::npos);

  // Deleting the job deletes its log.
  ASSERT_EQ(s.call("DELETE", "/api/jobs/" + std::to_string(id), "", s.admin_token()).status, 204);
  redis_sync r(s.redis.endpoint());
  EXPECT_EQ(r.exec({"EXISTS", "descprod:job:" + std::to_string(id) + ":log"}).integer, 0);
}

TEST(ApiLog, TheStoredLogStopsAtTheConfiguredCapAndSaysSo) {
  service s(options("  job_log_max_bytes: 65536\n"));
  web_client h{s};
  approved_login(s, h, "ivan", "ivan-secret");
  if (HasFatalFailure()) return;
  auto id = submit_as(h, R"({"jobtype":"chatty","config":"20000"})");  // about 330 KB
  ASSERT_TRUE(s.wait_terminal(id, 60s, s.admin_token()));
  EXPECT_EQ(s.state(id, s.admin_token()), "done");
  auto all = h.call("GET", "/api/jobs/" + std::to_string(id) + "/log?lines=all");
  ASSERT_EQ(all.status, 200);
  auto o = json::parse(all.body).as_object();
  EXPECT_TRUE(o.contains("capped"));
  auto lines = lines_of(o);
  ASSERT_GT(lines.size(), 1000u);
  std::size_t bytes = 0;
  for (std::size_t i = 0; i + 1 < lines.size(); ++i) {
    EXPECT_EQ(lines[i], "row " + std::to_string(i + 1) + " of 20000" + ((i + 1) % 1000 == 0 ? " ERROR" : ""));
    bytes += lines[i].size() + 1;
  }
  EXPECT_LE(bytes, 65536u);
  EXPECT_GT(bytes, 60000u);
  EXPECT_EQ(lines.back(),
            "descprod: the log reached its cap of 65536 bytes here; the rest is only in the run directory");
  // The run directory has all of it.
  redis_sync r(s.redis.endpoint());
  auto rundir = r.exec({"HGET", "descprod:job:" + std::to_string(id), "rundir"}).str;
  auto file = read_file(rundir + "/job" + std::string(6 - std::to_string(id).size(), '0') +
                        std::to_string(id) + ".log");
  EXPECT_GT(file.size(), 300000u);
  // The page says so.
  auto page = h.call("GET", "/jobs/" + std::to_string(id));
  EXPECT_NE(page.body.find("The stored log reached its size cap"), std::string::npos);
}

}  // namespace
}  // namespace descprod::test
