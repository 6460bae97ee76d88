// OpenID Connect login (oidc.hpp). GCC 12 coroutine rules (docs/building.md#conventions): the
// commands, URLs and fetch jobs are built by the plain functions at the top; coroutine parameters
// are values.
#include "gateway/oidc.hpp"

#include <openssl/evp.h>

#include <boost/json.hpp>
#include <cctype>
#include <functional>

#include "client/http.hpp"
#include "core/crypto.hpp"
#include "core/keys.hpp"
#include "core/log.hpp"
#include "core/protocol.hpp"
#include "core/text.hpp"
#include "gateway/accounts_service.hpp"
#include "gateway/guard.hpp"
#include "gateway/handler_detail.hpp"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // see handler.cpp
#endif

namespace descprod::gateway::oidc {

namespace json = boost::json;
using detail::keys_of;
using detail::now_s;

namespace {

constexpr double discovery_ttl_s = 3600;
constexpr double keys_refetch_min_s = 10;  // an unknown kid refetches the JWKS at most this often
constexpr std::size_t max_code_bytes = 4096;
constexpr auto fetch_timeout = std::chrono::seconds(10);

std::string json_string(const json::object& o, std::string_view key) {
  return protocol::get_string(o, key).value_or(std::string());
}

bool endpoint_ok(std::string_view url, bool issuer_on_loopback) {
  for (unsigned char c : url)
    if (c <= 0x20 || c == 0x7f || c == '#') return false;
  if (url.substr(0, 8) == "https://") return url.size() > 8;
  return issuer_on_loopback && is_loopback_http_url(url);
}

// Standard base64 with padding (HTTP Basic), by OpenSSL.
std::string base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                      reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return out;
}

// A provider's error text (error, error_description) made safe for a page and a log: printable,
// at most 200 bytes.
std::string provider_error(std::string_view error, std::string_view description) {
  std::string text = sanitize_app_text(error, 64);
  if (!description.empty()) text += ": " + sanitize_app_text(description, 200);
  for (auto& c : text)
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  return text;
}

// One blocking request on a fetch thread: GET (empty body) or a form POST.
client::http_reply fetch(const std::string& url, const std::string& form,
                         const client::header_list& headers) {
  std::string why;
  auto parts = client::parse_url(url, &why);
  if (!parts) throw client::unreachable("bad URL " + url + ": " + why);
  std::string target;
  if (parts->base.empty()) target = "/";
  return client::http_request(*parts, form.empty() ? "GET" : "POST", target, form, headers, fetch_timeout,
                              max_document_bytes);
}

std::function<client::http_reply()> fetch_job(std::string url, std::string form,
                                              client::header_list headers) {
  return [url = std::move(url), form = std::move(form), headers = std::move(headers)] {
    return fetch(url, form, headers);
  };
}

client::header_list json_accept() {
  client::header_list h;
  h.emplace_back("Accept", "application/json");
  return h;
}

struct token_request {
  std::string url, form;
  client::header_list headers;
};

token_request make_token_request(const oidc_provider_config& p, const discovery& d, const std::string& code,
                                 const std::string& redirect_uri, const std::string& verifier) {
  token_request t;
  t.url = d.token_endpoint;
  t.form = "grant_type=authorization_code&code=" + url_encode(code) +
           "&redirect_uri=" + url_encode(redirect_uri) + "&code_verifier=" + url_encode(verifier);
  t.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
  t.headers.emplace_back("Accept", "application/json");
  if (p.token_auth == "client_secret_post") {
    t.form += "&client_id=" + url_encode(p.client_id) + "&client_secret=" + url_encode(p.client_secret);
  } else {
    // RFC 6749 §2.3.1: the id and secret form-encoded, then joined by ':' for Basic.
    t.headers.emplace_back("Authorization",
                           "Basic " + base64(url_encode(p.client_id) + ":" + url_encode(p.client_secret)));
  }
  return t;
}

std::string state_record(const std::string& provider, const std::string& nonce, const std::string& verifier,
                         const std::string& redirect_uri, double now) {
  json::object o;
  o["p"] = provider;
  o["n"] = nonce;
  o["v"] = verifier;
  o["r"] = redirect_uri;
  o["t"] = now;
  return json::serialize(o);
}

struct pending_login {
  std::string provider, nonce, verifier, redirect_uri;
};

std::optional<pending_login> parse_state_record(std::string_view text) {
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  pending_login l;
  l.provider = json_string(v.as_object(), "p");
  l.nonce = json_string(v.as_object(), "n");
  l.verifier = json_string(v.as_object(), "v");
  l.redirect_uri = json_string(v.as_object(), "r");
  if (l.provider.empty() || l.nonce.empty() || l.verifier.empty() || l.redirect_uri.empty())
    return std::nullopt;
  return l;
}

// KEYS[1] links hash, KEYS[2] users set, KEYS[3..] user:<candidate> hashes; ARGV[1] link field,
// ARGV[2] status of a new account, ARGV[3] email, ARGV[4] created, ARGV[5] iss, ARGV[6] sub,
// ARGV[7] provider, ARGV[8..] the candidates' names (as KEYS[3..]). Reply {'linked'|'created', name}
// or {'full', ''} when every candidate name is taken.
const char* link_script = R"LUA(
local linked = redis.call('HGET', KEYS[1], ARGV[1])
if linked then return {'linked', linked} end
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local name = ARGV[i + 5]
    redis.call('HSET', KEYS[i], 'role', 'user', 'status', ARGV[2], 'email', ARGV[3], 'created', ARGV[4],
      'oidc_iss', ARGV[5], 'oidc_sub', ARGV[6], 'oidc_provider', ARGV[7])
    if ARGV[2] == 'active' then redis.call('HSET', KEYS[i], 'approved', ARGV[4]) end
    redis.call('SADD', KEYS[2], name)
    redis.call('HSET', KEYS[1], ARGV[1], name)
    return {'created', name}
  end
end
return {'full', ''}
)LUA";

