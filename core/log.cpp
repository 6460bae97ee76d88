// The process logger: stderr, with time, process name and level on every line.
#include "core/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>

namespace descprod::log {

void init(const std::string& process_name, const std::string& level) {
  auto logger = spdlog::stderr_logger_mt(process_name);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %n %l: %v");
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace descprod::log
