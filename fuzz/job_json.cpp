// Fuzz target: the gateway's request-body layer (gateway/api.hpp) on arbitrary body bytes:
// parse_json_body, then validate_job, validate_bulk and the runner's report bodies (claim,
// started, progress, finished) on the same value. Invariants:
//   - parse_json_body accepts exactly what Boost.JSON parses; a refusal is 400 bad_json;
//   - an accepted job names a registered jobtype, its config passes check_service_config (so it
//     holds only [A-Za-z0-9:_.-]) and the app's pattern, within max_config_bytes; its howfig, when
//     set, is valid UTF-8 without control characters, within max_config_bytes, matching the app's
//     howfig_pattern if it has one;
//     priority in -1000..1000, parent positive, max_attempts the app's; the object had no other
//     field;
//   - validate_bulk accepts exactly when every item would be accepted alone, and yields the same
//     jobs;
//   - every report field is within its documented range; messages are cut to max_message_bytes
//     and stay valid UTF-8;
//   - every refusal passes check_api_error (4xx, bounded valid-UTF-8 detail, JSON body).
#include <boost/json.hpp>
#include <cstdint>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "core/job.hpp"
#include "core/site_document.hpp"
#include "fuzz/fuzz_support.hpp"
#include "gateway/api.hpp"

using namespace descprod;
namespace gw = descprod::gateway;
using fuzz::check_api_error;
using fuzz::valid_utf8;

namespace {

constexpr std::size_t max_bulk = 64;

bool config_chars_only(const std::string& s) {
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
          c == ':' || c == '_' || c == '.'))
      return false;
  }
  return true;
}

void check_refusal(const gw::api_error& e) {
  check_api_error(e);
  FUZZ_CHECK(e.status() == 400);
  FUZZ_CHECK(e.name() == "bad_request" || e.name() == "bad_json" || e.name() == "invalid_config" ||
             e.name() == "unknown_jobtype");
}

void check_job(const boost::json::value& v, const gw::job_request& r) {
  const auto& o = v.as_object();
  for (const auto& kv : o) {
    auto k = kv.key();
    FUZZ_CHECK(k == "jobtype" || k == "config" || k == "howfig" || k == "priority" || k == "parent");
  }
  const app_def* app = fuzz::test_apps().find(r.jobtype);
  FUZZ_CHECK(app != nullptr);
  FUZZ_CHECK(o.at("jobtype").as_string() == r.jobtype);
  FUZZ_CHECK(o.at("config").as_string() == r.config);
  FUZZ_CHECK(r.config.size() <= gw::max_config_bytes);
  FUZZ_CHECK(check_service_config(r.config) == 0 && config_chars_only(r.config));
  if (app->compiled_pattern) FUZZ_CHECK(std::regex_match(r.config, *app->compiled_pattern));
  if (!r.howfig.empty()) {
    FUZZ_CHECK(r.howfig.size() <= gw::max_config_bytes);
    FUZZ_CHECK(valid_howfig_text(r.howfig));
    for (unsigned char c : r.howfig) FUZZ_CHECK(c >= 0x20 && c != 0x7f);
    if (app->compiled_howfig_pattern) FUZZ_CHECK(std::regex_match(r.howfig, *app->compiled_howfig_pattern));
  }
  FUZZ_CHECK(r.priority >= -1000 && r.priority <= 1000);
  FUZZ_CHECK(!r.parent || *r.parent > 0);
  FUZZ_CHECK(r.max_attempts == app->max_attempts);
}

bool same(const gw::job_request& a, const gw::job_request& b) {
  return a.jobtype == b.jobtype && a.config == b.config && a.howfig == b.howfig && a.priority == b.priority &&
         a.parent == b.parent && a.max_attempts == b.max_attempts;
}

void check_validate_job(const boost::json::value& v) {
  gw::job_request r;
  auto e = gw::validate_job(v, fuzz::test_apps(), r);
  if (e) {
    check_refusal(*e);
    return;
  }
  check_job(v, r);
}

