// The exposition-format reader (see prometheus.hpp).
#include "tests/support/prometheus.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <set>
#include <sstream>

namespace descprod::test {

namespace {

bool name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':'; }
bool name_char(char c) { return name_start(c) || std::isdigit(static_cast<unsigned char>(c)); }
bool label_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool label_char(char c) { return label_start(c) || std::isdigit(static_cast<unsigned char>(c)); }

bool valid_metric_name(const std::string& s) {
  if (s.empty() || !name_start(s[0])) return false;
  return std::all_of(s.begin(), s.end(), name_char);
}

std::optional<double> parse_value(const std::string& t) {
  if (t == "+Inf" || t == "Inf") return std::numeric_limits<double>::infinity();
  if (t == "-Inf") return -std::numeric_limits<double>::infinity();
  if (t == "NaN") return std::numeric_limits<double>::quiet_NaN();
  if (t.empty()) return std::nullopt;
  for (char c : t)
    if (!std::isdigit(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.' && c != 'e' &&
        c != 'E')
      return std::nullopt;
  std::string s = t[0] == '+' ? t.substr(1) : t;
  double d = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return d;
}

std::string labels_key(const std::map<std::string, std::string>& l, const char* skip = nullptr) {
  std::string k;
  for (const auto& [n, v] : l) {
    if (skip && n == skip) continue;
    k += n + "=" + v + "\x1f";
  }
  return k;
}

std::string family_of(const std::string& name, const std::map<std::string, std::string>& types) {
  if (types.count(name)) return name;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    std::string sfx(suffix);
    if (name.size() > sfx.size() && name.compare(name.size() - sfx.size(), sfx.size(), sfx) == 0) {
      auto base = name.substr(0, name.size() - sfx.size());
      auto it = types.find(base);
      if (it != types.end() && (it->second == "histogram" || (it->second == "summary" && sfx != "_bucket")))
        return base;
    }
  }
  return name;
}

}  // namespace

std::optional<double> prom_text::value(const std::string& name,
                                       const std::map<std::string, std::string>& labels) const {
  for (const auto& s : samples)
    if (s.name == name && s.labels == labels) return s.value;
  return std::nullopt;
}

std::vector<prom_sample> prom_text::all(const std::string& name) const {
  std::vector<prom_sample> out;
  for (const auto& s : samples)
    if (s.name == name) out.push_back(s);
  return out;
}

