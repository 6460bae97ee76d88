// Fuzz target: the gateway's request-body layer (gateway/api.hpp) on arbitrary body bytes:
// parse_json_body, then validate_job, validate_bulk and the runner's report bodies (claim,
// started, progress, finished) on the same value. Invariants:
//   - parse_json_body accepts exactly what Boost.JSON parses; a refusal is 400 bad_json;
//   - an accepted job names a registered jobtype, its config passes check_service_config (so it
//     holds only [A-Za-z0-9:_.-]) and the app's pattern, within max_config_bytes; its howfig, when
//     set, is valid UTF-8 without control characters, within max_config_bytes, matching the app's
//     howfig_pattern if it has one;
//     priority in -1000..1000, parent positive, max_attempts the app's; the object had no other
//     field;
//   - validate_bulk accepts exactly when every item would be accepted alone, and yields the same
//     jobs;
//   - every report field is within its documented range; messages are cut to max_message_bytes
//     and stay valid UTF-8;
//   - every refusal passes check_api_error (4xx, bounded valid-UTF-8 detail, JSON body).
// The same bytes also go to the JOSE layer of OpenID Connect login (core/jose.hpp); see
// check_jose below.
#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <cstdint>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/job.hpp"
#include "core/jose.hpp"
#include "core/site_document.hpp"
#include "fuzz/fuzz_support.hpp"
#include "gateway/api.hpp"

using namespace descprod;
namespace gw = descprod::gateway;
using fuzz::check_api_error;
using fuzz::valid_utf8;

namespace {

constexpr std::size_t max_bulk = 64;

bool config_chars_only(const std::string& s) {
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
          c == ':' || c == '_' || c == '.'))
      return false;
  }
  return true;
}

void check_refusal(const gw::api_error& e) {
  check_api_error(e);
  FUZZ_CHECK(e.status() == 400);
  FUZZ_CHECK(e.name() == "bad_request" || e.name() == "bad_json" || e.name() == "invalid_config" ||
             e.name() == "unknown_jobtype");
}

void check_job(const boost::json::value& v, const gw::job_request& r) {
  const auto& o = v.as_object();
  for (const auto& kv : o) {
    auto k = kv.key();
    FUZZ_CHECK(k == "jobtype" || k == "config" || k == "howfig" || k == "priority" || k == "parent");
  }
  const app_def* app = fuzz::test_apps().find(r.jobtype);
  FUZZ_CHECK(app != nullptr);
  FUZZ_CHECK(o.at("jobtype").as_string() == r.jobtype);
  FUZZ_CHECK(o.at("config").as_string() == r.config);
  FUZZ_CHECK(r.config.size() <= gw::max_config_bytes);
  FUZZ_CHECK(check_service_config(r.config) == 0 && config_chars_only(r.config));
  if (app->compiled_pattern) FUZZ_CHECK(std::regex_match(r.config, *app->compiled_pattern));
  if (!r.howfig.empty()) {
    FUZZ_CHECK(r.howfig.size() <= gw::max_config_bytes);
    FUZZ_CHECK(valid_howfig_text(r.howfig));
    for (unsigned char c : r.howfig) FUZZ_CHECK(c >= 0x20 && c != 0x7f);
    if (app->compiled_howfig_pattern) FUZZ_CHECK(std::regex_match(r.howfig, *app->compiled_howfig_pattern));
  }
  FUZZ_CHECK(r.priority >= -1000 && r.priority <= 1000);
  FUZZ_CHECK(!r.parent || *r.parent > 0);
  FUZZ_CHECK(r.max_attempts == app->max_attempts);
}

bool same(const gw::job_request& a, const gw::job_request& b) {
  return a.jobtype == b.jobtype && a.config == b.config && a.howfig == b.howfig && a.priority == b.priority &&
         a.parent == b.parent && a.max_attempts == b.max_attempts;
}

void check_validate_job(const boost::json::value& v) {
  gw::job_request r;
  auto e = gw::validate_job(v, fuzz::test_apps(), r);
  if (e) {
    check_refusal(*e);
    return;
  }
  check_job(v, r);
}

