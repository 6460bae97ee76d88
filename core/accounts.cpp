// Users and tokens written with the blocking client.
#include "core/accounts.hpp"

#include <chrono>
#include <stdexcept>

#include "core/crypto.hpp"

namespace descprod {

namespace {
std::string now_str() {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now).count());
}
void check(const redis_reply& r) {
  if (r.is_error()) throw std::runtime_error("Redis: " + r.str);
}
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

bool user_exists(redis_sync& r, const std::string& prefix, const std::string& name) {
  auto rep = r.exec({"EXISTS", prefix + "user:" + name});
  check(rep);
  return rep.integer > 0;
}

bool add_user(redis_sync& r, const std::string& prefix, const std::string& name, bool admin) {
  if (!valid_user_name(name)) throw std::invalid_argument("invalid user name: " + name);
  auto rep = r.exec({"HSETNX", prefix + "user:" + name, "role", admin ? "admin" : "user"});
  check(rep);
  if (rep.integer == 0) return false;
  check(r.exec({"HSET", prefix + "user:" + name, "status", "active", "created", now_str()}));
  check(r.exec({"SADD", prefix + "users", name}));
  return true;
}

std::string issue_token(redis_sync& r, const std::string& prefix, const std::string& owner,
                        const std::string& scope, long long ttl_s) {
  auto token = new_token();
  auto key = prefix + "token:" + sha256_hex(token);
  long long expires = 0;
  if (ttl_s > 0) expires = std::stoll(now_str()) + ttl_s;
  check(r.exec({"HSET", key, "owner", owner, "scope", scope, "created", now_str(), "expires",
                std::to_string(expires)}));
  if (ttl_s > 0) check(r.exec({"EXPIRE", key, std::to_string(ttl_s)}));
  return token;
}

}  // namespace descprod
