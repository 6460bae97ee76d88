// The ZeroMQ message codec: [command][JSON object] frames, checked decoding and typed field access;
// every command docs/protocol.md lists round-trips, and a malformed body of each is refused.
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/protocol.hpp"

namespace descprod {
namespace {

namespace json = boost::json;

std::vector<zmq::message_t> frames_of(const std::vector<std::string>& parts) {
  std::vector<zmq::message_t> out;
  for (const auto& p : parts) out.emplace_back(p.data(), p.size());
  return out;
}

TEST(Protocol, EncodeGivesCommandAndJsonFrames) {
  json::object body;
  body["job"] = 81;
  auto f = protocol::encode(protocol::started, body);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0], "started");
  EXPECT_EQ(json::parse(f[1]), json::value(body));
}

TEST(Protocol, DecodeRoundTripsEncodeAfterARoutingFrame) {
  json::object body;
  body["job"] = 81;
  body["attempt"] = 2;
  body["message"] = "it's \"quoted\" \xc3\xbc";
  body["timed_out"] = false;
  json::array running;
  running.push_back(json::value(1));
  body["running"] = running;
  auto parts = protocol::encode(protocol::finished, body);
  parts.insert(parts.begin(), std::string("\x00\x01worker", 8));
  std::string why;
  auto m = protocol::decode(frames_of(parts), 1, why);
  ASSERT_TRUE(m) << why;
  EXPECT_EQ(m->command, "finished");
  EXPECT_EQ(m->body, body);
}

TEST(Protocol, DecodeWithoutRoutingFrameStartsAtZero) {
  auto parts = protocol::encode(protocol::heartbeat, json::object());
  std::string why;
  auto m = protocol::decode(frames_of(parts), 0, why);
  ASSERT_TRUE(m) << why;
  EXPECT_EQ(m->command, "heartbeat");
  EXPECT_TRUE(m->body.empty());
}

// Every command of the protocol with a body as docs/protocol.md describes it (the tables of
// "Worker → daemon", "Daemon → worker" and "Gateway → daemon"; hello, heartbeat and cancel are
// used both ways, with the bodies of each direction).
struct sample {
  std::string_view command;
  const char* body;
};
const std::vector<sample>& samples() {
  static const std::vector<sample> all = {
      // Worker → daemon
      {protocol::hello,
       R"({"protocol":1,"role":"worker","worker":"w1","token":"dp_abc","owner":"ops","host":"nid001",)"
       R"("slots":4,"prefetch":1,"pool":"p","site":"nersc","version":"0.1.0","walltime_end":1700000000,)"
       R"("walltime_margin_s":60,"running":[{"job":7,"attempt":2}],"healthy":true,"health_reason":""})"},
      {protocol::ready, R"({"credits":3})"},
      {protocol::started,
       R"({"job":7,"attempt":2,"pid":4242,"host":"nid001","rundir":"/out/jobs/job000007","ack":true})"},
      {protocol::progress, R"({"job":7,"attempt":2,"message":"half way","done":1,"total":2})"},
      {protocol::log_lines,
       R"({"job":7,"attempt":2,"lines":["one","two \u00fc"],"offset":0,"next":12,"ends":[4,12]})"},
      {protocol::finished,
       R"({"job":7,"attempt":2,"rc":0,"signal":0,"timed_out":false,"message":"all good","ack":true})"},
      {protocol::heartbeat, R"({"running":[7,8],"healthy":false,"health_reason":"disk full"})"},
      {protocol::drain, "{}"},
      {protocol::handback,
       R"({"job":7,"attempt":2,"reason":"walltime","walltime":true,"time_limit_s":3600,"ack":true})"},
      {protocol::bye, "{}"},
      // Daemon → worker
      {protocol::welcome, R"({"protocol":1,"heartbeat_ms":200,"lease_timeout_ms":3000,"acks":true})"},
      {protocol::reject, R"({"reason":"unknown or revoked worker token","retry":false})"},
      {protocol::job,
       R"({"job":{"id":"7","jobtype":"mysleep","config":"1"},"attempt":2,)"
       R"("app":{"argv":["runapp-mysleep","1"],"env":{"A":"b"},"time_limit_s":0.5,"login_shell":false,)"
       R"("cores":1,"umask":23,"memory_max":1048576,"limit_cores":2},"token":"dp_job"})"},
      {protocol::cancel, R"({"job":7,"attempt":2})"},
      {protocol::log_from, R"({"job":7,"attempt":2,"offset":4096})"},
      {protocol::ack, R"({"reports":[[7,2,"started"],[8,1,"finished"],[9,1,"handback"]]})"},
      {protocol::heartbeat, "{}"},
      // Gateway → daemon
      {protocol::hello, R"({"protocol":1,"role":"gateway"})"},
      {protocol::submitted, R"({"jobs":[[7,0,"alice"],[8,-5,"bob"],[9,3],[10,0,"carol","nersc,slac"]]})"},
      {protocol::cancel, R"({"job":7})"},
  };
  return all;
}