void check_validate_bulk(const boost::json::value& v) {
  std::vector<gw::job_request> jobs;
  auto e = gw::validate_bulk(v, fuzz::test_apps(), max_bulk, jobs);
  if (e) {
    check_refusal(*e);
    return;
  }
  const auto& arr = v.as_object().at("jobs").as_array();
  FUZZ_CHECK(v.as_object().size() == 1);
  FUZZ_CHECK(!arr.empty() && arr.size() <= max_bulk && jobs.size() == arr.size());
  for (std::size_t i = 0; i < arr.size(); ++i) {
    gw::job_request alone;
    FUZZ_CHECK(!gw::validate_job(arr[i], fuzz::test_apps(), alone));
    FUZZ_CHECK(same(alone, jobs[i]));
    check_job(arr[i], jobs[i]);
  }
}

void check_message(const std::string& m) {
  FUZZ_CHECK(m.size() <= gw::max_message_bytes);
  FUZZ_CHECK(valid_utf8(m));
}

void check_reports(const boost::json::value& v) {
  std::string host;
  if (auto e = gw::parse_claim_body(v, host)) {
    check_refusal(*e);
  } else {
    FUZZ_CHECK(!host.empty() && host.size() <= gw::max_host_bytes);
    for (char c : host)
      FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '-' || c == '_');
  }
  gw::started_report s;
  if (auto e = gw::parse_started_body(v, s)) {
    check_refusal(*e);
  } else {
    FUZZ_CHECK(s.attempt >= 1 && s.attempt <= 1'000'000'000);
    FUZZ_CHECK(s.pid >= 0 && s.pid <= INT32_MAX);
    FUZZ_CHECK(s.host.size() <= gw::max_host_bytes && s.rundir.size() <= gw::max_rundir_bytes);
  }
  gw::progress_report p;
  if (auto e = gw::parse_progress_body(v, p)) {
    check_refusal(*e);
  } else {
    FUZZ_CHECK(p.attempt >= 1 && p.attempt <= 1'000'000'000);
    FUZZ_CHECK(p.done.has_value() == p.total.has_value());
    if (p.done) FUZZ_CHECK(*p.done >= 0 && *p.total >= 0);
    check_message(p.message);
  }
  gw::finished_report f;
  if (auto e = gw::parse_finished_body(v, f)) {
    check_refusal(*e);
  } else {
    FUZZ_CHECK(f.attempt >= 1 && f.attempt <= 1'000'000'000);
    FUZZ_CHECK(f.signal >= 0 && f.signal <= 255);
    check_message(f.message);
  }
}

// ---- JOSE (core/jose.hpp) ----------------------------------------------------------------------
// A provider's key set, fixed: one RSA 2048 key (kid fuzz-rsa) and one P-256 key (kid fuzz-ec),
// generated once with OpenSSL; only the public halves are here, so no input can carry a valid
// signature made for this run. The two tokens below were signed with the private halves (then
// thrown away): they show at start-up that the set is usable, so that "never verifies" below is
// not true merely because no key was kept.
constexpr std::string_view fuzz_jwks =
    R"({"keys":[{"kty":"RSA","kid":"fuzz-rsa","use":"sig","alg":"RS256","e":"AQAB","n":")"
    "rw_XdWevan0K__0uMWweABxr7z6-BSVHnOxXQhg3jV92i_HbNpgM4QyhaQ9Fokt8ybYVAEmP4g0FD2UsJAe0FlGiFz"
    "OOxaOOapcmSaSjxK2awtOgccIzHTxDHSL5HL1TE1nPyeIJA_9zQUkSYLCG9kz-BPy9o2X4pP9m1Ge_lDW-4uGWkZdW"
    "EOk7NPGoUM3gv1weEwyGeBjIPmi4LHM8GopRQFAWHovH4_30wdKHPOtM6tiEWFUT-VO60IfHmhz2GM1FGar83QSnCT"
    "fKIEXmU7ngetJ3R857dcFf8knPdaTyZiNdd0-5SdS9a3YGVt4H3DA8vNXD7EBE18lLI_J9OQ"
    R"("},{"kty":"EC","kid":"fuzz-ec","crv":"P-256","x":"szpsV67caXCb4AuF-jMKeddRZDoIanMTTV1gHTAxPRI",)"
    R"("y":"qTIkkHwbR_qxxRuvSlPAcqT55iSseiA3C5bbEEM8qoM"}]})";
// "<header>.<payload>" of each token (kid fuzz-rsa, RS256; kid fuzz-ec, ES256) and its signature.
constexpr std::string_view rs256_input =
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImZ1enotcnNhIn0."
    "eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIiwic3ViIjoiZnV6eiIsImF1ZCI6ImRlc2Nwcm9kIiwiZXhwIjoyMD"
    "AwMDAwMDAwLCJpYXQiOjE3MDAwMDAwMDAsIm5vbmNlIjoibiJ9";
