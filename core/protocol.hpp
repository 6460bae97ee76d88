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

// The protocol's version (docs/protocol.md, Versions): `version` is the major, checked in every
// hello (a peer of another major is refused with a reason); `minor` counts the additions made
// within it, and is carried in hello and welcome for the logs and for a peer to tell what the
// other sends. Within a major every change is additive (an optional field, a new command that
// the other side may ignore), so any two minors of one major work together.
inline constexpr int version = 1;
inline constexpr int minor = 1;

// Message bodies as sent today; docs/protocol.md has every field's meaning. `?`: optional.
// Every worker message also carries `worker` (its id) and, when it has one, `token`.
// Worker → daemon
// {protocol, role:"worker", worker, token, owner, host, slots, prefetch?, pool, version,
//  walltime_end, walltime_margin_s, running:[{job,attempt}], healthy?, health_reason?}
inline constexpr std::string_view hello = "hello";
inline constexpr std::string_view ready = "ready";        // {credits}
inline constexpr std::string_view started = "started";    // {job, attempt, pid, host, rundir, ack?}
inline constexpr std::string_view progress = "progress";  // {job, attempt, message, done?, total?}
inline constexpr std::string_view log_lines =
    "log";  // {job, attempt, lines:[...], offset, next, ends?, capped?}
// {job, attempt, rc, signal, timed_out, message, ack?}
inline constexpr std::string_view finished = "finished";
// worker → daemon {running:[{job,attempt}], healthy, health_reason?}; daemon → worker {}
inline constexpr std::string_view heartbeat = "heartbeat";
inline constexpr std::string_view bye = "bye";      // {} (after a drain: nothing left)
inline constexpr std::string_view drain = "drain";  // {} stop sending me jobs
// {job, attempt, reason, walltime?, time_limit_s?, ack?}: requeue, no attempt used
inline constexpr std::string_view handback = "handback";
// Daemon → worker / gateway
// {protocol, heartbeat_ms, lease_timeout_ms, acks?} (a gateway's welcome: {protocol})
inline constexpr std::string_view welcome = "welcome";
// {job:{record}, attempt, app:{argv, env, time_limit_s, login_shell, cores, umask, memory_max?,
//  limit_cores?}, token}
inline constexpr std::string_view job = "job";
inline constexpr std::string_view cancel = "cancel";  // {job, attempt} (also gateway → daemon: {job})
// {job, attempt, offset}: ship this job's log again from this byte offset (what Redis holds)
inline constexpr std::string_view log_from = "log_from";
inline constexpr std::string_view reject = "reject";  // {reason, retry?}
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
std::optional<message> decode(const std::vector<zmq::message_t>& frames, std::size_t first, std::string& why);

// Typed field access for message bodies: nullopt when missing or of the wrong type.
std::optional<long long> get_int(const boost::json::object& o, std::string_view key);
std::optional<double> get_number(const boost::json::object& o, std::string_view key);
std::optional<std::string> get_string(const boost::json::object& o, std::string_view key);
std::optional<bool> get_bool(const boost::json::object& o, std::string_view key);

}  // namespace descprod::protocol
