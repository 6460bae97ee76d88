// Fuzz target: DESCprod's config-string rules and the text helpers of core/job.hpp.
//   check_config        returns one of 0,1,2,3,4,5,9, and a 0 only for strings DESCprod's rules
//                       allow (checked here by rule, independently of job.cpp);
//   check_service_config  check_config's answer for strings without '_' or '.', a 0 only for
//                       [A-Za-z0-9:_.-]; valid_howfig_text exactly for valid UTF-8 without
//                       control bytes;
//   split_config*       the pieces join back to the input, one more piece than separators;
//   sanitize_utf8       always valid UTF-8, equal to an independent reference, idempotent, the
//                       identity on valid input;
//   parse_batch_howfig  a batch howfig only when the first constituent's first field is pmb or
//                       pmbs, then minutes 1..10080, QOS local/regular/debug, constraint and
//                       account of [A-Za-z0-9_] (they reach sbatch's argv), head + ',' + rest
//                       is the input; an app's job_argv gets the rest for pmb, descprod-pmbs for
//                       pmbs, the input otherwise;
//   descprod_config_json  always JSON that parses, ASCII only (Python's ensure_ascii), one key per
//                       line in DESCprod's field order, and every string field reads back as the
//                       sanitized stored value.
// Input: the whole input is the config string; split on 0xFF 0xFF it also fills the fields of a
// job record in job_field_order() for descprod_config_json.
#include <boost/json.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.hpp"
#include "core/job.hpp"
#include "fuzz/fuzz_support.hpp"

using namespace descprod;
using descprod::fuzz::valid_utf8;

