// descprod-admin: account administration on the service's Redis (docs/operators.md).
//   descprod-admin [--config FILE] add-user NAME [--admin]
//   descprod-admin [--config FILE] token NAME        prints a new API token for NAME
//   descprod-admin [--config FILE] list-users
//   descprod-admin [--config FILE] approve|reject|disable|make-admin NAME
//   descprod-admin [--config FILE] worker-token OWNER [--pool P]... [--label L]
//   descprod-admin [--config FILE] worker-tokens OWNER | revoke TOKEN|SHA256
//   descprod-admin [--config FILE] pool add|remove POOL USER... | pool list [POOL] | pool share POOL [W]
//   descprod-admin [--config FILE] quota USER [--share W] [--max-running N] [--max-queued N]
//                                  [--submit-rate N/min]
//   descprod-admin keys NAME [--dir DIR]          a CURVE key pair (no Redis needed)
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <boost/json.hpp>

#include "client/terminal_text.hpp"
#include "core/accounts.hpp"
#include "core/backup.hpp"
#include "core/config.hpp"
#include "core/curve.hpp"
#include "core/job_import.hpp"
#include "core/keys.hpp"
#include "core/store.hpp"

namespace {

const char* usage =
    "Usage: descprod-admin [--config FILE] COMMAND [ARGS]\n"
    "\n"
    "Administers DESCprod accounts directly on the service's Redis.\n"
    "\n"
    "Commands:\n"
    "  add-user NAME [--admin]   create an active account (a no-op if it exists)\n"
    "  token NAME                issue a new API token for NAME and print it (shown once)\n"
    "  list-users                list accounts with their role and status\n"
    "  approve NAME              activate a pending (or rejected) registration\n"
    "  reject NAME               reject a pending registration\n"
    "  disable NAME              disable an account (its sessions and tokens stop working)\n"
    "  make-admin NAME           give an account the admin role\n"
    "  worker-token OWNER [--pool P]... [--label L]\n"
    "                            issue a worker token (printed once): its workers run OWNER's jobs and\n"
    "                            those of the members of each pool P ('*': every user's jobs)\n"
    "  worker-tokens OWNER       list OWNER's worker tokens (sha256, pools, label, created)\n"
    "  revoke TOKEN|SHA256       delete a token; a worker using it gets no more jobs\n"
    "  pool add POOL USER...     let the workers admitted to POOL run USER's jobs\n"
    "  pool remove POOL USER...  take users out of a pool\n"
    "  pool list [POOL]          list pools, or one pool's members\n"
    "  pool share POOL [W]       set (then print) the fair-share weight of POOL's members whose own\n"
    "                            quota sets no share (the largest of their pools'; 1 removes it)\n"
    "  quota USER [--share W] [--max-running N] [--max-queued N] [--submit-rate N/min]\n"
    "                            set USER's quota (0 removes a limit), then print it: W weighs USER in\n"
    "                            fair-share dispatch (default 1); beyond N running jobs the rest wait;\n"
    "                            a submission beyond N queued jobs or N per minute gets HTTP 429\n"
    "  import-jobs FILE [--format csv|json] [--dry-run]\n"
    "                            load DESCprod's job table (a MySQL export of its 18 columns as CSV\n"
    "                            with a header row, or JSON) under the jobs' own IDs; IDs that exist\n"
    "                            are skipped; new jobs then get IDs above them. Ended jobs keep their\n"
    "                            outcome, running ones become lost, never-started ones held\n"
    "  merge-config BASE OVERLAY OUT\n"
    "                            BASE with the YAML OVERLAY merged over it (mappings key by key,\n"
    "                            anything else replaced), written to OUT (mode 0600) only when it is\n"
    "                            a valid configuration (no Redis needed; descprod-up --config-overlay)\n"
    "  backup DIR                a consistent snapshot of Redis (DIR/dump.rdb, by the replication\n"
    "                            handshake: the service keeps running; the ACL user needs +sync and\n"
    "                            +replconf), the config and apps files, and DIR/backup.json (when,\n"
    "                            size, SHA-256); DIR must not hold a backup already\n"
    "  restore DIR REDIS_DIR     check DIR's snapshot against backup.json and lay it out as\n"
    "                            REDIS_DIR/appendonlydir, which redis-server --appendonly yes --dir\n"
    "                            REDIS_DIR loads (scripts/descprod-up: REDIS_DIR is its var directory);\n"
    "                            a REDIS_DIR holding Redis data is refused (no Redis needed)\n"
    "  keys NAME [--dir DIR]     make a CURVE key pair: DIR/NAME.key (secret, mode 0600) and\n"
    "                            DIR/NAME.pub (default DIR: var/keys). Give the daemon its .key and\n"
    "                            each worker its own .key and the daemon's .pub; put worker .pub\n"
    "                            files in the daemon's curve_authorized_keys_dir\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE         configuration file (default: config/descprod.yaml or $DESCPROD_CONFIG)\n"
    "  -h, --help                show this help\n";

// What Redis holds (user names, roles, pools, labels) and Redis's own errors are printed through
// this: never raw terminal controls, and no tab or newline inside a tab-separated field.
std::string safe(const std::string& s) { return descprod::client::terminal_safe(s); }

int fail(const std::string& msg, int code = 1) {
  std::cerr << "descprod-admin: " << descprod::client::terminal_safe(msg, {.keep_newline = true}) << "\n";
  return code;
}

// Writes DIR/NAME.key (0600, created exclusively) and DIR/NAME.pub; never overwrites a key.
int make_keys(const std::string& name, const std::string& dir) {
  if (!descprod::valid_user_name(name)) return fail("invalid key name '" + name + "': use a-z 0-9 _ . -", 2);
  if (!descprod::curve_available()) return fail("this libzmq has no CURVE support");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return fail("cannot create " + dir + ": " + ec.message());
  auto secret_path = dir + "/" + name + ".key";
  auto public_path = dir + "/" + name + ".pub";
  if (std::filesystem::exists(secret_path) || std::filesystem::exists(public_path))
    return fail(secret_path + " or " + public_path + " exists: not overwriting a key");
  auto kp = descprod::new_curve_keypair();
  int fd = ::open(secret_path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) return fail("cannot create " + secret_path + ": " + std::strerror(errno));
  std::string line = kp.secret_z85 + "\n";
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ok = ::close(fd) == 0 && ok;
  if (!ok) return fail("cannot write " + secret_path);
  std::ofstream pub(public_path);
  pub << kp.public_z85 << "\n";
  if (!pub.flush()) return fail("cannot write " + public_path);
  std::cout << "secret key: " << secret_path << "\npublic key: " << public_path << " " << kp.public_z85
            << "\n";
  return 0;
}

// descprod-admin backup DIR (core/backup.hpp).
int backup(descprod::redis_sync& redis, const descprod::descprod_config& cfg, const std::string& config_file,
           const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return fail("cannot create " + dir + ": " + ec.message());
  for (const char* f : {"dump.rdb", "backup.json"})
    if (fs::exists(fs::path(dir) / f))
      return fail(dir + " holds a backup already (" + f + "): give a new directory");
  auto info = redis.exec({"INFO", "server"});
  std::string version;
  if (auto at = info.str.find("redis_version:"); at != std::string::npos)
    version = info.str.substr(at + 14, info.str.find_first_of("\r\n", at) - at - 14);
  auto start = std::chrono::steady_clock::now();
  auto snap = descprod::redis_snapshot(cfg.redis.endpoint, (fs::path(dir) / "dump.rdb").string());
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fs::copy_file(config_file, fs::path(dir) / "descprod.yaml", fs::copy_options::overwrite_existing);
  fs::permissions(fs::path(dir) / "descprod.yaml", fs::perms::owner_read | fs::perms::owner_write,
                  fs::perm_options::replace);
  bool apps = !cfg.apps_file.empty() && fs::exists(cfg.apps_file);
  if (apps) fs::copy_file(cfg.apps_file, fs::path(dir) / "apps.yaml", fs::copy_options::overwrite_existing);
  boost::json::object m;
  m["created"] = static_cast<double>(std::time(nullptr));
  m["redis_version"] = version;
  m["prefix"] = cfg.redis.prefix;
  m["dump"] = "dump.rdb";
  m["bytes"] = snap.bytes;
  m["sha256"] = snap.sha256;
  m["config"] = "descprod.yaml";
  m["config_from"] = fs::absolute(config_file).string();
  if (apps) m["apps"] = "apps.yaml";
  std::ofstream out(fs::path(dir) / "backup.json");
  out << boost::json::serialize(m) << "\n";
  if (!out.flush()) return fail("cannot write " + dir + "/backup.json");
  std::cout << "backup " << safe(dir) << ": dump.rdb " << snap.bytes << " bytes in " << seconds
            << " s, sha256 " << snap.sha256 << "; descprod.yaml" << (apps ? ", apps.yaml" : "")
            << "; backup.json\n";
  return 0;
}

// descprod-admin restore DIR REDIS_DIR (core/backup.hpp).
int restore(const std::string& dir, const std::string& redis_dir) {
  namespace fs = std::filesystem;
  try {
    std::ifstream in(fs::path(dir) / "backup.json");
    std::stringstream text;
    text << in.rdbuf();
    boost::system::error_code ec;
    auto m = boost::json::parse(text.str(), ec);
    if (!in || ec || !m.is_object() || !m.as_object().contains("sha256"))
      return fail(dir + "/backup.json is missing or not a backup's manifest");
    std::string dump = (fs::path(dir) / "dump.rdb").string();
    std::string want(m.as_object().at("sha256").as_string());
    std::string got = descprod::file_sha256(dump);
    if (got != want)
      return fail(dump + " does not match backup.json (sha256 " + got + ", recorded " + want + ")");
    descprod::restore_redis_dir(dump, redis_dir);
    std::cout << "restored " << safe(dump) << " into " << safe(redis_dir)
              << "/appendonlydir; start redis-server --appendonly yes --dir " << safe(redis_dir)
              << " (scripts/descprod-up does) with the backup's descprod.yaml\n";
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string config_file = "config/descprod.yaml";
  if (const char* env = std::getenv("DESCPROD_CONFIG")) config_file = env;
  std::vector<std::string> rest;
  bool admin = false;
  std::vector<std::string> pools;
  std::string label;
  std::string key_dir = "var/keys";
  std::string format;  // import-jobs
  bool dry_run = false;
  std::vector<std::pair<std::string, std::string>> quota_set;  // (field, value) in option order
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto& a = args[i];
    if (a == "-h" || a == "--help") {
      std::cout << usage;
      return 0;
    } else if (a == "-c" || a == "--config") {
      if (i + 1 >= args.size()) return fail("--config needs a file name", 2);
      config_file = args[++i];
    } else if (a == "--admin") {
      admin = true;
    } else if (a == "--dry-run") {
      dry_run = true;
    } else if (a == "--pool" || a == "--label" || a == "--dir" || a == "--format") {
      if (i + 1 >= args.size()) return fail(a + " needs a value", 2);
      const auto& v = args[++i];
      if (a == "--pool") pools.push_back(v);
      else if (a == "--label") label = v;
      else if (a == "--format") format = v;
      else key_dir = v;
    } else if (a == "--share" || a == "--max-running" || a == "--max-queued" || a == "--submit-rate") {
      if (i + 1 >= args.size()) return fail(a + " needs a value", 2);
      std::string v = args[++i];
      if (a == "--submit-rate" && v.size() > 4 && v.compare(v.size() - 4, 4, "/min") == 0)
        v.resize(v.size() - 4);
      bool ok = a == "--share" ? descprod::parse_quota_share(v).has_value()
                               : descprod::parse_quota_limit(v).has_value();
      if (!ok)
        return fail(a == "--share"
                        ? "--share must be a number from 0.01 to 10000"
                        : a + " must be a whole number from 0 to 100000000" +
                              (a == "--submit-rate" ? std::string(" (per minute, e.g. 600/min)") : ""),
                    2);
      std::string field = a == "--share"         ? "share"
                          : a == "--max-running" ? "max_running"
                          : a == "--max-queued"  ? "max_queued"
                                                 : "submit_rate";
      quota_set.emplace_back(field, v);
    } else if (!a.empty() && a[0] == '-') {
      return fail("unknown option " + a + "\n" + usage, 2);
    } else {
      rest.push_back(a);
    }
  }
  if (rest.empty()) return fail(std::string("no command given\n") + usage, 2);
  if (rest[0] == "merge-config") {
    // scripts/descprod-up --config-overlay: BASE with OVERLAY merged over it, written to OUT only
    // if the result is a valid configuration (unknown keys refused as in any configuration).
    if (rest.size() != 4) return fail("usage: descprod-admin merge-config BASE OVERLAY OUT", 2);
    try {
      std::string merged = descprod::merge_config_files(rest[1], rest[2]);
      std::string tmp = rest[3] + ".tmp";
      {
        ::mode_t old = ::umask(077);
        std::ofstream out(tmp, std::ios::trunc);
        out << merged;
        out.close();
        ::umask(old);
        if (!out) return fail("cannot write " + tmp, 1);
      }
      try {
        descprod::load_config(tmp);
      } catch (const std::exception& e) {
        std::filesystem::remove(tmp);
        return fail("the configuration with " + rest[2] + " merged over it is refused: " + e.what(), 1);
      }
      std::filesystem::rename(tmp, rest[3]);
    } catch (const std::exception& e) {
      return fail(e.what(), 1);
    }
    return 0;
  }
  if (rest[0] == "restore") {
    if (rest.size() != 3) return fail("usage: descprod-admin restore DIR REDIS_DIR", 2);
    return restore(rest[1], rest[2]);
  }
  if (rest[0] == "keys") {
    if (rest.size() != 2) return fail("usage: descprod-admin keys NAME [--dir DIR]", 2);
    return make_keys(rest[1], key_dir);
  }

  descprod::descprod_config cfg;
  try {
    cfg = descprod::load_config(config_file);
  } catch (const std::exception& e) {
    return fail(e.what(), 2);
  }
  try {
    descprod::redis_sync redis(cfg.redis.endpoint);
    const auto& prefix = cfg.redis.prefix;
    const descprod::keys keys(prefix);
    const auto& cmd = rest[0];
    if (cmd == "backup") {
      if (rest.size() != 2) return fail("usage: descprod-admin backup DIR", 2);
      return backup(redis, cfg, config_file, rest[1]);
    }
    if (cmd == "add-user") {
      if (rest.size() != 2) return fail("usage: descprod-admin add-user NAME [--admin]", 2);
      if (!descprod::valid_user_name(rest[1]))
        return fail(
            "invalid user name '" + rest[1] + "': use 1-64 of a-z 0-9 _ . - starting with a letter or digit",
            2);
      bool created = descprod::add_user(redis, prefix, rest[1], admin);
      std::cout << (created ? "created user " : "user exists: ") << safe(rest[1]) << "\n";
      return 0;
    }
    if (cmd == "token") {
      if (rest.size() != 2) return fail("usage: descprod-admin token NAME", 2);
      if (!descprod::user_exists(redis, prefix, rest[1])) return fail("no such user: " + rest[1]);
      std::cout << descprod::issue_token(redis, prefix, rest[1]) << "\n";
      return 0;
    }
    if (cmd == "list-users") {
      auto users = redis.exec({"SMEMBERS", keys.users()});
      std::vector<std::string> names;
      for (const auto& e : users.elements) names.push_back(e.str);
      std::sort(names.begin(), names.end());
      for (const auto& n : names) {
        auto info = redis.exec({"HMGET", keys.user(n), "role", "status"});
        std::string role = info.elements.size() > 0 ? info.elements[0].str : "";
        std::string status = info.elements.size() > 1 ? info.elements[1].str : "";
        std::cout << safe(n) << "\t" << safe(role) << "\t" << safe(status) << "\n";
      }
      return 0;
    }
    if (auto action = descprod::parse_account_action(cmd);
        action && (cmd == "approve" || cmd == "reject" || cmd == "disable" || cmd == "make-admin")) {
      if (rest.size() != 2) return fail("usage: descprod-admin " + cmd + " NAME", 2);
      auto c = descprod::change_account(redis, prefix, rest[1], *action);
      if (!c.ok && c.reason == "missing") return fail("no such user: " + rest[1]);
      if (!c.ok) return fail("cannot " + cmd + " " + rest[1] + ": the account is " + c.status);
      std::cout << safe(rest[1]) << "\t" << safe(c.role) << "\t" << safe(c.status) << "\n";
      return 0;
    }
    if (cmd == "worker-token") {
      if (rest.size() != 2)
        return fail("usage: descprod-admin worker-token OWNER [--pool P]... [--label L]", 2);
      if (!descprod::user_exists(redis, prefix, rest[1])) return fail("no such user: " + rest[1]);
      for (const auto& p : pools)
        if (!descprod::valid_pool_name(p))
          return fail("invalid pool name '" + p + "': use a-z 0-9 _ . - or *", 2);
      std::cout << descprod::issue_worker_token(redis, prefix, rest[1], pools, label) << "\n";
      return 0;
    }
    if (cmd == "worker-tokens") {
      if (rest.size() != 2) return fail("usage: descprod-admin worker-tokens OWNER", 2);
      auto shas = redis.exec({"SMEMBERS", keys.user_worker_tokens(rest[1])});
      for (const auto& e : shas.elements) {
        auto t = redis.exec({"HMGET", keys.token(e.str), "pools", "label", "created"});
        if (t.elements.size() != 3 || t.elements[2].is_nil()) continue;  // revoked
        std::cout << safe(e.str) << "\tpools=" << safe(t.elements[0].str)
                  << "\tlabel=" << safe(t.elements[1].str) << "\tcreated=" << safe(t.elements[2].str) << "\n";
      }
      return 0;
    }
    if (cmd == "revoke") {
      if (rest.size() != 2) return fail("usage: descprod-admin revoke TOKEN|SHA256", 2);
      if (!descprod::revoke_token(redis, prefix, rest[1])) return fail("no such token");
      std::cout << "revoked\n";
      return 0;
    }
    if (cmd == "pool") {
      const std::string sub = rest.size() > 1 ? rest[1] : "";
      if (sub == "list") {
        if (rest.size() == 2) {
          std::vector<std::string> names;
          std::string cursor = "0";
          do {  // SCAN, bounded by the keyspace
            auto r = redis.exec({"SCAN", cursor, "MATCH", keys.pool_pattern(), "COUNT", "1000"});
            if (r.elements.size() != 2) break;
            cursor = r.elements[0].str;
            for (const auto& k : r.elements[1].elements) names.push_back(k.str.substr(keys.pool("").size()));
          } while (cursor != "0");
          std::sort(names.begin(), names.end());
          for (const auto& n : names) std::cout << safe(n) << "\n";
          return 0;
        }
        if (rest.size() != 3) return fail("usage: descprod-admin pool list [POOL]", 2);
        auto m = redis.exec({"SMEMBERS", keys.pool(rest[2])});
        std::vector<std::string> names;
        for (const auto& e : m.elements) names.push_back(e.str);
        std::sort(names.begin(), names.end());
        for (const auto& n : names) std::cout << safe(n) << "\n";
        return 0;
      }
      if ((sub == "add" || sub == "remove") && rest.size() >= 4) {
        const auto& pool = rest[2];
        if (pool == "*" || !descprod::valid_pool_name(pool))
          return fail("invalid pool name '" + pool + "': use a-z 0-9 _ . -", 2);
        std::vector<std::string> cmdv{sub == "add" ? "SADD" : "SREM", keys.pool(pool)};
        for (std::size_t i = 3; i < rest.size(); ++i) {
          if (sub == "add" && !descprod::user_exists(redis, prefix, rest[i]))
            return fail("no such user: " + rest[i]);
          cmdv.push_back(rest[i]);
        }
        auto r = redis.exec(cmdv);
        if (r.is_error()) return fail(r.str);
        std::cout << (sub == "add" ? "added " : "removed ") << r.integer
                  << (sub == "add" ? " to pool " : " from pool ") << pool << "\n";
        return 0;
      }
      if (sub == "share" && (rest.size() == 3 || rest.size() == 4)) {
        // The fair-share weight of the pool's members whose own quota sets none (the largest of
        // their pools'); 1 is the default and removes it.
        const auto& pool = rest[2];
        if (pool == "*" || !descprod::valid_pool_name(pool))
          return fail("invalid pool name '" + pool + "': use a-z 0-9 _ . -", 2);
        if (rest.size() == 4) {
          auto w = descprod::parse_quota_share(rest[3]);
          if (!w) return fail("share must be a number from 0.01 to 10000, not '" + rest[3] + "'", 2);
          if (*w == 1.0) redis.exec({"HDEL", keys.pool_shares(), pool});
          else redis.exec({"HSET", keys.pool_shares(), pool, rest[3]});
        }
        auto v = redis.exec({"HGET", keys.pool_shares(), pool});
        double share = 1.0;
        if (!v.is_nil())
          if (auto w = descprod::parse_quota_share(v.str)) share = *w;
        std::cout << "pool " << safe(pool) << "\tshare=" << share << "\n";
        return 0;
      }
      return fail(
          "usage: descprod-admin pool add|remove POOL USER... | pool list [POOL] | pool share POOL [W]", 2);
    }
    if (cmd == "import-jobs") {
      if (rest.size() != 2)
        return fail("usage: descprod-admin import-jobs FILE [--format csv|json] [--dry-run]", 2);
      if (!format.empty() && format != "csv" && format != "json")
        return fail("--format must be csv or json", 2);
      std::ifstream in(rest[1], std::ios::binary);
      if (!in) return fail("cannot read " + rest[1], 2);
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      auto parsed = descprod::parse_descprod_jobs(text, format);
      if (!parsed.errors.empty()) {
        for (std::size_t i = 0; i < parsed.errors.size() && i < 50; ++i)
          std::cerr << "descprod-admin: " << safe(rest[1]) << ": " << safe(parsed.errors[i]) << "\n";
        if (parsed.errors.size() > 50)
          std::cerr << "descprod-admin: ... and " << parsed.errors.size() - 50 << " more\n";
        return fail("nothing imported: " + std::to_string(parsed.errors.size()) + " problems in " + rest[1],
                    1);
      }
      std::map<std::string, std::size_t> by_state;
      std::set<std::string> owners;
      descprod::job_id low = 0, high = 0;
      for (const auto& j : parsed.jobs) {
        ++by_state[std::string(descprod::to_string(j.state))];
        owners.insert(j.owner);
        if (!low || j.id < low) low = j.id;
        high = std::max(high, j.id);
      }
      std::size_t imported = 0, existing = 0;
      if (!dry_run) {
        constexpr std::size_t batch = 500;
        for (std::size_t from = 0; from < parsed.jobs.size(); from += batch) {
          std::vector<descprod::imported_job> part(
              parsed.jobs.begin() + static_cast<std::ptrdiff_t>(from),
              parsed.jobs.begin() + static_cast<std::ptrdiff_t>(std::min(parsed.jobs.size(), from + batch)));
          auto answer =
              descprod::import_answer(redis.exec(descprod::import_command(keys, part)), part.size());
          for (const auto& a : answer) (a == "ok" ? imported : existing)++;
        }
      }
      std::cout << (dry_run ? "would import " : "imported ") << (dry_run ? parsed.jobs.size() : imported)
                << " jobs";
      if (!parsed.jobs.empty()) std::cout << " (ids " << low << ".." << high << ")";
      std::cout << ", skipped " << existing << " that exist";
      for (const auto& [st, n] : by_state) std::cout << "; " << st << " " << n;
      std::cout << "\n";
      if (!dry_run) {
        auto next = redis.exec({"GET", keys.next_job_id()});
        std::cout << "next job ID: " << (next.is_nil() ? 1 : std::stoll(next.str) + 1) << "\n";
      }
      std::vector<std::string> missing;
      for (const auto& o : owners)
        if (redis.exec({"HEXISTS", keys.user(o), "status"}).integer == 0) missing.push_back(o);
      if (!missing.empty()) {
        std::cout << "owners without an account here (their jobs wait for them: descprod-admin add-user):";
        for (const auto& m : missing) std::cout << " " << safe(m);
        std::cout << "\n";
      }
      return 0;
    }
    if (cmd == "quota") {
      if (rest.size() != 2)
        return fail(
            "usage: descprod-admin quota USER [--share W] [--max-running N] [--max-queued N] "
            "[--submit-rate N/min]",
            2);
      if (!descprod::user_exists(redis, prefix, rest[1])) return fail("no such user: " + rest[1]);
      const auto key = keys.user_quota(rest[1]);
      for (const auto& [field, value] : quota_set) {
        // 0 (or share 1) is the default: the field goes, so the hash holds only real limits.
        bool unset = field == "share" ? *descprod::parse_quota_share(value) == 1.0 : value == "0";
        if (unset) redis.exec({"HDEL", key, field});
        else redis.exec({"HSET", key, field, value});
      }
      std::vector<std::string> get{"HMGET", key};
      for (const auto& f : descprod::quota_fields()) get.push_back(f);
      auto q = descprod::quota_of(redis.exec(get));
      auto limit = [](std::uint32_t v) { return v ? std::to_string(v) : std::string("none"); };
      std::cout << safe(rest[1]) << "\tshare=" << q.share << "\tmax_running=" << limit(q.max_running)
                << "\tmax_queued=" << limit(q.max_queued) << "\tsubmit_rate="
                << (q.submit_per_minute ? std::to_string(q.submit_per_minute) + "/min" : std::string("none"))
                << "\n";
      return 0;
    }
    if (!quota_set.empty())
      return fail("--share, --max-running, --max-queued and --submit-rate go with quota", 2);
    return fail("unknown command '" + cmd + "'\n" + usage, 2);
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}