constexpr std::string_view rs256_signature =
    "Ihiy3Mh0FmpVhuaF4fEecwSEmcYud1WTfwm7Jp8hdhhm-CrFMKUgsgI0W7Okg3wMEnXMe_flP7enYj45Gfg4jxjRyU"
    "JNuddIaJfovP-_NsVTg7EyAZ2u8LnhzUNH58MZDZnJt2uXuTsenWSTaX2C914ytNpB1XEDBDrtghawEcSd1jcuqkZ-"
    "74G3Z8rSY8rPYYBLPh6FmXCqYS4DPZg0XgTtQyJVZdoPOPHqoVDelrwM52Cpi-KRe0Qt50b4dunML2DRvhv4x6tkZK"
    "VaJFYnHXVLLi-FF8J6dT8jEvvDU_FTgBsxVq1oMPB0MNY8fODtXYJNowT-DHvPlDBhrukL1w";
constexpr std::string_view es256_input =
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImZ1enotZWMifQ."
    "eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIiwic3ViIjoiZnV6eiIsImF1ZCI6ImRlc2Nwcm9kIiwiZXhwIjoyMD"
    "AwMDAwMDAwLCJpYXQiOjE3MDAwMDAwMDAsIm5vbmNlIjoibiJ9";
constexpr std::string_view es256_signature =
    "aR2e8JGGygmWuaVfumqdx39nN0U8tSfrb4xRDMkkflqdc-rGnp97MmIPFoWAFT30c3UJNSpx2uGVZEz0cKDNIg";

const jose::key_set& fuzz_keys() {
  static const jose::key_set set = [] {
    std::string why;
    auto s = jose::key_set::parse(fuzz_jwks, &why);
    FUZZ_CHECK(s && s->keys.size() == 2 && s->skipped == 0);
    return std::move(*s);
  }();
  return set;
}

// The two JWKs of fuzz_jwks as JSON objects (RSA, then EC).
const boost::json::array& fuzz_jwk_objects() {
  static const boost::json::array keys = [] {
    boost::json::value v;
    FUZZ_CHECK(fuzz::parses_as_json(fuzz_jwks, &v));
    return v.as_object().at("keys").as_array();
  }();
  return keys;
}

struct signed_token {
  std::string_view input, signature;
  std::string text() const { return std::string(input) + "." + std::string(signature); }
};
constexpr signed_token fuzz_tokens[] = {{rs256_input, rs256_signature}, {es256_input, es256_signature}};

void check_refused_jwt(const jose::jwt_check& c) {
  FUZZ_CHECK(c.error != jose::jwt_error::none);
  FUZZ_CHECK(!c.why.empty());
  FUZZ_CHECK(c.claims.empty());
  FUZZ_CHECK(jose::to_string(c.error) != "none");
}

// A key set read from `text`, checked: a refusal says why; a set keeps only RSA and EC keys with
// a key, an alg that fits the type (or none) and no kid twice, and kept + skipped is the number
// of entries of its keys array. With a set, the two valid tokens are never malformed or
// unsupported: what a set decides is only whether a key is found and whether it verifies.
std::optional<jose::key_set> check_key_set(std::string_view text) {
  std::string why;
  auto set = jose::key_set::parse(text, &why);
  if (!set) {
    FUZZ_CHECK(!why.empty());
    return set;
  }
  boost::json::value v;
  FUZZ_CHECK(fuzz::parses_as_json(text, &v));
  FUZZ_CHECK(set->keys.size() + set->skipped == v.as_object().at("keys").as_array().size());
  std::set<std::string> kids;
  for (const auto& k : set->keys) {
    FUZZ_CHECK(k.key != nullptr);
    FUZZ_CHECK((k.kty == "RSA" && (k.alg.empty() || k.alg == "RS256")) ||
               (k.kty == "EC" && (k.alg.empty() || k.alg == "ES256")));
    if (!k.kid.empty()) FUZZ_CHECK(kids.insert(k.kid).second);
  }
  for (const auto& t : fuzz_tokens) {
    auto c = jose::verify_jwt(t.text(), *set);
    FUZZ_CHECK(c.error == jose::jwt_error::none || c.error == jose::jwt_error::unknown_kid ||
               c.error == jose::jwt_error::bad_signature);
    if (c.error == jose::jwt_error::none) {
      FUZZ_CHECK(c.why.empty() && c.claims.contains("sub"));
      FUZZ_CHECK(set->find(c.kid, c.alg) != nullptr);
    } else {
      FUZZ_CHECK(!c.why.empty() && c.claims.empty());
    }
  }
  return set;
}