void check_validate_bulk(const boost::json::value& v) {
  std::vector<gw::job_request> jobs;
  auto e = gw::validate_bulk(v, fuzz::test_apps(), max_bulk, jobs);
  if (e) {
    check_refusal(*e);
    return;
  }
  const auto& arr = v.as_object().at("jobs").as_array();
  FUZZ_CHECK(v.as_object().size() == 1);
  FUZZ_CHECK(!arr.empty() && arr.size() <= max_bulk && jobs.size() == arr.size());
  for (std::size_t i = 0; i < arr.size(); ++i) {
    gw::job_request alone;
    FUZZ_CHECK(!gw::validate_job(arr[i], fuzz::test_apps(), alone));
    FUZZ_CHECK(same(alone, jobs[i]));
    check_job(arr[i], jobs[i]);
  }
}

void check_message(const std::string& m) {
  FUZZ_CHECK(m.size() <= gw::max_message_bytes);
  FUZZ_CHECK(valid_utf8(m));
}

void check_reports(const boost::json::value& v) {
  std::string host;
  if (auto e = gw::parse_claim_body(v, host)) {
    check_refusal(*e);
  } else {
    FUZZ_CHECK(!host.empty() && host.size() <= gw::max_host_bytes);
    for (char c : host)
      FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '-' || c == '_');
  }
  gw::started_report s;
  if (auto e = gw::parse_started_body(v, s)) {
    check_refusal(*e);
  } else {
    FUZZ_CHECK(s.attempt >= 1 && s.attempt <= 1'000'000'000);
    FUZZ_CHECK(s.pid >= 0 && s.pid <= INT32_MAX);
    FUZZ_CHECK(s.host.size() <= gw::max_host_bytes && s.rundir.size() <= gw::max_rundir_bytes);
  }
  gw::progress_report p;
  if (auto e = gw::parse_progress_body(v, p)) {
    check_refusal(*e);
  } else {
    FUZZ_CHECK(p.attempt >= 1 && p.attempt <= 1'000'000'000);
    FUZZ_CHECK(p.done.has_value() == p.total.has_value());
    if (p.done) FUZZ_CHECK(*p.done >= 0 && *p.total >= 0);
    check_message(p.message);
  }
  gw::finished_report f;
  if (auto e = gw::parse_finished_body(v, f)) {
    check_refusal(*e);
  } else {
    FUZZ_CHECK(f.attempt >= 1 && f.attempt <= 1'000'000'000);
    FUZZ_CHECK(f.signal >= 0 && f.signal <= 255);
    check_message(f.message);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::silence_logs();
  (void)fuzz::test_apps();
  return 0;
}

// A site's status document (core/site_document.hpp) is an untrusted answer too: whatever the
// bytes, a document read from them has a status that is a lower-case word and texts without
// control characters, each at most site_text_max bytes; a refusal says why.
static void check_site_document(std::string_view body) {
  std::string why;
  auto d = descprod::parse_site_document(body, why);
  if (!d) {
    FUZZ_CHECK(!why.empty());
    return;
  }
  FUZZ_CHECK(!d->status.empty() && d->status.size() <= 32);
  for (char c : d->status)
    FUZZ_CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == ' ');
  for (const std::string* t : {&d->full_name, &d->description, &d->notes, &d->updated_at}) {
    FUZZ_CHECK(t->size() <= descprod::site_text_max);
    for (unsigned char c : *t) FUZZ_CHECK(c >= 0x20 && c != 0x7f);
  }
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  check_site_document(body);
  boost::json::value v;
  auto e = gw::parse_json_body(body, v);
  FUZZ_CHECK(e.has_value() == (body.empty() || !fuzz::parses_as_json(body)));
  if (e) {
    check_refusal(*e);
    FUZZ_CHECK(e->name() == "bad_json");
    return 0;
  }
  check_validate_job(v);
  check_validate_bulk(v);
  check_reports(v);
  return 0;
}
