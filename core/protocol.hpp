// The ZeroMQ wire protocol between daemon, workers and gateways (docs/protocol.md).
// A message is two frames, [command][JSON object]; a ROUTER sees a routing frame before them.
// The first message from a peer is `hello`, carrying `protocol`; a mismatch is refused.
#pragma once

#include <boost/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

namespace descprod::protocol {

inline constexpr int version = 1;

// Worker → daemon
inline constexpr std::string_view hello = "hello";          // {protocol, role, worker, token, owner, host, slots, pool, version, walltime_end, running:[{job,attempt}]}
inline constexpr std::string_view ready = "ready";          // {credits}
inline constexpr std::string_view started = "started";      // {job, attempt, pid, host, rundir}
inline constexpr std::string_view progress = "progress";    // {job, attempt, message, done?, total?}
inline constexpr std::string_view log_lines = "log";        // {job, attempt, lines:[...]}
inline constexpr std::string_view finished = "finished";    // {job, attempt, rc, signal, timed_out, message}
inline constexpr std::string_view heartbeat = "heartbeat";  // {} (both ways)
inline constexpr std::string_view bye = "bye";              // {} (after a drain: nothing left)
inline constexpr std::string_view drain = "drain";          // {} stop sending me jobs
inline constexpr std::string_view handback = "handback";    // {job, attempt, reason} requeue, no attempt used
// Daemon → worker / gateway
inline constexpr std::string_view welcome = "welcome";      // {protocol, heartbeat_ms, lease_timeout_ms}
inline constexpr std::string_view job = "job";              // {job:{record}, attempt, app:{argv,env,time_limit_s,login_shell}}
inline constexpr std::string_view cancel = "cancel";        // {job, attempt} (also gateway → daemon: {job})
inline constexpr std::string_view reject = "reject";        // {reason}
// {reports:[[job, attempt, command], ...]}: these started/finished/handback reports are written
// (or refused as stale); sent only for reports that carried "ack": true (workers/worker.cpp)
inline constexpr std::string_view ack = "ack";
// Gateway → daemon
inline constexpr std::string_view submitted = "submitted";  // {jobs:[[id, priority, owner], ...]}

struct message {
  std::string command;
  boost::json::object body;
};

// Frames for a message (without any routing frame).
std::vector<std::string> encode(std::string_view command, const boost::json::object& body);

// Parses [command][json] starting at frames[first]. On failure returns nullopt and sets `why`.
std::optional<message> decode(const std::vector<zmq::message_t>& frames, std::size_t first,
                              std::string& why);

// Typed field access for message bodies: nullopt when missing or of the wrong type.
std::optional<long long> get_int(const boost::json::object& o, std::string_view key);
std::optional<double> get_number(const boost::json::object& o, std::string_view key);
std::optional<std::string> get_string(const boost::json::object& o, std::string_view key);
std::optional<bool> get_bool(const boost::json::object& o, std::string_view key);

}  // namespace descprod::protocol
