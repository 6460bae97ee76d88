// Random secrets and their hashes. Tokens are 256 random bits, shown once to their owner and
// stored only as SHA-256 hex (docs/security.md#credentials).
#pragma once
#include <string>
#include <string_view>

namespace descprod {

// A new API or job token: "dp_" + 64 hex digits.
std::string new_token();
std::string sha256_hex(std::string_view s);

}  // namespace descprod
