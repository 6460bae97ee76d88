// Shared plumbing of the client commands: argument parsing, URL/token lookup, API calls and the
// mapping of HTTP answers to exit codes (the only place that decides them).
#include "client/common.hpp"
#include "client/terminal_text.hpp"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

namespace descprod::client {

// ---- command line ----------------------------------------------------------------------------

std::optional<std::string> parsed_args::value(const std::string& name) const {
  auto it = options.find(name);
  if (it == options.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

namespace {
std::string key_of(const option_spec& s) {
  return s.long_name.empty() ? std::string(1, s.short_name) : s.long_name;
}
}  // namespace

parsed_args parse_args(const std::vector<std::string>& args, const std::vector<option_spec>& specs) {
  parsed_args out;
  bool options_done = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (options_done || a.size() < 2 || a[0] != '-') {
      out.positional.push_back(a);
      continue;
    }
    if (a == "--") {
      options_done = true;
      continue;
    }
    if (a[1] == '-') {
      std::string name = a.substr(2);
      std::optional<std::string> inline_value;
      if (auto eq = name.find('='); eq != std::string::npos) {
        inline_value = name.substr(eq + 1);
        name = name.substr(0, eq);
      }
      const option_spec* spec = nullptr;
      for (const auto& s : specs)
        if (!s.long_name.empty() && s.long_name == name) spec = &s;
      if (!spec) throw usage_error("unknown option --" + name);
      if (spec->takes_value) {
        if (inline_value) {
          out.options[key_of(*spec)].push_back(*inline_value);
        } else {
          if (i + 1 >= args.size()) throw usage_error("option --" + name + " needs a value");
          out.options[key_of(*spec)].push_back(args[++i]);
        }
      } else {
        if (inline_value) throw usage_error("option --" + name + " takes no value");
        out.options[key_of(*spec)].emplace_back();
      }
      continue;
    }
    // One or more short options: "-w", "-wf", "-p 5", "-p5".
    for (std::size_t k = 1; k < a.size(); ++k) {
      const option_spec* spec = nullptr;
      for (const auto& s : specs)
        if (s.short_name == a[k]) spec = &s;
      if (!spec) throw usage_error(std::string("unknown option -") + a[k]);
      if (spec->takes_value) {
        if (k + 1 < a.size()) {
          out.options[key_of(*spec)].push_back(a.substr(k + 1));
        } else {
          if (i + 1 >= args.size()) throw usage_error(std::string("option -") + a[k] + " needs a value");
          out.options[key_of(*spec)].push_back(args[++i]);
        }
        break;
      }
      out.options[key_of(*spec)].emplace_back();
    }
  }
  return out;
}

long long parse_int(std::string_view text, long long lo, long long hi, std::string_view what) {
  std::string t(text);
  bool ok = !t.empty() && t.size() <= 19;
  std::size_t start = (!t.empty() && (t[0] == '-' || t[0] == '+')) ? 1 : 0;
  if (start == t.size()) ok = false;
  for (std::size_t i = start; ok && i < t.size(); ++i)
    if (t[i] < '0' || t[i] > '9') ok = false;
  long long v = 0;
  if (ok) {
    try {
      v = std::stoll(t);
    } catch (...) {
      ok = false;
    }
  }
  if (!ok || v < lo || v > hi)
    throw usage_error("invalid " + std::string(what) + ": '" + t + "' (expected an integer from " +
                      std::to_string(lo) + " to " + std::to_string(hi) + ")");
  return v;
}

long long parse_job_id(std::string_view text, std::string_view what) {
  std::string t(text);
  bool ok = !t.empty() && t.size() <= 18;
  for (char c : t)
    if (c < '0' || c > '9') ok = false;
  if (!ok || std::stoll(t) <= 0) throw usage_error("Invalid " + std::string(what) + ": " + t);
  return std::stoll(t);
}

// ---- URL and token ------------------------------------------------------------------------------

env_fn process_env() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

namespace {
std::optional<std::string> non_empty(const env_fn& env, const char* name) {
  auto v = env(name);
  if (!v || v->empty()) return std::nullopt;
  return v;
}

std::string trim(std::string s) {
  auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::optional<std::string> read_small_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

std::string config_dir(const env_fn& env) {
  if (auto x = non_empty(env, "XDG_CONFIG_HOME")) return *x + "/descprod";
  auto home = non_empty(env, "HOME");
  return (home ? *home : std::string(".")) + "/.config/descprod";
}

std::string resolve_url(const std::optional<std::string>& flag, const env_fn& env) {
  if (flag && !flag->empty()) return *flag;
  if (auto u = non_empty(env, "DESCPROD_URL")) return *u;
  if (auto stored = read_small_file(config_dir(env) + "/url")) {
    auto t = trim(*stored);
    if (!t.empty()) return t;
  }
  return default_url;
}

std::optional<std::string> resolve_token(const std::optional<std::string>& token_file, const env_fn& env) {
  if (token_file) {
    auto text = read_small_file(*token_file);
    if (!text) throw client_error(exit_code::bad_token, "cannot read token file " + *token_file);
    auto t = trim(*text);
    if (t.empty()) throw client_error(exit_code::bad_token, "token file " + *token_file + " is empty");
    return t;
  }
  if (auto t = non_empty(env, "DESCPROD_TOKEN")) return trim(*t);
  std::string path = config_dir(env) + "/token";
  if (auto text = read_small_file(path)) {
    auto t = trim(*text);
    if (!t.empty()) return t;
  }
  return std::nullopt;
}

std::vector<option_spec> server_options() {
  return {{'h', "help", false}, {0, "url", true}, {0, "token-file", true}};
}

// ---- API --------------------------------------------------------------------------------------

api_client::api_client(const std::string& url, std::optional<std::string> token,
                       std::chrono::milliseconds timeout)
    : token_(std::move(token)), timeout_(timeout) {
  std::string why;
  auto p = parse_url(url, &why);
  if (!p) throw usage_error("invalid server URL '" + url + "': " + why);
  url_ = *p;
  url_text_ = url_.text();
}

header_list api_client::auth_headers() const {
  header_list h;
  if (token_) h.emplace_back("Authorization", "Bearer " + *token_);
  return h;
}

api_reply api_client::call(std::string_view method, const std::string& path,
                           const boost::json::value* body) const {
  if (!token_)
    throw client_error(exit_code::bad_token,
                       "no token: set DESCPROD_TOKEN, use --token-file, or run descprod-login");
  std::string text = body ? boost::json::serialize(*body) : std::string();
  http_reply r;
  try {
    r = http_request(url_, method, path, text, auth_headers(), timeout_);
  } catch (const unreachable& e) {
    throw client_error(exit_code::unreachable, e.what());
  }
  api_reply out;
  out.status = r.status;
  out.raw = std::move(r.body);
  if (!out.raw.empty()) {
    boost::system::error_code ec;
    auto v = boost::json::parse(out.raw, ec);
    if (!ec) out.body = std::move(v);
  }
  return out;
}

boost::json::value api_client::call_ok(std::string_view method, const std::string& path,
                                       const boost::json::value* body) const {
  auto r = call(method, path, body);
  if (r.status < 200 || r.status > 299) throw error_for(r);
  return std::move(r.body);
}

std::string error_detail(const api_reply& r) {
  if (r.body.is_object()) {
    const auto& o = r.body.as_object();
    std::string detail = json_string(o, "detail");
    if (!detail.empty()) return detail;
    std::string err = json_string(o, "error");
    if (!err.empty()) return err;
  }
  std::string raw = r.raw.size() > 300 ? r.raw.substr(0, 300) + "..." : r.raw;
  return raw.empty() ? "no details" : raw;
}

client_error error_for(const api_reply& r) {
  std::string detail = error_detail(r);
  if (r.status == 401)
    return client_error(exit_code::bad_token, "the server refused the token (401): " + detail +
                                                  " (run descprod-login or set DESCPROD_TOKEN)");
  if (r.status == 403)
    return client_error(exit_code::bad_token, "not allowed with this token (403): " + detail);
  if (r.status == 404) return client_error(exit_code::server_error, detail);
  return client_error(exit_code::server_error,
                      "Server returned HTTP error " + std::to_string(r.status) + ": " + detail);
}

// ---- output ---------------------------------------------------------------------------------------

void print_error(std::string_view command, std::string_view message) {
  std::cout.flush();
  // The message often carries the server's reason (error_detail): never raw controls.
  std::cerr << command << ": ERROR: " << terminal_safe(message) << std::endl;
}

int guarded(std::string_view command, const std::function<int()>& body) {
  try {
    return body();
  } catch (const client_error& e) {
    print_error(command, e.what());
    if (e.code == exit_code::usage) std::cerr << "Run '" << command << " -h' for help.\n";
    return e.code;
  } catch (const std::exception& e) {
    print_error(command, e.what());
    return exit_code::server_error;
  }
}

std::string program_name(const char* argv0, std::string_view fallback) {
  if (!argv0 || !*argv0) return std::string(fallback);
  std::string s(argv0);
  auto slash = s.rfind('/');
  return slash == std::string::npos ? s : s.substr(slash + 1);
}

std::vector<std::string> arguments(int argc, char** argv) {
  std::vector<std::string> out;
  for (int i = 1; i < argc; ++i) out.emplace_back(argv[i]);
  return out;
}

std::optional<long long> json_int(const boost::json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end()) return std::nullopt;
  const auto& v = it->value();
  if (v.is_int64()) return v.as_int64();
  if (v.is_uint64()) return static_cast<long long>(v.as_uint64());
  if (v.is_double()) return static_cast<long long>(v.as_double());
  if (v.is_string()) {
    try {
      std::size_t used = 0;
      std::string s(v.as_string());
      long long n = std::stoll(s, &used);
      if (used == s.size()) return n;
    } catch (...) {
    }
  }
  return std::nullopt;
}

std::optional<double> json_number(const boost::json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end()) return std::nullopt;
  return json_value_number(it->value());
}

std::optional<double> json_value_number(const boost::json::value& v) {
  if (v.is_double()) return v.as_double();
  if (v.is_int64()) return static_cast<double>(v.as_int64());
  if (v.is_uint64()) return static_cast<double>(v.as_uint64());
  if (v.is_string()) {
    try {
      std::size_t used = 0;
      std::string s(v.as_string());
      double d = std::stod(s, &used);
      if (used == s.size()) return d;
    } catch (...) {
    }
  }
  return std::nullopt;
}

std::string json_string(const boost::json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end()) return "";
  const auto& v = it->value();
  if (v.is_string()) return std::string(v.as_string());
  if (v.is_null()) return "";
  return boost::json::serialize(v);
}

std::string output_base_dir(const env_fn& env) {
  auto get = [&](const char* n) {
    auto v = env(n);
    return v ? *v : std::string();
  };
  std::string dir = get("DESCPROD_OUTPUT_DIR");
  if (!dir.empty()) return dir;
  for (const char* n : {"PSCRATCH", "SCRATCH", "HOME"}) {
    std::string v = get(n);
    if (!v.empty()) return v + "/descprod-out";
  }
  return "./descprod-out";
}

}  // namespace descprod::client
