// The commands that read and change jobs through the gateway's API (docs/api.md):
// descprod-version, descprod-get-job (= descprod-show-job), descprod-add-job, descprod-submit,
// descprod-list-jobs, descprod-cancel-job, descprod-release-job and descprod-login. DESCprod's positional USERNAME and
// URL arguments are still accepted; the user is whoever the token belongs to.
#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <thread>

#include "client/commands.hpp"
#include "client/common.hpp"
#include "client/format.hpp"
#include "client/terminal_text.hpp"
#include "core/job.hpp"
#include "core/text.hpp"

namespace descprod::client {

namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The API client from --url/--token-file (or the environment and stored files).
api_client make_client(const parsed_args& a, const std::optional<std::string>& positional_url = std::nullopt,
                       std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  auto env = process_env();
  std::optional<std::string> url_flag = a.value("url");
  if (positional_url && !url_flag) url_flag = positional_url;
  return api_client(resolve_url(url_flag, env), resolve_token(a.value("token-file"), env), timeout);
}

json::object get_job(const api_client& api, long long id) {
  auto v = api.call_ok("GET", "/api/jobs/" + std::to_string(id));
  if (!v.is_object()) throw client_error(exit_code::server_error, "the server's answer is not a job");
  return v.as_object();
}

std::string common_options_help() {
  return "      --url URL         server (default $DESCPROD_URL, else the URL descprod-login stored,\n"
         "                        else http://127.0.0.1:8080)\n"
         "      --token-file F    read the API token from F (default $DESCPROD_TOKEN, else the\n"
         "                        file descprod-login wrote)\n"
         "  -h, --help            show this help\n";
}

void print_lines(const std::vector<std::string>& lines) {
  for (const auto& l : lines) std::cout << l << "\n";
}

}  // namespace

// ---- descprod-version -------------------------------------------------------------------------

int version_main(int argc, char** argv) {
  const std::string me = program_name(argc > 0 ? argv[0] : nullptr, "descprod-version");
  return guarded(me, [&] {
    auto specs = server_options();
    specs.push_back({0, "client", false});
    specs.push_back({0, "server", false});
    auto a = parse_args(arguments(argc, argv), specs);
    if (a.has("help")) {
      std::cout << "Usage: " << me << " [--server] [--url URL] [--token-file FILE]\n"
                << "Prints the version of the DESCprod client, one line, as DESCprod's did.\n"
                << "      --server          also a second line with the server's version, when\n"
                << "                        the server answers\n"
                << "      --client          the client's version only (the default)\n"
                << common_options_help();
      return exit_code::ok;
    }
    if (!a.positional.empty()) throw usage_error("unexpected argument '" + a.positional[0] + "'");
    std::cout << DESCPROD_VERSION << std::endl;
    if (!a.has("server")) return exit_code::ok;
    // The server's version is a courtesy: any failure leaves it out and still exits 0.
    try {
      auto api = make_client(a, std::nullopt, std::chrono::seconds(3));
      auto r = api.call("GET", "/api/version");
      if (r.status == 200 && r.body.is_object()) {
        std::string v = json_string(r.body.as_object(), "version");
        std::cout << "server " << terminal_safe(v) << " at " << terminal_safe(api.url_text()) << "\n";
      }
    } catch (const std::exception&) {
    }
    return exit_code::ok;
  });
}

// ---- descprod-get-job / descprod-show-job ---------------------------------------------------------

