// descprod-watch ID...: live progress of jobs in the terminal.
// It follows the gateway's Server-Sent Events (GET /api/jobs/<id>/events?follow=1 for one job,
// GET /api/events for several) and draws one line per job: ID, state, a bar from [done/total] when
// the app reports counts, and the message. On a terminal the lines are redrawn in place (ANSI
// cursor-up and erase-line); otherwise a line is printed each time a job's line changes.
// Every (re)connection first re-reads the jobs with GET, so nothing is missed while disconnected;
// events a stream replays that are older than what GET showed are skipped. A stream silent for 40 s
// (the gateway sends a keep-alive every 15 s) is re-opened the same way. When the server has no
// event stream (404, 405) it polls GET every --interval seconds instead. It exits when every job
// is terminal: 0 if all are done, else the return status of the first job that is not (1 when it
// has none).
#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "client/commands.hpp"
#include "client/common.hpp"
#include "client/format.hpp"
#include "client/terminal_text.hpp"
#include "core/job.hpp"

namespace descprod::client {

namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

// A stream with no event for this long is re-opened (and the jobs re-read).
constexpr auto stream_idle = 40s;

struct job_view {
  long long id = 0;
  std::string state;
  std::string message;
  std::optional<done_total> counts;
  std::optional<long long> return_status;
  bool terminal = false;
  // The newest change applied (epoch s). A stream replays history when it is (re)opened; events
  // older than what a GET already showed are stale and skipped.
  double as_of = 0;
};

bool terminal_state(const std::string& s) {
  auto st = parse_job_state(s);
  return st && is_terminal(*st);
}

void apply_job(job_view& v, const json::object& job) {
  v.state = json_string(job, "state");
  v.message = progress_message(json_string(job, "progress"));
  auto done = json_int(job, "done_count");
  auto total = json_int(job, "total_count");
  if (done && total) v.counts = done_total{*done, *total};
  else v.counts = message_counts(v.message);
  v.return_status = json_int(job, "return_status");
  v.terminal = terminal_state(v.state);
  v.as_of = std::max(v.as_of, json_number(job, "update_time").value_or(0));
}

class display {
 public:
  explicit display(bool tty) : tty_(tty) {}

  void draw(const std::vector<job_view>& views) {
    std::size_t width = 0;
    if (tty_) {
      winsize ws{};
      if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1) width = ws.ws_col - 1;
      else width = 79;
    }
    std::vector<std::string> lines;
    for (const auto& v : views) lines.push_back(watch_line(v.id, v.state, v.counts, v.message, width));
    if (tty_) {
      std::string out;
      if (drawn_ > 0) out += "\x1b[" + std::to_string(drawn_) + "A";
      for (const auto& l : lines) out += "\r\x1b[2K" + l + "\n";
      std::cout << out << std::flush;
      drawn_ = lines.size();
      return;
    }
    last_.resize(lines.size());
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (lines[i] == last_[i]) continue;
      std::cout << lines[i] << "\n";
      last_[i] = lines[i];
    }
    std::cout << std::flush;
  }

 private:
  bool tty_;
  std::size_t drawn_ = 0;
  std::vector<std::string> last_;
};

bool all_terminal(const std::vector<job_view>& views) {
  for (const auto& v : views)
    if (!v.terminal) return false;
  return true;
}

// Re-reads every job that is not terminal yet.
void refresh(const api_client& api, std::vector<job_view>& views) {
  for (auto& v : views) {
    if (v.terminal) continue;
    auto j = api.call_ok("GET", "/api/jobs/" + std::to_string(v.id));
    if (j.is_object()) apply_job(v, j.as_object());
  }
}

// Applies one event; returns true when it made a job terminal (its final record is then read).
bool apply_event(const api_client& api, std::vector<job_view>& views, const sse_event& ev) {
  boost::system::error_code ec;
  auto data = json::parse(ev.data, ec);
  if (ec || !data.is_object()) return false;
  const auto& o = data.as_object();
  auto id = json_int(o, "id");
  if (!id) return false;
  for (auto& v : views) {
    if (v.id != *id || v.terminal) continue;
    if (auto t = json_number(o, "time")) {
      if (*t < v.as_of) continue;
      v.as_of = *t;
    }
    std::string state = json_string(o, "state");
    if (!state.empty()) v.state = state;
    if (o.contains("progress")) {
      v.message = progress_message(json_string(o, "progress"));
      if (auto c = message_counts(v.message)) v.counts = c;
    }
    if (terminal_state(v.state)) {
      auto j = api.call_ok("GET", "/api/jobs/" + std::to_string(v.id));
      if (j.is_object()) apply_job(v, j.as_object());
      v.terminal = true;
      return true;
    }
  }
  return false;
}

