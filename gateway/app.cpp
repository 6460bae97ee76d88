// The gateway process: parses the command line, loads the configuration and the application
// registry (fail fast, exit 2), connects Redis (retrying up to 10 s), binds the HTTP port,
// announces it (log line and optional --port-file), and serves until SIGINT/SIGTERM.
//
// Shutdown order: stop accepting → close idle connections and event streams, let busy ones
// answer (bounded) → stop the event tail and the Redis keeper → close the daemon link and Redis.
// If something still runs after shutdown_limit the io_context is stopped regardless.
#include "gateway/app.hpp"

#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/program_options.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>

#include "core/async_util.hpp"
#include "core/config.hpp"
#include "core/log.hpp"
#include "core/store.hpp"
#include "gateway/auth_cache.hpp"
#include "gateway/events.hpp"
#include "gateway/guard.hpp"
#include "gateway/handler.hpp"
#include "gateway/notices.hpp"
#include "gateway/oidc.hpp"
#include "gateway/server.hpp"
#include "gateway/services.hpp"

namespace descprod::gateway {

namespace {

namespace po = boost::program_options;
using namespace std::chrono_literals;

// Start-up: how long Redis may stay unreachable before the gateway gives up.
constexpr std::chrono::milliseconds redis_startup_deadline = 10s;
// Shutdown: time busy connections get to finish, and the hard limit for the whole shutdown.
constexpr std::chrono::milliseconds drain_grace = 5s;
constexpr std::chrono::milliseconds shutdown_limit = 7s;
// Threads for password hashing (Argon2id is CPU- and memory-bound; two bound its memory).
constexpr std::size_t hashing_threads = 2;

// The HTTPS context from gateway.tls_cert / tls_key, or null without them. Throws
// std::runtime_error naming the file that could not be used.
std::unique_ptr<net::ssl::context> make_tls_context(const gateway_config& cfg) {
  if (cfg.tls_cert.empty()) return nullptr;
  auto ctx = std::make_unique<net::ssl::context>(net::ssl::context::tls_server);
  ctx->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                   net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 | net::ssl::context::no_tlsv1_1 |
                   net::ssl::context::single_dh_use);
  boost::system::error_code ec;
  ctx->use_certificate_chain_file(cfg.tls_cert, ec);
  if (ec) throw std::runtime_error("gateway.tls_cert " + cfg.tls_cert + ": " + ec.message());
  ctx->use_private_key_file(cfg.tls_key, net::ssl::context::pem, ec);
  if (ec) throw std::runtime_error("gateway.tls_key " + cfg.tls_key + ": " + ec.message());
  return ctx;
}

void write_port_file(const std::string& path, std::uint16_t port) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << port << "\n";
    f.flush();
    if (!f) throw std::runtime_error("cannot write port file " + tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw std::runtime_error("cannot write port file " + path + ": " + ec.message());
  }
}