// The commands docs/protocol.md's tables list (their first column).
std::set<std::string> documented_commands() {
  std::ifstream in(std::string(DESCPROD_SOURCE_DIR) + "/docs/protocol.md");
  std::set<std::string> out;
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("| `", 0) == 0) out.insert(line.substr(3, line.find('`', 3) - 3));
  return out;
}

TEST(Protocol, TheSamplesCoverEveryDocumentedCommand) {
  std::set<std::string> sampled;
  for (const auto& s : samples()) sampled.insert(std::string(s.command));
  auto documented = documented_commands();
  ASSERT_FALSE(documented.empty()) << "no command table found in docs/protocol.md";
  EXPECT_EQ(sampled, documented);
}

TEST(Protocol, EveryCommandRoundTripsThroughEncodeAndDecode) {
  for (const auto& s : samples()) {
    auto body = json::parse(s.body).as_object();
    auto parts = protocol::encode(s.command, body);
    ASSERT_EQ(parts.size(), 2u);
    EXPECT_EQ(parts[0], s.command);
    parts.insert(parts.begin(), std::string("\x00\x01peer", 6));
    std::string why;
    auto m = protocol::decode(frames_of(parts), 1, why);
    ASSERT_TRUE(m) << s.command << ": " << why;
    EXPECT_EQ(m->command, s.command);
    EXPECT_EQ(m->body, body) << s.command;
    // The typed readers see the fields a receiver reads.
    if (body.contains("job") && body.at("job").is_int64()) {
      EXPECT_EQ(protocol::get_int(m->body, "job"), 7) << s.command;
    }
    if (body.contains("attempt")) {
      EXPECT_EQ(protocol::get_int(m->body, "attempt"), 2) << s.command;
    }
  }
}

TEST(Protocol, EveryCommandWithAMalformedBodyIsRefused) {
  for (const auto& s : samples()) {
    std::string full = s.body;
    // Not JSON: cut short (by its last byte, by half), a bare word, nothing.
    for (const std::string& bad : {full.substr(0, full.size() - 1), full.substr(0, full.size() / 2),
                                   std::string("{") + std::string(s.command) + "}", std::string("")}) {
      std::string why;
      EXPECT_FALSE(protocol::decode(frames_of({std::string(s.command), bad}), 0, why))
          << s.command << " " << bad;
      EXPECT_EQ(why.rfind("malformed JSON body", 0), 0u) << s.command << " " << bad << ": " << why;
    }
    // JSON, but not an object.
    for (const std::string& bad :
         {"[" + full + "]", std::string("\"") + std::string(s.command) + "\"", std::string("7")}) {
      std::string why;
      EXPECT_FALSE(protocol::decode(frames_of({std::string(s.command), bad}), 0, why))
          << s.command << " " << bad;
      EXPECT_EQ(why, "body is not a JSON object") << s.command;
    }
    // A well-formed body with a frame too many.
    std::string why;
    EXPECT_FALSE(protocol::decode(frames_of({std::string(s.command), full, "{}"}), 0, why)) << s.command;
    EXPECT_EQ(why, "expected 2 frames after routing, got 3") << s.command;
  }
}

TEST(Protocol, DecodeRejectsWrongFrameCount) {
  std::string why;
  EXPECT_FALSE(protocol::decode(frames_of({"id", "ready"}), 1, why));
  EXPECT_EQ(why, "expected 2 frames after routing, got 1");
  why.clear();
  EXPECT_FALSE(protocol::decode(frames_of({"id", "ready", "{}", "extra"}), 1, why));
  EXPECT_EQ(why, "expected 2 frames after routing, got 3");
  why.clear();
  EXPECT_FALSE(protocol::decode(frames_of({}), 1, why));
  EXPECT_EQ(why, "expected 2 frames after routing, got 0");
}

