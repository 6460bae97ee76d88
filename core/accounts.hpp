// Accounts and API tokens on a blocking Redis connection (used by descprod-admin and the test
// fixtures; the gateway reads the same keys asynchronously).
//   P user:<name>  hash: role (admin|user), status (active|pending|disabled), created
//   P users        set of user names
//   P token:<sha256 of token>  hash: owner, scope ("user" or "job:<id>"), created, expires (0: never)
#pragma once

#include <optional>
#include <string>

#include "core/redis.hpp"

namespace descprod {

// A user name: 1–64 of [a-z0-9_.-], starting with a letter or digit.
bool valid_user_name(const std::string& name);

// Creates (or, if it exists, leaves unchanged and returns false) an active user.
bool add_user(redis_sync& r, const std::string& prefix, const std::string& name, bool admin);
bool user_exists(redis_sync& r, const std::string& prefix, const std::string& name);
// Issues a new token for the user and returns its plain text (stored only as a hash).
std::string issue_token(redis_sync& r, const std::string& prefix, const std::string& owner,
                        const std::string& scope = "user", long long ttl_s = 0);

}  // namespace descprod
