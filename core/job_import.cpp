// Reading DESCprod's job table (job_import.hpp).
#include "core/job_import.hpp"

#include <boost/json.hpp>
#include <cmath>
#include <map>
#include <set>

#include "core/accounts.hpp"

namespace descprod {

namespace {

const std::vector<std::string>& descprod_columns() {
  static const std::vector<std::string> cols(job_field_order().begin(), job_field_order().begin() + 18);
  return cols;
}

bool is_null(const std::string& v) { return v == "NULL" || v == "\\N"; }

std::optional<long long> integer_of(const std::string& v) {
  if (v.empty() || v.size() > 19) return std::nullopt;
  std::size_t used = 0;
  try {
    long long n = std::stoll(v, &used);
    if (used == v.size()) return n;
  } catch (...) {
  }
  // DESCprod's times may come as floats ("1700000000.25"): whole seconds are kept.
  try {
    double d = std::stod(v, &used);
    if (used == v.size() && std::isfinite(d) && std::fabs(d) < 9e18) return static_cast<long long>(d);
  } catch (...) {
  }
  return std::nullopt;
}

// One row (column name → value, nulls already dropped) as an imported job; "" or the problem.
std::string to_job(std::map<std::string, std::string> row, imported_job& out) {
  auto id = integer_of(row["id"]);
  if (!id || *id <= 0) return "id must be a positive integer, not '" + row["id"] + "'";
  out.id = *id;
  if (!valid_user_name(row["descname"])) return "descname '" + row["descname"] + "' is not a user name";
  out.owner = row["descname"];
  if (row["jobtype"].empty()) return "jobtype is empty";
  if (!row["parent"].empty()) {
    auto p = integer_of(row["parent"]);
    if (!p || *p < 0) return "parent must be a job ID, not '" + row["parent"] + "'";
    if (*p > 0) out.parent = *p;  // DESCprod wrote 0 for "no parent"
  }
  for (const char* k : {"session", "archive", "pid", "port", "return_status", "create_time", "start_time",
                        "update_time", "stop_time"}) {
    if (row[k].empty()) continue;
    auto n = integer_of(row[k]);
    if (!n) return std::string(k) + " must be a number, not '" + row[k] + "'";
    row[k] = std::to_string(*n);
  }
  auto positive = [&](const char* k) { return !row[k].empty() && row[k] != "0"; };
  std::optional<long long> rc;
  if (!row["return_status"].empty()) rc = std::stoll(row["return_status"]);
  if (positive("stop_time")) {
    if (rc && *rc == 0) out.state = job_state::done;
    else if (rc && *rc == 124) out.state = job_state::timeout;
    else if (rc && *rc < 0) out.state = job_state::killed;
    else out.state = job_state::failed;
  } else if (positive("start_time")) {
    out.state = job_state::lost;  // it was running: nothing here runs it any more
  } else {
    out.state = job_state::held;  // never started: runs only if its owner releases it
  }
  for (const auto& c : descprod_columns()) {
    const auto& v = row[c];
    if (c == "parent" && !out.parent) continue;
    if (!v.empty()) out.fields[c] = v;
  }
  out.fields["id"] = std::to_string(out.id);
  if (!out.fields.count("archive")) out.fields["archive"] = "0";
  if (!out.fields.count("create_time"))
    out.fields["create_time"] = out.fields.count("update_time") ? out.fields["update_time"] : "0";
  out.fields["state"] = std::string(to_string(out.state));
  out.fields["attempt"] = "1";
  out.fields["max_attempts"] = "1";
  out.fields["priority"] = "0";
  out.fields["imported"] = "descprod";
  if (out.state == job_state::held) {
    out.fields["hold"] = "1";
    out.fields["progress"] = "Held. Imported from DESCprod before it ran; release it to run it here.";
  } else if (out.state == job_state::lost && !out.fields.count("progress")) {
    out.fields["progress"] = "Lost. Imported from DESCprod while it ran.";
  }
  return "";
}

}  // namespace

std::optional<std::vector<std::vector<std::string>>> parse_csv(std::string_view text, std::string& why) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, any = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
      continue;
    }
    if (c == '"' && field.empty()) {
      quoted = any = true;
    } else if (c == ',') {
      row.push_back(std::move(field));
      field.clear();
      any = true;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      if (any || !field.empty()) {
        row.push_back(std::move(field));
        rows.push_back(std::move(row));
      }
      row.clear();
      field.clear();
      any = false;
    } else {
      field += c;
      any = true;
    }
  }
  if (quoted) {
    why = "a quoted field is not closed";
    return std::nullopt;
  }
  if (any || !field.empty()) {
    row.push_back(std::move(field));
    rows.push_back(std::move(row));
  }
  return rows;
}

