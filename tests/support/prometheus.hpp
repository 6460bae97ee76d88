// A strict reader of the Prometheus text exposition format 0.0.4 for the tests of GET /metrics:
// it parses every line and reports each way the text breaks the format (names, label syntax and
// escapes, values, HELP/TYPE placement, a family's lines kept together, duplicate series, and a
// histogram's buckets: `le` labels, cumulative counts, the +Inf bucket equal to _count).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace descprod::test {

struct prom_sample {
  std::string name;
  std::map<std::string, std::string> labels;  // unescaped values
  double value = 0;
  int line = 0;
};

struct prom_text {
  std::vector<prom_sample> samples;
  std::map<std::string, std::string> types;  // family → counter, gauge, histogram, ...
  std::map<std::string, std::string> helps;  // family → unescaped HELP text
  std::vector<std::string> errors;           // "line N: problem"; empty when the text is valid

  // The value of the sample with exactly these labels, or nullopt.
  std::optional<double> value(const std::string& name,
                              const std::map<std::string, std::string>& labels = {}) const;
  // Every sample of a name.
  std::vector<prom_sample> all(const std::string& name) const;
};

prom_text parse_prometheus(const std::string& text);

}  // namespace descprod::test
