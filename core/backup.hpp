// Backups of a service's Redis (docs/operators.md, "Backups and restores"; issue 15 item 5):
// `descprod-admin backup DIR` and `descprod-admin restore DIR REDIS_DIR`.
//
// A backup is a consistent snapshot: the RDB file Redis makes for a replica (the replication
// handshake SYNC, as `redis-cli --rdb` does it), so every script's writes are in it whole or not at
// all, and the service keeps running meanwhile. With it go the config file and the apps file the
// config names, and a manifest (backup.json: when, the snapshot's size and SHA-256, the Redis
// version, the number of keys and the last job ID).
//
// A restore lays the snapshot out as the base file of an append-only directory
// (REDIS_DIR/appendonlydir: the manifest names it as type b), which `redis-server --appendonly yes
// --dir REDIS_DIR` (scripts/descprod-up) loads as it loads its own after a rewrite; the first write
// starts a fresh incremental file. A directory that holds Redis data already is refused.
//
// Thread-safety: free functions; no shared state.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "core/redis.hpp"

namespace descprod {

struct snapshot_info {
  std::uint64_t bytes = 0;
  std::string sha256;  // of the RDB file, hex
};

// Writes a snapshot of the Redis at `ep` to `path` (a temporary file beside it, fsynced, then
// renamed). The ACL user needs `+sync` (and `+replconf`). Throws std::runtime_error saying what
// failed (no connection, refused, a connection lost mid-file, not an RDB file, a full disk).
snapshot_info redis_snapshot(const redis_endpoint& ep, const std::string& path,
                             std::chrono::seconds idle_timeout = std::chrono::seconds(60));

// The SHA-256 of a file, hex (what backup.json records).
std::string file_sha256(const std::string& path);

// Puts `rdb` into `redis_dir`/appendonlydir as its base file with a manifest. Refuses (throws)
// when `rdb` does not start as an RDB file, or when redis_dir already holds appendonlydir,
// dump.rdb or appendonly.aof.
void restore_redis_dir(const std::string& rdb, const std::string& redis_dir);

}  // namespace descprod
