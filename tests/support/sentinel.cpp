#include "tests/support/sentinel.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>

namespace descprod::test {

int free_tcp_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("bind to 127.0.0.1:0 failed");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

redis_endpoint loopback_tcp(int port) {
  redis_endpoint ep;
  ep.host = "127.0.0.1";
  ep.port = static_cast<std::uint16_t>(port);
  return ep;
}

namespace {

std::vector<std::string> server_args(int port, const sentinel_options& o) {
  // No 5 s wait for more replicas before a full sync (Redis 7's default for diskless syncs).
  std::vector<std::string> args = {"--port",    std::to_string(port),         "--bind",
                                   "127.0.0.1", "--repl-diskless-sync-delay", "0"};
  args.insert(args.end(), o.server_args.begin(), o.server_args.end());
  return args;
}
}  // namespace

sentinel_cluster::sentinel_cluster(sentinel_options o) : opts(std::move(o)), dir_("descprod-sentinel-") {
  const int port = free_tcp_port();
  redis_server_options m;
  m.extra_args = server_args(port, opts);
  owned_.push_back(std::make_unique<redis_server>(m));
  servers.push_back(owned_.back().get());
  ports.push_back(port);
  start(port);
}

sentinel_cluster::sentinel_cluster(redis_server& master, int master_port, sentinel_options o)
    : opts(std::move(o)), dir_("descprod-sentinel-") {
  servers.push_back(&master);
  ports.push_back(master_port);
  start(master_port);
}

void sentinel_cluster::start(int master_port) {
  const int replica_port = free_tcp_port();
  redis_server_options r;
  r.extra_args = server_args(replica_port, opts);
  r.extra_args.insert(r.extra_args.end(), {"--replicaof", "127.0.0.1", std::to_string(master_port)});
  owned_.push_back(std::make_unique<redis_server>(r));
  servers.push_back(owned_.back().get());
  ports.push_back(replica_port);
  for (int i = 0; i < 3; ++i) {
    const int port = free_tcp_port();
    const auto conf = dir_.file("sentinel-" + std::to_string(i) + ".conf");
    const auto& n = opts.master_name;
    write_file(conf, "port " + std::to_string(port) +
                         "\n"
                         "bind 127.0.0.1\n"
                         "daemonize no\n"
                         "dir " +
                         dir_.path() +
                         "\n"
                         "sentinel resolve-hostnames no\n"
                         "sentinel monitor " +
                         n + " 127.0.0.1 " + std::to_string(master_port) +
                         " 2\n"
                         "sentinel down-after-milliseconds " +
                         n + " " + std::to_string(opts.down_after_ms) +
                         "\n"
                         "sentinel failover-timeout " +
                         n + " " + std::to_string(opts.failover_timeout_ms) +
                         "\n"
                         "sentinel parallel-syncs " +
                         n + " 1\n");
    sentinel_ports.push_back(port);
    sentinels.push_back(std::make_unique<process>(std::vector<std::string>{"redis-sentinel", conf},
                                                  std::vector<std::pair<std::string, std::string>>{},
                                                  dir_.file("sentinel-" + std::to_string(i) + ".log")));
    bool up = wait_until(
        [&] {
          try {
            redis_sync c(loopback_tcp(port));
            return c.exec({"PING"}).str == "PONG";
          } catch (const std::exception&) {
            return false;
          }
        },
        10s, 10ms);
    if (!up)
      throw std::runtime_error("redis-sentinel did not start; its log:\n" + sentinels.back()->output());
  }
}

sentinel_cluster::~sentinel_cluster() {
  for (auto& s : sentinels) s->stop();
}

redis_endpoint sentinel_cluster::endpoint() const {
  redis_endpoint ep;
  for (int p : sentinel_ports) ep.sentinels.push_back({"127.0.0.1", static_cast<std::uint16_t>(p)});
  ep.master_name = opts.master_name;
  return ep;
}

std::string sentinel_cluster::yaml() const {
  std::string out = "  sentinels: [";
  for (std::size_t i = 0; i < sentinel_ports.size(); ++i)
    out += (i ? ", " : "") + std::string("\"127.0.0.1:") + std::to_string(sentinel_ports[i]) + "\"";
  return out + "]\n  master_name: " + opts.master_name + "\n";
}

int sentinel_cluster::master_port() const {
  for (int p : sentinel_ports) {
    try {
      redis_sync c(loopback_tcp(p));
      auto r = c.exec({"SENTINEL", "get-master-addr-by-name", opts.master_name});
      if (r.elements.size() == 2) return std::stoi(r.elements[1].str);
    } catch (const std::exception&) {
    }
  }
  return 0;
}

int sentinel_cluster::server_on(int port) const {
  for (std::size_t i = 0; i < ports.size(); ++i)
    if (ports[i] == port) return static_cast<int>(i);
  return -1;
}

bool sentinel_cluster::wait_healthy(std::chrono::milliseconds limit) {
  return wait_until(
      [&] {
        try {
          const int master = master_port();
          for (int p : sentinel_ports) {
            redis_sync c(loopback_tcp(p));
            auto replicas = c.exec({"SENTINEL", "replicas", opts.master_name});
            bool replica_ok = false;
            for (const auto& rep : replicas.elements)
              for (std::size_t i = 0; i + 1 < rep.elements.size(); i += 2)
                if (rep.elements[i].str == "flags" && rep.elements[i + 1].str == "slave") replica_ok = true;
            if (!replica_ok) return false;
            if (c.exec({"SENTINEL", "sentinels", opts.master_name}).elements.size() != 2) return false;
          }
          for (int port : ports) {
            if (port == master) continue;
            redis_sync r(loopback_tcp(port));
            if (r.exec({"INFO", "replication"}).str.find("master_link_status:up") == std::string::npos)
              return false;
          }
          return master != 0;
        } catch (const std::exception&) {
          return false;
        }
      },
      limit, 50ms);
}

std::string sentinel_cluster::logs() const {
  std::string out;
  for (std::size_t i = 0; i < sentinels.size(); ++i)
    out += "---- sentinel " + std::to_string(i) + "\n" + sentinels[i]->output();
  for (std::size_t i = 0; i < servers.size(); ++i)
    out +=
        "---- redis " + std::to_string(i) + " (port " + std::to_string(ports[i]) + ")\n" + servers[i]->log();
  return out;
}

}  // namespace descprod::test
