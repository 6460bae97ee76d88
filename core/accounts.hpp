// Accounts, passwords and API tokens (docs/architecture.md#redis-layout,
// docs/security.md). The blocking functions run on a redis_sync
// connection (descprod-admin, test fixtures); the command builders and the Lua scripts are shared
// with the gateway, which runs the same commands asynchronously, so both sides change an account
// the same way.
//   P user:<name>         hash: role (admin|user), status (pending|active|rejected|disabled),
//                         created, email, password_hash (Argon2id, libsodium's string form),
//                         notify_failed ("1": e-mail the owner when a job fails; descprod-notifier)
//   P users               set of user names
//   P user:<name>:tokens  set of the sha256 of the user's API tokens (scope "user")
//   P token:<sha256>      hash: owner, scope ("user", "worker" or "job:<id>"), created, expires
//                         (0: never), label; worker tokens also pools (comma-separated)
//   P user:<name>:worker_tokens  set of the sha256 of the user's worker tokens
//   P pool:<name>         set of user names whose jobs the pool's workers may run
//
// Thread-safety: the pure functions are; the Redis ones use the caller's connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/keys.hpp"
#include "core/redis.hpp"

namespace descprod {

// ---- tokens: one definition of P token:<sha256>, one code path that writes one ----------------

// The fields of a token's hash. The store's Lua scripts (job tokens, the cancel's read_only mark)
// take these names from here too (store_scripts.cpp renders them into the prelude's TF table).
namespace token_field {
inline constexpr std::string_view owner = "owner";
inline constexpr std::string_view scope = "scope";
inline constexpr std::string_view created = "created";
inline constexpr std::string_view expires = "expires";  // unix seconds; "0": never
inline constexpr std::string_view label = "label";
inline constexpr std::string_view pools = "pools";          // worker tokens: comma-separated
inline constexpr std::string_view read_only = "read_only";  // a job token whose job is cancelling
}  // namespace token_field
// The scope of a job's DESCPROD_TOKEN: "job:<id>".
inline std::string job_token_scope(std::string_view id) { return "job:" + std::string(id); }

// A token to write. `created` as the caller has always written it (descprod-admin: whole seconds,
// the gateway's token page: seconds with a fraction).
struct token_spec {
  std::string owner;
  std::string scope;  // "user", "worker" or job_token_scope(id)
  std::string created;
  long long expires = 0;  // unix seconds; 0: never
  long long ttl_s = 0;    // > 0: also a Redis TTL on the hash
  std::string label;
  std::optional<std::string> pools;  // a worker token: its pools, comma-separated
  std::string session_id;            // a user token: its session (next_session_id), given to its jobs
};
// The commands that write the token hashed `sha256`: its hash (owner, scope, created, expires,
// label[, pools]), its TTL, and its entry in the owner's index (P user:<owner>:tokens for scope
// "user", P user:<owner>:worker_tokens for a worker token). Used by descprod-admin (issue_token,
// issue_worker_token) and the gateway's token page; the claim script writes a job token's hash in
// Lua with the same field names (token_field).
std::vector<std::vector<std::string>> token_write_commands(const keys& k, const std::string& sha256,
                                                           const token_spec& t);

// The account field of the e-mail-on-failure preference: "1" when the user opted in.
inline constexpr std::string_view user_notify_failed_field = "notify_failed";

// A user name: 1–64 of [a-z0-9_.-], starting with a letter or digit.
bool valid_user_name(const std::string& name);
// A plausible e-mail address: 3–254 bytes, one '@' with text on both sides, no spaces or
// control characters, no '<', '>', '"'.
bool valid_email(const std::string& email);
// Password length limits (bytes).
inline constexpr std::size_t min_password_bytes = 8;
inline constexpr std::size_t max_password_bytes = 1024;

// Creates (or, if it exists, leaves unchanged and returns false) an active user.
bool add_user(redis_sync& r, const std::string& prefix, const std::string& name, bool admin);
bool user_exists(redis_sync& r, const std::string& prefix, const std::string& name);
// Issues a new token for the user and returns its plain text (stored only as a hash). A "user"
// scope token is also listed in P user:<owner>:tokens.
std::string issue_token(redis_sync& r, const std::string& prefix, const std::string& owner,
                        const std::string& scope = "user", long long ttl_s = 0,
                        const std::string& label = "");

// A worker token (scope "worker"; docs/operators.md, Workers): the worker runs `owner`'s jobs and
// those of the members of `pools` (P pool:<name> sets; "*" admits every owner's jobs). Listed in
// P user:<owner>:worker_tokens. Throws std::invalid_argument on a bad pool name.
std::string issue_worker_token(redis_sync& r, const std::string& prefix, const std::string& owner,
                               const std::vector<std::string>& pools, const std::string& label = "");
// A pool name: a user-name-like word, or "*".
bool valid_pool_name(const std::string& name);
// Deletes a token given as its plain text ("dp_...") or its sha256; false when there was none.
bool revoke_token(redis_sync& r, const std::string& prefix, const std::string& token_or_sha);

// ---- passwords ---------------------------------------------------------------------------------

// Argon2id cost (crypto_pwhash_str with crypto_pwhash_ALG_ARGON2ID13).
struct password_cost {
  unsigned long long opslimit = 2;
  std::size_t memlimit_bytes = std::size_t(64) << 20;
};
// The hash string ("$argon2id$v=19$m=...,t=...,p=1$salt$hash"). Throws std::runtime_error when
// libsodium cannot allocate the memory.
std::string hash_password(std::string_view password, password_cost cost);
// Whether `password` matches `hash` (constant time; false for an empty or malformed hash).
bool verify_password(const std::string& hash, std::string_view password);
// Sets (replaces) a user's password; false when the user does not exist.
bool set_password(redis_sync& r, const std::string& prefix, const std::string& name,
                  std::string_view password, password_cost cost);

// ---- registration and account changes ----------------------------------------------------------

// EVAL of the registration script: creates P user:<name> with status pending, role user, the
// e-mail and the password hash, and adds the name to P users, unless the account exists.
// Reply: 1 created, 0 the name is taken.
std::vector<std::string> register_user_cmd(const std::string& prefix, const std::string& name,
                                           const std::string& email, const std::string& password_hash,
                                           double now_s);

// What an administrator may do to an account.
enum class account_action { approve, reject, disable, enable, make_admin, remove_admin };
// "approve", "reject", "disable", "enable", "make-admin" (or make_admin), "remove-admin".
std::optional<account_action> parse_account_action(std::string_view s);
std::string_view to_string(account_action a);

// EVAL of the account-change script. Legal changes: approve pending|rejected → active; reject
// pending → rejected; disable anything not disabled → disabled; enable disabled → active;
// make-admin and remove-admin set the role of any existing account.
std::vector<std::string> account_action_cmd(const std::string& prefix, const std::string& name,
                                            account_action a, double now_s);
struct account_change {
  bool ok = false;
  std::string reason;  // "missing" or "illegal" when !ok
  std::string status;  // the account's status after (or, when refused, now)
  std::string role;
};
account_change parse_account_change(const redis_reply& r);
// account_action_cmd on a blocking connection.
account_change change_account(redis_sync& r, const std::string& prefix, const std::string& name,
                              account_action a);

// A user's quota (<prefix>user:<name>:quota, set by `descprod-admin quota`; docs/operators.md,
// Fair share and quotas). 0 means no limit. `share` weighs the user in fair-share dispatch (a user
// with share 2 gets twice the slots of one with share 1 while both have jobs waiting);
// max_running holds jobs back beyond that many dispatched or running; max_queued and
// submit_per_minute refuse a submission (429) that would go beyond them.
struct user_quota {
  double share = 1.0;
  std::uint32_t max_running = 0;
  std::uint32_t max_queued = 0;
  std::uint32_t submit_per_minute = 0;
  bool limited() const { return max_running || max_queued || submit_per_minute; }
};
// The quota hash's fields, in the order quota_of reads them (HMGET key fields...).
const std::vector<std::string>& quota_fields();
// The quota from an HMGET of quota_fields() (nil or unparsable fields keep their defaults).
user_quota quota_of(const redis_reply& hmget);
// Limits of 0..max (share: 0.01..10000); nullopt for text that is not one.
std::optional<std::uint32_t> parse_quota_limit(std::string_view s);
std::optional<double> parse_quota_share(std::string_view s);
// The pools with a share of their own (other than 1), from an HGETALL of <prefix>pool_shares
// (descprod-admin pool share): pool name → share; unparsable entries left out.
std::map<std::string, double> pool_shares_of(const redis_reply& hgetall);

}  // namespace descprod
