// Unit tests of the site status (daemon/site_status.hpp): reading a status document in the form
// of NERSC's status API, the record written to Redis, the poll delays, and the sites: config.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>

#include "core/config.hpp"
#include "daemon/site_status.hpp"
#include "tests/support/support.hpp"

namespace descprod {
namespace {

using test::temp_dir;
using test::write_file;

TEST(SiteDocument, NerscsStatusDocumentIsReadAndJunkIsRefusedWithAReason) {
  std::string why;
  auto d = parse_site_document(
      R"({"name":"perlmutter","full_name":"Perlmutter","description":"System Degraded","system_type":"compute",)"
      R"("notes":["Login node 3 down","Scratch \u0007slow"],"status":"Degraded","updated_at":"2026-12-07T10:00:00-08:00"})",
      why);
  ASSERT_TRUE(d) << why;
  EXPECT_EQ(d->status, "degraded") << "lower case";
  EXPECT_EQ(d->full_name, "Perlmutter");
  EXPECT_EQ(d->description, "System Degraded");
  EXPECT_EQ(d->notes, "Login node 3 down; Scratch slow") << "control characters dropped";
  EXPECT_EQ(d->updated_at, "2026-12-07T10:00:00-08:00");
  auto n = parse_site_document(R"({"status":"down","notes":"one note"})", why);
  ASSERT_TRUE(n);
  EXPECT_EQ(n->notes, "one note");
  for (const char* bad :
       {"", "not json", "[1,2]", "{}", R"({"status":7})", R"({"status":""})", R"({"status":"<script>"})",
        R"({"status":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"})"}) {
    why.clear();
    EXPECT_FALSE(parse_site_document(bad, why)) << bad;
    EXPECT_FALSE(why.empty()) << bad;
  }
  std::string huge(100000, 'x');
  auto h = parse_site_document(R"({"status":"active","description":")" + huge + "\"}", why);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->description.size(), 2000u) << "text is capped";
}

TEST(SiteDocument, TheRecordKeepsTheLastGoodAnswerAndTheError) {
  site_record r;
  r.name = "perlmutter";
  r.url = "https://api.nersc.gov/api/v1.2/status/perlmutter";
  r.checked = 100;
  r.error = "unreachable: connection refused";
  auto none = boost::json::parse(site_record_json(r)).as_object();
  EXPECT_EQ(none.at("status").as_string(), "unknown");
  EXPECT_FALSE(none.contains("good_at"));
  r.good = site_document{"down", "Perlmutter", "Maintenance", "", "2026-12-07"};
  r.good_at = 90;
  auto o = boost::json::parse(site_record_json(r)).as_object();
  EXPECT_EQ(o.at("status").as_string(), "down");
  EXPECT_EQ(o.at("good_at").to_number<double>(), 90);
  EXPECT_EQ(o.at("error").as_string(), "unreachable: connection refused");
  EXPECT_EQ(o.at("url").as_string(), r.url);
}

TEST(SiteDocument, AFailingSiteIsPolledSoonThenLessOften) {
  using std::chrono::milliseconds;
  const std::chrono::seconds poll(60);
  EXPECT_EQ(site_poll_delay(poll, 0), milliseconds(60000));
  EXPECT_EQ(site_poll_delay(poll, 1), milliseconds(15000));
  EXPECT_EQ(site_poll_delay(poll, 2), milliseconds(30000));
  EXPECT_EQ(site_poll_delay(poll, 3), milliseconds(60000));
  EXPECT_EQ(site_poll_delay(poll, 4), milliseconds(120000));
  EXPECT_EQ(site_poll_delay(poll, 50), milliseconds(240000));
  EXPECT_EQ(site_poll_delay(std::chrono::seconds(1), 1), milliseconds(1000)) << "at least a second";
}

TEST(SiteDocument, BadSitesConfigurationIsRefused) {
  temp_dir d("descprod-sites-config-");
  auto check = [&](const std::string& yaml, const std::string& want) {
    auto f = d.file("c.yaml");
    write_file(f, "redis:\n  path: /tmp/x.sock\n" + yaml);
    try {
      load_config(f);
      ADD_FAILURE() << "accepted: " << yaml;
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  check("sites: {name: a}\n", "expected a list");
  check("sites:\n  - {status_url: 'http://x/'}\n", "name: required");
  check("sites:\n  - {name: 'Bad Name'}\n", "name: required");
  check("sites:\n  - {name: a}\n  - {name: a}\n", "listed twice");
  check("sites:\n  - {name: a, status_url: 'ftp://x/'}\n", "http:// or https://");
  check("sites:\n  - {name: a, poll_s: 0}\n", "poll_s");
  check("sites:\n  - {name: a, colour: red}\n", "colour");
  auto f = d.file("ok.yaml");
  write_file(f, "redis:\n  path: /tmp/x.sock\nsites:\n  - {name: perlmutter}\n");
  auto c = load_config(f);
  ASSERT_EQ(c.site_status.size(), 1u);
  EXPECT_EQ(c.site_status[0].status_url, "https://api.nersc.gov/api/v1.2/status/perlmutter");
  EXPECT_EQ(c.site_status[0].poll.count(), 60);
}

}  // namespace
}  // namespace descprod