prom_text parse_prometheus(const std::string& text) {
  prom_text out;
  auto error = [&](int line, const std::string& what) {
    out.errors.push_back("line " + std::to_string(line) + ": " + what);
  };
  if (!text.empty() && text.back() != '\n') error(0, "the text does not end with a newline");

  std::string current;             // the family whose lines come now
  std::set<std::string> finished;  // families whose lines ended
  std::set<std::string> sampled;   // families with samples already
  std::set<std::string> series;    // name + labels seen
  auto enter = [&](int line, const std::string& family) {
    if (family == current) return;
    if (finished.count(family)) error(line, "the lines of family " + family + " are not together");
    if (!current.empty()) finished.insert(current);
    current = family;
  };

  std::istringstream in(text);
  std::string l;
  int n = 0;
  while (std::getline(in, l)) {
    ++n;
    if (l.empty()) continue;
    if (l[0] == '#') {
      std::istringstream words(l);
      std::string hash, kind, name;
      words >> hash >> kind >> name;
      if (hash != "#" || (kind != "HELP" && kind != "TYPE")) continue;  // a plain comment
      if (!valid_metric_name(name)) {
        error(n, "bad metric name in " + kind + ": '" + name + "'");
        continue;
      }
      std::string rest;
      auto pos = l.find(name, 7) + name.size();
      if (pos < l.size()) {
        if (l[pos] != ' ') error(n, kind + " " + name + ": no space after the name");
        rest = l.substr(pos + 1);
      }
      enter(n, name);
      if (kind == "TYPE") {
        static const std::set<std::string> known = {"counter", "gauge", "histogram", "summary", "untyped"};
        if (!known.count(rest)) error(n, "unknown TYPE '" + rest + "' for " + name);
        if (out.types.count(name)) error(n, "second TYPE line for " + name);
        if (sampled.count(name)) error(n, "TYPE of " + name + " after its samples");
        out.types[name] = rest;
      } else {
        if (out.helps.count(name)) error(n, "second HELP line for " + name);
        std::string help;
        for (std::size_t i = 0; i < rest.size(); ++i) {
          if (rest[i] == '\\' && i + 1 < rest.size()) {
            char e = rest[++i];
            if (e == '\\') help += '\\';
            else if (e == 'n') help += '\n';
            else {
              help += '\\';
              help += e;
            }
          } else {
            help += rest[i];
          }
        }
        out.helps[name] = help;
      }
      continue;
    }
    // A sample: name [{labels}] value [timestamp]
    prom_sample s;
    s.line = n;
    std::size_t i = 0;
    while (i < l.size() && name_char(l[i])) ++i;
    s.name = l.substr(0, i);
    if (!valid_metric_name(s.name)) {
      error(n, "bad metric name: '" + l.substr(0, 40) + "'");
      continue;
    }
    bool bad = false;
    if (i < l.size() && l[i] == '{') {
      ++i;
      while (i < l.size() && l[i] != '}') {
        std::size_t b = i;
        if (!label_start(l[i])) {
          bad = true;
          break;
        }
        while (i < l.size() && label_char(l[i])) ++i;
        std::string lname = l.substr(b, i - b);
        if (i >= l.size() || l[i] != '=' || i + 1 >= l.size() || l[i + 1] != '"') {
          bad = true;
          break;
        }
        i += 2;
        std::string v;
        bool closed = false;
        while (i < l.size()) {
          char c = l[i++];
          if (c == '"') {
            closed = true;
            break;
          }
          if (c == '\\') {
            if (i >= l.size()) break;
            char e = l[i++];
            if (e == '\\') v += '\\';
            else if (e == '"') v += '"';
            else if (e == 'n') v += '\n';
            else {
              error(n, "bad escape \\" + std::string(1, e) + " in a label value");
              v += e;
            }
          } else {
            v += c;
          }
        }
        if (!closed) {
          bad = true;
          break;
        }
        if (lname.rfind("__", 0) == 0) error(n, "reserved label name " + lname);
        if (!s.labels.emplace(lname, v).second) error(n, "label " + lname + " twice");
        if (i < l.size() && l[i] == ',') ++i;
      }
      if (bad || i >= l.size() || l[i] != '}') {
        error(n, "malformed labels: " + l.substr(0, 80));
        continue;
      }
      ++i;
    }
    if (i >= l.size() || l[i] != ' ') {
      error(n, "no space before the value: " + l.substr(0, 80));
      continue;
    }
    std::istringstream rest(l.substr(i + 1));
    std::string value, timestamp, extra;
    rest >> value >> timestamp >> extra;
    auto v = parse_value(value);
    if (!v) {
      error(n, "bad value '" + value + "'");
      continue;
    }
    s.value = *v;
    if (!timestamp.empty()) {
      long long ts = 0;
      auto [p, ec] = std::from_chars(timestamp.data(), timestamp.data() + timestamp.size(), ts);
      if (ec != std::errc() || p != timestamp.data() + timestamp.size()) error(n, "bad timestamp");
    }
    if (!extra.empty()) error(n, "trailing text after the value");
    auto family = family_of(s.name, out.types);
    enter(n, family);
    sampled.insert(family);
    if (!series.insert(s.name + "\x1e" + labels_key(s.labels)).second)
      error(n, "duplicate series " + s.name + " " + labels_key(s.labels));
    out.samples.push_back(std::move(s));
  }

  // Histograms: per label set (without le) the buckets are cumulative, +Inf is there and equals
  // _count, and _sum is there.
  for (const auto& [family, type] : out.types) {
    if (type != "histogram") continue;
    std::map<std::string, std::vector<std::pair<double, double>>> buckets;
    std::map<std::string, int> lines;
    for (const auto& s : out.samples) {
      if (s.name != family + "_bucket") continue;
      auto le = s.labels.find("le");
      if (le == s.labels.end()) {
        error(s.line, family + "_bucket without le");
        continue;
      }
      auto bound = parse_value(le->second);
      if (!bound) {
        error(s.line, "bad le '" + le->second + "'");
        continue;
      }
      auto key = labels_key(s.labels, "le");
      buckets[key].emplace_back(*bound, s.value);
      lines[key] = s.line;
    }
    for (auto& [key, bs] : buckets) {
      std::stable_sort(bs.begin(), bs.end());
      for (std::size_t i = 1; i < bs.size(); ++i)
        if (bs[i].second < bs[i - 1].second)
          error(lines[key], family + " buckets are not cumulative for {" + key + "}");
      if (bs.empty() || !std::isinf(bs.back().first)) {
        error(lines[key], family + " has no +Inf bucket for {" + key + "}");
        continue;
      }
      std::optional<double> count, sum;
      for (const auto& s : out.samples) {
        if (labels_key(s.labels) != key) continue;
        if (s.name == family + "_count") count = s.value;
        if (s.name == family + "_sum") sum = s.value;
      }
      if (!count || *count != bs.back().second)
        error(lines[key], family + "_count differs from the +Inf bucket for {" + key + "}");
      if (!sum) error(lines[key], family + "_sum missing for {" + key + "}");
    }
  }
  return out;
}

}  // namespace descprod::test
