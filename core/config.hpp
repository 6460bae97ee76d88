// Typed configuration (config/descprod.yaml describes every key). One YAML file with a section per
// component; each binary reads the sections it needs. Unknown keys and bad values are rejected with
// file:line:column. Components receive these structs, never YAML nodes or the environment.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/redis.hpp"

namespace descprod {

// Thrown by the loaders; what() is "file:line:col: key: problem".
struct config_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct redis_config {
  redis_endpoint endpoint;  // unix socket `path`, or `host`/`port`, or `sentinels`; `password`
  std::string prefix = "descprod:";
  // WAIT after every store script (a create, a transition): the replicas that must have it before
  // it is answered, and how long to wait for them (store::set_replication). Default: 1 behind
  // sentinels, 0 (no WAIT) otherwise.
  int wait_replicas = 0;
  int wait_timeout_ms = 100;
};

// One application of the registry (config/apps.yaml, docs/architecture.md#app-contract).
struct app_def {
  std::string name;
  std::vector<std::string> command;  // default {"runapp-<name>"}
  std::vector<std::string> args = {"{config}", "{howfig}"};
  std::map<std::string, std::string> env;
  bool login_shell = false;
  int cores = 1;
  // The job's cgroup limits (worker.containment cgroup): memory.max in bytes (0: none) and, with
  // limit_cores, cpu.max of `cores` cores.
  long long memory_max = 0;
  bool limit_cores = false;
  int umask = 027;          // the app's umask: its run directory's files are not world-readable
  double time_limit_s = 0;  // 0: none
  int max_attempts = 3;
  std::string pattern;  // ECMAScript regex the whole config must match; empty: any
  std::string howfig_pattern;
  std::string help;
  // dispatch: manual — every job of the app is created held: it runs only when its owner starts
  // it (descprod-start-job) or releases it to the workers (DESCprod's way of running jobs).
  bool manual_dispatch = false;
  std::optional<std::regex> compiled_pattern;
  std::optional<std::regex> compiled_howfig_pattern;

  // The argv for a job: command, then args with {config}/{howfig}/{id} replaced. An argument that
  // becomes empty is dropped (DESCprod's shell word-splitting dropped an empty howfig too).
  std::vector<std::string> argv_for(const std::string& config, const std::string& howfig, long long id) const;
  // The argv of a job of this app: argv_for, except with batch howfigs enabled (core/job.hpp,
  // batch_howfig) a pmb job's app gets the howfig after its first constituent and a pmbs job runs
  // `descprod-pmbs` (no arguments; it reads config.json), as DESCprod's indirect apps did.
  std::vector<std::string> job_argv(const std::string& config, const std::string& howfig, long long id,
                                    bool batch_howfigs) const;
};

struct app_registry {
  std::map<std::string, app_def> apps;
  const app_def* find(const std::string& name) const;
};

// localhost, or a loopback address (127.x.y.z, ::1, bracketed or not). Strict: "127.0.0.1.evil.example"
// is a name, not an address.
bool is_loopback_name(std::string_view host);
// An http:// URL whose host is a loopback name (the only place plain HTTP is allowed for an
// OpenID Connect issuer and its endpoints: tests).
bool is_loopback_http_url(std::string_view url);
// An OpenID Connect provider's name (gateway.oidc, /login/oidc/<name>): 1 to 32 of a-z 0-9 _ -,
// starting with a letter or digit, and not "callback".
bool valid_oidc_provider_name(std::string_view name);
// The endpoints of a `daemon_endpoint` that lists several, separated by commas (spaces around
// each ignored, empty ones dropped).
std::vector<std::string> endpoint_list(std::string_view endpoints);

// One OpenID Connect provider the login page offers (gateway.oidc; docs/security.md, "OpenID
// Connect"). The client secret is read from client_secret_file at load and kept only here.
struct oidc_provider_config {
  std::string name;    // the path segment of /login/oidc/<name>: 1-32 of a-z 0-9 _ -, not "callback"
  std::string issuer;  // https://..., or http:// on a loopback host (tests)
  std::string client_id;
  std::string client_secret;                       // from client_secret_file
  std::string token_auth = "client_secret_basic";  // or client_secret_post
  std::vector<std::string> scopes{"openid", "profile", "email"};
  std::string username_claim = "preferred_username";
  std::string button_label;  // default "Log in with <name>"
  // Non-empty: only an e-mail address in one of these domains (not marked unverified) may make an account.
  std::vector<std::string> allowed_email_domains;
  bool auto_approve = false;  // new accounts are active at once (else pending, as a registration)
  std::string redirect_uri;   // default <public_url>/login/oidc/callback (or the request's Host on loopback)
};

struct gateway_config {
  std::string address = "127.0.0.1";
  int port = 8080;
  // The daemon's gateway endpoint; several, separated by commas, as the worker's daemon_endpoint.
  std::string daemon_endpoint = "ipc://var/daemon-gateways.ipc";
  std::size_t max_body_bytes = 1 << 20;
  std::size_t max_bulk_jobs = 100000;
  // Whether pmb/pmbs howfigs pin a job to a Slurm allocation of its own (set from pilots.enabled:
  // only a service that submits pilots has one to give; without, such a howfig is text for the app).
  bool batch_howfigs = false;
  // The sites a job may ask for ("sites": [...]; docs/operators.md, Sites). Empty: none (a job
  // that asks for a site is refused). A closed list keeps the daemon's per-site lanes few.
  std::vector<std::string> sites;
  std::chrono::milliseconds idle_timeout{30000};
  // The URL browsers use (scheme, host, port): Host and Origin are checked against it
  // (gateway/guard.hpp). Empty: Origin is compared with Host, and a loopback listener serves
  // loopback names only.
  std::string public_url;
  // HTTPS: PEM certificate chain and private key files; both set → the gateway serves TLS only.
  std::string tls_cert;
  std::string tls_key;
  // Web login sessions expire after this long without a request (sliding expiry).
  std::chrono::seconds session_ttl{8 * 3600};
  // Argon2id cost of new password hashes (libsodium crypto_pwhash_str): passes and memory (KiB).
  // The defaults are libsodium's "interactive" level; tests use 1 and 8 to stay fast.
  unsigned long long password_opslimit = 2;
  std::size_t password_memlimit_kib = 64 * 1024;

