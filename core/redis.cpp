// The Redis clients. The async client keeps one outgoing buffer and a FIFO of waiting requests:
// every command appended to the buffer gets a waiter at the back of the queue, and the read loop
// completes waiters from the front as replies arrive (Redis answers in order), so any number of
// coroutines pipeline on one connection. A waiter sleeps on its own steady_timer, which the read
// loop cancels to wake it.
#include "core/redis.hpp"

#include "core/log.hpp"

#include <hiredis/hiredis.h>

#include <boost/asio/as_tuple.hpp>
#include <charconv>
#include <chrono>
#include <optional>
#include <stdexcept>

namespace descprod {

namespace {
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

redis_reply convert(const redisReply* r) {
  redis_reply out;
  switch (r->type) {
    case REDIS_REPLY_NIL: out.type = redis_reply::kind::nil; break;
    case REDIS_REPLY_INTEGER:
      out.type = redis_reply::kind::integer;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_STRING:
      out.type = redis_reply::kind::string;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = redis_reply::kind::status;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = redis_reply::kind::error;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ARRAY:
      out.type = redis_reply::kind::array;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
      break;
    default: break;
  }
  return out;
}

// Appends a command in RESP (an array of bulk strings) without a temporary: this runs once per
// command of every pipeline, so no printf and no allocation beyond the buffer's growth.
void append_command(std::string& out, const std::vector<std::string>& args) {
  char num[24];
  auto put_len = [&](char tag, std::size_t n) {
    out += tag;
    auto r = std::to_chars(num, num + sizeof num, n);
    out.append(num, r.ptr);
    out += "\r\n";
  };
  put_len('*', args.size());
  for (const auto& a : args) {
    put_len('$', a.size());
    out += a;
    out += "\r\n";
  }
}
}  // namespace

namespace {
// How long one sentinel gets to answer (connect, AUTH, the command) before the next is asked.
constexpr std::chrono::milliseconds sentinel_answer_time{1000};
// How often the sentinel connection of a client is checked with PING (a dead sentinel is then
// replaced by the next one).
constexpr std::chrono::milliseconds sentinel_ping_interval{1000};

// Closes a client unless disarmed (destroyed) in time: the deadline of one exchange with a
// sentinel, which may be on a host that no longer answers.
class close_after {
 public:
  close_after(net::any_io_executor ex, redis_client& c, std::chrono::milliseconds d)
      : timer_(std::make_shared<net::steady_timer>(ex, d)), armed_(std::make_shared<bool>(true)) {
    timer_->async_wait([c = &c, armed = armed_](boost::system::error_code ec) {
      if (!ec && *armed) c->close();
    });
  }
  ~close_after() {
    *armed_ = false;
    timer_->cancel();
  }
  close_after(const close_after&) = delete;
  close_after& operator=(const close_after&) = delete;

