// End-to-end tests of the OpenID Connect login (issue 18; gateway/oidc.hpp) against a real
// provider: Debian's glewlwyd, started on loopback by tests/oidc/provider.sh (stopped by its PID
// file's PID), and the real gateway. A person's part at the provider (its login page and consent)
// is done by tests/oidc/login.sh with curl, as the browser suite does it in Chromium.
//
// Also here: the gateway's ID-token checks (core/jose.hpp) on real tokens the provider issued:
// another client's, another nonce's, a tampered one, one signed with a key the provider's key set
// lacks, and one past its expiry (the checks' clock moved on, as the gateway's `now` would be).
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <regex>
#include <string>

#include "core/crypto.hpp"
#include "core/jose.hpp"
#include "core/redis.hpp"
#include "tests/e2e/api_support.hpp"

namespace descprod::test {
namespace {

using namespace std::chrono_literals;

std::string script(const std::string& name) {
  return std::string(DESCPROD_SOURCE_DIR) + "/tests/oidc/" + name;
}

// Runs a tests/oidc script; its stdout (trimmed), failing the test unless it exits 0.
std::string run_script(const std::vector<std::string>& argv, const std::string& out_file,
                       std::vector<std::pair<std::string, std::string>> env = {}) {
  std::remove(out_file.c_str());
  std::string err_file = out_file + ".err";
  std::vector<std::string> args;
  args.push_back("/bin/sh");
  args.push_back("-c");
  args.push_back("exec \"$0\" \"$@\" 2>\"" + err_file + "\"");
  for (const auto& a : argv) args.push_back(a);
  process p(args, std::move(env), out_file);
  auto rc = p.wait_exit(60s);
  std::string out = p.output();
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  EXPECT_TRUE(rc && *rc == 0) << argv[0] << " failed: " << read_file(err_file) << out;
  return out;
}

// glewlwyd on loopback, for one test.
struct provider {
  temp_dir dir{"descprod-oidc-"};
  std::string issuer, env_file;
  provider() {
    issuer = run_script({script("provider.sh"), "start", dir.path() + "/p"}, dir.file("start.out"));
    issuer = issuer.substr(issuer.find("OIDC_ISSUER=") + 12);
    issuer = issuer.substr(0, issuer.find('\n'));
  }
  ~provider() { run_script({script("provider.sh"), "stop", dir.path() + "/p"}, dir.file("stop.out")); }
  std::string path() const { return dir.path() + "/p"; }
  void redirect_to(const std::string& uri) {
    run_script({script("provider.sh"), "redirect", path(), uri}, dir.file("redirect.out"));
  }
  // Logs `user` in at the provider for an authorization URL; the URL it sends the browser back to.
  std::string login(const std::string& authorization_url, const std::string& user = "alice") {
    return run_script({script("login.sh"), path(), authorization_url, user}, dir.file("login.out"));
  }
};

// One entry of gateway.oidc (YAML lines of the gateway section), `more` its further keys' lines.
std::string provider_entry(const std::string& name, const std::string& issuer, const std::string& secret_file,
                           const std::string& more = "") {
  return "    - name: " + name + "\n      issuer: " + issuer + "\n      client_id: descprod\n" +
         "      client_secret_file: " + secret_file + "\n" + more;
}

// The gateway config for one provider (name glewlwyd), and `more` providers' lines.
service_options oidc_options(const provider& p, const std::string& secret_file,
                             const std::string& more = "") {
  service_options o;
  o.gateway_extra =
      "  password_opslimit: 1\n  password_memlimit_kib: 8\n  oidc:\n" +
      provider_entry("glewlwyd", p.issuer, secret_file, "      button_label: Log in with Glewlwyd\n") + more;
  return o;
}

std::string query_value(const std::string& url, const std::string& name) {
  auto q = url.find('?');
  if (q == std::string::npos) return {};
  std::regex re("(?:^|&)" + name + "=([^&#]*)");
  std::smatch m;
  std::string query = url.substr(q + 1);
  if (!std::regex_search(query, m, re)) return {};
  return m[1];
}

std::string cookie_of(const http_response& r, const std::string& name) {
  std::string set = r.header("set-cookie");
  auto at = set.find(name + "=");
  if (at == std::string::npos) return {};
  auto end = set.find(';', at);
  return set.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

std::string path_of(const std::string& url) {
  auto scheme = url.find("://");
  auto slash = url.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  return slash == std::string::npos ? "/" : url.substr(slash);
}

// One login through the gateway, as a browser does it: /login/oidc/<name> (its state cookie), the
// provider's login as `user`, back to the callback with that cookie.
struct login_run {
  http_response start, back;
  std::string state_cookie, callback_url;
};
login_run oidc_login(service& s, provider& p, const std::string& user, const std::string& name = "glewlwyd") {
  login_run run;
  run.start = http_request("127.0.0.1", s.port(), "GET", "/login/oidc/" + name);
  EXPECT_EQ(run.start.status, 303) << run.start.body;
  run.state_cookie = cookie_of(run.start, "descprod_oidc");
  run.callback_url = p.login(run.start.header("location"), user);
  http_headers h;
  h.emplace_back("Cookie", run.state_cookie);
  run.back = http_request("127.0.0.1", s.port(), "GET", path_of(run.callback_url), "", h);
  return run;
}

TEST(OidcLogin, AFirstLoginMakesAPendingAccountAnAdminApprovesItAndTheNextLoginOpensASession) {
  provider p;
  temp_dir secrets;
  write_file(secrets.file("secret"), "descprod-test-secret\n");
  std::string secret = secrets.file("secret");
  service s(oidc_options(
      p, secret,
      provider_entry("strict", p.issuer, secret, "      allowed_email_domains: [example.com]\n") +
          provider_entry("auto", p.issuer, secret,
                         "      allowed_email_domains: [example.org]\n      auto_approve: true\n"
                         "      token_auth: client_secret_post\n")));
  std::string callback = "http://127.0.0.1:" + std::to_string(s.port()) + "/login/oidc/callback";
  p.redirect_to(callback);
  redis_sync r(s.redis.endpoint());
  auto alice_before = r.exec({"HGETALL", "descprod:user:alice"});

  // The login page shows the provider's button.
  auto page = http_request("127.0.0.1", s.port(), "GET", "/login");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.body.find("href=\"/login/oidc/glewlwyd\""), std::string::npos) << page.body;
  EXPECT_NE(page.body.find("Log in with Glewlwyd"), std::string::npos);

  // To the provider: code flow, PKCE S256, state and nonce, the registered redirect URI; the state
  // in Redis for at most 10 minutes and in a Lax cookie for /login/oidc only.
  auto start = http_request("127.0.0.1", s.port(), "GET", "/login/oidc/glewlwyd");
  ASSERT_EQ(start.status, 303) << start.body;
  std::string to = start.header("location");
  EXPECT_EQ(to.rfind(p.issuer + "/auth?", 0), 0u) << to;
  EXPECT_EQ(query_value(to, "response_type"), "code");
  EXPECT_EQ(query_value(to, "client_id"), "descprod");
  EXPECT_EQ(query_value(to, "code_challenge_method"), "S256");
  EXPECT_EQ(query_value(to, "code_challenge").size(), 43u);
  EXPECT_EQ(query_value(to, "nonce").size(), 64u);
  std::string state = query_value(to, "state");
  EXPECT_EQ(state.size(), 64u);
  EXPECT_EQ(query_value(to, "redirect_uri"),
            "http%3A%2F%2F127.0.0.1%3A" + std::to_string(s.port()) + "%2Flogin%2Foidc%2Fcallback");
  std::string set = start.header("set-cookie");
  EXPECT_NE(set.find("descprod_oidc=" + state), std::string::npos) << set;
  EXPECT_NE(set.find("SameSite=Lax"), std::string::npos) << set;
  EXPECT_NE(set.find("HttpOnly"), std::string::npos) << set;
  EXPECT_NE(set.find("Path=/login/oidc"), std::string::npos) << set;
  auto ttl = r.exec({"TTL", "descprod:oidc:state:" + sha256_hex(state)}).integer;
  EXPECT_GT(ttl, 500);
  EXPECT_LE(ttl, 600);

  // The first login as alice: glewlwyd's alice is not this service's alice (a local account of
  // the fixture), so a new account is made, pending, named alice-2, and no session opens.
  std::string back_url = p.login(to, "alice");
  EXPECT_EQ(back_url.rfind(callback + "?", 0), 0u) << back_url;
  http_headers with_cookie;
  with_cookie.emplace_back("Cookie", "descprod_oidc=" + state);
  auto back = http_request("127.0.0.1", s.port(), "GET", path_of(back_url), "", with_cookie);
  EXPECT_EQ(back.status, 200) << back.body;
  EXPECT_NE(back.body.find("Welcome, alice-2"), std::string::npos) << back.body;
  EXPECT_EQ(cookie_of(back, "descprod_session"), "");
  EXPECT_EQ(r.exec({"EXISTS", "descprod:oidc:state:" + sha256_hex(state)}).integer, 0);
  auto made = r.exec(
      {"HMGET", "descprod:user:alice-2", "status", "email", "oidc_iss", "oidc_provider", "password_hash"});
  EXPECT_EQ(made.elements[0].as_string(), "pending");
  EXPECT_EQ(made.elements[1].as_string(), "alice@example.org");
  EXPECT_EQ(made.elements[2].as_string(), p.issuer);
  EXPECT_EQ(made.elements[3].as_string(), "glewlwyd");
  EXPECT_TRUE(made.elements[4].is_nil());
  EXPECT_EQ(r.exec({"SISMEMBER", "descprod:users", "alice-2"}).integer, 1);
  auto links = r.exec({"HGETALL", "descprod:oidc:links"});
  ASSERT_EQ(links.elements.size(), 2u);
  EXPECT_EQ(links.elements[0].as_string().rfind(p.issuer + " ", 0), 0u);
  EXPECT_EQ(links.elements[1].as_string(), "alice-2");
  // The local alice is untouched.
  auto alice_after = r.exec({"HGETALL", "descprod:user:alice"});
  ASSERT_EQ(alice_after.elements.size(), alice_before.elements.size());
  for (std::size_t i = 0; i < alice_after.elements.size(); ++i)
    EXPECT_EQ(alice_after.elements[i].as_string(), alice_before.elements[i].as_string());

  // The same callback again (a replay) opens nothing.
  auto replay = http_request("127.0.0.1", s.port(), "GET", path_of(back_url), "", with_cookie);
  EXPECT_EQ(replay.status, 400);
  EXPECT_NE(replay.body.find("expired or was used already"), std::string::npos) << replay.body;
  EXPECT_EQ(cookie_of(replay, "descprod_session"), "");

  // Before approval, a login says the account is pending.
  auto again = oidc_login(s, p, "alice");
  EXPECT_EQ(again.back.status, 403) << again.back.body;
  EXPECT_NE(again.back.body.find("account alice-2 is pending"), std::string::npos) << again.back.body;
  EXPECT_EQ(cookie_of(again.back, "descprod_session"), "");

  // An administrator approves it; the next login opens a session on a page that moves on to /.
  auto ok = s.call("POST", "/api/admin/users/alice-2/approve", "{}", s.admin_token());
  EXPECT_EQ(ok.status, 200) << ok.body;
  auto in = oidc_login(s, p, "alice");
  EXPECT_EQ(in.back.status, 200) << in.back.body;
  EXPECT_EQ(in.back.header("refresh"), "0; url=/");
  std::string session = cookie_of(in.back, "descprod_session");
  ASSERT_FALSE(session.empty()) << in.back.header("set-cookie");
  EXPECT_NE(in.back.header("set-cookie").find("descprod_oidc=;"), std::string::npos);
  http_headers as_session;
  as_session.emplace_back("Cookie", session);
  auto who = http_request("127.0.0.1", s.port(), "GET", "/api/session", "", as_session);
  ASSERT_EQ(who.status, 200) << who.body;
  EXPECT_EQ(who.json().as_object().at("user").as_string(), "alice-2");
  auto home = http_request("127.0.0.1", s.port(), "GET", "/", "", as_session);
  EXPECT_EQ(home.status, 200);

  // A provider that makes accounts for example.com addresses only refuses alice@example.org's
  // (her identity is linked already, so bob's is tried: the same domain).
  auto strict = oidc_login(s, p, "bob", "strict");
  EXPECT_EQ(strict.back.status, 403) << strict.back.body;
  EXPECT_NE(strict.back.body.find("for e-mail addresses of example.com only, not example.org"),
            std::string::npos)
      << strict.back.body;
  EXPECT_EQ(r.exec({"EXISTS", "descprod:user:bob-2"}).integer, 0);

  // With auto_approve, bob's first login makes bob-2 active and opens a session at once (this
  // provider entry authenticates at the token endpoint by client_secret_post); the local bob is not
  // taken over.
  auto bob = oidc_login(s, p, "bob", "auto");
  EXPECT_EQ(bob.back.status, 200) << bob.back.body;
  EXPECT_NE(bob.back.body.find("Logged in as bob-2"), std::string::npos) << bob.back.body;
  EXPECT_FALSE(cookie_of(bob.back, "descprod_session").empty());
  EXPECT_EQ(r.exec({"HGET", "descprod:user:bob-2", "status"}).as_string(), "active");
  EXPECT_EQ(r.exec({"HGET", "descprod:user:bob-2", "oidc_provider"}).as_string(), "auto");
  EXPECT_TRUE(r.exec({"HGET", "descprod:user:bob", "oidc_sub"}).is_nil());

  // The administrator's page shows how the accounts log in.
  auto users = s.call("GET", "/api/admin/users", "", s.admin_token());
  EXPECT_NE(users.body.find("\"oidc_provider\":\"glewlwyd\""), std::string::npos) << users.body;
  EXPECT_EQ(users.body.find("password_hash"), std::string::npos);

  // An account made by OpenID Connect has no password: a password login fails as a wrong one.
  auto pw = http_request("127.0.0.1", s.port(), "POST", "/api/login",
                         R"({"username":"alice-2","password":"any-password-at-all"})");
  EXPECT_EQ(pw.status, 401) << pw.body;
}

TEST(OidcLogin, ForgedReplayedForeignAndRefusedCallbacksOpenNoSession) {
  provider p;
  temp_dir secrets;
  write_file(secrets.file("secret"), "descprod-test-secret\n");
  write_file(secrets.file("wrong"), "not-the-secret\n");
  service s(oidc_options(p, secrets.file("secret"),
                         provider_entry("wrongsecret", p.issuer, secrets.file("wrong"))));
  p.redirect_to("http://127.0.0.1:" + std::to_string(s.port()) + "/login/oidc/callback");
  redis_sync r(s.redis.endpoint());
  auto get = [&](const std::string& target, const std::string& cookie) {
    http_headers h;
    if (!cookie.empty()) h.emplace_back("Cookie", cookie);
    return http_request("127.0.0.1", s.port(), "GET", target, "", h);
  };
  auto expect_refused = [&](const http_response& res, int status, const std::string& why) {
    EXPECT_EQ(res.status, status) << res.body;
    EXPECT_NE(res.body.find(why), std::string::npos) << "want '" << why << "' in " << res.body;
    EXPECT_EQ(cookie_of(res, "descprod_session"), "");
  };

  // No state, an unknown state, an oversized one, a query that is not one.
  expect_refused(get("/login/oidc/callback?code=abc", ""), 400, "has no state");
  expect_refused(get("/login/oidc/callback?code=abc&state=" + std::string(64, 'a'),
                     "descprod_oidc=" + std::string(64, 'a')),
                 400, "expired or was used already");
  expect_refused(get("/login/oidc/callback?code=abc&state=" + std::string(5000, 'a'), ""), 400,
                 "has no state");
  expect_refused(get("/login/oidc/callback?code=%zz&state=%", ""), 400, "not a valid query");
  // An unknown provider.
  auto unknown = get("/login/oidc/nosuch", "");
  EXPECT_EQ(unknown.status, 404) << unknown.body;

  // A state started in another browser (no cookie, or another one): refused, and spent.
  auto start = get("/login/oidc/glewlwyd", "");
  ASSERT_EQ(start.status, 303);
  std::string back = path_of(p.login(start.header("location"), "alice"));
  expect_refused(get(back, ""), 403, "started in another browser");
  expect_refused(get(back, cookie_of(start, "descprod_oidc")), 400, "expired or was used already");

  // The provider's refusal (what it sends back when the person says no).
  start = get("/login/oidc/glewlwyd", "");
  std::string state = query_value(start.header("location"), "state");
  expect_refused(
      get("/login/oidc/callback?error=access_denied&error_description=The+user+said+no&state=" + state,
          cookie_of(start, "descprod_oidc")),
      403, "access_denied: The user said no");

  // A forged code; and a code swapped between two logins of this browser (its PKCE verifier is the
  // other login's): the provider refuses both at the token endpoint.
  start = get("/login/oidc/glewlwyd", "");
  state = query_value(start.header("location"), "state");
  expect_refused(
      get("/login/oidc/callback?code=forged-code&state=" + state, cookie_of(start, "descprod_oidc")), 403,
      "did not accept the login code");
  auto first = get("/login/oidc/glewlwyd", "");
  auto second = get("/login/oidc/glewlwyd", "");
  std::string first_back = p.login(first.header("location"), "alice");
  std::string second_state = query_value(second.header("location"), "state");
  expect_refused(
      get("/login/oidc/callback?code=" + query_value(first_back, "code") + "&state=" + second_state,
          cookie_of(second, "descprod_oidc")),
      403, "did not accept the login code");

  // A wrong client secret: the token endpoint refuses the gateway itself.
  auto wrong = oidc_login(s, p, "alice", "wrongsecret");
  expect_refused(wrong.back, 403, "did not accept the login code");

  // Logins started from one address are bounded (30 a minute; each keeps a state 10 minutes).
  int started = 0;
  http_response last;
  for (int i = 0; i < 40; ++i) {
    last = get("/login/oidc/glewlwyd", "");
    if (last.status != 303) break;
    ++started;
  }
  EXPECT_EQ(last.status, 429) << last.body;
  EXPECT_LE(started, 30);
  EXPECT_NE(last.header("retry-after"), "");
  EXPECT_NE(last.body.find("too many logins from this address"), std::string::npos) << last.body;

  // None of this made an account or a link.
  EXPECT_EQ(r.exec({"EXISTS", "descprod:oidc:links"}).integer, 0);
  EXPECT_EQ(r.exec({"EXISTS", "descprod:user:alice-2"}).integer, 0);
  // The gateway is still there.
  EXPECT_EQ(s.readyz().status / 100, 2);
}

// The ID-token checks the callback runs (core/jose.hpp), on tokens the real provider issued.
TEST(OidcIdToken, RealTokensOfAnotherClientNonceKeyOrTimeAndTamperedOnesAreRefused) {
  provider p;
  p.redirect_to("http://127.0.0.1:9/login/oidc/callback");
  auto token = [&](std::vector<std::pair<std::string, std::string>> env) {
    env.emplace_back("FLOW_TOKEN_ONLY", "1");
    env.emplace_back("FLOW_QUIET", "1");
    return run_script({script("flow.sh"), p.path()}, p.dir.file("flow.out"), env);
  };
  std::string nonce = "n-" + std::string(30, '7');
  std::string good = token({{"FLOW_NONCE", nonce}});
  std::string other_client = token({{"FLOW_NONCE", nonce}, {"FLOW_CLIENT_ID", "other"}});
  std::string rogue = token({{"FLOW_NONCE", nonce}, {"FLOW_PLUGIN", "rogue"}});

  auto discovery = http_request("127.0.0.1", std::stoi(read_file(p.path() + "/port")), "GET",
                                "/api/oidc/.well-known/openid-configuration");
  ASSERT_EQ(discovery.status, 200);
  std::string jwks_uri(discovery.json().as_object().at("jwks_uri").as_string());
  auto jwks = http_request("127.0.0.1", std::stoi(read_file(p.path() + "/port")), "GET", path_of(jwks_uri));
  ASSERT_EQ(jwks.status, 200);
  std::string why;
  auto keys = jose::key_set::parse(jwks.body, &why);
  ASSERT_TRUE(keys) << why;
  ASSERT_FALSE(keys->keys.empty());

  jose::id_token_expectations want;
  want.issuer = p.issuer;
  want.client_id = "descprod";
  want.nonce = nonce;
  want.now = static_cast<std::int64_t>(std::time(nullptr));

  auto ok = jose::verify_jwt(good, *keys);
  ASSERT_EQ(ok.error, jose::jwt_error::none) << ok.why;
  EXPECT_EQ(ok.alg, "RS256");
  EXPECT_EQ(jose::check_id_token(ok.claims, want), std::nullopt);

  // Another client's token verifies (the provider signed it) but is not for this client.
  auto other = jose::verify_jwt(other_client, *keys);
  ASSERT_EQ(other.error, jose::jwt_error::none) << other.why;
  auto other_why = jose::check_id_token(other.claims, want);
  ASSERT_TRUE(other_why);
  EXPECT_NE(other_why->find("another client"), std::string::npos) << *other_why;

  // Another login's nonce.
  auto wrong_nonce = want;
  wrong_nonce.nonce = "n-" + std::string(30, '8');
  auto nonce_why = jose::check_id_token(ok.claims, wrong_nonce);
  ASSERT_TRUE(nonce_why);
  EXPECT_NE(nonce_why->find("nonce"), std::string::npos) << *nonce_why;

  // Past its expiry (the clock an hour and more on).
  auto later = want;
  later.now = static_cast<std::int64_t>(ok.claims.at("exp").to_number<double>()) + 61;
  auto late_why = jose::check_id_token(ok.claims, later);
  ASSERT_TRUE(late_why);
  EXPECT_NE(late_why->find("expired"), std::string::npos) << *late_why;

  // A key the provider's set lacks (the rogue plugin's).
  auto unknown = jose::verify_jwt(rogue, *keys);
  EXPECT_EQ(unknown.error, jose::jwt_error::unknown_kid) << unknown.why;

  // Tampered: one claim changed (sub), or the signature's last byte.
  auto dot1 = good.find('.'), dot2 = good.rfind('.');
  std::string payload = *jose::base64url_decode(good.substr(dot1 + 1, dot2 - dot1 - 1));
  auto sub_at = payload.find("\"sub\":\"");
  ASSERT_NE(sub_at, std::string::npos);
  payload[sub_at + 7] = payload[sub_at + 7] == 'A' ? 'B' : 'A';
  std::string forged = good.substr(0, dot1 + 1) + jose::base64url_encode(payload) + good.substr(dot2);
  EXPECT_EQ(jose::verify_jwt(forged, *keys).error, jose::jwt_error::bad_signature);
  std::string sig = *jose::base64url_decode(good.substr(dot2 + 1));
  sig.back() = static_cast<char>(sig.back() ^ 1);
  EXPECT_EQ(jose::verify_jwt(good.substr(0, dot2 + 1) + jose::base64url_encode(sig), *keys).error,
            jose::jwt_error::bad_signature);
  // The same claims with "alg":"none" and no signature.
  std::string none = jose::base64url_encode(R"({"alg":"none","typ":"JWT"})") + "." +
                     good.substr(dot1 + 1, dot2 - dot1 - 1) + ".";
  EXPECT_EQ(jose::verify_jwt(none, *keys).error, jose::jwt_error::unsupported_alg);
}

}  // namespace
}  // namespace descprod::test