int get_job_main(int argc, char** argv) {
  const std::string me = program_name(argc > 0 ? argv[0] : nullptr, "descprod-get-job");
  return guarded(me, [&] {
    auto specs = server_options();
    specs.push_back({0, "json", false});
    specs.push_back({0, "epoch", false});
    specs.push_back({0, "all", false});
    auto a = parse_args(arguments(argc, argv), specs);
    if (a.has("help") || (a.positional.size() == 1 && a.positional[0] == "-h")) {
      std::cout
          << "Usage: " << me
          << " [--all] [--json] [--epoch] [--url URL] [--token-file FILE] JOBID [USERNAME] [URL]\n"
          << "Displays the data for a job, one `%16s: value` line per field: DESCprod's fields in its\n"
          << "order, progress last.\n"
          << "  JOBID - Job ID.\n"
          << "  USERNAME - Accepted for DESCprod compatibility and ignored: the token says who you are.\n"
          << "       URL - Server URL (the same as --url).\n"
          << "      --all             also the fields DESCprod did not have (state, attempt, ...)\n"
          << "      --json            print the job as the server's JSON object instead\n"
          << "      --epoch           print times as integer epoch seconds instead of UTC dates\n"
          << common_options_help();
      return exit_code::ok;
    }
    if (a.positional.empty()) throw usage_error("a job ID is required");
    if (a.positional.size() > 3) throw usage_error("too many arguments");
    long long id = parse_job_id(a.positional[0]);
    std::optional<std::string> url;
    if (a.positional.size() > 2) url = a.positional[2];
    auto api = make_client(a, url);
    auto job = get_job(api, id);
    if (a.has("json")) {
      std::cout << json_terminal_safe(json::serialize(job)) << "\n";
      return exit_code::ok;
    }
    print_lines(job_field_lines(job, a.has("epoch") ? time_style::epoch : time_style::utc, "", a.has("all")));
    return exit_code::ok;
  });
}

// ---- descprod-add-job ---------------------------------------------------------------------------

namespace {

// --hold, --after and --after-any of add-job and submit (docs/client.md, Dependencies).
void add_dependency_options(std::vector<option_spec>& specs) {
  specs.push_back({0, "hold", false});
  specs.push_back({0, "after", true});
  specs.push_back({0, "after-any", true});
  specs.push_back({0, "sites", true});
}

const char* dependency_options_help() {
  return "      --hold            create the job held: no worker runs it until descprod-release-job\n"
         "                        (or run it yourself with descprod-start-job)\n"
         "      --after IDS       start only once each of these jobs (comma-separated IDs) is done;\n"
         "                        if one ends otherwise, this job is cancelled\n"
         "      --after-any IDS   start only once each of these jobs has ended, whatever its state\n"
         "      --sites S1,S2     run only on a worker at one of these sites\n";
}

json::array job_id_list(const std::string& text, const std::string& what) {
  json::array ids;
  for (const auto& part : split(text, ',')) ids.push_back(parse_job_id(part, what));
  return ids;
}

// --array N (indexes 0..N-1) or A-B[:S] (Slurm's form: A to B by S) as the API's "array".
json::value array_field(const std::string& text) {
  auto dash = text.find('-');
  if (dash == std::string::npos) return parse_int(text, 1, 100000, "array size");
  auto colon = text.find(':', dash);
  json::object o;
  o["from"] = parse_int(text.substr(0, dash), 0, 1000000000, "array start");
  o["to"] =
      parse_int(text.substr(dash + 1, colon == std::string::npos ? std::string::npos : colon - dash - 1), 0,
                1000000000, "array end");
  if (colon != std::string::npos) o["step"] = parse_int(text.substr(colon + 1), 1, 1000000000, "array step");
  return o;
}

void put_dependency_fields(const parsed_args& a, json::object& body) {
  if (a.has("hold")) body["hold"] = true;
  if (auto v = a.value("after")) body["after"] = job_id_list(*v, "job ID in --after");
  if (auto v = a.value("after-any")) body["after_any"] = job_id_list(*v, "job ID in --after-any");
  if (auto v = a.value("sites")) {
    // Checked by the gateway (400 with the rule): only split here.
    json::array sites;
    for (const auto& site : split(*v, ',')) sites.emplace_back(site);
    body["sites"] = std::move(sites);
  }
}

}  // namespace

