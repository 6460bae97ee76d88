// Logging: one spdlog logger per process, to stderr. Messages are an event name plus key=value
// pairs, e.g. log::info("job leased job_id={} worker={}", id, worker).
#pragma once
#include <spdlog/spdlog.h>
#include <string>

namespace descprod::log {

// Sets the process-wide logger's name (shown on each line) and level ("debug", "info", ...).
void init(const std::string& process_name, const std::string& level = "info");

using spdlog::debug;
using spdlog::error;
using spdlog::info;
using spdlog::warn;

}  // namespace descprod::log