 private:
  std::shared_ptr<net::steady_timer> timer_;
  std::shared_ptr<bool> armed_;
};

redis_endpoint sentinel_endpoint(const redis_endpoint& ep, const redis_address& s) {
  redis_endpoint out;
  out.host = s.host;
  out.port = s.port;
  out.username = ep.sentinel_username;
  out.password = ep.sentinel_password;
  return out;
}

// The address in a SENTINEL get-master-addr-by-name answer ([ip, port]), if it is one.
std::optional<redis_address> master_address(const redis_reply& r) {
  if (r.type != redis_reply::kind::array || r.elements.size() != 2) return std::nullopt;
  unsigned port = 0;
  const auto& p = r.elements[1].str;
  auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
  if (ec != std::errc() || end != p.data() + p.size() || port == 0 || port > 65535) return std::nullopt;
  if (r.elements[0].str.empty()) return std::nullopt;
  return redis_address{r.elements[0].str, static_cast<std::uint16_t>(port)};
}

// "" when a ROLE answer says master; otherwise why the server at `at` is not used. A server that
// may not be asked (an ACL without ROLE) is taken at the sentinels' word.
std::string not_a_master(const redis_reply& role, const redis_address& at) {
  if (role.is_error())
    return role.str.rfind("NOPERM", 0) == 0 ? "" : "MASTERDOWN ROLE at " + at.str() + ": " + role.str;
  if (role.type == redis_reply::kind::array && !role.elements.empty() && role.elements[0].str == "master")
    return "";
  std::string said =
      role.type == redis_reply::kind::array && !role.elements.empty() ? role.elements[0].str : "?";
  return "READONLY the sentinels named " + at.str() + " as the master, but it is a " + said;
}

// A +switch-master message for `name` ("<name> <old ip> <old port> <new ip> <new port>"): the
// new master's address.
std::optional<redis_address> switched_master(const redis_reply& msg, const std::string& name) {
  if (msg.type != redis_reply::kind::array || msg.elements.size() != 3 || msg.elements[0].str != "message" ||
      msg.elements[1].str != "+switch-master")
    return std::nullopt;
  std::vector<std::string> words;
  std::string_view rest = msg.elements[2].str;
  while (!rest.empty()) {
    auto sp = rest.find(' ');
    words.emplace_back(rest.substr(0, sp));
    if (sp == std::string_view::npos) break;
    rest.remove_prefix(sp + 1);
  }
  if (words.size() != 5 || words[0] != name) return std::nullopt;
  redis_reply addr;
  addr.type = redis_reply::kind::array;
  addr.elements.resize(2);
  addr.elements[0].str = words[3];
  addr.elements[1].str = words[4];
  return master_address(addr);
}

}  // namespace

// What a client watching the sentinels does with a pushed message: when the master it is
// connected to is no longer the master, it ends that connection (its callers reconnect).
struct redis_switch_listener {
  std::shared_ptr<bool> alive;
  redis_client* client;
  std::shared_ptr<net::generic::stream_protocol::socket> sock;
  void operator()(const redis_reply& msg) const {
    if (!*alive || client->socket_ != sock || !client->connected_) return;
    auto to = switched_master(msg, client->ep_.master_name);
    if (!to || *to == client->master_) return;
    log::warn("redis master switched master_name={} from={} to={}: reconnecting", client->ep_.master_name,
              client->master_.str(), to->str());
    client->drop(net::error::connection_reset);
  }
};

struct redis_client::sentinel_watch {
  explicit sentinel_watch(net::any_io_executor ex) : timer(std::move(ex)) {}
  net::steady_timer timer;
  std::shared_ptr<redis_client> sub;
  void end() {
    timer.cancel();
    if (sub) sub->close();
  }
};

std::chrono::milliseconds reconnect_backoff_max(const redis_endpoint& ep, std::chrono::milliseconds max) {
  return ep.via_sentinels() ? std::min(max, std::chrono::milliseconds(250)) : max;
}

std::string redis_endpoint::describe() const {
  if (via_sentinels()) {
    std::string out = "sentinel:" + master_name + "@";
    for (std::size_t i = 0; i < sentinels.size(); ++i) out += (i ? "," : "") + sentinels[i].str();
    return out;
  }
  return unix_path.empty() ? host + ":" + std::to_string(port) : "unix:" + unix_path;
}

net::awaitable<redis_address> async_sentinel_master(net::any_io_executor ex, const redis_endpoint& ep,
                                                    std::chrono::milliseconds per_sentinel) {
  std::string why;
  for (const auto& s : ep.sentinels) {
    redis_client c(ex, sentinel_endpoint(ep, s));
    close_after deadline(ex, c, per_sentinel);
    std::string failed;
    try {
      co_await c.async_connect();
      auto r = co_await c.async_exec(redis_cmd("SENTINEL", "get-master-addr-by-name", ep.master_name));
      auto addr = master_address(r);
      if (addr) co_return *addr;
      if (r.is_error()) failed = r.str;
      else failed = "names no master '" + ep.master_name + "'";
    } catch (const std::exception& e) {
      failed = e.what();
    }
    if (!why.empty()) why += "; ";
    why += s.str() + ": " + failed;
  }
  throw redis_unavailable("MASTERDOWN no sentinel named the master '" + ep.master_name + "': " + why);
}

namespace {
class redis_category_impl : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "redis"; }
  std::string message(int ev) const override {
    return ev == static_cast<int>(redis_errc::unavailable) ? "Redis is unavailable" : "redis error";
  }
};
}  // namespace

const boost::system::error_category& redis_category() {
  static const redis_category_impl cat;
  return cat;
}

boost::system::error_code make_error_code(redis_errc e) { return {static_cast<int>(e), redis_category()}; }

