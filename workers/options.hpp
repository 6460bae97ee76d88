// Turning the worker section of the configuration, the command line and the machine's facts
// (host name, pid, cores, a few environment variables) into worker_options. main() gathers the
// facts once; everything below it receives plain structs (STYLE: never the environment).
//
// Thread-safety: current_host_facts() reads process-wide state; call it once from main().
#pragma once

#include <optional>
#include <stdexcept>
#include <string>

#include "core/config.hpp"
#include "workers/worker.hpp"

namespace descprod::workers {

// What the command line may override.
struct worker_overrides {
  std::optional<int> slots;
  std::optional<std::string> id;
  std::optional<std::string> output_dir;
  std::optional<double> walltime_end;    // --walltime-end EPOCH (the Slurm allocation's end)
  std::optional<std::string> site;       // --site NAME
  std::optional<double> idle_timeout_s;  // --idle-timeout SECONDS
  std::optional<int> prefetch;           // --prefetch N
};

// The machine and environment the worker starts in.
struct host_facts {
  std::string hostname;  // short name (gethostname)
  std::string fqdn;      // fully qualified when resolvable, else hostname
  long pid = 0;
  unsigned cores = 1;
  std::string cwd;  // relative output directories resolve against it
  // The environment variables of DESCprod's output-dir rule; empty means unset.
  std::string descprod_output_dir, pscratch, scratch, home;
  std::string worker_token;  // $DESCPROD_WORKER_TOKEN
};

host_facts current_host_facts();

// DESCprod's rule: $DESCPROD_OUTPUT_DIR, else ${PSCRATCH:-${SCRATCH:-${HOME:-.}}}/descprod-out.
std::string default_output_dir(const host_facts& facts);

// Throws std::invalid_argument with a message for the `fatal:` line (e.g. --slots 0).
worker_options make_worker_options(const worker_config& cfg, const worker_overrides& over,
                                   const host_facts& facts);

}  // namespace descprod::workers
