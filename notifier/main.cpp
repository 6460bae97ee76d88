// descprod-notifier: e-mail on failure (notifier.hpp; docs/operators.md#e-mail-on-failure).
#include <boost/program_options.hpp>
#include <csignal>
#include <iostream>

#include "core/config.hpp"
#include "core/log.hpp"
#include "notifier/notifier.hpp"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  po::options_description opts(
      "Usage: descprod-notifier --config FILE [options]\n\nDESCprod's notifier: mails the owners who opted in "
      "when their jobs fail, through the SMTP relay of the notify section.\n\nOptions");
  opts.add_options()("help,h", "show this help")(
      "config,c", po::value<std::string>()->default_value("config/descprod.yaml"),
      "configuration file (YAML)")("check-config", "load the configuration, report problems and exit");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "descprod-notifier: " << e.what() << "\n" << opts << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  descprod::descprod_config cfg;
  try {
    cfg = descprod::load_config(vm["config"].as<std::string>());
  } catch (const std::exception& e) {
    std::cerr << "fatal: " << e.what() << "\n";
    return 2;
  }
  if (vm.count("check-config")) {
    std::cout << "configuration ok: " << cfg.file
              << (cfg.notify.smtp_host.empty() ? " (notify.smtp_host unset: no mail)" : "") << "\n";
    return 0;
  }
  descprod::log::init("notifier", cfg.log_level);
  if (cfg.notify.smtp_host.empty()) {
    descprod::log::info("notifier off: notify.smtp_host is not set");
    return 0;
  }
  boost::asio::io_context io;
  descprod::notify::notifier n(io, cfg);
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    descprod::log::info("notifier stopping signal={}", sig);
    n.stop();
  });
  int rc = 0;
  boost::asio::co_spawn(io, n.run(), [&](std::exception_ptr e) {
    signals.cancel();
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      descprod::log::error("fatal: {}", ex.what());
    }
    rc = 1;
  });
  io.run();
  descprod::log::info("notifier stopped mails_sent={}", n.mails_sent());
  return rc;
}