// The rules of check_id_token (jose.hpp), written out again independently: claims it accepts
// must meet every one.
jose::id_token_expectations id_token_expectations() {
  jose::id_token_expectations e;
  e.issuer = "https://idp.example";
  e.client_id = "descprod";
  e.nonce = "n";
  e.now = 1'800'000'000;
  return e;
}
void check_id_token_claims(const boost::json::object& c) {
  const jose::id_token_expectations e = id_token_expectations();
  auto refused = jose::check_id_token(c, e);
  if (refused) {
    FUZZ_CHECK(!refused->empty());
    return;
  }
  auto str = [&](const char* k) -> std::optional<std::string_view> {
    const auto* v = c.if_contains(k);
    if (!v || !v->is_string()) return std::nullopt;
    return std::string_view(v->get_string());
  };
  auto num = [&](const char* k) {
    const auto* v = c.if_contains(k);
    FUZZ_CHECK(v && v->is_number());
    double d = v->to_number<double>();
    FUZZ_CHECK(std::isfinite(d));
    return d;
  };
  FUZZ_CHECK(str("iss") == e.issuer);
  const auto* aud = c.if_contains("aud");
  FUZZ_CHECK(aud != nullptr);
  if (aud->is_string()) {
    FUZZ_CHECK(aud->get_string() == e.client_id);
  } else {
    FUZZ_CHECK(aud->is_array());
    const auto& a = aud->get_array();
    FUZZ_CHECK(std::find(a.begin(), a.end(), boost::json::value(e.client_id)) != a.end());
    if (a.size() > 1) FUZZ_CHECK(str("azp") == e.client_id);
  }
  if (c.contains("azp")) FUZZ_CHECK(str("azp") == e.client_id);
  FUZZ_CHECK(num("exp") > static_cast<double>(e.now - e.leeway_s));
  double iat = num("iat");
  FUZZ_CHECK(iat <= static_cast<double>(e.now + e.leeway_s) &&
             iat >= static_cast<double>(e.now - e.max_age_s));
  FUZZ_CHECK(str("nonce") == e.nonce);
  auto sub = str("sub");
  FUZZ_CHECK(sub && !sub->empty() && sub->size() <= 255);
}

