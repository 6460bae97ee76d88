// apps.yaml's containment keys (issue #13, items 3 and 9): umask (octal string, default 027),
// memory_max (bytes with an optional K/M/G/T) and limit_cores; and the job message fields the
// worker reads from them (app.umask, app.memory_max, app.limit_cores), checked like the rest.
#include <gtest/gtest.h>

#include "core/config.hpp"
#include "workers/job_spec.hpp"

namespace descprod {
namespace {

TEST(AppLimits, DefaultsAndValuesFromAppsYaml) {
  auto reg = parse_apps(
      "apps:\n"
      "  - name: plain\n"
      "  - name: open\n    umask: \"022\"\n    memory_max: 2G\n    cores: 3\n    limit_cores: true\n"
      "  - name: bytes\n    memory_max: 1048576\n    umask: 077\n",
      "apps.yaml");
  EXPECT_EQ(reg.find("plain")->umask, 027);
  EXPECT_EQ(reg.find("plain")->memory_max, 0);
  EXPECT_FALSE(reg.find("plain")->limit_cores);
  EXPECT_EQ(reg.find("open")->umask, 022);
  EXPECT_EQ(reg.find("open")->memory_max, 2LL << 30);
  EXPECT_TRUE(reg.find("open")->limit_cores);
  EXPECT_EQ(reg.find("bytes")->memory_max, 1048576);
  EXPECT_EQ(reg.find("bytes")->umask, 077);
}

TEST(AppLimits, MalformedValuesAreConfigErrors) {
  for (const char* bad :
       {"    umask: \"9\"\n", "    umask: \"\"\n", "    umask: \"07777\"\n", "    memory_max: 2X\n",
        "    memory_max: lots\n", "    memory_max: 99999999999999999999T\n"})
    EXPECT_THROW(parse_apps(std::string("apps:\n  - name: a\n") + bad, "apps.yaml"), config_error) << bad;
}

TEST(AppLimits, JobMessageFieldsAreChecked) {
  auto body = [](const char* app_extra) {
    return boost::json::parse(
               std::string(R"({"job":{"id":5,"jobtype":"a"},"attempt":1,"app":{"argv":["/bin/true"])") +
               app_extra + "}}")
        .as_object();
  };
  std::string why;
  auto spec = workers::parse_job_message(body(""), why);
  ASSERT_TRUE(spec) << why;
  EXPECT_EQ(spec->umask, 027) << "an older daemon sends none: 027";
  spec = workers::parse_job_message(body(R"(,"umask":18,"memory_max":1024,"limit_cores":2)"), why);
  ASSERT_TRUE(spec) << why;
  EXPECT_EQ(spec->umask, 022);
  EXPECT_EQ(spec->memory_max, 1024);
  EXPECT_EQ(spec->cores, 2);
  for (const char* bad : {R"(,"umask":512)", R"(,"umask":-1)", R"(,"umask":"027")", R"(,"memory_max":-5)",
                          R"(,"limit_cores":5000)"}) {
    EXPECT_FALSE(workers::parse_job_message(body(bad), why)) << bad;
    EXPECT_FALSE(why.empty());
  }
}

}  // namespace
}  // namespace descprod
