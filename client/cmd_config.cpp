// The offline commands: DESCprod's config-string helpers (descprod/config.py) and
// descprod-output-dir (a bash script in DESCprod). They need no server.
//   descprod-split-config CONFIG              fields split on '-', space-joined; exit check_config
//   descprod-split-config-field FIELD         values split on ':'; exit check_config, 5 if it has '-'
//   descprod-split-compound-config COMPOUND   constituents split on '---'; exit check_config
//   descprod-check-config CONFIG              exit check_config (new; the reason on stderr)
//   descprod-output-dir [get|check|create|list] [SUBDIR]
// As in DESCprod, an invalid string prints nothing on stdout and the exit code is check_config's.
// Unlike DESCprod, a wrong argument count is a usage error (exit 2, usage on stderr), not exit 0.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>

#include "client/commands.hpp"
#include "client/common.hpp"
#include "core/job.hpp"

namespace descprod::client {

namespace {

namespace fs = std::filesystem;

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) out += ' ';
    out += v[i];
  }
  return out;
}

// The argument check of the commands that take one string: -h prints the usage (exit 0), any
// other count than one is a usage error (exit 2). nullopt: go on with args[0].
std::optional<int> expect_one(const std::vector<std::string>& args, const std::string& me,
                              const std::string& usage, const char* arg_name) {
  if (args.size() == 1 && (args[0] == "-h" || args[0] == "--help")) {
    std::cout << usage;
    return exit_code::ok;
  }
  if (args.size() != 1) {
    std::cerr << me << ": ERROR: expected exactly one " << arg_name << "\n" << usage;
    return exit_code::usage;
  }
  return std::nullopt;
}

// The shared shape of the three split commands.
int split_command(int argc, char** argv, const char* fallback, const char* arg_name,
                  std::vector<std::string> (*split)(std::string_view), bool field) {
  const std::string me = program_name(argc > 0 ? argv[0] : nullptr, fallback);
  const std::string usage = "Usage: " + me + " [-h] " + arg_name + "\n";
  auto args = arguments(argc, argv);
  if (auto rc = expect_one(args, me, usage, arg_name)) return *rc;
  const std::string& s = args[0];
  if (int chk = check_config(s)) return chk;
  if (field && s.find('-') != std::string::npos) return 5;
  std::cout << join(split(s)) << "\n";
  return exit_code::ok;
}

}  // namespace

int split_config_main(int argc, char** argv) {
  return split_command(argc, argv, "descprod-split-config", "CONFIG", &split_config, false);
}

int split_config_field_main(int argc, char** argv) {
  return split_command(argc, argv, "descprod-split-config-field", "CONFIG_FIELD", &split_config_field, true);
}

int split_compound_config_main(int argc, char** argv) {
  return split_command(argc, argv, "descprod-split-compound-config", "COMPOUND_CONFIG",
                       &split_compound_config, false);
}

int check_config_main(int argc, char** argv) {
  const std::string me = program_name(argc > 0 ? argv[0] : nullptr, "descprod-check-config");
  const std::string usage =
      "Usage: " + me +
      " [-h] CONFIG\n"
      "Checks a config string with DESCprod's rules and exits with check_config's code:\n"
      "  0 valid, 1 a character other than a-z A-Z 0-9 '-' ':', 2 contains '----',\n"
      "  3 a '---' constituent contains '--', 4 starts or ends with '-',\n"
      "  5 starts or ends with ':', 9 empty.\n";
  auto args = arguments(argc, argv);
  if (auto rc = expect_one(args, me, usage, "CONFIG")) return *rc;
  int chk = check_config(args[0]);
  if (chk) {
    std::cerr << me << ": '" << args[0] << "' " << check_config_reason(chk) << " (check_config code " << chk
              << ")\n";
  }
  return chk;
}

int output_dir_main(int argc, char** argv) {
  const std::string me = program_name(argc > 0 ? argv[0] : nullptr, "descprod-output-dir");
  const std::string usage =
      "Usage: " + me +
      ": [OPT [SUBDIR]]\n"
      "  Where OPT [create] is any of the following\n"
      "       get - Return the descprod base output directory.\n"
      "     check - Return the directory if it exists and is readable, else fail (exit 1).\n"
      "    create - Return the directory and creates it if absent.\n"
      "      list - display directory listing\n"
      "  If SUBDIR is provided, that subdirectory is used in the above.\n"
      "  The base is $DESCPROD_OUTPUT_DIR, else ${PSCRATCH:-${SCRATCH:-${HOME:-.}}}/descprod-out.\n";
  auto args = arguments(argc, argv);
  if (!args.empty() && (args[0] == "-h" || args[0] == "--help")) {
    std::cout << usage;
    return exit_code::ok;
  }
  if (args.size() > 2) {
    std::cerr << me << ": ERROR: too many arguments\n" << usage;
    return exit_code::usage;
  }
  const std::string opt = args.empty() ? "create" : args[0];
  // Without SUBDIR, the base itself (not DESCprod's early "<base>/.").
  std::string dir = output_base_dir(process_env());
  if (args.size() > 1 && !args[1].empty()) dir += "/" + args[1];

  if (opt == "get") {
    std::cout << dir << "\n";
    return exit_code::ok;
  }
  if (opt == "check") {
    std::error_code ec;
    if (fs::is_directory(dir, ec) && ::access(dir.c_str(), R_OK | X_OK) == 0) {
      std::cout << dir << "\n";
      return exit_code::ok;
    }
    std::cerr << me << ": ERROR: " << dir << " is not a readable directory\n";
    return exit_code::server_error;
  }
  if (opt == "create") {
    if (::access(dir.c_str(), R_OK) != 0) {
      std::error_code ec;
      fs::create_directories(dir, ec);
      if (ec || !fs::is_directory(dir)) {
        std::cerr << me << ": ERROR: Unable to create " << dir << (ec ? ": " + ec.message() : "") << "\n";
        return exit_code::server_error;
      }
      std::cerr << me << ": INFO: Created " << dir << "\n";
    }
    std::cout << dir << "\n";
    return exit_code::ok;
  }
  if (opt == "list") {
    std::cout.flush();
    const char* ls_argv[] = {"ls", "-ls", dir.c_str(), nullptr};
    ::execvp("ls", const_cast<char* const*>(ls_argv));
    std::cerr << me << ": ERROR: cannot run ls: " << std::strerror(errno) << "\n";
    return exit_code::server_error;
  }
  std::cerr << me << ": ERROR: Invalid option: " << opt << "\n" << usage;
  return exit_code::usage;
}

}  // namespace descprod::client