int add_job_main(int argc, char** argv) {
  const std::string me = program_name(argc > 0 ? argv[0] : nullptr, "descprod-add-job");
  return guarded(me, [&] {
    auto specs = server_options();
    specs.push_back({'s', "surl", true});
    specs.push_back({'u', "user", true});
    specs.push_back({'p', "parent", true});
    specs.push_back({'n', "ntry", true});
    specs.push_back({'o', "outjson", true});
    specs.push_back({0, "priority", true});
    specs.push_back({0, "epoch", false});
    specs.push_back({0, "all", false});
    add_dependency_options(specs);
    auto a = parse_args(arguments(argc, argv), specs);
    if (a.has("help")) {
      std::cout << "Usage: " << me
                << " [-h] [-s SURL] [-u USER] [-p PARENT] [-n NTRY] [-o OUTJSON] [--hold]\n"
                << "       [--after IDS] [--after-any IDS] JOBTYPE [CONFIG [HOWFIG]]\n"
                << "Creates a job and prints \"Success: ...\" and its fields.\n"
                << "     -h - Show this message and exit.\n"
                << "     -s - Server URL (the same as --url).\n"
                << "     -u - Username: accepted for DESCprod compatibility and ignored.\n"
                << "     -p - Parent job ID. Inside a job, -p $DESCPROD_JOB_ID creates a child job.\n"
                << "     -n - Number of tries when the server cannot be reached (10 s apart) [1].\n"
                << "     -o - Write the new job to OUTJSON (every value a quoted string).\n"
                << "      --priority N      queue priority (-1000..1000, default 0)\n"
                << "      --epoch           print times as integer epoch seconds\n"
                << "      --all             also print the fields DESCprod did not have\n"
                << dependency_options_help() << "  JOBTYPE - Job type.\n"
                << "  CONFIG  - Job configuration.\n"
                << "  HOWFIG  - How configuration.\n"
                << common_options_help();
      return exit_code::ok;
    }
    if (a.positional.empty()) throw usage_error("Job type must be provided.");
    if (a.positional.size() > 3) throw usage_error("too many arguments");
    json::object body;
    body["jobtype"] = a.positional[0];
    body["config"] = a.positional.size() > 1 ? a.positional[1] : "";
    if (a.positional.size() > 2) body["howfig"] = a.positional[2];
    if (auto p = a.value("parent")) body["parent"] = parse_job_id(*p, "parent job ID");
    if (auto p = a.value("priority")) body["priority"] = parse_int(*p, -1000, 1000, "priority");
    put_dependency_fields(a, body);
    long long ntry = 1;
    if (auto n = a.value("ntry")) ntry = parse_int(*n, 1, 1000, "number of tries");
    std::optional<std::string> surl = a.value("surl");
    auto api = make_client(a, surl);

    json::value req(body);
    json::object job;
    for (long long attempt = 1;; ++attempt) {
      try {
        auto v = api.call_ok("POST", "/api/jobs", &req);
        if (!v.is_object()) throw client_error(exit_code::server_error, "the server's answer is not a job");
        job = v.as_object();
        break;
      } catch (const client_error& e) {
        if (e.code != exit_code::unreachable || attempt >= ntry) throw;
        std::cerr << me << ": " << terminal_safe(e.what()) << "; trying again in 10 s\n";
        std::this_thread::sleep_for(std::chrono::seconds(10));
      }
    }
    long long id = json_int(job, "id").value_or(0);
    if (auto out = a.value("outjson")) {
      std::ofstream f(*out, std::ios::trunc);
      f << outjson_text(job);
      f.close();
      if (!f)
        throw client_error(exit_code::server_error,
                           "created job " + std::to_string(id) + " but cannot write " + *out);
    }
    std::cout << "Success: Added job " << terminal_safe(json_string(job, "descname")) << "/" << id << "\n";
    print_lines(job_field_lines(job, a.has("epoch") ? time_style::epoch : time_style::utc, "", a.has("all")));
    return exit_code::ok;
  });
}

// ---- descprod-pmbs ----------------------------------------------------------------------------------

namespace {
// A config.json value as text (DESCprod wrote some as numbers).
std::string config_text(const json::object& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end()) return "";
  if (it->value().is_string()) return std::string(it->value().as_string());
  if (it->value().is_int64()) return std::to_string(it->value().as_int64());
  return "";
}

void status_line(const std::string& line) {
  std::cout << line << "\n" << std::flush;
  std::ofstream f("current-status.txt", std::ios::app);
  f << line << "\n";
}
}  // namespace

