// The web pages' HTML and the small parsers they need (see web.hpp). Pages are built as strings;
// every value that comes from a user, an application or Redis passes through esc() (text) or
// attr() (attribute values, always double-quoted). Layout and behaviour: app.css and app.js in
// web_assets.cpp.
#include "gateway/web.hpp"

#include <sodium.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <initializer_list>

#include "core/accounts.hpp"
#include "core/text.hpp"

namespace descprod::gateway::web {

namespace {

std::string esc(std::string_view s) { return html_escape(s); }

std::string get(const job_record& r, const char* k) {
  auto it = r.find(k);
  return it == r.end() ? std::string() : it->second;
}

bool terminal_state(const std::string& st) {
  auto s = parse_job_state(st);
  return s && is_terminal(*s);
}

std::optional<double> to_double(std::string_view s) {
  if (s.empty()) return std::nullopt;
  try {
    std::size_t used = 0;
    std::string copy(s);
    double d = std::stod(copy, &used);
    if (used != copy.size() || !std::isfinite(d)) return std::nullopt;
    return d;
  } catch (...) {
    return std::nullopt;
  }
}

std::optional<long long> to_integer(std::string_view s) {
  auto d = to_double(s);
  if (!d || std::fabs(*d) > 9e18) return std::nullopt;
  return static_cast<long long>(*d);
}

std::string hidden(std::string_view name, std::string_view value) {
  return "<input type=\"hidden\" name=\"" + esc(name) + "\" value=\"" + esc(value) + "\">";
}

// A POST form with one button, the CSRF token and the `next` target. `name`, when given, is the
// button's accessible name (it starts with the visible label: "Cancel job 12").
std::string action_form(std::string_view action, std::string_view label, std::string_view csrf,
                        std::string_view next, std::string_view confirm = "", std::string_view cls = "",
                        std::string_view name = "") {
  std::string out = "<form method=\"post\" action=\"" + esc(action) + "\" class=\"inline\"";
  if (!confirm.empty()) out += " data-confirm=\"" + esc(confirm) + "\"";
  out += ">" + hidden("csrf", csrf);
  if (!next.empty()) out += hidden("next", next);
  out += "<button type=\"submit\"";
  if (!cls.empty()) out += " class=\"" + esc(cls) + "\"";
  if (!name.empty()) out += " aria-label=\"" + esc(name) + "\"";
  out += ">" + esc(label) + "</button></form>";
  return out;
}

// A column header.
std::string col(std::string_view text) { return "<th scope=\"col\">" + esc(text) + "</th>"; }
std::string col_headers(std::initializer_list<std::string_view> names) {
  std::string out;
  for (auto n : names) out += col(n);
  return out;
}

std::string state_badge(const std::string& state) {
  return "<span class=\"state s-" + esc(state) + "\">" + esc(state) + "</span>";
}

// Whether the page offers Release: a held job, or one waiting for its dependencies that was
// submitted held (released now, it becomes ready rather than held once they are met).
bool releasable(const job_record& job) {
  std::string state = get(job, "state");
  return state == "held" || (state == "waiting" && get(job, "hold") == "1");
}

std::string progress_cell(const job_record& job) {
  std::string out;
  auto done = to_integer(get(job, "done_count"));
  auto total = to_integer(get(job, "total_count"));
  if (done && total && *total > 0) {
    out += "<progress value=\"" + std::to_string(std::min(*done, *total)) + "\" max=\"" +
           std::to_string(*total) + "\"></progress> <span class=\"count\">" + std::to_string(*done) + "/" +
           std::to_string(*total) + "</span> ";
  }
  out += "<span class=\"msg\">" + esc(get(job, "progress")) + "</span>";
  return out;
}

// "3 children, 2 done, 1 running" (or "3 jobs, ..." with the nouns given): the total, then each
// state's count in the states' order.
std::string rollup_text(const std::map<std::string, long long>& rollup, long long total,
                        std::string_view one = "child", std::string_view many = "children") {
  std::string out = std::to_string(total) + " " + std::string(total == 1 ? one : many);
  for (auto st : all_job_states()) {
    auto it = rollup.find(std::string(to_string(st)));
    if (it == rollup.end() || it->second == 0) continue;
    out += ", " + std::to_string(it->second) + " " + std::string(to_string(st));
  }
  return out;
}

// A job's parent: a link to its page, or its ID marked "(deleted)" when the presenter found it
// gone ("parent_gone").
std::string parent_link(const job_record& job) {
  std::string parent = get(job, "parent");
  if (get(job, "parent_gone") == "1")
    return esc(parent) + " <small class=\"gone\" title=\"this job was deleted\">(deleted)</small>";
  return "<a href=\"/jobs/" + esc(parent) + "\">" + esc(parent) + "</a>";
}

// The jobs table of an array: every job of it, archived ones too (the roll-up counts them all).
std::string array_table_link(std::string_view array) { return "/?view=all&array=" + std::string(array); }

// The jobs table. `sort_header`, when given, renders the header of a sortable column (else
// nullptr: plain headers).
using header_fn = std::string (*)(std::string_view label, const void* ctx);
std::string jobs_table(const std::vector<job_record>& jobs, const page_user& user, double now_s,
                       std::string_view next, std::string_view id, std::string_view extra,
                       header_fn sort_header = nullptr, const void* header_ctx = nullptr) {
  std::string out =
      std::string("<div class=\"scroll\"") + (jobs.empty() ? " hidden" : "") +
      "><table class=\"jobs\" id=\"" + esc(id) + "\"" + std::string(extra) +
      "><thead><tr><th scope=\"col\" class=\"c-sel\"><input type=\"checkbox\" class=\"selectall\" "
      "aria-label=\"Select every job on this page\"></th>";
  for (std::string_view label :
       {"ID", "Owner", "Parent", "Type", "Config", "Howfig", "State", "Progress", "Created / started",
        "Duration", "Host", "Run directory", "Return status", "Actions"}) {
    std::string th = sort_header ? sort_header(label, header_ctx) : std::string();
    if (th.empty() && label == "Owner")
      th = "<th scope=\"col\" class=\"c-owner\">Owner</th>";  // shown by data-owners
    out += th.empty() ? col(label) : th;
  }
  out += "</tr></thead><tbody>";
  for (const auto& j : jobs) out += job_row(j, user, now_s, next);
  out += "</tbody></table></div>";
  if (jobs.empty()) out += "<p class=\"empty\">No jobs here.</p>";
  return out;
}

// The home page's URL for its view (filters and sort) at `page`; `all` and `sort` as given.
std::string home_link(const home_view& v, bool all, std::string_view sort, int page) {
  std::string q;
  auto add = [&](const std::string& kv) { q += (q.empty() ? "?" : "&") + kv; };
  if (all) add("view=all");
  if (!v.state.empty()) add("state=" + url_encode(v.state));
  if (!v.jobtype.empty()) add("jobtype=" + url_encode(v.jobtype));
  if (!v.text.empty()) add("q=" + url_encode(v.text));
  if (!v.owner.empty()) add("owner=" + url_encode(v.owner));
  if (v.array > 0) add("array=" + std::to_string(v.array));
  if (!sort.empty() && sort != "-id") add("sort=" + url_encode(sort));
  if (page > 1) add("page=" + std::to_string(page));
  return "/" + q;
}
std::string home_link(const home_view& v, int page) { return home_link(v, v.all, v.sort, page); }

// The sortable columns of the home table and the sort key each sets.
std::string_view sort_key_of(std::string_view label) {
  if (label == "ID") return "id";
  if (label == "State") return "state";
  if (label == "Created / started") return "started";
  if (label == "Duration") return "duration";
  return {};
}

// A sortable header: a link that sorts by the column (descending first; again: ascending), and
// aria-sort on the column the table is sorted by.
std::string home_sort_header(std::string_view label, const void* ctx) {
  const auto& v = *static_cast<const home_view*>(ctx);
  auto key = sort_key_of(label);
  if (key.empty()) return {};
  std::string current = v.sort.empty() ? "-id" : v.sort;
  bool desc = !current.empty() && current.front() == '-';
  std::string_view current_key = std::string_view(current).substr(desc ? 1 : 0);
  bool on = current_key == key;
  std::string target = on && desc ? std::string(key) : "-" + std::string(key);
  std::string out = "<th scope=\"col\"";
  if (on) out += std::string(" aria-sort=\"") + (desc ? "descending" : "ascending") + "\"";
  out += "><a class=\"sort\" href=\"" + esc(home_link(v, v.all, target, 1)) + "\" title=\"Sort by " +
         esc(label) + (target.front() == '-' ? ", highest first" : ", lowest first") + "\">" + esc(label);
  if (on) out += desc ? " <span aria-hidden=\"true\">▼</span>" : " <span aria-hidden=\"true\">▲</span>";
  out += "</a></th>";
  return out;
}

}  // namespace

// ---- routing --------------------------------------------------------------------------------

// ---- forms, cookies, CSRF -------------------------------------------------------------------

std::optional<std::map<std::string, std::string>> parse_form(std::string_view body) {
  auto pairs = parse_urlencoded(body);
  if (!pairs) return std::nullopt;
  std::map<std::string, std::string> out;
  for (auto& [k, v] : *pairs) out[k] = std::move(v);  // a repeated field: the last one
  return out;
}

std::string cookie_value(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    auto semi = header.find(';');
    auto part = header.substr(0, semi);
    header = semi == std::string_view::npos ? std::string_view() : header.substr(semi + 1);
    while (!part.empty() && (part.front() == ' ' || part.front() == '\t')) part.remove_prefix(1);
    while (!part.empty() && (part.back() == ' ' || part.back() == '\t')) part.remove_suffix(1);
    auto eq = part.find('=');
    if (eq == std::string_view::npos) continue;
    if (part.substr(0, eq) != name) continue;
    auto v = part.substr(eq + 1);
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    return std::string(v);
  }
  return {};
}