import_result parse_descprod_jobs(std::string_view text, std::string_view format) {
  import_result out;
  std::size_t start = text.find_first_not_of(" \t\r\n");
  bool json = format == "json" || (format.empty() && start != std::string_view::npos &&
                                   (text[start] == '[' || text[start] == '{'));
  std::vector<std::pair<std::string, std::map<std::string, std::string>>> rows;  // where, columns
  const std::set<std::string> known(descprod_columns().begin(), descprod_columns().end());
  if (json) {
    boost::system::error_code ec;
    auto v = boost::json::parse(text, ec);
    if (ec) {
      out.errors.push_back("not JSON: " + ec.message());
      return out;
    }
    const boost::json::array* list = v.if_array();
    if (!list && v.is_object()) {
      // A MySQL/phpMyAdmin export: an object holding the rows' array (e.g. {"job": [...]}).
      for (const auto& kv : v.as_object())
        if (kv.value().is_array()) list = &kv.value().as_array();
    }
    if (!list) {
      out.errors.push_back("expected an array of job objects");
      return out;
    }
    for (std::size_t i = 0; i < list->size(); ++i) {
      std::string where = "jobs[" + std::to_string(i) + "]";
      const auto* o = (*list)[i].if_object();
      if (!o) {
        out.errors.push_back(where + ": not an object");
        continue;
      }
      std::map<std::string, std::string> row;
      for (const auto& kv : *o) {
        std::string k(kv.key());
        if (!known.count(k)) {
          out.errors.push_back(where + ": unknown column '" + k + "'");
          continue;
        }
        const auto& val = kv.value();
        if (val.is_null()) continue;
        if (val.is_string()) row[k] = std::string(val.as_string());
        else if (val.is_int64()) row[k] = std::to_string(val.as_int64());
        else if (val.is_uint64()) row[k] = std::to_string(val.as_uint64());
        else if (val.is_double()) row[k] = std::to_string(static_cast<long long>(val.as_double()));
        else if (val.is_bool()) row[k] = val.as_bool() ? "1" : "0";
        else out.errors.push_back(where + ": column '" + k + "' is not a plain value");
      }
      rows.emplace_back(where, std::move(row));
    }
  } else {
    std::string why;
    auto csv = parse_csv(text, why);
    if (!csv) {
      out.errors.push_back("not CSV: " + why);
      return out;
    }
    if (csv->empty()) {
      out.errors.push_back("no header row");
      return out;
    }
    const auto& header = csv->front();
    for (const auto& h : header)
      if (!known.count(h)) out.errors.push_back("line 1: unknown column '" + h + "'");
    for (std::size_t r = 1; r < csv->size(); ++r) {
      std::string where = "line " + std::to_string(r + 1);
      const auto& cells = (*csv)[r];
      if (cells.size() != header.size()) {
        out.errors.push_back(where + ": " + std::to_string(cells.size()) + " fields, the header has " +
                             std::to_string(header.size()));
        continue;
      }
      std::map<std::string, std::string> row;
      for (std::size_t c = 0; c < header.size(); ++c)
        if (!is_null(cells[c])) row[header[c]] = cells[c];
      rows.emplace_back(where, std::move(row));
    }
  }
  std::set<job_id> seen;
  for (auto& [where, row] : rows) {
    imported_job j;
    auto problem = to_job(std::move(row), j);
    if (problem.empty() && !seen.insert(j.id).second)
      problem = "job " + std::to_string(j.id) + " appears twice";
    if (!problem.empty()) out.errors.push_back(where + ": " + problem);
    else out.jobs.push_back(std::move(j));
  }
  if (!out.errors.empty()) out.jobs.clear();
  return out;
}

}  // namespace descprod
