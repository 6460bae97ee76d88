// Test support (docs/building.md#tests): temporary directories, a real redis-server on a unix
// socket, child processes started by PID and stopped by PID, waits with deadlines, running
// coroutines to completion, and a small HTTP client for the e2e tests. Everything here cleans up in
// its destructor; nothing sleeps for a fixed time.
//
// Thread-safety: none; each object belongs to the test thread that made it. Child processes are
// reaped with waitpid on their own PID, so tests must not install a SIGCHLD handler that reaps.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/redis.hpp"

namespace descprod::test {

namespace net = boost::asio;
using namespace std::chrono_literals;

// A fresh directory under /tmp (mkdtemp), removed recursively with its contents on destruction.
class temp_dir {
 public:
  explicit temp_dir(const std::string& prefix = "descprod-test-");
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Options of a redis_server beyond the defaults: more command-line arguments (e.g. ACL users:
// "--user", "default", "off", ...), and the ACL user and password endpoint() authenticates with.
struct redis_server_options {
  bool appendonly = false;
  std::vector<std::string> extra_args;
  std::string username;
  std::string password;
};

// A real redis-server (from PATH) listening only on a unix socket in its own temporary directory,
// with persistence off (or append-only on when asked). The constructor starts it and waits until
// it answers PING (10 s deadline); the destructor stops it.
class redis_server {
 public:
  explicit redis_server(bool appendonly = false);
  explicit redis_server(redis_server_options opts);
  ~redis_server();
  redis_server(const redis_server&) = delete;
  redis_server& operator=(const redis_server&) = delete;

  // Starts the server again (same socket, same directory) after stop() or kill9().
  void start();
  // The same without waiting for PING: returns once the server accepts connections on its socket,
  // which may be while it still loads its data set (answering LOADING) — for the tests of what
  // clients see then.
  void start_loading();
  // SIGTERM by PID, waits for it to exit, SIGKILL after 5 s.
  void stop();
  // SIGKILL by PID and reap: a crash, for the tests of what clients see then.
  void kill9();
  // With append-only on: waits (at most `limit`) until Redis has handed every write it has
  // answered to the kernel (INFO persistence: aof_buffer_length 0), so that a kill9() now loses
  // none. Under appendfsync everysec Redis answers a write before it writes it to its file, and
  // holds the file writes back while a slow fsync runs (up to 2 s): a kill9() then loses writes it
  // has acknowledged. False when the buffer did not empty in time.
  bool wait_written(std::chrono::milliseconds limit = std::chrono::seconds(30));

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  const std::string& socket_path() const { return socket_; }
  const std::string& dir() const { return dir_.path(); }
  descprod::redis_endpoint endpoint() const;
  // The server's own log (its stdout and stderr).
  std::string log() const;

 private:
  void start_process(bool until_ready);
  temp_dir dir_;
  bool appendonly_;
  std::string socket_;
  redis_server_options opts_;
  pid_t pid_ = -1;
};

// A program run for a test: posix_spawnp (argv[0] looked up in PATH), the test's environment plus
// `env`, stdout and stderr appended to `output_file` (empty: the test's own). Stopped by PID in the
// destructor.
class process {
 public:
  process(std::vector<std::string> argv, std::vector<std::pair<std::string, std::string>> env = {},
          std::string output_file = "", std::string cwd = "");
  ~process();
  process(const process&) = delete;
  process& operator=(const process&) = delete;

  pid_t pid() const { return pid_; }
  // True while the process has not exited (reaps it when it has).
  bool running();
  // Waits up to `timeout` for the process to exit. The status is the exit code, or -N when
  // signal N ended it (as Python's returncode); nullopt when it is still running at the deadline.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  // Sends a signal to the process (by PID) unless it has been reaped.
  void signal(int sig);
  // SIGTERM, then SIGKILL when it has not exited within `timeout`; returns its status.
  std::optional<int> stop(std::chrono::milliseconds timeout = 5s);
  const std::string& output_file() const { return output_file_; }
  // The contents of output_file() ("" when there is none).
  std::string output() const;

 private:
  bool reap(bool block);
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string output_file_;
};

// Polls `predicate` every `poll` until it holds (true) or `timeout` has passed (false).
bool wait_until(const std::function<bool()>& predicate, std::chrono::milliseconds timeout,
                std::chrono::milliseconds poll = 10ms);

// Runs handlers of `ioc` until `predicate` holds (true) or `timeout` has passed (false).
bool run_until(net::io_context& ioc, const std::function<bool()>& predicate,
               std::chrono::milliseconds timeout);

// Runs a coroutine to completion on `ioc` and returns its result, rethrowing its exception. Other
// work on the io_context (e.g. a Redis client's read loop) keeps running meanwhile. A coroutine
// that has not finished by `deadline` fails the test and throws std::runtime_error.
template <class T>
T run_async(net::io_context& ioc, net::awaitable<T> aw, std::chrono::milliseconds deadline = 30s) {
  auto fut = net::co_spawn(ioc, std::move(aw), net::use_future);
  bool finished = run_until(
      ioc, [&] { return fut.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }, deadline);
  if (!finished) {
    ADD_FAILURE() << "run_async: the coroutine did not finish within " << deadline.count() << " ms";
    throw std::runtime_error("run_async: deadline passed");
  }
  return fut.get();
}

// The same on a fresh io_context of its own.
template <class T>
T run_async(net::awaitable<T> aw, std::chrono::milliseconds deadline = 30s) {
  net::io_context ioc;
  return run_async(ioc, std::move(aw), deadline);
}

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& text);

// HTTP/1.1 (Boost.Beast). Header names in `headers` are lower-case; a repeated header's values
// are joined with ", ".
struct http_response {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;
  // The body parsed as JSON; throws when it is not JSON.
  boost::json::value json() const;
  // A header by (case-insensitive) name, "" when absent.
  std::string header(const std::string& name) const;
};

using http_headers = std::vector<std::pair<std::string, std::string>>;

// One request on a new connection, 30 s deadline. A body without a Content-Type header is sent
// as application/json. Throws on connection errors and at the deadline.
http_response http_request(const std::string& host, int port, const std::string& method,
                           const std::string& target, const std::string& body = "",
                           http_headers headers = {});

// Many requests on one keep-alive connection (reconnecting when the server closed it).
class http_client {
 public:
  http_client(std::string host, int port);
  ~http_client();
  http_client(const http_client&) = delete;
  http_client& operator=(const http_client&) = delete;

  http_response request(const std::string& method, const std::string& target, const std::string& body = "",
                        http_headers headers = {});
  // Number of TCP connections opened so far.
  int connections() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace descprod::test
