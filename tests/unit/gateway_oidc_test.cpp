// The OpenID Connect login's pure pieces (gateway/oidc.hpp): the discovery document's checks, the
// authorization request, a new account's name and e-mail address. The whole flow against a real
// provider is in tests/e2e/oidc_login_test.cpp.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <vector>

#include "gateway/oidc.hpp"

namespace descprod::gateway::oidc {
namespace {

namespace json = boost::json;

std::string doc(const std::string& issuer, const std::string& host, const std::string& extra = "") {
  return R"({"issuer":")" + issuer + R"(","authorization_endpoint":")" + host +
         R"(/auth","token_endpoint":")" + host + R"(/token","jwks_uri":")" + host + R"(/jwks")" + extra + "}";
}

TEST(OidcDiscovery, TheIssuerMustMatchAndEveryEndpointBeHttpsUnlessTheIssuerIsOnLoopback) {
  std::string why;
  auto d = parse_discovery(doc("https://id.example", "https://id.example"), "https://id.example", why);
  ASSERT_TRUE(d) << why;
  EXPECT_EQ(d->authorization_endpoint, "https://id.example/auth");
  EXPECT_EQ(d->token_endpoint, "https://id.example/token");
  EXPECT_EQ(d->jwks_uri, "https://id.example/jwks");

  EXPECT_FALSE(parse_discovery(doc("https://evil.example", "https://id.example"), "https://id.example", why));
  EXPECT_NE(why.find("another issuer"), std::string::npos) << why;
  EXPECT_FALSE(parse_discovery(doc("https://id.example", "http://id.example"), "https://id.example", why));
  EXPECT_NE(why.find("https endpoint"), std::string::npos) << why;
  // A loopback issuer (tests) may have http endpoints on loopback, and only there.
  EXPECT_TRUE(
      parse_discovery(doc("http://127.0.0.1:9/o", "http://127.0.0.1:9"), "http://127.0.0.1:9/o", why));
  EXPECT_FALSE(
      parse_discovery(doc("http://127.0.0.1:9/o", "http://10.0.0.1:9"), "http://127.0.0.1:9/o", why));
  EXPECT_FALSE(parse_discovery(doc("http://127.0.0.1:9/o", "http://127.0.0.1.evil.example"),
                               "http://127.0.0.1:9/o", why));
  // PKCE S256 must be there when the methods are listed.
  EXPECT_FALSE(parse_discovery(
      doc("https://id.example", "https://id.example", R"(,"code_challenge_methods_supported":["plain"])"),
      "https://id.example", why));
  EXPECT_NE(why.find("S256"), std::string::npos);
  EXPECT_TRUE(parse_discovery(doc("https://id.example", "https://id.example",
                                  R"(,"code_challenge_methods_supported":["plain","S256"])"),
                              "https://id.example", why));
  // Garbage.
  std::vector<std::string> bad = {
      "", "[]", "{", "null", R"({"issuer":1})", doc("https://id.example", "https://id.example\u0001")};
  for (const auto& b : bad) EXPECT_FALSE(parse_discovery(b, "https://id.example", why)) << b;
  EXPECT_FALSE(parse_discovery(
      R"({"issuer":"https://id.example","authorization_endpoint":"https://id.example/auth?x=1",)"
      R"("token_endpoint":"https://id.example/t","jwks_uri":"https://id.example/j"})",
      "https://id.example", why));
}

TEST(OidcAuthorization, TheRequestCarriesCodeFlowPkceStateNonceAndEncodedValues) {
  oidc_provider_config p;
  p.client_id = "desc prod&x";
  p.scopes = {"openid", "email"};
  discovery d;
  d.authorization_endpoint = "https://id.example/auth";
  auto url = authorization_url(p, d, "https://descprod.example/login/oidc/callback", "S", "N", "C");
  EXPECT_EQ(url,
            "https://id.example/auth?response_type=code&client_id=desc%20prod%26x&redirect_uri=https%3A%2F%2F"
            "descprod.example%2Flogin%2Foidc%2Fcallback&scope=openid%20email&state=S&nonce=N&code_challenge=C"
            "&code_challenge_method=S256");
}

TEST(OidcAccount, ANewAccountsNameIsTheClaimCleanedOrTheAddressOrUser) {
  auto claims = [](const std::string& j) { return json::parse(j).as_object(); };
  EXPECT_EQ(base_name(claims(R"({"preferred_username":"Alice.Smith"})"), "preferred_username"),
            "alice.smith");
  EXPECT_EQ(base_name(claims(R"({"preferred_username":"-_<b>Bob</b> 'x'"})"), "preferred_username"),
            "bbobbx");
  EXPECT_EQ(base_name(claims(R"({"nersc":"Carol","preferred_username":"x"})"), "nersc"), "carol");
  EXPECT_EQ(base_name(claims(R"({"email":"Dan.E@lbl.gov"})"), "preferred_username"), "dan.e");
  EXPECT_EQ(base_name(claims(R"({"preferred_username":"\u00e9\u00e9"})"), "preferred_username"), "user");
  EXPECT_EQ(base_name(claims(R"({"preferred_username":7})"), "preferred_username"), "user");
  EXPECT_EQ(
      base_name(claims(R"({"preferred_username":")" + std::string(300, 'a') + R"("})"), "preferred_username")
          .size(),
      56u);
  auto names = name_candidates("alice");
  ASSERT_EQ(names.size(), 20u);
  EXPECT_EQ(names[0], "alice");
  EXPECT_EQ(names[1], "alice-2");
  EXPECT_EQ(names[19], "alice-20");
}

TEST(OidcAccount, TheEmailDomainListRefusesOtherDomainsAndAddressesMarkedUnverified) {
  auto claims = [](const std::string& j) { return json::parse(j).as_object(); };
  oidc_provider_config open;
  std::string why;
  EXPECT_EQ(account_email(claims(R"({"email":"A@Example.org"})"), open, why), "a@example.org");
  EXPECT_EQ(account_email(claims(R"({})"), open, why), "");
  oidc_provider_config strict;
  strict.allowed_email_domains = {"lbl.gov"};
  EXPECT_EQ(account_email(claims(R"({"email":"a@lbl.gov","email_verified":true})"), strict, why),
            "a@lbl.gov");
  EXPECT_EQ(account_email(claims(R"({"email":"a@LBL.gov"})"), strict, why), "a@lbl.gov");
  EXPECT_FALSE(account_email(claims(R"({"email":"a@lbl.gov","email_verified":false})"), strict, why));
  EXPECT_NE(why.find("not verified"), std::string::npos);
  EXPECT_FALSE(account_email(claims(R"({"email":"a@lbl.gov","email_verified":"yes"})"), strict, why));
  EXPECT_FALSE(account_email(claims(R"({"email":"a@evil-lbl.gov"})"), strict, why));
  EXPECT_NE(why.find("lbl.gov only, not evil-lbl.gov"), std::string::npos) << why;
  EXPECT_FALSE(account_email(claims(R"({"email":"a@sub.lbl.gov"})"), strict, why));
  EXPECT_FALSE(account_email(claims(R"({"email":"a@lbl.gov@evil.example"})"), strict, why));
  EXPECT_FALSE(account_email(claims(R"({})"), strict, why));
  EXPECT_NE(why.find("did not share an e-mail address"), std::string::npos);
}

}  // namespace
}  // namespace descprod::gateway::oidc
