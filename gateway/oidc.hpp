// OpenID Connect login (docs/security.md, "OpenID Connect"; docs/web.md, "Logging in with your
// institution's identity"): the authorization code flow with PKCE S256, state and nonce, for each
// provider of gateway.oidc.
//
//   GET /login/oidc[/<provider>]  start(): a fresh state, nonce and PKCE verifier are kept in Redis
//       (P oidc:state:<sha256(state)>, for state_ttl_s) and the state also in a cookie bound to
//       this browser (descprod_oidc, SameSite=Lax: the provider's redirect back is a cross-site
//       navigation); the browser is sent to the provider's authorization endpoint.
//   GET /login/oidc/callback      finish(): the state is taken from Redis (GETDEL: a replayed
//       callback finds nothing) and must equal the cookie's; the code is exchanged at the token
//       endpoint (client_secret_basic or _post, with the PKCE verifier); the ID token's signature is
//       verified with the provider's JWKS (core/jose.hpp: RS256/ES256, a key set refetched once
//       for an unknown kid) and its iss, aud, azp, exp, iat and nonce checked.
//
// Accounts: an identity is (iss, sub), linked to one account in the hash P oidc:links
// ("<iss> <sub>" → name). A first login makes a new account, pending unless auto_approve, named
// after username_claim (lower-cased, cleaned; a name already taken gets -2, -3, ...): never a
// link to an existing account of the same name. With allowed_email_domains, only a verified e-mail
// address of one of those domains may make an account. Later logins open a session as a
// password login does (accounts_service::open_session).
//
// The provider's documents (discovery, JWKS, the token answer) are fetched on this module's own
// threads (blocking Beast client with timeouts and size caps), never on the io_context thread;
// discovery is kept for an hour, a failed fetch is retried at the next login.
//
// Thread-safety: a registry belongs to the gateway's io_context thread (its fetch threads only
// run the blocking calls and post the answers back).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/json/object.hpp>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.hpp"
#include "core/jose.hpp"
#include "gateway/accounts_service.hpp"
#include "gateway/errors.hpp"
#include "gateway/handler.hpp"

namespace descprod::gateway::oidc {

inline constexpr int state_ttl_s = 600;  // a login must come back within 10 minutes
inline constexpr std::string_view state_cookie = "descprod_oidc";
inline constexpr std::size_t max_document_bytes = 256 * 1024;  // discovery, JWKS, token answer

// What a provider's discovery document says that the flow needs.
struct discovery {
  std::string authorization_endpoint, token_endpoint, jwks_uri;
};
// Checks a discovery document (OpenID Connect Discovery 1.0 §4.3): `issuer` equals the configured
// one exactly, and each endpoint is https (or http on a loopback host when the issuer is); when the
// document lists code_challenge_methods_supported it must hold S256. nullopt + why otherwise.
std::optional<discovery> parse_discovery(std::string_view body, const std::string& issuer, std::string& why);

// The authorization request's URL.
std::string authorization_url(const oidc_provider_config& p, const discovery& d,
                              const std::string& redirect_uri, const std::string& state,
                              const std::string& nonce, const std::string& challenge);

// An account name from the ID token's claims: username_claim, else the e-mail's local part, else
// "user"; lower-cased, every character outside a-z 0-9 _ . - dropped, at most 56 bytes (room for a
// suffix), starting with a letter or digit.
std::string base_name(const boost::json::object& claims, const std::string& username_claim);
// The names tried for a new account, in order: base, base-2, ..., base-20.
std::vector<std::string> name_candidates(const std::string& base);
// The e-mail address a new account gets. With allowed_email_domains: refused (why set) unless the
// address is in one of the domains and the provider does not say it is unverified (email_verified
// absent or true).
std::optional<std::string> account_email(const boost::json::object& claims, const oidc_provider_config& p,
                                         std::string& why);

// One provider as this gateway knows it now.
struct provider {
  const oidc_provider_config* config = nullptr;
  std::optional<discovery> found;
  double found_at = 0;  // epoch seconds
  std::shared_ptr<const jose::key_set> keys;
  double keys_at = 0;
};

class registry {
 public:
  explicit registry(const std::vector<oidc_provider_config>& providers);
  ~registry();
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  // By name; the first provider for an empty name. Null when there is none.
  provider* find(std::string_view name);
  std::vector<provider>& providers() { return providers_; }
  boost::asio::thread_pool& fetch_threads() { return threads_; }

 private:
  std::vector<provider> providers_;
  boost::asio::thread_pool threads_;
};

// The URL the provider sends the browser back to: the provider's redirect_uri, else
// <public_url>/login/oidc/callback, else http(s)://<host>/login/oidc/callback (the guard lets only
// loopback names through as Host when there is no public_url on a loopback listener).
std::string redirect_uri_for(const gateway_context& ctx, const oidc_provider_config& p,
                             std::string_view host);

// GET /login/oidc[/<name>]: the authorization URL to send the browser to, and the state for its
// cookie. Unavailable (503) when the provider's discovery cannot be fetched or is wrong.
struct started {
  std::string url, state;
};
net::awaitable<result<started>> start(gateway_context& ctx, std::string name, std::string host,
                                      std::string peer);

// GET /login/oidc/callback: what came back. `session` holds the new session when the account
// is active; otherwise `account_status` says why there is none (pending, rejected, disabled).
struct finished {
  std::string user;
  std::string account_status;  // active, pending, rejected, disabled
  bool created = false;        // this login made the account
  std::optional<accounts_service::session> session;
};
net::awaitable<result<finished>> finish(gateway_context& ctx, std::string query, std::string cookie,
                                        std::string peer);
// Why a finished login opened no session ("account alice is pending: ...").
std::string why_not_logged_in(const finished& f);

}  // namespace descprod::gateway::oidc
