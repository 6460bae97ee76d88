// What every command shares: exit codes, the error type that carries one, the command line
// parser, where the server URL and the token come from, and calls to the gateway's JSON API with
// its answers mapped to exit codes in one place.
//
// Exit codes (docs/client.md): 0 ok, 1 an error from the server or an unknown job, 2 a usage
// error, 3 the server cannot be reached, 4 a bad or missing token (HTTP 401/403).
// Thread-safety: api_client holds only values; calls on one object from several threads are
// safe (each call opens its own connection).
#pragma once

#include <boost/json.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "client/http.hpp"

namespace descprod::client {

namespace exit_code {
inline constexpr int ok = 0;
inline constexpr int server_error = 1;
inline constexpr int usage = 2;
inline constexpr int unreachable = 3;
inline constexpr int bad_token = 4;
}  // namespace exit_code

// A failure to report on stderr and leave with `code`.
struct client_error : std::runtime_error {
  client_error(int c, const std::string& what) : std::runtime_error(what), code(c) {}
  int code;
};

inline client_error usage_error(const std::string& what) { return client_error(exit_code::usage, what); }

// ---- command line ----------------------------------------------------------------------------

struct option_spec {
  char short_name = 0;    // 0: none
  std::string long_name;  // without "--"; empty: none
  bool takes_value = false;
};

// Options by their long name (or the short letter when there is none) → values in order; flags
// get an empty value per occurrence.
struct parsed_args {
  std::map<std::string, std::vector<std::string>> options;
  std::vector<std::string> positional;

  bool has(const std::string& name) const { return options.count(name) > 0; }
  // The last value given, or nullopt.
  std::optional<std::string> value(const std::string& name) const;
};

// "-x V", "--long V", "--long=V"; short flags may be grouped ("-wf"); "--" ends the options; a lone
// "-" is positional. Options may come before, between or after positionals. Throws usage_error for
// unknown options and missing values.
parsed_args parse_args(const std::vector<std::string>& args, const std::vector<option_spec>& specs);

// A positive job ID (1–18 digits); usage_error naming `what` otherwise.
long long parse_job_id(std::string_view text, std::string_view what = "job ID");
// An integer within [lo, hi]; usage_error naming `what` otherwise.
long long parse_int(std::string_view text, long long lo, long long hi, std::string_view what);

// ---- where the server and the token come from ---------------------------------------------------

// How getenv is reached (tests pass their own).
using env_fn = std::function<std::optional<std::string>(const std::string&)>;
env_fn process_env();

// ${XDG_CONFIG_HOME:-$HOME/.config}/descprod: where descprod-login keeps `token` and `url`.
std::string config_dir(const env_fn& env);

inline constexpr const char* default_url = "http://127.0.0.1:8080";

// --url, else $DESCPROD_URL, else the URL descprod-login stored, else default_url.
std::string resolve_url(const std::optional<std::string>& flag, const env_fn& env);
// --token-file, else $DESCPROD_TOKEN, else the token file descprod-login wrote. nullopt when none
// is found; client_error(4) when --token-file cannot be read.
std::optional<std::string> resolve_token(const std::optional<std::string>& token_file, const env_fn& env);

// The common options of every command that talks to the server.
std::vector<option_spec> server_options();

// ---- the gateway's API --------------------------------------------------------------------------

struct api_reply {
  int status = 0;
  boost::json::value body;  // null when the body is not JSON
  std::string raw;
};

class api_client {
 public:
  // Throws usage_error for a malformed URL.
  api_client(const std::string& url, std::optional<std::string> token,
             std::chrono::milliseconds timeout = std::chrono::seconds(30));

  const url_parts& url() const { return url_; }
  const std::string& url_text() const { return url_text_; }
  bool has_token() const { return token_.has_value(); }
  const std::optional<std::string>& token() const { return token_; }

  // One request; any HTTP status is returned. Throws client_error(3) when unreachable and
  // client_error(4) when there is no token.
  api_reply call(std::string_view method, const std::string& path,
                 const boost::json::value* body = nullptr) const;
  // The same, expecting 2xx: other statuses become client_error via error_for().
  boost::json::value call_ok(std::string_view method, const std::string& path,
                             const boost::json::value* body = nullptr) const;
  // The bearer header for a stream opened by the caller.
  header_list auth_headers() const;

 private:
  url_parts url_;
  std::string url_text_;
  std::optional<std::string> token_;
  std::chrono::milliseconds timeout_;
};

// The error for a non-2xx answer: 401/403 → 4, anything else → 1, with the gateway's
// {"error","detail"} in the message.
client_error error_for(const api_reply& r);
// The gateway's detail (or the raw body) of an error answer.
std::string error_detail(const api_reply& r);

// ---- output helpers -----------------------------------------------------------------------------

// "<command>: ERROR: <message>" on stderr.
void print_error(std::string_view command, std::string_view message);
// Runs a command body, turning client_error and other exceptions into the message and exit code.
int guarded(std::string_view command, const std::function<int()>& body);

// The program name of argv[0] (its basename).
std::string program_name(const char* argv0, std::string_view fallback);
std::vector<std::string> arguments(int argc, char** argv);

// JSON field helpers that tolerate absence and type differences.
std::optional<long long> json_int(const boost::json::object& o, std::string_view key);
// A JSON number, or a string holding exactly one number; nullopt otherwise.
std::optional<double> json_value_number(const boost::json::value& v);
std::optional<double> json_number(const boost::json::object& o, std::string_view key);
std::string json_string(const boost::json::object& o, std::string_view key);

// DESCprod's base output directory rule (descprod-output-dir, and where descprod-start-job puts run
// directories): $DESCPROD_OUTPUT_DIR, else ${PSCRATCH:-${SCRATCH:-${HOME:-.}}}/descprod-out. Empty
// variables count as unset, as bash's ${X:-...} does.
std::string output_base_dir(const env_fn& env);

}  // namespace descprod::client
