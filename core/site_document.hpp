// A site's status document (docs/operators.md, Site status): a JSON object in the form of NERSC's
// Superfacility status API (https://api.nersc.gov/api/v1.2/status/<system>: name, full_name,
// description, status, notes, updated_at), as the daemon's site monitor reads it
// (daemon/site_status.hpp). What a site answers is untrusted: the status must be a word, the texts
// lose their control characters and are cut to site_text_max bytes. Pure; unit-tested and fuzzed
// (fuzz/job_json.cpp).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace descprod {

inline constexpr std::size_t site_text_max = 2000;

struct site_document {
  std::string status;                                     // lower case, 1..32 of a-z, 0-9, '_', '-', ' '
  std::string full_name, description, notes, updated_at;  // notes: a list joined by "; "
};

// The document in `body`, or nullopt with the reason in `why` (not JSON, not an object, no
// status string, a status that is not a word).
std::optional<site_document> parse_site_document(std::string_view body, std::string& why);

}  // namespace descprod
