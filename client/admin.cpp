// descprod-admin: account administration on the service's Redis (DESIGN §7).
//   descprod-admin [--config FILE] add-user NAME [--admin]
//   descprod-admin [--config FILE] token NAME        prints a new API token for NAME
//   descprod-admin [--config FILE] list-users
//   descprod-admin [--config FILE] approve|reject|disable|make-admin NAME
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "core/accounts.hpp"
#include "core/config.hpp"

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
    "\n"
    "Options:\n"
    "  -c, --config FILE         configuration file (default: config/descprod.yaml or $DESCPROD_CONFIG)\n"
    "  -h, --help                show this help\n";

int fail(const std::string& msg, int code = 1) {
  std::cerr << "descprod-admin: " << msg << "\n";
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string config_file = "config/descprod.yaml";
  if (const char* env = std::getenv("DESCPROD_CONFIG")) config_file = env;
  std::vector<std::string> rest;
  bool admin = false;
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
    } else if (!a.empty() && a[0] == '-') {
      return fail("unknown option " + a + "\n" + usage, 2);
    } else {
      rest.push_back(a);
    }
  }
  if (rest.empty()) return fail(std::string("no command given\n") + usage, 2);

  descprod::descprod_config cfg;
  try {
    cfg = descprod::load_config(config_file);
  } catch (const std::exception& e) {
    return fail(e.what(), 2);
  }
  try {
    descprod::redis_sync redis(cfg.redis.endpoint);
    const auto& prefix = cfg.redis.prefix;
    const auto& cmd = rest[0];
    if (cmd == "add-user") {
      if (rest.size() != 2) return fail("usage: descprod-admin add-user NAME [--admin]", 2);
      if (!descprod::valid_user_name(rest[1]))
        return fail("invalid user name '" + rest[1] + "': use 1-64 of a-z 0-9 _ . - starting with a letter or digit", 2);
      bool created = descprod::add_user(redis, prefix, rest[1], admin);
      std::cout << (created ? "created user " : "user exists: ") << rest[1] << "\n";
      return 0;
    }
    if (cmd == "token") {
      if (rest.size() != 2) return fail("usage: descprod-admin token NAME", 2);
      if (!descprod::user_exists(redis, prefix, rest[1])) return fail("no such user: " + rest[1]);
      std::cout << descprod::issue_token(redis, prefix, rest[1]) << "\n";
      return 0;
    }
    if (cmd == "list-users") {
      auto users = redis.exec({"SMEMBERS", prefix + "users"});
      std::vector<std::string> names;
      for (const auto& e : users.elements) names.push_back(e.str);
      std::sort(names.begin(), names.end());
      for (const auto& n : names) {
        auto info = redis.exec({"HMGET", prefix + "user:" + n, "role", "status"});
        std::string role = info.elements.size() > 0 ? info.elements[0].str : "";
        std::string status = info.elements.size() > 1 ? info.elements[1].str : "";
        std::cout << n << "\t" << role << "\t" << status << "\n";
      }
      return 0;
    }
    if (auto action = descprod::parse_account_action(cmd);
        action && (cmd == "approve" || cmd == "reject" || cmd == "disable" || cmd == "make-admin")) {
      if (rest.size() != 2) return fail("usage: descprod-admin " + cmd + " NAME", 2);
      auto c = descprod::change_account(redis, prefix, rest[1], *action);
      if (!c.ok && c.reason == "missing") return fail("no such user: " + rest[1]);
      if (!c.ok) return fail("cannot " + cmd + " " + rest[1] + ": the account is " + c.status);
      std::cout << rest[1] << "\t" << c.role << "\t" << c.status << "\n";
      return 0;
    }
    return fail("unknown command '" + cmd + "'\n" + usage, 2);
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}