std::vector<std::string> link_cmd(const keys& k, const std::string& field, const std::string& status,
                                  const std::string& email, double now, const std::string& iss,
                                  const std::string& sub, const std::string& provider,
                                  const std::vector<std::string>& names) {
  std::vector<std::string> cmd;
  cmd.push_back("EVAL");
  cmd.push_back(link_script);
  cmd.push_back(std::to_string(2 + names.size()));
  cmd.push_back(k.oidc_links());
  cmd.push_back(k.users());
  for (const auto& n : names) cmd.push_back(k.user(n));
  char t[64];
  std::snprintf(t, sizeof t, "%.6f", now);
  for (const std::string& a : {field, status, email, std::string(t), iss, sub, provider}) cmd.push_back(a);
  for (const auto& n : names) cmd.push_back(n);
  return cmd;
}

std::string why_no_session(const std::string& name, const std::string& status) {
  if (status == "pending") return "account " + name + " is pending: an administrator has not approved it yet";
  if (status == "rejected") return "the registration of " + name + " was rejected";
  if (status == "disabled") return "account " + name + " is disabled";
  return "account " + name + " is not active";
}

}  // namespace

std::optional<discovery> parse_discovery(std::string_view body, const std::string& issuer, std::string& why) {
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  if (ec || !v.is_object()) {
    why = "the discovery document is not a JSON object";
    return std::nullopt;
  }
  const auto& o = v.as_object();
  if (json_string(o, "issuer") != issuer) {
    why = "the discovery document names another issuer (" + sanitize_app_text(json_string(o, "issuer"), 200) +
          ")";
    return std::nullopt;
  }
  bool local = is_loopback_http_url(issuer);
  discovery d;
  d.authorization_endpoint = json_string(o, "authorization_endpoint");
  d.token_endpoint = json_string(o, "token_endpoint");
  d.jwks_uri = json_string(o, "jwks_uri");
  for (const std::string* e : {&d.authorization_endpoint, &d.token_endpoint, &d.jwks_uri}) {
    if (!endpoint_ok(*e, local)) {
      why = "the discovery document lacks an https endpoint (authorization, token, jwks_uri)";
      return std::nullopt;
    }
  }
  if (d.authorization_endpoint.find('?') != std::string::npos) {
    why = "the authorization endpoint has a query";
    return std::nullopt;
  }
  if (auto it = o.find("code_challenge_methods_supported"); it != o.end()) {
    bool s256 = false;
    if (it->value().is_array())
      for (const auto& m : it->value().as_array()) s256 = s256 || (m.is_string() && m.as_string() == "S256");
    if (!s256) {
      why = "the provider does not support PKCE S256";
      return std::nullopt;
    }
  }
  return d;
}

