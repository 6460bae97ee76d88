// Worker authentication (docs/architecture.md, Security model; docs/operators.md, Workers).
//  - Worker tokens: `descprod-admin worker-token OWNER [--pool P]...` stores P token:<sha256> with
//    scope "worker", its owner and the pools an admin admitted it to (comma-separated; `*` admits
//    every owner's jobs). A worker may run the jobs of its owner and of the members of its pools
//    (P pool:<name>, a set of user names). The owner must be an active account.
//  - CURVE: a ZAP handler (ZeroMQ RFC 27) on its own thread admits to the worker socket only the
//    public keys found in a folder of *.pub files, re-read when the folder changes.
#pragma once

#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "core/redis.hpp"

namespace descprod {

struct worker_grant {
  bool ok = false;
  std::string reason;  // why not, when !ok
  std::string owner;
  std::vector<std::string> pools;   // as admitted
  bool any_owner = false;           // admitted to `*`
  std::vector<std::string> owners;  // the owner and every member of its pools (sorted, unique)
};

// Reads the token and what it grants from Redis. Throws boost::system::system_error when Redis is
// unreachable (the caller retries later).
net::awaitable<worker_grant> check_worker_token(redis_client& redis, const std::string& prefix,
                                                const std::string& token_sha256);

// The ZAP domain set on the worker socket; requests from other sockets are let through.
inline constexpr const char* worker_zap_domain = "descprod-workers";

class zap_handler {
 public:
  // Binds inproc://zeromq.zap.01 in `ctx` (before any CURVE socket binds) and starts its thread.
  zap_handler(zmq::context_t& ctx, std::filesystem::path authorized_dir);
  ~zap_handler();
  zap_handler(const zap_handler&) = delete;
  zap_handler& operator=(const zap_handler&) = delete;

  std::size_t allowed_keys();
  std::uint64_t refused() const { return refused_; }

 private:
  void run();
  void reload_if_changed();
  bool allowed(const std::string& key32);

  zmq::socket_t sock_;
  std::filesystem::path dir_;
  std::mutex mu_;
  std::set<std::string> keys_;  // 32-byte binary public keys
  std::filesystem::file_time_type dir_time_{};
  std::chrono::steady_clock::time_point checked_{};
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> refused_{0};
  std::map<std::string, std::chrono::steady_clock::time_point> last_logged_;  // by key (ZAP thread only)
  std::thread thread_;
};

}  // namespace descprod
