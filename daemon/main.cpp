// descprod-daemon: the queue daemon's command line.
#include <boost/program_options.hpp>
#include <csignal>
#include <filesystem>
#include <functional>
#include <iostream>

#include "core/config.hpp"
#include "core/log.hpp"
#include "daemon/daemon.hpp"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  po::options_description opts(
      "Usage: descprod-daemon --config FILE [options]\n\nThe DESCprod queue daemon: leases jobs to workers and records every transition in Redis.\n\nOptions");
  opts.add_options()("help,h", "show this help")(
      "config,c", po::value<std::string>()->default_value("config/descprod.yaml"),
      "configuration file (YAML)")("check-config", "load the configuration, report problems and exit");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "descprod-daemon: " << e.what() << "\n" << opts << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  descprod::descprod_config cfg;
  descprod::app_registry apps;
  try {
    cfg = descprod::load_config(vm["config"].as<std::string>());
    apps = descprod::load_apps(cfg.apps_file);
  } catch (const std::exception& e) {
    std::cerr << "fatal: " << e.what() << "\n";
    return 2;
  }
  {
    // Pilots run on other nodes and in other directories: give them absolute paths. The workers
    // read the daemon's own file unless pilots.worker_config names another, and run the
    // descprod-worker installed next to this program unless pilots.worker_binary names one.
    namespace fs = std::filesystem;
    if (cfg.pilot_sites.empty()) cfg.pilot_sites.push_back(cfg.pilots);
    for (auto& p : cfg.pilot_sites) {
      std::error_code ec;
      if (p.worker_config.empty()) p.worker_config = cfg.file;
      for (auto* path : {&p.worker_config, &p.script, &p.log_dir})
        if (!path->empty()) *path = fs::absolute(*path, ec).lexically_normal().string();
      if (p.worker_binary.empty()) {
        auto sibling = fs::read_symlink("/proc/self/exe", ec).parent_path() / "descprod-worker";
        if (!ec && fs::exists(sibling, ec)) p.worker_binary = sibling.string();
      }
      if (p.enabled && !fs::exists(p.script, ec)) {
        std::cerr << "fatal: " << cfg.file << ": pilots.script (site '" << p.site
                  << "'): no such file: " << p.script << "\n";
        return 2;
      }
    }
    cfg.pilots = cfg.pilot_sites.front();
  }
  if (vm.count("check-config")) {
    std::cout << "configuration ok: " << cfg.file << " (" << apps.apps.size() << " applications)\n";
    return 0;
  }
  descprod::log::init("daemon", cfg.log_level);
  boost::asio::io_context io;
  descprod::queue_daemon daemon(io, cfg, std::move(apps));
  // The first SIGTERM/SIGINT drains (no new work; the outbox written to Redis within
  // daemon.stop_deadline_ms), a second one stops at once.
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        descprod::log::info("daemon stopping signal={}", sig);
        signals.async_wait(on_signal);
        boost::asio::co_spawn(io, daemon.drain_and_stop(), [&](std::exception_ptr) { io.stop(); });
      };
  signals.async_wait(on_signal);
  int rc = 0;
  boost::asio::co_spawn(io, daemon.run(), [&](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      descprod::log::error("fatal: {}", ex.what());
      std::cerr << "fatal: " << ex.what() << "\n";
    }
    rc = 1;
    io.stop();
  });
  io.run();
  descprod::log::info("daemon stopped");
  return rc;
}
