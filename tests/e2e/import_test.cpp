// Migration (issue #16 item 11): the real descprod-admin import-jobs loads a sample of DESCprod's
// job table — a MySQL CSV export of its 18 columns (NULL and \N for no value, quoted fields with
// commas and quotes) and the same as JSON — under the jobs' own IDs, into a running service; the
// jobs read back through the API with their outcome, new jobs get IDs above them, a second
// import changes nothing, and a bad file imports nothing.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>

#include "tests/e2e/api_support.hpp"

namespace descprod::test::api {
namespace {

const char* const sample_csv =
    "id,parent,descname,jobtype,config,howfig,session,archive,host,rundir,pid,create_time,start_time,"
    "update_time,stop_time,return_status,port,progress\n"
    "1001,0,alice,mysleep,30,,57,0,nid001.nersc.gov,/pscratch/alice/descprod-out/jobs/job001001,4242,"
    "1700000000,1700000010,1700000050,1700000050,0,NULL,\"Done. I'm awake now.\"\n"
    "1002,NULL,alice,g3wfpipe,w2316-visit:1234_5,\"pmbs-30-auto-cpu,ptenv:00:hom\",57,1,nid002,/r/job001002,77,"
    "1700000100,1700000110,1700000200,1700000200,3,\\N,\"Failed. step \"\"2\"\" broke\"\n"
    "1003,0,bob,mysleep,600,,58,0,nid003,/r/job001003,99,1700000300,1700000310,1700000400,NULL,NULL,NULL,"
    "Running. I'm sleeping for 600 seconds.\n"
    "1004,1001,alice,mysleep,5,,57,0,NULL,NULL,NULL,1700000500,NULL,1700000500,NULL,NULL,NULL,Ready.\n";

TEST(Import, DescprodsJobTableLoadsUnderItsOwnIdsAndNewJobsGoAbove) {
  service s(api_options(1));
  std::string file = s.dir.file("jobs.csv");
  write_file(file, sample_csv);
  auto dry = s.run_admin({"import-jobs", file, "--dry-run"});
  EXPECT_NE(dry.find("would import 4 jobs (ids 1001..1004)"), std::string::npos) << dry;
  EXPECT_EQ(s.call("GET", path_of(1001)).status, 404) << "a dry run writes nothing";
  auto out = s.run_admin({"import-jobs", file});
  EXPECT_NE(out.find("imported 4 jobs (ids 1001..1004), skipped 0 that exist"), std::string::npos) << out;
  EXPECT_NE(out.find("done 1; failed 1; held 1; lost 1"), std::string::npos) << out;
  EXPECT_NE(out.find("next job ID: 1005"), std::string::npos) << out;

  auto done = s.job(1001);
  EXPECT_EQ(str(done, "state"), "done");
  EXPECT_EQ(str(done, "progress"), "Done. I'm awake now.");
  EXPECT_EQ(str(done, "host"), "nid001.nersc.gov");
  EXPECT_EQ(num(done, "session"), 57);
  EXPECT_EQ(num(done, "return_status"), 0);
  EXPECT_EQ(done.at("children").as_object().at("total").as_int64(), 1);
  auto failed = s.job(1002);
  EXPECT_EQ(str(failed, "state"), "failed");
  EXPECT_EQ(str(failed, "howfig"), "pmbs-30-auto-cpu,ptenv:00:hom");
  EXPECT_EQ(str(failed, "config"), "w2316-visit:1234_5");
  EXPECT_EQ(str(failed, "progress"), "Failed. step \"2\" broke");
  EXPECT_EQ(num(failed, "archive"), 1);
  EXPECT_EQ(num(failed, "parent"), -1) << "DESCprod's NULL parent: none";
  auto lost = s.job(1003, s.bob_token);
  EXPECT_EQ(str(lost, "state"), "lost") << "it was running in DESCprod: nothing runs it here";
  EXPECT_EQ(s.call("GET", path_of(1003)).status, 404) << "bob's job, not alice's";
  auto held = s.job(1004);
  EXPECT_EQ(str(held, "state"), "held") << "never started: held, not run by the worker";
  EXPECT_EQ(num(held, "parent"), 1001);
  // A new job takes the next ID above the imported ones; a second import changes nothing.
  EXPECT_EQ(s.submit(R"({"jobtype":"mysleep","config":"0"})"), 1005);
  auto again = s.run_admin({"import-jobs", file});
  EXPECT_NE(again.find("imported 0 jobs (ids 1001..1004), skipped 4 that exist"), std::string::npos) << again;
  EXPECT_EQ(str(s.job(1004), "state"), "held");
  // The same table as JSON (one object per row, MySQL's JSON export) goes in the same way.
  std::string json_file = s.dir.file("jobs.json");
  write_file(json_file,
             R"({"job":[{"id":2001,"parent":null,"descname":"alice","jobtype":"mysleep","config":"1",)"
             R"("howfig":"","session":3,"archive":0,"create_time":1700001000,"start_time":1700001001,)"
             R"("update_time":1700001002,"stop_time":1700001002,"return_status":-9,"progress":"Killed."}]})");
  auto js = s.run_admin({"import-jobs", json_file});
  EXPECT_NE(js.find("imported 1 jobs (ids 2001..2001)"), std::string::npos) << js;
  EXPECT_EQ(str(s.job(2001), "state"), "killed");
  EXPECT_EQ(s.submit(R"({"jobtype":"mysleep","config":"0"})"), 2002);
}

TEST(Import, ABadFileImportsNothingAndSaysWhere) {
  service s(api_options(0));
  std::string file = s.dir.file("bad.csv");
  write_file(file,
             "id,descname,jobtype,config,colour\n"
             "3001,alice,mysleep,1,red\n"
             "x,alice,mysleep,1,blue\n"
             "3002,bad user!,mysleep,1,green\n"
             "3003,alice,mysleep\n");
  auto out = s.run_admin({"import-jobs", file}, 1);
  EXPECT_NE(out.find("line 1: unknown column 'colour'"), std::string::npos) << out;
  EXPECT_NE(out.find("line 3: id must be a positive integer, not 'x'"), std::string::npos) << out;
  EXPECT_NE(out.find("line 4: descname 'bad user!' is not a user name"), std::string::npos) << out;
  EXPECT_NE(out.find("line 5: 3 fields, the header has 5"), std::string::npos) << out;
  EXPECT_NE(out.find("nothing imported"), std::string::npos) << out;
  EXPECT_EQ(s.call("GET", path_of(3001)).status, 404);
  write_file(file, "id,descname,jobtype\n\"4001,alice,mysleep\n");
  EXPECT_NE(s.run_admin({"import-jobs", file}, 1).find("a quoted field is not closed"), std::string::npos);
  EXPECT_NE(s.run_admin({"import-jobs", s.dir.file("missing.csv")}, 2).find("cannot read"),
            std::string::npos);
}

}  // namespace
}  // namespace descprod::test::api