int pmbs_main(int argc, char** argv) {
  const std::string me = program_name(argc > 0 ? argv[0] : nullptr, "descprod-pmbs");
  return guarded(me, [&] {
    auto a = parse_args(arguments(argc, argv), server_options());
    if (a.has("help")) {
      std::cout
          << "Usage: " << me << " [-h]\n"
          << "Run in the run directory of a job whose howfig starts pmbs-TMIN[-QOS[-CONS[-ACCT]]] (the\n"
          << "worker runs it for such a job, as DESCprod ran runapp-pmbs): reads config.json, creates a\n"
          << "child job with the same type and config and the howfig pmb-TMIN[-...][,REST], which runs\n"
          << "in a Slurm allocation of its own, writes it to subjob-config.json and exits 0.\n"
          << "Exit codes: 21 the job type starts with pmb; 22 the howfig does not start with pmbs-;\n"
          << "2 no readable config.json; 1 the server refused the child.\n"
          << common_options_help();
      return exit_code::ok;
    }
    if (!a.positional.empty()) throw usage_error("no arguments expected (the job is read from config.json)");
    std::ifstream in("config.json");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (!in.good() && text.empty())
      throw usage_error("cannot read config.json in " + fs::current_path().string());
    if (ec || !v.is_object()) throw usage_error("config.json is not a JSON object");
    const auto& job = v.as_object();
    const std::string id = config_text(job, "id");
    const std::string jobtype = config_text(job, "jobtype");
    const std::string config = config_text(job, "config");
    const std::string howfig = config_text(job, "howfig");
    if (jobtype.rfind("pmb", 0) == 0) {
      print_error(me, "Invalid job type: " + terminal_safe(jobtype));
      return 21;
    }
    std::string why;
    auto b = parse_batch_howfig(howfig, why);
    if (!b || !b->subjob) {
      print_error(me, "Invalid howfig: " + terminal_safe(howfig) + (why.empty() ? "" : " (" + why + ")"));
      return 22;
    }
    json::object body;
    body["jobtype"] = jobtype;
    body["config"] = config;
    body["howfig"] = "pmb" + b->head.substr(4) + (b->rest.empty() ? std::string() : "," + b->rest);
    body["parent"] = parse_job_id(id, "config.json id");
    auto api = make_client(a);
    json::value req(body);
    auto made = api.call_ok("POST", "/api/jobs", &req);
    if (!made.is_object()) throw client_error(exit_code::server_error, "the server's answer is not a job");
    long long child = json_int(made.as_object(), "id").value_or(0);
    std::ofstream out("subjob-config.json", std::ios::trunc);
    out << outjson_text(made.as_object());
    status_line("Created and submitting job " + std::to_string(child) + ".");
    status_line("Submitted job " + std::to_string(child) + " to batch queue.");
    return exit_code::ok;
  });
}

// ---- descprod-submit ------------------------------------------------------------------------------

int submit_main(int argc, char** argv) {
  const std::string me = program_name(argc > 0 ? argv[0] : nullptr, "descprod-submit");
  return guarded(me, [&] {
    auto specs = server_options();
    specs.push_back({0, "priority", true});
    specs.push_back({0, "parent", true});
    specs.push_back({0, "array", true});
    add_dependency_options(specs);
    auto a = parse_args(arguments(argc, argv), specs);
    if (a.has("help")) {
      std::cout << "Usage: " << me
                << " [--priority N] [--parent ID] [--array N|A-B[:S]] [--hold] [--after IDS]\n"
                << "       [--after-any IDS] [--url URL] [--token-file FILE] JOBTYPE CONFIG [HOWFIG]\n"
                << "Submits a job and prints its ID (with --array, the array's ID).\n"
                << "      --priority N      queue priority, -1000..1000 (default 0; higher runs first)\n"
                << "      --parent ID       make the job a child of job ID\n"
                << "      --array N|A-B[:S] one job per index (0..N-1, or A to B by S); {index} in\n"
                << "                        CONFIG and HOWFIG becomes the index, and the app gets\n"
                << "                        DESCPROD_ARRAY_INDEX\n"
                << dependency_options_help() << common_options_help();
      return exit_code::ok;
    }
    if (a.positional.size() < 2) throw usage_error("JOBTYPE and CONFIG are required");
    if (a.positional.size() > 3) throw usage_error("too many arguments");
    json::object body;
    body["jobtype"] = a.positional[0];
    body["config"] = a.positional[1];
    if (a.positional.size() > 2) body["howfig"] = a.positional[2];
    if (auto p = a.value("priority")) body["priority"] = parse_int(*p, -1000, 1000, "priority");
    if (auto p = a.value("parent")) body["parent"] = parse_job_id(*p, "parent job ID");
    put_dependency_fields(a, body);
    if (auto n = a.value("array")) body["array"] = array_field(*n);
    auto api = make_client(a);
    json::value req(body);
    auto v = api.call_ok("POST", "/api/jobs", &req);
    auto id = v.is_object() ? json_int(v.as_object(), a.has("array") ? "array" : "id") : std::nullopt;
    if (!id) throw client_error(exit_code::server_error, "the server's answer has no job ID");
    std::cout << *id << "\n";
    return exit_code::ok;
  });
}

