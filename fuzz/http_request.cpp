// Fuzz target: raw HTTP request bytes as a client sends them to the gateway.
//   1. Beast's request_parser with the gateway's limits (server.hpp's max_header_bytes; a
//      max_body_bytes of 8 KiB, a value the config allows, so that fuzz inputs reach it).
//   2. A complete request goes through handle_request with a Redis client that is never
//      connected: routing, method checks, the public routes and the bearer-token check run for
//      real; any route that needs Redis answers 503. The answer must be one of the statuses the
//      gateway documents, never 500, with a JSON body (error + detail on errors), a correct
//      Content-Length, header values without CR/LF, and it must serialize as HTTP.
//   3. The pure layer behind authentication, by route, on the same request: the query parsers,
//      the Last-Event-ID check, and the body validators of the route (gateway/api.hpp), so that
//      what handle_request would do after a successful token check is covered too.
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>

#include "core/accounts.hpp"
#include "core/redis.hpp"
#include "core/store.hpp"
#include "fuzz/fuzz_support.hpp"
#include "gateway/api.hpp"
#include "gateway/handler.hpp"
#include "gateway/server.hpp"

using namespace descprod;
namespace gw = descprod::gateway;
namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using fuzz::check_api_error;

namespace {

constexpr std::size_t fuzz_max_body = 8 * 1024;

struct harness {
  net::io_context ioc;
  std::unique_ptr<redis_client> redis;
  std::unique_ptr<store> jobs;
  gw::gateway_context ctx;
  int redis_failures = 0;

