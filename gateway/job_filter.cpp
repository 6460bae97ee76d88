#include "gateway/job_filter.hpp"

#include <algorithm>
#include <cctype>
#include <iterator>

#include "core/store.hpp"

namespace descprod::gateway {

namespace {

bool in_range(const time_range& r, const std::optional<double>& t) {
  if (!r.active()) return true;
  if (!t) return false;
  if (r.after && *t < *r.after) return false;
  if (r.before && *t >= *r.before) return false;
  return true;
}

std::optional<double> number_at(const redis_reply& reply, int i) {
  if (i < 0 || static_cast<std::size_t>(i) >= reply.elements.size() || reply.elements[i].is_nil())
    return std::nullopt;
  return parse_double(reply.elements[i].as_string());
}

std::string_view text_at(const redis_reply& reply, int i) {
  if (i < 0 || static_cast<std::size_t>(i) >= reply.elements.size() || reply.elements[i].is_nil()) return {};
  return reply.elements[i].str;
}

}  // namespace

bool contains_ignoring_case(std::string_view haystack, std::string_view needle) {
  if (needle.empty()) return true;
  auto lower = [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); };
  auto it = std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end(),
                        [&](char a, char b) { return lower(a) == lower(b); });
  return it != haystack.end();
}

int field_plan::add(const char* name) {
  auto it = std::find(names_.begin(), names_.end(), name);
  if (it != names_.end()) return static_cast<int>(it - names_.begin());
  names_.emplace_back(name);
  return static_cast<int>(names_.size() - 1);
}

field_plan::field_plan(const list_query& q) : q_(q) {
  names_.emplace_back("state");
  if (!q.jobtype.empty()) jobtype_ = add("jobtype");
  if (q.archived) archive_ = add("archive");
  if (!q.text.empty()) {
    config_ = add("config");
    howfig_ = add("howfig");
    progress_ = add("progress");
  }
  if (q.created.active() || q.sort == list_sort::created) created_ = add("create_time");
  if (q.started.active() || q.sort == list_sort::started || q.sort == list_sort::duration)
    started_ = add("start_time");
  if (q.ended.active() || q.sort == list_sort::duration) stopped_ = add("stop_time");
}

redis_reply field_plan::from_find(std::string_view entry) const {
  constexpr std::size_t n = std::size(find_fields);
  std::string_view parts[n];
  std::size_t at = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (at > entry.size()) break;
    // The last field (progress) is the rest, separators and all.
    auto end = i + 1 == n ? std::string_view::npos : entry.find(find_separator, at);
    parts[i] = entry.substr(at, end == std::string_view::npos ? std::string_view::npos : end - at);
    at = end == std::string_view::npos ? entry.size() + 1 : end + 1;
  }
  redis_reply r;
  r.type = redis_reply::kind::array;
  r.elements.resize(names_.size());
  for (std::size_t k = 0; k < names_.size(); ++k) {
    auto& e = r.elements[k];
    e.type = redis_reply::kind::nil;
    for (std::size_t i = 0; i < n; ++i) {
      if (find_fields[i] != names_[k]) continue;
      if (!parts[i].empty()) {
        e.type = redis_reply::kind::string;
        e.str = std::string(parts[i]);
      }
      break;
    }
  }
  return r;
}

std::optional<field_plan::scanned> field_plan::match(job_id id, const redis_reply& r) const {
  if (r.type != redis_reply::kind::array || r.elements.size() != names_.size() || r.elements[0].is_nil())
    return std::nullopt;
  auto state = parse_job_state(r.elements[0].str);
  if (q_.state && state != q_.state) return std::nullopt;
  if (jobtype_ >= 0 && text_at(r, jobtype_) != q_.jobtype) return std::nullopt;
  if (archive_ >= 0 && (text_at(r, archive_) == "1") != *q_.archived) return std::nullopt;
  if (!q_.text.empty() && !contains_ignoring_case(text_at(r, config_), q_.text) &&
      !contains_ignoring_case(text_at(r, howfig_), q_.text) &&
      !contains_ignoring_case(text_at(r, progress_), q_.text))
    return std::nullopt;
  auto created = number_at(r, created_), started = number_at(r, started_), stopped = number_at(r, stopped_);
  if (!in_range(q_.created, created) || !in_range(q_.started, started) || !in_range(q_.ended, stopped))
    return std::nullopt;
  scanned out;
  out.id = id;
  switch (q_.sort) {
    case list_sort::id: break;
    case list_sort::created: out.key = created; break;
    case list_sort::started: out.key = started; break;
    case list_sort::duration:
      // Ended jobs only: a job still running has no duration yet.
      if (started && stopped) out.key = std::max(0.0, *stopped - *started);
      break;
    case list_sort::state:
      if (state) out.key = static_cast<double>(static_cast<int>(*state));
      break;
  }
  return out;
}

bool sorts_before(const list_query& q, const field_plan::scanned& a, const field_plan::scanned& b) {
  if (q.sort != list_sort::id) {
    if (a.key.has_value() != b.key.has_value()) return a.key.has_value();  // no value: last
    if (a.key && *a.key != *b.key) return q.descending ? *a.key > *b.key : *a.key < *b.key;
  }
  return q.descending ? a.id > b.id : a.id < b.id;
}

bool after_cursor(const list_query& q, const field_plan::scanned& j) {
  if (!q.cursor) return true;
  field_plan::scanned c;
  c.id = q.cursor->id;
  c.key = q.sort == list_sort::id ? std::nullopt : q.cursor->value;
  return sorts_before(q, c, j);
}

}  // namespace descprod::gateway
