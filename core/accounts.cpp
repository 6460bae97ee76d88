// Users, passwords and tokens. Account changes are Lua scripts so that the check of the current
// status and the change are one atomic step, whichever client (descprod-admin or the gateway)
// runs them. Caveat: EVAL sends the script text each time; account changes are rare.
#include "core/accounts.hpp"

#include <sodium.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <stdexcept>

#include "core/crypto.hpp"

namespace descprod {

namespace {
std::string now_str() {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now).count());
}
double now_double() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}
std::string fmt_time(double t) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6f", t);
  return buf;
}
void check(const redis_reply& r) {
  if (r.is_error()) throw std::runtime_error("Redis: " + r.str);
}

// KEYS[1] user hash, KEYS[2] users set; ARGV name, email, hash, created.
const char* register_script = R"LUA(
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'role', 'user', 'status', 'pending', 'email', ARGV[2],
  'password_hash', ARGV[3], 'created', ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
)LUA";

// KEYS[1] user hash; ARGV action, now. Reply {'ok'|'err', reason, status, role}.
const char* action_script = R"LUA(
local key = KEYS[1]
local v = redis.call('HMGET', key, 'status', 'role')
if not v[1] then return {'err', 'missing', '', ''} end
local status, role = v[1], v[2] or 'user'
local a = ARGV[1]
local function refuse() return {'err', 'illegal', status, role} end
if a == 'approve' then
  if status ~= 'pending' and status ~= 'rejected' then return refuse() end
  status = 'active'
  redis.call('HSET', key, 'status', status, 'approved', ARGV[2])
elseif a == 'reject' then
  if status ~= 'pending' then return refuse() end
  status = 'rejected'
  redis.call('HSET', key, 'status', status)
elseif a == 'disable' then
  if status == 'disabled' then return refuse() end
  status = 'disabled'
  redis.call('HSET', key, 'status', status)
elseif a == 'enable' then
  if status ~= 'disabled' then return refuse() end
  status = 'active'
  redis.call('HSET', key, 'status', status)
elseif a == 'make-admin' then
  role = 'admin'
  redis.call('HSET', key, 'role', role)
elseif a == 'remove-admin' then
  role = 'user'
  redis.call('HSET', key, 'role', role)
else
  return {'err', 'unknown', status, role}
end
return {'ok', '', status, role}
)LUA";

}  // namespace

bool valid_user_name(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  if (!std::isalnum(static_cast<unsigned char>(name[0]))) return false;
  for (char c : name)
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) ||
          c == '_' || c == '.' || c == '-'))
      return false;
  return true;
}

bool valid_email(const std::string& email) {
  if (email.size() < 3 || email.size() > 254) return false;
  auto at = email.find('@');
  if (at == std::string::npos || at == 0 || at + 1 == email.size()) return false;
  if (email.find('@', at + 1) != std::string::npos) return false;
  for (unsigned char c : email)
    if (c <= ' ' || c == 0x7f || c == '<' || c == '>' || c == '"') return false;
  return true;
}

bool user_exists(redis_sync& r, const std::string& prefix, const std::string& name) {
  auto rep = r.exec({"EXISTS", keys(prefix).user(name)});
  check(rep);
  return rep.integer > 0;
}

bool add_user(redis_sync& r, const std::string& prefix, const std::string& name, bool admin) {
  if (!valid_user_name(name)) throw std::invalid_argument("invalid user name: " + name);
  const keys k(prefix);
  auto rep = r.exec({"HSETNX", k.user(name), "role", admin ? "admin" : "user"});
  check(rep);
  if (rep.integer == 0) return false;
  check(r.exec({"HSET", k.user(name), "status", "active", "created", now_str()}));
  check(r.exec({"SADD", k.users(), name}));
  return true;
}

