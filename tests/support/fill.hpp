// Large data sets for the tests that need one (a restart or a backup of a real-sized store), and
// the counts they check. Written by the real store (core/store.hpp), as the gateway and the daemon
// write them.
#pragma once

#include "core/redis.hpp"

namespace descprod::test {

// `jobs` jobs of the owner "admin" (jobtype mysleep, config 0): created in batches of 1,000 (one
// create script each); the first `done_jobs` of them claimed, started and finished by the daemon's
// batch scripts (claim_many, reports), so they have their event streams and the counts by state.
// The rest stay queued. Test failures are recorded (gtest assertions).
void fill(const redis_endpoint& ep, long long jobs, long long done_jobs);

// The sum of the counts by state (<prefix>stats:jobs_by_state with prefix descprod:), leaving out
// the recount's marks (fields starting with '_').
long long sum_of_counts(redis_sync& r);

}  // namespace descprod::test
