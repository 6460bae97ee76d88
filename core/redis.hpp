// Redis clients: an asynchronous, pipelining one for the daemons (RESP spoken on an Asio socket,
// encoded with hiredis's redisFormatCommandArgv and parsed with its redisReader), and a small
// blocking one for command-line tools and test fixtures.
//
// Thread-safety: none; a client belongs to one io_context (one thread).
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct redisContext;
struct redisReader;

namespace descprod {

namespace net = boost::asio;

struct redis_reply {
  enum class kind { nil, integer, string, status, error, array };
  kind type = kind::nil;
  long long integer = 0;
  std::string str;  // string, status and error replies
  std::vector<redis_reply> elements;

  bool is_nil() const { return type == kind::nil; }
  bool is_error() const { return type == kind::error; }
  // An error reply saying Redis cannot serve now, not that the command was wrong (see
  // redis_unavailable_error below).
  bool is_unavailable() const;
  // The string of a string/status reply, or the decimal form of an integer reply.
  std::string as_string() const;
  long long as_integer() const;  // integer reply, or a string holding a number; else 0
};

// "Redis unavailable", one classification for every component. Redis answers some commands with an
// error that says nothing about the command and everything about the server: LOADING (reading its
// data set after a restart), BUSY (a script runs past busy-reply-threshold), MISCONF (it cannot
// persist, so it refuses writes), MASTERDOWN, READONLY (a replica), TRYAGAIN, CLUSTERDOWN,
// NOREPLICAS. Such a reply is a temporary failure exactly like a lost connection, never an answer:
// a token lookup that gets LOADING has not found the token missing. So redis_client throws
// boost::system::system_error for both — a connection error code, or redis_errc::unavailable with
// Redis's message — and callers treat every system_error from it as "Redis unavailable": the
// gateway answers 503 with Retry-After, the daemon holds its writes and retries.
enum class redis_errc { unavailable = 1 };
const boost::system::error_category& redis_category();
boost::system::error_code make_error_code(redis_errc e);
// True for an error message whose first word is one of the codes above.
bool redis_unavailable_error(std::string_view message);
// The exception redis_client throws for such a reply.
boost::system::system_error redis_unavailable(const std::string& message);

// Builds a command's argument vector. Use it inside coroutines instead of a braced list, which
// GCC 12 miscompiles there.
template <class... A>
std::vector<std::string> redis_cmd(A&&... a) {
  std::vector<std::string> v;
  v.reserve(sizeof...(a));
  (v.emplace_back(std::forward<A>(a)), ...);
  return v;
}

// A TCP address of a Redis server or sentinel.
struct redis_address {
  std::string host;
  std::uint16_t port = 0;
  std::string str() const { return host + ":" + std::to_string(port); }
  bool operator==(const redis_address& o) const { return host == o.host && port == o.port; }
};

struct redis_endpoint {
  std::string unix_path;  // used when non-empty
  std::string host = "127.0.0.1";
  std::uint16_t port = 6379;
  std::string username;  // ACL user for AUTH (empty: the default user)
  std::string password;  // AUTH after connecting when non-empty
  // Redis Sentinel (docs/operators.md, "Redis behind Sentinel"): when `sentinels` is not empty,
  // every connect asks them, in turn, for the address of the master named `master_name`
  // (SENTINEL get-master-addr-by-name), connects there (unix_path, host and port are unused) and
  // checks with ROLE that it is a master. The sentinels' own AUTH, when they require one, is
  // sentinel_username/sentinel_password.
  std::vector<redis_address> sentinels;
  std::string master_name;
  std::string sentinel_username;
  std::string sentinel_password;
  bool via_sentinels() const { return !sentinels.empty(); }
  // "unix:<path>", "<host>:<port>", or "sentinel:<master_name>@<first sentinel>,..." for logs.
  std::string describe() const;
};

// The longest wait between reconnect attempts to `ep`: `max`, but at most 250 ms behind sentinels
// (a failover ends within seconds, and each attempt only asks a sentinel, so reconnecting soon
// after the promotion is what matters).
std::chrono::milliseconds reconnect_backoff_max(const redis_endpoint& ep, std::chrono::milliseconds max);

// Asks the sentinels of `ep`, in order, for the master's address: the first that names one
// answers. Each gets `per_sentinel` to answer. Throws redis_unavailable ("MASTERDOWN no sentinel
// named the master ...: <each sentinel's failure>") when none did.
net::awaitable<redis_address> async_sentinel_master(net::any_io_executor ex, const redis_endpoint& ep,
                                                    std::chrono::milliseconds per_sentinel);

struct redis_switch_listener;

class redis_client {
 public:
  redis_client(net::any_io_executor ex, redis_endpoint ep);
  ~redis_client();
  redis_client(const redis_client&) = delete;
  redis_client& operator=(const redis_client&) = delete;

