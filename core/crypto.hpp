// Random secrets and their hashes. Tokens are 256 random bits, shown once to their owner and
// stored only as SHA-256 hex (docs/security.md#credentials).
#pragma once
#include <string>
#include <string_view>

namespace descprod {

// A new API or job token: "dp_" + 64 hex digits.
std::string new_token();
std::string sha256_hex(std::string_view s);
// Initialises libsodium once (thread-safe); throws std::runtime_error when it cannot. Every use
// of libsodium calls it first.
void ensure_sodium();

}  // namespace descprod
