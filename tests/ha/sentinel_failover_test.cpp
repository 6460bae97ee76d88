// Redis behind Sentinel (issue 15 item 2) with the real binaries: the service fixture's Redis is
// the master of a sentinel_cluster (a replica and three Debian redis-sentinel processes), and the
// daemon, the gateway and two workers know Redis only through the sentinels. While 2,000 jobs are
// submitted over HTTP and run, the master is killed with SIGKILL: the sentinels promote the
// replica, every component follows it, and every job the gateway acknowledged with 201 ends done
// (0 lost), no job in Redis is left unfinished (0 stuck), and each job ran once.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "core/redis.hpp"
#include "tests/support/sentinel.hpp"
#include "tests/support/service.hpp"

namespace descprod::test {
namespace {

using namespace std::chrono_literals;

// Every job hash in Redis: id -> state.
std::map<long long, std::string> job_states(redis_sync& r) {
  std::map<long long, std::string> out;
  std::string cursor = "0";
  for (int round = 0; round < 100000; ++round) {
    auto page = r.exec({"SCAN", cursor, "MATCH", "descprod:job:*", "COUNT", "1000"});
    cursor = page.elements.at(0).str;
    for (const auto& k : page.elements.at(1).elements) {
      auto id = k.str.substr(std::string("descprod:job:").size());
      if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos) continue;
      auto type = r.exec({"TYPE", k.str});
      if (type.str != "hash") continue;
      out[std::stoll(id)] = r.exec({"HGET", k.str, "state"}).str;
    }
    if (cursor == "0") break;
  }
  return out;
}

TEST(SentinelFailover, AKilledMasterLosesNoAcknowledgedJobAndLeavesNoneStuck) {
  const int master_port = free_tcp_port();
  std::unique_ptr<sentinel_cluster> cluster;
  service_options o;
  o.workers = 2;
  o.slots = 4;
  o.wait_ready = true;
  o.redis_options.extra_args = {"--port",    std::to_string(master_port),  "--bind",
                                "127.0.0.1", "--repl-diskless-sync-delay", "0"};
  o.redis_section = [&](redis_server& master) {
    cluster = std::make_unique<sentinel_cluster>(master, master_port);
    if (!cluster->wait_healthy())
      throw std::runtime_error("the sentinels are not ready:\n" + cluster->logs());
    return cluster->yaml();
  };
  service s(o);
  ASSERT_TRUE(cluster);
  EXPECT_NE(s.gateway->output().find("redis=sentinel:descprod@127.0.0.1:"), std::string::npos);

  constexpr int batches = 20, per_batch = 100;
  std::vector<long long> acked;
  int refused = 0;
  bool killed = false;
  std::chrono::steady_clock::time_point killed_at;
  for (int b = 0; b < batches; ++b) {
    std::string body = R"({"jobs":[)";
    for (int i = 0; i < per_batch; ++i)
      body += std::string(i ? "," : "") + R"({"jobtype":"marker","config":"x"})";
    body += "]}";
    // A submit during the failover is refused (503) and sent again, as a client would.
    bool created = false;
    for (int attempt = 0; attempt < 300 && !created; ++attempt) {
      auto r = s.call("POST", "/api/jobs/bulk", body);
      if (r.status == 201) {
        const auto answer = r.json();
        for (const auto& id : answer.as_object().at("ids").as_array())
          acked.push_back(id.to_number<long long>());
        created = true;
      } else {
        ASSERT_TRUE(r.status == 503 || r.status == 0) << r.status << " " << r.body;
        ++refused;
        std::this_thread::sleep_for(100ms);
      }
    }
    ASSERT_TRUE(created) << "batch " << b << " was never accepted";
    if (b == 5) {
      // Jobs are running: the master dies.
      ASSERT_TRUE(wait_until(
          [&] {
            try {
              redis_sync r(cluster->endpoint());
              auto done = r.exec({"HGET", "descprod:stats:jobs_by_state", "done"});
              return !done.is_nil() && std::stoll(done.str) >= 200;
            } catch (const std::exception&) {
              return false;
            }
          },
          60s, 20ms));
      cluster->servers[0]->kill9();
      killed_at = std::chrono::steady_clock::now();
      killed = true;
    }
  }
  ASSERT_TRUE(killed);
  ASSERT_EQ(acked.size(), std::size_t(batches * per_batch));
  // The replica leads.
  ASSERT_TRUE(wait_until([&] { return cluster->master_port() == cluster->ports[1]; }, 30s, 20ms))
      << cluster->logs();
  const auto promoted = std::chrono::steady_clock::now();

  // Every acknowledged job ends done; nothing in Redis is left unfinished.
  redis_sync r(cluster->endpoint());
  std::map<long long, std::string> states;
  bool finished = wait_until(
      [&] {
        try {
          redis_sync now(cluster->endpoint());
          states = job_states(now);
        } catch (const std::exception&) {
          return false;
        }
        for (const auto& [id, state] : states)
          if (!service::terminal(state)) return false;
        return true;
      },
      90s, 500ms);
  std::size_t lost = 0, not_done = 0, twice = 0;
  for (long long id : acked) {
    auto it = states.find(id);
    if (it == states.end()) ++lost;
    else if (it->second != "done") ++not_done;
    auto m = s.marker(id);
    if (std::count(m.begin(), m.end(), '\n') > 1) ++twice;
  }
  std::size_t stuck = 0;
  for (const auto& [id, state] : states) {
    if (service::terminal(state)) continue;
    ++stuck;
    // What happened to it: its hash, its events, and the log lines that name it.
    std::cerr << "stuck: job " << id << " is " << state << "\n";
    const auto key = "descprod:job:" + std::to_string(id);
    auto h = r.exec({"HGETALL", key});
    for (std::size_t i = 0; i + 1 < h.elements.size(); i += 2)
      std::cerr << "  " << h.elements[i].str << "=" << h.elements[i + 1].str << "\n";
    auto ev = r.exec({"XRANGE", key + ":events", "-", "+"});
    for (const auto& e : ev.elements) {
      std::cerr << "  event " << e.elements.at(0).str;
      for (const auto& f : e.elements.at(1).elements) std::cerr << " " << f.str;
      std::cerr << "\n";
    }
    const std::string needle = "job=" + std::to_string(id) + " ";
    for (const auto* p : {s.daemon.get(), s.workers[0].get(), s.workers[1].get()}) {
      std::istringstream lines(p->output());
      for (std::string line; std::getline(lines, line);)
        if (line.find(needle) != std::string::npos) std::cerr << "  log: " << line << "\n";
    }
  }
  std::cerr << "sentinel failover: acked " << acked.size() << ", jobs in redis " << states.size() << ", lost "
            << lost << ", not done " << not_done << ", stuck " << stuck << ", ran twice " << twice
            << ", submits refused during the failover " << refused << ", kill -> promoted <= "
            << std::chrono::duration_cast<std::chrono::milliseconds>(promoted - killed_at).count() << " ms\n";
  EXPECT_TRUE(finished) << cluster->logs();
  EXPECT_EQ(lost, 0u);
  EXPECT_EQ(not_done, 0u);
  EXPECT_EQ(stuck, 0u);
  EXPECT_EQ(twice, 0u);
  EXPECT_EQ(r.exec({"ZCARD", "descprod:leases"}).integer, 0);
  EXPECT_EQ(r.exec({"ZCARD", "descprod:queue"}).integer, 0);
  // The daemon reached Redis again after the kill (through the sentinels: it knows no other way).
  const auto log = s.daemon->output();
  std::size_t connects = 0;
  for (auto p = log.find("redis connected"); p != std::string::npos; p = log.find("redis connected", p + 1))
    ++connects;
  EXPECT_GE(connects, 2u) << log;
}

}  // namespace
}  // namespace descprod::test