std::vector<std::vector<std::string>> token_write_commands(const keys& k, const std::string& sha256,
                                                           const token_spec& t) {
  using namespace token_field;
  std::vector<std::vector<std::string>> cmds;
  auto key = k.token(sha256);
  std::vector<std::string> hset{"HSET", key};
  const std::pair<std::string_view, std::string> fields[] = {{owner, t.owner},
                                                             {scope, t.scope},
                                                             {created, t.created},
                                                             {expires, std::to_string(t.expires)},
                                                             {label, t.label}};
  for (const auto& [f, v] : fields) {
    hset.emplace_back(f);
    hset.push_back(v);
  }
  if (t.pools) {
    hset.emplace_back(pools);
    hset.push_back(*t.pools);
  }
  if (!t.session_id.empty()) {
    hset.emplace_back("session_id");
    hset.push_back(t.session_id);
  }
  cmds.push_back(std::move(hset));
  if (t.ttl_s > 0) cmds.push_back({"EXPIRE", key, std::to_string(t.ttl_s)});
  if (t.scope == "user") cmds.push_back({"SADD", k.user_tokens(t.owner), sha256});
  if (t.pools) cmds.push_back({"SADD", k.user_worker_tokens(t.owner), sha256});
  return cmds;
}

namespace {
std::string write_token(redis_sync& r, const std::string& prefix, token_spec t) {
  auto token = new_token();
  for (const auto& c : token_write_commands(keys(prefix), sha256_hex(token), t)) check(r.exec(c));
  return token;
}
}  // namespace

std::string issue_token(redis_sync& r, const std::string& prefix, const std::string& owner,
                        const std::string& scope, long long ttl_s, const std::string& label) {
  token_spec t;
  t.owner = owner;
  t.scope = scope;
  t.created = now_str();
  if (ttl_s > 0) t.expires = std::stoll(t.created) + ttl_s;
  t.ttl_s = ttl_s;
  t.label = label;
  // A user token is a session of its own, as a login is (DESCprod's session IDs).
  if (scope == "user") {
    auto sid = r.exec({"INCR", keys(prefix).next_session_id()});
    check(sid);
    t.session_id = std::to_string(sid.integer);
  }
  return write_token(r, prefix, std::move(t));
}

bool valid_pool_name(const std::string& name) { return name == "*" || valid_user_name(name); }

std::string issue_worker_token(redis_sync& r, const std::string& prefix, const std::string& owner,
                               const std::vector<std::string>& pools, const std::string& label) {
  std::string joined;
  for (const auto& p : pools) {
    if (!valid_pool_name(p)) throw std::invalid_argument("invalid pool name: " + p);
    joined += (joined.empty() ? "" : ",") + p;
  }
  token_spec t;
  t.owner = owner;
  t.scope = "worker";
  t.created = now_str();
  t.label = label;
  t.pools = joined;
  return write_token(r, prefix, std::move(t));
}

bool revoke_token(redis_sync& r, const std::string& prefix, const std::string& token_or_sha) {
  auto hash = token_or_sha.rfind("dp_", 0) == 0 ? sha256_hex(token_or_sha) : token_or_sha;
  const keys k(prefix);
  auto key = k.token(hash);
  auto owner = r.exec({"HGET", key, std::string(token_field::owner)});
  check(owner);
  auto n = r.exec({"DEL", key});
  check(n);
  if (!owner.is_nil()) {
    check(r.exec({"SREM", k.user_tokens(owner.str), hash}));
    check(r.exec({"SREM", k.user_worker_tokens(owner.str), hash}));
  }
  return n.integer > 0;
}

std::string hash_password(std::string_view password, password_cost cost) {
  ensure_sodium();
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str_alg(out, password.data(), password.size(), cost.opslimit, cost.memlimit_bytes,
                            crypto_pwhash_ALG_ARGON2ID13) != 0)
    throw std::runtime_error("password hashing failed (out of memory?)");
  return out;
}

bool verify_password(const std::string& hash, std::string_view password) {
  ensure_sodium();
  if (hash.empty() || hash.size() >= crypto_pwhash_STRBYTES) return false;
  return crypto_pwhash_str_verify(hash.c_str(), password.data(), password.size()) == 0;
}