class gateway_app {
 public:
  gateway_app(descprod_config cfg, app_registry apps, std::string port_file)
      : zctx_(1),
        cfg_(std::move(cfg)),
        redis_(ioc_.get_executor(), cfg_.redis.endpoint),
        jobs_(redis_, cfg_.redis.prefix),
        keeper_(ioc_.get_executor(), redis_, cfg_.redis.endpoint.describe()),
        link_(ioc_.get_executor(), zctx_, cfg_.gateway.daemon_endpoint),
        notices_(ioc_.get_executor(),
                 [this](const std::vector<std::string>& frames) { return link_.send(frames); }),
        created_(ioc_.get_executor()),
        creates_(ioc_.get_executor(), jobs_),
        hub_(ioc_.get_executor(), cfg_.redis.endpoint, cfg_.redis.prefix),
        tls_(make_tls_context(cfg_.gateway)),
        hashing_(hashing_threads),
        guard_(cfg_.gateway, hashing_threads),
        server_(ioc_.get_executor(), ctx_, tls_.get()),
        counts_(ioc_.get_executor(), redis_, jobs_, ctx_.owner_indexes_ready),
        signals_(ioc_, SIGINT, SIGTERM),
        port_file_(std::move(port_file)) {
    jobs_.set_replication(cfg_.redis.wait_replicas, std::chrono::milliseconds(cfg_.redis.wait_timeout_ms));
    ctx_.config = cfg_.gateway;
    ctx_.config.batch_howfigs = cfg_.pilots.enabled;
    ctx_.prefix = cfg_.redis.prefix;
    ctx_.apps = std::move(apps);
    ctx_.redis = &redis_;
    ctx_.jobs = &jobs_;
    ctx_.send_to_daemon = [this](const std::vector<std::string>& frames) { return link_.send(frames); };
    ctx_.notices = &notices_;
    ctx_.tokens = &tokens_;
    ctx_.created = &created_;
    ctx_.creates = &creates_;
    ctx_.on_redis_failure = [this] { keeper_.poke(); };
    ctx_.hub = &hub_;
    ctx_.daemon_ready = [this] { return link_.welcomed(); };
    ctx_.redis_ready = [this] { return keeper_.serving(); };
    ctx_.blocking = &hashing_;
    ctx_.guard = &guard_;
    if (!ctx_.config.oidc.empty()) {
      oidc_ = std::make_unique<oidc::registry>(ctx_.config.oidc);
      ctx_.oidc = oidc_.get();
    }
    ctx_.tls = tls_ != nullptr;
    ctx_.http_metrics = &http_metrics_;
    ctx_.gateway_state = [this] {
      metrics::gateway_snapshot g;
      g.version = DESCPROD_VERSION;
      g.start_time_s = start_time_s_;
      g.connections = server_.connections();
      g.redis_up = redis_.connected();
      g.daemon_ready = link_.welcomed();
      g.event_tail_up = hub_.connected();
      g.event_streams = hub_.subscribers();
      g.events_delivered = hub_.delivered();
      g.slow_stream_closes = hub_.overflows();
      return g;
    };
  }

  int run() {
    signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      log::info("signal received signal={}", sig);
      net::co_spawn(ioc_, shutdown(), net::detached);
    });
    net::co_spawn(ioc_, start(), [this](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        fatal(ex.what());
      }
    });
    while (true) {
      ioc_.run_for(200ms);
      if (ioc_.stopped()) break;
      if (stop_deadline_ && std::chrono::steady_clock::now() > *stop_deadline_) {
        log::warn("shutdown took too long; stopping now");
        ioc_.stop();
        break;
      }
    }
    return exit_code_;
  }

 private:
  net::awaitable<void> start() {
    std::string failure;
    try {
      co_await async_connect_with_deadline(redis_, cfg_.redis.endpoint.describe(), redis_startup_deadline,
                                           &stopping_);
    } catch (const std::exception& e) {
      failure = e.what();
    }
    if (stopping_) co_return;
    if (!failure.empty()) {
      fatal(failure);
      co_return;
    }
    log::info("redis connected redis={} prefix={}", cfg_.redis.endpoint.describe(), cfg_.redis.prefix);

    std::uint16_t port = server_.bind(cfg_.gateway.address, static_cast<std::uint16_t>(cfg_.gateway.port));
    ctx_.config.port = port;  // the port bound (gateway.port 0: any free one): the Host/Origin checks use it
    try {
      link_.start();
    } catch (const zmq::error_t& e) {
      throw std::runtime_error("cannot connect to the daemon at " + cfg_.gateway.daemon_endpoint + ": " +
                               e.what());
    }
    auto stopping = [this] { return stopping_; };
    spawn_logged(ioc_.get_executor(), link_.run(), "daemon link", stopping);
    spawn_logged(ioc_.get_executor(), link_.run_monitor(), "daemon link monitor", stopping);
    spawn_logged(ioc_.get_executor(), link_.run_hello(), "daemon link hello", stopping);
    spawn_logged(ioc_.get_executor(), keeper_.run(), "redis keeper", stopping);
    spawn_logged(ioc_.get_executor(), counts_.run(), "job count keeper", stopping);
    spawn_logged(ioc_.get_executor(), hub_.run(), "event tail", stopping);
    server_.start();
    log::info("gateway listening address={} port={} scheme={} apps={}", cfg_.gateway.address, port,
              tls_ ? "https" : "http", ctx_.apps.apps.size());
    if (!port_file_.empty()) write_port_file(port_file_, port);
  }

  net::awaitable<void> shutdown() {
    if (stopping_) co_return;
    stopping_ = true;
    stop_deadline_ = std::chrono::steady_clock::now() + shutdown_limit;
    log::info("gateway stopping connections={}", server_.connections());
    boost::system::error_code ignored;
    signals_.cancel(ignored);
    co_await server_.async_shutdown(drain_grace);
    hub_.stop();
    keeper_.stop();
    counts_.stop();
    notices_.flush();
    created_.stop();
    link_.close();
    redis_.close();
    hashing_.stop();
    log::info("gateway stopped");
  }

  void fatal(const std::string& what) {
    log::error("fatal error={}", what);
    std::cerr << "fatal: " << what << std::endl;
    exit_code_ = 1;
    stopping_ = true;
    ioc_.stop();
  }

  net::io_context ioc_{1};
  zmq::context_t zctx_;
  descprod_config cfg_;
  redis_client redis_;
  store jobs_;
  redis_keeper keeper_;
  daemon_link link_;
  submit_notices notices_;
  creation_summary created_;
  create_batcher creates_;
  auth_cache tokens_;
  event_hub hub_;
  gateway_context ctx_;
  std::unique_ptr<net::ssl::context> tls_;
  net::thread_pool hashing_;
  request_guard guard_;
  std::unique_ptr<oidc::registry> oidc_;  // refers to ctx_.config.oidc
  metrics::http_metrics http_metrics_;
  double start_time_s_ =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  server server_;
  state_count_keeper counts_;
  net::signal_set signals_;
  std::string port_file_;
  int exit_code_ = 0;
  bool stopping_ = false;
  std::optional<std::chrono::steady_clock::time_point> stop_deadline_;
};

}  // namespace

