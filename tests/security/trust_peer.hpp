// A hostile worker for the security tests: a ZeroMQ DEALER that speaks the worker protocol
// (docs/protocol.md: [command][JSON object]) with whatever ids, tokens and job numbers a test
// gives it, and reads what the daemon answers. Header only; used by tests/security/*_test.cpp of
// the trust-daemon items (worker identity, job tokens, application text).
#pragma once

#include <boost/json.hpp>
#include <chrono>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "core/redis.hpp"

namespace descprod::test {

class hostile_peer {
 public:
  hostile_peer(zmq::context_t& ctx, const std::string& endpoint) : sock_(ctx, zmq::socket_type::dealer) {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.connect(endpoint);
  }

  void send(const std::string& command, const boost::json::object& body) {
    auto text = boost::json::serialize(body);
    std::vector<zmq::const_buffer> frames{zmq::buffer(command), zmq::buffer(text)};
    (void)zmq::send_multipart(sock_, frames);
  }

  // The next message whose command is in `want` (others are skipped), within `timeout`.
  std::optional<std::pair<std::string, boost::json::object>> expect(const std::set<std::string>& want,
                                                                    std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      zmq::pollitem_t items[] = {{sock_.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 1, std::chrono::milliseconds(50));
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> parts;
      (void)zmq::recv_multipart(sock_, std::back_inserter(parts));
      if (parts.size() != 2) continue;
      std::string cmd = parts[0].to_string();
      if (!want.count(cmd)) continue;
      auto v = boost::json::parse(parts[1].to_string_view());
      if (!v.is_object()) continue;
      return std::make_pair(cmd, v.as_object());
    }
    return std::nullopt;
  }

  // A worker hello under `id` with `token`, claiming to run `running` ({job, attempt} pairs).
  static boost::json::object hello(const std::string& id, const std::string& token,
                                   const std::vector<std::pair<long long, long long>>& running = {}) {
    boost::json::object h;
    h["protocol"] = 1;
    h["role"] = "worker";
    h["worker"] = id;
    h["token"] = token;
    h["owner"] = "";
    h["host"] = "hostile-host";
    h["slots"] = 1;
    h["pool"] = "default";
    h["version"] = "hostile";
    h["walltime_end"] = 0;
    boost::json::array r;
    for (auto [job, attempt] : running) {
      boost::json::object e;
      e["job"] = job;
      e["attempt"] = attempt;
      r.push_back(e);
    }
    h["running"] = std::move(r);
    return h;
  }

  // A job report body: {worker, token, job, attempt} plus the fields given.
  static boost::json::object report(const std::string& id, const std::string& token, long long job,
                                    long long attempt, boost::json::object extra = {}) {
    extra["worker"] = id;
    extra["token"] = token;
    extra["job"] = job;
    extra["attempt"] = attempt;
    return extra;
  }

 private:
  zmq::socket_t sock_;
};

// One field of a hash ("" when absent).
inline std::string hget(redis_sync& r, const std::string& key, const std::string& field) {
  auto v = r.exec({"HGET", key, field});
  return v.is_nil() ? std::string() : v.as_string();
}

// How many times `needle` occurs in `text`.
inline std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto p = text.find(needle); p != std::string::npos; p = text.find(needle, p + needle.size())) ++n;
  return n;
}

}  // namespace descprod::test
