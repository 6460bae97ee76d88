// The fixture of the Redis job store's tests (store_*_test.cpp): a real redis-server, a store on
// it, a blocking connection to inspect what the scripts wrote, and helpers to build jobs and
// reports.
#pragma once

#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "core/redis.hpp"
#include "core/store.hpp"
#include "gateway/notices.hpp"
#include "tests/support/support.hpp"

namespace descprod::test_store {

using namespace std::chrono_literals;
using test::run_async;

inline new_job make_job(std::string jobtype, std::string config, int priority = 0, int max_attempts = 3) {
  new_job j;
  j.jobtype = std::move(jobtype);
  j.config = std::move(config);
  j.priority = priority;
  j.max_attempts = max_attempts;
  return j;
}

inline std::string sha1_hex(const std::string& s) {
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(s.data()), s.size(), md);
  char buf[3];
  std::string out;
  for (unsigned char c : md) {
    std::snprintf(buf, sizeof buf, "%02x", c);
    out += buf;
  }
  return out;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override { run_async(ioc, redis.async_connect()); }

  template <class T>
  T run(net::awaitable<T> a) {
    return run_async(ioc, std::move(a));
  }

  std::vector<job_id> create(const std::string& owner, std::vector<new_job> jobs) {
    auto r = run(st.async_create(owner, std::move(jobs)));
    EXPECT_TRUE(r.ok) << r.reason;
    return r.ids;
  }
  job_id create_one(const std::string& owner = "alice", int priority = 0, int max_attempts = 3) {
    std::vector<new_job> jobs;
    jobs.push_back(make_job("mysleep", "10", priority, max_attempts));
    auto ids = create(owner, std::move(jobs));
    return ids.empty() ? 0 : ids.front();
  }
  // lease + start by worker w1; returns the attempt.
  long long run_job(job_id id, const std::string& worker = "w1") {
    auto l = run(st.async_lease(id, worker, 30));
    EXPECT_TRUE(l.ok) << l.reason << " " << l.state;
    auto s = run(st.async_start(id, l.attempt, worker, "host1", "/tmp/run", 1234));
    EXPECT_TRUE(s.ok) << s.reason << " " << s.state;
    return l.attempt;
  }

  // The typed reports of async_reports, one line each.
  static store::report start_r(job_id id, long long attempt, std::string worker, std::string host,
                               std::string rundir, long long pid) {
    return store::start_report{id, attempt, std::move(worker), std::move(host), std::move(rundir), pid};
  }
  static store::report progress_r(job_id id, long long attempt, std::string worker, std::string message,
                                  std::optional<long long> done, std::optional<long long> total) {
    return store::progress_report{id, attempt, std::move(worker), std::move(message), done, total};
  }
  static store::report finish_r(job_id id, long long attempt, std::string worker, job_state target, int rc,
                                std::string prefix, std::string message) {
    return store::finish_report{id, attempt,           std::move(worker), target,
                                rc, std::move(prefix), std::move(message)};
  }

  // Direct inspection through a second, blocking connection.
  redis_reply cmd(const std::vector<std::string>& args) { return inspect.exec(args); }
  job_record hash(job_id id) {
    job_record r;
    auto reply = cmd({"HGETALL", st.job_key(id)});
    for (std::size_t i = 0; i + 1 < reply.elements.size(); i += 2)
      r[reply.elements[i].str] = reply.elements[i + 1].str;
    return r;
  }
  std::vector<std::string> zrange(const std::string& key) {
    std::vector<std::string> out;
    for (const auto& e : cmd({"ZRANGE", key, "0", "-1"}).elements) out.push_back(e.str);
    return out;
  }
  bool in_zset(const std::string& key, job_id id) {
    return !cmd({"ZSCORE", key, std::to_string(id)}).is_nil();
  }
  // The field values of a stream's entries, oldest first.
  std::vector<std::map<std::string, std::string>> stream(const std::string& key) {
    std::vector<std::map<std::string, std::string>> out;
    for (const auto& entry : cmd({"XRANGE", key, "-", "+"}).elements) {
      std::map<std::string, std::string> fields;
      const auto& kv = entry.elements.at(1).elements;
      for (std::size_t i = 0; i + 1 < kv.size(); i += 2) fields[kv[i].str] = kv[i + 1].str;
      out.push_back(std::move(fields));
    }
    return out;
  }
  double now_s() {
    auto t = cmd({"TIME"});
    return std::stod(t.elements.at(0).str) + std::stod(t.elements.at(1).str) / 1e6;
  }

  test::redis_server server;
  redis_sync inspect{server.endpoint()};
  net::io_context ioc;
  redis_client redis{ioc.get_executor(), server.endpoint()};
  store st{redis, "descprod:"};
};

}  // namespace descprod::test_store