  // Connects (and authenticates). Throws boost::system::system_error on failure. Through
  // sentinels (redis_endpoint::sentinels) it connects to the master they name, and throws
  // redis_errc::unavailable when none names one or the server named is not a master. While that
  // connection lasts it listens on a sentinel for +switch-master: when the master changes, or a
  // reply says READONLY (the server was made a replica), the connection is dropped, so every
  // caller sees a Redis outage and reconnects to the new master.
  net::awaitable<void> async_connect();
  bool connected() const { return connected_; }
  void close();
  const redis_endpoint& endpoint() const { return ep_; }
  // The master the connection reached through the sentinels (empty host otherwise).
  const redis_address& master() const { return master_; }
  // Called with each reply that no command waits for (a SUBSCRIBE's messages).
  std::function<void(const redis_reply&)> on_push;

  // Sends one command and waits for its reply. Commands from several coroutines are pipelined on
  // the one connection. Throws system_error when the connection fails, or when Redis answers that
  // it is unavailable (redis_errc::unavailable: LOADING, BUSY, MISCONF, ...); any other Redis error
  // reply is returned as a reply of kind error, not thrown.
  net::awaitable<redis_reply> async_exec(std::vector<std::string> args);
  // Sends many commands in one write and returns their replies in order. Throws as async_exec
  // (after every reply has arrived) when any reply says Redis is unavailable.
  net::awaitable<std::vector<redis_reply>> async_pipeline(std::vector<std::vector<std::string>> cmds);

 private:
  // A command, or a pipeline's commands, waiting for its replies (one timer per batch).
  struct pending;
  std::shared_ptr<pending> enqueue(const std::vector<std::string>* cmds, std::size_t n);
  void start_writer();
  net::awaitable<void> write_loop();
  net::awaitable<void> read_loop();
  void fail_all(boost::system::error_code ec);
  static net::awaitable<void> await_replies(std::shared_ptr<pending> p);
  // Ends the connection as a failure: pending commands get `ec`, the next caller reconnects.
  void drop(boost::system::error_code ec);
  net::awaitable<void> connect_socket(const std::string& unix_path, const std::string& host,
                                      std::uint16_t port);
  static net::awaitable<void> watch_sentinels(redis_client* self, std::shared_ptr<bool> alive,
                                              std::shared_ptr<net::generic::stream_protocol::socket> sock);

  net::any_io_executor ex_;
  redis_endpoint ep_;
  std::shared_ptr<net::generic::stream_protocol::socket> socket_;
  redisReader* reader_ = nullptr;
  std::string outbuf_;
  bool writing_ = false;
  bool connected_ = false;
  std::deque<std::shared_ptr<pending>> pending_;
  std::shared_ptr<bool> alive_;
  redis_address master_;
  // The sentinel watch of the current connection (its timer and its sentinel client), ended at
  // once by close() rather than at its next wake.
  struct sentinel_watch;
  std::weak_ptr<sentinel_watch> watch_;
  friend struct redis_switch_listener;
};

// Blocking client on hiredis. Throws std::runtime_error when the connection fails (through
// sentinels: when none names a master, or the one named is not a master).
class redis_sync {
 public:
  explicit redis_sync(const redis_endpoint& ep);
  ~redis_sync();
  redis_sync(const redis_sync&) = delete;
  redis_sync& operator=(const redis_sync&) = delete;
  redis_reply exec(const std::vector<std::string>& args);
  // The connection's socket, for a protocol beyond request and reply (core/backup.cpp's SYNC).
  // Nothing may be pending on it when it is taken.
  int native_handle() const;

 private:
  redisContext* ctx_ = nullptr;
};

}  // namespace descprod

template <>
struct boost::system::is_error_code_enum<descprod::redis_errc> : std::true_type {};
