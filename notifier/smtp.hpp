// A plain SMTP client for descprod-notifier (RFC 5321): EHLO (HELO when refused), MAIL FROM,
// RCPT TO, DATA with the dot-stuffed message, QUIT. No TLS and no authentication: it talks to a
// relay the operator runs (docs/operators.md#e-mail-on-failure). Every step has a deadline: a
// relay that stops answering costs at most `timeout` per step.
//
// Thread-safety: one call at a time per coroutine; nothing shared.
#pragma once

#include <boost/asio.hpp>
#include <chrono>
#include <stdexcept>
#include <string>

namespace descprod::notify {

namespace net = boost::asio;

struct smtp_settings {
  std::string host;
  int port = 25;
  std::string helo = "localhost";
  std::chrono::milliseconds timeout{10000};
};

// A failed delivery. `permanent`: the relay refused it for good (a 5xx reply to MAIL, RCPT or
// DATA); retrying the same mail would fail again. Otherwise (a connection failure, a timeout, a
// 4xx reply) a later attempt may succeed.
struct smtp_error : std::runtime_error {
  smtp_error(const std::string& what, bool permanent_) : std::runtime_error(what), permanent(permanent_) {}
  bool permanent;
};

// Sends one message. `from` and `to` are bare addresses (no <>, no CR/LF: refused otherwise);
// `message` is the whole message (headers and body, CRLF line endings) before dot-stuffing.
// Throws smtp_error.
net::awaitable<void> smtp_send(smtp_settings s, std::string from, std::string to, std::string message);

}  // namespace descprod::notify
