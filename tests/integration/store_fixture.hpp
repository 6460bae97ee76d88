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
  // Whether every owner's indexes derived from the job hashes agree with them: the Active index
  // (jobs not archived) and the find index (find_fields joined by US). "" when they agree, else
  // the first difference.
  std::string owner_indexes_disagree() {
    // Entries as "ID=entry" (US shown as '|').
    std::map<std::string, std::set<std::string>> want_find, have_find, want_active, have_active;
    auto entry = [](const std::string& id, std::string v) {
      std::replace(v.begin(), v.end(), find_separator, '|');
      return id + "=" + v;
    };
    auto last = cmd({"GET", "descprod:next_job_id"});
    long long n = last.is_nil() ? 0 : std::stoll(last.str);
    for (long long id = 1; id <= n; ++id) {
      std::vector<std::string> hmget = {"HMGET", st.job_key(id), "descname", "archive"};
      for (auto f : find_fields) hmget.emplace_back(f);
      auto v = cmd(hmget);
      if (v.elements.at(0).is_nil()) continue;
      const std::string owner = v.elements[0].str, sid = std::to_string(id);
      std::string doc;
      for (std::size_t i = 2; i < v.elements.size(); ++i) {
        std::string x = v.elements[i].str;
        if (i + 1 < v.elements.size()) std::replace(x.begin(), x.end(), find_separator, ' ');
        doc += (i > 2 ? std::string(1, find_separator) : std::string()) + x;
      }
      want_find[owner].insert(entry(sid, doc));
      if (v.elements[1].str != "1") want_active[owner].insert(sid);
    }
    auto owner_of = [](const std::string& key) {
      auto a = key.find("user:") + 5;
      return key.substr(a, key.rfind(':') - a);
    };
    for (const auto& k : cmd({"KEYS", "descprod:user:*:find"}).elements) {
      auto h = cmd({"HGETALL", k.str});
      for (std::size_t i = 0; i + 1 < h.elements.size(); i += 2)
        have_find[owner_of(k.str)].insert(entry(h.elements[i].str, h.elements[i + 1].str));
    }
    for (const auto& k : cmd({"KEYS", "descprod:user:*:active"}).elements)
      for (const auto& m : zrange(k.str)) have_active[owner_of(k.str)].insert(m);
    auto first_diff = [](const auto& want, const auto& have, const char* what) -> std::string {
      for (const auto& [owner, m] : want) {
        auto it = have.find(owner);
        if (it == have.end()) return std::string(what) + " of " + owner + " missing";
        for (const auto& e : m)
          if (!it->second.count(e)) return std::string(what) + " of " + owner + " lacks " + e;
        if (it->second.size() != m.size()) return std::string(what) + " of " + owner + " has extra entries";
      }
      for (const auto& [owner, m] : have)
        if (!m.empty() && !want.count(owner)) return std::string(what) + " of " + owner + " has no jobs";
      return "";
    };
    for (auto d : {first_diff(want_find, have_find, "find"), first_diff(want_active, have_active, "active")})
      if (!d.empty()) return d;
    return "";
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