std::string authorization_url(const oidc_provider_config& p, const discovery& d,
                              const std::string& redirect_uri, const std::string& state,
                              const std::string& nonce, const std::string& challenge) {
  std::string scope;
  for (const auto& s : p.scopes) scope += (scope.empty() ? "" : " ") + s;
  return d.authorization_endpoint + "?response_type=code&client_id=" + url_encode(p.client_id) +
         "&redirect_uri=" + url_encode(redirect_uri) + "&scope=" + url_encode(scope) +
         "&state=" + url_encode(state) + "&nonce=" + url_encode(nonce) +
         "&code_challenge=" + url_encode(challenge) + "&code_challenge_method=S256";
}

std::string base_name(const json::object& claims, const std::string& username_claim) {
  auto clean = [](std::string_view raw) {
    std::string out;
    for (unsigned char c : raw) {
      char l = static_cast<char>(std::tolower(c));
      if ((l >= 'a' && l <= 'z') || (l >= '0' && l <= '9') || l == '_' || l == '.' || l == '-') {
        if (out.empty() && !((l >= 'a' && l <= 'z') || (l >= '0' && l <= '9'))) continue;
        out.push_back(l);
      }
      if (out.size() >= 56) break;
    }
    return out;
  };
  std::string name = clean(json_string(claims, username_claim));
  if (name.empty()) {
    std::string email = json_string(claims, "email");
    name = clean(email.substr(0, email.find('@')));
  }
  if (name.empty()) name = "user";
  return name;
}

std::vector<std::string> name_candidates(const std::string& base) {
  std::vector<std::string> out;
  out.push_back(base);
  for (int i = 2; i <= 20; ++i) out.push_back(base + "-" + std::to_string(i));
  return out;
}

std::optional<std::string> account_email(const json::object& claims, const oidc_provider_config& p,
                                         std::string& why) {
  std::string email = json_string(claims, "email");
  if (email.size() > 254) email.clear();
  for (auto& c : email) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (p.allowed_email_domains.empty()) return email;
  auto at = email.rfind('@');
  // email_verified is optional (OpenID Connect Core §5.1): an address the provider says it has
  // not verified is refused; without the claim, the provider's address is taken as it gives it.
  auto verified = claims.find("email_verified");
  bool says_unverified =
      verified != claims.end() && !(verified->value().is_bool() && verified->value().as_bool());
  if (email.empty() || at == std::string::npos) {
    why = "the provider did not share an e-mail address, which this service needs to make an account";
    return std::nullopt;
  }
  if (says_unverified) {
    why = "the provider has not verified the e-mail address " + email;
    return std::nullopt;
  }
  std::string domain = email.substr(at + 1);
  for (const auto& d : p.allowed_email_domains)
    if (domain == d) return email;
  why = "accounts are made for e-mail addresses of " + p.allowed_email_domains.front() +
        (p.allowed_email_domains.size() > 1 ? " and other listed domains" : "") + " only, not " + domain;
  return std::nullopt;
}

registry::registry(const std::vector<oidc_provider_config>& providers) : threads_(2) {
  for (const auto& c : providers) {
    provider p;
    p.config = &c;
    providers_.push_back(std::move(p));
  }
}

registry::~registry() {
  threads_.stop();
  threads_.join();
}