// ---- descprod-list-jobs -----------------------------------------------------------------------------

int list_jobs_main(int argc, char** argv) {
  const std::string me = program_name(argc > 0 ? argv[0] : nullptr, "descprod-list-jobs");
  return guarded(me, [&] {
    auto specs = server_options();
    specs.push_back({0, "state", true});
    specs.push_back({0, "all", false});
    specs.push_back({0, "limit", true});
    specs.push_back({0, "parent", true});
    specs.push_back({0, "array", true});
    specs.push_back({0, "jobtype", true});
    specs.push_back({0, "search", true});
    specs.push_back({0, "since", true});
    specs.push_back({0, "until", true});
    specs.push_back({0, "sort", true});
    specs.push_back({0, "owner", true});
    specs.push_back({0, "json", false});
    auto a = parse_args(arguments(argc, argv), specs);
    if (a.has("help")) {
      std::cout
          << "Usage: " << me
          << " [--state S] [--all] [--limit N] [--parent ID] [--array ID] [--jobtype T] [--search TEXT]\n"
          << "       [--since TIME] [--until TIME] [--sort KEY] [--owner USER|*] [--json]\n"
          << "Lists your jobs, newest first: ID, parent, type, config, state, progress, duration.\n"
          << "      --state S         only jobs in state S (waiting, held, ready, dispatched,\n"
          << "                        running, done, failed, timeout, killed, cancelled, lost)\n"
          << "      --all             also archived jobs, and no limit unless --limit is given\n"
          << "      --limit N         at most N jobs (default 50; 0: no limit)\n"
          << "      --parent ID       only the children of job ID\n"
          << "      --array ID        only the jobs of array ID (descprod-submit --array printed it)\n"
          << "      --jobtype T       only jobs of type T\n"
          << "      --search TEXT     only jobs with TEXT in config, howfig or progress (case ignored)\n"
          << "      --since TIME      only jobs created at or after TIME (epoch seconds,\n"
          << "                        2026-12-06T10:00:00Z or 2026-12-06, UTC)\n"
          << "      --until TIME      only jobs created before TIME\n"
          << "      --sort KEY        id, created, started, duration or state; -KEY descending\n"
          << "                        (default -id: newest first)\n"
          << "      --owner USER|*    an administrator: USER's jobs, or everyone's (*)\n"
          << "      --json            one JSON object per job and line instead of the table\n"
          << common_options_help();
      return exit_code::ok;
    }
    if (!a.positional.empty()) throw usage_error("unexpected argument '" + a.positional[0] + "'");
    std::string query;
    if (auto s = a.value("state")) {
      if (!parse_job_state(*s)) throw usage_error("unknown state '" + *s + "'");
      query += "&state=" + *s;
    }
    if (auto t = a.value("jobtype")) {
      for (char c : *t)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
          throw usage_error("invalid job type '" + *t + "'");
      query += "&jobtype=" + *t;
    }
    if (auto p = a.value("parent")) query += "&parent=" + std::to_string(parse_job_id(*p, "parent job ID"));
    if (auto p = a.value("array")) query += "&array=" + std::to_string(parse_job_id(*p, "array ID"));
    // The gateway checks these (400 with the rule); they are only encoded here.
    if (auto q = a.value("search")) query += "&q=" + url_encode(*q);
    if (auto t = a.value("since")) query += "&created_after=" + url_encode(*t);
    if (auto t = a.value("until")) query += "&created_before=" + url_encode(*t);
    if (auto k = a.value("sort")) query += "&sort=" + url_encode(*k);
    if (auto o = a.value("owner")) query += "&owner=" + url_encode(*o);
    const bool all = a.has("all");
    long long limit = all ? 0 : 50;
    if (auto l = a.value("limit")) limit = parse_int(*l, 0, 1000000000, "limit");

    auto api = make_client(a);
    std::vector<json::object> jobs;
    std::string cursor;
    while (limit == 0 || static_cast<long long>(jobs.size()) < limit) {
      long long page = 1000;
      if (limit > 0) page = std::min<long long>(page, limit - static_cast<long long>(jobs.size()));
      auto v = api.call_ok("GET", "/api/jobs?limit=" + std::to_string(page) +
                                      (cursor.empty() ? "" : "&cursor=" + url_encode(cursor)) + query);
      if (!v.is_object() || !v.as_object().contains("jobs") || !v.as_object().at("jobs").is_array())
        throw client_error(exit_code::server_error, "the server's answer has no job list");
      const auto& arr = v.as_object().at("jobs").as_array();
      for (const auto& j : arr) {
        if (!j.is_object()) continue;
        const auto& o = j.as_object();
        if (!all && json_int(o, "archive").value_or(0) != 0) continue;
        jobs.push_back(o);
        if (limit > 0 && static_cast<long long>(jobs.size()) >= limit) break;
      }
      // The next page starts after this one's last job (absent: this was the last page).
      auto next = v.as_object().if_contains("next");
      if (!next || !next->is_string() || next->as_string().empty()) break;
      cursor = std::string(next->as_string());
    }
    if (a.has("json")) {
      for (const auto& j : jobs) std::cout << json_terminal_safe(json::serialize(j)) << "\n";
      return exit_code::ok;
    }
    double now = now_seconds();
    std::vector<std::vector<std::string>> rows;
    for (const auto& j : jobs) {
      auto parent = json_int(j, "parent");
      std::string progress = progress_message(json_string(j, "progress"));
      rows.push_back({json_string(j, "id"), parent ? std::to_string(*parent) : "", json_string(j, "jobtype"),
                      json_string(j, "config"), json_string(j, "state"), cut_utf8(progress, 60),
                      job_duration(j, now)});
    }
    std::cout << render_table({"ID", "Parent", "Type", "Config", "State", "Progress", "Duration"}, rows);
    return exit_code::ok;
  });
}

