// Token generation with libsodium's CSPRNG and SHA-256.
#include "core/crypto.hpp"

#include <sodium.h>

#include <stdexcept>

namespace descprod {

namespace {
std::string hex(const unsigned char* p, std::size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}
}  // namespace

void ensure_sodium() {
  static const bool ok = sodium_init() >= 0;
  if (!ok) throw std::runtime_error("libsodium failed to initialise");
}

std::string new_token() {
  ensure_sodium();
  unsigned char buf[32];
  randombytes_buf(buf, sizeof buf);
  return "dp_" + hex(buf, sizeof buf);
}

std::string sha256_hex(std::string_view s) {
  ensure_sodium();
  unsigned char md[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(md, reinterpret_cast<const unsigned char*>(s.data()), s.size());
  return hex(md, sizeof md);
}

}  // namespace descprod
