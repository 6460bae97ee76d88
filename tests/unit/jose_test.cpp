// JOSE for OpenID Connect login (core/jose.hpp): base64url, PKCE, JWKS parsing, JWT signature
// verification and the ID-token claim checks. The keys are real ones generated with OpenSSL when
// the test starts, and the tokens are signed here with OpenSSL too (EVP_DigestSign), so every
// verification below is against a signature made independently of core/jose.cpp.
#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <boost/json.hpp>
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "core/jose.hpp"

namespace descprod::jose {
namespace {

namespace json = boost::json;

struct pkey_free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_free>;

// ---- keys, JWKs and tokens made with OpenSSL ----------------------------------------------------

pkey_ptr rsa_keygen(unsigned bits) {
  pkey_ptr k(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(bits)));
  EXPECT_NE(k, nullptr);
  return k;
}

pkey_ptr ec_keygen() {
  pkey_ptr k(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  EXPECT_NE(k, nullptr);
  return k;
}

// Generated once: RSA keygen takes a noticeable fraction of a second.
struct test_keys {
  pkey_ptr rsa = rsa_keygen(2048), rsa2 = rsa_keygen(2048), rsa1024 = rsa_keygen(1024);
  pkey_ptr ec = ec_keygen(), ec2 = ec_keygen();
};
const test_keys& keys() {
  static const test_keys k;
  return k;
}

std::string b64(std::string_view s) { return base64url_encode(s); }

// A big-endian integer parameter of a key, `pad` bytes long (0: as short as it is).
std::string bn_param(EVP_PKEY* k, const char* name, int pad = 0) {
  BIGNUM* bn = nullptr;
  EXPECT_EQ(EVP_PKEY_get_bn_param(k, name, &bn), 1) << name;
  std::string out(static_cast<std::size_t>(pad ? pad : BN_num_bytes(bn)), '\0');
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  EXPECT_GT(pad ? BN_bn2binpad(bn, p, pad) : BN_bn2bin(bn, p), 0);
  BN_free(bn);
  return out;
}

json::object rsa_jwk(EVP_PKEY* k, std::string_view kid) {
  json::object o{{"kty", "RSA"},
                 {"n", b64(bn_param(k, OSSL_PKEY_PARAM_RSA_N))},
                 {"e", b64(bn_param(k, OSSL_PKEY_PARAM_RSA_E))}};
  if (!kid.empty()) o["kid"] = kid;
  return o;
}

// x and y from the encoded public point (04 || x || y), as a JWK carries them.
json::object ec_jwk(EVP_PKEY* k, std::string_view kid) {
  unsigned char point[65];
  size_t len = 0;
  EXPECT_EQ(EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point, &len), 1);
  EXPECT_EQ(len, 65u);
  EXPECT_EQ(point[0], 0x04);
  std::string_view p(reinterpret_cast<const char*>(point), sizeof point);
  json::object o{{"kty", "EC"}, {"crv", "P-256"}, {"x", b64(p.substr(1, 32))}, {"y", b64(p.substr(33, 32))}};
  if (!kid.empty()) o["kid"] = kid;
  return o;
}

std::string jwks(const std::vector<json::value>& ks) {
  return json::serialize(json::object{{"keys", json::array(ks.begin(), ks.end())}});
}

key_set parse_set(const std::string& text) {
  std::string why;
  auto s = key_set::parse(text, &why);
  EXPECT_TRUE(s.has_value()) << why;
  return s ? std::move(*s) : key_set{};
}

// The DER form OpenSSL produces (what a careless signer might put in an ES256 JWS; PKCS#1 v1.5
// for RSA).
std::string sign_der(EVP_PKEY* k, std::string_view input) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EXPECT_EQ(EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, k), 1);
  auto in = reinterpret_cast<const unsigned char*>(input.data());
  size_t len = 0;
  EXPECT_EQ(EVP_DigestSign(ctx.get(), nullptr, &len, in, input.size()), 1);
  std::string sig(len, '\0');
  EXPECT_EQ(EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, in, input.size()),
            1);
  sig.resize(len);
  return sig;
}

// `k`'s SHA-256 signature of `input` as JWS carries it: PKCS#1 v1.5 for RSA, r||s for EC.
std::string sign(EVP_PKEY* k, std::string_view input) {
  std::string sig = sign_der(k, input);
  if (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC) return sig;
  // DER ECDSA-Sig-Value -> r||s, 32 bytes each.
  auto der = reinterpret_cast<const unsigned char*>(sig.data());
  ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &der, static_cast<long>(sig.size()));
  EXPECT_NE(es, nullptr);
  std::string raw(64, '\0');
  auto out = reinterpret_cast<unsigned char*>(raw.data());
  EXPECT_EQ(BN_bn2binpad(ECDSA_SIG_get0_r(es), out, 32), 32);
  EXPECT_EQ(BN_bn2binpad(ECDSA_SIG_get0_s(es), out + 32, 32), 32);
  ECDSA_SIG_free(es);
  return raw;
}

json::object header(std::string_view alg, std::string_view kid) {
  json::object h{{"alg", alg}, {"typ", "JWT"}};
  if (!kid.empty()) h["kid"] = kid;
  return h;
}

json::object sample_claims() {
  return json::object{{"iss", "https://idp.example"},
                      {"sub", "u-1"},
                      {"aud", "client-1"},
                      {"exp", 2000000000},
                      {"iat", 1700000000},
                      {"nonce", "n-0S6"}};
}

// "<header>.<payload>" with the given texts (not necessarily JSON).
std::string signing_input(std::string_view header_text, std::string_view payload_text) {
  return b64(header_text) + "." + b64(payload_text);
}

std::string token_of_texts(EVP_PKEY* k, std::string_view header_text, std::string_view payload_text) {
  std::string input = signing_input(header_text, payload_text);
  return input + "." + b64(sign(k, input));
}

std::string token(EVP_PKEY* k, const json::object& h, const json::object& payload = sample_claims()) {
  return token_of_texts(k, json::serialize(h), json::serialize(payload));
}

std::vector<std::string> parts(const std::string& t) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (auto at = t.find('.'); at != std::string::npos; at = t.find('.', start)) {
    out.push_back(t.substr(start, at - start));
    start = at + 1;
  }
  out.push_back(t.substr(start));
  return out;
}

