// The Redis clients. The async client keeps one outgoing buffer and a FIFO of waiting requests:
// every command appended to the buffer gets a waiter at the back of the queue, and the read loop
// completes waiters from the front as replies arrive (Redis answers in order), so any number of
// coroutines pipeline on one connection. A waiter sleeps on its own steady_timer, which the read
// loop cancels to wake it.
#include "core/redis.hpp"

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

net::awaitable<void> redis_client::async_connect() {
  close();
  socket_ = std::make_shared<net::generic::stream_protocol::socket>(ex_);
  if (!ep_.unix_path.empty()) {
    co_await socket_->async_connect(net::local::stream_protocol::endpoint(ep_.unix_path), net::use_awaitable);
  } else {
    net::ip::tcp::resolver resolver(ex_);
    auto results = co_await resolver.async_resolve(ep_.host, std::to_string(ep_.port), net::use_awaitable);
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
      if (!pending_.empty()) {
        auto& p = pending_.front();
        p->replies.push_back(convert(r));
        if (p->replies.size() >= p->expected) {
          p->done = true;
          p->timer.cancel();
          pending_.pop_front();
        }
      }
      freeReplyObject(r);
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

redis_sync::redis_sync(const redis_endpoint& ep) {
  timeval tv{5, 0};
  ctx_ = ep.unix_path.empty() ? redisConnectWithTimeout(ep.host.c_str(), ep.port, tv)
                              : redisConnectUnixWithTimeout(ep.unix_path.c_str(), tv);
  if (!ctx_ || ctx_->err) {
    std::string why = ctx_ ? ctx_->errstr : "out of memory";
    if (ctx_) redisFree(ctx_);
    ctx_ = nullptr;
    throw std::runtime_error("cannot connect to Redis at " +
                             (ep.unix_path.empty() ? ep.host + ":" + std::to_string(ep.port) : ep.unix_path) +
                             ": " + why);
  }
  if (!ep.password.empty()) {
    auto r = ep.username.empty() ? exec({"AUTH", ep.password}) : exec({"AUTH", ep.username, ep.password});
    if (r.is_error()) throw std::runtime_error("Redis AUTH failed: " + r.str);
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
