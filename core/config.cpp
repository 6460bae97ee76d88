// YAML configuration loading with precise errors. A `section` walks one mapping: each known key is
// read into its typed field, and whatever key is left over is an error naming its line.
#include "core/config.hpp"

#include "core/job.hpp"

#include <yaml-cpp/yaml.h>

#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

namespace descprod {

std::vector<std::string> endpoint_list(std::string_view endpoints) {
  std::vector<std::string> out;
  std::size_t from = 0;
  while (from <= endpoints.size()) {
    auto comma = endpoints.find(',', from);
    if (comma == std::string_view::npos) comma = endpoints.size();
    auto one = endpoints.substr(from, comma - from);
    while (!one.empty() && one.front() == ' ') one.remove_prefix(1);
    while (!one.empty() && one.back() == ' ') one.remove_suffix(1);
    if (!one.empty()) out.emplace_back(one);
    from = comma + 1;
  }
  return out;
}

namespace {

std::string where(const std::string& file, const YAML::Mark& m) {
  return file + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

class section {
 public:
  section(const YAML::Node& node, std::string file, std::string path)
      : node_(node), file_(std::move(file)), path_(std::move(path)) {
    if (node_ && !node_.IsNull() && !node_.IsMap())
      throw config_error(where(file_, node_.Mark()) + ": " + path_ + ": expected a mapping");
  }

  template <class T>
  void read(const std::string& key, T& out) {
    auto v = take(key);
    if (v) out = convert<T>(v, key);
  }
  void read_ms(const std::string& key, std::chrono::milliseconds& out) {
    auto v = take(key);
    if (!v) return;
    long long n = convert<long long>(v, key);
    if (n < 0) fail(v, key, "must not be negative");
    out = std::chrono::milliseconds(n);
  }
  template <class T>
  void read_range(const std::string& key, T& out, T lo, T hi) {
    auto v = take(key);
    if (!v) return;
    T x = convert<T>(v, key);
    if (x < lo || x > hi)
      fail(v, key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    out = x;
  }
  // The key's value, or an undefined (false) node when it is absent or null. (A default-constructed
  // YAML::Node is a defined null, which would make every absent key look present.)
  YAML::Node take(const std::string& key) {
    seen_.insert(key);
    if (!node_ || !node_.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    const YAML::Node& map = node_;  // const lookup: never inserts the key
    auto v = map[key];
    if (!v || v.IsNull()) return YAML::Node(YAML::NodeType::Undefined);
    return v;
  }
  void finish() {
    if (!node_ || !node_.IsMap()) return;
    for (const auto& kv : node_) {
      auto k = kv.first.as<std::string>();
      if (!seen_.count(k))
        throw config_error(where(file_, kv.first.Mark()) + ": " + qualified(k) + ": unknown key");
    }
  }
  // Two keys that make sense only together (a certificate and its key): reads both and fails,
  // naming the one given, when only one of them is.
  void read_pair(const std::string& a, std::string& va, const std::string& b, std::string& vb) {
    read(a, va);
    read(b, vb);
    if (va.empty() == vb.empty()) return;
    const std::string& given = va.empty() ? b : a;
    fail(take(given), given, a + " and " + b + " go together");
  }
  [[noreturn]] void fail(const YAML::Node& v, const std::string& key, const std::string& why) {
    throw config_error(where(file_, v.Mark()) + ": " + qualified(key) + ": " + why);
  }
  std::string qualified(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  const std::string& file() const { return file_; }

  template <class T>
  T convert(const YAML::Node& v, const std::string& key) {
    if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      if (!v.IsSequence()) fail(v, key, "expected a list of strings");
      std::vector<std::string> out;
      for (const auto& e : v) {
        if (!e.IsScalar()) fail(e, key, "expected a string");
        out.push_back(e.as<std::string>());
      }
      return out;
    } else if constexpr (std::is_same_v<T, std::map<std::string, std::string>>) {
      if (!v.IsMap()) fail(v, key, "expected a mapping of strings");
      std::map<std::string, std::string> out;
      for (const auto& kv : v) {
        if (!kv.second.IsScalar()) fail(kv.second, key, "expected a string");
        out[kv.first.as<std::string>()] = kv.second.as<std::string>();
      }
      return out;
    } else {
      if (!v.IsScalar()) fail(v, key, std::string("expected ") + type_name<T>());
      try {
        return v.as<T>();
      } catch (const YAML::Exception&) {
        fail(v, key, std::string("expected ") + type_name<T>());
      }
    }
  }

 private:
  template <class T>
  static const char* type_name() {
    if constexpr (std::is_same_v<T, bool>) return "true or false";
    else if constexpr (std::is_integral_v<T>) return "an integer";
    else if constexpr (std::is_floating_point_v<T>) return "a number";
    else return "a string";
  }
  YAML::Node node_;
  std::string file_;
  std::string path_;
  std::set<std::string> seen_;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw config_error(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

YAML::Node parse_yaml(const std::string& text, const std::string& file) {
  try {
    return YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw config_error(where(file, e.mark) + ": " + e.msg);
  }
}

void check_endpoint(section& s, const YAML::Node& v, const std::string& key, const std::string& ep,
                    bool list = false) {
  auto parts = list ? endpoint_list(ep) : std::vector<std::string>{ep};
  if (parts.empty()) s.fail(v, key, "expected a ZeroMQ endpoint (tcp://, ipc:// or inproc://)");
  if (!list && ep.find(',') != std::string::npos)
    s.fail(v, key, "expected one ZeroMQ endpoint: the daemon binds one of each kind");
  for (const auto& one : parts)
    if (one.rfind("tcp://", 0) != 0 && one.rfind("ipc://", 0) != 0 && one.rfind("inproc://", 0) != 0)
      s.fail(
          v, key,
          list ? "expected ZeroMQ endpoints (tcp://, ipc:// or inproc://), separated by commas: '" + one + "'"
               : std::string("expected a ZeroMQ endpoint (tcp://, ipc:// or inproc://)"));
}

}  // namespace

// One pilots: mapping (a site's pilots; docs/slurm.md, Configuration keys).
void read_pilots(section& s, pilots_config& p) {
  s.read("enabled", p.enabled);
  if (auto v = s.take("site")) {
    s.read("site", p.site);
    if (!valid_site_name(p.site)) s.fail(v, "site", "expected 1 to 32 of a-z, 0-9, '-', '_'");
  }
  s.read_range("min", p.min, 0, 10000);
  s.read_range("max", p.max, 0, 10000);
  s.read_range("nodes", p.nodes, 1, 100000);
  s.read_range("slots_per_pilot", p.slots_per_pilot, 1, 100000000);
  s.read_range("walltime_minutes", p.walltime_minutes, 1, 525600);
  s.read("partition", p.partition);
  s.read("account", p.account);
  s.read("qos", p.qos);
  s.read("constraint", p.constraint);
  s.read_range("pinned_max", p.pinned_max, 0, 10000);
  s.read_range("pinned_idle_timeout_s", p.pinned_idle_timeout_s, 1.0, 1e7);
  s.read("pinned_qos", p.pinned_qos);
  s.read("pinned_constraints", p.pinned_constraints);
  s.read("job_name", p.job_name);
  s.read_range("signal_lead_s", p.signal_lead_s, 0, 65535);
  s.read_range("idle_timeout_s", p.idle_timeout_s, 0.0, 1e7);
  s.read("script", p.script);
  s.read("worker_config", p.worker_config);
  s.read("worker_binary", p.worker_binary);
  s.read("log_dir", p.log_dir);
  s.read("extra_args", p.extra_args);
  s.read("sbatch", p.sbatch);
  s.read("squeue", p.squeue);
  s.read("scancel", p.scancel);
  s.read_ms("check_interval_ms", p.check_interval);
  s.read_ms("squeue_interval_ms", p.squeue_interval);
  s.read_ms("command_timeout_ms", p.command_timeout);
  s.read_ms("backoff_min_ms", p.backoff_min);
  s.read_ms("backoff_max_ms", p.backoff_max);
  if (auto v = s.take("min"); v && p.min > p.max) s.fail(v, "min", "must not exceed max");
  if (auto v = s.take("max"); v && p.min > p.max) s.fail(v, "max", "must not be below min");
  if (auto v = s.take("job_name");
      v && (p.job_name.empty() || p.job_name.find_first_of(" \t\n,") != std::string::npos))
    s.fail(v, "job_name", "expected a name without spaces or commas");
  for (const char* k : {"check_interval_ms", "squeue_interval_ms", "command_timeout_ms", "backoff_min_ms"})
    if (auto v = s.take(k); v && v.as<long long>() < 10) s.fail(v, k, "must be at least 10");
  if (p.backoff_max < p.backoff_min) {
    if (auto v = s.take("backoff_max_ms")) s.fail(v, "backoff_max_ms", "must not be below backoff_min_ms");
    p.backoff_max = p.backoff_min;
  }
  s.finish();
}

namespace {

// An issuer or redirect URI: https://, or http:// on a loopback host, with no spaces, control
// characters or fragment.
bool oidc_url_ok(const std::string& url) {
  for (unsigned char ch : url)
    if (ch <= 0x20 || ch == 0x7f || ch == '#') return false;
  if (url.rfind("https://", 0) == 0) return url.size() > 8;
  return is_loopback_http_url(url);
}

// gateway.oidc: a list of providers (oidc_provider_config). A relative client_secret_file is
// read from the config file's directory.
void read_oidc_providers(const YAML::Node& node, const std::string& file, gateway_config& g) {
  if (!node) return;
  if (!node.IsSequence())
    throw config_error(where(file, node.Mark()) + ": gateway.oidc: expected a list of providers");
  std::set<std::string> names;
  for (std::size_t i = 0; i < node.size(); ++i) {
    const std::string path = "gateway.oidc[" + std::to_string(i) + "]";
    section s(node[i], file, path);
    oidc_provider_config p;
    s.read("name", p.name);
    if (p.name.empty() && node.size() == 1) p.name = "oidc";
    if (!valid_oidc_provider_name(p.name))
      s.fail(s.take("name") ? s.take("name") : node[i], "name",
             "required with several providers: 1 to 32 of a-z, 0-9, '_', '-' (not 'callback')");
    if (!names.insert(p.name).second) s.fail(s.take("name"), "name", "'" + p.name + "' is listed twice");
    s.read("issuer", p.issuer);
    while (!p.issuer.empty() && p.issuer.back() == '/') p.issuer.pop_back();
    if (!oidc_url_ok(p.issuer))
      s.fail(s.take("issuer") ? s.take("issuer") : node[i], "issuer",
             "required: an https:// URL (http:// only on 127.0.0.1, [::1] or localhost)");
    s.read("client_id", p.client_id);
    if (p.client_id.empty() || p.client_id.size() > 256)
      s.fail(s.take("client_id") ? s.take("client_id") : node[i], "client_id", "required, at most 256 bytes");
    std::string secret_file;
    s.read("client_secret_file", secret_file);
    if (auto v = s.take("client_secret_file")) {
      std::filesystem::path sp(secret_file);
      if (sp.is_relative()) sp = std::filesystem::path(file).parent_path() / sp;
      std::ifstream in(sp);
      std::string line;
      if (!in || !std::getline(in, line)) s.fail(v, "client_secret_file", "cannot read " + sp.string());
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (line.empty()) s.fail(v, "client_secret_file", sp.string() + " is empty");
      p.client_secret = line;
    } else {
      s.fail(node[i], "client_secret_file", "required (a file holding the client secret)");
    }
    s.read("token_auth", p.token_auth);
    if (auto v = s.take("token_auth");
        v && p.token_auth != "client_secret_basic" && p.token_auth != "client_secret_post")
      s.fail(v, "token_auth", "expected client_secret_basic or client_secret_post");
    s.read("scopes", p.scopes);
    if (std::find(p.scopes.begin(), p.scopes.end(), "openid") == p.scopes.end())
      s.fail(s.take("scopes"), "scopes", "must hold openid");
    for (const auto& sc : p.scopes)
      if (sc.empty() || sc.find_first_of(" \"\\") != std::string::npos || sc.size() > 64)
        s.fail(s.take("scopes"), "scopes", "'" + sc + "' is not a scope");
    s.read("username_claim", p.username_claim);
    if (p.username_claim.empty() || p.username_claim.size() > 64)
      s.fail(s.take("username_claim"), "username_claim", "expected a claim name");
    s.read("button_label", p.button_label);
    if (p.button_label.size() > 64) s.fail(s.take("button_label"), "button_label", "at most 64 bytes");
    for (unsigned char ch : p.button_label)
      if (ch < 0x20 || ch == 0x7f) s.fail(s.take("button_label"), "button_label", "no control characters");
    if (p.button_label.empty()) p.button_label = "Log in with " + p.name;
    s.read("allowed_email_domains", p.allowed_email_domains);
    for (auto& d : p.allowed_email_domains) {
      for (auto& ch : d) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (d.empty() || d.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789.-") != std::string::npos)
        s.fail(s.take("allowed_email_domains"), "allowed_email_domains", "'" + d + "' is not a domain name");
    }
    s.read("auto_approve", p.auto_approve);
    s.read("redirect_uri", p.redirect_uri);
    if (auto v = s.take("redirect_uri"); v && !oidc_url_ok(p.redirect_uri))
      s.fail(v, "redirect_uri", "expected an https:// URL (http:// only on a loopback host)");
    bool loopback = g.address == "127.0.0.1" || g.address == "::1" || g.address == "localhost";
    if (p.redirect_uri.empty() && g.public_url.empty() && !loopback)
      s.fail(node[i], "redirect_uri",
             "required when the gateway listens beyond loopback without gateway.public_url "
             "(the provider sends browsers back to it)");
    s.finish();
    g.oidc.push_back(std::move(p));
  }
  if (g.oidc.size() > 16) throw config_error(file + ": gateway.oidc: at most 16 providers");
}
}  // namespace

bool is_loopback_name(std::string_view host) {
  if (host == "localhost") return true;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(std::string(host), ec);
  return !ec && address.is_loopback();
}

bool is_loopback_http_url(std::string_view url) {
  if (url.substr(0, 7) != "http://") return false;
  std::string_view authority = url.substr(7, url.substr(7).find_first_of("/?#"));
  if (authority.find('@') != std::string_view::npos) return false;
  std::string_view host = authority;
  auto colon = authority.rfind(':');
  if (colon != std::string_view::npos && authority.find(']', colon) == std::string_view::npos) {
    std::string_view port = authority.substr(colon + 1);
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos)
      return false;
    host = authority.substr(0, colon);
  }
  return is_loopback_name(host);
}

bool valid_oidc_provider_name(std::string_view n) {
  if (n.empty() || n.size() > 32 || n == "callback") return false;
  if (!((n[0] >= 'a' && n[0] <= 'z') || (n[0] >= '0' && n[0] <= '9'))) return false;
  return n.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") == std::string_view::npos;
}

namespace {
// <key>_file: the password from the first line of a file (trailing blanks and CR dropped), for
// a password kept out of the configuration; excludes <key> itself.
void read_password_file(section& s, const std::string& key, std::string& password) {
  const std::string file_key = key + "_file";
  std::string file;
  s.read(file_key, file);
  auto v = s.take(file_key);
  if (!v || file.empty()) return;
  if (!password.empty()) s.fail(v, file_key, key + " and " + file_key + " exclude each other");
  std::ifstream in(file);
  std::string line;
  if (!in || !std::getline(in, line)) s.fail(v, file_key, "cannot read " + file);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  password = line;
}

// redis.sentinels, master_name, sentinel_username/sentinel_password, wait_replicas and
// wait_timeout_ms (docs/operators.md, "Redis behind Sentinel").
void read_sentinels(section& s, redis_config& r) {
  std::vector<std::string> sentinels;
  s.read("sentinels", sentinels);
  auto v = s.take("sentinels");
  if (v && sentinels.size() > 16) s.fail(v, "sentinels", "at most 16 sentinels");
  for (const auto& entry : sentinels) {
    auto colon = entry.rfind(':');
    int port = 0;
    if (colon != std::string::npos && colon > 0 && colon + 1 < entry.size() && colon + 6 >= entry.size() &&
        entry.find_first_not_of("0123456789", colon + 1) == std::string::npos)
      port = std::stoi(entry.substr(colon + 1));
    if (port < 1 || port > 65535)
      s.fail(v, "sentinels", "'" + entry + "' is not host:port (a sentinel's address, port 1 to 65535)");
    r.endpoint.sentinels.push_back({entry.substr(0, colon), static_cast<std::uint16_t>(port)});
  }
  s.read("master_name", r.endpoint.master_name);
  auto name = s.take("master_name");
  if (!sentinels.empty() && r.endpoint.master_name.empty())
    s.fail(v, "sentinels", "master_name is needed with sentinels (the name the sentinels monitor)");
  if (name && sentinels.empty()) s.fail(name, "master_name", "goes with sentinels");
  if (name && (r.endpoint.master_name.size() > 64 ||
               r.endpoint.master_name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                        "0123456789._-") != std::string::npos))
    s.fail(name, "master_name", "1 to 64 of a-z, A-Z, 0-9, '.', '_', '-'");
  for (const char* key : {"path", "host", "port"})
    if (!sentinels.empty() && s.take(key))
      s.fail(s.take(key), key,
             std::string(key) + " and sentinels exclude each other (the sentinels name the master)");
  s.read("sentinel_username", r.endpoint.sentinel_username);
  s.read("sentinel_password", r.endpoint.sentinel_password);
  read_password_file(s, "sentinel_password", r.endpoint.sentinel_password);
  // Replicas that must hold a create or a transition before it is answered: 1 behind sentinels.
  r.wait_replicas = sentinels.empty() ? 0 : 1;
  s.read_range("wait_replicas", r.wait_replicas, 0, 16);
  s.read_range("wait_timeout_ms", r.wait_timeout_ms, 1, 60000);
}
}  // namespace

descprod_config parse_config(const std::string& text, const std::string& file) {
  descprod_config c;
  c.file = file;
  auto root = parse_yaml(text, file);
  section top(root, file, "");
  top.read("log_level", c.log_level);
  {
    static const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error", "off"};
    auto v = top.take("log_level");
    if (v && !levels.count(c.log_level))
      top.fail(v, "log_level", "expected trace, debug, info, warn, error or off");
  }
  top.read("apps", c.apps_file);
  {
    section s(top.take("redis"), file, "redis");
    s.read("path", c.redis.endpoint.unix_path);
    s.read("host", c.redis.endpoint.host);
    int port = c.redis.endpoint.port;
    s.read_range("port", port, 1, 65535);
    c.redis.endpoint.port = static_cast<std::uint16_t>(port);
    s.read("username", c.redis.endpoint.username);
    s.read("password", c.redis.endpoint.password);
    read_password_file(s, "password", c.redis.endpoint.password);
    s.read("prefix", c.redis.prefix);
    read_sentinels(s, c.redis);
    s.finish();
  }
  {
    section s(top.take("gateway"), file, "gateway");
    s.read("address", c.gateway.address);
    s.read_range("port", c.gateway.port, 0, 65535);
    s.read("daemon_endpoint", c.gateway.daemon_endpoint);
    if (auto v = s.take("daemon_endpoint"))
      check_endpoint(s, v, "daemon_endpoint", c.gateway.daemon_endpoint, true);
    s.read_range<std::size_t>("max_body_bytes", c.gateway.max_body_bytes, 1024, std::size_t(1) << 34);
    s.read_range<std::size_t>("max_bulk_jobs", c.gateway.max_bulk_jobs, 1, 10000000);
    if (auto v = s.take("sites")) {
      s.read("sites", c.gateway.sites);
      if (c.gateway.sites.size() > 64) s.fail(v, "sites", "at most 64 sites");
      for (const auto& site : c.gateway.sites)
        if (!valid_site_name(site))
          s.fail(v, "sites", "'" + site + "' is not a site name (1 to 32 of a-z, 0-9, '-', '_')");
    }
    s.read_ms("idle_timeout_ms", c.gateway.idle_timeout);
    s.read("public_url", c.gateway.public_url);
    if (auto v = s.take("public_url");
        v && c.gateway.public_url.rfind("http://", 0) != 0 && c.gateway.public_url.rfind("https://", 0) != 0)
      s.fail(v, "public_url", "expected an http:// or https:// URL");
    s.read_pair("tls_cert", c.gateway.tls_cert, "tls_key", c.gateway.tls_key);
    {
      long long ttl = c.gateway.session_ttl.count();
      s.read_range<long long>("session_ttl_s", ttl, 60, 90LL * 24 * 3600);
      c.gateway.session_ttl = std::chrono::seconds(ttl);
    }
    s.read_range<unsigned long long>("password_opslimit", c.gateway.password_opslimit, 1, 100);
    s.read_range<std::size_t>("password_memlimit_kib", c.gateway.password_memlimit_kib, 8,
                              std::size_t(4) << 20);
    s.read_range<std::size_t>("max_connections", c.gateway.max_connections, 16, 1000000);
    s.read_range<std::size_t>("max_connections_per_address", c.gateway.max_connections_per_address, 1,
                              1000000);
    s.read_range<std::size_t>("max_event_streams", c.gateway.max_event_streams, 1, 1000000);
    s.read_range<std::size_t>("max_event_streams_per_user", c.gateway.max_event_streams_per_user, 1, 1000000);
    if (c.gateway.max_event_streams >= c.gateway.max_connections) {
      // Only the default: half of the connections. A value given is an error.
      if (auto v = s.take("max_event_streams"))
        s.fail(v, "max_event_streams", "must be below max_connections (short requests need the rest)");
      c.gateway.max_event_streams = c.gateway.max_connections / 2;
    }
    s.read_ms("busy_header_timeout_ms", c.gateway.busy_header_timeout);
    s.read_range<std::size_t>("login_free_failures", c.gateway.login_free_failures, 1, 1000);
    s.read_range<std::size_t>("login_address_free_failures", c.gateway.login_address_free_failures, 1,
                              100000);
    s.read_ms("login_backoff_initial_ms", c.gateway.login_backoff_initial);
    s.read_ms("login_backoff_max_ms", c.gateway.login_backoff_max);
    {
      long long w = c.gateway.login_failure_window.count();
      s.read_range<long long>("login_failure_window_s", w, 1, 7LL * 24 * 3600);
      c.gateway.login_failure_window = std::chrono::seconds(w);
    }
    s.read_range<std::size_t>("password_hash_queue", c.gateway.password_hash_queue, 0, 10000);
    s.read_range<std::size_t>("password_hashes_per_address", c.gateway.password_hashes_per_address, 1, 10000);
    s.read_range<std::size_t>("register_per_address", c.gateway.register_per_address, 1, 1000000);
    {
      long long w = c.gateway.register_window.count();
      s.read_range<long long>("register_window_s", w, 1, 7LL * 24 * 3600);
      c.gateway.register_window = std::chrono::seconds(w);
    }
    read_oidc_providers(s.take("oidc"), file, c.gateway);
    s.finish();
  }
  {
    section s(top.take("daemon"), file, "daemon");
    s.read("worker_endpoint", c.daemon.worker_endpoint);
    if (auto v = s.take("worker_endpoint")) check_endpoint(s, v, "worker_endpoint", c.daemon.worker_endpoint);
    s.read("gateway_endpoint", c.daemon.gateway_endpoint);
    if (auto v = s.take("gateway_endpoint"))
      check_endpoint(s, v, "gateway_endpoint", c.daemon.gateway_endpoint);
    s.read_ms("heartbeat_interval_ms", c.daemon.heartbeat_interval);
    s.read_ms("lease_timeout_ms", c.daemon.lease_timeout);
    s.read_ms("reconcile_interval_ms", c.daemon.reconcile_interval);
    s.read_ms("leader_ttl_ms", c.daemon.leader_ttl);
    if (auto v = s.take("leader_ttl_ms");
        v && (c.daemon.leader_ttl.count() < 300 || c.daemon.leader_ttl.count() > 600000))
      s.fail(v, "leader_ttl_ms", "must be in [300, 600000]");
    s.read("leader_file", c.daemon.leader_file);
    s.read_ms("stop_deadline_ms", c.daemon.stop_deadline);
    {
      long long every = c.daemon.stats_interval.count();
      s.read_range<long long>("stats_interval_s", every, 1, 3600);
      c.daemon.stats_interval = std::chrono::seconds(every);
    }
    if (auto v = s.take("heartbeat_interval_ms"); v && c.daemon.heartbeat_interval.count() < 10)
      s.fail(v, "heartbeat_interval_ms", "must be at least 10");
    if (c.daemon.lease_timeout <= c.daemon.heartbeat_interval) {
      // Name the lease timeout when the file sets it, else the heartbeat that outgrew the default.
      if (auto v = s.take("lease_timeout_ms"))
        s.fail(v, "lease_timeout_ms", "must be longer than heartbeat_interval_ms");
      s.fail(s.take("heartbeat_interval_ms"), "heartbeat_interval_ms",
             "must be shorter than lease_timeout_ms");
    }
    s.read_range<long long>("job_log_max_bytes", c.daemon.job_log_max_bytes, 4096, 1LL << 30);
    s.read("worker_auth", c.daemon.worker_auth);
    if (auto v = s.take("worker_auth");
        v && c.daemon.worker_auth != "token" && c.daemon.worker_auth != "open")
      s.fail(v, "worker_auth", "expected token or open");
    s.read("dispatch_policy", c.daemon.dispatch_policy);
    if (auto v = s.take("dispatch_policy");
        v && c.daemon.dispatch_policy != "fair_share" && c.daemon.dispatch_policy != "fifo")
      s.fail(v, "dispatch_policy", "expected fair_share or fifo");
    s.read_pair("curve_secret_key_file", c.daemon.curve_secret_key_file, "curve_authorized_keys_dir",
                c.daemon.curve_authorized_keys_dir);
    s.finish();
  }
  {
    section s(top.take("worker"), file, "worker");
    s.read("daemon_endpoint", c.worker.daemon_endpoint);
    if (auto v = s.take("daemon_endpoint"))
      check_endpoint(s, v, "daemon_endpoint", c.worker.daemon_endpoint, true);
    s.read_range("slots", c.worker.slots, 0, 4096);
    s.read_range("prefetch", c.worker.prefetch, 0, 4096);
    s.read("output_dir", c.worker.output_dir);
    s.read("owner", c.worker.owner);
    s.read("pool", c.worker.pool);
    if (auto v = s.take("site")) {
      s.read("site", c.worker.site);
      if (!valid_site_name(c.worker.site)) s.fail(v, "site", "expected 1 to 32 of a-z, 0-9, '-', '_'");
    }
    s.read("id", c.worker.id);
    s.read("gateway_url", c.worker.gateway_url);
    s.read_ms("status_poll_ms", c.worker.status_poll);
    s.read_range("drain_grace_s", c.worker.drain_grace_s, 0.0, 86400.0);
    s.read_range("kill_grace_s", c.worker.kill_grace_s, 0.0, 3600.0);
    s.read_range("idle_timeout_s", c.worker.idle_timeout_s, 0.0, 1e7);
    s.read_range("walltime_margin_s", c.worker.walltime_margin_s, 0.0, 86400.0);
    s.read("token_file", c.worker.token_file);
    s.read("containment", c.worker.containment);
    if (auto v = s.take("containment"); v && c.worker.containment != "auto" &&
                                        c.worker.containment != "cgroup" &&
                                        c.worker.containment != "subreaper")
      s.fail(v, "containment", "expected auto, cgroup or subreaper");
    s.read_pair("curve_server_key_file", c.worker.curve_server_key_file, "curve_secret_key_file",
                c.worker.curve_secret_key_file);
    s.finish();
  }
  {
    // pilots: one mapping, or a list of them: the pilots of several sites, one each.
    auto node = top.take("pilots");
    if (node && node.IsSequence()) {
      std::set<std::string> sites, names;
      for (std::size_t i = 0; i < node.size(); ++i) {
        const std::string path = "pilots[" + std::to_string(i) + "]";
        section s(node[i], file, path);
        pilots_config p;
        read_pilots(s, p);
        if (node.size() > 1 && p.site.empty())
          throw config_error(where(file, node[i].Mark()) + ": " + path +
                             ": site: required when there are pilots for several sites");
        if (!sites.insert(p.site).second)
          throw config_error(where(file, node[i].Mark()) + ": " + path + ": site: '" + p.site +
                             "' has pilots already");
        if (!names.insert(p.job_name).second)
          throw config_error(where(file, node[i].Mark()) + ": " + path + ": job_name: '" + p.job_name +
                             "' is another site's (squeue tells the sites' pilots apart by it)");
        c.pilot_sites.push_back(std::move(p));
      }
      if (!c.pilot_sites.empty()) c.pilots = c.pilot_sites.front();
    } else {
      section s(node, file, "pilots");
      read_pilots(s, c.pilots);
      c.pilot_sites.push_back(c.pilots);
    }
  }
  {
    // sites: a list of {name, status_url, poll_s, timeout_s}: the sites whose status is polled.
    auto node = top.take("sites");
    if (node && !node.IsSequence())
      throw config_error(where(file, node.Mark()) + ": sites: expected a list of {name, status_url, poll_s}");
    std::set<std::string> names;
    for (std::size_t i = 0; node && i < node.size(); ++i) {
      const std::string path = "sites[" + std::to_string(i) + "]";
      section s(node[i], file, path);
      site_status_config st;
      s.read("name", st.name);
      auto name = s.take("name");
      if (!name || !valid_site_name(st.name))
        throw config_error(where(file, node[i].Mark()) + ": " + path +
                           ": name: required, a site name (1 to 32 of a-z, 0-9, '-', '_')");
      if (!names.insert(st.name).second)
        throw config_error(where(file, node[i].Mark()) + ": " + path + ": name: '" + st.name +
                           "' is listed twice");
      s.read("status_url", st.status_url);
      if (auto v = s.take("status_url");
          v && st.status_url.rfind("http://", 0) != 0 && st.status_url.rfind("https://", 0) != 0)
        s.fail(v, "status_url", "expected an http:// or https:// URL");
      if (st.status_url.empty()) st.status_url = "https://api.nersc.gov/api/v1.2/status/" + st.name;
      for (unsigned char ch : st.status_url)
        if (ch <= 0x20 || ch == 0x7f)
          throw config_error(where(file, node[i].Mark()) + ": " + path +
                             ": status_url: no spaces or control characters");
      long long poll = st.poll.count(), timeout = st.timeout.count();
      s.read_range("poll_s", poll, 1LL, 86400LL);
      s.read_range("timeout_s", timeout, 1LL, 300LL);
      st.poll = std::chrono::seconds(poll);
      st.timeout = std::chrono::seconds(timeout);
      s.finish();
      c.site_status.push_back(std::move(st));
    }
    if (c.site_status.size() > 64) throw config_error(file + ": sites: at most 64 sites");
  }
  {
    section s(top.take("notify"), file, "notify");
    auto& n = c.notify;
    s.read("smtp_host", n.smtp_host);
    s.read_range("smtp_port", n.smtp_port, 1, 65535);
    s.read("helo", n.helo);
    s.read("from", n.from);
    s.read("base_url", n.base_url);
    s.read_ms("interval_ms", n.interval);
    s.read_ms("delay_ms", n.delay);
    s.read_ms("timeout_ms", n.timeout);
    s.read_ms("backoff_initial_ms", n.backoff_initial);
    s.read_ms("backoff_max_ms", n.backoff_max);
    s.read_range("max_listed", n.max_listed, 1, 1000);
    auto bad_text = [](const std::string& v) {
      for (unsigned char ch : v)
        if (ch < 0x21 || ch == 0x7f || ch == '<' || ch == '>') return true;
      return false;
    };
    if (auto v = s.take("smtp_host"); v && bad_text(n.smtp_host))
      s.fail(v, "smtp_host", "expected a host name");
    if (auto v = s.take("helo"); v && (n.helo.empty() || bad_text(n.helo)))
      s.fail(v, "helo", "expected a host name");
    if (auto v = s.take("from"); v && (n.from.find('@') == std::string::npos || bad_text(n.from)))
      s.fail(v, "from", "expected an e-mail address (user@host)");
    if (auto v = s.take("base_url"); v && (bad_text(n.base_url) || (n.base_url.rfind("http://", 0) != 0 &&
                                                                    n.base_url.rfind("https://", 0) != 0)))
      s.fail(v, "base_url", "expected an http:// or https:// URL");
    while (!n.base_url.empty() && n.base_url.back() == '/') n.base_url.pop_back();
    if (!n.smtp_host.empty()) {
      if (n.from.empty()) s.fail(s.take("smtp_host"), "smtp_host", "needs notify.from as well");
      if (n.base_url.empty()) s.fail(s.take("smtp_host"), "smtp_host", "needs notify.base_url as well");
    }
    for (const char* k : {"interval_ms", "timeout_ms", "backoff_initial_ms"})
      if (auto v = s.take(k); v && v.as<long long>() < 10) s.fail(v, k, "must be at least 10");
    if (n.backoff_max < n.backoff_initial) {
      if (auto v = s.take("backoff_max_ms"))
        s.fail(v, "backoff_max_ms", "must not be below backoff_initial_ms");
      n.backoff_max = n.backoff_initial;
    }
    s.finish();
  }
  top.finish();
  // Relative paths in the file are relative to the file's folder.
  namespace fs = std::filesystem;
  auto base = fs::path(file).parent_path();
  if (!c.apps_file.empty() && fs::path(c.apps_file).is_relative() && !base.empty())
    c.apps_file = (base / c.apps_file).lexically_normal().string();
  return c;
}

descprod_config load_config(const std::string& path) { return parse_config(read_file(path), path); }

namespace {
YAML::Node merged_node(const YAML::Node& base, const YAML::Node& over) {
  if (!base.IsMap() || !over.IsMap()) return YAML::Clone(over);
  YAML::Node out = YAML::Clone(base);
  for (const auto& kv : over) {
    const auto key = kv.first.as<std::string>();
    const YAML::Node& had = base;  // const lookup: never inserts
    auto existing = had[key];
    out[key] = existing ? merged_node(existing, kv.second) : YAML::Clone(kv.second);
  }
  return out;
}
}  // namespace

std::string merge_config_yaml(const std::string& base, const std::string& overlay,
                              const std::string& overlay_name) {
  YAML::Node b, o;
  try {
    b = YAML::Load(base);
  } catch (const YAML::Exception& e) {
    throw config_error(std::string("the configuration is not YAML: ") + e.what());
  }
  try {
    o = YAML::Load(overlay);
  } catch (const YAML::Exception& e) {
    throw config_error(overlay_name + ": not YAML: " + e.what());
  }
  if (o.IsNull()) o = YAML::Node(YAML::NodeType::Map);
  if (!o.IsMap()) throw config_error(overlay_name + ": expected a mapping of configuration keys");
  if (!b.IsMap()) throw config_error("the configuration is not a mapping");
  try {
    YAML::Emitter out;
    out << merged_node(b, o);
    return std::string(out.c_str()) + "\n";
  } catch (const YAML::Exception& e) {
    throw config_error(overlay_name + ": cannot be merged: " + e.what());
  }
}

std::vector<std::string> app_def::argv_for(const std::string& config, const std::string& howfig,
                                           long long id) const {
  std::vector<std::string> argv = command;
  for (const auto& a : args) {
    std::string out;
    for (std::size_t i = 0; i < a.size();) {
      if (a.compare(i, 8, "{config}") == 0) {
        out += config;
        i += 8;
      } else if (a.compare(i, 8, "{howfig}") == 0) {
        out += howfig;
        i += 8;
      } else if (a.compare(i, 4, "{id}") == 0) {
        out += std::to_string(id);
        i += 4;
      } else out += a[i++];
    }
    if (!out.empty()) argv.push_back(std::move(out));
  }
  return argv;
}

std::vector<std::string> app_def::job_argv(const std::string& config, const std::string& howfig, long long id,
                                           bool batch_howfigs) const {
  if (batch_howfigs) {
    std::string why;
    if (auto b = parse_batch_howfig(howfig, why))
      return b->subjob ? std::vector<std::string>{"descprod-pmbs"} : argv_for(config, b->rest, id);
  }
  return argv_for(config, howfig, id);
}

const app_def* app_registry::find(const std::string& name) const {
  auto it = apps.find(name);
  return it == apps.end() ? nullptr : &it->second;
}

namespace {
// "2G", "512M", "1048576": bytes; -1 when malformed.
long long parse_memory_size(const std::string& text) {
  if (text.empty() || text.size() > 20) return -1;
  std::size_t i = 0;
  long long v = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    if (v > (1LL << 50)) return -1;
    v = v * 10 + (text[i++] - '0');
  }
  if (i == 0) return -1;
  std::string unit = text.substr(i);
  long long mult = 1;
  if (unit == "K" || unit == "k") mult = 1LL << 10;
  else if (unit == "M" || unit == "m") mult = 1LL << 20;
  else if (unit == "G" || unit == "g") mult = 1LL << 30;
  else if (unit == "T" || unit == "t") mult = 1LL << 40;
  else if (!unit.empty()) return -1;
  if (v > (1LL << 62) / mult) return -1;
  return v * mult;
}
}  // namespace

app_registry parse_apps(const std::string& text, const std::string& file) {
  app_registry reg;
  auto root = parse_yaml(text, file);
  section top(root, file, "");
  auto list = top.take("apps");
  top.finish();
  if (!list) throw config_error(file + ":1:1: apps: missing (a list of applications)");
  if (!list.IsSequence()) top.fail(list, "apps", "expected a list of applications");
  for (const auto& node : list) {
    section s(node, file, "apps[]");
    app_def a;
    auto name_node = s.take("name");
    if (!name_node) throw config_error(where(file, node.Mark()) + ": apps[].name: missing");
    s.read("name", a.name);
    if (a.name.empty() || a.name.size() > 64 ||
        a.name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") != std::string::npos)
      s.fail(name_node, "name", "expected lower-case letters, digits, '_' or '-' (at most 64)");
    if (reg.apps.count(a.name)) s.fail(name_node, "name", "duplicate application " + a.name);
    a.command = {"runapp-" + a.name};
    // An app run as DESCprod ran it (runapp-<name>) gets its login shell by default; a command
    // given here runs as it is unless login_shell says otherwise.
    a.login_shell = true;
    if (auto v = s.take("command")) {
      a.login_shell = false;
      s.read("command", a.command);
      if (a.command.empty()) s.fail(v, "command", "must not be empty");
    }
    s.read("args", a.args);
    s.read("env", a.env);
    s.read("login_shell", a.login_shell);
    s.read_range("cores", a.cores, 1, 4096);
    s.read("limit_cores", a.limit_cores);
    if (auto v = s.take("memory_max")) {
      std::string text;
      s.read("memory_max", text);
      a.memory_max = parse_memory_size(text);
      if (a.memory_max < 0) s.fail(v, "memory_max", "expected bytes, optionally with K, M, G or T (e.g. 2G)");
    }
    if (auto v = s.take("umask")) {
      std::string text;
      s.read("umask", text);
      if (text.empty() || text.size() > 4 || text.find_first_not_of("01234567") != std::string::npos)
        s.fail(v, "umask", "expected an octal string such as \"027\" or \"022\"");
      a.umask = std::stoi(text, nullptr, 8);
    }
    s.read_range("time_limit_s", a.time_limit_s, 0.0, 1e9);
    s.read_range("max_attempts", a.max_attempts, 1, 100);
    s.read("help", a.help);
    if (auto v = s.take("dispatch")) {
      std::string text;
      s.read("dispatch", text);
      if (text != "manual" && text != "auto") s.fail(v, "dispatch", "expected auto or manual");
      a.manual_dispatch = text == "manual";
    }
    s.read("pattern", a.pattern);
    s.read("howfig_pattern", a.howfig_pattern);
    try {
      if (!a.pattern.empty()) a.compiled_pattern.emplace(a.pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      s.fail(s.take("pattern"), "pattern", std::string("invalid regular expression: ") + e.what());
    }
    try {
      if (!a.howfig_pattern.empty())
        a.compiled_howfig_pattern.emplace(a.howfig_pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      s.fail(s.take("howfig_pattern"), "howfig_pattern",
             std::string("invalid regular expression: ") + e.what());
    }
    s.finish();
    reg.apps.emplace(a.name, std::move(a));
  }
  return reg;
}

app_registry load_apps(const std::string& path) { return parse_apps(read_file(path), path); }

std::string merge_config_files(const std::string& base_path, const std::string& overlay_path) {
  return merge_config_yaml(read_file(base_path), read_file(overlay_path), overlay_path);
}

}  // namespace descprod