// A refusal carries the error, no claims, and a reason that quotes nothing of the token.
void expect_refused(const std::string& tok, const key_set& set, jwt_error want, const char* what) {
  SCOPED_TRACE(what);
  jwt_check c = verify_jwt(tok, set);
  EXPECT_EQ(c.error, want) << "got " << to_string(c.error) << ": " << c.why;
  EXPECT_TRUE(c.claims.empty());
  EXPECT_FALSE(c.why.empty());
  for (const auto& p : parts(tok))
    if (p.size() >= 4) {
      EXPECT_EQ(c.why.find(p), std::string::npos) << "why quotes the token: " << c.why;
    }
  if (c.kid.size() >= 4) {
    EXPECT_EQ(c.why.find(c.kid), std::string::npos) << c.why;
  }
}

// The set most tests verify against: one RSA key (kid "rsa-kid-1") and one EC key ("ec-kid-1").
const key_set& standard_set() {
  static const key_set s =
      parse_set(jwks({rsa_jwk(keys().rsa.get(), "rsa-kid-1"), ec_jwk(keys().ec.get(), "ec-kid-1")}));
  return s;
}

// ---- base64url -----------------------------------------------------------------------------------

TEST(Base64url, Rfc4648VectorsWithoutPadding) {
  const std::pair<std::string, std::string> vectors[] = {
      {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},         {"foo", "Zm9v"},
      {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64url_encode(plain), encoded);
    EXPECT_EQ(base64url_decode(encoded), plain);
  }
}

TEST(Base64url, UsesTheUrlAlphabet) {
  // Standard base64 of FB FF BF is "+/+/"; base64url writes "-_-_".
  EXPECT_EQ(base64url_encode("\xFB\xFF\xBF"), "-_-_");
  EXPECT_EQ(base64url_decode("-_-_"), "\xFB\xFF\xBF");
  EXPECT_EQ(base64url_decode("+/+/"), std::nullopt);
}

TEST(Base64url, EveryByteStringUpTo300BytesRoundTrips) {
  std::string bytes;
  for (int n = 0; n <= 300; ++n) {
    std::string enc = base64url_encode(bytes);
    EXPECT_EQ(enc.size(), (bytes.size() * 4 + 2) / 3);
    EXPECT_EQ(enc.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
              std::string::npos);
    EXPECT_EQ(base64url_decode(enc), bytes) << "length " << n;
    bytes += static_cast<char>((n * 167 + 13) & 0xFF);
  }
}

TEST(Base64url, PaddingWhitespaceAndForeignCharactersAreRefused) {
  for (const char* bad : {"Zg==", "Zm8=", "Zg=", "Zm9v====", "Zm9 v", "Zm9v\n", " Zm9v", "Zm9v\r\n", "Zm+v",
                          "Zm/v", "Zm.v", "Zm9v%", "Zm9\xC3\xA9"}) {
    EXPECT_EQ(base64url_decode(bad), std::nullopt) << bad;
  }
  EXPECT_EQ(base64url_decode(std::string_view("Zm\0v", 4)), std::nullopt);
  // Every byte outside A-Z a-z 0-9 - _ is refused in any position.
  const std::string_view ok = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (int c = 0; c < 256; ++c) {
    if (ok.find(static_cast<char>(c)) != std::string_view::npos) continue;
    std::string s = "Zm9v";
    s[2] = static_cast<char>(c);
    EXPECT_EQ(base64url_decode(s), std::nullopt) << "byte " << c;
  }
}

TEST(Base64url, ALengthOf4kPlus1IsRefused) {
  // Also when the lone last character carries only zero bits ("A"), which a decoder that only
  // looked at leftover bits would take for nothing.
  EXPECT_EQ(base64url_decode("A"), std::nullopt);
  EXPECT_EQ(base64url_decode("Zm9vA"), std::nullopt);
  EXPECT_EQ(base64url_decode("Z"), std::nullopt);
  EXPECT_EQ(base64url_decode("Zm9vY"), std::nullopt);
  EXPECT_EQ(base64url_decode("Zm9vYmFyZ"), std::nullopt);
  EXPECT_EQ(base64url_decode(""), std::string());
}

TEST(Base64url, NonCanonicalTrailingBitsAreRefused) {
  // "f" is "Zg": the last character carries 4 unused bits, which must be zero ("Zh".."Zv" set them).
  EXPECT_EQ(base64url_decode("Zg"), "f");
  EXPECT_EQ(base64url_decode("Zh"), std::nullopt);
  EXPECT_EQ(base64url_decode("Zv"), std::nullopt);
  // "fo" is "Zm8": 2 unused bits.
  EXPECT_EQ(base64url_decode("Zm8"), "fo");
  EXPECT_EQ(base64url_decode("Zm9"), std::nullopt);
  EXPECT_EQ(base64url_decode("Zm-"), std::nullopt);
}

// ---- PKCE ----------------------------------------------------------------------------------------

