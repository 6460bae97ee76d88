// The descprod-gateway program: command line, configuration, wiring of Redis, the daemon link and
// the HTTP server on one io_context, start-up and shutdown. main.cpp only calls gateway_main.
#pragma once

namespace descprod::gateway {

// Runs the gateway. Returns the process exit code: 0 after SIGINT/SIGTERM or --check-config/-h,
// 2 for command-line and configuration errors, 1 for start-up failures (Redis unreachable for
// 10 s, cannot bind, cannot write the port file).
int gateway_main(int argc, char** argv);

}  // namespace descprod::gateway
