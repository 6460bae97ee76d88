// Worker options from config + command line + host facts. Precedence: command line, then the
// config file, then the environment/machine defaults. Caveat: the FQDN lookup may consult DNS; it
// runs once at start.
#include "workers/options.hpp"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <thread>
#include "core/curve.hpp"
#include "core/job.hpp"

namespace descprod::workers {

namespace {
std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string fully_qualified(const std::string& name) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_flags = AI_CANONNAME;
  addrinfo* res = nullptr;
  if (::getaddrinfo(name.c_str(), nullptr, &hints, &res) != 0 || !res) return name;
  std::string out = (res->ai_canonname && *res->ai_canonname) ? res->ai_canonname : name;
  ::freeaddrinfo(res);
  return out;
}
}  // namespace

host_facts current_host_facts() {
  host_facts f;
  char buf[HOST_NAME_MAX + 1] = {};
  if (::gethostname(buf, sizeof buf - 1) == 0 && buf[0]) f.hostname = buf;
  else f.hostname = "localhost";
  f.fqdn = fully_qualified(f.hostname);
  f.pid = static_cast<long>(::getpid());
  f.cores = std::max(1u, std::thread::hardware_concurrency());
  std::error_code ec;
  f.cwd = std::filesystem::current_path(ec).string();
  f.descprod_output_dir = env_or_empty("DESCPROD_OUTPUT_DIR");
  f.pscratch = env_or_empty("PSCRATCH");
  f.scratch = env_or_empty("SCRATCH");
  f.home = env_or_empty("HOME");
  f.worker_token = env_or_empty("DESCPROD_WORKER_TOKEN");
  return f;
}

std::string default_output_dir(const host_facts& f) {
  if (!f.descprod_output_dir.empty()) return f.descprod_output_dir;
  std::string base = !f.pscratch.empty()  ? f.pscratch
                     : !f.scratch.empty() ? f.scratch
                     : !f.home.empty()    ? f.home
                                          : ".";
  return base + "/descprod-out";
}

worker_options make_worker_options(const worker_config& cfg, const worker_overrides& over,
                                   const host_facts& facts) {
  worker_options o;
  o.endpoint = cfg.daemon_endpoint;
  o.owner = cfg.owner;
  o.pool = cfg.pool;
  o.site = over.site ? *over.site : cfg.site;
  if (!o.site.empty() && !valid_site_name(o.site))
    throw std::invalid_argument("--site: expected 1 to 32 of a-z, 0-9, '-', '_'");
  o.host = facts.fqdn.empty() ? facts.hostname : facts.fqdn;

  o.id = over.id ? *over.id : cfg.id;
  if (o.id.empty()) o.id = facts.hostname + "-" + std::to_string(facts.pid);

  if (over.slots && (*over.slots < 1 || *over.slots > 4096))
    throw std::invalid_argument("--slots: must be between 1 and 4096");
  o.slots = over.slots ? *over.slots : cfg.slots;
  if (o.slots <= 0) o.slots = static_cast<int>(std::max(1u, facts.cores));
  if (over.prefetch && (*over.prefetch < 0 || *over.prefetch > 4096))
    throw std::invalid_argument("--prefetch: must be between 0 and 4096");
  o.prefetch = over.prefetch.value_or(cfg.prefetch);

  std::string dir = over.output_dir ? *over.output_dir : cfg.output_dir;
  if (dir.empty()) dir = default_output_dir(facts);
  std::filesystem::path p(dir);
  if (p.is_relative() && !facts.cwd.empty()) p = std::filesystem::path(facts.cwd) / p;
  o.run.output_dir = p.lexically_normal();
  o.run.host = o.host;
  o.run.gateway_url = cfg.gateway_url;
  o.run.status_poll = cfg.status_poll.count() > 0 ? cfg.status_poll : std::chrono::milliseconds(200);
  auto to_ms = [](double s) { return std::chrono::milliseconds(static_cast<long long>(s * 1000)); };
  o.run.kill_grace = to_ms(cfg.kill_grace_s);
  o.drain_grace = to_ms(cfg.drain_grace_s);
  o.shutdown_grace = o.run.kill_grace;
  o.walltime_margin_s = cfg.walltime_margin_s;
  o.containment = cfg.containment;
  if (over.walltime_end && *over.walltime_end < 0)
    throw std::invalid_argument("--walltime-end: expected Unix epoch seconds (0: none)");
  o.walltime_end = over.walltime_end.value_or(0);
  double idle = over.idle_timeout_s.value_or(cfg.idle_timeout_s);
  if (idle < 0 || idle > 1e7)
    throw std::invalid_argument("--idle-timeout: expected seconds between 0 and 1e7");
  o.idle_timeout = to_ms(idle);
  o.token = facts.worker_token;
  if (!cfg.token_file.empty()) {
    std::ifstream in(cfg.token_file);
    std::string line;
    if (!in || !std::getline(in, line))
      throw std::invalid_argument("worker.token_file: cannot read " + cfg.token_file);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
      line.pop_back();
    if (line.empty()) throw std::invalid_argument("worker.token_file: " + cfg.token_file + " is empty");
    o.token = line;
  }
  if (!cfg.curve_server_key_file.empty()) {
    try {
      o.curve_server_key = read_curve_key_file(cfg.curve_server_key_file);
      o.curve_secret_key = read_curve_key_file(cfg.curve_secret_key_file);
      o.curve_public_key = curve_public_of(o.curve_secret_key);
    } catch (const std::exception& e) {
      throw std::invalid_argument(std::string("worker CURVE keys: ") + e.what());
    }
  }
  return o;
}

}  // namespace descprod::workers
