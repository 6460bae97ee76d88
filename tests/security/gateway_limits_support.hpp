// Raw loopback clients for the gateway-limits security tests (connection_caps, login_throttle,
// stream_end, headers): a TCP connection from a chosen source address (any 127.x.y.z is
// loopback, so tests can tell "the flooder" from "the others"), HTTP requests with exactly the
// header lines given (two Authorization headers, a foreign Host), and Server-Sent Events streams
// kept open. POSIX sockets with receive/send timeouts: every call is bounded.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace descprod::test::limits {

using namespace std::chrono_literals;

// An owned socket descriptor.
class fd_socket {
 public:
  fd_socket() = default;
  explicit fd_socket(int fd) : fd_(fd) {}
  fd_socket(fd_socket&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  fd_socket& operator=(fd_socket&& o) noexcept {
    if (this != &o) {
      close();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~fd_socket() { close(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Connects from `source` (e.g. "127.0.0.2", port chosen by the kernel) to 127.0.0.1:port.
// Invalid on failure.
inline fd_socket connect_from(const std::string& source, int port, std::chrono::milliseconds timeout = 10s) {
  fd_socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return s;
  timeval tv{};
  tv.tv_sec = timeout.count() / 1000;
  tv.tv_usec = (timeout.count() % 1000) * 1000;
  ::setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(s.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  ::setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  ::inet_pton(AF_INET, source.c_str(), &src.sin_addr);
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) return fd_socket();
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&dst), sizeof dst) != 0) return fd_socket();
  return s;
}

inline bool send_all(int fd, const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    auto n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

// Whether the peer has closed (EOF or reset) the connection, waiting at most `wait`.
inline bool peer_closed(int fd, std::chrono::milliseconds wait = 0ms) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0) return false;
  char buf[4096];
  while (true) {
    auto n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
    // data (an answer or events): read on
  }
}

struct raw_response {
  int status = 0;  // 0: no answer (connection closed or reset before a status line)
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

inline std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Parses the status line and headers of `head` (up to and without the blank line).
inline raw_response parse_head(const std::string& head) {
  raw_response r;
  auto eol = head.find("\r\n");
  std::string status_line = head.substr(0, eol);
  if (status_line.rfind("HTTP/1.", 0) == 0 && status_line.size() >= 12)
    r.status = std::atoi(status_line.c_str() + 9);
  std::size_t pos = eol == std::string::npos ? head.size() : eol + 2;
  while (pos < head.size()) {
    auto end = head.find("\r\n", pos);
    if (end == std::string::npos) end = head.size();
    auto line = head.substr(pos, end - pos);
    auto colon = line.find(':');
    if (colon != std::string::npos) {
      auto v = line.substr(colon + 1);
      while (!v.empty() && v.front() == ' ') v.erase(0, 1);
      auto& slot = r.headers[lower(line.substr(0, colon))];
      if (!slot.empty()) slot += ", ";
      slot += v;
    }
    pos = end + 2;
  }
  return r;
}

// Reads until the end of the response header; returns the header and leaves any body bytes read
// past it in `rest`. Empty when the connection ended or timed out first.
inline std::string read_head(int fd, std::string& rest) {
  std::string buf;
  char tmp[4096];
  while (buf.find("\r\n\r\n") == std::string::npos && buf.size() < 65536) {
    auto n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return {};
    buf.append(tmp, static_cast<std::size_t>(n));
  }
  auto end = buf.find("\r\n\r\n");
  if (end == std::string::npos) return {};
  rest = buf.substr(end + 4);
  return buf.substr(0, end);
}

// One request with `Connection: close` from `source`, with exactly the header lines given
// ("Name: value"; add "Host: ..." yourself or let host be 127.0.0.1:port when `host` is empty).
// The whole answer is read until the server closes.
inline raw_response raw_request(const std::string& source, int port, const std::string& method,
                                const std::string& target, const std::vector<std::string>& header_lines = {},
                                const std::string& body = "", std::string host = "") {
  raw_response out;
  auto s = connect_from(source, port);
  if (!s.valid()) return out;
  if (host.empty()) host = "127.0.0.1:" + std::to_string(port);
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n";
  for (const auto& h : header_lines) req += h + "\r\n";
  if (!body.empty() || method == "POST") {
    bool typed = false;
    for (const auto& h : header_lines) typed = typed || lower(h).rfind("content-type:", 0) == 0;
    if (!typed) req += "Content-Type: application/json\r\n";
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  req += "\r\n" + body;
  if (!send_all(s.get(), req)) return out;
  std::string rest;
  auto head = read_head(s.get(), rest);
  if (head.empty()) return out;
  out = parse_head(head);
  out.body = rest;
  char tmp[4096];
  while (out.body.size() < (1u << 22)) {
    auto n = ::recv(s.get(), tmp, sizeof tmp, 0);
    if (n <= 0) break;
    out.body.append(tmp, static_cast<std::size_t>(n));
  }
  return out;
}

// An SSE stream: GET `target` with the header lines given; open() returns the status (200: the
// stream is open on `sock`).
struct sse_stream {
  fd_socket sock;
  int status = 0;
  std::map<std::string, std::string> headers;
  std::string received;  // bytes after the header (a 429's body, or the stream's text)

  int open(const std::string& source, int port, const std::string& target,
           const std::vector<std::string>& header_lines) {
    sock = connect_from(source, port);
    if (!sock.valid()) return status = 0;
    std::string req = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                      "\r\nAccept: text/event-stream\r\n";
    for (const auto& h : header_lines) req += h + "\r\n";
    req += "\r\n";
    if (!send_all(sock.get(), req)) return status = 0;
    std::string rest;
    auto head = read_head(sock.get(), rest);
    if (head.empty()) return status = 0;
    auto r = parse_head(head);
    headers = r.headers;
    received = rest;
    return status = r.status;
  }
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
  // Reads what has arrived (waiting at most `wait` for the first bytes); false once the server
  // closed the stream.
  bool pump(std::chrono::milliseconds wait) {
    pollfd p{sock.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0) return true;
    char buf[8192];
    while (true) {
      auto n = ::recv(sock.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n == 0) return false;
      if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
      received.append(buf, static_cast<std::size_t>(n));
    }
  }
};

}  // namespace descprod::test::limits