// ---- descprod-cancel-job ----------------------------------------------------------------------------

namespace {

// One POST /api/jobs/<id>/<action> per job ID argument: `said` prints the outcome of a 2xx answer;
// a refusal for the job's state (409) says "job N was not <done_word>: <why>". Exit 1 if any job
// was refused, else the first other error's code.
int act_on_jobs(const std::string& me, int argc, char** argv, const std::string& usage_text,
                const std::string& action, const std::string& done_word,
                const std::function<void(long long, int status)>& said) {
  auto a = parse_args(arguments(argc, argv), server_options());
  if (a.has("help")) {
    std::cout << "Usage: " << me << " [--url URL] [--token-file FILE] ID...\n"
              << usage_text << common_options_help();
    return exit_code::ok;
  }
  if (a.positional.empty()) throw usage_error("at least one job ID is required");
  std::vector<long long> ids;
  for (const auto& p : a.positional) ids.push_back(parse_job_id(p));
  auto api = make_client(a);
  int rc = exit_code::ok;
  for (long long id : ids) {
    auto r = api.call("POST", "/api/jobs/" + std::to_string(id) + "/" + action);
    if (r.status >= 200 && r.status < 300) {
      said(id, r.status);
    } else if (r.status == 409) {
      print_error(me, "job " + std::to_string(id) + " was not " + done_word + ": " + error_detail(r));
      if (rc == exit_code::ok) rc = exit_code::server_error;
    } else {
      auto e = error_for(r);
      if (e.code == exit_code::bad_token) throw e;
      print_error(me, "job " + std::to_string(id) + ": " + e.what());
      if (rc == exit_code::ok) rc = e.code;
    }
  }
  return rc;
}

}  // namespace

int cancel_job_main(int argc, char** argv) {
  const std::string me = program_name(argc > 0 ? argv[0] : nullptr, "descprod-cancel-job");
  return guarded(me, [&] {
    return act_on_jobs(me, argc, argv,
                       "Cancels jobs. A job not yet given to a worker (ready, held, waiting) is cancelled\n"
                       "at once; a running one is asked to stop (its process gets SIGTERM, then SIGKILL).\n"
                       "Jobs waiting for a cancelled job with --after are cancelled too. Exit 1 if any\n"
                       "job could not be cancelled (unknown, or already finished).\n",
                       "cancel", "cancelled", [](long long id, int status) {
                         if (status == 200) std::cout << "Job " << id << " cancelled.\n";
                         else std::cout << "Job " << id << ": cancel requested; the job is being stopped.\n";
                       });
  });
}

