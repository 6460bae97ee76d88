// Fuzz target: protocol::decode, the daemon's and worker's first look at every ZeroMQ message.
// Input: byte 0 chooses how many routing frames precede the message (0-2, as a ROUTER or DEALER
// sees it); the rest is split on 0xFF 0xFF into frames (0xFF never occurs in UTF-8, so JSON bodies
// are unaffected). Invariants:
//   - accepted only with exactly routing + 2 frames, a known command and a JSON object body;
//     never a non-object body; and everything that meets those rules is accepted;
//   - the decoded body equals Boost.JSON's own parse of the frame, and encode() → decode() gives
//     the same message back;
//   - a refusal always has a short reason;
//   - the typed getters agree with the value's kind (get_int only for integers that fit).
#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <set>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "core/protocol.hpp"
#include "fuzz/fuzz_support.hpp"

using namespace descprod;

namespace {

// The commands as docs/protocol.md's tables list them (their first column), read from the source
// tree: an independent reading of the protocol that cannot fall behind the documentation (a
// hand-written copy here once lacked `ack` and failed on the first `ack` libFuzzer built).
const std::set<std::string, std::less<>>& commands() {
  static const std::set<std::string, std::less<>> c = [] {
    std::set<std::string, std::less<>> out;
    std::ifstream in(std::string(DESCPROD_SOURCE_DIR) + "/docs/protocol.md");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("| `", 0) == 0) out.insert(line.substr(3, line.find('`', 3) - 3));
    FUZZ_CHECK(out.count("hello") && out.count("ack"));  // the tables were found
    return out;
  }();
  return c;
}

// Equality that allows a double to come back one rounding step off: Boost.JSON 1.81 parses
// doubles fast but not always to the nearest value (exact parsing came in 1.83), so
// serialize → parse of a double is not exact; and it reads 0e400 as NaN, so NaN equals NaN here.
// Everything else must be identical.
bool same_json(const boost::json::value& a, const boost::json::value& b) {
  if (a.is_double() && b.is_double()) {
    double x = a.as_double(), y = b.as_double();
    if (std::isnan(x) || std::isnan(y)) return std::isnan(x) && std::isnan(y);
    return x == y || std::fabs(x - y) <= 1e-15 * std::max(std::fabs(x), std::fabs(y));
  }
  if (a.kind() != b.kind()) return false;
  if (a.is_array()) {
    const auto &x = a.as_array(), &y = b.as_array();
    if (x.size() != y.size()) return false;
    for (std::size_t i = 0; i < x.size(); ++i)
      if (!same_json(x[i], y[i])) return false;
    return true;
  }
  if (a.is_object()) {
    const auto &x = a.as_object(), &y = b.as_object();
    if (x.size() != y.size()) return false;
    auto it = y.begin();
    for (const auto& kv : x) {
      if (kv.key() != it->key() || !same_json(kv.value(), it->value())) return false;
      ++it;
    }
    return true;
  }
  return a == b;
}

// Boost.JSON 1.81 parses an overflowing number (1e400) as infinity, 0e400 as NaN, and serializes
// them as "Infinity" and "NaN", which are not JSON: such a body does not survive encode() →
// decode(). See
// docs/fuzzing.md; the round trip is checked for every other body.
bool has_nonfinite(const boost::json::value& v) {
  if (v.is_double()) return !std::isfinite(v.as_double());
  if (v.is_array()) {
    for (const auto& e : v.as_array())
      if (has_nonfinite(e)) return true;
  }
  if (v.is_object()) {
    for (const auto& kv : v.as_object())
      if (has_nonfinite(kv.value())) return true;
  }
  return false;
}

void check_getters(const boost::json::object& o, std::string_view key) {
  auto it = o.find(key);
  const boost::json::value* v = it == o.end() ? nullptr : &it->value();
  auto i = protocol::get_int(o, key);
  bool fits = v && (v->is_int64() || (v->is_uint64() && v->as_uint64() <= INT64_MAX));
  FUZZ_CHECK(i.has_value() == fits);
  if (i && v->is_int64()) FUZZ_CHECK(*i == v->as_int64());
  auto d = protocol::get_number(o, key);
  FUZZ_CHECK(d.has_value() == (v && v->is_number()));
  auto s = protocol::get_string(o, key);
  FUZZ_CHECK(s.has_value() == (v && v->is_string()));
  if (s) FUZZ_CHECK(*s == v->as_string());
  auto b = protocol::get_bool(o, key);
  FUZZ_CHECK(b.has_value() == (v && v->is_bool()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::size_t first = data[0] % 3;
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  std::vector<zmq::message_t> frames;
  std::vector<std::string_view> texts;
  while (true) {
    auto pos = rest.find("\xFF\xFF");
    texts.push_back(rest.substr(0, pos));
    frames.emplace_back(texts.back().data(), texts.back().size());
    if (pos == std::string_view::npos) break;
    rest.remove_prefix(pos + 2);
  }

  std::string why;
  auto msg = protocol::decode(frames, first, why);

  // What an independent reading of docs/protocol.md accepts.
  bool shape = frames.size() == first + 2;
  bool known = shape && commands().count(texts[first]) > 0;
  boost::json::value body;
  bool object = known && fuzz::parses_as_json(texts[first + 1], &body) && body.is_object();
  FUZZ_CHECK(msg.has_value() == object);

  if (!msg) {
    FUZZ_CHECK(!why.empty() && why.size() <= 512);
    return 0;
  }
  FUZZ_CHECK(msg->command == texts[first]);
  FUZZ_CHECK(same_json(msg->body, body));  // NaN (Boost.JSON 1.81 reads 0e400 so) equals NaN here

  for (const auto& kv : msg->body) check_getters(msg->body, kv.key());
  for (std::string_view k : {"job", "attempt", "protocol", "slots", "credits", "rc", "worker"})
    check_getters(msg->body, k);

  // Round trip through encode().
  if (has_nonfinite(msg->body)) return 0;
  auto encoded = protocol::encode(msg->command, msg->body);
  FUZZ_CHECK(encoded.size() == 2);
  std::vector<zmq::message_t> again;
  again.emplace_back(encoded[0].data(), encoded[0].size());
  again.emplace_back(encoded[1].data(), encoded[1].size());
  std::string why2;
  auto back = protocol::decode(again, 0, why2);
  FUZZ_CHECK(back.has_value());
  FUZZ_CHECK(back->command == msg->command);
  FUZZ_CHECK(same_json(back->body, msg->body));
  return 0;
}
