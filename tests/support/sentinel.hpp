// Redis behind Sentinel for the tests (issue 15, docs/operators.md "Redis behind Sentinel"): a real
// redis-server master and one replica, each on a loopback TCP port (and its unix socket), and three
// real Debian redis-sentinel processes monitoring the master under one name. Every process is
// started and stopped by PID; ports are free ones of 127.0.0.1, picked when the cluster starts.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/redis.hpp"
#include "tests/support/support.hpp"

namespace descprod::test {

// A TCP port of 127.0.0.1 nobody listened on a moment ago.
int free_tcp_port();
// The endpoint of a Redis (or a sentinel) on 127.0.0.1:port.
redis_endpoint loopback_tcp(int port);

struct sentinel_options {
  std::string master_name = "descprod";
  int down_after_ms = 1000;              // sentinel down-after-milliseconds
  int failover_timeout_ms = 5000;        // sentinel failover-timeout
  std::vector<std::string> server_args;  // more redis-server arguments, for master and replica
};

class sentinel_cluster {
 public:
  // A new master, its replica and the sentinels.
  explicit sentinel_cluster(sentinel_options opts = {});
  // Around a master already running with --port `master_port` (a service fixture's own Redis):
  // its replica and the sentinels.
  sentinel_cluster(redis_server& master, int master_port, sentinel_options opts = {});
  ~sentinel_cluster();
  sentinel_cluster(const sentinel_cluster&) = delete;
  sentinel_cluster& operator=(const sentinel_cluster&) = delete;

  // servers[0] is the master at the start, servers[1] its replica; ports[i] is servers[i]'s port.
  std::vector<redis_server*> servers;
  std::vector<int> ports;
  std::vector<int> sentinel_ports;
  std::vector<std::unique_ptr<process>> sentinels;
  sentinel_options opts;

  // The endpoint a component uses: the three sentinels and the master's name.
  redis_endpoint endpoint() const;
  // Lines of a config's redis section: sentinels and master_name.
  std::string yaml() const;
  // The master the first sentinel that answers names (port 0 when none does).
  int master_port() const;
  // The index in `servers` of the one on `port` (-1 when none).
  int server_on(int port) const;
  // Waits until every sentinel sees the replica and the two other sentinels, and the replica's
  // link to the master is up (a failover can then happen). False at the deadline.
  bool wait_healthy(std::chrono::milliseconds limit = std::chrono::seconds(30));
  // The sentinels' logs, for a failed test.
  std::string logs() const;

 private:
  void start(int master_port);
  temp_dir dir_;
  std::vector<std::unique_ptr<redis_server>> owned_;
};

}  // namespace descprod::test