  harness() {
    redis_endpoint ep;
    ep.unix_path = "/nonexistent/descprod-fuzz.sock";  // never connected
    redis = std::make_unique<redis_client>(ioc.get_executor(), ep);
    jobs = std::make_unique<store>(*redis, "descprod:");
    ctx.apps = fuzz::test_apps();
    ctx.config.max_body_bytes = fuzz_max_body;
    ctx.redis = redis.get();
    ctx.jobs = jobs.get();
    ctx.now = [] { return 1.7e9; };
    ctx.on_redis_failure = [this] { ++redis_failures; };
    ctx.send_to_daemon = [](const std::vector<std::string>&) {
      FUZZ_CHECK(false && "nothing may reach the daemon without Redis");
      return false;
    };
  }
};

harness& h() {
  static harness* instance = new harness();
  return *instance;
}

// Feeds bytes to the parser as the session's reads would; true when a whole request was read.
bool parse(std::string_view in, http::request_parser<http::string_body>& p, boost::system::error_code& ec) {
  while (!in.empty() && !p.is_done()) {
    auto n = p.put(net::buffer(in.data(), in.size()), ec);
    if (ec == http::error::need_more) {
      ec = {};
      if (n == 0) break;  // the rest of the input is not enough: the session would wait
    } else if (ec) {
      return false;
    }
    in.remove_prefix(n);
  }
  // A request with neither Content-Length nor chunked encoding has no body (RFC 9112 6.3): Beast
  // reports it done as soon as its header is.
  return p.is_done();
}

void check_parser_limits(const http::request_parser<http::string_body>& p,
                         const boost::system::error_code& ec) {
  // A body past the limit is refused, by Content-Length as soon as the header is read (so the
  // gateway can answer 413 without reading the body) or while reading a chunked one.
  if (p.is_done()) FUZZ_CHECK(p.get().body().size() <= fuzz_max_body);
  if (ec == http::error::body_limit) FUZZ_CHECK(!p.is_done());
}

void check_response(const gw::response& res, unsigned version) {
  unsigned s = res.result_int();
  // 204 and 303 come from the web pages (favicon, redirects to /login and after form posts).
  FUZZ_CHECK(s == 200 || s == 204 || s == 303 || s == 400 || s == 401 || s == 403 || s == 404 || s == 405 ||
             s == 503);
  FUZZ_CHECK(res.version() == version);
  FUZZ_CHECK(res[http::field::content_length] == std::to_string(res.body().size()));
  for (const auto& f : res) {
    for (char c : f.value()) FUZZ_CHECK(c != '\r' && c != '\n');
  }
  boost::json::value v;
  if (res[http::field::content_type] == "application/json") {
    FUZZ_CHECK(fuzz::parses_as_json(res.body(), &v));
    FUZZ_CHECK(v.is_object());
    if (s >= 400) {
      const auto& o = v.as_object();
      FUZZ_CHECK(o.contains("error") && o.at("error").is_string());
      FUZZ_CHECK(o.contains("detail") && o.at("detail").is_string());
      FUZZ_CHECK(o.at("detail").as_string().size() <= 2048);
    }
  } else if (res[http::field::content_type] == "text/html; charset=utf-8" ||
             res[http::field::content_type] == "text/css; charset=utf-8" ||
             res[http::field::content_type] == "text/javascript; charset=utf-8") {
    // A web page, a page fragment or a static asset (gateway/web*.cpp).
    FUZZ_CHECK(s != 303);
  } else if (s == 204 || s == 303) {
    FUZZ_CHECK(res.body().empty());
    if (s == 303) FUZZ_CHECK(res[http::field::location].starts_with("/"));
  } else {
    FUZZ_CHECK(res[http::field::content_type] == "text/event-stream");
  }
  if (s == 401 && res[http::field::content_type] == "application/json")
    FUZZ_CHECK(res[http::field::www_authenticate] == "Bearer");
  if (s == 405) FUZZ_CHECK(!res[http::field::allow].empty());
  std::ostringstream wire;
  wire << res;
  FUZZ_CHECK(wire.str().size() > res.body().size());
}

// What the handler does after a successful token check, without Redis.
void check_pure_layer(const gw::request& req) {
  auto target = gw::split_target(req.target());
  FUZZ_CHECK(target.path.size() + target.query.size() <= req.target().size());
  auto r = gw::match_route(target.path);
  std::string method(req.method_string());
  if (r.kind == gw::route_kind::not_found) {
    FUZZ_CHECK(!gw::method_allowed(r.kind, method));
    return;
  }
  FUZZ_CHECK(r.id >= 0);
  if (r.kind == gw::route_kind::job) FUZZ_CHECK(r.id > 0);
  bool allowed = gw::method_allowed(r.kind, method);
  FUZZ_CHECK(!allowed || gw::allowed_methods(r.kind).find(method) != std::string_view::npos);

  if (auto token = gw::bearer_token(req[http::field::authorization])) {
    FUZZ_CHECK(!token->empty() && token->size() <= 256);
    for (char c : *token) FUZZ_CHECK(c > ' ' && c != 0x7f);
  }
  std::optional<gw::stream_id> last;
  if (auto e = gw::parse_last_event_id(req["Last-Event-ID"], last)) check_api_error(*e);
  if (!allowed) return;

  const std::string& body = req.body();
  boost::json::value v;
  auto body_json = [&]() -> bool {
    if (auto e = gw::parse_json_body(body, v)) {
      check_api_error(*e);
      return false;
    }
    return true;
  };
  switch (r.kind) {
    case gw::route_kind::jobs:
      if (method == "POST") {
        gw::job_request jr;
        if (body_json()) {
          if (auto e = gw::validate_job(v, h().ctx.apps, jr)) check_api_error(*e);
          else FUZZ_CHECK(check_service_config(jr.config) == 0);
        }
      } else {
        gw::list_query q;
        if (auto e = gw::parse_list_query(target.query, q)) {
          check_api_error(*e);
        } else {
          FUZZ_CHECK(q.limit >= 1 && q.limit <= gw::max_list_limit);
          FUZZ_CHECK(q.offset >= 0 && q.offset <= gw::max_list_offset);
          FUZZ_CHECK(q.jobtype.size() <= gw::max_jobtype_bytes);
          FUZZ_CHECK(!q.parent || *q.parent > 0);
          FUZZ_CHECK(q.text.size() <= gw::max_text_query_bytes);
          FUZZ_CHECK(q.owner.empty() || q.owner == "*" || valid_user_name(q.owner));
          if (q.cursor) {
            // A cursor the gateway would hand out for it reads back the same.
            FUZZ_CHECK(q.cursor->id > 0 && q.offset == 0);
            gw::list_query again;
            std::string text = "sort=" + gw::sort_text(q) + "&cursor=" + gw::cursor_text(q, *q.cursor);
            FUZZ_CHECK(!gw::parse_list_query(text, again));
            FUZZ_CHECK(again.cursor && again.cursor->id == q.cursor->id);
          }
        }
      }
      break;
    case gw::route_kind::jobs_actions: {
      std::string action;
      std::vector<job_id> ids;
      std::optional<gw::list_query> query;
      if (body_json()) {
        if (auto e = gw::parse_actions_body(v, action, ids, query)) {
          check_api_error(*e);
        } else {
          FUZZ_CHECK(ids.empty() != !query.has_value());
          FUZZ_CHECK(ids.size() <= gw::max_action_ids);
          for (auto id : ids) FUZZ_CHECK(id > 0);
          FUZZ_CHECK(!query || (!query->cursor && query->offset == 0));
        }
      }
      break;
    }
    case gw::route_kind::jobs_bulk: {
      std::vector<gw::job_request> jobs;
      if (body_json()) {
        if (auto e = gw::validate_bulk(v, h().ctx.apps, 1000, jobs)) check_api_error(*e);
        else
          for (const auto& j : jobs) FUZZ_CHECK(check_service_config(j.config) == 0);
      }
      break;
    }
    case gw::route_kind::job_log: {
      gw::log_query q;
      if (auto e = gw::parse_log_query(target.query, q)) check_api_error(*e);
      else {
        FUZZ_CHECK(q.lines >= 1 && q.lines <= gw::max_log_lines);
        FUZZ_CHECK(q.q.size() <= gw::max_log_search_bytes);
        FUZZ_CHECK(!(q.text && !q.q.empty()));
        FUZZ_CHECK(q.whole() == (q.all || !q.q.empty()));
      }
      break;
    }
    case gw::route_kind::job_events: {
      bool follow = false;
      auto e = gw::parse_job_events_query(target.query, follow);
      if (e) check_api_error(*e);
      FUZZ_CHECK(gw::is_event_stream(r, method, target.query) == (!e && follow));
      break;
    }
    case gw::route_kind::events: {
      std::optional<job_id> job;
      if (auto e = gw::parse_events_query(target.query, job)) check_api_error(*e);
      else FUZZ_CHECK(!job || *job > 0);
      break;
    }
    case gw::route_kind::job_claim: {
      std::string host;
      if (body_json()) {
        if (auto e = gw::parse_claim_body(v, host)) check_api_error(*e);
      }
      break;
    }
    case gw::route_kind::job_started: {
      gw::started_report rep;
      if (body_json()) {
        if (auto e = gw::parse_started_body(v, rep)) check_api_error(*e);
      }
      break;
    }
    case gw::route_kind::job_progress: {
      gw::progress_report rep;
      if (body_json()) {
        if (auto e = gw::parse_progress_body(v, rep)) check_api_error(*e);
        else FUZZ_CHECK(fuzz::valid_utf8(rep.message));
      }
      break;
    }
    case gw::route_kind::job_finished: {
      gw::finished_report rep;
      if (body_json()) {
        if (auto e = gw::parse_finished_body(v, rep)) check_api_error(*e);
        else FUZZ_CHECK(fuzz::valid_utf8(rep.message));
      }
      break;
    }
    default: break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::silence_logs();
  (void)h();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  http::request_parser<http::string_body> p;
  p.header_limit(gw::max_header_bytes);
  p.body_limit(fuzz_max_body);
  p.eager(true);
  boost::system::error_code ec;
  bool complete = parse(in, p, ec);
  check_parser_limits(p, ec);
  if (!complete) return 0;

  auto req = p.release();
  check_pure_layer(req);

  unsigned version = req.version();
  auto& hs = h();
  auto fut = net::co_spawn(hs.ioc, gw::handle_request(hs.ctx, std::move(req)), net::use_future);
  hs.ioc.restart();
  hs.ioc.run();
  FUZZ_CHECK(fut.wait_for(std::chrono::seconds(0)) == std::future_status::ready);
  auto res = fut.get();  // handle_request never throws
  check_response(res, version);
  return 0;
}