bool set_password(redis_sync& r, const std::string& prefix, const std::string& name,
                  std::string_view password, password_cost cost) {
  if (!user_exists(r, prefix, name)) return false;
  check(r.exec({"HSET", keys(prefix).user(name), "password_hash", hash_password(password, cost)}));
  return true;
}

std::vector<std::string> register_user_cmd(const std::string& prefix, const std::string& name,
                                           const std::string& email, const std::string& password_hash,
                                           double now_s) {
  const keys k(prefix);
  return redis_cmd("EVAL", register_script, "2", k.user(name), k.users(), name, email, password_hash,
                   fmt_time(now_s));
}

std::optional<account_action> parse_account_action(std::string_view s) {
  if (s == "approve") return account_action::approve;
  if (s == "reject") return account_action::reject;
  if (s == "disable") return account_action::disable;
  if (s == "enable") return account_action::enable;
  if (s == "make-admin" || s == "make_admin") return account_action::make_admin;
  if (s == "remove-admin" || s == "remove_admin") return account_action::remove_admin;
  return std::nullopt;
}

std::string_view to_string(account_action a) {
  switch (a) {
    case account_action::approve: return "approve";
    case account_action::reject: return "reject";
    case account_action::disable: return "disable";
    case account_action::enable: return "enable";
    case account_action::make_admin: return "make-admin";
    case account_action::remove_admin: return "remove-admin";
  }
  return "";
}

std::vector<std::string> account_action_cmd(const std::string& prefix, const std::string& name,
                                            account_action a, double now_s) {
  return redis_cmd("EVAL", action_script, "1", keys(prefix).user(name), std::string(to_string(a)),
                   fmt_time(now_s));
}

account_change parse_account_change(const redis_reply& r) {
  account_change out;
  if (r.is_error()) {
    out.reason = "redis: " + r.str;
    return out;
  }
  if (r.type != redis_reply::kind::array || r.elements.size() != 4) {
    out.reason = "unexpected reply";
    return out;
  }
  out.ok = r.elements[0].as_string() == "ok";
  out.reason = r.elements[1].as_string();
  out.status = r.elements[2].as_string();
  out.role = r.elements[3].as_string();
  return out;
}

account_change change_account(redis_sync& r, const std::string& prefix, const std::string& name,
                              account_action a) {
  auto rep = r.exec(account_action_cmd(prefix, name, a, now_double()));
  check(rep);
  return parse_account_change(rep);
}

const std::vector<std::string>& quota_fields() {
  static const std::vector<std::string> f{"share", "max_running", "max_queued", "submit_rate"};
  return f;
}

std::optional<std::uint32_t> parse_quota_limit(std::string_view s) {
  std::uint32_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty() || v > 100000000) return std::nullopt;
  return v;
}

std::optional<double> parse_quota_share(std::string_view s) {
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty() || !(v >= 0.01 && v <= 10000))
    return std::nullopt;
  return v;
}

std::map<std::string, double> pool_shares_of(const redis_reply& r) {
  std::map<std::string, double> out;
  for (std::size_t i = 0; i + 1 < r.elements.size(); i += 2)
    if (auto v = parse_quota_share(r.elements[i + 1].str); v && *v != 1.0) out[r.elements[i].str] = *v;
  return out;
}

user_quota quota_of(const redis_reply& r) {
  user_quota q;
  if (r.type != redis_reply::kind::array || r.elements.size() != quota_fields().size()) return q;
  auto text = [&](std::size_t i) -> std::string_view {
    return r.elements[i].is_nil() ? std::string_view() : std::string_view(r.elements[i].str);
  };
  if (auto v = parse_quota_share(text(0))) q.share = *v;
  if (auto v = parse_quota_limit(text(1))) q.max_running = *v;
  if (auto v = parse_quota_limit(text(2))) q.max_queued = *v;
  if (auto v = parse_quota_limit(text(3))) q.submit_per_minute = *v;
  return q;
}

}  // namespace descprod