namespace {

bool allowed(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == ':';
}

std::size_t count_of(std::string_view s, std::string_view sep) {
  std::size_t n = 0;
  for (auto pos = s.find(sep); pos != std::string_view::npos; pos = s.find(sep, pos + sep.size())) ++n;
  return n;
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

void check_split(std::string_view s, std::string_view sep, const std::vector<std::string>& parts) {
  FUZZ_CHECK(parts.size() == count_of(s, sep) + 1);
  FUZZ_CHECK(join(parts, sep) == s);
}

void check_config_rules(std::string_view s) {
  int code = check_config(s);
  FUZZ_CHECK(code == 0 || code == 1 || code == 2 || code == 3 || code == 4 || code == 5 || code == 9);
  FUZZ_CHECK(!check_config_reason(code).empty());
  FUZZ_CHECK((code == 9) == s.empty());
  bool all_allowed = true;
  for (char c : s) all_allowed = all_allowed && allowed(c);
  if (!s.empty()) FUZZ_CHECK((code == 1) == !all_allowed);
  if (all_allowed && s.find("----") != std::string_view::npos) FUZZ_CHECK(code == 2);
  if (code == 0) {
    // Only [A-Za-z0-9:-]; constituents (split on ---) non-empty, without "--", neither starting
    // nor ending with '-' or ':'. So no shell metacharacter, quote, space or control byte.
    FUZZ_CHECK(all_allowed);
    FUZZ_CHECK(s.find("----") == std::string_view::npos);
    for (const auto& part : split_compound_config(s)) {
      FUZZ_CHECK(!part.empty());
      FUZZ_CHECK(part.find("--") == std::string::npos);
      FUZZ_CHECK(part.front() != '-' && part.back() != '-');
      FUZZ_CHECK(part.front() != ':' && part.back() != ':');
    }
    FUZZ_CHECK(s.front() != '-' && s.back() != '-' && s.front() != ':' && s.back() != ':');
  }
  // The service's rule: the same codes with '_' and '.' allowed too, so the same answer for a
  // string without them, and a 0 only for [A-Za-z0-9:_.-].
  int service = check_service_config(s);
  if (s.find_first_of("_.") == std::string_view::npos) FUZZ_CHECK(service == code);
  if (service == 0)
    for (char c : s) FUZZ_CHECK(allowed(c) || c == '_' || c == '.');
  if (code == 0) FUZZ_CHECK(service == 0);
  // A free-text howfig: no control byte, valid UTF-8.
  bool no_controls = true;
  for (unsigned char c : s) no_controls = no_controls && c >= 0x20 && c != 0x7f;
  FUZZ_CHECK(valid_howfig_text(s) == (no_controls && sanitize_utf8(s) == s));
  check_split(s, "-", split_config(s));
  check_split(s, ":", split_config_field(s));
  check_split(s, "---", split_compound_config(s));
}

// Replaces, byte by byte, every byte that does not start a well-formed sequence by U+FFFD.
std::string reference_sanitize(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    std::size_t len = fuzz::utf8_sequence_at(s, i);
    if (len) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

void check_sanitize(std::string_view s) {
  auto out = sanitize_utf8(s);
  FUZZ_CHECK(valid_utf8(out));
  FUZZ_CHECK(out == reference_sanitize(s));
  FUZZ_CHECK(sanitize_utf8(out) == out);
  if (valid_utf8(s)) FUZZ_CHECK(out == s);
  // It travels in JSON: serialized and parsed back unchanged.
  boost::json::value back;
  FUZZ_CHECK(fuzz::parses_as_json(boost::json::serialize(boost::json::string(out)), &back));
  FUZZ_CHECK(back.as_string() == out);
}

std::vector<std::string_view> split_fields(std::string_view s) {
  std::vector<std::string_view> out;
  while (true) {
    auto pos = s.find("\xFF\xFF");
    out.push_back(s.substr(0, pos));
    if (pos == std::string_view::npos) return out;
    s.remove_prefix(pos + 2);
  }
}

void check_config_json(std::string_view input) {
  const auto& order = job_field_order();
  job_record rec;
  auto pieces = split_fields(input);
  for (std::size_t i = 0; i < pieces.size() && i < order.size(); ++i) rec[order[i]] = std::string(pieces[i]);
  auto text = descprod_config_json(rec);
  for (char c : text) FUZZ_CHECK(static_cast<unsigned char>(c) < 0x80);  // ensure_ascii
  FUZZ_CHECK(text == "{}" || (text.rfind("{\n  \"", 0) == 0 && text.size() >= 4 &&
                              text.compare(text.size() - 2, 2, "\n}") == 0));
  boost::json::value v;
  FUZZ_CHECK(fuzz::parses_as_json(text, &v));
  FUZZ_CHECK(v.is_object());
  // Keys are DESCprod's 18 fields, in its order; nothing this project added.
  std::size_t next = 0;
  for (const auto& kv : v.as_object()) {
    std::size_t k = next;
    while (k < 18 && order[k] != kv.key()) ++k;
    FUZZ_CHECK(k < 18);
    next = k + 1;
    const std::string& stored = rec.at(order[k]);
    if (kv.value().is_string()) {
      FUZZ_CHECK(kv.value().as_string() == sanitize_utf8(stored));
    } else {
      FUZZ_CHECK(kv.value().is_int64());
      FUZZ_CHECK(is_integer_field(order[k]) || is_time_field(order[k]));
    }
  }
  // job_to_json never throws; from valid UTF-8 fields it serializes to JSON that parses.
  auto api = boost::json::serialize(job_to_json(rec));
  if (valid_utf8(input)) FUZZ_CHECK(fuzz::parses_as_json(api));
}

}  // namespace

// The argv an app with args ["{howfig}"] gets for howfig `h` (empty arguments dropped).
std::vector<std::string> app_argv(const std::string& h, bool batch) {
  app_def a;
  a.command = {"app"};
  a.args = {"{howfig}"};
  return a.job_argv("c", h, 1, batch);
}

std::vector<std::string> with_arg(const std::string& h) {
  if (h.empty()) return {"app"};
  return {"app", h};
}

void check_batch_howfig(std::string_view s) {
  std::string why;
  auto b = parse_batch_howfig(s, why);
  std::string_view head = s.substr(0, s.find(','));
  std::string_view first = head.substr(0, head.find('-'));
  const bool batch = first == "pmb" || first == "pmbs";
  if (!batch) FUZZ_CHECK(!b && why.empty());
  if (batch) FUZZ_CHECK(b.has_value() != !why.empty());
  if (!b) {
    FUZZ_CHECK(app_argv(std::string(s), true) == with_arg(std::string(s)));
    return;
  }
  FUZZ_CHECK(b->subjob == (first == "pmbs"));
  FUZZ_CHECK(b->minutes >= 1 && b->minutes <= 10080);
  FUZZ_CHECK(b->qos == "local" || b->qos == "regular" || b->qos == "debug");
  auto word = [](const std::string& w) {
    for (char c : w)
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
        return false;
    return w.size() <= 32;
  };
  FUZZ_CHECK(word(b->constraint) && !b->constraint.empty());
  FUZZ_CHECK(word(b->account));
  FUZZ_CHECK(b->head == head);
  FUZZ_CHECK((s.find(',') == std::string_view::npos ? b->head : b->head + "," + b->rest) == s);
  FUZZ_CHECK(app_argv(std::string(s), true) ==
             (b->subjob ? std::vector<std::string>{"descprod-pmbs"} : with_arg(b->rest)));
  FUZZ_CHECK(app_argv(std::string(s), false) == with_arg(std::string(s)));
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view s(reinterpret_cast<const char*>(data), size);
  check_config_rules(s);
  check_batch_howfig(s);
  check_sanitize(s);
  check_config_json(s);
  return 0;
}