// Whatever the bytes (the JOSE layer of OpenID Connect login, core/jose.hpp):
//   - as a key set, and spliced into one ({"keys":[<bytes>]}): check_key_set;
//   - as a JSON object laid over each key of the fixed set (its members replace the key's, so
//     that kty, use, alg, kid, n, e, crv, x and y are varied with the rest valid): a set of one
//     entry, kept or skipped, and check_key_set;
//   - as a token, verify_jwt never verifies (no signature can be forged for the fixed set) and
//     every refusal says why, without claims;
//   - as the header of the valid RS256 token (base64url-encoded): it verifies only when it is
//     the token's own header, and a header that is not a JSON object is malformed;
//   - as the signature of a valid token (as it is, and base64url-encoded): it verifies only when
//     it is the token's own signature (RS256: PKCS#1 v1.5 signatures are unique and base64url
//     decoding is canonical; ES256: the same r, since (r, n - s) is the one other valid
//     signature);
//   - base64url_decode refuses it or round-trips through base64url_encode, and decoding an
//     encoding gives the bytes back;
//   - as ID-token claims (a JSON object), alone and laid over claims that pass:
//     check_id_token_claims.
void check_jose(std::string_view body) {
  check_key_set(body);
  check_key_set(R"({"keys":[)" + std::string(body) + "]}");
  boost::json::value v;
  bool json = fuzz::parses_as_json(body, &v);
  if (json && v.is_object()) {
    // As the claims, and laid over claims that pass (so that every rule is reached).
    check_id_token_claims(v.as_object());
    boost::json::object claims{
        {"iss", "https://idp.example"}, {"aud", "descprod"},   {"sub", "fuzz"}, {"nonce", "n"},
        {"exp", 1'800'000'600},         {"iat", 1'800'000'000}};
    FUZZ_CHECK(!jose::check_id_token(claims, id_token_expectations()));
    for (const auto& kv : v.as_object()) claims[kv.key()] = kv.value();
    check_id_token_claims(claims);
    for (const auto& base : fuzz_jwk_objects()) {
      boost::json::object jwk = base.as_object();
      for (const auto& kv : v.as_object()) jwk[kv.key()] = kv.value();
      std::string doc = boost::json::serialize(boost::json::object{{"keys", boost::json::array{jwk}}});
      auto set = check_key_set(doc);
      // A number too large for a double serializes as Infinity, which is not JSON (docs/fuzzing.md).
      if (fuzz::parses_as_json(doc)) {
        FUZZ_CHECK(set && set->keys.size() + set->skipped == 1);
      } else {
        FUZZ_CHECK(!set);
      }
    }
  }

  check_refused_jwt(jose::verify_jwt(body, fuzz_keys()));

  std::string_view rs_header = rs256_input.substr(0, rs256_input.find('.'));
  std::string_view rs_payload = rs256_input.substr(rs_header.size() + 1);
  auto h = jose::verify_jwt(
      jose::base64url_encode(body) + "." + std::string(rs_payload) + "." + std::string(rs256_signature),
      fuzz_keys());
  if (h.error == jose::jwt_error::none) {
    FUZZ_CHECK(jose::base64url_encode(body) == rs_header);
  } else {
    FUZZ_CHECK(!h.why.empty() && h.claims.empty());
    if (!json || !v.is_object()) FUZZ_CHECK(h.error == jose::jwt_error::malformed);
  }

  // The bytes as the signature, base64url as it comes and encoded (so that every 64- and
  // 256-byte input reaches ECDSA and RSA verification).
  for (const std::string& sig : {std::string(body), jose::base64url_encode(body)}) {
    auto rs = jose::verify_jwt(std::string(rs256_input) + "." + sig, fuzz_keys());
    if (rs.error == jose::jwt_error::none) {
      FUZZ_CHECK(sig == rs256_signature);
    } else {
      FUZZ_CHECK(!rs.why.empty() && rs.claims.empty());
    }
    auto es = jose::verify_jwt(std::string(es256_input) + "." + sig, fuzz_keys());
    if (es.error == jose::jwt_error::none) {
      auto got = jose::base64url_decode(sig), want = jose::base64url_decode(es256_signature);
      FUZZ_CHECK(got && want && got->size() == 64 && got->substr(0, 32) == want->substr(0, 32));
    } else {
      FUZZ_CHECK(!es.why.empty() && es.claims.empty());
    }
  }

  if (auto bytes = jose::base64url_decode(body)) {
    FUZZ_CHECK(jose::base64url_encode(*bytes) == body);
  }
  FUZZ_CHECK(jose::base64url_decode(jose::base64url_encode(body)) == body);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::silence_logs();
  (void)fuzz::test_apps();
  // The fixed key set is usable: each key verifies its token (see fuzz_keys).
  for (const auto& t : fuzz_tokens) {
    auto c = jose::verify_jwt(t.text(), fuzz_keys());
    FUZZ_CHECK(c.error == jose::jwt_error::none && c.claims.contains("sub"));
  }
  FUZZ_CHECK(fuzz_jwk_objects().size() == 2);
  return 0;
}

// A site's status document (core/site_document.hpp) is an untrusted answer too: whatever the
// bytes, a document read from them has a status that is a lower-case word and texts without
// control characters, each at most site_text_max bytes; a refusal says why.
static void check_site_document(std::string_view body) {
  std::string why;
  auto d = descprod::parse_site_document(body, why);
  if (!d) {
    FUZZ_CHECK(!why.empty());
    return;
  }
  FUZZ_CHECK(!d->status.empty() && d->status.size() <= 32);
  for (char c : d->status)
    FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == ' ');
  for (const std::string* t : {&d->full_name, &d->description, &d->notes, &d->updated_at}) {
    FUZZ_CHECK(t->size() <= descprod::site_text_max);
    for (unsigned char c : *t) FUZZ_CHECK(c >= 0x20 && c != 0x7f);
  }
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  check_site_document(body);
  check_jose(body);
  boost::json::value v;
  auto e = gw::parse_json_body(body, v);
  FUZZ_CHECK(e.has_value() == (body.empty() || !fuzz::parses_as_json(body)));
  if (e) {
    check_refusal(*e);
    FUZZ_CHECK(e->name() == "bad_json");
    return 0;
  }
  check_validate_job(v);
  check_validate_bulk(v);
  check_reports(v);
  return 0;
}
