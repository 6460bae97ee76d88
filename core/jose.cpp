// JOSE for OpenID Connect login (see jose.hpp). Every piece of cryptography is OpenSSL 3's (EVP):
// SHA-256, building public keys from JWK parameters and checking them, and signature
// verification. What is written here is only the encoding around it (base64url, the JWS compact
// form, ECDSA's raw r||s to DER) and the claim checks. Every OpenSSL object is owned by a
// unique_ptr with its free function, and OpenSSL's error queue is cleared after a refusal so that
// a failed verification leaves nothing behind for the thread's next OpenSSL call.
#include "core/jose.hpp"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include <array>
#include <boost/json.hpp>
#include <cmath>
#include <unordered_set>

namespace descprod::jose {

struct public_key {
  explicit public_key(EVP_PKEY* k) : pkey(k) {}
  ~public_key() { EVP_PKEY_free(pkey); }
  public_key(const public_key&) = delete;
  public_key& operator=(const public_key&) = delete;
  EVP_PKEY* pkey;
};

namespace {

template <auto Free>
struct freer {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, freer<EVP_PKEY_free>>;
using pkey_ctx_ptr = std::unique_ptr<EVP_PKEY_CTX, freer<EVP_PKEY_CTX_free>>;
using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, freer<EVP_MD_CTX_free>>;
using bn_ptr = std::unique_ptr<BIGNUM, freer<BN_free>>;
using param_bld_ptr = std::unique_ptr<OSSL_PARAM_BLD, freer<OSSL_PARAM_BLD_free>>;
using params_ptr = std::unique_ptr<OSSL_PARAM, freer<OSSL_PARAM_free>>;
using ecdsa_sig_ptr = std::unique_ptr<ECDSA_SIG, freer<ECDSA_SIG_free>>;

// RSA moduli below this are too weak to trust; above OpenSSL's own limit it would refuse to verify.
constexpr int min_rsa_bits = 2048;
constexpr int max_rsa_bits = 16384;
// A public exponent is small in practice (65537); OpenSSL refuses one over 64 bits with a modulus
// over 3072 bits, and a long one only makes verification slow.
constexpr std::size_t max_rsa_exponent_bytes = 8;
constexpr std::size_t p256_coordinate_bytes = 32;

constexpr std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// The 6-bit value of a base64url character, -1 for any other byte.
int sextet(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

const unsigned char* bytes_of(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

// A string member of `o`: nullptr when absent; `bad` is set when present but not a string.
const boost::json::string* string_member(const boost::json::object& o, std::string_view key, bool& bad) {
  auto it = o.find(key);
  if (it == o.end()) return nullptr;
  if (!it->value().is_string()) {
    bad = true;
    return nullptr;
  }
  return &it->value().get_string();
}

// A JSON object parsed from `text`, or nullopt (never an exception for bad input).
std::optional<boost::json::object> parse_object(std::string_view text) {
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  return std::move(v.get_object());
}

// An EVP_PKEY of `type` ("RSA", "EC") from the parameters in `bld`; with `check`, it must pass
// EVP_PKEY_public_check too (for EC: the point is on the curve and not the point at infinity;
// EVP_PKEY_fromdata already refuses a point off the curve, the check is the second line).
// RSA keys are not put through it: OpenSSL's RSA public check (SP 800-56B) runs a Miller-Rabin
// test on n (3.5 ms for a 2048-bit key, 18 ms for a 4096-bit one here, growing with the cube of
// the size), so a 256 KiB set of large keys would take seconds, and it protects nothing here: a
// malformed key of the provider's only lets the provider sign, which it can anyway. rsa_key's
// own checks (size, odd n, odd e of at most 64 bits) remain.
std::shared_ptr<const public_key> key_from_params(const char* type, OSSL_PARAM_BLD* bld, bool check) {
  params_ptr params(OSSL_PARAM_BLD_to_param(bld));
  pkey_ctx_ptr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1) return nullptr;
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) return nullptr;
  pkey_ptr key(raw);
  if (check) {
    pkey_ctx_ptr check_ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
    if (!check_ctx || EVP_PKEY_public_check(check_ctx.get()) != 1) return nullptr;
  }
  return std::make_shared<const public_key>(key.release());
}

// An RSA public key from a JWK's n and e (base64url big-endian integers): n of 2048 to 16384
// bits and odd, e odd, at least 3 and at most 64 bits.
std::shared_ptr<const public_key> rsa_key(const boost::json::object& jwk) {
  bool bad = false;
  const auto* n64 = string_member(jwk, "n", bad);
  const auto* e64 = string_member(jwk, "e", bad);
  if (!n64 || !e64) return nullptr;
  auto n = base64url_decode(*n64), e = base64url_decode(*e64);
  if (!n || !e) return nullptr;
  bn_ptr bn_n(BN_bin2bn(bytes_of(*n), static_cast<int>(n->size()), nullptr));
  bn_ptr bn_e(BN_bin2bn(bytes_of(*e), static_cast<int>(e->size()), nullptr));
  if (!bn_n || !bn_e) return nullptr;
  int bits = BN_num_bits(bn_n.get());
  if (bits < min_rsa_bits || bits > max_rsa_bits) return nullptr;
  if (!BN_is_odd(bn_n.get()) || !BN_is_odd(bn_e.get()) || BN_is_one(bn_e.get()) ||
      static_cast<std::size_t>(BN_num_bytes(bn_e.get())) > max_rsa_exponent_bytes)
    return nullptr;
  param_bld_ptr bld(OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1)
    return nullptr;
  return key_from_params("RSA", bld.get(), false);
}

// A P-256 public key from a JWK's x and y (exactly 32 bytes each): a point on the curve.
std::shared_ptr<const public_key> ec_key(const boost::json::object& jwk) {
  bool bad = false;
  const auto* crv = string_member(jwk, "crv", bad);
  const auto* x64 = string_member(jwk, "x", bad);
  const auto* y64 = string_member(jwk, "y", bad);
  if (!crv || *crv != "P-256" || !x64 || !y64) return nullptr;
  auto x = base64url_decode(*x64), y = base64url_decode(*y64);
  if (!x || !y || x->size() != p256_coordinate_bytes || y->size() != p256_coordinate_bytes) return nullptr;
  std::string point = "\x04" + *x + *y;  // SEC 1 uncompressed form
  param_bld_ptr bld(OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1)
    return nullptr;
  return key_from_params("EC", bld.get(), true);
}

// The key type an alg needs ("RS256": RSA, "ES256": EC); empty for any other alg.
std::string_view kty_for(std::string_view alg) {
  if (alg == "RS256") return "RSA";
  if (alg == "ES256") return "EC";
  return {};
}

// ES256's JWS signature is r||s, 32 bytes each (RFC 7518 §3.4); OpenSSL verifies DER. Empty when
// the signature is not 64 bytes.
std::string ecdsa_raw_to_der(std::string_view raw) {
  if (raw.size() != 2 * p256_coordinate_bytes) return {};
  ecdsa_sig_ptr sig(ECDSA_SIG_new());
  bn_ptr r(BN_bin2bn(bytes_of(raw), static_cast<int>(p256_coordinate_bytes), nullptr));
  bn_ptr s(
      BN_bin2bn(bytes_of(raw) + p256_coordinate_bytes, static_cast<int>(p256_coordinate_bytes), nullptr));
  if (!sig || !r || !s || ECDSA_SIG_set0(sig.get(), r.get(), s.get()) != 1) return {};
  r.release();  // owned by sig now
  s.release();
  int len = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (len <= 0) return {};
  std::string der(static_cast<std::size_t>(len), '\0');
  auto* out = reinterpret_cast<unsigned char*>(der.data());
  if (i2d_ECDSA_SIG(sig.get(), &out) != len) return {};
  return der;
}

// Whether `signature` is `key`'s SHA-256 signature of `input` (RSA: PKCS#1 v1.5; EC: DER ECDSA).
bool verifies(const public_key& key, bool rsa, std::string_view input, std::string_view signature) {
  md_ctx_ptr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;  // owned by ctx
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), &pctx, EVP_sha256(), nullptr, key.pkey) != 1) return false;
  if (rsa && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) return false;
  return EVP_DigestVerify(ctx.get(), bytes_of(signature), signature.size(), bytes_of(input), input.size()) ==
         1;
}