bool redis_unavailable_error(std::string_view message) {
  auto word = message.substr(0, message.find(' '));
  for (std::string_view code :
       {"LOADING", "BUSY", "MISCONF", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS"})
    if (word == code) return true;
  return false;
}

boost::system::system_error redis_unavailable(const std::string& message) {
  return boost::system::system_error(make_error_code(redis_errc::unavailable), message);
}

bool redis_reply::is_unavailable() const { return type == kind::error && redis_unavailable_error(str); }

std::string redis_reply::as_string() const {
  if (type == kind::integer) return std::to_string(integer);
  return str;
}

long long redis_reply::as_integer() const {
  if (type == kind::integer) return integer;
  try {
    return std::stoll(str);
  } catch (...) {
    return 0;
  }
}

struct redis_client::pending {
  pending(net::any_io_executor ex, std::size_t n)
      : timer(std::move(ex), std::chrono::steady_clock::time_point::max()), expected(n) {
    replies.reserve(n);
  }
  net::steady_timer timer;
  std::vector<redis_reply> replies;  // in command order, `expected` of them once done
  std::size_t expected;
  boost::system::error_code ec;
  bool done = false;
};

redis_client::redis_client(net::any_io_executor ex, redis_endpoint ep)
    : ex_(std::move(ex)), ep_(std::move(ep)), alive_(std::make_shared<bool>(true)) {}

redis_client::~redis_client() {
  *alive_ = false;
  close();
}

void redis_client::close() {
  if (auto w = watch_.lock()) w->end();
  if (socket_) {
    boost::system::error_code ignored;
    socket_->close(ignored);
  }
  connected_ = false;
  fail_all(net::error::operation_aborted);
  if (reader_) {
    redisReaderFree(reader_);
    reader_ = nullptr;
  }
}

net::awaitable<void> redis_client::connect_socket(const std::string& unix_path, const std::string& host,
                                                  std::uint16_t port) {
  socket_ = std::make_shared<net::generic::stream_protocol::socket>(ex_);
  if (!unix_path.empty()) {
    co_await socket_->async_connect(net::local::stream_protocol::endpoint(unix_path), net::use_awaitable);
    co_return;
  }
  net::ip::tcp::resolver resolver(ex_);
  auto results = co_await resolver.async_resolve(host, std::to_string(port), net::use_awaitable);
  boost::system::error_code last = net::error::host_not_found;
  for (const auto& entry : results) {
    socket_ = std::make_shared<net::generic::stream_protocol::socket>(ex_);
    auto [ec] = co_await socket_->async_connect(entry.endpoint(), use_tuple);
    if (!ec) {
      socket_->set_option(net::ip::tcp::no_delay(true));
      last = {};
      break;
    }
    last = ec;
  }
  if (last) throw boost::system::system_error(last, "redis connect");
}

net::awaitable<void> redis_client::async_connect() {
  close();
  master_ = {};
  if (ep_.via_sentinels()) {
    auto master = co_await async_sentinel_master(ex_, ep_, sentinel_answer_time);
    co_await connect_socket("", master.host, master.port);
    master_ = master;
  } else {
    co_await connect_socket(ep_.unix_path, ep_.host, ep_.port);
  }
  reader_ = redisReaderCreate();
  connected_ = true;
  outbuf_.clear();
  writing_ = false;
  net::co_spawn(ex_, read_loop(), net::detached);
  if (!ep_.password.empty()) {
    std::vector<std::string> auth;
    auth.push_back("AUTH");
    if (!ep_.username.empty()) auth.push_back(ep_.username);
    auth.push_back(ep_.password);
    auto r = co_await async_exec(std::move(auth));
    if (r.is_error()) {
      close();
      throw boost::system::system_error(net::error::access_denied, "redis AUTH: " + r.str);
    }
  }
  if (ep_.via_sentinels()) {
    // A sentinel's answer can be stale (a failover under way, or a sentinel cut off from the
    // others): only a server that says it is a master is used.
    auto role = co_await async_exec(redis_cmd("ROLE"));
    auto why = not_a_master(role, master_);
    if (!why.empty()) {
      close();
      throw redis_unavailable(why);
    }
    net::co_spawn(ex_, watch_sentinels(this, alive_, socket_), net::detached);
  }
}

void redis_client::drop(boost::system::error_code ec) {
  if (!connected_) return;
  connected_ = false;
  if (auto w = watch_.lock()) w->end();
  boost::system::error_code ignored;
  if (socket_) socket_->close(ignored);
  fail_all(ec);
}

// Runs while the connection `sock` of `self` lasts: subscribed to +switch-master on one sentinel
// (the next one when it stops answering PING). A switch to another master ends the connection. A
// switch missed while no sentinel was listened to shows as READONLY from the demoted server
// (read_loop) or as its connection lost.
net::awaitable<void> redis_client::watch_sentinels(
    redis_client* self, std::shared_ptr<bool> alive,
    std::shared_ptr<net::generic::stream_protocol::socket> sock) {
  auto ex = self->ex_;
  const auto ep = self->ep_;
  auto watch = std::make_shared<sentinel_watch>(ex);
  self->watch_ = watch;
  std::size_t next = 0;
  while (*alive && self->socket_ == sock && self->connected_) {
    const auto& at = ep.sentinels[next++ % ep.sentinels.size()];
    watch->sub = std::make_shared<redis_client>(ex, sentinel_endpoint(ep, at));
    auto sub = watch->sub;
    sub->on_push = redis_switch_listener{alive, self, sock};
    try {
      {
        close_after deadline(ex, *sub, sentinel_answer_time);
        co_await sub->async_connect();
        co_await sub->async_exec(redis_cmd("SUBSCRIBE", "+switch-master"));
      }
      while (*alive && self->socket_ == sock && self->connected_) {
        watch->timer.expires_after(sentinel_ping_interval);
        co_await watch->timer.async_wait(use_tuple);
        if (!*alive || self->socket_ != sock || !self->connected_) break;
        close_after deadline(ex, *sub, sentinel_answer_time);
        co_await sub->async_exec(redis_cmd("PING"));
      }
    } catch (const std::exception& e) {
      log::debug("sentinel watch failed sentinel={} error={}", at.str(), e.what());
    }
    sub->close();
    if (!*alive || self->socket_ != sock || !self->connected_) break;
    watch->timer.expires_after(std::chrono::milliseconds(200));  // then the next sentinel
    co_await watch->timer.async_wait(use_tuple);
  }
  if (auto w = watch->sub) w->close();
  watch->sub.reset();
}

std::shared_ptr<redis_client::pending> redis_client::enqueue(const std::vector<std::string>* cmds,
                                                             std::size_t n) {
  auto p = std::make_shared<pending>(ex_, n);
  if (!connected_) {
    p->ec = net::error::not_connected;
    p->done = true;
    return p;
  }
  if (n == 0) {
    p->done = true;
    return p;
  }
  for (std::size_t i = 0; i < n; ++i) append_command(outbuf_, cmds[i]);
  pending_.push_back(p);
  return p;
}

void redis_client::start_writer() {
  if (writing_ || outbuf_.empty() || !connected_) return;
  writing_ = true;
  net::co_spawn(ex_, write_loop(), net::detached);
}

net::awaitable<void> redis_client::write_loop() {
  auto alive = alive_;
  auto sock = socket_;
  std::string buf;
  while (*alive && connected_ && sock == socket_ && !outbuf_.empty()) {
    buf.clear();
    buf.swap(outbuf_);
    auto [ec, n] = co_await net::async_write(*sock, net::buffer(buf), use_tuple);
    if (!*alive) co_return;
    if (ec) {
      if (sock == socket_) {
        connected_ = false;
        fail_all(ec);
      }
      break;
    }
  }
  if (*alive && sock == socket_) writing_ = false;
}

net::awaitable<void> redis_client::read_loop() {
  auto alive = alive_;
  auto sock = socket_;
  auto* reader = reader_;
  std::vector<char> buf(64 * 1024);
  while (true) {
    auto [ec, n] = co_await sock->async_read_some(net::buffer(buf), use_tuple);
    if (!*alive || sock != socket_) co_return;
    if (ec) {
      connected_ = false;
      fail_all(ec);
      co_return;
    }
    redisReaderFeed(reader, buf.data(), n);
    while (true) {
      void* raw = nullptr;
      if (redisReaderGetReply(reader, &raw) != REDIS_OK) {
        connected_ = false;
        fail_all(net::error::invalid_argument);  // protocol error from the server
        co_return;
      }
      if (!raw) break;
      auto* r = static_cast<redisReply*>(raw);
      // A server that answers READONLY was made a replica under this client (a failover): behind
      // sentinels, the connection ends after this reply and the next connect asks them again.
      const bool demoted = ep_.via_sentinels() && r->type == REDIS_REPLY_ERROR &&
                           std::string_view(r->str, r->len).rfind("READONLY", 0) == 0;
      // Subscribed (on_push set), a published message may come before the reply to a command.
      const bool pushed = on_push && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                          r->element[0]->type == REDIS_REPLY_STRING &&
                          std::string_view(r->element[0]->str, r->element[0]->len) == "message";
      if (!pending_.empty() && !pushed) {
        auto& p = pending_.front();
        p->replies.push_back(convert(r));
        if (p->replies.size() >= p->expected) {
          p->done = true;
          p->timer.cancel();
          pending_.pop_front();
        }
      } else if (on_push) {
        on_push(convert(r));
      }
      freeReplyObject(r);
      if (!*alive || sock != socket_) co_return;  // on_push may have closed or replaced it
      if (demoted) {
        log::warn("redis answered READONLY: the master became a replica, reconnecting through the sentinels");
        drop(net::error::connection_reset);
        co_return;
      }
    }
  }
}

void redis_client::fail_all(boost::system::error_code ec) {
  auto waiting = std::move(pending_);
  pending_.clear();
  for (auto& p : waiting) {
    p->ec = ec;
    p->done = true;
    p->timer.cancel();
  }
}

net::awaitable<void> redis_client::await_replies(std::shared_ptr<pending> p) {
  while (!p->done) co_await p->timer.async_wait(use_tuple);
  if (p->ec) throw boost::system::system_error(p->ec, "redis");
  for (const auto& r : p->replies)
    if (r.is_unavailable()) throw redis_unavailable(r.str);
}

net::awaitable<redis_reply> redis_client::async_exec(std::vector<std::string> args) {
  auto p = enqueue(&args, 1);
  start_writer();
  co_await await_replies(p);
  co_return std::move(p->replies.front());
}

net::awaitable<std::vector<redis_reply>> redis_client::async_pipeline(
    std::vector<std::vector<std::string>> cmds) {
  // One batch: its replies arrive in order on the one connection, and the batch is woken once.
  auto p = enqueue(cmds.data(), cmds.size());
  start_writer();
  co_await await_replies(p);
  co_return std::move(p->replies);
}

namespace {
redisContext* sync_connect(const std::string& unix_path, const std::string& host, std::uint16_t port,
                           timeval tv) {
  auto* ctx = unix_path.empty() ? redisConnectWithTimeout(host.c_str(), port, tv)
                                : redisConnectUnixWithTimeout(unix_path.c_str(), tv);
  if (!ctx || ctx->err) {
    std::string why = ctx ? ctx->errstr : "out of memory";
    if (ctx) redisFree(ctx);
    throw std::runtime_error("cannot connect to Redis at " +
                             (unix_path.empty() ? host + ":" + std::to_string(port) : unix_path) + ": " +
                             why);
  }
  return ctx;
}
}  // namespace

namespace {
// As redis_client: the first sentinel that names the master.
redis_address sync_sentinel_master(const redis_endpoint& ep) {
  std::string why;
  for (const auto& s : ep.sentinels) {
    std::string failed;
    try {
      redis_sync sentinel(sentinel_endpoint(ep, s));
      auto r = sentinel.exec({"SENTINEL", "get-master-addr-by-name", ep.master_name});
      if (auto master = master_address(r)) return *master;
      failed = r.is_error() ? r.str : "names no master '" + ep.master_name + "'";
    } catch (const std::exception& e) {
      failed = e.what();
    }
    why += (why.empty() ? "" : "; ") + s.str() + ": " + failed;
  }
  throw std::runtime_error("no sentinel named the Redis master '" + ep.master_name + "': " + why);
}
}  // namespace

redis_sync::redis_sync(const redis_endpoint& ep) {
  const timeval tv{5, 0};
  std::optional<redis_address> master;
  if (ep.via_sentinels()) {
    master = sync_sentinel_master(ep);
    ctx_ = sync_connect("", master->host, master->port, tv);
  } else {
    ctx_ = sync_connect(ep.unix_path, ep.host, ep.port, tv);
  }
  try {
    if (!ep.password.empty()) {
      auto r = ep.username.empty() ? exec({"AUTH", ep.password}) : exec({"AUTH", ep.username, ep.password});
      if (r.is_error()) throw std::runtime_error("Redis AUTH failed: " + r.str);
    }
    // Behind sentinels only a server that says it is a master is used.
    if (master)
      if (auto why = not_a_master(exec({"ROLE"}), *master); !why.empty()) throw std::runtime_error(why);
  } catch (...) {
    redisFree(ctx_);
    ctx_ = nullptr;
    throw;
  }
}

redis_sync::~redis_sync() {
  if (ctx_) redisFree(ctx_);
}

int redis_sync::native_handle() const { return ctx_->fd; }

redis_reply redis_sync::exec(const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* r = static_cast<redisReply*>(
      redisCommandArgv(ctx_, static_cast<int>(args.size()), argv.data(), lens.data()));
  if (!r) throw std::runtime_error(std::string("Redis: ") + ctx_->errstr);
  auto out = convert(r);
  freeReplyObject(r);
  return out;
}

}  // namespace descprod