// RFC 7636 Appendix B: the verifier, and the challenge the RFC derives from its SHA-256 (whose
// octets it lists: 19 211 30 150 ... 203 112 249 195).
TEST(Pkce, Rfc7636AppendixBExample) {
  EXPECT_EQ(pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
}

TEST(Pkce, IsBase64urlOfSha256) {
  // SHA-256("abc") = ba7816bf...f20015ad (FIPS 180-2), SHA-256("") = e3b0c442...7852b855.
  EXPECT_EQ(pkce_s256("abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
  EXPECT_EQ(pkce_s256(""), "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU");
}

// ---- key sets --------------------------------------------------------------------------------------

TEST(KeySet, KeepsRsaAndEcKeysWithTheirKidTypeAndAlg) {
  auto rsa = rsa_jwk(keys().rsa.get(), "r1");
  rsa["alg"] = "RS256";
  rsa["use"] = "sig";
  auto ec = ec_jwk(keys().ec.get(), "e1");
  ec["alg"] = "ES256";
  auto set = parse_set(jwks({rsa, ec, ec_jwk(keys().ec2.get(), "")}));
  ASSERT_EQ(set.keys.size(), 3u);
  EXPECT_EQ(set.skipped, 0u);
  EXPECT_EQ(set.keys[0].kid, "r1");
  EXPECT_EQ(set.keys[0].kty, "RSA");
  EXPECT_EQ(set.keys[0].alg, "RS256");
  EXPECT_NE(set.keys[0].key, nullptr);
  EXPECT_EQ(set.keys[1].kid, "e1");
  EXPECT_EQ(set.keys[1].kty, "EC");
  EXPECT_EQ(set.keys[1].alg, "ES256");
  EXPECT_EQ(set.keys[2].kid, "");
  EXPECT_EQ(set.keys[2].alg, "");
  EXPECT_EQ(set.find("r1", "RS256"), &set.keys[0]);
  EXPECT_EQ(set.find("e1", "ES256"), &set.keys[1]);
}

TEST(KeySet, ADocumentThatIsNotAnObjectWithAKeysArrayIsRefusedWithAReason) {
  for (const char* bad : {"", "not json", "{\"keys\":[}", "[]", "[{\"keys\":[]}]", "\"keys\"", "{}",
                          "{\"keys\":{}}", "{\"keys\":null}", "{\"Keys\":[]}", "{\"keys\":[]} trailing"}) {
    std::string why;
    EXPECT_EQ(key_set::parse(bad, &why), std::nullopt) << bad;
    EXPECT_FALSE(why.empty()) << bad;
  }
  EXPECT_EQ(key_set::parse("{\"keys\":5}"), std::nullopt);  // no why wanted: still no crash
}

TEST(KeySet, AnEmptyKeysArrayIsASetWithoutKeys) {
  auto s = key_set::parse(R"({"keys":[]})");
  ASSERT_TRUE(s.has_value());
  EXPECT_TRUE(s->keys.empty());
  EXPECT_EQ(s->skipped, 0u);
  EXPECT_EQ(s->find("", "RS256"), nullptr);
}

TEST(KeySet, ADocumentLargerThanTheLimitIsRefusedEvenIfValid) {
  std::string doc = jwks({rsa_jwk(keys().rsa.get(), "r1")});
  std::string at_limit = doc + std::string(max_jwks_bytes - doc.size(), ' ');
  EXPECT_TRUE(key_set::parse(at_limit).has_value());
  std::string why;
  EXPECT_EQ(key_set::parse(at_limit + " ", &why), std::nullopt);
  EXPECT_NE(why.find("larger"), std::string::npos) << why;
}

TEST(KeySet, An1024BitRsaKeyIsSkipped) {
  auto s = parse_set(jwks({rsa_jwk(keys().rsa1024.get(), "weak"), rsa_jwk(keys().rsa.get(), "strong")}));
  ASSERT_EQ(s.keys.size(), 1u);
  EXPECT_EQ(s.keys[0].kid, "strong");
  EXPECT_EQ(s.skipped, 1u);
  // And a token the 1024-bit key signed finds no key.
  expect_refused(token(keys().rsa1024.get(), header("RS256", "weak")), s, jwt_error::unknown_kid, "weak key");
}

TEST(KeySet, AnEcPointNotOnTheCurveIsSkipped) {
  auto good = ec_jwk(keys().ec.get(), "e1");
  auto y = *base64url_decode(good["y"].as_string());
  y[31] = static_cast<char>(y[31] ^ 1);
  auto off_curve = good;
  off_curve["kid"] = "off";
  off_curve["y"] = b64(y);
  auto zero = good;
  zero["kid"] = "zero";
  zero["x"] = b64(std::string(32, '\0'));
  zero["y"] = b64(std::string(32, '\0'));
  auto s = parse_set(jwks({off_curve, zero, good}));
  ASSERT_EQ(s.keys.size(), 1u);
  EXPECT_EQ(s.keys[0].kid, "e1");
  EXPECT_EQ(s.skipped, 2u);
}

TEST(KeySet, EcKeysOfOtherCurvesOrSizesAreSkipped) {
  auto good = ec_jwk(keys().ec.get(), "e1");
  auto p384 = good;
  p384["crv"] = "P-384";
  auto no_crv = good;
  no_crv.erase("crv");
  auto short_x = good;  // a 31-byte x (its leading zero byte dropped) is not accepted
  short_x["x"] = b64(base64url_decode(good["x"].as_string())->substr(1));
  auto long_y = good;
  long_y["y"] = b64(std::string(1, '\0') + *base64url_decode(good["y"].as_string()));
  auto no_y = good;
  no_y.erase("y");
  auto bad_b64 = good;
  bad_b64["x"] = std::string(good["x"].as_string()) + "==";
  auto s = parse_set(jwks({p384, no_crv, short_x, long_y, no_y, bad_b64}));
  EXPECT_TRUE(s.keys.empty());
  EXPECT_EQ(s.skipped, 6u);
}

TEST(KeySet, RsaKeysMissingOrBadFieldsAreSkipped) {
  auto good = rsa_jwk(keys().rsa.get(), "r1");
  auto no_n = good;
  no_n.erase("n");
  auto no_e = good;
  no_e.erase("e");
  auto n_number = good;
  n_number["n"] = 12345;
  auto n_padded = good;
  n_padded["n"] = std::string(good["n"].as_string()) + "=";
  auto e_empty = good;
  e_empty["e"] = "";
  auto e_even = good;  // 65536: not a valid RSA public exponent
  e_even["e"] = b64(std::string("\x01\x00\x00", 3));
  auto e_huge = good;  // a 9-byte exponent: refused as pointlessly slow
  e_huge["e"] = b64(std::string("\x01\x00\x00\x00\x00\x00\x00\x00\x01", 9));
  auto e_one = good;
  e_one["e"] = b64("\x01");
  auto n_even = good;
  auto n = *base64url_decode(good["n"].as_string());
  n.back() = static_cast<char>(n.back() & ~1);
  n_even["n"] = b64(n);
  auto s = parse_set(jwks({no_n, no_e, n_number, n_padded, e_empty, e_even, e_huge, e_one, n_even}));
  EXPECT_TRUE(s.keys.empty());
  EXPECT_EQ(s.skipped, 9u);
  // A leading zero byte in n (some encoders add one) is harmless: the same 2048-bit key.
  auto n_zero = good;
  n_zero["n"] = b64(std::string(1, '\0') + *base64url_decode(good["n"].as_string()));
  auto t = parse_set(jwks({n_zero}));
  ASSERT_EQ(t.keys.size(), 1u);
  EXPECT_EQ(verify_jwt(token(keys().rsa.get(), header("RS256", "r1")), t).error, jwt_error::none);
}

TEST(KeySet, UnknownKeyTypesAndEntriesThatAreNotObjectsAreSkipped) {
  json::object oct{{"kty", "oct"}, {"kid", "h"}, {"k", b64("secret")}};
  json::object okp{{"kty", "OKP"}, {"crv", "Ed25519"}, {"x", b64(std::string(32, 'x'))}};
  json::object no_kty = rsa_jwk(keys().rsa.get(), "n1");
  no_kty.erase("kty");
  json::object lower = rsa_jwk(keys().rsa.get(), "n2");
  lower["kty"] = "rsa";
  auto s = parse_set(jwks(
      {oct, okp, no_kty, lower, "a string", 42, json::array{}, nullptr, rsa_jwk(keys().rsa.get(), "kept")}));
  ASSERT_EQ(s.keys.size(), 1u);
  EXPECT_EQ(s.keys[0].kid, "kept");
  EXPECT_EQ(s.skipped, 8u);
}

TEST(KeySet, EncryptionKeysAndKeysForOtherAlgorithmsAreSkipped) {
  auto enc = rsa_jwk(keys().rsa.get(), "enc");
  enc["use"] = "enc";
  auto use_number = rsa_jwk(keys().rsa.get(), "use-number");
  use_number["use"] = 1;
  auto ps256 = rsa_jwk(keys().rsa.get(), "ps");
  ps256["alg"] = "PS256";
  auto rs512 = rsa_jwk(keys().rsa.get(), "rs512");
  rs512["alg"] = "RS512";
  auto rsa_es256 = rsa_jwk(keys().rsa.get(), "rsa-as-ec");
  rsa_es256["alg"] = "ES256";
  auto ec_rs256 = ec_jwk(keys().ec.get(), "ec-as-rsa");
  ec_rs256["alg"] = "RS256";
  auto kid_number = rsa_jwk(keys().rsa.get(), "");
  kid_number["kid"] = 7;
  auto sig = rsa_jwk(keys().rsa.get(), "sig");
  sig["use"] = "sig";
  auto s = parse_set(jwks({enc, use_number, ps256, rs512, rsa_es256, ec_rs256, kid_number, sig}));
  ASSERT_EQ(s.keys.size(), 1u);
  EXPECT_EQ(s.keys[0].kid, "sig");
  EXPECT_EQ(s.skipped, 7u);
}

TEST(KeySet, ADuplicateKidKeepsTheFirstUsableKey) {
  auto s = parse_set(jwks({rsa_jwk(keys().rsa.get(), "dup"), rsa_jwk(keys().rsa2.get(), "dup")}));
  ASSERT_EQ(s.keys.size(), 1u);
  EXPECT_EQ(s.skipped, 1u);
  EXPECT_EQ(verify_jwt(token(keys().rsa.get(), header("RS256", "dup")), s).error, jwt_error::none);
  expect_refused(token(keys().rsa2.get(), header("RS256", "dup")), s, jwt_error::bad_signature, "second dup");

  // A first entry that is itself skipped does not claim the kid.
  auto enc = rsa_jwk(keys().rsa2.get(), "dup");
  enc["use"] = "enc";
  auto t = parse_set(jwks({enc, rsa_jwk(keys().rsa.get(), "dup")}));
  ASSERT_EQ(t.keys.size(), 1u);
  EXPECT_EQ(verify_jwt(token(keys().rsa.get(), header("RS256", "dup")), t).error, jwt_error::none);
}

TEST(KeySet, FindWithoutKidNeedsExactlyOneKeyOfTheType) {
  auto one_each = parse_set(jwks({rsa_jwk(keys().rsa.get(), "r1"), ec_jwk(keys().ec.get(), "e1")}));
  EXPECT_EQ(one_each.find("", "RS256"), &one_each.keys[0]);
  EXPECT_EQ(one_each.find("", "ES256"), &one_each.keys[1]);
  EXPECT_EQ(one_each.find("", "HS256"), nullptr);
  EXPECT_EQ(one_each.find("r1", "ES256"), nullptr);  // the kid's key is not an EC key
  EXPECT_EQ(one_each.find("e1", "RS256"), nullptr);
  EXPECT_EQ(one_each.find("r1", "none"), nullptr);
  auto two_rsa = parse_set(jwks({rsa_jwk(keys().rsa.get(), "r1"), rsa_jwk(keys().rsa2.get(), "r2")}));
  EXPECT_EQ(two_rsa.find("", "RS256"), nullptr);
  EXPECT_EQ(two_rsa.find("r2", "RS256"), &two_rsa.keys[1]);
}

// ---- verify_jwt ----------------------------------------------------------------------------------

TEST(VerifyJwt, Rs256TokenVerifiesAndYieldsItsClaims) {
  jwt_check c = verify_jwt(token(keys().rsa.get(), header("RS256", "rsa-kid-1")), standard_set());
  EXPECT_EQ(c.error, jwt_error::none) << c.why;
  EXPECT_TRUE(c.why.empty());
  EXPECT_EQ(c.alg, "RS256");
  EXPECT_EQ(c.kid, "rsa-kid-1");
  EXPECT_EQ(c.claims, sample_claims());
}

TEST(VerifyJwt, Es256TokenVerifiesAndYieldsItsClaims) {
  json::object claims = sample_claims();
  claims["extra"] = json::array{1, "two", nullptr};
  jwt_check c = verify_jwt(token(keys().ec.get(), header("ES256", "ec-kid-1"), claims), standard_set());
  EXPECT_EQ(c.error, jwt_error::none) << c.why;
  EXPECT_EQ(c.alg, "ES256");
  EXPECT_EQ(c.kid, "ec-kid-1");
  EXPECT_EQ(c.claims, claims);
}

TEST(VerifyJwt, ATamperedPayloadFailsTheSignature) {
  for (auto* k : {keys().rsa.get(), keys().ec.get()}) {
    bool rsa = k == keys().rsa.get();
    auto p = parts(token(k, header(rsa ? "RS256" : "ES256", rsa ? "rsa-kid-1" : "ec-kid-1")));
    json::object forged = sample_claims();
    forged["sub"] = "admin";
    std::string tampered = p[0] + "." + b64(json::serialize(forged)) + "." + p[2];
    expect_refused(tampered, standard_set(), jwt_error::bad_signature, rsa ? "RS256" : "ES256");
  }
}

TEST(VerifyJwt, ATamperedHeaderFailsTheSignature) {
  // The header is signed too: adding a member to it breaks the signature.
  auto p = parts(token(keys().rsa.get(), header("RS256", "rsa-kid-1")));
  json::object h = header("RS256", "rsa-kid-1");
  h["typ"] = "at+jwt";
  expect_refused(b64(json::serialize(h)) + "." + p[1] + "." + p[2], standard_set(), jwt_error::bad_signature,
                 "header");
}

TEST(VerifyJwt, EveryOneBitChangeOfTheSignatureFails) {
  for (auto* k : {keys().rsa.get(), keys().ec.get()}) {
    bool rsa = k == keys().rsa.get();
    auto p = parts(token(k, header(rsa ? "RS256" : "ES256", rsa ? "rsa-kid-1" : "ec-kid-1")));
    std::string sig = *base64url_decode(p[2]);
    ASSERT_EQ(sig.size(), rsa ? 256u : 64u);
    for (std::size_t byte : {std::size_t{0}, sig.size() / 2, sig.size() - 1}) {
      for (int bit : {0, 7}) {
        std::string flipped = sig;
        flipped[byte] = static_cast<char>(flipped[byte] ^ (1 << bit));
        expect_refused(p[0] + "." + p[1] + "." + b64(flipped), standard_set(), jwt_error::bad_signature,
                       rsa ? "RS256 bit" : "ES256 bit");
      }
    }
  }
}

TEST(VerifyJwt, ASignatureByAnotherKeyWithTheSameKidFails) {
  expect_refused(token(keys().rsa2.get(), header("RS256", "rsa-kid-1")), standard_set(),
                 jwt_error::bad_signature, "RSA");
  expect_refused(token(keys().ec2.get(), header("ES256", "ec-kid-1")), standard_set(),
                 jwt_error::bad_signature, "EC");
}

TEST(VerifyJwt, AlgNoneIsRefusedWhateverTheSignature) {
  std::string input = signing_input(R"({"alg":"none"})", json::serialize(sample_claims()));
  expect_refused(input + ".", standard_set(), jwt_error::unsupported_alg, "none, empty signature");
  std::string with_kid =
      signing_input(R"({"alg":"none","kid":"rsa-kid-1"})", json::serialize(sample_claims()));
  expect_refused(with_kid + ".", standard_set(), jwt_error::unsupported_alg, "none with a kid");
  // Even with a signature that the kid's key made over the same input.
  expect_refused(with_kid + "." + b64(sign(keys().rsa.get(), with_kid)), standard_set(),
                 jwt_error::unsupported_alg, "none with a real signature");
  for (const char* alg : {"None", "NONE", "nOnE"}) {
    json::object h{{"alg", alg}};
    expect_refused(signing_input(json::serialize(h), "{}") + ".", standard_set(), jwt_error::unsupported_alg,
                   alg);
  }
}

// The classic algorithm confusion: the RSA key is public, so an "HS256" token MACed with its bytes
// would verify if the verifier let the header choose HMAC.
TEST(VerifyJwt, Hs256MacedWithThePublicKeyIsRefused) {
  EVP_PKEY* k = keys().rsa.get();
  unsigned char* der = nullptr;
  int der_len = i2d_PUBKEY(k, &der);
  ASSERT_GT(der_len, 0);
  std::string der_bytes(reinterpret_cast<char*>(der), static_cast<std::size_t>(der_len));
  OPENSSL_free(der);
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
  ASSERT_EQ(PEM_write_bio_PUBKEY(bio.get(), k), 1);
  char* pem_data = nullptr;
  long pem_len = BIO_get_mem_data(bio.get(), &pem_data);
  std::string pem(pem_data, static_cast<std::size_t>(pem_len));
  ASSERT_NE(pem.find("BEGIN PUBLIC KEY"), std::string::npos);

  for (const std::string& secret : {der_bytes, pem}) {
    for (const char* kid : {"rsa-kid-1", ""}) {
      std::string input =
          signing_input(json::serialize(header("HS256", kid)), json::serialize(sample_claims()));
      unsigned char mac[EVP_MAX_MD_SIZE];
      size_t mac_len = 0;
      ASSERT_NE(EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, secret.data(), secret.size(),
                          reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, sizeof mac,
                          &mac_len),
                nullptr);
      ASSERT_EQ(mac_len, 32u);
      std::string tok = input + "." + b64(std::string(reinterpret_cast<char*>(mac), mac_len));
      expect_refused(tok, standard_set(), jwt_error::unsupported_alg, "HS256");
    }
  }
}

TEST(VerifyJwt, OtherAlgorithmsAreRefused) {
  for (const char* alg : {"HS384", "HS512", "RS384", "RS512", "PS256", "ES384", "ES512", "EdDSA", "ES256K",
                          "rs256", "RS256 ", ""}) {
    expect_refused(token(keys().rsa.get(), header(alg, "rsa-kid-1")), standard_set(),
                   jwt_error::unsupported_alg, alg);
  }
}

TEST(VerifyJwt, AnUnknownKidFindsNoKey) {
  jwt_check c = verify_jwt(token(keys().rsa.get(), header("RS256", "rotated-away")), standard_set());
  EXPECT_EQ(c.error, jwt_error::unknown_kid);
  EXPECT_EQ(c.kid, "rotated-away");  // for the caller's log and its one refetch of the set
  EXPECT_EQ(c.why.find("rotated-away"), std::string::npos);
  expect_refused(token(keys().rsa.get(), header("RS256", "rotated-away")), standard_set(),
                 jwt_error::unknown_kid, "unknown");
  auto empty = parse_set(R"({"keys":[]})");
  expect_refused(token(keys().rsa.get(), header("RS256", "")), empty, jwt_error::unknown_kid, "empty set");
}

TEST(VerifyJwt, WithoutKidTheOnlyKeyOfTheTypeIsUsed) {
  auto one_rsa = parse_set(jwks({rsa_jwk(keys().rsa.get(), "r1"), ec_jwk(keys().ec.get(), "e1")}));
  jwt_check c = verify_jwt(token(keys().rsa.get(), header("RS256", "")), one_rsa);
  EXPECT_EQ(c.error, jwt_error::none) << c.why;
  EXPECT_EQ(c.kid, "");
  EXPECT_EQ(c.claims, sample_claims());
  EXPECT_EQ(verify_jwt(token(keys().ec.get(), header("ES256", "")), one_rsa).error, jwt_error::none);

  auto two_rsa = parse_set(jwks({rsa_jwk(keys().rsa.get(), "r1"), rsa_jwk(keys().rsa2.get(), "r2")}));
  expect_refused(token(keys().rsa.get(), header("RS256", "")), two_rsa, jwt_error::unknown_kid,
                 "two RSA keys");
  // With the kid, the same set serves.
  EXPECT_EQ(verify_jwt(token(keys().rsa.get(), header("RS256", "r1")), two_rsa).error, jwt_error::none);
}

TEST(VerifyJwt, TheKidsKeyMustBeOfTheAlgsType) {
  // ES256 naming the RSA key's kid, and RS256 naming the EC key's: no key fits.
  expect_refused(token(keys().ec.get(), header("ES256", "rsa-kid-1")), standard_set(), jwt_error::unknown_kid,
                 "ES256 with an RSA kid");
  expect_refused(token(keys().rsa.get(), header("RS256", "ec-kid-1")), standard_set(), jwt_error::unknown_kid,
                 "RS256 with an EC kid");
}

TEST(VerifyJwt, AKeyWhoseOwnAlgDiffersDoesNotFit) {
  // A JWK naming another algorithm is skipped by parse ...
  auto rs512 = rsa_jwk(keys().rsa.get(), "r512");
  rs512["alg"] = "RS512";
  auto s = parse_set(jwks({rs512}));
  EXPECT_EQ(s.skipped, 1u);
  expect_refused(token(keys().rsa.get(), header("RS256", "r512")), s, jwt_error::unknown_kid, "RS512 JWK");
  // ... and find checks it again for a set put together by hand.
  auto t = parse_set(jwks({rsa_jwk(keys().rsa.get(), "r1")}));
  ASSERT_EQ(t.keys.size(), 1u);
  EXPECT_EQ(verify_jwt(token(keys().rsa.get(), header("RS256", "r1")), t).error, jwt_error::none);
  t.keys[0].alg = "PS256";
  expect_refused(token(keys().rsa.get(), header("RS256", "r1")), t, jwt_error::unknown_kid, "PS256 JWK, kid");
  expect_refused(token(keys().rsa.get(), header("RS256", "")), t, jwt_error::unknown_kid,
                 "PS256 JWK, no kid");
  t.keys[0].alg = "RS256";
  EXPECT_EQ(verify_jwt(token(keys().rsa.get(), header("RS256", "r1")), t).error, jwt_error::none);
}

TEST(VerifyJwt, AnEs256SignatureThatIsNot64BytesIsRefused) {
  std::string input =
      signing_input(json::serialize(header("ES256", "ec-kid-1")), json::serialize(sample_claims()));
  std::string raw = sign(keys().ec.get(), input);
  ASSERT_EQ(raw.size(), 64u);
  ASSERT_EQ(verify_jwt(input + "." + b64(raw), standard_set()).error, jwt_error::none);
  // OpenSSL's own DER form (a valid signature, wrongly encoded for JWS).
  expect_refused(input + "." + b64(sign_der(keys().ec.get(), input)), standard_set(),
                 jwt_error::bad_signature, "DER");
  expect_refused(input + "." + b64(raw.substr(0, 63)), standard_set(), jwt_error::bad_signature, "63 bytes");
  expect_refused(input + "." + b64(raw + '\0'), standard_set(), jwt_error::bad_signature, "65 bytes");
  expect_refused(input + "." + b64(std::string(1, '\0') + raw), standard_set(), jwt_error::bad_signature,
                 "leading zero");
  expect_refused(input + ".", standard_set(), jwt_error::bad_signature, "empty");
  expect_refused(input + "." + b64(std::string(64, '\0')), standard_set(), jwt_error::bad_signature,
                 "r = s = 0");
}

TEST(VerifyJwt, AnRs256SignatureOfTheWrongLengthIsRefused) {
  std::string input =
      signing_input(json::serialize(header("RS256", "rsa-kid-1")), json::serialize(sample_claims()));
  std::string sig = sign(keys().rsa.get(), input);
  expect_refused(input + "." + b64(sig.substr(1)), standard_set(), jwt_error::bad_signature, "255 bytes");
  expect_refused(input + "." + b64(sig + '\0'), standard_set(), jwt_error::bad_signature, "257 bytes");
  expect_refused(input + ".", standard_set(), jwt_error::bad_signature, "empty");
}

TEST(VerifyJwt, MalformedTokensAreRefused) {
  std::string good = token(keys().rsa.get(), header("RS256", "rsa-kid-1"));
  ASSERT_EQ(verify_jwt(good, standard_set()).error, jwt_error::none);
  auto p = parts(good);
  const std::pair<std::string, const char*> cases[] = {
      {"", "empty"},
      {p[0] + "." + p[1], "two parts"},
      {good + "." + p[2], "four parts"},
      {good + ".", "trailing dot"},
      {"..", "three empty parts"},
      {p[0] + "." + p[1] + "." + p[2] + "==", "padded signature"},
      {p[0] + "=." + p[1] + "." + p[2], "padded header"},
      {p[0] + "." + p[1] + "+." + p[2], "a + in the payload"},
      {p[0] + "." + p[1] + "." + p[2].substr(0, p[2].size() - 1) + "/", "a / in the signature"},
      {p[0] + "x." + p[1] + "." + p[2], "header of length 4k+1"},
      {good + "\n", "trailing newline"},
      {" " + good, "leading space"},
      {b64("not json") + "." + p[1] + "." + p[2], "header not JSON"},
      {b64(R"(["alg","RS256"])") + "." + p[1] + "." + p[2], "header a JSON array"},
      {b64(R"("RS256")") + "." + p[1] + "." + p[2], "header a JSON string"},
      {b64(R"({"alg":"RS256","kid":"rsa-kid-1"} x)") + "." + p[1] + "." + p[2], "header with trailing bytes"},
      {b64(R"({"kid":"rsa-kid-1"})") + "." + p[1] + "." + p[2], "header without alg"},
      {b64(R"({"alg":256,"kid":"rsa-kid-1"})") + "." + p[1] + "." + p[2], "alg a number"},
      {b64(R"({"alg":"RS256","kid":1})") + "." + p[1] + "." + p[2], "kid a number"},
      {b64("{\"alg\":\"RS256\",\"kid\":\"\xFF\"}") + "." + p[1] + "." + p[2], "header not UTF-8"},
  };
  for (const auto& [tok, what] : cases) expect_refused(tok, standard_set(), jwt_error::malformed, what);
}

TEST(VerifyJwt, AnOversizedTokenIsRefusedBeforeAnythingElse) {
  json::object claims = sample_claims();
  claims["pad"] = std::string(max_token_bytes, 'a');
  std::string big = token(keys().rsa.get(), header("RS256", "rsa-kid-1"), claims);
  ASSERT_GT(big.size(), max_token_bytes);
  jwt_check c = verify_jwt(big, standard_set());
  EXPECT_EQ(c.error, jwt_error::malformed);
  EXPECT_NE(c.why.find("too large"), std::string::npos) << c.why;
  EXPECT_TRUE(c.claims.empty());
  // One just under the limit, validly signed, verifies.
  claims["pad"] = std::string(max_token_bytes / 2, 'a');
  std::string fits = token(keys().rsa.get(), header("RS256", "rsa-kid-1"), claims);
  ASSERT_LE(fits.size(), max_token_bytes);
  EXPECT_EQ(verify_jwt(fits, standard_set()).error, jwt_error::none);
}

TEST(VerifyJwt, ASignedPayloadThatIsNotAJsonObjectIsMalformed) {
  std::string h = json::serialize(header("RS256", "rsa-kid-1"));
  for (const char* payload : {"not json", "[1,2]", "\"sub\"", "null", "", "{\"a\":1} {\"b\":2}"}) {
    std::string tok = token_of_texts(keys().rsa.get(), h, payload);
    expect_refused(tok, standard_set(), jwt_error::malformed, payload);
  }
}

TEST(VerifyJwt, CritIsRefusedEvenWithAValidSignature) {
  json::object h = header("RS256", "rsa-kid-1");
  h["crit"] = json::array{"b64"};
  h["b64"] = false;
  expect_refused(token(keys().rsa.get(), h), standard_set(), jwt_error::malformed, "crit");
  h["crit"] = json::array{};
  expect_refused(token(keys().rsa.get(), h), standard_set(), jwt_error::malformed, "empty crit");
}

// A key carried in the header (jwk, jku, x5c) is never used: the keys come from the set only.
TEST(VerifyJwt, AKeyInTheHeaderIsIgnored) {
  EVP_PKEY* attacker = keys().rsa2.get();
  json::object h = header("RS256", "attacker");
  h["jwk"] = rsa_jwk(attacker, "attacker");
  h["jku"] = "https://attacker.example/jwks";
  expect_refused(token(attacker, h), standard_set(), jwt_error::unknown_kid, "jwk with its own kid");
  h.erase("kid");
  auto one_rsa = parse_set(jwks({rsa_jwk(keys().rsa.get(), "r1")}));
  expect_refused(token(attacker, h), one_rsa, jwt_error::bad_signature, "jwk without kid");
}

TEST(VerifyJwt, ErrorNamesAreStable) {
  EXPECT_EQ(to_string(jwt_error::none), "none");
  EXPECT_EQ(to_string(jwt_error::malformed), "malformed");
  EXPECT_EQ(to_string(jwt_error::unsupported_alg), "unsupported_alg");
  EXPECT_EQ(to_string(jwt_error::unknown_kid), "unknown_kid");
  EXPECT_EQ(to_string(jwt_error::bad_signature), "bad_signature");
}

// ---- check_id_token ------------------------------------------------------------------------------

constexpr std::int64_t now = 1'700'000'000;

id_token_expectations expectations() {
  id_token_expectations e;
  e.issuer = "https://idp.example";
  e.client_id = "client-1";
  e.nonce = "n-0S6";
  e.now = now;
  e.leeway_s = 60;
  e.max_age_s = 3600;
  return e;
}

json::object good_claims() {
  return json::object{{"iss", "https://idp.example"},
                      {"sub", "248289761001"},
                      {"aud", "client-1"},
                      {"exp", now + 600},
                      {"iat", now - 10},
                      {"nonce", "n-0S6"}};
}

// The claims with one member set (or, for a null `v` with erase, removed) fail with `why`.
void expect_fails(json::object claims, const std::string& why, const char* what) {
  auto r = check_id_token(claims, expectations());
  ASSERT_TRUE(r.has_value()) << what;
  EXPECT_EQ(*r, why) << what;
}

// Each value of `claim` fails with `why`, and so does the claim's absence.
void expect_each_fails(const char* claim, std::initializer_list<json::value> values, const std::string& why) {
  for (const auto& v : values) {
    auto c = good_claims();
    c[claim] = v;
    expect_fails(c, why, json::serialize(v).c_str());
  }
  auto c = good_claims();
  c.erase(claim);
  expect_fails(c, why, (std::string("no ") + claim).c_str());
}

TEST(CheckIdToken, GoodClaimsPass) {
  EXPECT_EQ(check_id_token(good_claims(), expectations()), std::nullopt);
  auto c = good_claims();
  c["aud"] = json::array{"client-1"};  // an array of one, no azp
  EXPECT_EQ(check_id_token(c, expectations()), std::nullopt);
  c["aud"] = json::array{"client-1", "other"};
  c["azp"] = "client-1";
  EXPECT_EQ(check_id_token(c, expectations()), std::nullopt);
  c = good_claims();
  c["azp"] = "client-1";  // azp with a single audience, naming this client
  EXPECT_EQ(check_id_token(c, expectations()), std::nullopt);
  c = good_claims();
  c["exp"] = static_cast<double>(now + 600);  // times as JSON doubles
  c["iat"] = now - 10.5;
  EXPECT_EQ(check_id_token(c, expectations()), std::nullopt);
  c = good_claims();
  c["exp"] = static_cast<std::uint64_t>(now + 600);
  EXPECT_EQ(check_id_token(c, expectations()), std::nullopt);
}

TEST(CheckIdToken, IssuerMustMatchExactly) {
  const std::string why = "the ID token is from another issuer";
  expect_each_fails("iss",
                    {json::value("https://evil.example"), json::value("https://idp.example/"),
                     json::value("HTTPS://IDP.EXAMPLE"), json::value("https://idp.example "), json::value(""),
                     json::value(5), json::value(nullptr), json::value(json::array{"https://idp.example"})},
                    why);
}

TEST(CheckIdToken, AudienceMustHoldTheClient) {
  const std::string why = "the ID token is for another client";
  expect_each_fails("aud",
                    {json::value("client-2"), json::value("client-1 "), json::value(""), json::value(1),
                     json::value(nullptr), json::value(json::array{}), json::value(json::array{"client-2"}),
                     json::value(json::array{1, 2}), json::value(json::object{{"client-1", true}})},
                    why);
}

TEST(CheckIdToken, SeveralAudiencesNeedAzpNamingTheClient) {
  const std::string why = "the ID token was issued to another client (azp)";
  auto c = good_claims();
  c["aud"] = json::array{"client-1", "other"};
  expect_fails(c, why, "no azp");
  c["azp"] = "other";
  expect_fails(c, why, "azp other");
  c["azp"] = 1;
  expect_fails(c, why, "azp a number");
  c["azp"] = "client-1";
  EXPECT_EQ(check_id_token(c, expectations()), std::nullopt);
}

TEST(CheckIdToken, AnAzpPresentMustNameTheClientEvenWithOneAudience) {
  auto c = good_claims();
  c["azp"] = "other";
  expect_fails(c, "the ID token was issued to another client (azp)", "azp other");
  c["azp"] = nullptr;
  expect_fails(c, "the ID token was issued to another client (azp)", "azp null");
}

TEST(CheckIdToken, ExpiryWithLeeway) {
  auto c = good_claims();
  c["exp"] = now - 60;  // exactly now - leeway: expired
  expect_fails(c, "the ID token has expired", "exp at now - leeway");
  c["exp"] = now - 3600;
  expect_fails(c, "the ID token has expired", "exp an hour ago");
  c["exp"] = now - 59;  // within the leeway
  EXPECT_EQ(check_id_token(c, expectations()), std::nullopt);
  c["exp"] = now - 60.5;
  expect_fails(c, "the ID token has expired", "exp a double");
}

TEST(CheckIdToken, ExpMustBeAFiniteNumber) {
  expect_each_fails("exp",
                    {json::value("2000000000"), json::value(nullptr), json::value(true),
                     json::value(std::numeric_limits<double>::infinity()), json::value(std::nan(""))},
                    "the ID token has no expiry time");
}

TEST(CheckIdToken, IssuedAtWithinLeewayAndMaxAge) {
  auto c = good_claims();
  c["iat"] = now + 61;
  expect_fails(c, "the ID token was issued in the future", "iat past the leeway");
  c["iat"] = now + 60;
  EXPECT_EQ(check_id_token(c, expectations()), std::nullopt);
  c["iat"] = now - 3601;
  expect_fails(c, "the ID token was issued too long ago", "iat past max age");
  c["iat"] = now - 3600;
  EXPECT_EQ(check_id_token(c, expectations()), std::nullopt);
  for (json::value iat : {json::value("1700000000"), json::value(nullptr),
                          json::value(-std::numeric_limits<double>::infinity())}) {
    c["iat"] = iat;
    expect_fails(c, "the ID token has no issue time", json::serialize(iat).c_str());
  }
  c.erase("iat");
  expect_fails(c, "the ID token has no issue time", "no iat");
}

TEST(CheckIdToken, NonceMustBeThisLogins) {
  const std::string why = "the ID token's nonce is not this login's";
  expect_each_fails("nonce",
                    {json::value("n-0S7"), json::value("n-0s6"), json::value(""), json::value(6),
                     json::value(nullptr), json::value(json::array{"n-0S6"})},
                    why);
  // An expectation left empty matches nothing, not even an empty nonce.
  auto c = good_claims();
  c["nonce"] = "";
  auto e = expectations();
  e.nonce = "";
  EXPECT_EQ(check_id_token(c, e), why);
}

TEST(CheckIdToken, SubjectIsANonEmptyStringOfAtMost255Bytes) {
  const std::string why = "the ID token has no valid subject (sub)";
  expect_each_fails("sub",
                    {json::value(""), json::value(std::string(256, 's')), json::value(42),
                     json::value(nullptr), json::value(json::array{"u"})},
                    why);
  auto c = good_claims();
  c["sub"] = std::string(255, 's');
  EXPECT_EQ(check_id_token(c, expectations()), std::nullopt);
}

TEST(CheckIdToken, EmptyIssuerOrClientExpectationsMatchNothing) {
  auto c = good_claims();
  c["iss"] = "";
  c["aud"] = "";
  auto e = expectations();
  e.issuer = "";
  EXPECT_EQ(check_id_token(c, e), "the ID token is from another issuer");
  c["iss"] = "https://idp.example";
  e = expectations();
  e.client_id = "";
  EXPECT_EQ(check_id_token(c, e), "the ID token is for another client");
}

// The pieces together: a token signed by the provider's key, verified, then its claims checked.
TEST(CheckIdToken, AVerifiedTokensClaimsPassTheChecks) {
  jwt_check v =
      verify_jwt(token(keys().ec.get(), header("ES256", "ec-kid-1"), good_claims()), standard_set());
  ASSERT_EQ(v.error, jwt_error::none) << v.why;
  EXPECT_EQ(check_id_token(v.claims, expectations()), std::nullopt);
  auto e = expectations();
  e.now = now + 3600;
  EXPECT_EQ(check_id_token(v.claims, e), "the ID token has expired");
}

}  // namespace
}  // namespace descprod::jose