std::string set_cookie(std::string_view name, std::string_view value, bool secure, int max_age_s) {
  std::string out = std::string(name) + "=" + std::string(value) + "; Path=/; HttpOnly; SameSite=Strict";
  if (secure) out += "; Secure";
  if (max_age_s >= 0) out += "; Max-Age=" + std::to_string(max_age_s);
  return out;
}

bool tokens_equal(std::string_view a, std::string_view b) {
  if (a.empty() || b.empty() || a.size() != b.size()) return false;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool origin_allowed(std::string_view origin, std::string_view host) {
  if (origin.empty()) return true;
  auto scheme_end = origin.find("://");
  if (scheme_end == std::string_view::npos) return false;  // "null" and garbage
  auto scheme = origin.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https") return false;
  auto rest = origin.substr(scheme_end + 3);
  if (rest.find('/') != std::string_view::npos) return false;
  if (host.empty()) return false;
  auto lower = [](std::string_view s) {
    std::string o(s);
    for (auto& c : o) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return o;
  };
  return lower(rest) == lower(host);
}

std::optional<std::vector<job_id>> parse_after_field(std::string_view text, std::string& error) {
  std::vector<job_id> out;
  std::size_t i = 0;
  while (i < text.size()) {
    if (text[i] == ',' || text[i] == ' ' || text[i] == '\t') {
      ++i;
      continue;
    }
    std::size_t end = text.find_first_of(", \t", i);
    if (end == std::string_view::npos) end = text.size();
    auto item = text.substr(i, end - i);
    i = end;
    bool digits = item.find_first_not_of("0123456789") == std::string_view::npos;
    long long id = 0;
    if (digits && item.size() <= 18) id = std::stoll(std::string(item));
    if (!digits || item.size() > 18 || id <= 0) {
      std::string shown(item.substr(0, 24));
      if (item.size() > 24) shown += "…";
      error = "After: “" + shown +
              "” is not a job ID. Give the IDs of the jobs to wait for, separated by commas (e.g. 12, 15).";
      return std::nullopt;
    }
    out.push_back(id);
  }
  return out;
}

std::string safe_next(std::string_view next, std::string_view fallback) {
  if (next.empty() || next.size() > 1000 || next.front() != '/') return std::string(fallback);
  if (next.size() > 1 && (next[1] == '/' || next[1] == '\\')) return std::string(fallback);
  for (unsigned char c : next)
    if (c < 0x20 || c == 0x7f || c == '\\') return std::string(fallback);
  return std::string(next);
}

// ---- formatting -----------------------------------------------------------------------------

std::string html_escape(std::string_view raw) {
  auto s = sanitize_utf8(raw);
  std::string out;
  out.reserve(s.size() + 16);
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string format_time(std::string_view epoch_s) {
  auto d = to_double(epoch_s);
  if (!d || *d < 0 || *d > 32503680000.0) return {};
  std::time_t t = static_cast<std::time_t>(*d);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

std::string time_html(std::string_view epoch_s) {
  auto text = format_time(epoch_s);
  if (text.empty()) return {};
  std::string iso = text;
  iso[10] = 'T';
  return "<time datetime=\"" + esc(iso) + "Z\">" + esc(text) + " UTC</time>";
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) seconds = 0;
  long long s = static_cast<long long>(seconds);
  char buf[48];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
  return buf;
}

std::string job_duration(const job_record& job, double now_s) {
  auto start = to_double(get(job, "start_time"));
  if (!start) return {};
  auto stop = to_double(get(job, "stop_time"));
  double end = stop ? *stop : now_s;
  if (!stop && terminal_state(get(job, "state"))) {
    auto upd = to_double(get(job, "update_time"));
    end = upd ? *upd : *start;
  }
  return format_duration(end - *start);
}

// ---- pages ----------------------------------------------------------------------------------

namespace {
// A navigation link, marked as the current page when it is.
std::string nav_link(std::string_view href, std::string_view text, bool current) {
  return "<a href=\"" + esc(href) + "\"" + (current ? " aria-current=\"page\"" : "") + ">" + esc(text) +
         "</a>";
}

// The flash: a status (an error: an alert) that app.js focuses after an action, with its link.
std::string flash_html(const flash& f) {
  if (f.text.empty()) return {};
  std::string text = esc(f.text);
  if (!f.link.empty()) {
    std::string label = f.link_text.empty() ? f.link : f.link_text;
    std::string a = "<a href=\"" + esc(safe_next(f.link, "/")) + "\">" + esc(label) + "</a>";
    auto at = f.link_text.empty() ? std::string::npos : f.text.find(f.link_text);
    if (at == std::string::npos) text += " " + a;
    else text = esc(f.text.substr(0, at)) + a + esc(f.text.substr(at + f.link_text.size()));
  }
  return std::string("<p class=\"flash") + (f.error ? " error\" role=\"alert\"" : "\" role=\"status\"") +
         " id=\"flash\" tabindex=\"-1\">" + text + "</p>";
}
}  // namespace

std::string layout(std::string_view title, std::string_view page, const page_user* user, const flash& f,
                   std::string_view body, std::string_view body_attrs) {
  std::string out =
      "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
      "<meta name=\"color-scheme\" content=\"light dark\">";
  if (user) out += "<meta name=\"csrf-token\" content=\"" + esc(user->csrf) + "\">";
  // theme.js runs before the body is parsed (no defer): a stored theme applies from the first paint.
  out += "<title>" + esc(title) +
         " · DESCprod</title><script src=\"/static/theme.js\"></script>"
         "<link rel=\"stylesheet\" href=\"/static/app.css\">"
         "<script src=\"/static/app.js\" defer></script></head>\n<body data-page=\"" +
         esc(page) + "\"";
  if (user) out += " data-user=\"" + esc(user->name) + "\"";
  out += std::string(body_attrs) +
         ">\n<a class=\"skip\" href=\"#main\">Skip to content</a>"
         "<header><nav aria-label=\"Site\"><a class=\"brand\" href=\"/\">DESCprod</a>";
  // The theme toggle works only with the script, which shows it.
  const std::string toggle =
      "<button type=\"button\" class=\"theme-toggle\" id=\"theme-toggle\" aria-pressed=\"false\" "
      "hidden>Dark mode</button>";
  if (user) {
    out += nav_link("/", "Jobs", page == "home") + nav_link("/status", "Status", page == "status") +
           nav_link("/tokens", "API tokens", page == "tokens");
    if (user->admin) out += nav_link("/admin", "Admin", page == "admin");
    out +=
        nav_link("/help", "Help", page == "help") +
        "<span class=\"spacer\"></span>"
        "<span class=\"site-status\" id=\"site-status\" role=\"status\" aria-label=\"Site status\"></span>"
        "<span class=\"live\" id=\"live\" role=\"status\" title=\"live updates\" data-status=\"off\">live</span>" +
        toggle +
        "<button type=\"button\" class=\"theme-toggle\" id=\"notify-toggle\" aria-pressed=\"false\" "
        "title=\"Notify me when my jobs end (this browser)\" hidden>Notify me</button>"
        "<span class=\"who\">" +
        esc(user->name) + (user->admin ? " (admin)" : "") + "</span>" +
        action_form("/logout", "Log out", user->csrf, "");
  } else {
    out += nav_link("/help", "Help", page == "help") + "<span class=\"spacer\"></span>" + toggle +
           nav_link("/login", "Log in", page == "login") +
           nav_link("/register", "Register", page == "register");
  }
  out += "</nav></header>\n<main id=\"main\" tabindex=\"-1\">";
  out += flash_html(f);
  // Live changes the script announces (a job's new state on its page).
  if (user) out += "<p class=\"sr-only\" id=\"announce\" aria-live=\"polite\"></p>";
  out += body;
  out += "</main></body></html>\n";
  return out;
}

std::string login_page(std::string_view csrf, const flash& f, std::string_view username,
                       const std::vector<login_button>& providers) {
  // The providers' buttons first: most people log in with the identity they have.
  std::string buttons;
  for (const auto& p : providers)
    buttons +=
        "<a class=\"button oidc-login\" href=\"/login/oidc/" + esc(p.name) + "\">" + esc(p.label) + "</a>";
  if (!buttons.empty())
    buttons = "<div class=\"stack oidc-logins\">" + buttons +
              "</div><p class=\"or\">or with a password of this service</p>";
  std::string body = "<section class=\"card narrow\"><h1>Log in</h1>" + buttons +
                     "<form method=\"post\" action=\"/login\" class=\"stack\">" + hidden("csrf", csrf) +
                     "<label>User name <input name=\"username\" autocomplete=\"username\" required "
                     "maxlength=\"64\" value=\"" +
                     esc(username) +
                     "\"></label>"
                     "<label>Password <input name=\"password\" type=\"password\" "
                     "autocomplete=\"current-password\" required></label>"
                     "<button type=\"submit\">Log in</button></form>"
                     "<p>No account yet? <a href=\"/register\">Register</a>; an administrator approves new "
                     "accounts.</p></section>";
  return layout("Log in", "login", nullptr, f, body);
}

std::string register_page(std::string_view csrf, const flash& f, std::string_view username,
                          std::string_view email) {
  std::string body =
      "<section class=\"card narrow\"><h1>Register</h1>"
      "<form method=\"post\" action=\"/register\" class=\"stack\">" +
      hidden("csrf", csrf) +
      "<label>User name <input name=\"username\" autocomplete=\"username\" required "
      "maxlength=\"64\" pattern=\"[a-z0-9][a-z0-9_.\\-]*\" value=\"" +
      esc(username) +
      "\"><small>lower-case letters, digits, _ . -</small></label>"
      "<label>E-mail <input name=\"email\" type=\"email\" required maxlength=\"254\" value=\"" +
      esc(email) +
      "\"></label>"
      "<label>Password <input name=\"password\" type=\"password\" autocomplete=\"new-password\" "
      "required minlength=\"8\"></label>"
      "<button type=\"submit\">Register</button></form>"
      "<p>Your account starts <em>pending</em>: you can log in once an administrator has "
      "approved it. <a href=\"/login\">Log in</a></p></section>";
  return layout("Register", "register", nullptr, f, body);
}

std::string job_row(const job_record& job, const page_user& user, double now_s, std::string_view next) {
  std::string id = get(job, "id");
  std::string state = get(job, "state");
  std::string parent = get(job, "parent");
  bool archived = get(job, "archive") == "1";
  std::string start = get(job, "start_time");
  std::string shown_time = start.empty() ? get(job, "create_time") : start;
  std::string out = "<tr data-job=\"" + esc(id) + "\" data-owner=\"" + esc(get(job, "descname")) +
                    "\" data-state=\"" + esc(state) + "\" data-archive=\"" + (archived ? "1" : "0") +
                    "\" data-start=\"" + esc(start) + "\" data-stop=\"" + esc(get(job, "stop_time")) +
                    "\" data-parent=\"" + esc(parent) + "\">";
  // The selection for the actions on many jobs (the home page's form "bulkform"; hidden elsewhere).
  out += "<td class=\"c-sel\"><input type=\"checkbox\" name=\"ids\" value=\"" + esc(id) +
         "\" form=\"bulkform\" aria-label=\"Select job " + esc(id) + "\"></td>";
  out += "<td class=\"c-id\" data-label=\"ID\"><a href=\"/jobs/" + esc(id) + "\">" + esc(id) + "</a></td>";
  out += "<td class=\"c-owner\" data-label=\"Owner\">" + esc(get(job, "descname")) + "</td>";
  out += "<td class=\"c-parent\" data-label=\"Parent\">";
  if (!parent.empty()) out += parent_link(job);
  out += "</td><td class=\"c-type\" data-label=\"Type\">" + esc(get(job, "jobtype")) + "</td>";
  out += "<td class=\"c-config\" data-label=\"Config\"><code>" + esc(get(job, "config")) + "</code></td>";
  out += "<td class=\"c-howfig\" data-label=\"Howfig\"><code>" + esc(get(job, "howfig")) + "</code></td>";
  out += "<td class=\"c-state\" data-label=\"State\">" + state_badge(state) + "</td>";
  out += "<td class=\"c-progress\" data-label=\"Progress\">" + progress_cell(job) + "</td>";
  out += "<td class=\"c-time\" data-label=\"Created / started\">" + time_html(shown_time) + "</td>";
  out += "<td class=\"c-duration\" data-label=\"Duration\">" + esc(job_duration(job, now_s)) + "</td>";
  out += "<td class=\"c-host\" data-label=\"Host\">" + esc(get(job, "host")) + "</td>";
  out +=
      "<td class=\"c-rundir\" data-label=\"Run directory\"><code>" + esc(get(job, "rundir")) + "</code></td>";
  out += "<td class=\"c-rc\" data-label=\"Return status\">" + esc(get(job, "return_status")) + "</td>";
  out += "<td class=\"c-actions\" data-label=\"Actions\"><a class=\"button\" href=\"/?copy=" + esc(id) +
         "#create\" aria-label=\"Copy job " + esc(id) + "\">Copy</a>";
  std::string base = "/jobs/" + id + "/";
  std::string of = " job " + id;
  if (releasable(job))
    out += action_form(base + "release", "Release", user.csrf, next, "", "", "Release" + of);
  if (!terminal_state(state))
    out +=
        action_form(base + "cancel", "Cancel", user.csrf, next, "Cancel job " + id + "?", "", "Cancel" + of);
  if (archived)
    out += action_form(base + "unarchive", "Unarchive", user.csrf, next, "", "", "Unarchive" + of);
  else out += action_form(base + "archive", "Archive", user.csrf, next, "", "", "Archive" + of);
  if (terminal_state(state)) {
    out += action_form(base + "resubmit", "Resubmit", user.csrf, next, "", "", "Resubmit" + of);
    out += action_form(base + "delete", "Delete", user.csrf, next,
                       "Delete job " + id + "? This cannot be undone.", "danger", "Delete" + of);
  }
  out += "</td></tr>";
  return out;
}

std::string actions_message(const std::string& action, std::size_t done, const std::string& first_failure,
                            std::size_t failed, bool truncated) {
  std::string verb = action == "cancel"      ? "Cancelled (or asked to stop)"
                     : action == "release"   ? "Released"
                     : action == "archive"   ? "Archived"
                     : action == "unarchive" ? "Unarchived"
                     : action == "delete"    ? "Deleted"
                                             : "Resubmitted";
  auto jobs = [](std::size_t n) { return std::to_string(n) + (n == 1 ? " job" : " jobs"); };
  std::string out = verb + " " + jobs(done) + ".";
  if (failed > 0) {
    out += " " + jobs(failed) + " could not be: " + first_failure;
    if (failed > 1) out += " (and " + std::to_string(failed - 1) + " more)";
    out += ".";
  }
  if (truncated) out += " Only the first " + std::to_string(max_action_jobs) + " matching jobs were taken.";
  return out;
}

std::string home_page(const home_view& v) {
  std::string next = home_link(v, v.page);
  std::string body =
      "<section class=\"card\" id=\"create\"><h2>Submit a job</h2>"
      "<form method=\"post\" action=\"/jobs\" class=\"create\">" +
      hidden("csrf", v.user.csrf) + "<label>Application <select name=\"jobtype\" id=\"jobtype\" required>";
  if (v.apps) {
    for (const auto& [name, app] : v.apps->apps) {
      body += "<option value=\"" + esc(name) + "\"";
      if (name == v.form.jobtype) body += " selected";
      body += ">" + esc(name) + "</option>";
    }
  }
  body +=
      "</select></label>"
      "<label>Config <input name=\"config\" required maxlength=\"512\" "
      "autocomplete=\"off\" value=\"" +
      esc(v.form.config) +
      "\"></label>"
      "<label>Howfig <input name=\"howfig\" maxlength=\"512\" autocomplete=\"off\" value=\"" +
      esc(v.form.howfig) +
      "\"></label>"
      "<label>Priority <input name=\"priority\" type=\"number\" min=\"-1000\" max=\"1000\" "
      "value=\"" +
      std::to_string(v.form.priority) +
      "\"></label>"
      // Dependencies: the job waits until these jobs have ended (after: each one done).
      "<label>After (job IDs, comma-separated) <input name=\"after\" id=\"after\" autocomplete=\"off\" "
      "placeholder=\"e.g. 12, 15\" value=\"" +
      esc(v.form.after) +
      "\"></label>"
      "<label class=\"check\"><input type=\"checkbox\" name=\"hold\" value=\"1\" id=\"hold\"" +
      (v.form.hold ? std::string(" checked") : std::string()) +
      "> Hold until I release it</label>"
      "<button type=\"submit\">Submit</button></form><dl class=\"apphelp\" id=\"apphelp\">";
  if (v.apps) {
    for (const auto& [name, app] : v.apps->apps) {
      body += "<div data-app=\"" + esc(name) + "\"><dt>" + esc(name) + "</dt><dd>" +
              esc(app.help.empty() ? std::string("(no description)") : app.help);
      if (!app.pattern.empty())
        body += " <small>Config pattern: <code>" + esc(app.pattern) + "</code></small>";
      body += "</dd></div>";
    }
  }
  body += "</dl></section>";

  // Filters.
  body +=
      "<section class=\"card\"><div class=\"toolbar\"><h1 id=\"jobs-heading\">Jobs</h1><span class=\"filters\">";
  body += std::string("<a href=\"") + esc(home_link(v, false, v.sort, 1)) + "\"" +
          (v.all ? "" : " class=\"on\" aria-current=\"true\"") + ">Active</a>";
  body += std::string("<a href=\"") + esc(home_link(v, true, v.sort, 1)) + "\"" +
          (v.all ? " class=\"on\" aria-current=\"true\"" : "") + ">All</a>";
  body +=
      "<form method=\"get\" action=\"/\" class=\"inline filterform\" role=\"search\" aria-label=\"Find jobs\">";
  if (v.all) body += hidden("view", "all");
  if (!v.sort.empty() && v.sort != "-id") body += hidden("sort", v.sort);
  if (v.array > 0) body += hidden("array", std::to_string(v.array));
  body +=
      "<label for=\"state-filter\" class=\"inline-label\">State</label>"
      "<select name=\"state\" id=\"state-filter\" data-autosubmit=\"1\"><option value=\"\">any state</option>";
  for (auto st : all_job_states()) {
    std::string s(to_string(st));
    body += "<option value=\"" + s + "\"" + (s == v.state ? " selected" : "") + ">" + s + "</option>";
  }
  body +=
      "</select><label for=\"type-filter\" class=\"inline-label\">Type</label>"
      "<select name=\"jobtype\" id=\"type-filter\" data-autosubmit=\"1\"><option value=\"\">any type</option>";
  bool known_type = v.jobtype.empty();
  if (v.apps) {
    for (const auto& [name, app] : v.apps->apps) {
      known_type = known_type || name == v.jobtype;
      body += "<option value=\"" + esc(name) + "\"" + (name == v.jobtype ? " selected" : "") + ">" +
              esc(name) + "</option>";
    }
  }
  // A type no longer registered still shows (its jobs exist).
  if (!known_type)
    body += "<option value=\"" + esc(v.jobtype) + "\" selected>" + esc(v.jobtype) + "</option>";
  body += "</select>";
  // An administrator may look at another user's jobs, or everyone's (*).
  if (v.user.admin)
    body +=
        "<label for=\"owner-filter\" class=\"inline-label\">Owner</label><input name=\"owner\" "
        "id=\"owner-filter\" size=\"8\" maxlength=\"64\" placeholder=\"me, a name, *\" value=\"" +
        esc(v.owner) + "\">";
  body +=
      "<label for=\"q-filter\" class=\"inline-label\">Search</label>"
      "<input type=\"search\" name=\"q\" id=\"q-filter\" maxlength=\"200\" placeholder=\"config, howfig, progress\" "
      "value=\"" +
      esc(v.text) + "\"><button type=\"submit\">Find</button>";
  if (!v.state.empty() || !v.jobtype.empty() || !v.text.empty() || !v.owner.empty() || v.array > 0)
    body += "<a href=\"" + esc(home_link(home_view{}, v.all, v.sort, 1)) + "\" class=\"clear\">Clear</a>";
  body += "</form></span></div>";
  // The array filter (from an array's job page): which array, and a way back to every job.
  if (v.array > 0) {
    std::string a = std::to_string(v.array);
    home_view every = v;
    every.array = 0;
    body += "<p class=\"arrayfilter\" id=\"arrayfilter\">The jobs of array <a href=\"/jobs/" + a + "\">" + a +
            "</a> · <a href=\"" + esc(home_link(every, 1)) + "\">every job</a></p>";
  }

  // The count line; the page's script keeps it current as live rows come and go (data-*).
  long long first = v.total == 0 ? 0 : static_cast<long long>(v.page - 1) * v.per_page + 1;
  long long last = std::min<long long>(v.total, static_cast<long long>(v.page) * v.per_page);
  long long last_page = v.total == 0 ? 1 : (v.total + v.per_page - 1) / v.per_page;
  // What the count line adds for the filters (as text; escaped where it is put).
  std::string suffix;
  if (!v.jobtype.empty()) suffix += " of type " + v.jobtype;
  if (!v.text.empty()) suffix += " matching “" + v.text + "”";
  if (v.array > 0) suffix += " in array " + std::to_string(v.array);
  std::string in_state = (v.state.empty() ? "" : " in state " + esc(v.state)) + esc(suffix);
  body += "<p class=\"count\" id=\"jobcount\" aria-live=\"polite\" data-total=\"" + std::to_string(v.total) +
          "\" data-first=\"" + std::to_string(static_cast<long long>(v.page - 1) * v.per_page + 1) +
          "\" data-perpage=\"" + std::to_string(v.per_page) + "\" data-suffix=\"" + esc(suffix) +
          "\" data-noun=\"" + (v.all ? "jobs" : "active jobs") + "\">";
  if (v.total == 0) {
    body += std::string("No ") + (v.all ? "" : "active ") + "jobs" + in_state;
  } else if (first > v.total) {
    body += "Page " + std::to_string(v.page) + " is past the end: " + std::to_string(v.total) + " jobs" +
            in_state + ". <a href=\"" + esc(home_link(v, static_cast<int>(last_page))) +
            "\">Go to the last page</a>";
  } else {
    body += "Jobs " + std::to_string(first) + "–" + std::to_string(last) + " of " + std::to_string(v.total) +
            in_state;
  }
  body += "</p>";
  // Jobs submitted while a later page is open: "N new jobs — show" (the script fills it in).
  body += "<p class=\"newjobs\" id=\"newjobs\" aria-live=\"polite\" hidden><a href=\"" +
          esc(home_link(v, 1)) + "\"></a></p>";
  // data-live: whether new jobs may be placed in the table as they come (newest first, the view
  // filtered at most by state); under a search, a type or another sort they are counted instead.
  // An array's jobs are all made at once: under an array filter no new job belongs (data-array).
  bool live_insert =
      v.jobtype.empty() && v.text.empty() && (v.sort.empty() || v.sort == "-id") && v.array == 0;
  std::string extra = " data-view=\"" + std::string(v.all ? "all" : "active") + "\" data-state=\"" +
                      esc(v.state) + "\" data-pagenum=\"" + std::to_string(v.page) +
                      "\" data-live-insert=\"" + (live_insert ? "1" : "0") +
                      "\" data-bulk=\"1\" data-owner=\"" + esc(v.owner.empty() ? v.user.name : v.owner) +
                      "\"" + (v.owner.empty() ? "" : " data-owners=\"1\"") +
                      (v.array > 0 ? " data-array=\"" + std::to_string(v.array) + "\"" : std::string());
  // Actions on many jobs: the ticked rows (their checkboxes belong to this form), or every job the
  // view's filters match, as GET /api/jobs would find them.
  std::string view_query = v.all ? "" : "archived=0";
  auto add_query = [&](const char* k, const std::string& val) {
    if (!val.empty()) view_query += (view_query.empty() ? "" : "&") + std::string(k) + "=" + url_encode(val);
  };
  add_query("state", v.state);
  add_query("jobtype", v.jobtype);
  add_query("q", v.text);
  add_query("owner", v.owner);
  if (v.array > 0) add_query("array", std::to_string(v.array));
  body +=
      "<form id=\"bulkform\" method=\"post\" action=\"/jobs/actions\" class=\"bulk\" aria-label=\"Act on "
      "selected jobs\">" +
      hidden("csrf", v.user.csrf) + hidden("next", next) + hidden("query", view_query) +
      "<span class=\"inline-label\">Selected jobs:</span>"
      "<button type=\"submit\" name=\"action\" value=\"cancel\" data-confirm=\"Cancel the selected jobs?\">Cancel</button>"
      "<button type=\"submit\" name=\"action\" value=\"release\">Release</button>"
      "<button type=\"submit\" name=\"action\" value=\"archive\">Archive</button>"
      "<button type=\"submit\" name=\"action\" value=\"unarchive\">Unarchive</button>"
      "<button type=\"submit\" name=\"action\" value=\"resubmit\">Resubmit</button>"
      "<button type=\"submit\" name=\"action\" value=\"delete\" class=\"danger\" "
      "data-confirm=\"Delete the selected jobs? This cannot be undone.\">Delete</button>"
      "<label class=\"inline-label\"><input type=\"checkbox\" name=\"scope\" value=\"matching\" id=\"scope-matching\"> "
      "instead every job this view matches (" +
      std::to_string(v.total) + ")</label></form>";
  body += jobs_table(v.jobs, v.user, v.now_s, next, "jobs", extra, home_sort_header, &v);
  body += "<nav class=\"pager\" aria-label=\"Pages\">";
  if (v.page > 1)
    body += "<a href=\"" + esc(home_link(v, static_cast<int>(std::min<long long>(v.page - 1, last_page)))) +
            "\" rel=\"prev\">← Previous</a>";
  if (last < v.total) body += "<a href=\"" + esc(home_link(v, v.page + 1)) + "\" rel=\"next\">Next →</a>";
  body += "</nav></section>";
  std::string attrs = " data-since=\"" + esc(v.since) + "\"";
  if (!v.max_id.empty()) attrs += " data-maxid=\"" + esc(v.max_id) + "\"";
  return layout("Jobs", "home", &v.user, v.message, body, attrs);
}

namespace {
std::string fields_table(const job_record& job, double now_s) {
  std::string out = "<table class=\"fields\" id=\"fields\"><tbody>";
  for (const auto& name : job_field_order()) {
    auto it = job.find(name);
    if (it == job.end() || it->second.empty()) continue;
    const std::string& value = it->second;
    std::string time = is_time_field(name) ? time_html(value) : std::string();
    out += "<tr data-field=\"" + esc(name) + "\"><th>" + esc(name) + "</th><td>";
    if (name == "parent") out += parent_link(job);
    else if (name == "state") out += state_badge(value);
    else if (!time.empty()) out += time;
    else out += esc(value);
    out += "</td></tr>";
  }
  auto d = job_duration(job, now_s);
  if (!d.empty()) out += "<tr data-field=\"duration\"><th>duration</th><td>" + esc(d) + "</td></tr>";
  out += "</tbody></table>";
  return out;
}
}  // namespace

std::string job_detail(const job_record& job, const page_user& user, double now_s) {
  std::string id = get(job, "id");
  std::string state = get(job, "state");
  std::string next = "/jobs/" + id;
  bool archived = get(job, "archive") == "1";
  std::string out = "<div id=\"jobdetail\" data-state=\"" + esc(state) +
                    "\"><div class=\"actions\"><a class=\"button\" href=\"/?copy=" + esc(id) +
                    "#create\" aria-label=\"Copy job " + esc(id) + "\">Copy</a>";
  if (releasable(job)) out += action_form(next + "/release", "Release", user.csrf, next);
  if (!terminal_state(state))
    out += action_form(next + "/cancel", "Cancel", user.csrf, next, "Cancel job " + id + "?");
  out += archived ? action_form(next + "/unarchive", "Unarchive", user.csrf, next)
                  : action_form(next + "/archive", "Archive", user.csrf, next);
  if (terminal_state(state)) out += action_form(next + "/resubmit", "Resubmit", user.csrf, next);
  if (terminal_state(state))
    out += action_form(next + "/delete", "Delete", user.csrf, "/",
                       "Delete job " + id + "? This cannot be undone.", "danger");
  out += "</div><p class=\"status\" id=\"jobstatus\">" + state_badge(state) + " " + progress_cell(job) +
         "</p>" + fields_table(job, now_s) + "</div>";
  return out;
}

namespace {
// `line` escaped, with each ASCII case-insensitive occurrence of `q` marked.
std::string mark_matches(std::string_view line, std::string_view q) {
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
  std::string out;
  std::size_t i = 0, plain = 0;
  while (!q.empty() && i + q.size() <= line.size()) {
    std::size_t k = 0;
    while (k < q.size() && lower(line[i + k]) == lower(q[k])) ++k;
    if (k < q.size()) {
      ++i;
      continue;
    }
    out += esc(line.substr(plain, i - plain)) + "<mark>" + esc(line.substr(i, q.size())) + "</mark>";
    i += q.size();
    plain = i;
  }
  return out + esc(line.substr(plain));
}

// Under the log tail: the whole log's download link, the search form and a search's result.
std::string log_tools(const std::string& id, const job_view& v) {
  std::string out = "<div class=\"logtools\">";
  if (v.log_capped)
    out +=
        "<p class=\"muted\">The stored log reached its size cap; the rest is only in the job's run "
        "directory.</p>";
  out += "<a class=\"button\" href=\"/api/jobs/" + esc(id) +
         "/log?lines=all&amp;format=text\" download=\"job-" + esc(id) + ".log\">Download the whole log</a>";
  const std::string q = v.log_search ? v.log_search->q : std::string();
  out += "<form class=\"logsearch\" role=\"search\" method=\"get\" action=\"/jobs/" + esc(id) +
         "#logresults\"><label for=\"logq\">Search the whole log</label> <input type=\"search\" id=\"logq\" "
         "name=\"logq\" maxlength=\"200\" required value=\"" +
         esc(q) + "\"> <button type=\"submit\">Search</button></form></div>";
  if (!v.log_search) return out;
  const auto& s = *v.log_search;
  out += "<div id=\"logresults\" class=\"logresults\" role=\"region\" aria-label=\"Log lines that contain " +
         esc(s.q) + "\">";
  if (!s.error.empty()) return out + "<p class=\"error\" role=\"alert\">" + esc(s.error) + "</p></div>";
  std::string summary = std::to_string(s.total_matches) + (s.total_matches == 1 ? " line" : " lines") +
                        " of " + std::to_string(s.lines_searched) +
                        (s.total_matches == 1 ? " contains" : " contain") + " \u201c" + s.q + "\u201d";
  if (static_cast<long long>(s.matches.size()) < s.total_matches)
    summary += " (showing the first " + std::to_string(s.matches.size()) + ")";
  if (s.truncated) summary += "; the search stopped early, the log is too big";
  out += "<p id=\"logsummary\" aria-live=\"polite\">" + esc(summary) + ".</p>";
  if (s.matches.empty()) return out + "</div>";
  out += "<div class=\"logbox\" tabindex=\"0\"><pre class=\"log\" id=\"logmatches\">";
  for (std::size_t i = 0; i < s.matches.size(); ++i) {
    if (i) out += "\n";
    out += "<span class=\"ln\">" + std::to_string(s.matches[i].first) + "</span>" +
           mark_matches(s.matches[i].second, s.q);
  }
  return out + "</pre></div></div>";
}
}  // namespace

namespace {
// The number of job IDs in a stored after / after_any list ("12,13").
long long id_count(const std::string& list) {
  if (list.empty()) return 0;
  return static_cast<long long>(std::count(list.begin(), list.end(), ',')) + 1;
}

// One neighbour in the graph: a link to its page with its state badge and the edge's kind, or,
// deleted, its ID without a link (the page would answer 404).
std::string graph_item(const graph_node& n) {
  std::string id = std::to_string(n.id);
  std::string kind = n.kind == "after_any" ? "after_any" : "after";
  std::string meaning = kind == "after" ? "runs only if the job it waits for is done"
                                        : "runs once the job it waits for has ended, however it ended";
  std::string out = "<li class=\"dg-edge k-" + kind + "\" data-node=\"" + id + "\"><span class=\"dg-node\">";
  if (n.state.empty()) out += "Job " + id + " <small class=\"gone\">(deleted)</small>";
  else out += "<a href=\"/jobs/" + id + "\">Job " + id + "</a> " + state_badge(n.state);
  out += " <span class=\"dg-kind\" title=\"" + esc(meaning) + "\">" + esc(kind) + "</span></span></li>";
  return out;
}

std::string graph_list(const std::vector<graph_node>& nodes, long long total, const char* cls,
                       const char* heading_id) {
  std::string out = std::string("<ul class=\"dg-list ") + cls + "\" aria-labelledby=\"" + heading_id + "\">";
  for (const auto& n : nodes) out += graph_item(n);
  long long more = total - static_cast<long long>(nodes.size());
  if (more > 0)
    out +=
        "<li class=\"dg-more\"><span class=\"dg-node\">… and " + std::to_string(more) + " more</span></li>";
  if (nodes.empty() && more <= 0) out += "<li class=\"dg-none\">none</li>";
  out += "</ul>";
  return out;
}

std::string jobs_word(long long n) { return std::to_string(n) + (n == 1 ? " job" : " jobs"); }
}  // namespace

std::string dependency_graph(const job_view& v) {
  long long before_total = id_count(get(v.job, "after")) + id_count(get(v.job, "after_any"));
  before_total = std::max(before_total, static_cast<long long>(v.dependencies.size()));
  long long after_total = std::max(v.dependents_total, static_cast<long long>(v.dependents.size()));
  if (before_total == 0 && after_total == 0) return {};
  std::string id = get(v.job, "id");
  std::string state = get(v.job, "state");
  // In words first (what a screen reader meets before the lists).
  auto depend = [](long long n) { return jobs_word(n) + (n == 1 ? " depends" : " depend"); };
  std::string summary;
  if (before_total > 0) summary = "Job " + id + " depends on " + jobs_word(before_total);
  if (before_total > 0 && after_total > 0) summary += "; " + depend(after_total) + " on it.";
  else if (before_total > 0) summary += ".";
  else summary = depend(after_total) + " on job " + id + ".";
  std::string out =
      "<section class=\"card\" id=\"dependencies\" aria-labelledby=\"deps-heading\"><h2 id=\"deps-heading\">"
      "Dependencies</h2><p class=\"dg-summary\" id=\"deps-summary\">" +
      esc(summary) + "</p><div class=\"depgraph\" id=\"depgraph\">";
  out += "<h3 class=\"dg-h-before\" id=\"dg-before\">Depends on <small>(" + std::to_string(before_total) +
         ")</small></h3>";
  out += graph_list(v.dependencies, before_total, "dg-before", "dg-before");
  out += "<h3 class=\"dg-h-self\" id=\"dg-self\">This job</h3>";
  out += std::string("<div class=\"dg-self") + (before_total > 0 ? " has-before" : "") +
         (after_total > 0 ? " has-after" : "") +
         "\" role=\"group\" aria-labelledby=\"dg-self\"><span class=\"dg-node\" data-node=\"" + esc(id) +
         "\"><strong>Job " + esc(id) + "</strong> " + state_badge(state) + " <small>" +
         esc(get(v.job, "jobtype")) + "</small></span></div>";
  out += "<h3 class=\"dg-h-after\" id=\"dg-after\">Depended on by <small>(" + std::to_string(after_total) +
         ")</small></h3>";
  out += graph_list(v.dependents, after_total, "dg-after", "dg-after");
  out +=
      "</div><p class=\"dg-legend\"><span class=\"dg-swatch\" aria-hidden=\"true\"></span> after: runs only "
      "if the job it waits for is done · <span class=\"dg-swatch k-after_any\" aria-hidden=\"true\"></span> "
      "after_any: runs once the job it waits for has ended, however it ended</p></section>";
  return out;
}

namespace {
// Under the job's heading: the array it belongs to ("Array 21, index 10", a link to the array's
// first job and one to the jobs table filtered to the array) and the sites it may run at. Neither
// changes after the job is made, so they stay outside the live part.
std::string job_meta(const job_view& v) {
  std::string out;
  std::string id = get(v.job, "id");
  std::string array = get(v.job, "array");
  if (!array.empty()) {
    std::string index = get(v.job, "array_index");
    out += "<p class=\"jobmeta\" id=\"array-member\">Array ";
    if (array == id) out += esc(array) + " <small>(this is its first job)</small>";
    else if (v.array_gone)
      out += esc(array) +
             " <small class=\"gone\" title=\"its first job was deleted\">(first job deleted)</small>";
    else out += "<a href=\"/jobs/" + esc(array) + "\">" + esc(array) + "</a>";
    if (!index.empty()) out += ", index " + esc(index);
    out += " · <a href=\"" + esc(array_table_link(array)) + "\">the array's jobs</a></p>";
  }
  std::string sites = get(v.job, "sites");   // stored "alpha,beta"
  if (sites == pinned_sites) sites.clear();  // pmb: its howfig says where it runs
  if (!sites.empty()) {
    std::string shown;
    for (char c : sites) shown += c == ',' ? std::string(", ") : std::string(1, c);
    out += "<p class=\"jobmeta\" id=\"sites\">Sites: " + esc(shown) + "</p>";
  }
  return out;
}
}  // namespace

std::string array_section(const job_view& v) {
  if (v.array_jobs <= 0) return {};
  std::string id = get(v.job, "id");
  long long total = v.array_jobs;
  if (auto it = v.array_rollup.find("total"); it != v.array_rollup.end()) total = it->second;
  bool sample = v.array_rollup.count("truncated") > 0;
  std::string out =
      "<section class=\"card\" id=\"array\" aria-labelledby=\"array-heading\"><h2 id=\"array-heading\">"
      "Array</h2><p id=\"array-rollup\" data-array=\"" +
      esc(id) + "\" data-total=\"" + std::to_string(total) + "\">" +
      esc(rollup_text(v.array_rollup, total, "job", "jobs")) + "</p>";
  if (sample)
    out += "<p class=\"muted\">The counts are of the first " + std::to_string(max_children) + " jobs of " +
           std::to_string(v.array_jobs) + ".</p>";
  out += "<p><a href=\"" + esc(array_table_link(id)) +
         "\" id=\"array-link\">Show the array's jobs in the "
         "jobs table</a></p></section>";
  return out;
}

std::string job_page(const job_view& v) {
  std::string id = get(v.job, "id");
  std::string state = get(v.job, "state");
  std::string next = "/jobs/" + id;
  std::string body = "<section class=\"card\"><h1>Job " + esc(id) + " <small>" + esc(get(v.job, "jobtype")) +
                     " <code>" + esc(get(v.job, "config")) + "</code></small></h1>" + job_meta(v) +
                     job_detail(v.job, v.user, v.now_s) + "</section>";
  body += array_section(v);
  body += dependency_graph(v);

  body +=
      "<section class=\"card\" id=\"logsection\"><h2>Log <small>(the newest lines)</small></h2>"
      "<div class=\"logbox\" id=\"logbox\" tabindex=\"0\" role=\"region\" aria-label=\"Log of job " +
      esc(id) + "\"><pre class=\"log\" id=\"log\">";
  for (std::size_t i = 0; i < v.log_lines.size(); ++i) {
    if (i) body += "\n";
    body += esc(v.log_lines[i]);
  }
  body += "</pre></div>";
  body += log_tools(id, v);
  body += "</section>";

  body += "<section class=\"card\"><h2>Children</h2><p id=\"rollup\" data-total=\"" +
          std::to_string(v.children_total) + "\">" + esc(rollup_text(v.rollup, v.children_total)) + "</p>";
  std::string extra = " data-complete=\"" +
                      std::string(static_cast<long long>(v.children.size()) >= v.children_total ? "1" : "0") +
                      "\" data-perpage=\"" + std::to_string(v.children_limit) + "\"";
  body += jobs_table(v.children, v.user, v.now_s, next, "children", extra);
  if (static_cast<long long>(v.children.size()) < v.children_total)
    body += "<p class=\"count\">Showing the newest " + std::to_string(v.children.size()) + " of " +
            std::to_string(v.children_total) + ".</p>";
  body += "</section>";

  body += "<section class=\"card\"><h2>Events</h2><ol class=\"timeline\" id=\"timeline\">";
  for (const auto& e : v.events) {
    body += "<li data-sid=\"" + esc(e.sid) + "\">" + time_html(e.time) + " <span class=\"etype\">" +
            esc(e.type) + "</span> " + state_badge(e.state) + " <span class=\"emsg\">" + esc(e.progress) +
            "</span>";
    if (e.attempt > 1) body += " <small>attempt " + std::to_string(e.attempt) + "</small>";
    body += "</li>";
  }
  body += "</ol></section>";
  std::string attrs = " data-job=\"" + esc(id) + "\" data-since=\"" + esc(v.since) + "\"";
  if (!v.max_id.empty()) attrs += " data-maxid=\"" + esc(v.max_id) + "\"";
  return layout("Job " + id, "job", &v.user, v.message, body, attrs);
}

namespace {

// How an account logs in, after its name: "via <provider>" for an account made by an OpenID
// Connect login (its identity in the title: issuer and subject).
std::string login_via(const job_record& u) {
  std::string provider = get(u, "oidc_provider");
  if (provider.empty()) return {};
  return " <small class=\"via\" title=\"" + esc(get(u, "oidc_iss") + " " + get(u, "oidc_sub")) + "\">via " +
         esc(provider) + "</small>";
}

}  // namespace

std::string admin_page(const admin_view& v) {
  std::string body = "<h1 class=\"page-title\">Administration</h1>";
  // Pending registrations.
  body += "<section class=\"card\"><h2>Pending registrations</h2>";
  std::string pending_rows;
  for (const auto& u : v.users) {
    if (get(u, "status") != "pending") continue;
    std::string name = get(u, "name");
    std::string base = "/admin/users/" + name + "/";
    pending_rows +=
        "<tr data-user=\"" + esc(name) + "\"><td data-label=\"User\">" + esc(name) + login_via(u) +
        "</td><td data-label=\"E-mail\">" + esc(get(u, "email")) + "</td><td data-label=\"Registered\">" +
        time_html(get(u, "created")) + "</td><td data-label=\"Actions\">" +
        action_form(base + "approve", "Approve", v.user.csrf, "/admin", "", "", "Approve " + name) +
        action_form(base + "reject", "Reject", v.user.csrf, "/admin",
                    "Reject the registration of " + name + "?", "danger", "Reject " + name) +
        "</td></tr>";
  }
  if (pending_rows.empty()) body += "<p class=\"empty\">No registrations are waiting.</p>";
  else
    body += "<div class=\"scroll\"><table class=\"list\" id=\"pending\"><thead><tr>" +
            col_headers({"User", "E-mail", "Registered", "Actions"}) + "</tr></thead><tbody>" + pending_rows +
            "</tbody></table></div>";
  body += "</section>";

  // Users.
  body +=
      "<section class=\"card\"><h2>Users</h2><div class=\"scroll\"><table class=\"list\" "
      "id=\"users\"><thead><tr>" +
      col_headers({"User", "Role", "Status", "E-mail", "Created", "Actions"}) + "</tr></thead><tbody>";
  for (const auto& u : v.users) {
    std::string name = get(u, "name");
    std::string status = get(u, "status");
    std::string role = get(u, "role");
    std::string base = "/admin/users/" + name + "/";
    body += "<tr data-user=\"" + esc(name) + "\"><td data-label=\"User\">" + esc(name) + login_via(u) +
            "</td><td data-label=\"Role\">" + esc(role) + "</td><td data-label=\"Status\">" +
            "<span class=\"ustatus u-" + esc(status) + "\">" + esc(status) + "</span></td>" +
            "<td data-label=\"E-mail\">" + esc(get(u, "email")) + "</td><td data-label=\"Created\">" +
            time_html(get(u, "created")) + "</td><td data-label=\"Actions\">";
    if (name != v.user.name) {
      if (status == "disabled")
        body += action_form(base + "enable", "Enable", v.user.csrf, "/admin", "", "", "Enable " + name);
      else if (status == "active")
        body += action_form(base + "disable", "Disable", v.user.csrf, "/admin",
                            "Disable " + name + "? Their sessions and tokens stop working.", "danger",
                            "Disable " + name);
      if (role == "admin")
        body += action_form(base + "remove-admin", "Remove admin", v.user.csrf, "/admin", "", "",
                            "Remove admin " + name);
      else if (status == "active")
        body += action_form(base + "make-admin", "Make admin", v.user.csrf, "/admin",
                            "Make " + name + " an administrator?", "", "Make admin " + name);
    }
    body += "</td></tr>";
  }
  body += "</tbody></table></div></section>";

  // Workers and queue.
  body +=
      "<section class=\"card\"><h2>Queue</h2><dl class=\"stats\">"
      "<div><dt>Ready jobs queued</dt><dd id=\"queue-depth\">" +
      std::to_string(v.queue_depth) +
      "</dd></div><div><dt>Jobs finished in the last minute</dt><dd id=\"throughput\">" +
      std::to_string(v.finished_last_minute) + "</dd></div><div><dt>Job events in the last minute</dt><dd>" +
      std::to_string(v.events_last_minute) + "</dd></div><div><dt>Workers</dt><dd>" +
      std::to_string(v.workers.size()) + "</dd></div></dl></section>";
  body += status_panel("The last hour");
  body += "<section class=\"card\"><h2>Workers</h2>";
  if (v.workers.empty()) {
    body += "<p class=\"empty\">No worker has sent a heartbeat recently.</p>";
  } else {
    body += "<div class=\"scroll\"><table class=\"list\" id=\"workers\"><thead><tr>" +
            col_headers(
                {"Worker", "Host", "Site", "Owner", "Pool", "Slots", "Running", "Health", "Last heartbeat"}) +
            "</tr></thead><tbody>";
    for (const auto& w : v.workers) {
      std::string hb = get(w, "last_heartbeat");
      std::string ago;
      if (auto t = to_double(hb)) ago = " (" + format_duration(v.now_s - *t) + " ago)";
      // A worker that cannot make run directories (full or read-only disk) takes no job.
      std::string health = get(w, "health") == "unhealthy" ? "unhealthy: " + get(w, "health_reason") : "ok";
      body += "<tr><td data-label=\"Worker\">" + esc(get(w, "id")) + "</td><td data-label=\"Host\">" +
              esc(get(w, "host")) + "</td><td data-label=\"Site\">" + esc(get(w, "site")) +
              "</td><td data-label=\"Owner\">" + esc(get(w, "owner")) + "</td><td data-label=\"Pool\">" +
              esc(get(w, "pool")) + "</td><td data-label=\"Slots\">" + esc(get(w, "slots")) +
              "</td><td data-label=\"Running\">" + esc(get(w, "running")) +
              "</td><td data-label=\"Health\">" + esc(health) + "</td><td data-label=\"Last heartbeat\">" +
              time_html(hb) + esc(ago) + "</td></tr>";
    }
    body += "</tbody></table></div>";
  }
  body += "</section>";

  // Slurm pilots the daemon submitted (docs/slurm.md, *Pilots in Redis*).
  body += "<section class=\"card\"><h2>Pilots</h2>";
  if (v.pilots.empty()) {
    body += "<p class=\"empty\">No Slurm pilot is alive.</p>";
  } else {
    body += "<div class=\"scroll\"><table class=\"list\" id=\"pilots\"><thead><tr>" +
            col_headers({"Pilot", "Site", "State", "Slurm", "Nodes", "Slots", "Walltime", "Workers",
                         "Submitted", "Started", "Output"}) +
            "</tr></thead><tbody>";
    for (const auto& p : v.pilots) {
      std::string slurm = get(p, "slurm_state");
      std::string reason = get(p, "reason");
      if (!reason.empty()) slurm += " (" + reason + ")";
      std::string walltime = get(p, "walltime_minutes");
      if (!walltime.empty()) walltime += " min";
      std::string started = get(p, "started_time");
      std::string workers = get(p, "connected") + " connected";
      // Where it serves, and for a pinned pilot (howfig pmb) the one job it runs.
      std::string site = get(p, "site");
      if (!get(p, "pin").empty()) site += (site.empty() ? "" : " · ") + std::string("job ") + get(p, "pin");
      if (!get(p, "workers").empty()) workers += ": " + get(p, "workers");
      body += "<tr data-pilot=\"" + esc(get(p, "id")) + "\"><td data-label=\"Pilot\">" + esc(get(p, "id")) +
              "</td><td data-label=\"Site\">" + esc(site) + "</td><td data-label=\"State\">" +
              esc(get(p, "state")) + "</td><td data-label=\"Slurm\">" + esc(slurm) +
              "</td><td data-label=\"Nodes\">" + esc(get(p, "nodes")) + "</td><td data-label=\"Slots\">" +
              esc(get(p, "slots")) + "</td><td data-label=\"Walltime\">" + esc(walltime) +
              "</td><td data-label=\"Workers\">" + esc(workers) + "</td><td data-label=\"Submitted\">" +
              time_html(get(p, "submitted_time")) + "</td><td data-label=\"Started\">" +
              (started == "0" ? std::string() : time_html(started)) +
              "</td><td data-label=\"Output\"><code>" + esc(get(p, "output")) + "</code></td></tr>";
    }
    body += "</tbody></table></div>";
  }
  body += "</section>";
  return layout("Admin", "admin", &v.user, v.message, body);
}

std::string tokens_page(const tokens_view& v) {
  std::string body =
      "<section class=\"card\"><h1>API tokens</h1>"
      "<p>A token lets the command-line tools and scripts act as you "
      "(<code>Authorization: Bearer &lt;token&gt;</code>, or <code>DESCPROD_TOKEN</code>). "
      "It is shown once, when you create it; only its hash is kept.</p>";
  if (!v.new_token.empty()) {
    body += "<div class=\"newtoken\" role=\"alert\"><p>New token" +
            (v.new_label.empty() ? std::string() : " <strong>" + esc(v.new_label) + "</strong>") +
            " — copy it now, it will not be shown again:</p><code id=\"new-token\">" + esc(v.new_token) +
            "</code></div>";
  }
  body += "<form method=\"post\" action=\"/tokens\" class=\"create\">" + hidden("csrf", v.user.csrf) +
          hidden("form", v.form_nonce) +
          "<label>Label <input name=\"label\" maxlength=\"64\" placeholder=\"e.g. laptop\"></label>"
          "<button type=\"submit\">Create a token</button></form></section>";
  body += "<section class=\"card\"><h2>Your tokens</h2>";
  if (v.tokens.empty()) {
    body += "<p class=\"empty\">You have no API tokens.</p>";
  } else {
    body += "<div class=\"scroll\"><table class=\"list\" id=\"tokens\"><thead><tr>" +
            col_headers({"Label", "Created", "Expires", "Id", "Actions"}) + "</tr></thead><tbody>";
    for (const auto& t : v.tokens) {
      std::string id = get(t, "id");
      std::string expires = get(t, "expires");
      body += "<tr data-token=\"" + esc(id) + "\"><td data-label=\"Label\">" + esc(get(t, "label")) +
              "</td><td data-label=\"Created\">" + time_html(get(t, "created")) +
              "</td><td data-label=\"Expires\">" +
              (expires.empty() || expires == "0" ? std::string("never") : time_html(expires)) +
              "</td><td data-label=\"Id\"><code>" + esc(id.substr(0, 12)) +
              "…</code></td><td data-label=\"Actions\">" +
              action_form("/tokens/" + id + "/revoke", "Revoke", v.user.csrf, "/tokens",
                          "Revoke this token? Programs using it stop working.", "danger",
                          "Revoke token " + (get(t, "label").empty() ? id.substr(0, 12) : get(t, "label"))) +
              "</td></tr>";
    }
    body += "</tbody></table></div>";
  }
  body += "</section>";
  // Notifications: e-mail on failure (descprod-notifier) and, with the script, the browser's.
  body +=
      "<section class=\"card\" id=\"notifications\"><h2>Notifications</h2>"
      "<form method=\"post\" action=\"/tokens/preferences\" class=\"stack\">" +
      hidden("csrf", v.user.csrf) +
      "<label><input type=\"checkbox\" name=\"email_on_failure\" value=\"1\" id=\"email-on-failure\"" +
      (v.email_on_failure ? std::string(" checked") : std::string()) + "> E-mail me" +
      (v.email.empty() ? std::string() : " (" + esc(v.email) + ")") +
      " when a job of mine fails</label>"
      "<button type=\"submit\">Save</button></form>"
      "<p>At most one mail a minute, listing the jobs that failed, timed out, were killed or lost. "
      "Browser notifications when your jobs end: <em>Notify me</em> in the header (this browser "
      "only, while a Jobs or job page is open).</p></section>";
  // The account's quota, as an administrator set it (docs/api.md, Quotas and fair share).
  {
    const auto& q = v.quota;
    char share[32];
    std::snprintf(share, sizeof share, "%g", q.share);
    auto limit = [](std::uint32_t n, const char* what) {
      return "<li>" + (n ? "at most " + std::to_string(n) + " " + what : std::string("no limit on ") + what) +
             "</li>";
    };
    body +=
        "<section class=\"card\" id=\"quota\"><h2>Your quota</h2><ul>"
        "<li>Share of the workers: <strong>" +
        std::string(share) +
        "</strong> (users with jobs waiting get jobs in the ratio of their shares; the default is 1)</li>" +
        limit(q.max_running, "jobs running at once (the rest wait)") +
        limit(q.max_queued, "jobs waiting to run: ready, held or waiting (a submission beyond is refused)") +
        limit(q.submit_per_minute, "jobs submitted per minute") + "</ul></section>";
  }
  return layout("API tokens", "tokens", &v.user, v.message, body);
}

std::string help_page(const page_user* user, const app_registry& apps) {
  std::string body =
      R"HTML(<section class="card prose"><h1>Help</h1>
<h2 id="submit">Submitting a job</h2>
<p>On the <a href="/">Jobs</a> page pick an <strong>application</strong>, give its
<strong>config</strong> (and, if the application uses one, a <strong>howfig</strong>), and press
Submit. A higher <strong>priority</strong> (−1000 to 1000) runs earlier. Config and howfig follow
DESCprod's rules: letters, digits, <code>:</code> and <code>-</code> only, no <code>----</code>, no
<code>--</code> inside a field, not starting or ending with <code>-</code> or <code>:</code>; each
application may ask for a stricter pattern. <em>Copy</em> on any job fills the form with its
values.</p>
<p><strong>After</strong> takes the IDs of jobs of yours, separated by commas: the new job
<em>waits</em> until each of them is done (if one ends any other way, it is cancelled); its page
draws the jobs it waits for and the jobs that wait for it. Tick <strong>Hold</strong> and the job
is <em>held</em>: no worker takes it until you press <em>Release</em> (on its page, its row, or for
many jobs at once), or until you run it yourself with <code>descprod-start-job</code>. From the
API and <code>descprod-submit</code> there is also <code>after_any</code>: wait until those jobs
have ended, however they ended.</p>
<p>The job table updates by itself: states, progress bars and messages change as the worker
reports them, without reloading. <em>Cancel</em> stops a waiting or running job,
<em>Archive</em> hides a job from the active view (<em>All</em> shows it again), <em>Delete</em>
removes a finished job for good. From the command line: <code>descprod-submit</code>,
<code>descprod-list-jobs</code>, <code>descprod-watch</code>, with an <a href="/tokens">API
token</a>.</p>
<h2 id="states">What the states mean</h2>
<table class="list"><tbody>
<tr><td>)HTML" +
      state_badge("waiting") + R"HTML(</td><td>waits for its dependencies (after / after_any)</td></tr>
<tr><td>)HTML" +
      state_badge("held") +
      R"HTML(</td><td>held until you release it or start it with descprod-start-job</td></tr>
<tr><td>)HTML" +
      state_badge("ready") + R"HTML(</td><td>queued, waiting for a free worker slot</td></tr>