int final_status(const std::vector<job_view>& views) {
  for (const auto& v : views) {
    if (v.state == "done") continue;
    if (v.return_status && *v.return_status > 0 && *v.return_status < 256 && v.state != "cancelled" &&
        v.state != "lost")
      return static_cast<int>(*v.return_status);
    return 1;
  }
  return 0;
}

}  // namespace

int watch_main(int argc, char** argv) {
  const std::string me = program_name(argc > 0 ? argv[0] : nullptr, "descprod-watch");
  return guarded(me, [&] {
    auto specs = server_options();
    specs.push_back({0, "interval", true});
    specs.push_back({0, "plain", false});
    auto a = parse_args(arguments(argc, argv), specs);
    if (a.has("help")) {
      std::cout << "Usage: " << me << " [--plain] [--interval S] [--url URL] [--token-file FILE] ID...\n"
                << "Shows live progress of jobs, one line per job (a bar when the application reports\n"
                << "[done/total]), until all of them have ended. Exit status: 0 if all are done,\n"
                << "else the return status of the first job that is not done (1 if it has none).\n"
                << "      --plain           print a new line per change even on a terminal\n"
                << "      --interval S      seconds between polls when the server has no event\n"
                << "                        stream (default 1)\n"
                << "      --url URL         server (default $DESCPROD_URL, else the stored URL,\n"
                << "                        else http://127.0.0.1:8080)\n"
                << "      --token-file F    read the API token from F (default $DESCPROD_TOKEN, else the\n"
                << "                        file descprod-login wrote)\n"
                << "  -h, --help            show this help\n";
      return exit_code::ok;
    }
    if (a.positional.empty()) throw usage_error("at least one job ID is required");
    std::vector<job_view> views;
    for (const auto& p : a.positional) {
      job_view v;
      v.id = parse_job_id(p);
      views.push_back(v);
    }
    long long interval_s = 1;
    if (auto i = a.value("interval")) interval_s = parse_int(*i, 1, 3600, "interval");
    auto env = process_env();
    api_client api(resolve_url(a.value("url"), env), resolve_token(a.value("token-file"), env));

    const char* term = std::getenv("TERM");
    bool tty = ::isatty(STDOUT_FILENO) && !a.has("plain") && !(term && std::string(term) == "dumb");
    display out(tty);

    refresh(api, views);
    out.draw(views);

    const std::string target =
        views.size() == 1 ? "/api/jobs/" + std::to_string(views[0].id) + "/events?follow=1" : "/api/events";
    bool polling = false;
    std::string last_event_id;
    auto backoff = 1s;
    bool warned = false;
    while (!all_terminal(views)) {
      if (polling) {
        std::this_thread::sleep_for(std::chrono::seconds(interval_s));
        refresh(api, views);
        out.draw(views);
        continue;
      }
      try {
        header_list h = api.auth_headers();
        if (!last_event_id.empty()) h.emplace_back("Last-Event-ID", last_event_id);
        sse_stream stream(api.url(), target, h);
        if (stream.status() != 200) {
          api_reply r;
          r.status = stream.status();
          r.raw = stream.error_body();
          boost::system::error_code ec;
          r.body = json::parse(r.raw, ec);
          if (r.status == 401 || r.status == 403) throw error_for(r);
          if (r.status == 404 || r.status == 405 || r.status == 400) {
            polling = true;  // no event stream on this server: poll
            continue;
          }
          throw error_for(r);
        }
        // Catch up with what happened before the stream was open.
        refresh(api, views);
        out.draw(views);
        backoff = 1s;
        warned = false;
        while (stream.open() && !all_terminal(views)) {
          auto events = stream.next(stream_idle);
          bool changed = false;
          for (const auto& ev : events) {
            if (!ev.id.empty()) last_event_id = ev.id;
            apply_event(api, views, ev);
            changed = true;
          }
          if (changed) out.draw(views);
        }
      } catch (const client_error& e) {
        if (e.code != exit_code::unreachable) throw;
        if (!warned) std::cerr << me << ": " << terminal_safe(e.what()) << "; retrying\n";
        warned = true;
        std::this_thread::sleep_for(backoff);
        backoff = std::min(backoff * 2, std::chrono::seconds(10));
      } catch (const unreachable& e) {
        if (!warned) std::cerr << me << ": " << terminal_safe(e.what()) << "; retrying\n";
        warned = true;
        std::this_thread::sleep_for(backoff);
        backoff = std::min(backoff * 2, std::chrono::seconds(10));
      }
    }
    out.draw(views);
    return final_status(views);
  });
}

}  // namespace descprod::client
