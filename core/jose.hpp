// JOSE for OpenID Connect login (docs/security.md, "OpenID Connect"): base64url, PKCE S256, JSON
// Web Key Sets and the verification of a signed JWT (an ID token), with OpenSSL doing every piece
// of cryptography (no hand-written crypto). Pure: no I/O, no clock (the caller passes `now`).
//
// What is accepted: JWS compact serialization (three base64url parts, no padding), a header whose
// alg is RS256 or ES256 (anything else, "none" and the HS* family included, is refused: the keys are
// public, so an HMAC "signed" with them proves nothing), a key of the set with the header's kid (a
// header without kid: the set's one key of that type, when there is exactly one), RSA keys of at
// least 2048 bits and EC keys on P-256 only. The signed input and every part are bounded.
//
// Thread-safety: a key_set is immutable after parse and may be shared between threads.
#pragma once

#include <boost/json/object.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace descprod::jose {

// The largest JWT and JWKS document read (an ID token is a few KiB; a JWKS a few keys).
inline constexpr std::size_t max_token_bytes = 16 * 1024;
inline constexpr std::size_t max_jwks_bytes = 256 * 1024;

// base64url without padding (RFC 4648 §5, as JOSE uses it).
std::string base64url_encode(std::string_view bytes);
// Strict: only A-Z a-z 0-9 - _, no padding, no whitespace; a length of 4k+1 is refused.
std::optional<std::string> base64url_decode(std::string_view text);

// PKCE (RFC 7636 §4.2): BASE64URL(SHA256(verifier)).
std::string pkce_s256(std::string_view verifier);

// An OpenSSL public key (EVP_PKEY), freed with the last reference.
struct public_key;

struct jwk {
  std::string kid;
  std::string kty;  // "RSA" or "EC"
  std::string alg;  // the JWK's own alg, when it names one ("RS256", "ES256"); empty otherwise
  std::shared_ptr<const public_key> key;
};

// A JSON Web Key Set (RFC 7517) as a provider's jwks_uri serves it: {"keys": [...]}. Kept are
// the keys usable to verify an RS256 or ES256 signature: kty RSA (n, e; at least 2048 bits) or
// kty EC (crv P-256, x, y: a point on the curve), with use absent or "sig" and alg absent or
// matching. Other keys are skipped (counted in `skipped`), not an error. A document that is not
// JSON, not an object with a "keys" array, or larger than max_jwks_bytes is refused.
struct key_set {
  std::vector<jwk> keys;
  std::size_t skipped = 0;
  static std::optional<key_set> parse(std::string_view json, std::string* why = nullptr);
  // The key for a token's header: by kid (and a key type that fits alg); without kid, the one key
  // of that type when there is exactly one. Null when none fits.
  const jwk* find(std::string_view kid, std::string_view alg) const;
};

enum class jwt_error {
  none,
  malformed,        // not three base64url parts, a header or payload that is not a JSON object, too large
  unsupported_alg,  // alg is not RS256 or ES256
  unknown_kid,      // no key of the set fits the header (the caller may refetch the set once)
  bad_signature,    // the signature does not verify with the key
};
std::string_view to_string(jwt_error e);

struct jwt_check {
  jwt_error error = jwt_error::none;
  std::string why;  // a sentence for the log and the user's page (no token material)
  std::string alg, kid;
  boost::json::object claims;  // the payload, when error == none
};

// Verifies a JWS compact serialization's signature with a key of `keys`; the payload's claims are
// returned only when it verifies. Nothing about the claims is checked here (check_id_token).
jwt_check verify_jwt(std::string_view token, const key_set& keys);

// What an ID token must say (OpenID Connect Core 1.0 §3.1.3.7).
struct id_token_expectations {
  std::string issuer;          // iss must equal it exactly
  std::string client_id;       // aud must be it or an array holding it; with several audiences azp must be it
  std::string nonce;           // nonce must equal it (the one sent in the authorization request)
  std::int64_t now = 0;        // Unix seconds
  std::int64_t leeway_s = 60;  // clock skew allowed on exp and iat
  std::int64_t max_age_s = 3600;  // iat older than now - max_age_s is refused
};
// nullopt when every check holds; otherwise why not ("the ID token has expired", "the ID token is
// for another client", ...). Also required: sub, a non-empty string of at most 255 bytes; exp and
// iat numbers.
std::optional<std::string> check_id_token(const boost::json::object& claims, const id_token_expectations& e);

}  // namespace descprod::jose