TEST(Protocol, DecodeRejectsUnknownCommand) {
  std::string why;
  EXPECT_FALSE(protocol::decode(frames_of({"launch_missiles", "{}"}), 0, why));
  EXPECT_EQ(why, "unknown command");
  why.clear();
  EXPECT_FALSE(protocol::decode(frames_of({std::string(1000, 'h'), "{}"}), 0, why));
  EXPECT_EQ(why, "unknown command");
  why.clear();
  EXPECT_FALSE(protocol::decode(frames_of({"Hello", "{}"}), 0, why));  // case matters
  EXPECT_EQ(why, "unknown command");
}

TEST(Protocol, DecodeRejectsMalformedJson) {
  std::string why;
  EXPECT_FALSE(protocol::decode(frames_of({"ready", "{\"credits\": "}), 0, why));
  EXPECT_EQ(why.rfind("malformed JSON body", 0), 0u) << why;
  why.clear();
  EXPECT_FALSE(protocol::decode(frames_of({"ready", ""}), 0, why));
  EXPECT_EQ(why.rfind("malformed JSON body", 0), 0u) << why;
}

TEST(Protocol, DecodeRejectsABodyThatIsNotAnObject) {
  for (const char* body : {"[1,2]", "42", "\"text\"", "null"}) {
    std::string why;
    EXPECT_FALSE(protocol::decode(frames_of({"ready", body}), 0, why)) << body;
    EXPECT_EQ(why, "body is not a JSON object") << body;
  }
}

TEST(Protocol, GetIntAcceptsIntegersOnly) {
  auto o = json::parse(R"({"i": 5, "neg": -3, "d": 5.0, "s": "5", "b": true, "n": null,
                           "big": 18446744073709551615, "u": 9223372036854775807})")
               .as_object();
  EXPECT_EQ(protocol::get_int(o, "i"), 5);
  EXPECT_EQ(protocol::get_int(o, "neg"), -3);
  EXPECT_EQ(protocol::get_int(o, "u"), 9223372036854775807LL);
  EXPECT_EQ(protocol::get_int(o, "d"), std::nullopt);
  EXPECT_EQ(protocol::get_int(o, "s"), std::nullopt);
  EXPECT_EQ(protocol::get_int(o, "b"), std::nullopt);
  EXPECT_EQ(protocol::get_int(o, "n"), std::nullopt);
  EXPECT_EQ(protocol::get_int(o, "big"), std::nullopt);
  EXPECT_EQ(protocol::get_int(o, "missing"), std::nullopt);
}

TEST(Protocol, GetStringAcceptsStringsOnly) {
  auto o = json::parse(R"({"s": "w1", "e": "", "i": 5, "a": ["x"]})").as_object();
  EXPECT_EQ(protocol::get_string(o, "s"), "w1");
  EXPECT_EQ(protocol::get_string(o, "e"), "");
  EXPECT_EQ(protocol::get_string(o, "i"), std::nullopt);
  EXPECT_EQ(protocol::get_string(o, "a"), std::nullopt);
  EXPECT_EQ(protocol::get_string(o, "missing"), std::nullopt);
}

TEST(Protocol, GetNumberAndGetBoolCheckTheirTypes) {
  auto o = json::parse(R"({"d": 2.5, "i": 3, "s": "2.5", "t": true, "f": false, "z": 0})").as_object();
  EXPECT_EQ(protocol::get_number(o, "d"), 2.5);
  EXPECT_EQ(protocol::get_number(o, "i"), 3.0);
  EXPECT_EQ(protocol::get_number(o, "s"), std::nullopt);
  EXPECT_EQ(protocol::get_bool(o, "t"), true);
  EXPECT_EQ(protocol::get_bool(o, "f"), false);
  EXPECT_EQ(protocol::get_bool(o, "z"), std::nullopt);
  EXPECT_EQ(protocol::get_bool(o, "missing"), std::nullopt);
}

}  // namespace
}  // namespace descprod