int gateway_main(int argc, char** argv) {
  po::options_description desc(
      "Usage: descprod-gateway --config FILE [--port N] [--port-file PATH] [--check-config]\n\n"
      "The DESCprod HTTP gateway: JSON API and web pages for jobs, backed by Redis, notifying the\n"
      "daemon; HTTPS when gateway.tls_cert and tls_key are set.\n\n"
      "Options");
  std::string config_file, port_file;
  int port = -1;
  bool check_only = false;
  // clang-format off
  desc.add_options()
      ("help,h", "show this help and exit")
      ("config", po::value(&config_file)->value_name("FILE"),
       "configuration YAML (sections redis, gateway; apps file)")
      ("port", po::value(&port)->value_name("N"),
       "listen on port N instead of gateway.port (0: any free port)")
      ("port-file", po::value(&port_file)->value_name("PATH"),
       "after binding, write the bound port number to PATH")
      ("check-config", po::bool_switch(&check_only),
       "load and check the configuration and the applications, then exit");
  // clang-format on
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "fatal: " << e.what() << "\n" << desc << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (config_file.empty()) {
    std::cerr << "fatal: --config FILE is required\n" << desc << "\n";
    return 2;
  }
  if (vm.count("port") && (port < 0 || port > 65535)) {
    std::cerr << "fatal: --port: must be between 0 and 65535\n";
    return 2;
  }

  descprod_config cfg;
  app_registry apps;
  try {
    cfg = load_config(config_file);
    apps = load_apps(cfg.apps_file);
  } catch (const std::exception& e) {
    std::cerr << "fatal: " << e.what() << "\n";
    return 2;
  }
  if (vm.count("port")) cfg.gateway.port = port;
  if (check_only) {
    std::cout << "config ok: " << config_file << " (" << apps.apps.size() << " applications from "
              << cfg.apps_file << ")\n";
    return 0;
  }

  log::init("gateway", cfg.log_level);
  {
    // Every connection is a descriptor: take all the kernel allows, and keep the connection cap
    // (and the stream cap below it) under what we got.
    std::size_t fds = raise_descriptor_limit();
    std::size_t cap = fit_connection_cap(cfg.gateway.max_connections, fds);
    if (cap < cfg.gateway.max_connections) {
      log::warn(
          "gateway.max_connections lowered to fit the descriptor limit configured={} "
          "descriptors={} now={}",
          cfg.gateway.max_connections, fds, cap);
      cfg.gateway.max_connections = cap;
      if (cfg.gateway.max_event_streams >= cap) cfg.gateway.max_event_streams = cap / 2;
    }
    log::info(
        "gateway limits descriptors={} max_connections={} per_address={} "
        "max_event_streams={} per_user={}",
        fds, cfg.gateway.max_connections, cfg.gateway.max_connections_per_address,
        cfg.gateway.max_event_streams, cfg.gateway.max_event_streams_per_user);
  }
  try {
    gateway_app app(std::move(cfg), std::move(apps), port_file);
    return app.run();
  } catch (const std::exception& e) {
    std::cerr << "fatal: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace descprod::gateway