provider* registry::find(std::string_view name) {
  if (providers_.empty()) return nullptr;
  if (name.empty()) return &providers_.front();
  for (auto& p : providers_)
    if (p.config->name == name) return &p;
  return nullptr;
}

std::string redirect_uri_for(const gateway_context& ctx, const oidc_provider_config& p,
                             std::string_view host) {
  if (!p.redirect_uri.empty()) return p.redirect_uri;
  std::string base = ctx.config.public_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  if (base.empty()) base = std::string(ctx.tls ? "https://" : "http://") + std::string(host);
  return base + "/login/oidc/callback";
}

namespace {

// The provider's discovery document, fetched when missing or older than discovery_ttl_s.
// nullopt when it is usable; otherwise why not.
net::awaitable<std::optional<std::string>> ensure_discovery(gateway_context& ctx, provider& p) {
  double now = now_s(ctx);
  if (p.found && now - p.found_at < discovery_ttl_s) co_return std::nullopt;
  std::string url = p.config->issuer + "/.well-known/openid-configuration";
  std::string why;
  try {
    auto reply = co_await detail::async_offload<client::http_reply>(
        &ctx.oidc->fetch_threads(), fetch_job(url, std::string(), json_accept()), net::use_awaitable);
    if (reply.status != 200) {
      why = "the discovery document answered HTTP " + std::to_string(reply.status);
    } else if (auto d = parse_discovery(reply.body, p.config->issuer, why)) {
      p.found = *d;
      p.found_at = now;
      log::info("oidc discovery provider={} issuer={}", p.config->name, p.config->issuer);
      co_return std::nullopt;
    }
  } catch (const std::exception& e) {
    why = std::string("the provider cannot be reached: ") + e.what();
  }
  log::warn("oidc discovery failed provider={} url={} reason={}", p.config->name, url, why);
  // A document fetched earlier stays in use while the provider is away.
  if (p.found) co_return std::nullopt;
  co_return why;
}

net::awaitable<std::optional<std::string>> fetch_keys(gateway_context& ctx, provider& p) {
  std::string why;
  try {
    auto reply = co_await detail::async_offload<client::http_reply>(
        &ctx.oidc->fetch_threads(), fetch_job(p.found->jwks_uri, std::string(), json_accept()),
        net::use_awaitable);
    if (reply.status != 200) {
      why = "the key set answered HTTP " + std::to_string(reply.status);
    } else if (auto set = jose::key_set::parse(reply.body, &why)) {
      p.keys = std::make_shared<const jose::key_set>(std::move(*set));
      p.keys_at = now_s(ctx);
      log::info("oidc keys provider={} keys={} skipped={}", p.config->name, p.keys->keys.size(),
                p.keys->skipped);
      co_return std::nullopt;
    }
  } catch (const std::exception& e) {
    why = std::string("the key set cannot be fetched: ") + e.what();
  }
  log::warn("oidc keys failed provider={} url={} reason={}", p.config->name, p.found->jwks_uri, why);
  co_return why;
}

api_error refused(std::string why) { return forbidden("the login was refused: " + std::move(why)); }

}  // namespace

net::awaitable<result<started>> start(gateway_context& ctx, std::string name, std::string host,
                                      std::string peer) {
  if (!ctx.oidc) co_return not_found("no OpenID Connect provider is configured");
  provider* p = ctx.oidc->find(name);
  if (!p) co_return not_found("no login provider named " + sanitize_app_text(name, 64));
  auto throttled = co_await oidc_start_take(ctx, peer);  // counted across every gateway (guard.hpp)
  if (throttled) co_return *throttled;
  auto missing = co_await ensure_discovery(ctx, *p);
  if (missing)
    co_return unavailable("the login provider " + p->config->name + " is not available: " + *missing);
  started out;
  out.state = accounts_service::random_hex();
  std::string nonce = accounts_service::random_hex();
  std::string verifier = accounts_service::random_hex();  // 64 characters of the PKCE alphabet
  std::string redirect = redirect_uri_for(ctx, *p->config, host);
  co_await ctx.redis->async_exec(
      redis_cmd("SET", keys_of(ctx).oidc_state(sha256_hex(out.state)),
                state_record(p->config->name, nonce, verifier, redirect, now_s(ctx)), "EX",
                std::to_string(state_ttl_s)));
  out.url = authorization_url(*p->config, *p->found, redirect, out.state, nonce, jose::pkce_s256(verifier));
  log::info("oidc login started provider={} address={}", p->config->name, peer);
  co_return out;
}

