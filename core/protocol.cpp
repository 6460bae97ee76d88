// Encoding and checked decoding of protocol messages. Nothing here throws on bad input: a malformed
// peer message yields nullopt and a reason for the caller's log line.
#include "core/protocol.hpp"

#include <set>

namespace descprod::protocol {

namespace {
const std::set<std::string_view>& known_commands() {
  static const std::set<std::string_view> cmds = {hello,     ready,  started,   progress, log_lines, finished,
                                                  heartbeat, bye,    drain,     handback, welcome,   job,
                                                  cancel,    reject, submitted, ack,      log_from};
  return cmds;
}
constexpr std::size_t max_command = 32;
}  // namespace

std::vector<std::string> encode(std::string_view command, const boost::json::object& body) {
  return {std::string(command), boost::json::serialize(body)};
}

std::optional<message> decode(const std::vector<zmq::message_t>& frames, std::size_t first,
                              std::string& why) {
  if (frames.size() != first + 2) {
    why = "expected 2 frames after routing, got " +
          std::to_string(frames.size() - std::min(first, frames.size()));
    return std::nullopt;
  }
  std::string command = frames[first].to_string();
  if (command.size() > max_command || !known_commands().count(command)) {
    why = "unknown command";
    return std::nullopt;
  }
  boost::system::error_code ec;
  auto body = boost::json::parse(frames[first + 1].to_string_view(), ec);
  if (ec) {
    why = "malformed JSON body: " + ec.message();
    return std::nullopt;
  }
  if (!body.is_object()) {
    why = "body is not a JSON object";
    return std::nullopt;
  }
  return message{std::move(command), std::move(body.as_object())};
}

std::optional<long long> get_int(const boost::json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end()) return std::nullopt;
  if (it->value().is_int64()) return it->value().as_int64();
  if (it->value().is_uint64() && it->value().as_uint64() <= static_cast<std::uint64_t>(INT64_MAX))
    return static_cast<long long>(it->value().as_uint64());
  return std::nullopt;
}

std::optional<double> get_number(const boost::json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end()) return std::nullopt;
  const auto& v = it->value();
  if (v.is_double()) return v.as_double();
  if (v.is_int64()) return static_cast<double>(v.as_int64());
  if (v.is_uint64()) return static_cast<double>(v.as_uint64());
  return std::nullopt;
}

std::optional<std::string> get_string(const boost::json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end() || !it->value().is_string()) return std::nullopt;
  return std::string(it->value().as_string());
}

std::optional<bool> get_bool(const boost::json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end() || !it->value().is_bool()) return std::nullopt;
  return it->value().as_bool();
}

}  // namespace descprod::protocol
