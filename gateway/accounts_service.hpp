// The accounts service: registration, login and logout (web sessions), and a user's API tokens
// (docs/security.md). Typed results (errors.hpp); nothing of HTTP. Presenters: the JSON API
// (accounts_api.cpp) and the pages (pages.cpp).
//
// Sessions: a login makes a fresh 256-bit token, which the presenter sends as the HttpOnly,
// SameSite=Strict cookie descprod_session; Redis stores only its sha256 as P session:<sha256>
// (hash: user, csrf, created; the pages' flash message) with a TTL that every request pushes out
// (sliding, gateway.session_ttl_s). Logout deletes the key; logging in again replaces the
// browser's previous session. Each session has a random CSRF token.
//
// Passwords: Argon2id via libsodium, cost from the gateway config, computed on ctx.blocking (a
// small thread pool) so the io_context thread never stalls. An unknown user name costs the same
// hashing time as a wrong password, and registering an existing name answers as a new one.
//
// Thread-safety: as handler.hpp (one io_context thread).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/job.hpp"
#include "gateway/api.hpp"
#include "gateway/errors.hpp"
#include "gateway/handler.hpp"

namespace descprod::gateway::accounts_service {

inline constexpr std::size_t max_label_bytes = 64;  // an API token's label

// 256 random bits as 64 hex digits (CSRF tokens).
std::string random_hex();

// A registration's fields: user name rules, a valid e-mail, the password's length.
std::optional<api_error> check_registration(const std::string& name, const std::string& email,
                                            const std::string& password);
// A token label: at most max_label_bytes, no control characters.
std::optional<api_error> check_label(const std::string& label);

// The session a `Cookie` header names, when it is live and its account active.
net::awaitable<std::optional<principal>> session_user(gateway_context& ctx, std::string cookie);

// A new web session: its token (for the cookie, shown nowhere else), CSRF token and role.
struct session {
  std::string token, csrf, role;
};
// Checks the password (throttled per account and address, guard.hpp) and opens a session;
// `old_cookie_token` (the browser's previous session, if any) is ended. Wrong credentials are
// unauthorized; an account that is not active is forbidden, saying why.
net::awaitable<result<session>> login(gateway_context& ctx, std::string name, std::string password,
                                      std::string old_cookie_token, std::string peer);
// A new session for `name` (whose credentials the caller checked: a password, or an OpenID
// Connect ID token); `old_cookie_token` (the browser's previous session, if any) is ended.
net::awaitable<session> open_session(gateway_context& ctx, std::string name, std::string role,
                                     std::string old_cookie_token);
// Registers a pending account (an administrator approves it).
net::awaitable<status> register_user(gateway_context& ctx, std::string name, std::string email,
                                     std::string password, std::string peer);
// Ends the session of the `Cookie` header, if any, and its live event streams. Forbidden when the
// session exists but `csrf` is not its CSRF token.
net::awaitable<status> logout(gateway_context& ctx, std::string cookie, std::string csrf);

// The owner's API tokens, newest first: id (the sha256), label, created, expires.
net::awaitable<std::vector<job_record>> tokens(gateway_context& ctx, std::string owner);
// A new API token (shown once; Redis keeps its sha256).
net::awaitable<result<std::string>> create_token(gateway_context& ctx, std::string owner, std::string label);
// Revokes one of the owner's tokens by its sha256, ending its live event streams.
net::awaitable<status> revoke_token(gateway_context& ctx, std::string owner, std::string hash);

// An account's notification preferences (docs/api.md#preferences): its e-mail address and whether
// descprod-notifier mails it when one of its jobs fails (field notify_failed of P user:<name>).
struct preferences {
  std::string email;
  bool email_on_failure = false;
};
net::awaitable<preferences> preferences_of(gateway_context& ctx, std::string user);
// Sets e-mail on failure; not found when the account is gone.
net::awaitable<result<preferences>> set_email_on_failure(gateway_context& ctx, std::string user, bool on);

}  // namespace descprod::gateway::accounts_service
