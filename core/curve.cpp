// CURVE keys (see curve.hpp), on libzmq's own Z85 and key functions.
#include "core/curve.hpp"

#include <zmq.h>

#include <fstream>
#include <stdexcept>

namespace descprod {

bool curve_available() { return zmq_has("curve") != 0; }

curve_keypair new_curve_keypair() {
  char pub[41] = {}, sec[41] = {};
  if (zmq_curve_keypair(pub, sec) != 0) throw std::runtime_error("this libzmq cannot make CURVE keys");
  return {pub, sec};
}

std::string curve_decode(const std::string& z85) {
  if (z85.size() != 40) throw std::invalid_argument("a CURVE key is 40 Z85 characters");
  std::string out(32, '\0');
  if (!zmq_z85_decode(reinterpret_cast<std::uint8_t*>(out.data()), z85.c_str()))
    throw std::invalid_argument("not a Z85 key");
  return out;
}

std::string curve_encode(const std::string& bytes) {
  if (bytes.size() != 32) throw std::invalid_argument("a CURVE key is 32 bytes");
  char out[41] = {};
  if (!zmq_z85_encode(out, reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()))
    throw std::invalid_argument("cannot encode the key");
  return out;
}

std::string curve_public_of(const std::string& secret_z85) {
  curve_decode(secret_z85);  // validates
  char pub[41] = {};
  if (zmq_curve_public(pub, secret_z85.c_str()) != 0)
    throw std::invalid_argument("cannot derive the public key");
  return pub;
}

std::string read_curve_key_file(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) throw std::runtime_error("cannot read the key file " + path);
  auto b = line.find_first_not_of(" \t\r");
  auto e = line.find_last_not_of(" \t\r");
  line = b == std::string::npos ? std::string() : line.substr(b, e - b + 1);
  try {
    curve_decode(line);
  } catch (const std::invalid_argument& ex) {
    throw std::runtime_error(path + ": " + ex.what());
  }
  return line;
}

}  // namespace descprod
