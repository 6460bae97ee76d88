// runapp-parsltest, DESCprod's example application (docs/client.md#runapp-parsltest), without
// parsl: the config's tasks run as local child processes, at most nwrk at once, or (fan-out) as
// child jobs of the service. This header holds the pure parts (config, durations, status lines) for
// the unit tests.
//
// Config (DESCprod's dash style, e.g. sleep-ttsk2-ntsk20-nwrk4):
//   sleep            task type (default); ifixw, ifixn, ifix0 are accepted and run as sleep
//   fail             test-only task type: every task fails (or only nfailK of them)
//   ttskN            task time in seconds: durations spread linearly from N/2 to N, shuffled
//   tskmsN           every task takes exactly N ms (fan-out children use it)
//   ntskN            number of tasks (default 4)
//   nwrkN            tasks run at once (default 4)
//   nfailK           K of the tasks fail (test only)
//   fanout           create the tasks as child jobs (jobtype parsltest, one task each) and follow them
//   wq ww ht tp mtskN dsamN nnodN   DESCprod's parsl options: accepted and ignored
//
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace descprod::client::parsltest {

struct config {
  bool fail_type = false;  // task type `fail`
  long long ttsk_s = 10;
  std::optional<long long> tskms;
  long long ntsk = 4;
  long long nwrk = 4;
  std::optional<long long> nfail;
  bool fanout = false;
};

// nullopt with the reason in `why` for an invalid config (check_config, unknown field, bad number).
std::optional<config> parse_config(std::string_view text, std::string& why);

// Task durations in milliseconds: tskms for all, else linspace(ttsk/2, ttsk, ntsk) (numpy's: one
// task gets ttsk/2) shuffled with `rng`.
std::vector<long long> task_durations_ms(const config& c, std::mt19937& rng);

// Which tasks fail: the first nfail (all for task type `fail` without nfail).
std::vector<bool> failing_tasks(const config& c);

// The one-task config of a fan-out child, e.g. "sleep-tskms1500-ntsk1-nwrk1".
std::string child_config(long long ms, bool fail);

// Counts behind a status line.
struct counts {
  long long total = 0;
  long long done = 0;    // ended successfully (exec_done)
  long long failed = 0;  // ended otherwise
  long long running = 0;
  long long waiting = 0;  // created but not started (DESCprod's "launched")
  long long finished() const { return done + failed; }
};

// "[8/20]   12/20 tasks remaining:    8 exec_done;    4 running,    8 launched" (", N failed" after
// exec_done when some failed): DESCprod's parsltest line with the [done/total] prefix the worker
// turns into a progress bar.
std::string status_line(const counts& c);
// "[20/20] All 20 tasks complete:   20 exec_done", or "[20/20] 2 of 20 tasks failed: ...".
std::string final_line(const counts& c);

}  // namespace descprod::client::parsltest
