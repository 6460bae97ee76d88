// The ZeroMQ message codec: [command][JSON object] frames, checked decoding and typed field access.
#include <gtest/gtest.h>

#include <string>
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

TEST(Protocol, EveryKnownCommandDecodes) {
  for (auto cmd : {protocol::hello, protocol::ready, protocol::started, protocol::progress,
                   protocol::log_lines, protocol::finished, protocol::heartbeat, protocol::bye,
                   protocol::welcome, protocol::job, protocol::cancel, protocol::reject,
                   protocol::submitted}) {
    std::string why;
    EXPECT_TRUE(protocol::decode(frames_of(protocol::encode(cmd, json::object())), 0, why))
        << cmd << ": " << why;
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
                           "big": 18446744073709551615, "u": 9223372036854775807})").as_object();
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