  // Connection and stream caps (docs/security.md). Connections beyond max_connections are closed
  // at accept (the gateway also keeps it below its descriptor limit); one client address holds at
  // most max_connections_per_address (more get 429); event streams are capped globally below the
  // connection cap, so short requests keep max_connections - max_event_streams connections, and
  // per user. With half of max_connections in use, connections waiting for a request header are
  // closed after busy_header_timeout instead of idle_timeout.
  std::size_t max_connections = 8192;
  std::size_t max_connections_per_address = 256;
  std::size_t max_event_streams = 4096;
  std::size_t max_event_streams_per_user = 64;
  std::chrono::milliseconds busy_header_timeout{2000};
  // Login throttling: failures per account (any address) and per client address (any account)
  // within login_failure_window; beyond the free ones each failure blocks the key for a wait that
  // starts at login_backoff_initial and doubles up to login_backoff_max (429 + Retry-After).
  std::size_t login_free_failures = 5;
  std::size_t login_address_free_failures = 20;
  std::chrono::milliseconds login_backoff_initial{1000};
  std::chrono::milliseconds login_backoff_max{300000};
  std::chrono::seconds login_failure_window{900};
  // Password hashing admission: hashes waiting beyond the hashing threads, and hashes one client
  // address may have queued or running; beyond either: 429 + Retry-After.
  std::size_t password_hash_queue = 4;
  std::size_t password_hashes_per_address = 2;
  // Registrations one client address may make per register_window.
  std::size_t register_per_address = 10;
  std::chrono::seconds register_window{3600};
  // OpenID Connect providers (gateway.oidc): a login button each on /login.
  std::vector<oidc_provider_config> oidc;
};

struct daemon_config {
  std::string worker_endpoint = "ipc://var/daemon-workers.ipc";
  std::string gateway_endpoint = "ipc://var/daemon-gateways.ipc";
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds lease_timeout{10000};
  std::chrono::milliseconds reconcile_interval{5000};
  // Leader and standby (daemon/leadership.hpp): the leader lease's time to live in Redis; the
  // leader renews it every third of this, a standby asks for it every quarter. A standby leads
  // at most this long (plus a quarter) after a leader died.
  std::chrono::milliseconds leader_ttl{2000};
  // A file the daemon creates (holding its epoch) while it leads and removes when it stops:
  // a readiness probe for Kubernetes (docs/operators.md). Empty: none.
  std::string leader_file;
  // At SIGTERM the daemon takes no new work and writes what its outbox still holds to Redis for at
  // most this long before it exits (what is left is re-sent by the workers, which keep every
  // report until the daemon acknowledges it).
  std::chrono::milliseconds stop_deadline{5000};
  // How often the daemon writes a sample of its figures (jobs ended, queue, running, workers,
  // slots) into <prefix>stats:samples for the status plots (daemon/stats_sampler.hpp).
  std::chrono::seconds stats_interval{10};
  // The most bytes of a job's log (all its attempts) kept in Redis (`<prefix>job:<id>:log`);
  // the rest stays in the run directory. Workers stop shipping there.
  long long job_log_max_bytes = 16LL * 1024 * 1024;
  // Worker authentication (docs/operators.md, Workers): `token` — a worker must present a worker
  // token (descprod-admin worker-token) and gets only its owner's jobs and those of the pools it
  // was admitted to; `open` — any worker that can reach the socket runs any job (single-user test
  // setups only).
  std::string worker_auth = "token";
  // Which ready job a free slot gets (docs/operators.md, Fair share and quotas): `fair_share` —
  // the owner holding the fewest slots for its share, then priority and age within the owner;
  // `fifo` — priority, then age, across all owners (one user's big bulk holds the others back).
  std::string dispatch_policy = "fair_share";
  // CURVE on the worker socket: the daemon's secret key file (descprod-admin keys) and a folder of
  // the worker public keys allowed to connect (*.pub). Both empty: no CURVE.
  std::string curve_secret_key_file;
  std::string curve_authorized_keys_dir;
};

struct worker_config {
  // The daemon's worker endpoint; several, separated by commas, when daemons on other hosts stand
  // by (the worker connects to all and talks to the one that leads: only the leader binds).
  std::string daemon_endpoint = "ipc://var/daemon-workers.ipc";
  int slots = 0;           // 0: the node's cores
  int prefetch = 0;        // jobs asked for beyond free slots, queued on the worker (0: none)
  std::string output_dir;  // empty: $DESCPROD_OUTPUT_DIR, $PSCRATCH, $SCRATCH, $HOME + /descprod-out
  std::string owner = "admin";
  std::string pool = "default";
  // The site this worker is at (docs/operators.md, Sites): jobs that ask for sites run only on
  // workers of one of them. Empty: no site (it runs only jobs that ask for none).
  std::string site;
  std::string id;  // empty: host-pid
  std::string gateway_url = "http://127.0.0.1:8080";
  std::chrono::milliseconds status_poll{200};
  double drain_grace_s = 30;  // on SIGTERM, running jobs may finish for this long, then are handed back
  double kill_grace_s = 5;    // SIGTERM → SIGKILL of a job's process group (cancel, time limit, drain)
  double idle_timeout_s = 0;  // with no job for this long the worker drains and exits 0 (0: never)
  // Walltime awareness (Slurm pilots, --walltime-end): a job starts only when its app's
  // time_limit_s ends at least this long before the allocation's end.
  double walltime_margin_s = 0;
  // The worker token file (one line; default: $DESCPROD_WORKER_TOKEN when set).
  std::string token_file;
  // CURVE: the daemon's public key file and this worker's secret key file (descprod-admin keys).
  std::string curve_server_key_file;
  std::string curve_secret_key_file;
  // How the processes of a job are kept together and ended with it: auto (a cgroup v2 per job
  // when the worker can make one, else subreaper), cgroup, or subreaper.
  std::string containment = "auto";
};

// Elastic pilots (docs/slurm.md): the daemon submits Slurm allocations that each start one
// descprod-worker per node (scripts/slurm/descprod-pilot.sbatch) when ready jobs outnumber free
// slots. Off by default.
struct pilots_config {
  bool enabled = false;
  // The site of the pilots' workers (passed to them as --site): only jobs that may run there
  // count as demand. Empty: no site (jobs that ask for a site never start a pilot).
  std::string site;
  int min = 0;                // pilots kept alive (pending or running) even without work
  int max = 1;                // never more pilots alive than this
  int nodes = 1;              // nodes per pilot (sbatch --nodes)
  int slots_per_pilot = 1;    // slots a pilot brings (nodes x cores): counted while it starts
  int walltime_minutes = 60;  // sbatch --time
  std::string partition;      // sbatch --partition (empty: the site's default)
  std::string account;        // sbatch --account
  std::string qos;            // sbatch --qos
  std::string constraint;     // sbatch --constraint (e.g. cpu at NERSC)
  // Jobs in an allocation of their own (howfig pmb-TMIN-QOS-CONS[-ACCT], docs/slurm.md): at most
  // pinned_max such pilots alive at once; each sized by its howfig, its worker leaving after
  // pinned_idle_timeout_s without its job. The howfig's QOS and constraint are passed to sbatch as
  // they are unless these maps say otherwise (a name → the value to pass; "" leaves the option out,
  // for a cluster without NERSC's QOSes or features). ACCT, when given, replaces `account`.
  int pinned_max = 20;
  double pinned_idle_timeout_s = 30;
  std::map<std::string, std::string> pinned_qos;
  std::map<std::string, std::string> pinned_constraints;
  std::string job_name = "descprod-pilot";
  int signal_lead_s = 120;      // sbatch --signal=B:TERM@lead: the workers drain this long before the end
  double idle_timeout_s = 300;  // a pilot's workers exit after this long without a job
  std::string script = "scripts/slurm/descprod-pilot.sbatch";
  std::string worker_config;            // the config file the pilots' workers read (empty: the daemon's own)
  std::string worker_binary;            // descprod-worker for the pilots (empty: next to descprod-daemon)
  std::string log_dir = "var/pilots";   // sbatch --output=<log_dir>/<job_name>-%j.out
  std::vector<std::string> extra_args;  // more sbatch options, passed as they are
  std::string sbatch = "sbatch";        // the programs (a path, or looked up in PATH)
  std::string squeue = "squeue";
  std::string scancel = "scancel";                 // cancels a pinned pilot still pending whose job has ended
  std::chrono::milliseconds check_interval{5000};  // how often demand is compared with supply
  std::chrono::milliseconds squeue_interval{30000};  // how often pilot states are read from squeue
  std::chrono::milliseconds command_timeout{30000};  // sbatch/squeue that takes longer is killed
  std::chrono::milliseconds backoff_min{10000};      // after a failed sbatch, doubling …
  std::chrono::milliseconds backoff_max{600000};     // … up to this
};

// E-mail on failure (descprod-notifier, docs/operators.md#e-mail-on-failure): follows the event
// stream and mails the owners who opted in when their jobs fail, through a plain SMTP relay. Off
// while smtp_host is empty.
struct notify_config {
  std::string smtp_host;  // empty: no mail is sent (the notifier exits at once)
  int smtp_port = 25;
  std::string helo = "localhost";  // the name sent in EHLO
  std::string from;                // the envelope and From: address (required with smtp_host)
  std::string base_url;            // links in the mails: <base_url>/jobs/<id> (required with smtp_host)
  std::chrono::milliseconds interval{60000};        // at most one mail per user this often
  std::chrono::milliseconds delay{2000};            // a first failure waits this long for others to join it
  std::chrono::milliseconds timeout{10000};         // each SMTP step (connect, every reply, the data)
  std::chrono::milliseconds backoff_initial{1000};  // after a failed send, doubling …
  std::chrono::milliseconds backoff_max{300000};    // … up to this
  int max_listed = 20;  // failed jobs named in one mail; the rest are counted ("and N more")
};

// A site whose status the daemon polls (sites: in the config; docs/operators.md, Site status): a
// JSON document in the form of NERSC's status API (name, full_name, description, status, notes,
// updated_at). The status is shown on the pages and GET /api/sites; pilots are not submitted to
// a site reported down.
struct site_status_config {
  std::string name;  // a site name: the pilots' `site` it stands for
  std::string
      status_url;  // http:// or https://; default NERSC's https://api.nersc.gov/api/v1.2/status/<name>
  std::chrono::seconds poll{60};
  std::chrono::seconds timeout{10};
};

struct descprod_config {
  std::string file;
  std::string log_level = "info";
  redis_config redis;
  std::string apps_file = "config/apps.yaml";  // relative paths resolve against the config file
  gateway_config gateway;
  daemon_config daemon;
  worker_config worker;
  // The pilots of the first (or only) site, and those of every site (pilots: as a list, one
  // entry per site; a single mapping is one site). Pinned pilots (howfig pmb) are the first's.
  pilots_config pilots;
  std::vector<pilots_config> pilot_sites;
  notify_config notify;
  std::vector<site_status_config> site_status;  // sites: (empty: no status is polled)
};

descprod_config load_config(const std::string& path);
// A YAML overlay merged over a configuration's text (scripts/descprod-up --config-overlay): a
// mapping merges key by key, anything else (a scalar, a list, null) replaces what the base had.
// Returns the merged YAML text; throws config_error when either text is not YAML or the overlay is
// not a mapping. The result is a configuration like any other: load it to check its keys.
std::string merge_config_yaml(const std::string& base, const std::string& overlay,
                              const std::string& overlay_name);
// The same for two files (errors name them).
std::string merge_config_files(const std::string& base_path, const std::string& overlay_path);
descprod_config parse_config(const std::string& text, const std::string& file_name);
app_registry load_apps(const std::string& path);
app_registry parse_apps(const std::string& text, const std::string& file_name);

}  // namespace descprod