<tr><td>)HTML" +
      state_badge("dispatched") + R"HTML(</td><td>handed to a worker, not started yet</td></tr>
<tr><td>)HTML" +
      state_badge("running") + R"HTML(</td><td>the application's process is running</td></tr>
<tr><td>)HTML" +
      state_badge("done") + R"HTML(</td><td>it exited with status 0</td></tr>
<tr><td>)HTML" +
      state_badge("failed") +
      R"HTML(</td><td>it exited with a non-zero status (see Return status and the log)</td></tr>
<tr><td>)HTML" +
      state_badge("timeout") +
      R"HTML(</td><td>it ran past the application's time limit and was stopped (status 124)</td></tr>
<tr><td>)HTML" +
      state_badge("killed") + R"HTML(</td><td>a signal ended it (return status −N)</td></tr>
<tr><td>)HTML" +
      state_badge("cancelled") + R"HTML(</td><td>its owner or an administrator cancelled it</td></tr>
<tr><td>)HTML" +
      state_badge("lost") +
      R"HTML(</td><td>its worker vanished and no attempts were left (otherwise it is queued again as a new attempt)</td></tr>
</tbody></table>
<h2 id="apps">Writing an application</h2>
<p>An application is a program named <code>runapp-&lt;jobtype&gt;</code> (or another command the
registry <code>config/apps.yaml</code> names) that a worker runs for each job:</p>
<ul>
<li><strong>Arguments</strong>: <code>runapp-&lt;jobtype&gt; &lt;config&gt; &lt;howfig&gt;</code>,
executed directly, never through a shell (an empty howfig is left out).</li>
<li><strong>Run directory</strong>: the working directory is
<code>&lt;output_dir&gt;/jobs/jobNNNNNN</code> (a retry gets <code>jobNNNNNN.2</code>, ...).
It holds <code>config.json</code>, the job's fields one per line exactly as DESCprod wrote them,
and <code>jobNNNNNN.log</code>, the program's merged stdout and stderr (its tail is shown on the
job page).</li>
<li><strong>Progress</strong>: write lines to <code>current-status.txt</code> in the run
directory; the last line becomes the job's message within about a second. A line starting
<code>[done/total]</code>, e.g. <code>[3/20] tasks finished</code>, also moves the progress
bar.</li>
<li><strong>Environment</strong>: <code>DESCPROD_JOB_ID</code>, <code>DESCPROD_ATTEMPT</code>,
<code>DESCPROD_RUNDIR</code>, <code>DESCPROD_URL</code> and <code>DESCPROD_TOKEN</code> (a token
for this job only: enough to read it and to add child jobs with
<code>descprod-add-job -p $DESCPROD_JOB_ID</code>).</li>
<li><strong>Exit status</strong>: 0 is done, anything else failed; 124 means timeout. If
<code>descprod-closeout</code> exists in the run directory it is run afterwards with the exit
status as its argument.</li>
</ul>
<p>Example (<code>runapp-mysleep</code>):</p>
<pre>#!/usr/bin/env bash
secs=$1
echo "I'm sleeping for $secs seconds." | tee current-status.txt
sleep -- "$secs" || exit 2
echo "I'm awake now." | tee current-status.txt</pre>
<h2 id="registry">Applications on this service</h2><dl class="apphelp">)HTML";
  for (const auto& [name, app] : apps.apps) {
    body += "<div><dt>" + esc(name) + "</dt><dd>" +
            esc(app.help.empty() ? std::string("(no description)") : app.help);
    if (!app.pattern.empty()) body += " <small>Config pattern: <code>" + esc(app.pattern) + "</code></small>";
    if (app.time_limit_s > 0)
      body += " <small>Time limit: " + esc(format_duration(app.time_limit_s)) + "</small>";
    body += "</dd></div>";
  }
  body += R"HTML(</dl>
<h2 id="accounts">Accounts</h2>
<p>Register with a user name, e-mail and password; an administrator approves the account, then
you can log in. Web sessions end after a period without activity, or when you log out.</p>
</section>)HTML";
  return layout("Help", "help", user, flash{}, body);
}

std::string error_page(unsigned status, std::string_view detail, const page_user* user) {
  std::string title = status == 404   ? "Not found"
                      : status == 403 ? "Forbidden"
                      : status == 400 ? "Bad request"
                      : status == 405 ? "Method not allowed"
                      : status == 503 ? "Unavailable"
                                      : "Error";
  std::string body = "<section class=\"card narrow\"><h1>" + esc(title) + "</h1><p>" + esc(detail) +
                     "</p><p><a href=\"/\">Back to the jobs</a></p></section>";
  return layout(title, "error", user, flash{}, body);
}

}  // namespace descprod::gateway::web
