// What GET /api/jobs looks at in each job while it scans (docs/api.md#get-apijobs--find-jobs):
// which hash fields a query needs, whether a job matches, and the order of a sorted answer. Pure,
// so unit tests call it directly; jobs_service.cpp fetches the fields (HMGET) and pages the result.
//
// Thread-safety: pure functions and a value type.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/redis.hpp"
#include "gateway/api.hpp"

namespace descprod::gateway {

// The fields one query reads, "state" first (a nil state means the job is gone), each only once.
class field_plan {
 public:
  explicit field_plan(const list_query& q);
  const std::vector<std::string>& names() const { return names_; }
  // A job as scanned: its ID and its sort value (none when the job lacks it, e.g. not started).
  struct scanned {
    job_id id = 0;
    std::optional<double> key;
  };
  // The job's HMGET reply (in names() order) when it matches the query's filters, else nullopt.
  std::optional<scanned> match(job_id id, const redis_reply& hmget) const;
  // A job's entry in its owner's find index (store.hpp, find_fields) as the HMGET reply of
  // names(): an empty field is nil, as an absent hash field.
  redis_reply from_find(std::string_view entry) const;

 private:
  int add(const char* name);
  const list_query& q_;
  std::vector<std::string> names_;
  int jobtype_ = -1, archive_ = -1, config_ = -1, howfig_ = -1, progress_ = -1;
  int created_ = -1, started_ = -1, stopped_ = -1;
};

// The answer's order: by the sort value (jobs without one last), then by ID, both in the
// query's direction. before(a, b): a comes first.
bool sorts_before(const list_query& q, const field_plan::scanned& a, const field_plan::scanned& b);
// Whether a job comes after the query's cursor (true when there is none).
bool after_cursor(const list_query& q, const field_plan::scanned& j);
// A substring search ignoring ASCII case.
bool contains_ignoring_case(std::string_view haystack, std::string_view needle);

}  // namespace descprod::gateway