net::awaitable<result<finished>> finish(gateway_context& ctx, std::string query, std::string cookie,
                                        std::string peer) {
  if (!ctx.oidc) co_return not_found("no OpenID Connect provider is configured");
  auto form = web::parse_form(query);
  if (!form) co_return bad_request("the provider's answer is not a valid query string");
  std::string state = (*form)["state"];
  if (state.empty() || state.size() > 128)
    co_return bad_request(
        "the provider's answer has no state: this login was not started here; log in again");
  // Taken at once, whatever follows: a state serves one callback only.
  auto taken =
      co_await ctx.redis->async_exec(redis_cmd("GETDEL", keys_of(ctx).oidc_state(sha256_hex(state))));
  if (taken.is_error()) co_return internal_error("login state: " + taken.str);
  if (taken.is_nil()) {
    log::info("oidc callback refused address={} reason=unknown or used state", peer);
    co_return bad_request("this login has expired or was used already; log in again");
  }
  if (!web::tokens_equal(web::cookie_value(cookie, state_cookie), state)) {
    log::warn("oidc callback refused address={} reason=state not this browser's", peer);
    co_return forbidden("this login was started in another browser; log in again");
  }
  auto pending = parse_state_record(taken.as_string());
  provider* p = pending ? ctx.oidc->find(pending->provider) : nullptr;
  if (!p || pending->provider.empty()) co_return bad_request("this login's provider is no longer configured");
  const oidc_provider_config& cfg = *p->config;
  if (!(*form)["error"].empty()) {
    std::string text = provider_error((*form)["error"], (*form)["error_description"]);
    log::info("oidc callback refused provider={} address={} reason=provider error {}", cfg.name, peer, text);
    co_return refused("the provider answered " + text);
  }
  std::string code = (*form)["code"];
  if (code.empty() || code.size() > max_code_bytes)
    co_return bad_request("the provider's answer has no code");
  auto missing = co_await ensure_discovery(ctx, *p);
  if (missing) co_return unavailable("the login provider " + cfg.name + " is not available: " + *missing);

  // The code for tokens (the PKCE verifier proves this gateway started the login).
  auto req = make_token_request(cfg, *p->found, code, pending->redirect_uri, pending->verifier);
  client::http_reply reply;
  std::string unreachable;
  try {
    reply = co_await detail::async_offload<client::http_reply>(
        &ctx.oidc->fetch_threads(), fetch_job(req.url, req.form, req.headers), net::use_awaitable);
  } catch (const std::exception& e) {
    unreachable = e.what();
  }
  if (!unreachable.empty()) {
    log::warn("oidc token request failed provider={} reason={}", cfg.name, unreachable);
    co_return unavailable("the login provider " + cfg.name + " cannot be reached; try again");
  }
  boost::system::error_code ec;
  auto answer = json::parse(reply.body, ec);
  if (reply.status != 200) {
    std::string text = "HTTP " + std::to_string(reply.status);
    if (!ec && answer.is_object())
      text += " " + provider_error(json_string(answer.as_object(), "error"),
                                   json_string(answer.as_object(), "error_description"));
    log::info("oidc token request refused provider={} address={} reason={}", cfg.name, peer, text);
    co_return refused("the provider did not accept the login code (" + text + ")");
  }
  std::string id_token;
  if (!ec && answer.is_object()) id_token = json_string(answer.as_object(), "id_token");
  if (id_token.empty()) co_return refused("the provider's answer holds no ID token");

  // The ID token: signature (the key set refetched once for a kid it lacks), then claims.
  if (!p->keys) {
    auto why = co_await fetch_keys(ctx, *p);
    if (why) co_return unavailable("the login provider's keys cannot be fetched: " + *why);
  }
  auto check = jose::verify_jwt(id_token, *p->keys);
  if (check.error == jose::jwt_error::unknown_kid && now_s(ctx) - p->keys_at >= keys_refetch_min_s) {
    auto why = co_await fetch_keys(ctx, *p);
    if (!why) check = jose::verify_jwt(id_token, *p->keys);
  }
  if (check.error != jose::jwt_error::none) {
    log::warn("oidc id token refused provider={} address={} reason={} kid={}", cfg.name, peer, check.why,
              sanitize_app_text(check.kid, 64));
    co_return refused("the ID token " + check.why);
  }
  jose::id_token_expectations want;
  want.issuer = cfg.issuer;
  want.client_id = cfg.client_id;
  want.nonce = pending->nonce;
  want.now = static_cast<std::int64_t>(now_s(ctx));
  if (auto why = jose::check_id_token(check.claims, want)) {
    log::warn("oidc id token refused provider={} address={} reason={}", cfg.name, peer, *why);
    co_return refused(*why);
  }

  // The account linked to (iss, sub), or a new one.
  std::string sub = json_string(check.claims, "sub");
  std::string field = cfg.issuer + " " + sub;
  finished out;
  auto linked = co_await ctx.redis->async_exec(redis_cmd("HGET", keys_of(ctx).oidc_links(), field));
  if (linked.is_error()) co_return internal_error("login link: " + linked.str);
  if (linked.is_nil()) {
    std::string why;
    auto email = account_email(check.claims, cfg, why);
    if (!email) {
      log::info("oidc account refused provider={} sub={} reason={}", cfg.name, sanitize_app_text(sub, 64),
                why);
      co_return refused(why);
    }
    auto names = name_candidates(base_name(check.claims, cfg.username_claim));
    std::string status = "pending";  // (no conditional temporaries in a coroutine: GCC 12)
    if (cfg.auto_approve) status = "active";
    auto made = co_await ctx.redis->async_exec(
        link_cmd(keys_of(ctx), field, status, *email, now_s(ctx), cfg.issuer, sub, cfg.name, names));
    if (made.is_error() || made.elements.size() != 2) co_return internal_error("login link: " + made.str);
    if (made.elements[0].as_string() == "full")
      co_return refused("no account name is free for " + names.front() + "; ask an administrator");
    out.created = made.elements[0].as_string() == "created";
    out.user = made.elements[1].as_string();
    if (out.created)
      log::info("oidc account made user={} provider={} status={} address={}", out.user, cfg.name, status,
                peer);
  } else {
    out.user = linked.as_string();
  }
  auto account = co_await ctx.redis->async_exec(
      redis_cmd("HMGET", keys_of(ctx).user(out.user), "status", "role", "oidc_iss", "oidc_sub"));
  if (account.elements.size() != 4 || account.elements[0].is_nil() ||
      account.elements[2].as_string() != cfg.issuer || account.elements[3].as_string() != sub) {
    // The account was deleted (and perhaps its name taken again) since it was linked.
    log::warn("oidc login refused user={} provider={} reason=linked account gone", out.user, cfg.name);
    co_return refused("the account linked to this identity no longer exists; ask an administrator");
  }
  out.account_status = account.elements[0].as_string();
  if (out.account_status != "active") {
    log::info("oidc login without session user={} status={}", out.user, out.account_status);
    co_return out;
  }
  std::string role = account.elements[1].as_string();
  if (role.empty()) role = "user";
  std::string old = web::cookie_value(cookie, web::session_cookie);
  auto s = co_await accounts_service::open_session(ctx, out.user, role, old);
  out.session = s;
  log::info("login user={} role={} via=oidc provider={}", out.user, role, cfg.name);
  co_return out;
}

std::string why_not_logged_in(const finished& f) { return why_no_session(f.user, f.account_status); }

}  // namespace descprod::gateway::oidc
