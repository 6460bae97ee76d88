// The client commands, one function per executable (client/CMakeLists.txt generates a main() per
// command that calls its function). Each takes main's arguments, prints its output on stdout and
// its errors on stderr, and returns the exit code (common.hpp); none calls exit(), so tests can
// call them in-process.
#pragma once

namespace descprod::client {

// DESCprod's commands.
int version_main(int argc, char** argv);
int get_job_main(int argc, char** argv);  // also descprod-show-job
int add_job_main(int argc, char** argv);
int start_job_main(int argc, char** argv);
int output_dir_main(int argc, char** argv);
int split_config_main(int argc, char** argv);
int split_config_field_main(int argc, char** argv);
int split_compound_config_main(int argc, char** argv);
int check_config_main(int argc, char** argv);
// DESCprod's indirect app runapp-pmbs (the worker runs it for a job with a pmbs howfig).
int pmbs_main(int argc, char** argv);

// New commands.
int submit_main(int argc, char** argv);
int list_jobs_main(int argc, char** argv);
int cancel_job_main(int argc, char** argv);
int release_job_main(int argc, char** argv);
int watch_main(int argc, char** argv);
int login_main(int argc, char** argv);

// The example application runapp-parsltest.
int parsltest_main(int argc, char** argv);

}  // namespace descprod::client
