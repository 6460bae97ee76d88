// Validation of the daemon's `job` message. Everything that reaches execve comes from here, so the
// limits are those of the kernel (an argument string at most 128 KiB, no NUL bytes) plus sane
// counts; anything else is refused with a reason instead of failing later in posix_spawn.
#include "workers/job_spec.hpp"

#include <spdlog/fmt/fmt.h>
#include <cmath>

#include "core/protocol.hpp"

namespace descprod::workers {

namespace {

constexpr std::size_t max_args = 4096;
constexpr std::size_t max_arg_bytes = 128 * 1024;  // Linux MAX_ARG_STRLEN
constexpr std::size_t max_env = 4096;
constexpr long long max_attempt = 1000000;
constexpr double max_time_limit_s = 1e9;

bool has_nul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

std::string scalar_string(const boost::json::value& v) {
  if (v.is_string()) return std::string(v.as_string());
  if (v.is_int64()) return std::to_string(v.as_int64());
  if (v.is_uint64()) return std::to_string(v.as_uint64());
  if (v.is_double()) return fmt::format("{}", v.as_double());
  if (v.is_bool()) return v.as_bool() ? "1" : "0";
  return boost::json::serialize(v);
}

}  // namespace

job_record record_from_json(const boost::json::object& job) {
  job_record r;
  for (const auto& kv : job) {
    if (kv.value().is_null()) continue;
    r[std::string(kv.key())] = scalar_string(kv.value());
  }
  return r;
}

std::optional<job_spec> parse_job_message(const boost::json::object& body, std::string& why) {
  job_spec spec;

  auto job_it = body.find("job");
  if (job_it == body.end() || !job_it->value().is_object()) {
    why = "job: missing or not an object";
    return std::nullopt;
  }
  const auto& job = job_it->value().as_object();
  auto id = protocol::get_int(job, "id");
  if (!id || *id <= 0) {
    why = "job.id: missing or not a positive integer";
    return std::nullopt;
  }
  spec.id = *id;

  auto attempt = protocol::get_int(body, "attempt");
  if (!attempt || *attempt < 1 || *attempt > max_attempt) {
    why = "attempt: missing or not an integer between 1 and " + std::to_string(max_attempt);
    return std::nullopt;
  }
  spec.attempt = static_cast<int>(*attempt);

  auto app_it = body.find("app");
  if (app_it == body.end() || !app_it->value().is_object()) {
    why = "app: missing or not an object";
    return std::nullopt;
  }
  const auto& app = app_it->value().as_object();

  auto argv_it = app.find("argv");
  if (argv_it == app.end() || !argv_it->value().is_array() || argv_it->value().as_array().empty()) {
    why = "app.argv: missing or not a non-empty list";
    return std::nullopt;
  }
  const auto& argv = argv_it->value().as_array();
  if (argv.size() > max_args) {
    why = "app.argv: more than " + std::to_string(max_args) + " arguments";
    return std::nullopt;
  }
  for (std::size_t i = 0; i < argv.size(); ++i) {
    if (!argv[i].is_string()) {
      why = "app.argv[" + std::to_string(i) + "]: not a string";
      return std::nullopt;
    }
    std::string_view a = argv[i].as_string();
    if (has_nul(a) || a.size() > max_arg_bytes) {
      why = "app.argv[" + std::to_string(i) + "]: contains a NUL byte or is longer than 128 KiB";
      return std::nullopt;
    }
    spec.argv.emplace_back(a);
  }
  if (spec.argv.front().empty()) {
    why = "app.argv[0]: empty program name";
    return std::nullopt;
  }

  if (auto env_it = app.find("env"); env_it != app.end() && !env_it->value().is_null()) {
    if (!env_it->value().is_object()) {
      why = "app.env: not an object";
      return std::nullopt;
    }
    const auto& env = env_it->value().as_object();
    if (env.size() > max_env) {
      why = "app.env: more than " + std::to_string(max_env) + " variables";
      return std::nullopt;
    }
    for (const auto& kv : env) {
      std::string_view name = kv.key();
      if (name.empty() || name.find('=') != std::string_view::npos || has_nul(name)) {
        why = "app.env: invalid variable name";
        return std::nullopt;
      }
      if (!kv.value().is_string() || has_nul(kv.value().as_string()) ||
          kv.value().as_string().size() > max_arg_bytes) {
        why = "app.env." + std::string(name) + ": not a string without NUL bytes (at most 128 KiB)";
        return std::nullopt;
      }
      spec.env.emplace_back(std::string(name), std::string(kv.value().as_string()));
    }
  }

  if (app.contains("time_limit_s") && !app.at("time_limit_s").is_null()) {
    auto limit = protocol::get_number(app, "time_limit_s");
    if (!limit || !std::isfinite(*limit) || *limit < 0 || *limit > max_time_limit_s) {
      why = "app.time_limit_s: not a number between 0 and 1e9";
      return std::nullopt;
    }
    spec.time_limit_s = *limit;
  }

  if (app.contains("login_shell") && !app.at("login_shell").is_null()) {
    auto login = protocol::get_bool(app, "login_shell");
    if (!login) {
      why = "app.login_shell: not true or false";
      return std::nullopt;
    }
    spec.login_shell = *login;
  }

  if (app.contains("umask") && !app.at("umask").is_null()) {
    auto mask = protocol::get_int(app, "umask");
    if (!mask || *mask < 0 || *mask > 0777) {
      why = "app.umask: not an integer between 0 and 0777";
      return std::nullopt;
    }
    spec.umask = static_cast<int>(*mask);
  }
  if (app.contains("memory_max") && !app.at("memory_max").is_null()) {
    auto mem = protocol::get_int(app, "memory_max");
    if (!mem || *mem < 0) {
      why = "app.memory_max: not a non-negative integer (bytes)";
      return std::nullopt;
    }
    spec.memory_max = *mem;
  }
  if (app.contains("limit_cores") && !app.at("limit_cores").is_null()) {
    auto cores = protocol::get_int(app, "limit_cores");
    if (!cores || *cores < 0 || *cores > 4096) {
      why = "app.limit_cores: not an integer between 0 and 4096";
      return std::nullopt;
    }
    spec.cores = static_cast<int>(*cores);
  }

  if (body.contains("log_max") && !body.at("log_max").is_null()) {
    auto cap = protocol::get_int(body, "log_max");
    if (!cap || *cap < 0) {
      why = "log_max: not a non-negative integer (bytes)";
      return std::nullopt;
    }
    spec.log_max_bytes = static_cast<std::uintmax_t>(*cap);
  }
  if (body.contains("token") && !body.at("token").is_null()) {
    auto token = protocol::get_string(body, "token");
    if (!token || token->size() > 256 || has_nul(*token)) {
      why = "token: not a string of at most 256 bytes";
      return std::nullopt;
    }
    spec.token = *token;
  }

  spec.record = record_from_json(job);
  return spec;
}

std::vector<std::string> command_argv(const job_spec& spec) {
  if (!spec.login_shell) return spec.argv;
  // As DESCprod ran an app: `set >descprod-env.log` in the login shell (here with the job token's
  // value replaced), then the app. `exec "$0" "$@"` runs it with its arguments as bash received
  // them: as positional parameters, never parsed as shell text. The worker's PATH goes after the
  // login shell's own, so the app and the service's commands are found.
  std::vector<std::string> argv = {"bash", "-l", "-c", std::string(login_shell_script)};
  argv.insert(argv.end(), spec.argv.begin(), spec.argv.end());
  return argv;
}

}  // namespace descprod::workers