jwt_check refuse(jwt_check c, jwt_error e, std::string why) {
  ERR_clear_error();
  c.error = e;
  c.why = std::move(why);
  c.claims.clear();
  return c;
}

// A JSON number as a double; nullopt for anything else and for NaN or infinity (Boost.JSON reads
// 1e400 as infinity and 0e400 as NaN).
std::optional<double> number_member(const boost::json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end() || !it->value().is_number()) return std::nullopt;
  double d = it->value().to_number<double>();
  if (!std::isfinite(d)) return std::nullopt;
  return d;
}

// A string member equal to `want`; an empty `want` (an expectation not set) never matches.
bool string_equals(const boost::json::object& o, std::string_view key, std::string_view want) {
  auto it = o.find(key);
  return !want.empty() && it != o.end() && it->value().is_string() && it->value().get_string() == want;
}

}  // namespace

std::string base64url_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    unsigned v = static_cast<unsigned char>(bytes[i]) << 16 | static_cast<unsigned char>(bytes[i + 1]) << 8 |
                 static_cast<unsigned char>(bytes[i + 2]);
    out += alphabet[v >> 18];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  std::size_t rest = bytes.size() - i;
  if (rest > 0) {
    unsigned v = static_cast<unsigned char>(bytes[i]) << 16;
    if (rest == 2) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    out += alphabet[v >> 18];
    out += alphabet[(v >> 12) & 63];
    if (rest == 2) out += alphabet[(v >> 6) & 63];
  }
  return out;
}

