// A site's status document (see site_document.hpp).
#include "core/site_document.hpp"

#include <algorithm>
#include <boost/json.hpp>
#include <cctype>

namespace descprod {

namespace {

// Text from a site for a record: control characters dropped, at most site_text_max bytes (cut back to
// the start of a UTF-8 sequence).
std::string clean_text(std::string_view s) {
  std::string out;
  out.reserve(std::min(s.size(), site_text_max));
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) continue;
    out += static_cast<char>(c);
  }
  if (out.size() > site_text_max) {
    std::size_t n = site_text_max;
    while (n > 0 && (static_cast<unsigned char>(out[n]) & 0xC0) == 0x80) --n;
    out.resize(n);
  }
  return out;
}

std::string string_field(const boost::json::object& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || !it->value().is_string()) return std::string();
  return clean_text(it->value().as_string());
}

}  // namespace

std::optional<site_document> parse_site_document(std::string_view body, std::string& why) {
  boost::system::error_code ec;
  auto v = boost::json::parse(body, ec);
  if (ec) {
    why = "the answer is not JSON (" + ec.message() + ")";
    return std::nullopt;
  }
  if (!v.is_object()) {
    why = "the answer is not a JSON object";
    return std::nullopt;
  }
  const auto& o = v.as_object();
  auto st = o.find("status");
  if (st == o.end() || !st->value().is_string()) {
    why = "the answer has no status string";
    return std::nullopt;
  }
  site_document d;
  for (char c : std::string_view(st->value().as_string()))
    d.status += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  bool word =
      !d.status.empty() && d.status.size() <= 32 && std::all_of(d.status.begin(), d.status.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == ' ';
      });
  if (!word) {
    why = "the status is not a word";
    return std::nullopt;
  }
  d.full_name = string_field(o, "full_name");
  d.description = string_field(o, "description");
  d.updated_at = string_field(o, "updated_at");
  if (auto n = o.find("notes"); n != o.end()) {
    if (n->value().is_string()) {
      d.notes = clean_text(n->value().as_string());
    } else if (n->value().is_array()) {
      std::string joined;
      for (const auto& e : n->value().as_array()) {
        if (!e.is_string()) continue;
        if (!joined.empty()) joined += "; ";
        joined += std::string_view(e.as_string());
        if (joined.size() > site_text_max) break;
      }
      d.notes = clean_text(joined);
    }
  }
  return d;
}

}  // namespace descprod
