// A short-lived memory of bearer tokens the gateway has just checked against Redis, so that a
// client sending many requests in a row costs one token and account lookup per `ttl` instead of
// two Redis round trips per request.
//
// Bound on staleness: an entry is used at most `ttl` after the moment its Redis lookup was *sent*
// (the caller passes that time to remember()), so a token deleted, or an account disabled, demoted
// or deleted in Redis (by descprod-admin, another gateway, or anything else) is refused by this
// gateway at most `ttl` later. Changes made through this gateway clear the whole cache at once
// (the handler calls clear() after any credential- or account-changing route). A token's own
// expiry is checked on every use. Only successful lookups are kept (an unknown token always goes
// to Redis), keyed by the token's SHA-256, never by the token itself. Job-scoped tokens
// (DESCPROD_TOKEN) are never remembered (auth.cpp): their revocation at the end of the job's
// attempt applies to the very next request.
//
// Thread-safety: none; one io_context thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <unordered_map>

#include "gateway/api.hpp"

namespace descprod::gateway {

class auth_cache {
 public:
  using clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds default_ttl{1000};
  static constexpr std::size_t default_capacity = 10000;

  explicit auth_cache(std::chrono::milliseconds ttl = default_ttl, std::size_t capacity = default_capacity)
      : ttl_(ttl), capacity_(capacity == 0 ? 1 : capacity) {}

  // The principal remembered for the token whose SHA-256 is `token_hash`, when it was looked up
  // less than ttl before `now` and the token has not expired at epoch second `now_s`.
  std::optional<principal> find(const std::string& token_hash, double now_s, clock::time_point now) {
    if (ttl_.count() <= 0) return std::nullopt;
    auto it = map_.find(token_hash);
    if (it == map_.end()) return std::nullopt;
    const entry& e = it->second;
    if (now >= e.fresh_until || (e.expires_s > 0 && now_s >= e.expires_s)) {
      map_.erase(it);
      return std::nullopt;
    }
    return e.who;
  }

  // Remembers a successful check. `looked_up` is when the Redis lookup was sent; `expires_s` the
  // token's expiry (epoch seconds, 0 = never).
  void remember(const std::string& token_hash, const principal& who, double expires_s,
                clock::time_point looked_up) {
    if (ttl_.count() <= 0) return;
    if (map_.size() >= capacity_ && map_.find(token_hash) == map_.end()) {
      prune(clock::now());
      if (map_.size() >= capacity_) map_.clear();  // many live tokens at once: start over
    }
    entry& e = map_[token_hash];
    e.who = who;
    e.expires_s = expires_s;
    e.fresh_until = looked_up + ttl_;
  }

  // Forgets everything (a token was revoked or an account changed through this gateway).
  void clear() { map_.clear(); }
  std::size_t size() const { return map_.size(); }
  std::chrono::milliseconds ttl() const { return ttl_; }

 private:
  struct entry {
    principal who;
    double expires_s = 0;
    clock::time_point fresh_until;
  };
  void prune(clock::time_point now) {
    for (auto it = map_.begin(); it != map_.end();) {
      if (now >= it->second.fresh_until) it = map_.erase(it);
      else ++it;
    }
  }

  std::chrono::milliseconds ttl_;
  std::size_t capacity_;
  std::unordered_map<std::string, entry> map_;
};

}  // namespace descprod::gateway