// Strict, and canonical too: the bits a last character carries beyond the data (4 after two
// characters, 2 after three) must be zero, so each byte string has exactly one encoding and a
// signature or key cannot be written two ways.
std::optional<std::string> base64url_decode(std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  unsigned acc = 0;
  int bits = 0;
  for (unsigned char c : text) {
    int v = sextet(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6 | static_cast<unsigned>(v)) & 0xFFF;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  if ((acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

std::string pkce_s256(std::string_view verifier) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (EVP_Digest(verifier.data(), verifier.size(), md.data(), &len, EVP_sha256(), nullptr) != 1) {
    ERR_clear_error();
    return std::string();
  }
  return base64url_encode(std::string_view(reinterpret_cast<const char*>(md.data()), len));
}

std::optional<key_set> key_set::parse(std::string_view json, std::string* why) {
  auto fail = [&](const char* reason) -> std::optional<key_set> {
    if (why) *why = reason;
    return std::nullopt;
  };
  if (json.size() > max_jwks_bytes) return fail("the key set is larger than 256 KiB");
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(json, ec);
  if (ec) return fail("the key set is not JSON");
  const boost::json::value* keys = v.is_object() ? v.get_object().if_contains("keys") : nullptr;
  if (!keys || !keys->is_array()) return fail("the key set is not an object with a keys array");

  key_set set;
  std::unordered_set<std::string> kids;
  for (const auto& k : keys->get_array()) {
    if (!k.is_object()) {
      ++set.skipped;
      continue;
    }
    const auto& o = k.get_object();
    bool bad = false;
    const auto* kty = string_member(o, "kty", bad);
    const auto* kid = string_member(o, "kid", bad);
    const auto* use = string_member(o, "use", bad);
    const auto* alg = string_member(o, "alg", bad);
    std::string_view type = kty ? std::string_view(*kty) : std::string_view();
    bool usable = !bad && (type == "RSA" || type == "EC") && (!use || *use == "sig") &&
                  (!alg || kty_for(*alg) == type) && (!kid || !kids.contains(std::string(*kid)));
    std::shared_ptr<const public_key> key;
    if (usable) key = type == "RSA" ? rsa_key(o) : ec_key(o);
    if (!key) {
      ERR_clear_error();
      ++set.skipped;
      continue;
    }
    jwk j;
    j.kid = kid ? std::string(*kid) : std::string();
    j.kty = std::string(type);
    j.alg = alg ? std::string(*alg) : std::string();
    j.key = std::move(key);
    if (!j.kid.empty()) kids.insert(j.kid);
    set.keys.push_back(std::move(j));
  }
  return set;
}

// A key fits when its type is the alg's and its own alg, if any, is the header's. With a kid, the
// (single: parse keeps the first of a kid) key of that kid that fits; without, the one fitting key.
const jwk* key_set::find(std::string_view kid, std::string_view alg) const {
  std::string_view type = kty_for(alg);
  if (type.empty()) return nullptr;
  auto fits = [&](const jwk& k) { return k.key && k.kty == type && (k.alg.empty() || k.alg == alg); };
  if (!kid.empty()) {
    for (const auto& k : keys)
      if (k.kid == kid) return fits(k) ? &k : nullptr;
    return nullptr;
  }
  const jwk* found = nullptr;
  for (const auto& k : keys) {
    if (!fits(k)) continue;
    if (found) return nullptr;
    found = &k;
  }
  return found;
}

std::string_view to_string(jwt_error e) {
  switch (e) {
    case jwt_error::none: return "none";
    case jwt_error::malformed: return "malformed";
    case jwt_error::unsupported_alg: return "unsupported_alg";
    case jwt_error::unknown_kid: return "unknown_kid";
    case jwt_error::bad_signature: return "bad_signature";
  }
  return "unknown";
}

// The header is read before anything is verified (it names the key), the payload only once the
// signature holds. Members of the header other than alg, kid and crit are ignored: in particular a
// key or key URL in the header (jwk, jku, x5u, x5c) is never used, the keys come from the set.
jwt_check verify_jwt(std::string_view token, const key_set& keys) {
  jwt_check c;
  if (token.size() > max_token_bytes)
    return refuse(std::move(c), jwt_error::malformed, "the token is too large");
  auto dot1 = token.find('.');
  auto dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos)
    return refuse(std::move(c), jwt_error::malformed, "the token is not three dot-separated parts");
  std::string_view signed_input = token.substr(0, dot2);
  auto header_text = base64url_decode(token.substr(0, dot1));
  auto payload_text = base64url_decode(token.substr(dot1 + 1, dot2 - dot1 - 1));
  auto signature = base64url_decode(token.substr(dot2 + 1));
  if (!header_text || !payload_text || !signature)
    return refuse(std::move(c), jwt_error::malformed, "a part of the token is not base64url");

  auto header = parse_object(*header_text);
  if (!header) return refuse(std::move(c), jwt_error::malformed, "the token's header is not a JSON object");
  bool bad_alg = false, bad_kid = false;
  const auto* alg = string_member(*header, "alg", bad_alg);
  const auto* kid = string_member(*header, "kid", bad_kid);
  if (!alg) return refuse(std::move(c), jwt_error::malformed, "the token's header has no alg string");
  if (bad_kid)
    return refuse(std::move(c), jwt_error::malformed, "the token's header has a kid that is not a string");
  c.alg = std::string(*alg);
  c.kid = kid ? std::string(*kid) : std::string();
  if (kty_for(c.alg).empty())
    return refuse(std::move(c), jwt_error::unsupported_alg, "the token's algorithm is not RS256 or ES256");
  // RFC 7515 §4.1.11: extensions listed in crit must be understood; none is.
  if (header->contains("crit"))
    return refuse(std::move(c), jwt_error::malformed, "the token's header has critical extensions (crit)");

  const jwk* key = keys.find(c.kid, c.alg);
  if (!key)
    return refuse(std::move(c), jwt_error::unknown_kid, "no key of the provider's key set fits the token");
  bool rsa = c.alg == "RS256";
  std::string der;
  if (!rsa) {
    der = ecdsa_raw_to_der(*signature);
    if (der.empty())
      return refuse(std::move(c), jwt_error::bad_signature, "the token's ES256 signature is not 64 bytes");
  }
  if (!verifies(*key->key, rsa, signed_input, rsa ? *signature : der))
    return refuse(std::move(c), jwt_error::bad_signature, "the token's signature does not verify");

  auto payload = parse_object(*payload_text);
  if (!payload) return refuse(std::move(c), jwt_error::malformed, "the token's payload is not a JSON object");
  c.claims = std::move(*payload);
  return c;
}

std::optional<std::string> check_id_token(const boost::json::object& claims, const id_token_expectations& e) {
  if (!string_equals(claims, "iss", e.issuer)) return "the ID token is from another issuer";

  bool for_us = false;
  std::size_t audiences = 1;
  if (auto it = claims.find("aud"); it != claims.end()) {
    const auto& aud = it->value();
    if (aud.is_string()) {
      for_us = !e.client_id.empty() && aud.get_string() == e.client_id;
    } else if (aud.is_array()) {
      audiences = aud.get_array().size();
      for (const auto& a : aud.get_array())
        if (a.is_string() && !e.client_id.empty() && a.get_string() == e.client_id) for_us = true;
    }
  }
  if (!for_us) return "the ID token is for another client";
  // §3.1.3.7 items 4 and 5: with several audiences azp must be there, and wherever it is it must
  // name this client.
  if ((audiences > 1 || claims.contains("azp")) && !string_equals(claims, "azp", e.client_id))
    return "the ID token was issued to another client (azp)";

  auto exp = number_member(claims, "exp");
  if (!exp) return "the ID token has no expiry time";
  // In doubles: no overflow whatever now and the leeway are.
  auto now = static_cast<double>(e.now), leeway = static_cast<double>(e.leeway_s);
  if (!(*exp > now - leeway)) return "the ID token has expired";
  auto iat = number_member(claims, "iat");
  if (!iat) return "the ID token has no issue time";
  if (*iat > now + leeway) return "the ID token was issued in the future";
  if (*iat < now - static_cast<double>(e.max_age_s)) return "the ID token was issued too long ago";

  if (!string_equals(claims, "nonce", e.nonce)) return "the ID token's nonce is not this login's";

  const auto* sub = claims.if_contains("sub");
  if (!sub || !sub->is_string() || sub->get_string().empty() || sub->get_string().size() > 255)
    return "the ID token has no valid subject (sub)";
  return std::nullopt;
}

}  // namespace descprod::jose
