// CURVE keys for the daemon's worker socket (docs/protocol.md#worker-authentication): Z85 text (40
// characters), one key per file. A secret key file holds the secret key; its public key is derived
// from it. Made by `descprod-admin keys`.
#pragma once

#include <string>

namespace descprod {

struct curve_keypair {
  std::string public_z85;
  std::string secret_z85;
};

// Whether this libzmq supports CURVE.
bool curve_available();
// A new key pair. Throws std::runtime_error when CURVE is unavailable.
curve_keypair new_curve_keypair();
// The public key of a secret key (both Z85). Throws std::invalid_argument on a malformed key.
std::string curve_public_of(const std::string& secret_z85);
// The 32 bytes a Z85 key stands for. Throws std::invalid_argument unless it is 40 Z85 characters.
std::string curve_decode(const std::string& z85);
// The Z85 text of 32 key bytes.
std::string curve_encode(const std::string& bytes);
// The key in a key file: its first line, trimmed. Throws std::runtime_error naming the file when
// it cannot be read or does not hold a Z85 key.
std::string read_curve_key_file(const std::string& path);

}  // namespace descprod
