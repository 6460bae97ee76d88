// The SMTP client (smtp.hpp). A watchdog timer closes the socket when a step overruns its
// deadline; the pending read or write then fails and the conversation ends with a timeout error.
// GCC 12 coroutine rules (docs/building.md#conventions): no lambdas and no braced temporaries in
// coroutine bodies.
#include "notifier/smtp.hpp"

#include <memory>

#include "notifier/mail.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace descprod::notify {

namespace {

using tcp = net::ip::tcp;

// One SMTP conversation: its socket, its read buffer and its watchdog.
struct conversation {
  explicit conversation(net::any_io_executor ex, std::chrono::milliseconds t)
      : socket(ex), watchdog(ex), timeout(t) {}
  tcp::socket socket;
  net::steady_timer watchdog;
  std::chrono::milliseconds timeout;
  std::string buffer;
  bool timed_out = false;
  std::string step;
};

// Arms the watchdog for one step: when it fires, the socket is closed under the pending operation.
void arm(const std::shared_ptr<conversation>& c, const std::string& step) {
  c->step = step;
  c->watchdog.expires_after(c->timeout);
  std::weak_ptr<conversation> weak = c;
  c->watchdog.async_wait([weak](const boost::system::error_code& ec) {
    if (ec) return;
    if (auto s = weak.lock()) {
      s->timed_out = true;
      boost::system::error_code ignored;
      s->socket.close(ignored);
    }
  });
}

void disarm(const std::shared_ptr<conversation>& c) { c->watchdog.cancel(); }

[[noreturn]] void fail_io(const std::shared_ptr<conversation>& c, const std::exception& e) {
  if (c->timed_out) throw smtp_error("timeout during " + c->step, false);
  throw smtp_error(c->step + ": " + e.what(), false);
}

// Reads one reply (its continuation lines "250-..." and its last line "250 ..."); returns the
// code and the text of the last line.
net::awaitable<std::pair<int, std::string>> read_reply(std::shared_ptr<conversation> c, std::string step) {
  arm(c, step);
  std::string last;
  int code = 0;
  try {
    for (int lines = 0; lines < 100; ++lines) {
      std::size_t n = co_await net::async_read_until(c->socket, net::dynamic_buffer(c->buffer, 65536), "\r\n",
                                                     net::use_awaitable);
      std::string line = c->buffer.substr(0, n - 2);
      c->buffer.erase(0, n);
      if (line.size() < 3 || line.find_first_not_of("0123456789") < 3) {
        disarm(c);
        throw smtp_error(step + ": malformed reply: " + one_line(line, 100), false);
      }
      code = std::stoi(line.substr(0, 3));
      last = line;
      if (line.size() == 3 || line[3] == ' ') break;
      if (line[3] != '-') {
        disarm(c);
        throw smtp_error(step + ": malformed reply: " + one_line(line, 100), false);
      }
    }
  } catch (const smtp_error&) {
    throw;
  } catch (const std::exception& e) {
    fail_io(c, e);
  }
  disarm(c);
  co_return std::make_pair(code, one_line(last, 200));
}

net::awaitable<void> write_all(std::shared_ptr<conversation> c, std::string data, std::string step) {
  arm(c, step);
  try {
    co_await net::async_write(c->socket, net::buffer(data), net::use_awaitable);
  } catch (const std::exception& e) {
    fail_io(c, e);
  }
  disarm(c);
}

// Sends `command` and expects a reply with a code in [lo, hi]; 5xx is permanent for the steps
// that concern this message (`permanent_5xx`), anything else temporary.
net::awaitable<void> command(std::shared_ptr<conversation> c, std::string line, std::string step, int lo,
                             int hi, bool permanent_5xx) {
  co_await write_all(c, line + "\r\n", step);
  auto reply = co_await read_reply(c, step);
  if (reply.first < lo || reply.first > hi)
    throw smtp_error(step + " refused: " + reply.second, permanent_5xx && reply.first >= 500);
}

bool bare_address(const std::string& a) {
  if (a.empty() || a.size() > 254 || a.find('@') == std::string::npos) return false;
  for (unsigned char ch : a)
    if (ch <= 0x20 || ch == 0x7f || ch == '<' || ch == '>') return false;
  return true;
}

}  // namespace

net::awaitable<void> smtp_send(smtp_settings s, std::string from, std::string to, std::string message) {
  if (!bare_address(from)) throw smtp_error("bad sender address", true);
  if (!bare_address(to)) throw smtp_error("bad recipient address", true);
  auto ex = co_await net::this_coro::executor;
  auto c = std::make_shared<conversation>(ex, s.timeout);
  tcp::resolver resolver(ex);
  arm(c, "resolve");
  tcp::resolver::results_type endpoints;
  try {
    endpoints = co_await resolver.async_resolve(s.host, std::to_string(s.port), net::use_awaitable);
  } catch (const std::exception& e) {
    disarm(c);
    throw smtp_error("resolve " + s.host + ": " + e.what(), false);
  }
  disarm(c);
  arm(c, "connect");
  try {
    co_await net::async_connect(c->socket, endpoints, net::use_awaitable);
  } catch (const std::exception& e) {
    fail_io(c, e);
  }
  disarm(c);
  auto greeting = co_await read_reply(c, "greeting");
  if (greeting.first != 220) throw smtp_error("greeting: " + greeting.second, false);
  co_await write_all(c, "EHLO " + s.helo + "\r\n", "EHLO");
  auto ehlo = co_await read_reply(c, "EHLO");
  if (ehlo.first != 250) co_await command(c, "HELO " + s.helo, "HELO", 250, 250, false);
  co_await command(c, "MAIL FROM:<" + from + ">", "MAIL FROM", 250, 250, true);
  co_await command(c, "RCPT TO:<" + to + ">", "RCPT TO", 250, 251, true);
  co_await command(c, "DATA", "DATA", 354, 354, true);
  co_await write_all(c, dot_stuff(message) + ".\r\n", "message");
  auto accepted = co_await read_reply(c, "end of data");
  if (accepted.first != 250) throw smtp_error("message refused: " + accepted.second, accepted.first >= 500);
  // The relay has the message; QUIT is a courtesy, and its failure changes nothing.
  try {
    co_await command(c, "QUIT", "QUIT", 221, 221, false);
  } catch (const std::exception&) {
  }
  boost::system::error_code ignored;
  c->socket.close(ignored);
}

}  // namespace descprod::notify