// ---- descprod-release-job ---------------------------------------------------------------------------

int release_job_main(int argc, char** argv) {
  const std::string me = program_name(argc > 0 ? argv[0] : nullptr, "descprod-release-job");
  return guarded(me, [&] {
    return act_on_jobs(me, argc, argv,
                       "Hands held jobs (created with --hold, or of an app with dispatch: manual) to the\n"
                       "workers. A job still waiting for its dependencies loses its hold and runs once\n"
                       "they are met. Exit 1 if any job was not held.\n",
                       "release", "released",
                       [](long long id, int) { std::cout << "Job " << id << " released.\n"; });
  });
}

// ---- descprod-login ---------------------------------------------------------------------------------

namespace {

// Reads one line from stdin; without echo when stdin is a terminal.
std::string read_secret_line(const std::string& prompt) {
  bool tty = ::isatty(STDIN_FILENO);
  termios old{};
  if (tty) {
    std::cerr << prompt << std::flush;
    if (::tcgetattr(STDIN_FILENO, &old) == 0) {
      termios quiet = old;
      quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
      ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    }
  }
  std::string line;
  std::getline(std::cin, line);
  if (tty) {
    ::tcsetattr(STDIN_FILENO, TCSANOW, &old);
    std::cerr << "\n";
  }
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  return line;
}

// Writes `text` to `path` with mode 0600 (a temporary file renamed over it).
void write_private_file(const fs::path& path, const std::string& text) {
  std::string tmp = path.string() + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    throw client_error(exit_code::server_error, "cannot write " + tmp + ": " + std::strerror(errno));
  ::fchmod(fd, 0600);
  std::size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw client_error(exit_code::server_error, "cannot write " + tmp + ": " + std::strerror(err));
    }
    off += static_cast<std::size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw client_error(exit_code::server_error, "cannot write " + path.string() + ": " + std::strerror(err));
  }
}

}  // namespace

int login_main(int argc, char** argv) {
  const std::string me = program_name(argc > 0 ? argv[0] : nullptr, "descprod-login");
  return guarded(me, [&] {
    auto specs = std::vector<option_spec>{{'h', "help", false}, {0, "url", true}, {0, "token", true}};
    auto a = parse_args(arguments(argc, argv), specs);
    auto env = process_env();
    const std::string dir = config_dir(env);
    if (a.has("help")) {
      std::cout << "Usage: " << me << " [--url URL] [--token TOKEN]\n"
                << "Checks an API token with the server (GET /api/version) and stores it in\n"
                << dir << "/token (mode 0600), where the other commands find it.\n"
                << "Without --token the token is read from standard input (not echoed).\n"
                << "With --url the URL is stored too (" << dir << "/url) and becomes the default\n"
                << "server of the other commands when $DESCPROD_URL is not set.\n"
                << "      --url URL         the server (default: as for the other commands)\n"
                << "      --token TOKEN     the token (visible to other users in `ps`; prefer stdin)\n"
                << "  -h, --help            show this help\n";
      return exit_code::ok;
    }
    if (!a.positional.empty()) throw usage_error("unexpected argument '" + a.positional[0] + "'");
    std::string url = resolve_url(a.value("url"), env);
    std::string token = a.value("token") ? *a.value("token") : read_secret_line("Token: ");
    auto b = token.find_first_not_of(" \t");
    token = b == std::string::npos ? "" : token.substr(b);
    if (token.empty()) throw usage_error("no token given");
    api_client api(url, token, std::chrono::seconds(15));
    auto r = api.call("GET", "/api/version");
    if (r.status != 200) throw error_for(r);

    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw client_error(exit_code::server_error, "cannot create " + dir + ": " + ec.message());
    ::chmod(dir.c_str(), 0700);
    write_private_file(fs::path(dir) / "token", token + "\n");
    if (a.value("url")) write_private_file(fs::path(dir) / "url", api.url_text() + "\n");
    std::string version = r.body.is_object() ? json_string(r.body.as_object(), "version") : "";
    std::cout << "Logged in to " << terminal_safe(api.url_text())
              << (version.empty() ? "" : " (server " + terminal_safe(version) + ")") << "; token stored in "
              << dir << "/token\n";
    return exit_code::ok;
  });
}

}  // namespace descprod::client
