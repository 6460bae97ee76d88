// descprod-worker: runs DESCprod jobs handed out by descprod-daemon on this node
// (docs/architecture.md#processes, docs/protocol.md, docs/architecture.md#app-contract).
// Thin main: command line and config into worker_options, one io_context on one thread, signals.
// Exit codes: 0 after SIGINT/SIGTERM or the idle timeout (--idle-timeout), 1 when the daemon
// rejects the worker or an unexpected error, 2 for a bad command line or configuration.
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include <boost/asio.hpp>
#include <boost/program_options.hpp>
#include <zmq.hpp>

#include "core/config.hpp"
#include "core/log.hpp"
#include "workers/options.hpp"
#include "workers/worker.hpp"

namespace net = boost::asio;
namespace po = boost::program_options;

int main(int argc, char** argv) {
  po::options_description desc(
      "Usage: descprod-worker --config FILE [--slots N] [--prefetch N] [--id ID] [--output-dir DIR]\n"
      "                       [--walltime-end EPOCH] [--idle-timeout SECONDS] [--token-file FILE]\n"
      "                       [--site NAME]\n"
      "Connects to descprod-daemon and runs the jobs it hands out, each in\n"
      "<output-dir>/jobs/jobNNNNNN. SIGINT/SIGTERM drain it: no new jobs, running jobs may\n"
      "finish for worker.drain_grace_s, the rest are handed back to run elsewhere.\n\nOptions");
  desc.add_options()("help,h", "print this help and exit")("config", po::value<std::string>(),
                                                           "configuration file (YAML; its `worker` section)")(
      "slots", po::value<int>(), "jobs run at once (default: worker.slots, else the number of cores)")(
      "prefetch", po::value<int>(),
      "jobs asked for beyond the free slots and queued here (default: worker.prefetch, 0; more "
      "throughput for short jobs)")("id", po::value<std::string>(),
                                    "worker id (default: worker.id, else <hostname>-<pid>)")(
      "output-dir", po::value<std::string>(),
      "where run directories go (default: worker.output_dir, else $DESCPROD_OUTPUT_DIR, else "
      "${PSCRATCH:-${SCRATCH:-$HOME}}/descprod-out)")(
      "walltime-end", po::value<double>(),
      "the allocation's end, Unix epoch seconds (scripts/slurm/descprod-pilot.sbatch passes it): jobs "
      "whose time limit would outrun it are handed back")(
      "site", po::value<std::string>(),
      "the site this worker is at (default: worker.site): jobs that ask for sites run only at theirs")(
      "token-file", po::value<std::string>(),
      "the worker token file (default: worker.token_file, else $DESCPROD_WORKER_TOKEN)")(
      "idle-timeout", po::value<double>(),
      "with no job for this many seconds, drain and exit 0 (default: worker.idle_timeout_s; 0: never)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "fatal: " << e.what() << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (!vm.count("config")) {
    std::cerr << "fatal: --config FILE is required (see -h)\n";
    return 2;
  }

  descprod::descprod_config cfg;
  descprod::workers::worker_options opts;
  try {
    cfg = descprod::load_config(vm["config"].as<std::string>());
    descprod::workers::worker_overrides over;
    if (vm.count("slots")) over.slots = vm["slots"].as<int>();
    if (vm.count("prefetch")) over.prefetch = vm["prefetch"].as<int>();
    if (vm.count("id")) over.id = vm["id"].as<std::string>();
    if (vm.count("output-dir")) over.output_dir = vm["output-dir"].as<std::string>();
    if (vm.count("walltime-end")) over.walltime_end = vm["walltime-end"].as<double>();
    if (vm.count("site")) over.site = vm["site"].as<std::string>();
    if (vm.count("idle-timeout")) over.idle_timeout_s = vm["idle-timeout"].as<double>();
    if (vm.count("token-file")) cfg.worker.token_file = vm["token-file"].as<std::string>();
    opts = descprod::workers::make_worker_options(cfg.worker, over, descprod::workers::current_host_facts());
    // Read once; no child of the worker (a job, a containment helper) inherits it.
    ::unsetenv("DESCPROD_WORKER_TOKEN");
    opts.reap_orphans =
        true;  // the worker is this whole program: children it did not spawn are orphans of jobs
    // A full or read-only output disk is not fatal: the worker reports itself unhealthy and
    // takes jobs once it can make run directories again.
    std::error_code ec;
    std::filesystem::create_directories(opts.run.output_dir / "jobs", ec);
    if (ec)
      std::cerr << "warning: output directory " << (opts.run.output_dir / "jobs").string() << ": "
                << ec.message() << " (the worker takes no job until it can create run directories there)\n";
  } catch (const std::exception& e) {
    std::cerr << "fatal: " << e.what() << "\n";
    return 2;
  }

  descprod::log::init("worker", cfg.log_level);
  std::signal(SIGPIPE, SIG_IGN);

  int exit_code = 1;
  try {
    net::io_context ioc(1);
    zmq::context_t zctx(1);
    descprod::workers::worker w(ioc.get_executor(), zctx, opts);
    net::signal_set signals(ioc, SIGINT, SIGTERM);
    std::function<void(const boost::system::error_code&, int)> on_signal;
    on_signal = [&](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      descprod::log::info("signal received signal={}", sig);
      w.stop();
      signals.async_wait(on_signal);  // a second signal kills the jobs at once
    };
    signals.async_wait(on_signal);
    w.start([&](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          descprod::log::error("worker failed error={}", ex.what());
        }
        exit_code = 1;
      } else {
        exit_code = w.exit_code();
      }
      boost::system::error_code ignored;
      signals.cancel(ignored);
    });
    ioc.run();
  } catch (const std::exception& e) {
    descprod::log::error("worker failed error={}", e.what());
    return 1;
  }
  return exit_code;
}
